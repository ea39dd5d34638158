//! The unpacking pipeline (inflate and hash on one thread, extract on
//! another) and the extractor's reuse of the last parent folder: an entry
//! that replaces that folder (by a symlink, a file, a whiteout) must make
//! the next entries resolve their parent afresh, so they land where a
//! fresh resolution puts them, and never through a planted symlink.

use std::io::Write;
use std::path::Path;

use kiln_cache::Digest;
use kiln_worker::layer_unpack::unpack_pipelined;
use kiln_worker::layers::{LayerError, LayerRef};
use kiln_worker::snapshot::{apply_layer, SnapshotError};

fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    {
        let u = h.as_old_mut();
        u.name = [0; 100];
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            u.linkname = [0; 100];
            u.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, &'a [u8]);

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, k, l, d) in entries {
        entry(&mut b, n, *k, *l, d);
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn layer_ref(blob: &[u8], tar: &[u8]) -> LayerRef {
    LayerRef {
        diff_id: Digest::of(tar),
        digest: Digest::of(blob),
        size: blob.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

use tar::EntryType::{Directory as D, Regular as F, Symlink as S};

#[test]
fn a_folder_replaced_by_an_escaping_symlink_is_not_written_through() {
    for target in ["/", "../..", "/tmp"] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layer");
        let tar = tar_of(&[
            ("d/", D, None, b""),
            ("d/a", F, None, b"1"),
            ("d", S, Some(target), b""),
            ("d/escaped-kiln-test", F, None, b"pwned"),
        ]);
        match apply_layer(&tar[..], &dir) {
            Err(SnapshotError::Unsafe { .. }) => {}
            other => panic!("{target}: expected an unsafe-entry error, got {other:?}"),
        }
        assert!(!Path::new("/escaped-kiln-test").exists());
        assert!(!Path::new("/tmp/escaped-kiln-test").exists());
    }
}

#[test]
fn a_folder_replaced_then_made_again_gets_the_later_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layer");
    let tar = tar_of(&[
        ("d/", D, None, b""),
        ("d/a", F, None, b"1"),
        ("d", F, None, b"a file now"),
        ("d/", D, None, b""),
        ("d/b", F, None, b"2"),
        ("e/", D, None, b""),
        ("e/x", F, None, b"x"),
        ("e/.wh.x", F, None, b""),
        ("e/y", F, None, b"y"),
        ("real/", D, None, b""),
        ("alias", S, Some("real"), b""),
        ("alias/f", F, None, b"via the link"),
    ]);
    apply_layer(&tar[..], &dir).unwrap();
    assert!(!dir.join("d/a").exists(), "d/a survived d's replacement");
    assert_eq!(std::fs::read(dir.join("d/b")).unwrap(), b"2");
    assert_eq!(std::fs::read(dir.join("e/y")).unwrap(), b"y");
    assert_eq!(std::fs::read(dir.join("real/f")).unwrap(), b"via the link");
}

#[test]
fn pipelined_unpack_checks_the_diff_id() {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..300 {
        entries.push((
            format!("dir{}/file{i}", i % 7),
            vec![b'a' + (i % 26) as u8; i * 997],
        ));
    }
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let blob = gzip(&tar);

    let t = tempfile::tempdir().unwrap();
    let good = layer_ref(&blob, &tar);
    let stats = unpack_pipelined(&blob[..], &good, &t.path().join("ok"), true).unwrap();
    assert_eq!(stats.entries, entries.len() as u64);
    for (name, data) in &entries {
        assert_eq!(
            &std::fs::read(t.path().join("ok").join(name)).unwrap(),
            data
        );
    }

    let mut lying = good.clone();
    lying.diff_id = Digest::of(b"another tar");
    match unpack_pipelined(&blob[..], &lying, &t.path().join("bad"), true) {
        Err(LayerError::DiffId {
            expected, actual, ..
        }) => {
            assert_eq!(expected, lying.diff_id);
            assert_eq!(actual, good.diff_id);
        }
        other => panic!("expected a diff_id error, got {other:?}"),
    }
    // Unchecked (a blob already in the store), the same bytes unpack.
    unpack_pipelined(&blob[..], &lying, &t.path().join("unchecked"), false).unwrap();

    // A truncated blob is an error, not a short layer.
    let cut = &blob[..blob.len() / 2];
    assert!(unpack_pipelined(cut, &good, &t.path().join("cut"), true).is_err());
}
