//! apply_layer, overlay mounts and diffs on real overlayfs (run as root).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_worker::diff::{write_layer, Compression, DiffOptions};
use kiln_worker::snapshot::{
    apply_layer, apply_layer_merged, flatten, mount_overlay, SnapshotError,
};

/// A tar entry with a raw name (the tar crate refuses `..` in set_path).
fn raw_entry(
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

fn tar_of(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, k, l, d) in entries {
        raw_entry(&mut b, n, *k, *l, d);
    }
    b.into_inner().unwrap()
}

fn assert_unsafe(r: Result<kiln_worker::snapshot::ApplyStats, SnapshotError>) {
    match r {
        Err(SnapshotError::Unsafe { .. }) => {}
        other => panic!("expected an unsafe-entry error, got {other:?}"),
    }
}

#[test]
fn refuses_dotdot_entries() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layer");
    let tar = tar_of(&[("a/../../evil", tar::EntryType::Regular, None, b"x")]);
    assert_unsafe(apply_layer(&tar[..], &dir));
    assert!(!t.path().join("evil").exists());
}

#[test]
fn refuses_writing_through_escaping_symlinks() {
    for target in ["/", "../..", "../../../../tmp"] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layer");
        let tar = tar_of(&[
            ("link", tar::EntryType::Symlink, Some(target), b""),
            ("link/escaped", tar::EntryType::Regular, None, b"pwned"),
        ]);
        assert_unsafe(apply_layer(&tar[..], &dir));
        assert!(!Path::new("/escaped").exists());
        assert!(!t.path().join("escaped").exists());
    }
}

#[test]
fn refuses_hard_links_to_outside() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("secret"), "s").unwrap();
    let dir = t.path().join("layer");
    for link in ["../secret", "/etc/passwd"] {
        let tar = tar_of(&[("h", tar::EntryType::Link, Some(link), b"")]);
        let r = apply_layer(&tar[..], &dir);
        assert!(r.is_err(), "hard link to {link} accepted");
        assert!(!dir.join("h").exists());
    }
}

#[test]
fn symlinks_inside_the_layer_are_followed_and_hard_links_kept() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layer");
    let tar = tar_of(&[
        ("real/", tar::EntryType::Directory, None, b""),
        ("alias", tar::EntryType::Symlink, Some("real"), b""),
        ("alias/f", tar::EntryType::Regular, None, b"data"),
        ("g", tar::EntryType::Link, Some("real/f"), b""),
    ]);
    apply_layer(&tar[..], &dir).unwrap();
    assert_eq!(std::fs::read(dir.join("real/f")).unwrap(), b"data");
    let a = std::fs::metadata(dir.join("real/f")).unwrap();
    let b = std::fs::metadata(dir.join("g")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteouts_become_overlay_native() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layer");
    let tar = tar_of(&[
        ("d/", tar::EntryType::Directory, None, b""),
        ("d/.wh..wh..opq", tar::EntryType::Regular, None, b""),
        ("d/new", tar::EntryType::Regular, None, b"n"),
        ("e/.wh.gone", tar::EntryType::Regular, None, b""),
    ]);
    apply_layer(&tar[..], &dir).unwrap();
    let md = std::fs::symlink_metadata(dir.join("e/gone")).unwrap();
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "whiteout is char 0/0"
    );
    assert!(!dir.join("e/.wh.gone").exists());
    let x = std::process::Command::new("python3")
        .args(["-c", "import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], 'trusted.overlay.opaque').decode())"])
        .arg(dir.join("d"))
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&x.stdout),
        "y",
        "{}",
        String::from_utf8_lossy(&x.stderr)
    );
    assert!(!dir.join("d/.wh..wh..opq").exists());
}

#[test]
fn merged_apply_executes_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let l1 = tar_of(&[
        ("d/", tar::EntryType::Directory, None, b""),
        ("d/old", tar::EntryType::Regular, None, b"o"),
        ("f", tar::EntryType::Regular, None, b"f"),
    ]);
    let l2 = tar_of(&[
        ("d/", tar::EntryType::Directory, None, b""),
        ("d/.wh..wh..opq", tar::EntryType::Regular, None, b""),
        ("d/new", tar::EntryType::Regular, None, b"n"),
        (".wh.f", tar::EntryType::Regular, None, b""),
    ]);
    apply_layer_merged(&l1[..], &root).unwrap();
    apply_layer_merged(&l2[..], &root).unwrap();
    assert!(!root.join("d/old").exists());
    assert!(root.join("d/new").exists());
    assert!(!root.join("f").exists());
}

