//! Archives: load the busybox fixture, save it both ways, and let the
//! independent oracle (imagefs.py), skopeo and umoci judge the output;
//! hostile archives are refused with the store untouched.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use kiln_cache::archive::{self, Format, LoadOptions, SaveOptions};
use kiln_cache::{Digest, Reference, Root};
use kiln_testsupport::{busybox_fixture, imagefs, BUSYBOX_INDEX};

const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

fn store(dir: &Path) -> Root {
    Root::open(dir.join("root")).expect("open store")
}

fn assert_same_as_fixture(image: &Path) {
    for p in PLATFORMS {
        let want = imagefs(&busybox_fixture(), Some(p));
        let got = imagefs(image, Some(p));
        assert!(
            want["fs"].as_object().is_some_and(|m| m.len() > 100),
            "fixture describes a real fs"
        );
        assert_eq!(
            got,
            want,
            "{} differs from the fixture for {p}",
            image.display()
        );
    }
}

fn load(root: &Root, p: &Path) -> kiln_cache::Result<archive::LoadReport> {
    archive::load(root, p, &LoadOptions::default())
}

fn save(root: &Root, name: &str, out: &Path, format: Format) {
    let r = Reference::parse(name).expect("ref");
    let d = root.images().get(&r).expect("get").expect("image present");
    archive::save_to_file(root, &[(Some(r), d)], out, &SaveOptions { format }).expect("save");
}

fn assert_empty(root: &Root) {
    assert!(
        root.blobs().list().expect("list").is_empty(),
        "blobs were imported"
    );
    assert!(
        root.images().list().expect("list").is_empty(),
        "names were set"
    );
    let tmp: Vec<_> = std::fs::read_dir(root.tmp_dir()).expect("tmp").collect();
    assert!(tmp.is_empty(), "temp files left");
}

#[test]
fn fixture_round_trip_through_oci_and_docker_archives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = store(dir.path());
    let report = load(&root, &busybox_fixture()).expect("load fixture");
    assert_eq!(report.images.len(), 1);
    assert_eq!(
        report.images[0].names[0].to_string(),
        "docker.io/library/busybox:1.35"
    );
    assert_eq!(
        report.images[0].descriptor.digest().to_string(),
        BUSYBOX_INDEX
    );
    assert_eq!(report.blobs_added, 7);
    // The multi-platform index is kept whole.
    let d = root
        .images()
        .get(&Reference::parse("busybox:1.35").expect("ref"))
        .expect("get")
        .expect("named");
    let manifests = kiln_cache::image::platform_manifests(root.blobs(), &d).expect("platforms");
    assert_eq!(manifests.len(), 2);

    let oci = dir.path().join("out-oci.tar");
    let docker = dir.path().join("out-docker.tar");
    save(&root, "busybox:1.35", &oci, Format::Oci);
    save(&root, "busybox:1.35", &docker, Format::Docker);
    assert_same_as_fixture(&oci);
    assert_same_as_fixture(&docker);

    // skopeo reads the OCI archive, and the docker-archive by name.
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", oci.display())])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
    assert_eq!(v["Digest"], BUSYBOX_INDEX);
    let out = Command::new("skopeo")
        .args([
            "inspect",
            &format!("docker-archive:{}:busybox:1.35", docker.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo docker-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // umoci lists the extracted layout's tag.
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    tar::Archive::new(std::fs::File::open(&oci).expect("open"))
        .unpack(&layout)
        .expect("unpack");
    let out = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&layout)
        .output()
        .expect("umoci");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.35");

    // The layout folder itself loads, into a fresh store, to the same index.
    let root2 = store(&dir.path().join("second"));
    let r = load(&root2, &layout).expect("load layout dir");
    assert_eq!(r.images[0].descriptor.digest().to_string(), BUSYBOX_INDEX);
    // So does kiln's docker-archive (docker 25 form: index.json + manifest.json).
    let root3 = store(&dir.path().join("third"));
    let r = load(&root3, &docker).expect("load docker archive");
    assert_eq!(r.images[0].descriptor.digest().to_string(), BUSYBOX_INDEX);
    assert_eq!(r.images[0].names[0].familiar(), "busybox:1.35");
}

#[test]
fn gzipped_archive_and_explicit_tag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("busybox.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(busybox_fixture()).expect("read fixture"))
        .expect("gzip");
    enc.finish().expect("finish");
    let root = store(dir.path());
    let tag = Reference::parse("localhost:5000/mine:v1").expect("ref");
    let r = archive::load(
        &root,
        &gz,
        &LoadOptions {
            tag: Some(tag.clone()),
        },
    )
    .expect("load gz");
    assert_eq!(r.images[0].names, vec![tag.clone()]);
    let names: Vec<_> = root
        .images()
        .list()
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec![tag], "--tag replaces the archive's names");
}

