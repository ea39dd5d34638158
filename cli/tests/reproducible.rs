//! Reproducible builds (`SOURCE_DATE_EPOCH`), through the kiln binary, as
//! BuildKit does them: the epoch (environment or `--build-arg`) is the
//! config's `created`, the new history entries' times and the archives'
//! `org.opencontainers.image.created`; WORKDIR's new directories carry it;
//! `rewrite-timestamp=true` clamps every time in the layers the build made
//! (not the base's); and two builds of the same inputs in two fresh stores
//! give the same archive bytes, RUN steps included.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_testsupport::{stderr, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// 2023-11-14T22:13:20Z: after the busybox fixture's files, before now.
const EPOCH: i64 = 1_700_000_000;
const EPOCH_TEXT: &str = "2023-11-14T22:13:20Z";

const RUN_DOCKERFILE: &str = "FROM busybox:1.35
RUN echo hi > /f && mkdir /d && touch /d/x
";

/// No RUN: every file comes from the context or WORKDIR, so the layers
/// are reproducible without rewriting. (A WORKDIR of several new levels,
/// or a COPY into a folder made earlier, writes a parent folder at the
/// real time, in BuildKit as here: only rewrite-timestamp fixes those.)
const COPY_DOCKERFILE: &str = "FROM busybox:1.35
ENV A=b
COPY a.txt /a.txt
WORKDIR /app
";

/// Runs `kiln build` with `SOURCE_DATE_EPOCH` in the environment as `env`
/// says (`None`: removed).
fn build(k: &Kiln, ctx: &Path, env: Option<&str>, extra: &[&str]) -> Output {
    let ctx = ctx.display().to_string();
    let mut args = vec!["build", "-q"];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let mut c = k.cmd(&args);
    match env {
        Some(v) => c.env("SOURCE_DATE_EPOCH", v),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    let out = c.output().expect("running kiln");
    assert!(out.status.success(), "kiln {args:?}: {}", stderr(&out));
    out
}

/// The files of a tar archive by name.
fn archive_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("archive"));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read entry");
        out.insert(name, data);
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("json")
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} in the archive"))
}

/// An image read out of an OCI (or docker) archive.
struct Archived {
    index: Value,
    config: Value,
    /// (path, mtime) of every entry of every layer, lowest layer first.
    layers: Vec<Vec<(String, u64)>>,
    layer_digests: Vec<String>,
}