#[test]
fn busybox_unpacks_and_flattens() {
    let t = tempfile::tempdir().unwrap();
    let layers = kiln_testsupport::busybox_layer_dirs(t.path());
    assert!(!layers.is_empty());
    let flat = t.path().join("flat");
    flatten(&layers, &flat).unwrap();
    assert!(flat.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(flat.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    let passwd = std::fs::read_to_string(flat.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    let tmp = std::fs::metadata(flat.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
}

/// Writes into an overlay from the test process itself, then diffs.
#[test]
fn overlay_upper_diffs_to_oci_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let layers = kiln_testsupport::busybox_layer_dirs(t.path());
    let (upper, work, merged) = (
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let m = mount_overlay(&layers, &upper, &work, &merged).unwrap();
    std::fs::remove_file(merged.join("bin/ls")).unwrap();
    std::fs::create_dir_all(merged.join("x")).unwrap();
    std::fs::write(merged.join("x/y"), "").unwrap();
    std::fs::write(merged.join("x/big"), vec![7u8; 300_000]).unwrap();
    std::fs::hard_link(merged.join("x/big"), merged.join("x/big2")).unwrap();
    // rm -rf a dir with lower content, then recreate it: an opaque dir.
    std::fs::remove_dir_all(merged.join("usr/sbin")).unwrap();
    std::fs::create_dir(merged.join("usr/sbin")).unwrap();
    std::fs::write(merged.join("usr/sbin/z"), "z").unwrap();
    m.unmount().unwrap();

    let opts = DiffOptions {
        lowers: layers.clone(),
        ..Default::default()
    };
    let (d, tar_bytes) = write_layer(&upper, &opts, Compression::None, Vec::new()).unwrap();
    let list = kiln_testsupport::tar_listing(&tar_bytes);
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/.wh.ls",
            "usr/",
            "usr/sbin/",
            "usr/sbin/.wh..wh..opq",
            "usr/sbin/z",
            "x/",
            "x/big",
            "x/big2",
            "x/y"
        ],
        "{list:?}"
    );
    let kinds: Vec<char> = list.iter().map(|(_, k)| *k).collect();
    assert_eq!(kinds, ['d', 'f', 'd', 'd', 'f', 'f', 'd', 'f', 'h', 'f']);
    assert_eq!(d.digest, d.diff_id);
    assert_eq!(d.size, tar_bytes.len() as u64);
    use sha2::Digest;
    assert_eq!(
        d.diff_id,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar_bytes)))
    );

    // gzip: same diff_id, the digest is the compressed bytes'.
    let (g, gz) = write_layer(&upper, &opts, Compression::Gzip, Vec::new()).unwrap();
    assert_eq!(g.diff_id, d.diff_id, "deterministic tar");
    assert_eq!(
        g.digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&gz)))
    );
    assert_eq!(g.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");

    // The layer applied on the flattened base gives the merged view.
    let flat = t.path().join("flat");
    flatten(&layers, &flat).unwrap();
    apply_layer_merged(flate2::read::GzDecoder::new(&gz[..]), &flat).unwrap();
    // (busybox's applets are symlinks to /bin/busybox: look at the links,
    // not at what the host has there.)
    assert!(flat.join("bin/ls").symlink_metadata().is_err());
    assert!(flat.join("bin/cat").symlink_metadata().is_ok());
    assert_eq!(std::fs::read_dir(flat.join("usr/sbin")).unwrap().count(), 1);
    assert_eq!(std::fs::read(flat.join("x/big2")).unwrap().len(), 300_000);
    let a = std::fs::metadata(flat.join("x/big")).unwrap();
    let b = std::fs::metadata(flat.join("x/big2")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
}

#[test]
fn many_lowers_mount_with_the_new_mount_api() {
    let t = tempfile::tempdir().unwrap();
    let mut lowers = Vec::new();
    for i in 0..200 {
        let d = t
            .path()
            .join(format!("a-fairly-long-layer-directory-name-{i:04}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        std::fs::write(d.join("top"), i.to_string()).unwrap();
        lowers.push(d);
    }
    let (upper, work, merged) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let m = mount_overlay(&lowers, &upper, &work, &merged).unwrap();
    assert_eq!(
        std::fs::read_to_string(merged.join("top")).unwrap(),
        "199",
        "last is topmost"
    );
    assert_eq!(std::fs::read_to_string(merged.join("f0")).unwrap(), "0");
    m.unmount().unwrap();
}

/// Changes of every kind, made through whatever rootfs a snapshot offers.
fn mutate(root: &Path) {
    std::fs::remove_file(root.join("bin/ls")).unwrap();
    std::fs::create_dir_all(root.join("x/deep")).unwrap();
    std::fs::write(root.join("x/deep/y"), "y").unwrap();
    std::fs::remove_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::create_dir(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/z"), "z").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("bin/newtool")).unwrap();
    std::fs::remove_file(root.join("bin/cat")).unwrap();
    std::fs::write(root.join("bin/cat"), "not a link any more").unwrap();
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let long = "d".repeat(60);
    let deep = root.join(format!("{long}/{long}/{long}"));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f".repeat(120)), "long").unwrap();
}

/// The layer of a snapshot, applied on its base, gives the snapshot's tree.
fn roundtrip(force_copy: bool) {
    use kiln_worker::diff::write_snapshot;
    use kiln_worker::snapshot::{Active, Finished};
    let t = tempfile::tempdir().unwrap();
    let layers = kiln_testsupport::busybox_layer_dirs(t.path());
    let snap = Active::prepare(&layers, &t.path().join("snap"), force_copy).unwrap();
    assert_eq!(snap.is_overlay(), !force_copy);
    mutate(snap.rootfs());
    let expected = kiln_testsupport::tree(snap.rootfs());
    let finished = snap.finish().unwrap();
    match (&finished, force_copy) {
        (Finished::Copy { .. }, true) | (Finished::Overlay { .. }, false) => {}
        other => panic!("unexpected snapshot kind {other:?}"),
    }
    let (d, gz) = write_snapshot(&finished, &[], Compression::Gzip, Vec::new()).unwrap();
    assert!(d.entries > 0);
    let flat = t.path().join("check");
    flatten(&layers, &flat).unwrap();
    apply_layer_merged(flate2::read::GzDecoder::new(&gz[..]), &flat).unwrap();
    let got = kiln_testsupport::tree(&flat);
    assert_eq!(got, expected);
    // Nothing unchanged is in the layer.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
    let names: Vec<String> = kiln_testsupport::tar_listing(&tar)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        !names.iter().any(|n| n == "bin/busybox" || n == "etc/group"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "bin/.wh.ls"), "{names:?}");
}

#[test]
fn overlay_snapshot_roundtrips_through_its_layer() {
    roundtrip(false);
}

#[test]
fn copy_snapshot_roundtrips_through_its_layer() {
    roundtrip(true);
}

#[test]
fn more_lowers_than_overlay_takes_are_flattened() {
    use kiln_worker::snapshot::Active;
    let t = tempfile::tempdir().unwrap();
    let mut lowers = Vec::new();
    for i in 0..520 {
        let d = t.path().join(format!("l{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        std::fs::write(d.join("top"), i.to_string()).unwrap();
        lowers.push(d);
    }
    let snap = Active::prepare(&lowers, &t.path().join("snap"), false).unwrap();
    assert!(snap.is_overlay());
    assert_eq!(
        std::fs::read_to_string(snap.rootfs().join("top")).unwrap(),
        "519"
    );
    assert_eq!(
        std::fs::read_to_string(snap.rootfs().join("f0")).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(snap.rootfs().join("f300")).unwrap(),
        "300"
    );
    snap.finish().unwrap();
}

/// A file capability survives diff and apply; overlay's own xattrs never
/// reach the tar.
#[test]
fn security_capability_is_kept_and_overlay_xattrs_dropped() {
    let t = tempfile::tempdir().unwrap();
    let layers = kiln_testsupport::busybox_layer_dirs(t.path());
    let (upper, work, merged) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let m = mount_overlay(&layers, &upper, &work, &merged).unwrap();
    std::fs::write(merged.join("bin/kiln-ping"), "elf").unwrap();
    // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13).
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let py = "import os,sys; os.setxattr(sys.argv[1], 'security.capability', bytes.fromhex(sys.argv[2]))";
    let st = std::process::Command::new("python3")
        .args(["-c", py])
        .arg(merged.join("bin/kiln-ping"))
        .arg(hex::encode(&cap))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(merged.join("usr/bin")).unwrap();
    std::fs::create_dir(merged.join("usr/bin")).unwrap();
    m.unmount().unwrap();

    let opts = DiffOptions {
        lowers: layers.clone(),
        ..Default::default()
    };
    let (_, tar_bytes) = write_layer(&upper, &opts, Compression::None, Vec::new()).unwrap();
    let mut a = tar::Archive::new(&tar_bytes[..]);
    let mut caps = 0;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                let k = x.key().unwrap().to_string();
                assert!(!k.contains("overlay"), "overlay xattr leaked: {k}");
                if k == "SCHILY.xattr.security.capability" {
                    assert_eq!(x.value_bytes(), &cap[..]);
                    caps += 1;
                }
            }
        }
    }
    assert_eq!(caps, 1);
    let out = t.path().join("applied");
    apply_layer(&tar_bytes[..], &out).unwrap();
    let got = std::process::Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.getxattr(sys.argv[1], 'security.capability').hex())",
        ])
        .arg(out.join("bin/kiln-ping"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        hex::encode(&cap)
    );
}

