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
