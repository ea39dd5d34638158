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