/// `.wh.d` then `d/` in one layer: the new d hides the lower one's content.
#[test]
fn dir_over_a_whiteout_of_the_same_layer_is_opaque() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    apply_layer(
        &tar_of(&[
            ("d/", tar::EntryType::Directory, None, b""),
            ("d/old", tar::EntryType::Regular, None, b"o"),
        ])[..],
        &lower,
    )
    .unwrap();
    let upper_layer = t.path().join("l2");
    apply_layer(
        &tar_of(&[
            (".wh.d", tar::EntryType::Regular, None, b""),
            ("d/", tar::EntryType::Directory, None, b""),
            ("d/new", tar::EntryType::Regular, None, b"n"),
        ])[..],
        &upper_layer,
    )
    .unwrap();
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let mounted = kiln_worker::snapshot::mount_readonly(&[lower, upper_layer], &m).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(m.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);
    mounted.unmount().unwrap();
}

#[test]
fn an_images_layers_unpack_side_by_side_in_order() {
    use kiln_cache::{media, Digest};
    use kiln_worker::layers::{LayerRef, LayerStore};
    let dir = tempfile::tempdir().unwrap();
    let root = kiln_cache::Root::open(dir.path()).unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let mut refs = Vec::new();
    for i in 0..8 {
        let name = format!("f{i}");
        let body = format!("layer {i} ").repeat(10_000 * (i + 1));
        let tar = tar_of(&[(&name, tar::EntryType::Regular, None, body.as_bytes())]);
        // Half gzip (as pulled), half plain (as built).
        let (blob, media_type) = if i % 2 == 0 {
            (
                kiln_cache::pgzip::compress(&tar, 6).unwrap(),
                media::OCI_LAYER_GZIP,
            )
        } else {
            (tar.clone(), media::OCI_LAYER)
        };
        let digest = root.blobs().put(&blob).unwrap();
        refs.push(LayerRef {
            diff_id: Digest::of(&tar),
            digest,
            size: blob.len() as u64,
            media_type: media_type.to_string(),
        });
    }
    // The same layer twice (an image may repeat one): unpacked once.
    refs.push(refs[2].clone());
    let dirs = store.dirs(&refs, root.blobs()).unwrap();
    assert_eq!(dirs.len(), refs.len());
    for (i, (d, r)) in dirs.iter().zip(&refs).enumerate() {
        assert_eq!(d, &store.path(&r.diff_id), "layer {i} in order");
        let n = if i == 8 { 2 } else { i };
        let got = std::fs::read_to_string(d.join(format!("f{n}"))).unwrap();
        assert_eq!(got, format!("layer {n} ").repeat(10_000 * (n + 1)));
    }
    // Again: all there, the same answer without unpacking.
    assert_eq!(store.dirs(&refs, root.blobs()).unwrap(), dirs);

    // A layer whose blob is missing fails, naming that layer.
    let mut bad = refs[..3].to_vec();
    let missing = Digest::of(b"no such layer");
    bad[1] = LayerRef {
        diff_id: missing.clone(),
        digest: missing.clone(),
        size: 1,
        media_type: media::OCI_LAYER.to_string(),
    };
    let err = store.dirs(&bad, root.blobs()).unwrap_err().to_string();
    assert!(err.contains(&missing.hex()[..12]), "{err}");
}
