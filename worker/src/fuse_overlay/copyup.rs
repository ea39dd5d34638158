//! Copy-up: bringing a lower entry into the upper dir before it changes,
//! with its data, owner, mode, xattrs and times, as overlayfs does (and,
//! as overlayfs does, putting the parent directory's times back after,
//! so a directory whose children were only modified stays "unchanged" for
//! the differ).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::OverlayFs;
use crate::sys;

/// atime and mtime of `md`, as (seconds, nanoseconds) pairs.
pub(super) fn times(md: &std::fs::Metadata) -> ((i64, i64), (i64, i64)) {
    ((md.atime(), md.atime_nsec()), (md.mtime(), md.mtime_nsec()))
}

/// Copies owner, xattrs (never overlay's own), mode and times of `src`
/// (described by `md`) onto `dst`.
pub(super) fn copy_meta(src: &Path, dst: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))?;
    for (k, v) in sys::llist_xattrs(src)? {
        if k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.") {
            continue;
        }
        match sys::lsetxattr(dst, k.as_bytes(), &v) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    if !md.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let (a, m) = times(md);
    sys::lutimens(dst, a, m)
}

/// Makes a copy of the node `src` at `dst` (which must not exist).
fn copy_node(src: &Path, dst: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    let ft = md.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        let mut from = std::fs::File::open(src)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)?;
        crate::sparse::copy_file(&mut from, &mut to)?;
    } else {
        sys::mknod(dst, md.mode(), md.rdev())?;
    }
    copy_meta(src, dst, md)
}

impl OverlayFs {
    /// Copies node `ino` (and its ancestors) up into the upper dir, if it
    /// is not there yet. Callers hold the mutation lock.
    pub(super) fn copy_up(&self, ino: u64) -> io::Result<()> {
        let (rel, node) = {
            let t = self.table();
            let node = t.get(ino).cloned().ok_or_else(stale)?;
            (t.rel_path(ino).ok_or_else(stale)?, node)
        };
        if node.place.upper {
            return Ok(());
        }
        self.copy_up(node.parent)?;
        let src = self.layers.backing(&rel, &node.place);
        let dst = self.layers.upper_path(&rel);
        let md = std::fs::symlink_metadata(&src)?;
        let parent = dst.parent().map(Path::to_path_buf).unwrap_or_default();
        let pmd = std::fs::symlink_metadata(&parent)?;
        copy_node(&src, &dst, &md)?;
        let (a, m) = times(&pmd);
        sys::lutimens(&parent, a, m)?;
        let mut t = self.table_mut();
        if let Some(n) = t.get_mut(ino) {
            n.place.upper = true;
            if !n.place.is_dir {
                n.place.lowers.clear();
            }
        }
        Ok(())
    }
}

fn stale() -> io::Error {
    io::Error::from_raw_os_error(libc::ESTALE)
}
