//! The tree index of the context check: an unchanged plain copy is proven
//! by stamps alone (the memo is not even loaded), and every kind of change
//! (content, content of the same size with the mtime put back, rename, new
//! and removed files, modes, a new file deep down) falls back to the walk
//! and gives exactly the checksum a fresh walk gives.

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_worker::fileops::checksum::{checksum_sources, checksum_sources_indexed, ChecksumOptions};
use kiln_worker::fileops::ChecksumMemo;

const PATHS: &[&str] = &["."];

/// A named change to the context.
type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);

fn paths() -> Vec<String> {
    PATHS.iter().map(|s| s.to_string()).collect()
}

/// The checksum through the index, and whether the walk had to run.
fn indexed(ctx: &Path, index: &Path, opts: &ChecksumOptions) -> (blake3::Hash, bool) {
    let walked = Cell::new(false);
    let h = checksum_sources_indexed(
        ctx,
        &paths(),
        opts,
        || {
            walked.set(true);
            Arc::new(ChecksumMemo::new())
        },
        index,
    )
    .unwrap();
    (h, walked.get())
}

fn fresh(ctx: &Path, opts: &ChecksumOptions) -> blake3::Hash {
    checksum_sources(ctx, &paths(), opts, &ChecksumMemo::new()).unwrap()
}

/// Past the racy window, so the next walk writes its index.
fn settle() {
    std::thread::sleep(Duration::from_millis(120));
}

#[test]
fn unchanged_trees_skip_the_walk_and_every_change_is_seen() {
    let ctx = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let c = ctx.path();
    for d in 0..3 {
        fs::create_dir_all(c.join(format!("d{d}/deep"))).unwrap();
        for f in 0..10 {
            fs::write(c.join(format!("d{d}/f{f}")), format!("body {d} {f}")).unwrap();
        }
    }
    fs::write(c.join("d0/deep/x"), "deep").unwrap();
    let opts = ChecksumOptions::default();
    settle();

    let (h0, walked) = indexed(c, index.path(), &opts);
    assert!(walked, "the first check walks");
    assert_eq!(h0, fresh(c, &opts));
    let (h, walked) = indexed(c, index.path(), &opts);
    assert!(!walked, "an unchanged tree is proven by the index");
    assert_eq!(h, h0);

    let mut last = h0;
    // Each change must be seen (a walk, the fresh checksum, a new key), and
    // the re-written index must then prove the changed tree.
    let changes: Vec<Change> = vec![
        (
            "same-size edit, mtime restored",
            Box::new(|| {
                let p = c.join("d1/f3");
                let mtime = fs::metadata(&p).unwrap().modified().unwrap();
                fs::write(&p, "BODY 1 3").unwrap();
                let f = fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(mtime).unwrap();
            }),
        ),
        (
            "rename",
            Box::new(|| fs::rename(c.join("d2/f0"), c.join("d2/g0")).unwrap()),
        ),
        (
            "new file",
            Box::new(|| fs::write(c.join("d0/new"), "new").unwrap()),
        ),
        (
            "removed file",
            Box::new(|| fs::remove_file(c.join("d0/f9")).unwrap()),
        ),
        (
            "mode",
            Box::new(|| {
                fs::set_permissions(c.join("d1/f1"), fs::Permissions::from_mode(0o600)).unwrap()
            }),
        ),
        (
            "new file deep down",
            Box::new(|| fs::write(c.join("d0/deep/y"), "y").unwrap()),
        ),
        (
            "file replaced by a folder",
            Box::new(|| {
                fs::remove_file(c.join("d2/f5")).unwrap();
                fs::create_dir(c.join("d2/f5")).unwrap();
            }),
        ),
    ];
    for (what, change) in changes {
        change();
        let (h, walked) = indexed(c, index.path(), &opts);
        assert!(walked, "{what}: must walk");
        assert_eq!(h, fresh(c, &opts), "{what}: same as a fresh walk");
        assert_ne!(h, last, "{what}: the key changes");
        last = h;
        settle();
        // Racy: the changed entry was too fresh to index; now it is not.
        let (h, _) = indexed(c, index.path(), &opts);
        assert_eq!(h, last, "{what}");
        let (h, walked) = indexed(c, index.path(), &opts);
        assert!(!walked, "{what}: the new index proves the tree");
        assert_eq!(h, last, "{what}");
    }
}

#[test]
fn an_entry_changed_within_the_racy_window_is_never_indexed() {
    let ctx = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("a"), "one").unwrap();
    let opts = ChecksumOptions::default();
    // Written just now: the index is not written, so a second edit within
    // the same clock tick cannot hide behind an unchanged stamp.
    let (h1, _) = indexed(c, index.path(), &opts);
    let written = fs::read_dir(index.path()).unwrap().count();
    assert_eq!(written, 0, "no index for a racy tree");
    fs::write(c.join("a"), "two").unwrap();
    let (h2, walked) = indexed(c, index.path(), &opts);
    assert!(walked);
    assert_ne!(h1, h2);
}

#[test]
fn filtered_copies_do_not_use_the_index() {
    let ctx = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::create_dir(c.join("ignored")).unwrap();
    fs::write(c.join("a"), "a").unwrap();
    let opts = ChecksumOptions {
        context_exclude: vec!["ignored".into(), "!ignored/keep".into()],
        ..Default::default()
    };
    settle();
    let (h1, _) = indexed(c, index.path(), &opts);
    // A kept entry appears in a folder the walk reads but does not keep.
    fs::write(c.join("ignored/keep"), "k").unwrap();
    let (h2, walked) = indexed(c, index.path(), &opts);
    assert!(walked, "a filtered copy always walks");
    assert_ne!(h1, h2);
    assert_eq!(h2, fresh(c, &opts));
}
