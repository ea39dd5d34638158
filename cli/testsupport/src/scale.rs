//! The shapes of ../shared/bench's `manyfiles` and `bigctx` contexts, built
//! in a folder, and the process's peak memory: shared by the scale tests
//! (which assert what matters for a build) and the benches (which time it).

use std::fs;
use std::io::Write;
use std::path::Path;

/// How many files [`manyfiles`] writes.
pub const MANYFILES: u64 = 30_000;

/// How many files [`bigctx`] writes.
pub const BIGCTX: u64 = 4;

/// Fills `dir` with 30,000 files of 100 bytes in 300 folders.
pub fn manyfiles(dir: &Path) {
    for d in 0..300 {
        let sub = dir.join(format!("d{d}"));
        fs::create_dir(&sub).expect("mkdir");
        for f in 0..100 {
            fs::write(sub.join(format!("f{f}")), "x".repeat(100)).expect("write");
        }
    }
}

/// Fills `dir` with 4 files of 256 MiB of pseudo-random bytes (the same
/// bytes every time).
pub fn bigctx(dir: &Path) {
    let mut seed = 42u64;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..BIGCTX {
        let mut f = fs::File::create(dir.join(format!("blob{i}"))).expect("create");
        for _ in 0..256 {
            for b in block.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (seed >> 56) as u8;
            }
            f.write_all(&block).expect("write");
        }
    }
}

/// This process's peak resident memory so far, in MiB (`VmHWM`).
pub fn peak_rss_mib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
