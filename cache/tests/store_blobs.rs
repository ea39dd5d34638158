//! The blob and image stores under concurrency, crashes and bad content,
//! on a real filesystem with real processes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use kiln_cache::{Digest, Error, Reference, Root};

/// Content big enough to need many writes.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn tmp_entries(root: &Root) -> Vec<String> {
    std::fs::read_dir(root.tmp_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn store() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Root::open(dir.path().join("root")).expect("open store");
    (dir, root)
}

#[test]
fn streamed_write_is_verified_and_readable() {
    let (_d, root) = store();
    let data = content(1, 3 * 1024 * 1024 + 17);
    let expected = Digest::of(&data);
    let mut w = root
        .blobs()
        .writer(Some(&expected), Some(data.len() as u64))
        .expect("writer");
    for chunk in data.chunks(4093) {
        w.write_all(chunk).expect("write");
    }
    assert!(!root.blobs().has(&expected), "visible before commit");
    let (d, size) = w.commit().expect("commit");
    assert_eq!(d, expected);
    assert_eq!(size, data.len() as u64);
    assert_eq!(root.blobs().read(&d).expect("read"), data);
    assert_eq!(root.blobs().size(&d).expect("size"), data.len() as u64);
    assert_eq!(root.blobs().list().expect("list"), vec![d.clone()]);
    assert!(tmp_entries(&root).is_empty());
    // put of the same bytes is a no-op that returns the same digest
    assert_eq!(root.blobs().put(&data).expect("put"), d);
}

#[test]
fn digest_mismatch_is_rejected_and_nothing_is_visible() {
    let (_d, root) = store();
    let data = content(2, 100_000);
    let wrong = Digest::of(b"something else");
    let mut w = root.blobs().writer(Some(&wrong), None).expect("writer");
    w.write_all(&data).expect("write");
    match w.commit() {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong.to_string());
            assert_eq!(actual, Digest::of(&data).to_string());
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!root.blobs().has(&wrong));
    assert!(!root.blobs().has(&Digest::of(&data)));
    assert!(root.blobs().list().expect("list").is_empty());
    assert!(
        tmp_entries(&root).is_empty(),
        "temp file left: {:?}",
        tmp_entries(&root)
    );
}

#[test]
fn size_limits_are_enforced_while_writing() {
    let (_d, root) = store();
    let data = content(3, 1000);
    let mut w = root.blobs().writer(None, Some(999)).expect("writer");
    assert!(
        w.write_all(&data).is_err(),
        "writing past the announced size must fail"
    );
    drop(w);
    let mut w = root.blobs().writer(None, Some(1001)).expect("writer");
    w.write_all(&data).expect("write");
    assert!(matches!(
        w.commit(),
        Err(Error::SizeMismatch {
            expected: 1001,
            actual: 1000,
            ..
        })
    ));
    assert!(root.blobs().list().expect("list").is_empty());
    assert!(tmp_entries(&root).is_empty());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let (_d, root) = store();
    let mut w = root.blobs().writer(None, None).expect("writer");
    w.write_all(b"half a blob").expect("write");
    assert_eq!(tmp_entries(&root).len(), 1);
    drop(w);
    assert!(tmp_entries(&root).is_empty());
    assert!(root.blobs().list().expect("list").is_empty());
}

#[test]
fn concurrent_writers_of_one_blob_in_threads() {
    let (_d, root) = store();
    let data = Arc::new(content(4, 2 * 1024 * 1024));
    let expected = Digest::of(&data);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            let data = Arc::clone(&data);
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut w = root
                    .blobs()
                    .writer(Some(&expected), Some(data.len() as u64))
                    .expect("writer");
                for chunk in data.chunks(65_537) {
                    w.write_all(chunk).expect("write");
                    // Readers never see a partial blob.
                    if let Ok(mut f) = root.blobs().open(&expected) {
                        let mut got = Vec::new();
                        f.read_to_end(&mut got).expect("read");
                        assert_eq!(got.len(), data.len(), "partial blob visible");
                    }
                }
                w.commit().expect("commit")
            })
        })
        .collect();
    for t in threads {
        let (d, size) = t.join().expect("thread");
        assert_eq!(d, expected);
        assert_eq!(size, data.len() as u64);
    }
    assert_eq!(root.blobs().read(&expected).expect("read"), *data);
    assert!(tmp_entries(&root).is_empty());
}

