//! Merging the layers: where a name resolves, what a directory lists, with
//! overlayfs's rules (a whiteout hides what is below it, an opaque
//! directory hides the directories below it, a non-directory hides
//! everything below it).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use super::inodes::Place;
use crate::snapshot::opaque_xattr;
use crate::sys;

/// The directories an overlay is made of.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The writable dir: every change lands here, overlay-native.
    pub upper: PathBuf,
    /// The read-only layer dirs, topmost first (as overlay's lowerdir).
    pub lowers: Vec<PathBuf>,
}

/// A char 0/0 device: overlay's whiteout.
pub fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the directory at `path` carries the opaque xattr (`user.` in a
/// user namespace, where `trusted.` cannot be written: as the unpacker
/// and the diff read it).
pub fn is_opaque(path: &Path) -> bool {
    matches!(sys::lgetxattr(path, opaque_xattr()), Ok(Some(v)) if v == b"y")
}

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(md) => Ok(Some(md)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Layers {
    /// The path of `rel` in the upper dir.
    pub fn upper_path(&self, rel: &Path) -> PathBuf {
        join(&self.upper, rel)
    }

    /// The path of `rel` in lower layer `i` (top-first index).
    pub fn lower_path(&self, i: usize, rel: &Path) -> PathBuf {
        join(&self.lowers[i], rel)
    }

    /// Where the content and metadata of `rel` are read from.
    pub fn backing(&self, rel: &Path, place: &Place) -> PathBuf {
        match (place.upper, place.lowers.first()) {
            (false, Some(&i)) => self.lower_path(i, rel),
            _ => self.upper_path(rel),
        }
    }

    /// The root's place: the upper root and every lower root down to the
    /// first opaque one.
    pub fn root_place(&self) -> Place {
        let mut lowers = Vec::new();
        if !is_opaque(&self.upper) {
            for (i, l) in self.lowers.iter().enumerate() {
                lowers.push(i);
                if is_opaque(l) {
                    break;
                }
            }
        }
        Place {
            upper: true,
            lowers,
            is_dir: true,
        }
    }

    /// Resolves `name` in the directory `parent_rel` (at `parent`);
    /// `None` when the merged view has no such name.
    pub fn resolve(
        &self,
        parent_rel: &Path,
        parent: &Place,
        name: &OsStr,
    ) -> io::Result<Option<(Place, Metadata)>> {
        let rel = parent_rel.join(name);
        let mut found: Option<(Place, Metadata)> = None;
        if parent.upper {
            let p = self.upper_path(&rel);
            if let Some(md) = lstat(&p)? {
                if is_whiteout(&md) {
                    return Ok(None);
                }
                let is_dir = md.is_dir();
                let place = Place {
                    upper: true,
                    lowers: Vec::new(),
                    is_dir,
                };
                if !is_dir || is_opaque(&p) {
                    return Ok(Some((place, md)));
                }
                found = Some((place, md));
            }
        }
        for &i in &parent.lowers {
            let p = self.lower_path(i, &rel);
            let Some(md) = lstat(&p)? else { continue };
            if is_whiteout(&md) {
                break;
            }
            match &mut found {
                None => {
                    let is_dir = md.is_dir();
                    let opaque = is_dir && is_opaque(&p);
                    found = Some((
                        Place {
                            upper: false,
                            lowers: vec![i],
                            is_dir,
                        },
                        md,
                    ));
                    if !is_dir || opaque {
                        break;
                    }
                }
                Some((place, _)) => {
                    if !md.is_dir() {
                        break; // a directory above hides a file below
                    }
                    place.lowers.push(i);
                    if is_opaque(&p) {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// The merged listing of the directory `rel` (at `place`): names with
    /// their types, upper first, without `.` and `..`.
    pub fn list(&self, rel: &Path, place: &Place) -> io::Result<Vec<(OsString, FileType)>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        let mut dirs = Vec::new();
        if place.upper {
            dirs.push(self.upper_path(rel));
        }
        for &i in &place.lowers {
            dirs.push(self.lower_path(i, rel));
        }
        for dir in dirs {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            for entry in rd {
                let entry = entry?;
                let name = entry.file_name();
                if seen.contains(&name) {
                    continue;
                }
                let ft = entry.file_type()?;
                seen.insert(name.clone());
                if ft.is_char_device() {
                    let md = entry.metadata()?;
                    if is_whiteout(&md) {
                        continue; // hides what is below; lists nothing
                    }
                }
                if let Some(kind) = FileType::from_std(ft) {
                    out.push((name, kind));
                }
            }
        }
        Ok(out)
    }
}

/// `base/rel`, with an empty `rel` meaning `base` itself.
fn join(base: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

/// The attributes FUSE reports for node `ino` backed by `md`.
pub fn attr(ino: u64, md: &Metadata) -> FileAttr {
    let kind = FileType::from_std(md.file_type()).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino: INodeNo(ino),
        size: md.size(),
        blocks: md.blocks(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: md.blksize() as u32,
        flags: 0,
    }
}
