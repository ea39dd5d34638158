//! Incremental COPY: a rebuild after a few context files changed starts the
//! COPY from its previous result (hard links) instead of copying every file
//! again, and must give the very layer a full copy gives: same diff_id,
//! whatever changed (an appended file, a deleted file and folder, a mode
//! changed without touching the mtime, a new file, a file turned into a
//! symlink).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_testsupport::{stderr, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

// No WORKDIR: the folder it makes gets the time of the build, so its layer
// (and all above it) would differ between two stores whatever COPY does.
const DOCKERFILE: &str = "FROM busybox:1.35
COPY . /src/
RUN ls -lR /src > /listing
";

fn write_context(ctx: &Path) {
    std::fs::create_dir_all(ctx).expect("mkdir ctx");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("write");
    for d in ["a", "b", "b/sub"] {
        std::fs::create_dir_all(ctx.join(d)).expect("mkdir");
    }
    for i in 0..40 {
        std::fs::write(
            ctx.join(format!("a/f{i}")),
            format!("file {i}\n").repeat(50),
        )
        .expect("write");
    }
    for i in 0..5 {
        std::fs::write(ctx.join(format!("b/sub/g{i}")), "g\n").expect("write");
    }
    std::fs::write(ctx.join("b/keep"), "keep\n").expect("write");
}

/// The diff_ids of image `name`, lowest first.
fn diff_ids(k: &Kiln, name: &str) -> Vec<String> {
    let (out, _) = k.ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    let layers = &v[0]["RootFS"]["Layers"];
    layers
        .as_array()
        .unwrap_or_else(|| panic!("no RootFS.Layers in {v}"))
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect()
}

fn build(k: &Kiln, ctx: &Path) {
    let out = k.run(&["build", "-q", "-t", "app", &ctx.display().to_string()]);
    assert!(out.status.success(), "build: {}", stderr(&out));
}

#[test]
fn an_incremental_copy_gives_the_layer_a_full_copy_gives() {
    incremental_copy_matches_a_full_one(None);
}

/// The same over kiln's FUSE overlay, where the first COPY writes into a
/// linked tree and the incremental one into the FUSE overlay's upper dir:
/// both must give the layers kernel overlay gives.
#[test]
fn an_incremental_copy_over_fuse_gives_the_layer_a_full_copy_gives() {
    incremental_copy_matches_a_full_one(Some("fuse"));
}

fn incremental_copy_matches_a_full_one(snapshotter: Option<&str>) {
    let k = Kiln::with_busybox(KILN);
    if let Some(s) = snapshotter {
        let config = format!(r#"{{"snapshotter":"{s}"}}"#);
        std::fs::write(k.root.join("config.json"), config).expect("config");
        let (info, _) = k.ok(&["info"]);
        assert!(info.contains(&format!("Snapshotter: {s}")), "{info}");
    }
    let ctx = k.path("ctx");
    write_context(&ctx);
    build(&k, &ctx);
    let first = diff_ids(&k, "app");

    // Every kind of change a COPY must follow.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ctx.join("a/f0"))
        .expect("open");
    std::io::Write::write_all(&mut f, b"edited\n").expect("append");
    drop(f);
    std::fs::remove_file(ctx.join("a/f1")).expect("rm");
    // chmod changes no mtime: the kept file must not be trusted on size
    // and mtime alone.
    std::fs::set_permissions(ctx.join("a/f2"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::remove_dir_all(ctx.join("b/sub")).expect("rm -r");
    std::fs::create_dir_all(ctx.join("c")).expect("mkdir");
    std::fs::write(ctx.join("c/new"), "new\n").expect("write");
    std::fs::remove_file(ctx.join("a/f3")).expect("rm");
    std::os::unix::fs::symlink("f4", ctx.join("a/f3")).expect("symlink");

    build(&k, &ctx);
    let second = diff_ids(&k, "app");
    assert_ne!(first, second, "the edit changed the COPY layer");

    // The incremental path was taken: an unchanged file of the new COPY
    // layer shares its inode with the previous one.
    let copy_layer = &second[second.len() - 2];
    let hex = copy_layer.trim_start_matches("sha256:");
    let kept = k.store().layers_dir().join(hex).join("src/a/f10");
    let md = std::fs::symlink_metadata(&kept).expect("the COPY layer's dir holds a/f10");
    assert!(
        md.nlink() >= 2,
        "an unchanged file is a hard link to the previous result, not a copy"
    );

    // A fresh store copies everything: the same layers, byte for byte.
    let fresh = Kiln::with_busybox(KILN);
    build(&fresh, &ctx);
    let full = diff_ids(&fresh, "app");
    assert_eq!(
        full[..full.len() - 1],
        second[..second.len() - 1],
        "full and incremental COPY give the same layer digests"
    );

    // And what a RUN sees is the new content: deletions, mode, symlink.
    let out = k.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let o = k.run(&["build", "-q", "--output", &dest, &ctx.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = std::fs::read_to_string(out.join("listing")).expect("listing");
    assert!(
        !listing.contains("f1\n"),
        "a deleted file is gone: {listing}"
    );
    assert!(
        !listing.contains("sub"),
        "a deleted folder is gone: {listing}"
    );
    assert!(listing.contains("new"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" f2")),
        "the mode change is seen: {listing}"
    );
    assert!(listing.contains("f3 -> f4"), "{listing}");
    assert!(
        std::fs::read_to_string(out.join("src/a/f0"))
            .expect("f0")
            .ends_with("edited\n"),
        "the edited file has its new content"
    );
}

/// A context file that looks exactly like a file of the base (same size,
/// mtime, mode, owner) is still copied: only files of the previous result
/// may be kept, else the layer would miss it.
#[test]
fn a_file_that_looks_like_the_bases_is_still_copied() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(ctx.join("etc")).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:1.35\nCOPY etc/ /etc/\n",
    )
    .expect("write");
    std::fs::write(ctx.join("etc/other"), "other\n").expect("write");
    build(&k, &ctx);

    // The base's /etc/group, with its mode and mtime, added to the context.
    let layers = k.store().layers_dir();
    let base_group = std::fs::read_dir(&layers)
        .expect("layers")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("etc/group"))
        .find(|p| p.is_file())
        .expect("the busybox layer dir has etc/group");
    std::fs::copy(&base_group, ctx.join("etc/group")).expect("copy");
    let touched = std::process::Command::new("touch")
        .arg("-r")
        .arg(&base_group)
        .arg(ctx.join("etc/group"))
        .status()
        .expect("touch");
    assert!(touched.success());
    build(&k, &ctx);
    let ids = diff_ids(&k, "app");
    let hex = ids[ids.len() - 1].trim_start_matches("sha256:");
    assert!(
        layers.join(hex).join("etc/group").is_file(),
        "the COPY layer holds etc/group"
    );

    let fresh = Kiln::with_busybox(KILN);
    build(&fresh, &ctx);
    assert_eq!(diff_ids(&fresh, "app"), ids, "full and incremental agree");
}
