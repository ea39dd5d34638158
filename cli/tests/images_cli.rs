//! The image commands end to end through the real `kiln` binary, each test
//! with its own `$KILN_ROOT`.

use std::path::Path;

use kiln_testsupport::{busybox_fixture, imagefs, Kiln, BUSYBOX_INDEX};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The busybox fixture as a command-line argument.
fn fixture() -> String {
    busybox_fixture().display().to_string()
}

#[test]
fn load_images_tag_inspect_history_save_rmi() {
    let k = Kiln::empty(KILN);
    assert_eq!(
        k.ok(&["load", "-i", &fixture()]).0,
        "Loaded image: busybox:1.35\n"
    );
    let table = k.ok(&["images"]).0;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "REPOSITORY          TAG                 IMAGE ID            CREATED             SIZE"
    );
    assert!(
        lines[1].starts_with("busybox             1.35                92113fb732fa        ")
            && lines[1].ends_with(" ago         1.03MB"),
        "{:?}",
        lines[1]
    );
    assert_eq!(lines.len(), 2);

    k.ok(&["tag", "busybox:1.35", "localhost:5000/tools/bb:v1"]);
    let table = k.ok(&["images"]).0;
    assert!(table.contains("localhost:5000/tools/bb   v1 "), "{table}");
    assert_eq!(k.ok(&["images", "-q"]).0, "92113fb732fa\n");
    assert_eq!(
        k.ok(&["images", "-q", "--no-trunc"]).0,
        format!("{BUSYBOX_INDEX}\n")
    );
    assert_eq!(k.ok(&["images", "-q", "busybox"]).0, "92113fb732fa\n");
    assert_eq!(
        k.ok(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
            "busybox"
        ])
        .0,
        "busybox:1.35 92113fb732fa\n"
    );
    let t = k
        .ok(&[
            "images",
            "--format",
            "table {{.Repository}}\t{{.Size}}",
            "busybox",
        ])
        .0;
    assert_eq!(t, "REPOSITORY   SIZE\nbusybox      1.03MB\n");

    // inspect: docker's fields, host platform by default, --platform picks.
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "busybox:1.35"]).0).expect("json");
    let doc = &v[0];
    assert_eq!(doc["Id"], BUSYBOX_INDEX);
    assert_eq!(
        doc["RepoTags"],
        serde_json::json!(["busybox:1.35", "localhost:5000/tools/bb:v1"])
    );
    assert_eq!(doc["Created"], "2024-01-01T00:00:00Z");
    assert_eq!(doc["Os"], "linux");
    assert_eq!(doc["Architecture"], "amd64");
    assert_eq!(doc["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(doc["RootFS"]["Type"], "layers");
    assert_eq!(
        doc["RootFS"]["Layers"],
        serde_json::json!([
            "sha256:525a7c8392766fccd816008b1dd24f97d40180a117cea811c6bac7110e0c2543"
        ])
    );
    assert_eq!(doc["Size"], 395 + 1_031_856);
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--platform", "linux/arm64", "92113f"]).0)
            .expect("json");
    assert_eq!(v[0]["Architecture"], "arm64");
    assert_eq!(v[0]["Variant"], "v8");
    let out = k.run(&["inspect", "--platform", "linux/s390x", "busybox:1.35"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest for platform linux/s390x"));

    let hist = k.ok(&["history", "busybox:1.35"]).0;
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(lines[0], "IMAGE               CREATED             CREATED BY                                      SIZE                COMMENT");
    assert!(lines[1].starts_with("92113fb732fa        "), "{hist}");
    assert!(
        lines[1].contains("busybox-static 1:1.35.0-4+deb12u1+b1 from De…"),
        "{hist}"
    );
    assert!(lines[1].contains("1.03MB"), "{hist}");
    let hist = k
        .ok(&[
            "history",
            "--platform",
            "linux/arm64",
            "--no-trunc",
            "busybox:1.35",
        ])
        .0;
    assert!(
        hist.contains("from Debian") && hist.contains("991kB"),
        "{hist}"
    );

    // save both ways; the oracle sees both platforms as in the fixture.
    let oci = k.path("o.tar");
    let docker = k.path("d.tar");
    k.ok(&[
        "save",
        "-o",
        oci.to_str().expect("utf8"),
        "--format",
        "oci",
        "busybox:1.35",
    ]);
    k.ok(&["save", "-o", docker.to_str().expect("utf8"), "busybox:1.35"]);
    for p in ["linux/amd64", "linux/arm64"] {
        let want = imagefs(Path::new(&fixture()), Some(p));
        assert_eq!(imagefs(&oci, Some(p)), want, "oci {p}");
        assert_eq!(imagefs(&docker, Some(p)), want, "docker {p}");
    }

    // rmi: untag one name, content stays; untag the last, content goes.
    assert_eq!(k.ok(&["rmi", "busybox:1.35"]).0, "Untagged: busybox:1.35\n");
    assert_eq!(k.blobs(), 7);
    assert_eq!(
        k.ok(&["rmi", "localhost:5000/tools/bb:v1"]).0,
        format!("Untagged: localhost:5000/tools/bb:v1\nDeleted: {BUSYBOX_INDEX}\n")
    );
    assert_eq!(k.blobs(), 0);
    assert_eq!(k.ok(&["images"]).0.lines().count(), 1);

    // The saved docker-archive loads back under its name.
    assert_eq!(
        k.ok(&["load", "-i", docker.to_str().expect("utf8")]).0,
        "Loaded image: busybox:1.35\n"
    );
    let out = k.run(&["rmi", "nosuch:image"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image: nosuch:image"));
}

#[test]
fn rmi_by_id_with_several_names_needs_force() {
    let k = Kiln::empty(KILN);
    k.ok(&["load", "-i", &fixture()]);
    k.ok(&["tag", "busybox:1.35", "other:1"]);
    let out = k.run(&["rmi", "92113fb732fa"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be forced"));
    let out = k.ok(&["rmi", "-f", "92113fb732fa"]).0;
    assert!(
        out.contains("Untagged: busybox:1.35")
            && out.contains("Untagged: other:1")
            && out.contains("Deleted:")
    );
    assert_eq!(k.blobs(), 0);
}

#[test]
fn prune_removes_only_unreferenced_blobs_and_reports_space() {
    let k = Kiln::empty(KILN);
    k.ok(&["load", "-i", &fixture()]);
    let root = k.store();
    let orphan = root.blobs().put(&vec![7u8; 12_345]).expect("put");
    assert_eq!(k.blobs(), 8);
    let dry = k.ok(&["prune", "--dry-run"]).0;
    assert!(
        dry.contains(&orphan.to_string()) && dry.contains("Total reclaimed space: 12.3kB"),
        "{dry}"
    );
    assert_eq!(k.blobs(), 8);
    let out = k.ok(&["prune"]).0;
    assert!(out.contains(&orphan.to_string()), "{out}");
    assert!(out.ends_with("Total reclaimed space: 12.3kB\n"), "{out}");
    assert_eq!(k.blobs(), 7);
    assert!(!root.blobs().has(&orphan));
    assert_eq!(k.ok(&["prune", "--all"]).0, "Total reclaimed space: 0B\n");
    // The image is intact.
    let out = k.path("after.tar");
    k.ok(&[
        "save",
        "-o",
        out.to_str().expect("utf8"),
        "--format",
        "oci",
        "busybox:1.35",
    ]);
    assert_eq!(
        imagefs(&out, Some("linux/arm64")),
        imagefs(Path::new(&fixture()), Some("linux/arm64"))
    );
}

#[test]
fn load_refuses_dotdot_entries_and_leaves_the_store_unchanged() {
    let k = Kiln::empty(KILN);
    k.ok(&["load", "-i", &fixture()]);
    let before = std::fs::read(k.root.join("images.json")).expect("names");

    let mut b = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(std::fs::File::open(fixture()).expect("fixture"));
    for e in a.entries().expect("entries") {
        let e = e.expect("entry");
        let h = e.header().clone();
        b.append(&h, e).expect("append");
    }
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..11].copy_from_slice(b"../../pwned");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("append");
    let bad = k.path("bad.tar");
    std::fs::write(&bad, b.into_inner().expect("tar")).expect("write");

    let out = k.run(&["load", "-i", bad.to_str().expect("utf8"), "--tag", "evil:1"]);
    assert_eq!(out.status.code(), Some(1));
    // miette wraps long lines: compare with the wrapping undone.
    let err = String::from_utf8_lossy(&out.stderr).replace('│', " ");
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        err.contains("refusing archive") && err.contains("\"../../pwned\" contains '..'"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(k.root.join("images.json")).expect("names"),
        before
    );
    assert_eq!(k.blobs(), 7);
    assert_eq!(
        std::fs::read_dir(k.root.join("tmp")).expect("tmp").count(),
        0
    );
    assert!(!k.path("pwned").exists() && !k.root.join("../pwned").exists());
}
