//! Timings of COPY and of the context checksum (cold, and warm from the
//! memo) on the shapes of ../shared/bench's `manyfiles` (30,000 files of
//! 100 bytes in 300 dirs) and `bigctx` (4 files of 256 MiB). Run with
//! `cargo bench -p kiln-worker --bench fileops`; what must hold on those
//! shapes (complete copies, no re-reads, bounded memory) is asserted by
//! tests/fileops_scale.rs.

use std::path::Path;
use std::sync::LazyLock;

use divan::Bencher;
use kiln_testsupport::scale;
use kiln_worker::fileops::{self, checksum::ChecksumOptions, ChecksumMemo, CopySpec};

fn main() {
    divan::main();
}

static MANYFILES: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let ctx = tempfile::tempdir().expect("tempdir");
    scale::manyfiles(ctx.path());
    ctx
});

static BIGCTX: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let ctx = tempfile::tempdir().expect("tempdir");
    scale::bigctx(ctx.path());
    ctx
});

fn sources() -> Vec<String> {
    vec![".".to_string()]
}

fn checksum(ctx: &Path, memo: &ChecksumMemo) -> blake3::Hash {
    fileops::checksum_sources(ctx, &sources(), &ChecksumOptions::default(), memo).expect("checksum")
}

/// A checksum with an empty memo: every file is read.
fn cold(bencher: Bencher, ctx: &Path) {
    bencher
        .with_inputs(ChecksumMemo::new)
        .bench_local_refs(|memo| checksum(ctx, memo));
}

/// A checksum the memo already knows: nothing is read.
fn warm(bencher: Bencher, ctx: &Path) {
    let memo = ChecksumMemo::new();
    checksum(ctx, &memo);
    bencher.bench_local(|| checksum(ctx, &memo));
}

/// `COPY . /data` into an empty root (removing it is not timed).
fn copy(bencher: Bencher, ctx: &Path, files: u64) {
    bencher
        .with_inputs(|| tempfile::tempdir().expect("tempdir"))
        .bench_local_values(|root| {
            let spec = CopySpec::new(ctx, sources(), root.path(), "/data");
            let rep = fileops::copy(&spec).expect("copy");
            assert_eq!(rep.files, files);
            root
        });
}

mod manyfiles {
    use super::*;

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn checksum_cold(bencher: Bencher) {
        cold(bencher, MANYFILES.path());
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn checksum_warm(bencher: Bencher) {
        warm(bencher, MANYFILES.path());
    }

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn copy(bencher: Bencher) {
        super::copy(bencher, MANYFILES.path(), scale::MANYFILES);
    }
}

mod bigctx {
    use super::*;

    #[divan::bench(sample_count = 3, sample_size = 1)]
    fn checksum_cold(bencher: Bencher) {
        cold(bencher, BIGCTX.path());
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn checksum_warm(bencher: Bencher) {
        warm(bencher, BIGCTX.path());
    }

    #[divan::bench(sample_count = 3, sample_size = 1)]
    fn copy(bencher: Bencher) {
        super::copy(bencher, BIGCTX.path(), scale::BIGCTX);
    }
}