fn read_archive(path: &Path) -> Archived {
    let files = archive_files(path);
    let index = json(files.get("index.json").expect("index.json"));
    let mdigest = index["manifests"][0]["digest"].as_str().expect("manifest");
    let mut manifest = json(blob(&files, mdigest));
    // The fixture is an index: this machine's platform.
    if let Some(ms) = manifest["manifests"].as_array() {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let m = ms
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .expect("this platform's manifest");
        manifest = json(blob(&files, m["digest"].as_str().expect("digest")));
    }
    let config = json(blob(
        &files,
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for l in manifest["layers"].as_array().expect("layers") {
        let d = l["digest"].as_str().expect("layer digest");
        layer_digests.push(d.to_string());
        let gz = flate2::read::GzDecoder::new(blob(&files, d));
        let mut ar = tar::Archive::new(gz);
        let entries = ar
            .entries()
            .expect("layer entries")
            .map(|e| {
                let e = e.expect("layer entry");
                let p = e.path().expect("path").display().to_string();
                (p, e.header().mtime().expect("mtime"))
            })
            .collect();
        layers.push(entries);
    }
    Archived {
        index,
        config,
        layers,
        layer_digests,
    }
}

fn mtime_of(layer: &[(String, u64)], path: &str) -> u64 {
    layer
        .iter()
        .find(|(p, _)| p.trim_end_matches('/') == path)
        .unwrap_or_else(|| panic!("{path} in the layer: {layer:?}"))
        .1
}

/// Two fresh stores build `dockerfile` with `-o OUTPUT`; returns both
/// archives' paths.
fn build_twice(
    dockerfile: &str,
    ctx_files: &[(&str, &str)],
    output: &str,
    env: Option<&str>,
) -> (Kiln, Kiln, PathBuf, PathBuf) {
    let (a, b) = (Kiln::with_busybox(KILN), Kiln::with_busybox(KILN));
    let mut files = vec![("Dockerfile", dockerfile)];
    files.extend_from_slice(ctx_files);
    // One context for both builds: COPY keeps the source's times.
    let ctx = a.context("ctx", &files);
    let (pa, pb) = (a.path("out.tar"), b.path("out.tar"));
    for (k, p) in [(&a, &pa), (&b, &pb)] {
        let o = format!("{output},dest={}", p.display());
        build(k, &ctx, env, &["-o", &o]);
        // The second build starts in another second: RUN's files get
        // other real times.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    (a, b, pa, pb)
}

#[test]
fn run_steps_with_rewrite_timestamp_give_identical_oci_archives() {
    let epoch = EPOCH.to_string();
    let (_a, _b, pa, pb) = build_twice(
        RUN_DOCKERFILE,
        &[],
        "type=oci,rewrite-timestamp=true",
        Some(&epoch),
    );
    let (x, y) = (
        std::fs::read(&pa).expect("a"),
        std::fs::read(&pb).expect("b"),
    );
    assert!(
        x == y,
        "two fresh-store builds give the same OCI archive bytes"
    );

    let img = read_archive(&pa);
    let fixture = read_archive(&kiln_testsupport::busybox_fixture());
    assert_eq!(
        img.layer_digests[0], fixture.layer_digests[0],
        "the base image's layer is not rewritten"
    );
    let run = &img.layers[1];
    assert_eq!(mtime_of(run, "f"), EPOCH as u64, "/f clamped to the epoch");
    assert_eq!(mtime_of(run, "d/x"), EPOCH as u64);
    assert!(
        run.iter().all(|(_, t)| *t <= EPOCH as u64),
        "no time after the epoch in the rewritten layer: {run:?}"
    );
    assert_eq!(img.config["created"], EPOCH_TEXT);
    assert_eq!(
        img.index["manifests"][0]["annotations"]["org.opencontainers.image.created"],
        EPOCH_TEXT
    );
}

#[test]
fn run_steps_with_rewrite_timestamp_give_identical_docker_archives() {
    let epoch = EPOCH.to_string();
    let (_a, _b, pa, pb) = build_twice(
        RUN_DOCKERFILE,
        &[],
        "type=docker,rewrite-timestamp=true",
        Some(&epoch),
    );
    let (x, y) = (
        std::fs::read(&pa).expect("a"),
        std::fs::read(&pb).expect("b"),
    );
    assert!(
        x == y,
        "two fresh-store builds give the same docker archive bytes"
    );
    let files = archive_files(&pa);
    let manifest = json(files.get("manifest.json").expect("manifest.json"));
    let config_name = manifest[0]["Config"].as_str().expect("Config");
    let config = json(files.get(config_name).expect("config in the archive"));
    assert_eq!(config["created"], EPOCH_TEXT);
}

#[test]
fn without_rewrite_run_files_keep_their_times_but_copy_builds_are_identical() {
    let epoch = EPOCH.to_string();
    // RUN's files keep their real times without rewrite-timestamp, as in
    // BuildKit.
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", RUN_DOCKERFILE)]);
    let dest = k.path("run.tar");
    let o = format!("type=oci,dest={}", dest.display());
    build(&k, &ctx, Some(&epoch), &["-o", &o]);
    let img = read_archive(&dest);
    assert!(
        mtime_of(&img.layers[1], "f") > EPOCH as u64,
        "/f keeps its real time"
    );
    assert_eq!(
        img.config["created"], EPOCH_TEXT,
        "config time is the epoch"
    );

    // Without RUN, no rewrite is needed for identical archives (oci and
    // docker); WORKDIR's directories get the epoch.
    for kind in ["oci", "docker"] {
        let (_a, _b, pa, pb) = build_twice(
            COPY_DOCKERFILE,
            &[("a.txt", "from the context\n")],
            &format!("type={kind}"),
            Some(&epoch),
        );
        let (x, y) = (
            std::fs::read(&pa).expect("a"),
            std::fs::read(&pb).expect("b"),
        );
        assert!(x == y, "type={kind}: same archive bytes");
        let img = read_archive(&pa);
        let workdir = img.layers.last().expect("WORKDIR's layer");
        assert_eq!(mtime_of(workdir, "app"), EPOCH as u64);
    }
}

#[test]
fn created_and_history_are_the_epoch_and_the_base_history_is_kept() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", COPY_DOCKERFILE), ("a.txt", "a\n")]);
    let dest = k.path("img.tar");
    let o = format!("type=oci,dest={}", dest.display());
    build(&k, &ctx, Some(&EPOCH.to_string()), &["-o", &o]);
    let img = read_archive(&dest);
    let base = read_archive(&kiln_testsupport::busybox_fixture());
    assert_eq!(img.config["created"], EPOCH_TEXT);
    let history = img.config["history"].as_array().expect("history");
    let base_history = base.config["history"].as_array().expect("base history");
    assert_eq!(
        &history[..base_history.len()],
        base_history.as_slice(),
        "the base image's history keeps its times"
    );
    let new = &history[base_history.len()..];
    assert_eq!(new.len(), 3, "ENV, COPY, WORKDIR: {new:?}");
    assert!(new.iter().all(|h| h["created"] == EPOCH_TEXT), "{new:?}");
}

/// The image ID (`-q` prints it) of a build into the store, named `tag`.
fn image_id(k: &Kiln, ctx: &Path, env: Option<&str>, tag: &str, extra: &[&str]) -> String {
    let mut args = vec!["-t", tag];
    args.extend_from_slice(extra);
    let out = build(k, ctx, env, &args);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn created_in_store(k: &Kiln, tag: &str) -> Value {
    let (out, _) = k.ok(&["inspect", tag]);
    let v: Value = serde_json::from_str(&out).expect("inspect json");
    v[0]["Created"].clone()
}

#[test]
fn environment_and_build_arg_are_the_same_epoch_and_the_build_arg_wins() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", COPY_DOCKERFILE), ("a.txt", "a\n")]);
    let arg = format!("SOURCE_DATE_EPOCH={EPOCH}");
    let by_env = image_id(&k, &ctx, Some(&EPOCH.to_string()), "env", &["--no-cache"]);
    let by_arg = image_id(&k, &ctx, None, "arg", &["--no-cache", "--build-arg", &arg]);
    assert_eq!(by_env, by_arg, "the same epoch, the same image");
    assert_eq!(created_in_store(&k, "env"), EPOCH_TEXT);

    // The build arg overrides the environment, as buildx passes the
    // environment only when no build arg is given.
    let other = image_id(&k, &ctx, Some("1000"), "both", &["--build-arg", &arg]);
    assert_eq!(other, by_arg);

    // Another epoch is another image; none is now.
    let later = image_id(&k, &ctx, Some("1700000001"), "later", &[]);
    assert_ne!(later, by_env);
    let now = image_id(&k, &ctx, None, "now", &[]);
    assert_ne!(now, by_env);
    assert_ne!(created_in_store(&k, "now"), EPOCH_TEXT);

    // Never reported as an unused build arg.
    let out = build(&k, &ctx, None, &["--build-arg", &arg]);
    assert!(!stderr(&out).contains("not consumed"), "{}", stderr(&out));
}

#[test]
fn a_global_arg_default_is_the_epoch_unless_a_build_arg_is_given() {
    let k = Kiln::with_busybox(KILN);
    let df = format!("ARG SOURCE_DATE_EPOCH={EPOCH}\n{COPY_DOCKERFILE}");
    let ctx = k.context("ctx", &[("Dockerfile", &df), ("a.txt", "a\n")]);
    image_id(&k, &ctx, None, "dflt", &[]);
    assert_eq!(created_in_store(&k, "dflt"), EPOCH_TEXT);
    image_id(&k, &ctx, Some("951782400"), "env", &[]);
    assert_eq!(created_in_store(&k, "env"), "2000-02-29T00:00:00Z");
}

#[test]
fn an_invalid_epoch_fails_the_build() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", COPY_DOCKERFILE), ("a.txt", "a\n")]);
    let ctx = ctx.display().to_string();
    let out = k
        .cmd(&[
            "build",
            "-q",
            "--build-arg",
            "SOURCE_DATE_EPOCH=yesterday",
            &ctx,
        ])
        .output()
        .expect("kiln");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid SOURCE_DATE_EPOCH: yesterday"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn local_and_tar_exports_carry_the_epoch() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", RUN_DOCKERFILE)]);
    let dir = k.path("local");
    std::fs::create_dir_all(&dir).expect("dir");
    let before = dir.join("mine.txt");
    std::fs::write(&before, "not the build's").expect("write");
    let o = format!("type=local,dest={}", dir.display());
    build(&k, &ctx, Some(&EPOCH.to_string()), &["-o", &o]);
    let mtime = |p: &Path| {
        std::fs::symlink_metadata(p)
            .expect("exported file")
            .modified()
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64
    };
    for p in ["f", "d", "d/x", "bin/busybox", "etc"] {
        assert_eq!(mtime(&dir.join(p)), EPOCH, "{p}");
    }
    assert!(
        mtime(&before) > EPOCH,
        "files that were there keep their times"
    );

    let t = k.path("fs.tar");
    let o = format!("type=tar,dest={}", t.display());
    build(&k, &ctx, Some(&EPOCH.to_string()), &["-o", &o]);
    let mut ar = tar::Archive::new(std::fs::File::open(&t).expect("tar"));
    let mut n = 0;
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        assert_eq!(e.header().mtime().expect("mtime"), EPOCH as u64);
        n += 1;
    }
    assert!(n > 10, "the tar holds the root filesystem");
}