/// The store's other process (tests/helpers/child.rs) in `mode` on `root`;
/// `id` names what a writer writes.
fn child(mode: &str, root: &Root, id: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln-cache-test-child"));
    c.arg(mode).arg(root.path());
    if mode == "write" {
        c.arg(id.to_string());
    }
    c
}

#[test]
fn concurrent_writers_in_processes_and_no_lost_name_updates() {
    let (_d, root) = store();
    let children: Vec<_> = (0..4)
        .map(|i| {
            child("write", &root, i)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a writer process failed");
    }
    let data = content(5, 4 * 1024 * 1024);
    let d = Digest::of(&data);
    assert_eq!(root.blobs().read(&d).expect("read"), data);
    assert_eq!(root.blobs().list().expect("list").len(), 1);
    // Every process's name survived the others' read-modify-write cycles.
    let names: Vec<String> = root
        .images()
        .list()
        .expect("list")
        .into_iter()
        .map(|(r, _)| r.familiar())
        .collect();
    assert_eq!(
        names,
        vec!["proc/n0:t", "proc/n1:t", "proc/n2:t", "proc/n3:t"]
    );
    assert!(tmp_entries(&root).is_empty());
}

#[test]
fn killed_writer_temp_file_is_cleaned_on_next_open_but_live_ones_are_not() {
    let (_d, root) = store();
    // A live writer in this process: its temp file must survive cleaning.
    let mut live = root.blobs().writer(None, None).expect("writer");
    live.write_all(b"still writing").expect("write");

    let mut c = child("hang", &root, 0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = c.stdout.take().expect("stdout");
    let mut buf = [0u8; 64];
    let mut seen = String::new();
    while !seen.contains("ready") {
        let n = out.read(&mut buf).expect("read child");
        assert!(n > 0, "child exited early");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(tmp_entries(&root).len(), 2);
    // While the child lives, opening the store must not remove its file.
    let again = Root::open(root.path()).expect("reopen");
    assert_eq!(tmp_entries(&again).len(), 2);
    // SIGKILL: no destructor runs, the temp file stays behind…
    c.kill().expect("kill");
    c.wait().expect("wait");
    assert_eq!(tmp_entries(&root).len(), 2);
    // …until the next open, which removes exactly the dead writer's file.
    let again = Root::open(root.path()).expect("reopen");
    assert_eq!(tmp_entries(&again).len(), 1);
    let (d, _) = live.commit().expect("live writer still commits");
    assert_eq!(root.blobs().read(&d).expect("read"), b"still writing");
    assert!(tmp_entries(&root).is_empty());
}

#[test]
fn image_store_set_get_remove_list() {
    let (_d, root) = store();
    let d = root.blobs().put(br#"{"schemaVersion":2}"#).expect("put");
    let desc = kiln_cache::image::descriptor(kiln_cache::media::OCI_MANIFEST, &d, 19);
    let r = Reference::parse("busybox").expect("ref");
    assert!(root.images().get(&r).expect("get").is_none());
    root.images().set(&r, desc.clone()).expect("set");
    let same = Reference::parse("docker.io/library/busybox:latest").expect("ref");
    assert_eq!(root.images().get(&same).expect("get"), Some(desc.clone()));
    let listed = root.images().list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0.familiar(), "busybox:latest");
    assert!(root.images().remove(&r).expect("remove"));
    assert!(!root.images().remove(&r).expect("remove again"));
    assert!(root.images().list().expect("list").is_empty());
    // Many threads updating at once lose nothing.
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let root = root.clone();
            let desc = desc.clone();
            std::thread::spawn(move || {
                let r = Reference::parse(&format!("t/img{i}")).expect("ref");
                root.images().set(&r, desc).expect("set");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(root.images().list().expect("list").len(), 16);
}

#[test]
fn missing_blob_errors_name_the_digest() {
    let (_d, root) = store();
    let d = Digest::of(b"absent");
    let e = root.blobs().read(&d).expect_err("absent blob");
    assert!(e.to_string().contains(&d.to_string()), "{e}");
    assert!(root.blobs().open(&d).is_err());
    assert!(!root.blobs().remove(&d).expect("remove"));
}
