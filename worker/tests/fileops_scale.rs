//! COPY and the context checksum on the shapes of ../shared/bench's
//! `manyfiles` (30,000 files of 100 bytes in 300 dirs) and `bigctx` (4
//! files of 256 MiB): the copy is complete, a warm checksum reads nothing,
//! and big files never sit in memory. Their timings are a bench
//! (`cargo bench -p kiln-worker --bench fileops`); these are the assertions
//! that matter for the build.

use kiln_testsupport::scale::{self, peak_rss_mib};
use kiln_worker::fileops::{self, checksum::ChecksumOptions, ChecksumMemo, CopySpec};

fn run(ctx: &std::path::Path, files: u64) {
    let root = tempfile::tempdir().unwrap();
    let memo = ChecksumMemo::new();
    let srcs = vec![".".to_string()];
    let opts = ChecksumOptions::default();

    let cold = fileops::checksum_sources(ctx, &srcs, &opts, &memo).unwrap();
    let warm = fileops::checksum_sources(ctx, &srcs, &opts, &memo).unwrap();
    assert_eq!(cold, warm);
    assert_eq!(memo.files_read(), files, "warm checksum re-read files");

    let rep = fileops::copy(&CopySpec::new(ctx, srcs.clone(), root.path(), "/data")).unwrap();
    assert_eq!(rep.files, files);
}

#[test]
fn manyfiles_copy_is_complete_and_a_warm_checksum_reads_nothing() {
    let ctx = tempfile::tempdir().unwrap();
    scale::manyfiles(ctx.path());
    run(ctx.path(), scale::MANYFILES);
}

#[test]
fn bigctx_never_sits_in_memory() {
    let ctx = tempfile::tempdir().unwrap();
    scale::bigctx(ctx.path());
    run(ctx.path(), scale::BIGCTX);
    assert!(peak_rss_mib() < 256, "peak RSS {} MiB", peak_rss_mib());
}