// ----------------------------------------------------------------- builders

/// Appends an entry with a raw (unchecked) name and link target, as a
/// hostile archive would carry.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).expect("append");
}

/// The fixture's entries, optionally edited, plus extra raw entries.
fn fixture_with(
    edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&str, tar::EntryType, &str)],
) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(std::fs::File::open(busybox_fixture()).expect("fixture"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("read");
        let kind = e.header().entry_type();
        let Some(data) = (if kind.is_file() {
            edit(&name, data)
        } else {
            Some(data)
        }) else {
            continue;
        };
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("append");
    }
    for (name, kind, link) in extra {
        raw_entry(
            &mut b,
            name,
            *kind,
            link,
            if kind.is_file() { b"x" } else { b"" },
        );
    }
    b.into_inner().expect("tar")
}

fn refused(bytes: Vec<u8>, needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hostile.tar");
    std::fs::write(&p, bytes).expect("write");
    let root = store(dir.path());
    let e = load(&root, &p).expect_err("hostile archive accepted");
    let msg = e.to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert_empty(&root);
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_imported() {
    let keep = |_: &str, d: Vec<u8>| Some(d);
    refused(
        fixture_with(keep, &[("../evil", tar::EntryType::Regular, "")]),
        "contains '..'",
    );
    refused(
        fixture_with(keep, &[("blobs/../../evil", tar::EntryType::Regular, "")]),
        "contains '..'",
    );
    refused(
        fixture_with(keep, &[("/etc/evil", tar::EntryType::Regular, "")]),
        "absolute path",
    );
    refused(
        fixture_with(
            keep,
            &[("blobs/sha256/link", tar::EntryType::Symlink, "/etc/passwd")],
        ),
        "outside the archive",
    );
    refused(
        fixture_with(
            keep,
            &[(
                "blobs/sha256/link",
                tar::EntryType::Symlink,
                "../../../etc/passwd",
            )],
        ),
        "outside the archive",
    );
    refused(
        fixture_with(
            keep,
            &[("blobs/sha256/hl", tar::EntryType::Link, "/etc/passwd")],
        ),
        "hard link",
    );
    refused(
        fixture_with(keep, &[("dev", tar::EntryType::Char, "")]),
        "unsupported type",
    );
    // A layer whose bytes do not match its name.
    let layer = "blobs/sha256/2c495a2e0e37295f7df9ce3537a08969bb7f2778bc00bda604da87e19ea80f35";
    refused(
        fixture_with(
            |n, mut d| {
                if n == layer {
                    d[100] ^= 1;
                }
                Some(d)
            },
            &[],
        ),
        "does not match its digest",
    );
    // A layer that is missing altogether.
    refused(
        fixture_with(|n, d| (n != layer).then_some(d), &[]),
        "is missing",
    );
    // An index.json that lies about a size.
    refused(
        fixture_with(
            |n, d| {
                if n == "index.json" {
                    Some(
                        String::from_utf8(d)
                            .expect("utf8")
                            .replace("\"size\":506", "\"size\":505")
                            .into_bytes(),
                    )
                } else {
                    Some(d)
                }
            },
            &[],
        ),
        "size mismatch",
    );
    // Not an archive at all.
    refused(
        b"hello, not a tar".repeat(100),
        "not a readable tar archive",
    );
    // A tar that is neither layout.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "README", tar::EntryType::Regular, "", b"hi");
    refused(b.into_inner().expect("tar"), "neither an OCI layout");
}

#[test]
fn bare_tag_annotation_does_not_invent_a_repository() {
    let bytes = fixture_with(
        |n, d| {
            if n == "index.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&d).expect("json");
                v["manifests"][0]["annotations"] =
                    serde_json::json!({"org.opencontainers.image.ref.name": "1.35"});
                Some(serde_json::to_vec(&v).expect("json"))
            } else {
                Some(d)
            }
        },
        &[],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("tagonly.tar");
    std::fs::write(&p, bytes).expect("write");
    let root = store(dir.path());
    let r = load(&root, &p).expect("load");
    assert!(
        r.images[0].names.is_empty(),
        "named {:?}",
        r.images[0].names
    );
    assert_eq!(r.unnamed_tags, vec!["1.35".to_string()]);
    assert!(root.images().list().expect("list").is_empty());
}

#[test]
fn legacy_docker_archive_with_linked_layer() {
    // Build what `docker save` (before 25) writes, from the fixture's amd64
    // image: <config hex>.json, <id>/layer.tar uncompressed, manifest.json;
    // the layer reached through a symlink as docker does for shared layers.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = store(&dir.path().join("src"));
    load(&src, &busybox_fixture()).expect("load fixture");
    let config_digest: Digest =
        "sha256:74c3b9e98dc32dda25d742c5c1b02b903e1274973a0053ed1ca58ba767dd0737"
            .parse()
            .expect("digest");
    let layer_digest: Digest =
        "sha256:2c495a2e0e37295f7df9ce3537a08969bb7f2778bc00bda604da87e19ea80f35"
            .parse()
            .expect("digest");
    let config = src.blobs().read(&config_digest).expect("config");
    let mut layer = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(src.blobs().open(&layer_digest).expect("layer")),
        &mut layer,
    )
    .expect("gunzip");

    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    file(&mut b, "aaaa/layer.tar", &layer);
    raw_entry(
        &mut b,
        "bbbb/layer.tar",
        tar::EntryType::Symlink,
        "../aaaa/layer.tar",
        b"",
    );
    file(&mut b, &format!("{}.json", config_digest.hex()), &config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", config_digest.hex()),
        "RepoTags": ["legacy:1"],
        "Layers": ["bbbb/layer.tar"],
    }]);
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    let legacy = dir.path().join("legacy.tar");
    std::fs::write(&legacy, b.into_inner().expect("tar")).expect("write");
    assert_eq!(
        imagefs(&legacy, Some("linux/amd64")),
        imagefs(&busybox_fixture(), Some("linux/amd64"))
    );

    let root = store(dir.path());
    let r = load(&root, &legacy).expect("load legacy");
    assert_eq!(r.images[0].names[0].familiar(), "legacy:1");
    let out = dir.path().join("again.tar");
    save(&root, "legacy:1", &out, Format::Oci);
    assert_eq!(
        imagefs(&out, Some("linux/amd64")),
        imagefs(&busybox_fixture(), Some("linux/amd64"))
    );

    // A legacy layer whose bytes do not match the config's diff_id is refused.
    let mut b = tar::Builder::new(Vec::new());
    let mut bad_layer = layer.clone();
    let last = bad_layer.len() - 2000;
    bad_layer[last] ^= 0xff;
    file(&mut b, "aaaa/layer.tar", &bad_layer);
    file(&mut b, &format!("{}.json", config_digest.hex()), &config);
    let manifest = serde_json::json!([{"Config": format!("{}.json", config_digest.hex()), "RepoTags": ["bad:1"], "Layers": ["aaaa/layer.tar"]}]);
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, b.into_inner().expect("tar")).expect("write");
    let root = store(&dir.path().join("badroot"));
    let e = load(&root, &bad).expect_err("mismatching layer accepted");
    assert!(e.to_string().contains("config says"), "{e}");
    assert_empty(&root);
}
