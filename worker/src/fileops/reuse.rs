//! Incremental COPY: a COPY whose sources changed in a few files is built
//! from the previous result of the same step instead of from nothing.
//!
//! Why: a rebuild after a one-file edit of a large context used to re-create
//! every file of the COPY (an inode, a data block and a dozen syscalls each)
//! although all but one were unchanged.
//!
//! How, in three parts that together give exactly the upper dir a full copy
//! gives (so the same layer tar and digest):
//! 1. [`clone_tree`]: the previous upper dir is cloned into the new upper
//!    before overlay is mounted: directories made afresh with the same
//!    mode, owner and times, every other entry hard-linked (no data is
//!    copied; layer dirs are never written in place, so sharing inodes is
//!    safe). A previous dir holding whiteouts, opaque dirs or device nodes
//!    is not cloned (a copy never makes them; something else did).
//! 2. The copy then runs as always over the merged view, but a regular file
//!    whose target is already what the copy would write (regular file, same
//!    size, same mtime to the nanosecond, same mode, same owner, no xattrs on
//!    either side: containerd's walking differ's notion of unchanged) is left
//!    as it is ([`Reuse::reusable`] via the copier). Every destination path the copy
//!    writes or keeps is recorded.
//! 3. [`Reuse::prune_untouched`]: after unmounting, whatever the clone
//!    brought that the copy did not touch (files deleted from the context)
//!    is removed from the upper, and the parent directories get back the
//!    times the copy gave them.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::meta::{self, Time};

/// What one incremental copy kept and touched. Shared by the copier (which
/// records) and the executor (which prunes afterwards).
#[derive(Debug, Default)]
pub struct Reuse {
    /// The upper dir the clone went into: only a file found there may be
    /// kept (one of a lower layer that looks the same must still be
    /// copied, or the layer would miss it).
    upper: PathBuf,
    /// Destination paths, relative to the rootfs, the copy wrote or kept.
    touched: Mutex<HashSet<PathBuf>>,
    reused: AtomicU64,
}

impl Reuse {
    /// An empty record for a copy whose clone is in `upper`.
    pub fn new(upper: &Path) -> Self {
        Reuse {
            upper: upper.to_path_buf(),
            ..Self::default()
        }
    }

    /// Whether the clone (not a lower layer) holds `rel` as the regular
    /// file `seen` through the merged view.
    pub(crate) fn in_upper(&self, rel: &Path, seen: &fs::Metadata) -> bool {
        fs::symlink_metadata(self.upper.join(rel)).is_ok_and(|u| {
            u.file_type().is_file()
                && u.len() == seen.len()
                && u.mtime() == seen.mtime()
                && u.mtime_nsec() == seen.mtime_nsec()
        })
    }

    /// The clone's own entry for `rel` (relative to the rootfs): its path
    /// in the upper dir and metadata, when the clone holds a regular file
    /// there.
    pub(crate) fn upper_entry(&self, rel: &Path) -> Option<(PathBuf, fs::Metadata)> {
        let p = self.upper.join(rel);
        let md = fs::symlink_metadata(&p).ok()?;
        md.file_type().is_file().then_some((p, md))
    }

    /// Records that the copy wrote or kept `rel` (relative to the rootfs).
    pub(crate) fn touch(&self, rel: &Path) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        t.insert(rel.to_path_buf());
    }

    /// Counts one file left as the clone had it.
    pub(crate) fn count_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    /// How many files were left as the clone had them.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Removes from `upper` (unmounted) every entry the copy did not touch
    /// and that is no ancestor of one it touched; restores the times of the
    /// directories it removed from. Returns how many entries went.
    pub fn prune_untouched(&self, upper: &Path) -> io::Result<u64> {
        let touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep: HashSet<&Path> = HashSet::new();
        for t in touched.iter() {
            for a in t.ancestors() {
                if !keep.insert(a) {
                    break;
                }
            }
        }
        let mut removed = 0;
        prune_dir(upper, Path::new(""), &keep, &mut removed)?;
        Ok(removed)
    }
}

fn prune_dir(dir: &Path, rel: &Path, keep: &HashSet<&Path>, removed: &mut u64) -> io::Result<()> {
    let mut saved: Option<fs::Metadata> = None;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let r = rel.join(e.file_name());
        let ft = e.file_type()?;
        if keep.contains(r.as_path()) {
            if ft.is_dir() {
                prune_dir(&e.path(), &r, keep, removed)?;
            }
            continue;
        }
        if saved.is_none() {
            saved = Some(fs::symlink_metadata(dir)?);
        }
        if ft.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
        *removed += 1;
    }
    if let Some(md) = saved {
        restore_times(dir, &md)?;
    }
    Ok(())
}

fn restore_times(p: &Path, md: &fs::Metadata) -> io::Result<()> {
    meta::lutimes(
        p,
        Time {
            sec: md.atime(),
            nsec: md.atime_nsec(),
        },
        Time {
            sec: md.mtime(),
            nsec: md.mtime_nsec(),
        },
    )
}

/// Clones the layer dir `from` into the empty directory `to` (see the
/// module docs). Returns `Ok(false)`, leaving `to` for the caller to empty,
/// when `from` holds something a copy never makes (whiteouts, opaque dirs,
/// device nodes, fifos, sockets).
pub fn clone_tree(from: &Path, to: &Path, opaque_xattr: &str) -> io::Result<bool> {
    let md = fs::symlink_metadata(from)?;
    if !md.is_dir() {
        return Ok(false);
    }
    clone_dir(from, to, opaque_xattr.as_bytes())
}

fn clone_dir(from: &Path, to: &Path, opaque: &[u8]) -> io::Result<bool> {
    for e in fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            let md = fs::symlink_metadata(&src)?;
            if meta::get_xattr(&src, opaque).is_ok() {
                return Ok(false);
            }
            fs::create_dir(&dst)?;
            if !clone_dir(&src, &dst, opaque)? {
                return Ok(false);
            }
            lchown(&dst, Some(md.uid()), Some(md.gid()))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            restore_times(&dst, &md)?;
        } else if ft.is_file() || ft.is_symlink() {
            fs::hard_link(&src, &dst)?;
        } else {
            // Whiteouts (char 0/0), devices, fifos, sockets.
            return Ok(false);
        }
    }
    Ok(true)
}
