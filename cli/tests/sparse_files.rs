//! A sparse file in the context (a disk image, a preallocated database)
//! stays sparse through the build: COPY writes only its data, the layer
//! blob (stored uncompressed) keeps its zeros as holes, and the image
//! still has every byte.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Bytes allocated on disk beneath `dir`.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        total += md.blocks() * 512;
        if md.is_dir() {
            total += allocated(&e.path());
        }
    }
    total
}

#[test]
fn a_sparse_context_file_stays_sparse() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nCOPY disk.img /disk.img\nRUN ls -l /disk.img > /listing\n",
        )],
    );
    let size: u64 = 4 << 30;
    let mut f = std::fs::File::create(ctx.join("disk.img")).unwrap();
    f.set_len(size).unwrap();
    f.seek(SeekFrom::Start(1 << 30)).unwrap();
    f.write_all(b"data").unwrap();
    drop(f);
    let before = allocated(&k.root);
    k.ok(&["build", "-q", "-t", "sparse", &ctx.display().to_string()]);
    let grown = allocated(&k.root) - before;
    assert!(grown < 256 << 20, "the build allocated {} MiB", grown >> 20);
    // Every byte is there: the length, the data where it was.
    let (out, _) = k.ok(&[
        "run",
        "--rm",
        "sparse",
        "sh",
        "-c",
        "stat -c %s /disk.img; dd if=/disk.img bs=4 skip=268435456 count=1 2>/dev/null; echo",
    ]);
    assert_eq!(out, format!("{size}\ndata\n"));
}
