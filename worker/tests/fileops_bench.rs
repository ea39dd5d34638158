//! Timings of COPY and of the context checksum on the shapes of
//! ../shared/bench's `manyfiles` (30,000 files of 100 bytes in 300 dirs) and
//! `bigctx` (4 files of 256 MiB), with the peak memory of the process
//! (`cargo test --release -p kiln-worker --test fileops_bench -- --nocapture`
//! prints the timings).
//! The assertions are the ones that matter for the build: the copy is
//! complete, a warm checksum reads nothing, and big files never sit in
//! memory.

use std::fs;
use std::io::Write;
use std::time::Instant;

use kiln_worker::fileops::{self, checksum::ChecksumOptions, ChecksumMemo, CopySpec};

fn peak_rss_mib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn run(name: &str, ctx: &std::path::Path, files: u64) {
    let root = tempfile::tempdir().unwrap();
    let memo = ChecksumMemo::new();
    let srcs = vec![".".to_string()];
    let opts = ChecksumOptions::default();

    let t = Instant::now();
    let cold = fileops::checksum_sources(ctx, &srcs, &opts, &memo).unwrap();
    let cold_t = t.elapsed();
    let t = Instant::now();
    let warm = fileops::checksum_sources(ctx, &srcs, &opts, &memo).unwrap();
    let warm_t = t.elapsed();
    assert_eq!(cold, warm);
    assert_eq!(memo.files_read(), files, "warm checksum re-read files");

    let t = Instant::now();
    let rep = fileops::copy(&CopySpec::new(ctx, srcs.clone(), root.path(), "/data")).unwrap();
    let copy_t = t.elapsed();
    assert_eq!(rep.files, files);
    eprintln!(
        "{name}: checksum cold {cold_t:?}, warm {warm_t:?}; copy {copy_t:?} ({} files, {} MiB); peak RSS {} MiB",
        rep.files,
        rep.bytes >> 20,
        peak_rss_mib()
    );
}

#[test]

fn bench_manyfiles() {
    let ctx = tempfile::tempdir().unwrap();
    for d in 0..300 {
        let dir = ctx.path().join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), "x".repeat(100)).unwrap();
        }
    }
    run("manyfiles", ctx.path(), 30_000);
}

#[test]

fn bench_bigctx() {
    let ctx = tempfile::tempdir().unwrap();
    let mut seed = 42u64;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..4 {
        let mut f = fs::File::create(ctx.path().join(format!("blob{i}"))).unwrap();
        for _ in 0..256 {
            for b in block.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (seed >> 56) as u8;
            }
            f.write_all(&block).unwrap();
        }
    }
    run("bigctx", ctx.path(), 4);
    assert!(peak_rss_mib() < 256, "peak RSS {} MiB", peak_rss_mib());
}
