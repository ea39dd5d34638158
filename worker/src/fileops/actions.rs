//! The small file actions beside COPY, as BuildKit's file backend runs them:
//! mkdir (WORKDIR), mkfile (heredoc sources) and rm. Same root discipline as
//! the copy: every path is resolved inside the root first, so a symlink left
//! by an earlier RUN cannot send the action to the host.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::chown::Owner;
use super::copier::{base, mkdir_all};
use super::error::{io_err, FileOpsError, Result};
use super::meta::{self, Time};
use super::pattern::{clean, has_wildcards};
use super::rootpath::{host_path, is_absent, strip};

/// Create a directory (WORKDIR). With `parents`, missing parents are made
/// too, all with `mode` and `owner`; without, an existing directory is fine
/// and its parent must exist.
pub fn mkdir(
    root: &Path,
    path: &str,
    mode: u32,
    parents: bool,
    owner: Option<Owner>,
    utime: Option<Time>,
) -> Result<()> {
    let p = host_path(root, Path::new(&clean(&format!("/{path}"))), true)?;
    if parents {
        mkdir_all(root, &p, mode, owner, utime)?;
        return Ok(());
    }
    let shown = strip(root, &p);
    match fs::create_dir(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("mkdir", shown)(e)),
    }
    fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o777))
        .map_err(io_err("chmod", shown.clone()))?;
    if let Some(o) = owner {
        crate::userns::tolerate_unmapped(lchown(&p, Some(o.uid), Some(o.gid)))
            .map_err(io_err("chown", shown.clone()))?;
    }
    if let Some(t) = utime {
        meta::lutimes(&p, t, t).map_err(io_err("utimes", shown))?;
    }
    Ok(())
}

/// Write a file (a heredoc source). Like Go's `os.WriteFile`: an existing
/// file is truncated and keeps its mode; a new one gets `mode`.
pub fn mkfile(
    root: &Path,
    path: &str,
    data: &[u8],
    mode: u32,
    owner: Option<Owner>,
    utime: Option<Time>,
) -> Result<()> {
    let p = host_path(root, Path::new(&clean(&format!("/{path}"))), true)?;
    let shown = strip(root, &p);
    unshare_inode(&p).map_err(io_err("copy", shown.clone()))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(io_err("create", shown.clone()))?;
    f.write_all(data).map_err(io_err("write", shown.clone()))?;
    drop(f);
    if let Some(o) = owner {
        crate::userns::tolerate_unmapped(lchown(&p, Some(o.uid), Some(o.gid)))
            .map_err(io_err("chown", shown.clone()))?;
    }
    if let Some(t) = utime {
        meta::lutimes(&p, t, t).map_err(io_err("utimes", shown))?;
    }
    Ok(())
}

/// Gives an existing regular file with more than one link an inode of its
/// own before it is written in place. A snapshot may share inodes with the
/// layer dirs (an incremental copy's clone, a linked tree where overlay
/// cannot be mounted), which must never change; over overlayfs the write
/// would copy the file up, ending its other links, all the same. The
/// parent keeps its times, as it does when overlay copies a file up.
fn unshare_inode(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = match fs::symlink_metadata(p) {
        Ok(md) if md.is_file() && md.nlink() > 1 => md,
        _ => return Ok(()),
    };
    let Some(parent) = p.parent() else {
        return Ok(());
    };
    let pmd = fs::symlink_metadata(parent)?;
    let tmp = parent.join(format!(
        ".kiln-unshare-{}",
        p.file_name().unwrap_or_default().to_string_lossy()
    ));
    crate::snapshot::copy_node(p, &tmp, &md).map_err(std::io::Error::other)?;
    if let Err(e) = fs::rename(&tmp, p) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let at = |sec, nsec| Time { sec, nsec };
    meta::lutimes(
        parent,
        at(pmd.atime(), pmd.atime_nsec()),
        at(pmd.mtime(), pmd.mtime_nsec()),
    )
}

/// Remove a path and everything below it. Its parent is resolved inside the
/// root, the last component is not followed (a symlink is removed, not its
/// target). With `wildcard`, a `filepath.Match` pattern may name several.
pub fn rm(root: &Path, path: &str, allow_not_found: bool, wildcard: bool) -> Result<()> {
    let p = clean(&format!("/{path}"));
    if wildcard && has_wildcards(&p) {
        for m in super::resolve_wildcards(root, &p)? {
            rm(root, &m, allow_not_found, false)?;
        }
        return Ok(());
    }
    let name = base(&p);
    if p == "/" || name.is_empty() {
        return Err(FileOpsError::NotADirectory {
            path: "rm: invalid empty path".into(),
        });
    }
    let parent = Path::new(&p).parent().unwrap_or(Path::new("/"));
    let target = host_path(root, parent, true)?.join(name);
    let shown = strip(root, &target);
    match fs::symlink_metadata(&target) {
        Err(e) if is_absent(&e) => {
            if allow_not_found {
                Ok(())
            } else {
                Err(FileOpsError::NotFound { path: p })
            }
        }
        Err(e) => Err(io_err("lstat", shown)(e)),
        Ok(md) if md.is_dir() => fs::remove_dir_all(&target).map_err(io_err("remove", shown)),
        Ok(_) => fs::remove_file(&target).map_err(io_err("remove", shown)),
    }
}
