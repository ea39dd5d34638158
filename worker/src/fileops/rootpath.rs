//! Resolving a path inside a root directory as if that directory were `/`.
//!
//! The build context, an image's rootfs and a snapshot being written are all
//! untrusted trees: any of their symlinks may point at `/etc/shadow` or at
//! `../../..`. Every path a COPY or an ADD touches is therefore resolved here,
//! one component at a time, reading symlinks ourselves and interpreting them
//! relative to the root (absolute targets restart at the root, `..` stops at
//! it), the way securejoin or openat2's `RESOLVE_IN_ROOT` do. The result names
//! a host path whose existing components are real directories inside the
//! root, so plain path-based calls on it stay inside.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, FileOpsError, Result};

/// Linux's own limit on symlinks followed during one lookup.
const MAX_SYMLINKS: usize = 40;

/// A path resolved inside a root.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Host path, always below the root (or the root itself).
    pub host: PathBuf,
    /// Components below the root, symlinks resolved; what a user would see as
    /// the absolute path inside the root.
    pub inner: Vec<OsString>,
    /// A `..` (lexical or from a symlink target) tried to climb above the
    /// root and was stopped there. Archive extraction refuses such paths as
    /// docker does; copies tolerate them as BuildKit does.
    pub clamped: bool,
}

impl Resolved {
    /// The resolved path as seen inside the root, e.g. `/etc/passwd`.
    pub fn inner_path(&self) -> PathBuf {
        let mut p = PathBuf::from("/");
        for c in &self.inner {
            p.push(c);
        }
        p
    }
}

/// Resolve `path` (taken as absolute inside `root`, whatever it starts with)
/// to a host path inside `root`. Symlinks in intermediate components are
/// always followed within the root; the final component's symlink only when
/// `follow_final`. Components that do not exist are kept lexically, so the
/// result can name something about to be created.
pub fn resolve(root: &Path, path: &Path, follow_final: bool) -> Result<Resolved> {
    let mut pending: VecDeque<OsString> = components(path.as_os_str());
    let mut inner: Vec<OsString> = Vec::new();
    let mut clamped = false;
    let mut links = 0usize;

    while let Some(c) = pending.pop_front() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            if inner.pop().is_none() {
                clamped = true;
            }
            continue;
        }
        let is_final = pending.iter().all(|p| p == "." || p.is_empty());
        let mut candidate = root.to_path_buf();
        for part in &inner {
            candidate.push(part);
        }
        candidate.push(&c);
        if is_final && !follow_final {
            inner.push(c);
            continue;
        }
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(FileOpsError::SymlinkLoop {
                        path: path.display().to_string(),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(io_err("readlink", &candidate))?;
                let t = target.as_os_str().as_bytes();
                if t.first() == Some(&b'/') {
                    inner.clear();
                }
                let mut rest = components(target.as_os_str());
                rest.extend(pending.drain(..));
                pending = rest;
            }
            Ok(_) => inner.push(c),
            Err(e) if is_absent(&e) => inner.push(c),
            Err(e) => return Err(io_err("lstat", strip(root, &candidate))(e)),
        }
    }

    let mut host = root.to_path_buf();
    for c in &inner {
        host.push(c);
    }
    Ok(Resolved {
        host,
        inner,
        clamped,
    })
}

/// Shorthand: the host path of `path` inside `root`.
pub fn host_path(root: &Path, path: &Path, follow_final: bool) -> Result<PathBuf> {
    Ok(resolve(root, path, follow_final)?.host)
}

/// Missing paths and paths through a non-directory both mean "not there".
pub(crate) fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// A host path shown relative to its root, for error messages.
pub(crate) fn strip(root: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => p.to_path_buf(),
    }
}

fn components(p: &OsStr) -> VecDeque<OsString> {
    p.as_bytes()
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_os_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("rel")).unwrap();
        symlink("/etc/shadow", root.join("shadow")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        let r = resolve(root, Path::new("/abs/sub/x"), true).unwrap();
        assert_eq!(r.host, root.join("real/sub/x"));
        let r = resolve(root, Path::new("rel/sub"), true).unwrap();
        assert_eq!(r.host, root.join("real/sub"));
        assert!(r.clamped);
        let r = resolve(root, Path::new("/shadow"), true).unwrap();
        assert_eq!(r.host, root.join("etc/shadow"));
        let r = resolve(root, Path::new("/shadow"), false).unwrap();
        assert_eq!(r.host, root.join("shadow"));
        let r = resolve(root, Path::new("../../x/.."), true).unwrap();
        assert_eq!(r.host, root.to_path_buf());
        assert!(matches!(
            resolve(root, Path::new("/loop1"), true),
            Err(FileOpsError::SymlinkLoop { .. })
        ));
    }
}
