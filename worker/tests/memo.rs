//! The context checksum memo persisted between kiln processes: a new
//! process must not re-read an unchanged context, must re-read a changed
//! file, and must survive a damaged memo file.

use std::fs;

use kiln_worker::fileops::checksum::{checksum_sources, ChecksumOptions};
use kiln_worker::fileops::ChecksumMemo;

#[test]
fn a_saved_memo_spares_rereads_and_sees_edits() {
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let memo_file = state.path().join("checksums.memo");
    for i in 0..20 {
        fs::write(ctx.path().join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    let opts = ChecksumOptions::default();
    let paths = vec![".".to_string()];

    let first = ChecksumMemo::new();
    let h1 = checksum_sources(ctx.path(), &paths, &opts, &first).unwrap();
    assert_eq!(first.files_read(), 20);
    first.save(&memo_file).unwrap();

    // A "new process": nothing is read again, and the key is the same.
    let second = ChecksumMemo::load(&memo_file);
    let h2 = checksum_sources(ctx.path(), &paths, &opts, &second).unwrap();
    assert_eq!(h1, h2);
    assert_eq!(second.files_read(), 0);

    // An edit (same size, so only the stamp tells) is read and changes the key.
    fs::write(ctx.path().join("f3"), "file X").unwrap();
    let third = ChecksumMemo::load(&memo_file);
    let h3 = checksum_sources(ctx.path(), &paths, &opts, &third).unwrap();
    assert_eq!(third.files_read(), 1);
    assert_ne!(h1, h3);

    // A truncated memo is ignored, never trusted in part.
    let data = fs::read(&memo_file).unwrap();
    fs::write(&memo_file, &data[..data.len() - 5]).unwrap();
    let fourth = ChecksumMemo::load(&memo_file);
    let h4 = checksum_sources(ctx.path(), &paths, &opts, &fourth).unwrap();
    assert_eq!(fourth.files_read(), 20);
    assert_eq!(h3, h4);
}

/// File contents are hashed on every core; the checksum must not depend on
/// how many there are, and must still see order and content.
#[test]
fn the_checksum_is_the_same_on_one_thread_and_many() {
    let ctx = tempfile::tempdir().unwrap();
    for d in 0..5 {
        let dir = ctx.path().join(format!("d{d}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            let body = format!("dir {d} file {i} ").repeat(1 + i * 500);
            fs::write(dir.join(format!("f{i}")), body).unwrap();
        }
    }
    let opts = ChecksumOptions::default();
    let paths = vec![".".to_string()];
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let memo = ChecksumMemo::new();
        let h = pool.install(|| checksum_sources(ctx.path(), &paths, &opts, &memo).unwrap());
        assert_eq!(memo.files_read(), 200);
        h
    };
    let one = on(1);
    assert_eq!(on(4), one);
    assert_eq!(on(16), one);
    // Not merely a multiset of contents: swapping two files' contents
    // changes it.
    let a = ctx.path().join("d1/sub/f3");
    let b = ctx.path().join("d3/sub/f3");
    let (ca, cb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    fs::write(&a, &cb).unwrap();
    fs::write(&b, &ca).unwrap();
    assert_ne!(on(4), one);
}
