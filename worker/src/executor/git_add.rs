//! `ADD <git URL> /dst` ([`BuildOp::Git`](kiln_solver::ops::BuildOp::Git)):
//! the key from the commit the ref resolves to, the checkout as a layer on
//! an empty filesystem.

use std::fs;
use std::sync::atomic::AtomicBool;

use kiln_solver::{Key, Progress};

use super::{commit_layer, io_err, ExecutorError, Snapshot, Worker};
use crate::git_source::{self, Access, Checkout, GitError, GitRef};

fn parse(url: &str) -> Result<GitRef, ExecutorError> {
    GitRef::parse_checked(url)?
        .ok_or_else(|| ExecutorError::Unsupported(format!("not a git repository URL: {url}")))
}

/// What the step's key depends on: the commit (the `--checksum` given, or
/// the ref resolved with `git ls-remote` now, as BuildKit resolves it on
/// every build), the subdirectory and whether `.git` is kept.
pub(super) fn content_key(
    w: &Worker,
    url: &str,
    keep_git_dir: bool,
    checksum: Option<&str>,
) -> Result<[u8; 32], ExecutorError> {
    let r = parse(url)?;
    // `?checksum=` as `--checksum`; `?keep-git-dir=` over `--keep-git-dir`.
    let checksum = checksum.or(r.checksum.as_deref());
    let keep_git_dir = r.keep_git_dir.unwrap_or(keep_git_dir);
    let commit = match checksum {
        Some(c) => c.to_ascii_lowercase(),
        None => {
            let access = Access::of(&r, &w.opts.secrets)?;
            git_source::resolve(&r, &access)?.ok_or_else(|| GitError::Command {
                what: "resolve",
                remote: r.remote.clone(),
                stderr: format!("ref {:?} not found", r.commit.as_deref().unwrap_or("HEAD")),
            })?
        }
    };
    let keep: &[u8] = if keep_git_dir { b"keep-git-dir" } else { b"" };
    Ok(Key::of_parts(
        "kiln.git.v1",
        [
            commit.as_bytes(),
            r.subdir.as_deref().unwrap_or("").as_bytes(),
            keep,
        ],
    )
    .0)
}

/// Checks the repository out and makes its tree (or subdirectory) a layer.
pub(super) fn run(
    w: &Worker,
    url: &str,
    keep_git_dir: bool,
    checksum: Option<&str>,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Snapshot, ExecutorError> {
    let _slot = w.slots.acquire(cancel).ok_or(ExecutorError::Interrupted)?;
    let r = parse(url)?;
    let access = Access::of(&r, &w.opts.secrets)?;
    let tmp = w.layers.scratch("git")?;
    let repo = tmp.join("repo");
    let result = (|| {
        let commit = git_source::checkout(
            &r,
            &repo,
            &Checkout {
                keep_git_dir,
                access,
                checksum: checksum.map(str::to_string),
            },
        )?;
        progress.log(
            kiln_solver::Stream::Stdout,
            format!("checked out {} at {commit}\n", r.remote).as_bytes(),
        );
        let src = git_source::subdir(&r, &repo)?;
        let dir = w.layers.scratch("git-layer")?;
        let active = w.prepare(&[], &dir, progress)?;
        let rootfs = active.rootfs();
        // A copy, not a rename: the snapshot may be an overlay, which
        // refuses to rename folders into it (EXDEV).
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(src.join("."))
            .arg(rootfs)
            .output()
            .map_err(io_err("run cp for", rootfs))?;
        if !out.status.success() {
            return Err(ExecutorError::Io {
                what: "copy the checkout to",
                path: rootfs.to_path_buf(),
                source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            });
        }
        commit_layer(w, active, &Snapshot::default(), &[])
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}