#[test]
fn tar_exports_are_byte_identical_across_fresh_stores() {
    let epoch = EPOCH.to_string();
    let (_a, _b, pa, pb) = build_twice(
        RUN_DOCKERFILE,
        &[],
        "type=tar,rewrite-timestamp=true",
        Some(&epoch),
    );
    let st = std::process::Command::new("cmp")
        .arg(&pa)
        .arg(&pb)
        .status()
        .expect("running cmp");
    assert!(st.success(), "cmp: the two tar exports differ");

    // Entries in lexical walk order (a folder, then what is in it), names
    // relative, folders ending in '/', hard links to the first path, and
    // every time the epoch.
    let mut ar = tar::Archive::new(std::fs::File::open(&pa).expect("tar"));
    let mut names = Vec::new();
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        let h = e.header();
        assert_eq!(h.mtime().expect("mtime"), EPOCH as u64);
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        assert!(!name.starts_with("./") && !name.starts_with('/'), "{name}");
        if h.entry_type() == tar::EntryType::Directory {
            assert!(name.ends_with('/'), "{name}");
        }
        if h.entry_type() == tar::EntryType::Link {
            let target = e.link_name().expect("link").expect("target");
            let target = target.display().to_string();
            assert!(
                names.contains(&target),
                "{name} links to {target}, written before"
            );
        }
        names.push(name);
    }
    // busybox's applets are symlinks; hard links are checked by the
    // exporter's unit test.
    assert!(names.iter().any(|n| n == "bin/sh"), "symlinks are entries");
    for want in ["bin/", "bin/busybox", "d/", "d/x", "f"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    // Each folder's entries sorted by name: the components of consecutive
    // paths compare as the walk visits them.
    let key = |n: &str| -> Vec<Vec<u8>> {
        n.trim_end_matches('/')
            .split('/')
            .map(|c| c.as_bytes().to_vec())
            .collect()
    };
    for w in names.windows(2) {
        assert!(key(&w[0]) < key(&w[1]), "{} before {}", w[0], w[1]);
    }
}
