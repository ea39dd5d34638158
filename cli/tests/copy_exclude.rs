//! COPY `--exclude` through the binary, on what BuildKit v0.25 does: fsutil
//! tests exclude patterns only *below* each source a COPY names (or a
//! wildcard matched), never against the source itself
//! (moby/buildkit#5489), so `COPY --exclude=*.log top.* /d/` still copies
//! `top.log`; below a directory source the patterns are relative to it.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds the context `files` (a `Dockerfile` among them) and exports the
/// result to a folder, which it returns.
fn build_local(k: &Kiln, files: &[(&str, &str)]) -> PathBuf {
    let ctx = k.path("ctx");
    for (name, text) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    let out = k.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let ctx_s = ctx.display().to_string();
    let o = k.run(&["build", "--progress", "plain", "--output", &dest, &ctx_s]);
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    out
}

fn exists(root: &Path, p: &str) -> bool {
    fs::symlink_metadata(root.join(p)).is_ok()
}

#[test]
fn exclude_is_not_applied_to_the_matched_source_itself() {
    let k = Kiln::empty(KILN);
    let out = build_local(
        &k,
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY --exclude=*.log top.* /d/\n",
            ),
            ("top.log", "log"),
            ("top.txt", "txt"),
        ],
    );
    assert_eq!(fs::read_to_string(out.join("d/top.log")).unwrap(), "log");
    assert_eq!(fs::read_to_string(out.join("d/top.txt")).unwrap(), "txt");
}

#[test]
fn exclude_below_a_directory_is_relative_to_it() {
    let k = Kiln::empty(KILN);
    let out = build_local(
        &k,
        &[
            (
                "Dockerfile",
                "FROM scratch\n\
                 COPY --exclude=*.log --exclude=!keep.log dir /a/\n\
                 COPY --exclude=dir/*.log . /b/\n",
            ),
            ("dir/x.log", "x"),
            ("dir/keep.log", "k"),
            ("dir/sub/y.log", "y"),
            ("dir/z.txt", "z"),
        ],
    );
    assert!(!exists(&out, "a/x.log"));
    assert!(exists(&out, "a/keep.log"));
    // `*.log` does not cross a `/`.
    assert!(exists(&out, "a/sub/y.log"));
    assert!(exists(&out, "a/z.txt"));
    assert!(!exists(&out, "b/dir/x.log"));
    assert!(!exists(&out, "b/dir/keep.log"));
    assert!(exists(&out, "b/dir/sub/y.log"));
    assert!(exists(&out, "b/Dockerfile"));
}

/// Builds and returns (success, stderr, output folder).
fn try_build(k: &Kiln, files: &[(&str, &str)]) -> (bool, String, PathBuf) {
    let ctx = k.path("ctx");
    for (name, text) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    let out = k.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let ctx_s = ctx.display().to_string();
    let o = k.run(&["build", "--progress", "plain", "--output", &dest, &ctx_s]);
    (o.status.success(), stderr(&o), out)
}

#[test]
fn dockerignore_is_anchored_at_the_context_root_not_the_source() {
    // `sub/secret` names the file below the source `sub`.
    let k = Kiln::empty(KILN);
    let out = build_local(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY sub /s/\n"),
            (".dockerignore", "sub/secret\n"),
            ("sub/secret", "s"),
            ("sub/public", "p"),
        ],
    );
    assert!(!exists(&out, "s/secret"), "sub/secret is ignored");
    assert!(exists(&out, "s/public"));

    // `secret` names only the top-level file, not sub/secret.
    let k = Kiln::empty(KILN);
    let out = build_local(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY sub /s/\nCOPY . /all/\n"),
            (".dockerignore", "secret\n"),
            ("secret", "top"),
            ("sub/secret", "s"),
        ],
    );
    assert_eq!(fs::read_to_string(out.join("s/secret")).unwrap(), "s");
    assert!(exists(&out, "all/sub/secret"));
    assert!(!exists(&out, "all/secret"));
}

#[test]
fn an_ignored_source_is_not_found() {
    let k = Kiln::empty(KILN);
    let (ok, err, _) = try_build(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY top.log /\n"),
            (".dockerignore", "*.log\n"),
            ("top.log", "l"),
        ],
    );
    assert!(!ok, "an ignored file cannot be copied");
    assert!(err.contains("\"/top.log\": not found"), "{err}");

    // A wildcard does not see ignored files either.
    let k = Kiln::empty(KILN);
    let out = build_local(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY *.txt /w/\n"),
            (".dockerignore", "b.txt\n"),
            ("a.txt", "a"),
            ("b.txt", "b"),
        ],
    );
    assert!(exists(&out, "w/a.txt"));
    assert!(!exists(&out, "w/b.txt"));
}

#[test]
fn dockerignore_changes_to_an_ignored_file_keep_the_cache() {
    let k = Kiln::empty(KILN);
    let files = [
        ("Dockerfile", "FROM scratch\nCOPY sub /s/\n"),
        (".dockerignore", "sub/secret\n"),
        ("sub/secret", "s"),
        ("sub/public", "p"),
    ];
    let (ok, err, _) = try_build(&k, &files);
    assert!(ok, "{err}");
    fs::write(k.path("ctx/sub/secret"), "changed").expect("edit");
    let ctx = k.path("ctx");
    let (events, o) = k.build_json(&ctx, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        events.iter().all(|e| e["event"] != "started"),
        "an ignored file does not bust the COPY's cache: {events:?}"
    );
}
