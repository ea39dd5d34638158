//! Copy-on-write snapshots: layer directories and overlay mounts over them.
//!
//! Every image layer is kept unpacked as an *overlay-native* directory: an
//! OCI whiteout `.wh.NAME` becomes the char device 0/0 overlayfs uses, and an
//! opaque marker `.wh..wh..opq` becomes the `trusted.overlay.opaque=y`
//! xattr. Such directories stack directly as overlay lower dirs, and a RUN's
//! upper dir is in the very same format, so it can itself become a layer
//! directory without conversion. The mount options `index=off,metacopy=off,
//! redirect_dir=off` keep an upper dir self-contained (no references into the
//! lowers), which is what makes "upper dir == layer diff" true.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// The xattr overlayfs (mounted by root, without `userxattr`) reads to make
/// a directory hide what lies below it.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same xattr for an overlay mounted with `userxattr` in a user
/// namespace (rootless), where `trusted.*` cannot be written.
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The opaque xattr this process's overlay mounts read: `trusted.` as root,
/// `user.` rootless. A store is only ever used one way (root's and a user's
/// stores are different folders), so its layer dirs agree with its mounts.
pub fn opaque_xattr() -> &'static str {
    if crate::userns::in_user_namespace() {
        USER_OPAQUE_XATTR
    } else {
        OPAQUE_XATTR
    }
}
/// OCI's whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI's opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The most lower dirs one overlay mount takes (the kernel's OVL_MAX_STACK).
pub const MAX_LOWERS: usize = 500;

/// What can go wrong unpacking or mounting snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem call failed; the path says where.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The layer tar itself could not be read.
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    /// A tar entry would write or link outside the layer directory. Layers
    /// come from registries and archives, so this is an attack, not a bug.
    #[error("rejected layer entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    /// A tar entry type kiln does not know how to create.
    #[error("layer entry {entry:?} has unsupported type {kind:?}")]
    Unsupported { entry: String, kind: u8 },
    /// The overlay mount failed (the caller may fall back to a plain copy).
    #[error("mounting overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.into();
    move |source| SnapshotError::Io { op, path, source }
}

/// How whiteouts in a layer tar are realised on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Into a layer directory of its own, for stacking under overlayfs:
    /// whiteouts become char 0/0, opaque markers the opaque xattr.
    Overlay,
    /// Onto a merged root filesystem (the plain-copy fallback, flattening):
    /// whiteouts delete, opaque markers empty the directory of what earlier
    /// layers put there.
    Apply,
}

/// Unpacks a layer tar into `dir` as an overlay-native layer directory.
///
/// Safe against hostile archives: every path is resolved beneath `dir` by
/// the kernel (`openat2(RESOLVE_BENEATH)`), so neither `..` entries nor
/// symlinks planted by earlier entries can lead a write or a hard link out.
pub fn apply_layer<R: Read>(reader: R, dir: &Path) -> Result<ApplyStats, SnapshotError> {
    unpack(reader, dir, Whiteouts::Overlay)
}

/// Unpacks a layer tar onto a merged root filesystem, executing whiteouts.
pub fn apply_layer_merged<R: Read>(reader: R, dir: &Path) -> Result<ApplyStats, SnapshotError> {
    unpack(reader, dir, Whiteouts::Apply)
}

/// What an unpack wrote; the size feeds `kiln du` and progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries created (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Splits a tar entry name into clean components; rejects `..` outright
/// (docker and containerd clamp it, but a layer that contains one was made
/// to attack, and refusing is the clearer answer).
fn clean_components(entry: &str, raw: &[u8]) -> Result<Vec<OsString>, SnapshotError> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(SnapshotError::Unsafe {
                    entry: entry.to_string(),
                    reason: "path contains `..`".into(),
                })
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

fn map_resolve(entry: &str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let entry = entry.to_string();
    let path = path.to_path_buf();
    move |e| match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ELOOP) => SnapshotError::Unsafe {
            entry,
            reason: format!(
                "{} leads outside the layer through a symlink",
                path.display()
            ),
        },
        _ => SnapshotError::Io {
            op: "resolve",
            path,
            source: e,
        },
    }
}

/// Opens (creating missing directories when asked) the directory `rel`
/// beneath `root`, refusing any escape.
fn open_parent(
    root: RawFd,
    rel: &[OsString],
    create: bool,
    entry: &str,
) -> Result<OwnedFd, SnapshotError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let path = join(rel);
    match sys::open_beneath(root, &path, flags) {
        Ok(fd) => return Ok(fd),
        Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(map_resolve(entry, &path)(e)),
    }
    // Walk down, creating what is missing, each step re-verified.
    let mut cur = sys::open_beneath(root, Path::new("."), flags).map_err(io_err("open", "."))?;
    for i in 0..rel.len() {
        let prefix = join(&rel[..=i]);
        match sys::open_beneath(root, &prefix, flags) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match sys::mkdir_at(cur.as_raw_fd(), &rel[i], 0o755) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(io_err("mkdir", &prefix)(e)),
                }
                cur =
                    sys::open_beneath(root, &prefix, flags).map_err(map_resolve(entry, &prefix))?;
            }
            Err(e) => return Err(map_resolve(entry, &prefix)(e)),
        }
    }
    Ok(cur)
}

fn is_dir_mode(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

fn unpack<R: Read>(reader: R, dir: &Path, mode: Whiteouts) -> Result<ApplyStats, SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let rootfd = sys::open_dir(dir).map_err(io_err("open", dir))?;
    let root = rootfd.as_raw_fd();
    let mut archive = tar::Archive::new(reader);
    let mut stats = ApplyStats::default();
    // Paths this layer created, so an opaque marker in merged mode removes
    // only what earlier layers left.
    let mut unpacked: std::collections::HashSet<PathBuf> = Default::default();
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    // The folder the last entries went into, still open: a tar lists a
    // folder's files one after the other, and resolving the same parent
    // again for each costs a path walk (openat2) and a close per file.
    // Forgotten whenever an entry could replace that folder or one above
    // it (an entry at its path or an ancestor's, any whiteout), so every
    // write still lands where a fresh resolution would put it.
    let mut parent_cache: Option<(Vec<OsString>, OwnedFd)> = None;

    for entry in archive.entries().map_err(SnapshotError::Tar)? {
        let mut entry = entry.map_err(SnapshotError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let comps = clean_components(&name, &raw)?;
        let Some((base, parent)) = comps.split_last() else {
            continue; // the root itself: its metadata is the snapshot's, not the layer's
        };
        let base_b = base.as_bytes();

        if base_b.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            parent_cache = None;
            let pfd = match (
                open_parent(root, parent, mode == Whiteouts::Overlay, &name),
                mode,
            ) {
                (Ok(fd), _) => fd,
                (Err(SnapshotError::Io { source, .. }), Whiteouts::Apply)
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    continue; // deleting under a dir that is not there: nothing to do
                }
                (Err(e), _) => return Err(e),
            };
            if base_b == WHITEOUT_OPAQUE.as_bytes() {
                match mode {
                    Whiteouts::Overlay => {
                        sys::lsetxattr_at(pfd.as_raw_fd(), OsStr::new("."), opaque_xattr(), b"y")
                            .map_err(io_err("setxattr", join(parent)))?;
                    }
                    Whiteouts::Apply => {
                        for child in sys::read_dir_fd(pfd.as_raw_fd())
                            .map_err(io_err("readdir", join(parent)))?
                        {
                            let mut p = join(parent);
                            p.push(&child);
                            if !unpacked.contains(&p) {
                                sys::remove_all_at(pfd.as_raw_fd(), &child)
                                    .map_err(io_err("remove", &p))?;
                            }
                        }
                    }
                }
            } else if base_b.starts_with(b".wh..wh.") {
                // aufs bookkeeping (plink dirs and the like): not content.
            } else {
                let target = OsStr::from_bytes(&base_b[WHITEOUT_PREFIX.len()..]);
                if target.is_empty() || target == ".." || target == "." {
                    return Err(SnapshotError::Unsafe {
                        entry: name,
                        reason: "whiteout of no name".into(),
                    });
                }
                let mut p = join(parent);
                p.push(target);
                sys::remove_all_at(pfd.as_raw_fd(), target).map_err(io_err("remove", &p))?;
                if mode == Whiteouts::Overlay {
                    sys::mknod_at(pfd.as_raw_fd(), target, libc::S_IFCHR, 0)
                        .map_err(io_err("mknod", &p))?;
                    unpacked.insert(p);
                }
            }
            stats.entries += 1;
            continue;
        }

        let rel = join(&comps);
        if parent_cache
            .as_ref()
            .is_some_and(|(c, _)| c.starts_with(&comps))
        {
            parent_cache = None;
        }
        let p = match &parent_cache {
            Some((c, fd)) if c.as_slice() == parent => fd.as_raw_fd(),
            _ => {
                let fd = open_parent(root, parent, true, &name)?;
                let raw = fd.as_raw_fd();
                parent_cache = Some((parent.to_vec(), fd));
                raw
            }
        };
        let hdr = entry.header().clone();
        let kind = hdr.entry_type();
        let perm = hdr.mode().map_err(SnapshotError::Tar)? & 0o7777;
        let uid = hdr.uid().map_err(SnapshotError::Tar)? as u32;
        let gid = hdr.gid().map_err(SnapshotError::Tar)? as u32;
        let mtime = hdr.mtime().map_err(SnapshotError::Tar)? as i64;

        // A regular file is created straight away (O_EXCL): in a fresh
        // layer nothing is in its way, and the stat of the name is only
        // needed when something is.
        let is_file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        let mut created = None;
        let existing = if is_file {
            match sys::create_file_at(p, base, 0o600) {
                Ok(f) => {
                    created = Some(f);
                    None
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    sys::lstat_at(p, base).map_err(io_err("stat", &rel))?
                }
                Err(e) => return Err(io_err("create", &rel)(e)),
            }
        } else {
            sys::lstat_at(p, base).map_err(io_err("stat", &rel))?
        };
        if let Some(st) = existing {
            if !(kind.is_dir() && is_dir_mode(st.st_mode)) {
                sys::remove_all_at(p, base).map_err(io_err("remove", &rel))?;
            }
        }

        match kind {
            tar::EntryType::Directory => {
                if existing.is_none_or(|st| !is_dir_mode(st.st_mode)) {
                    sys::mkdir_at(p, base, 0o700).map_err(io_err("mkdir", &rel))?;
                    // A directory over a whiteout of this same layer replaces
                    // what lies below: in overlay terms, an opaque directory.
                    let was_whiteout = existing.is_some_and(|st| {
                        st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
                    });
                    if mode == Whiteouts::Overlay && was_whiteout {
                        sys::lsetxattr_at(p, base, opaque_xattr(), b"y")
                            .map_err(io_err("setxattr", &rel))?;
                    }
                }
                dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = match created.take() {
                    Some(f) => f,
                    None => sys::create_file_at(p, base, 0o600).map_err(io_err("create", &rel))?,
                };
                stats.bytes += crate::sparse::write_stream(&mut entry, &mut f)
                    .map_err(io_err("write", &rel))?;
                created = Some(f);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                sys::symlink_at(OsStr::from_bytes(&target), p, base)
                    .map_err(io_err("symlink", &rel))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let tcomps = clean_components(&name, &target)?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(SnapshotError::Unsafe {
                        entry: name,
                        reason: "hard link to the root".into(),
                    });
                };
                let tfd = open_parent(root, tparent, false, &name)?;
                sys::link_at(tfd.as_raw_fd(), tbase, p, base).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        SnapshotError::Unsafe {
                            entry: name.clone(),
                            reason: format!(
                                "hard link target {} is not in the layer",
                                String::from_utf8_lossy(&target)
                            ),
                        }
                    } else {
                        io_err("link", &rel)(e)
                    }
                })?;
                if mode == Whiteouts::Apply {
                    unpacked.insert(rel);
                }
                stats.entries += 1;
                continue; // a hard link shares the target's metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = hdr.device_major().ok().flatten().unwrap_or(0);
                let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                match sys::mknod_at(p, base, fmt | 0o600, libc::makedev(major, minor)) {
                    Ok(()) => {}
                    // In a user namespace no device node but the whiteout
                    // can be made: skipped, as containerd does rootless.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && kind != tar::EntryType::Fifo
                            && crate::userns::in_user_namespace() =>
                    {
                        eprintln!(
                            "warning: rootless: device node /{} ({major}:{minor}) in a layer cannot be created in a user namespace; skipped",
                            rel.display()
                        );
                        stats.entries += 1;
                        continue;
                    }
                    Err(e) => return Err(io_err("mknod", &rel)(e)),
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(SnapshotError::Unsupported {
                    entry: name,
                    kind: other.as_byte(),
                });
            }
        }

        // A file just written is changed through its descriptor: no path
        // lookup for each of chown, chmod and utimes.
        let owned = match &created {
            Some(f) => rustix::fs::fchown(
                f,
                Some(rustix::fs::Uid::from_raw_unchecked(uid)),
                Some(rustix::fs::Gid::from_raw_unchecked(gid)),
            )
            .map_err(io::Error::from),
            None => sys::chown_at(p, base, uid, gid),
        };
        crate::userns::tolerate_unmapped(owned).map_err(io_err("chown", &rel))?;
        if let Some(exts) = entry.pax_extensions().map_err(SnapshotError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(SnapshotError::Tar)?;
                let Ok(key) = ext.key() else { continue };
                let Some(xattr) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                // Overlay's own xattrs could redirect lookups elsewhere in
                // the host: never accept them from an archive.
                if xattr.starts_with("trusted.overlay.") || xattr.starts_with("user.overlay.") {
                    continue;
                }
                match sys::lsetxattr_at(p, base, xattr, ext.value_bytes()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                    Err(e) => return Err(io_err("setxattr", &rel)(e)),
                }
            }
        }
        if let Some(f) = &created {
            // After chown, which clears set-id bits.
            rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(perm))
                .map_err(|e| io_err("chmod", &rel)(e.into()))?;
            let t = rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            };
            rustix::fs::futimens(
                f,
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(|e| io_err("utimes", &rel)(e.into()))?;
        } else {
            if kind != tar::EntryType::Symlink {
                // After chown, which clears set-id bits.
                sys::chmod_at(p, base, perm).map_err(io_err("chmod", &rel))?;
            }
            if !kind.is_dir() {
                sys::set_times_at(p, base, (mtime, 0)).map_err(io_err("utimes", &rel))?;
            }
        }
        // Only merged mode's opaque markers ask what this layer made.
        if mode == Whiteouts::Apply {
            unpacked.insert(rel);
        }
        stats.entries += 1;
    }

    // Directory mtimes last: creating their children changed them.
    for (comps, mtime) in dir_times.iter().rev() {
        if let Some((base, parent)) = comps.split_last() {
            let pfd = open_parent(root, parent, false, "")?;
            sys::set_times_at(pfd.as_raw_fd(), base, (*mtime, 0))
                .map_err(io_err("utimes", join(comps)))?;
        }
    }
    Ok(stats)
}

/// A mounted snapshot; unmounted (lazily, if still busy) when dropped so an
/// error path never leaks mounts.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    active: bool,
}

impl Mounted {
    /// Where the merged view is.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now and reports failure, unlike drop.
    pub fn unmount(mut self) -> Result<(), SnapshotError> {
        self.active = false;
        sys::umount(&self.target, 0).map_err(io_err("umount", &self.target))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
        }
    }
}

/// The options that make an upper dir a self-contained layer diff.
const OVERLAY_OPTS: [(&str, &str); 3] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "off"),
];

/// Mounts a writable overlay at `target`: `lowers` ordered lowest first (as
/// image layers are), writes landing in `upper`. With no lowers the upper dir
/// is bind-mounted (overlay insists on a lower, and nothing needs hiding).
/// More than [`MAX_LOWERS`] layers must be flattened first ([`flatten`]).
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<Mounted, SnapshotError> {
    let merr = |source| SnapshotError::Mount {
        target: target.to_path_buf(),
        source,
    };
    let lowers = &unique_lowers(lowers)[..];
    if lowers.is_empty() {
        sys::mount(Some(upper.as_os_str()), target, None, libc::MS_BIND, None).map_err(merr)?;
        return Ok(Mounted {
            target: target.to_path_buf(),
            active: true,
        });
    }
    if lowers.len() > MAX_LOWERS {
        return Err(merr(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} lower dirs exceed overlay's {MAX_LOWERS}; flatten first",
                lowers.len()
            ),
        )));
    }
    let top_first: Vec<&Path> = lowers.iter().rev().map(|p| p.as_path()).collect();
    mount_any(&top_first, Some((upper, work)), target).map_err(merr)?;
    Ok(Mounted {
        target: target.to_path_buf(),
        active: true,
    })
}

/// Mounts a read-only merged view of `lowers` (lowest first) at `target`,
/// e.g. the source of `COPY --from`.
pub fn mount_readonly(lowers: &[PathBuf], target: &Path) -> Result<Mounted, SnapshotError> {
    let merr = |source| SnapshotError::Mount {
        target: target.to_path_buf(),
        source,
    };
    let lowers = &unique_lowers(lowers)[..];
    match lowers {
        [] => {
            return Err(merr(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no layers to mount",
            )))
        }
        [one] => {
            sys::mount(Some(one.as_os_str()), target, None, libc::MS_BIND, None).map_err(merr)?;
            let m = Mounted {
                target: target.to_path_buf(),
                active: true,
            };
            sys::mount(
                None,
                target,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                None,
            )
            .map_err(merr)?;
            return Ok(m);
        }
        _ => {}
    }
    let top_first: Vec<&Path> = lowers.iter().rev().map(|p| p.as_path()).collect();
    mount_any(&top_first, None, target).map_err(merr)?;
    Ok(Mounted {
        target: target.to_path_buf(),
        active: true,
    })
}

/// Puts this process (a build) in a mount namespace of its own, so the
/// overlays, throw-away views and secret tmpfs it mounts are never seen on
/// the host and vanish with it, even when it is killed (a kernel namespace
/// dies with its last process; a folder under the store would otherwise
/// stay mounted until the next kiln command cleaned it). Call it first
/// thing, before any thread starts. Where the kernel refuses (no
/// CAP_SYS_ADMIN), mounts stay in the caller's namespace and the next kiln
/// command detaches what a killed one left; the error says why.
pub fn enter_private_mount_namespace() -> io::Result<()> {
    sys::unshare_mount_namespace()
}

/// `lowers` (lowest first) with each folder once, at its topmost place.
/// Layers with the same content share a folder (two steps that changed
/// nothing both give the empty layer), and overlay refuses a lowerdir named
/// twice ("conflicting lowerdir path"); the lower copy is shadowed entirely
/// by the upper one (its files, whiteouts and opaque markers all), so
/// dropping it leaves the merged view as it was.
pub fn unique_lowers(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_first: Vec<PathBuf> = lowers
        .iter()
        .rev()
        .filter(|p| seen.insert(p.as_path()))
        .cloned()
        .collect();
    top_first.reverse();
    top_first
}

fn mount_any(top_first: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
    let mut opts = OVERLAY_OPTS.to_vec();
    if crate::userns::in_user_namespace() {
        // Overlay's own xattrs under `user.`, the only ones a user
        // namespace may write (kernel 5.11+); the kernel refuses
        // `redirect_dir=off` (which still follows) with it, and
        // `nofollow` keeps the upper dir just as self-contained.
        opts.retain(|(k, _)| *k != "redirect_dir");
        opts.push(("redirect_dir", "nofollow"));
        opts.push(("userxattr", ""));
    }
    match sys::mount_overlay_fsconfig(top_first, upper, &opts, target) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            // Older kernels: no fsopen or no `lowerdir+`; the option string
            // of mount(2) holds fewer absolute paths but works everywhere.
            let mut data = String::from("lowerdir=");
            for (i, l) in top_first.iter().enumerate() {
                let s = path_for_option(l)?;
                if i > 0 {
                    data.push(':');
                }
                data.push_str(&s);
            }
            if let Some((u, w)) = upper {
                data.push_str(&format!(
                    ",upperdir={},workdir={}",
                    path_for_option(u)?,
                    path_for_option(w)?
                ));
            }
            for (k, v) in &opts {
                if v.is_empty() {
                    data.push_str(&format!(",{k}"));
                } else {
                    data.push_str(&format!(",{k}={v}"));
                }
            }
            sys::mount(
                Some(OsStr::new("overlay")),
                target,
                Some("overlay"),
                0,
                Some(&data),
            )
        }
        Err(e) => Err(e),
    }
}

fn path_for_option(p: &Path) -> io::Result<String> {
    let s = p
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 layer path"))?;
    if s.contains([',', ':']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("layer path {s} contains ',' or ':'"),
        ));
    }
    Ok(s.to_string())
}

/// A writable view of a directory or file whose writes are thrown away: the
/// source of a `RUN --mount=type=bind,rw`. BuildKit gives such a mount a
/// fresh mutable snapshot over the source and discards it after the step,
/// so a step may write there freely but never into the build context, a
/// stage's result or an image. Here that is a kernel overlay with the
/// source as its only lower and an upper/work dir of its own (nothing can
/// reach the lower through it), or, where overlay cannot be mounted (or
/// for a single file), a plain copy. Dropping the value unmounts it and
/// removes the upper, work and copy.
#[derive(Debug)]
pub struct Throwaway {
    path: PathBuf,
    dir: PathBuf,
    mount: Option<Mounted>,
}

impl Throwaway {
    /// A writable view of `source` made in the empty scratch folder `dir`
    /// (on a filesystem overlay accepts as upper); a copy when `force_copy`
    /// or when overlay fails.
    pub fn over(source: &Path, dir: &Path, force_copy: bool) -> Result<Throwaway, SnapshotError> {
        let md = std::fs::symlink_metadata(source).map_err(io_err("stat", source))?;
        let mut view = Throwaway {
            path: PathBuf::new(),
            dir: dir.to_path_buf(),
            mount: None,
        };
        if !md.is_dir() {
            let copy = dir.join("file");
            copy_node(source, &copy, &md)?;
            view.path = copy;
            return Ok(view);
        }
        if !force_copy {
            let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
            for d in [&upper, &work, &merged] {
                std::fs::create_dir_all(d).map_err(io_err("create", d))?;
            }
            // The upper's root takes the source's owner, mode and times, as
            // a copy-up would, so the mount point looks like the source.
            copy_meta(source, &upper, &md)?;
            match mount_overlay(&[source.to_path_buf()], &upper, &work, &merged) {
                Ok(m) => {
                    view.path = merged;
                    view.mount = Some(m);
                    return Ok(view);
                }
                Err(SnapshotError::Mount { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let copy = dir.join("copy");
        copy_tree(source, &copy)?;
        view.path = copy;
        Ok(view)
    }

    /// What to bind at the mount's target.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the view is an overlay (false: a copy).
    pub fn is_overlay(&self) -> bool {
        self.mount.is_some()
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        drop(self.mount.take());
        // Never follows a mount that is somehow still there.
        crate::layers::remove_tree(&self.dir);
    }
}

/// Copies the folder `source` (a plain folder or a merged view, not a layer
/// dir: a whiteout device in it is not copied) to `dest`, which it creates,
/// with every owner, mode, time and xattr, the folder's own included.
pub fn copy_tree(source: &Path, dest: &Path) -> Result<(), SnapshotError> {
    let md = std::fs::symlink_metadata(source).map_err(io_err("stat", source))?;
    std::fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    merge_dir(source, dest, Nodes::Copy)?;
    copy_meta(source, dest, &md)
}

/// Merges overlay-native layer dirs (lowest first) into one plain directory,
/// executing their whiteouts and opaque markers: the plain-copy fallback
/// when overlay cannot be mounted, and the way to bring more than
/// [`MAX_LOWERS`] layers under the kernel's limit.
pub fn flatten(lowers: &[PathBuf], dest: &Path) -> Result<(), SnapshotError> {
    flatten_as(lowers, dest, Nodes::Copy)
}

/// [`flatten`] with the regular files hard-linked to the layer dirs
/// instead of copied: a tree as cheap as an overlay mount for a snapshot
/// only kiln's own file operations write (COPY, ADD, WORKDIR), which never
/// write a file in place (they replace it, and a heredoc written over an
/// existing file first gets a private copy: `fileops::mkfile`). Layer dirs
/// are never written in place, so sharing their inodes is safe, and the
/// comparing diff sees a linked file as unchanged (same metadata). A file
/// that cannot be linked (another filesystem, an owner outside a user
/// namespace's map) is copied.
pub fn flatten_linked(lowers: &[PathBuf], dest: &Path) -> Result<(), SnapshotError> {
    flatten_as(lowers, dest, Nodes::Link)
}

/// How [`merge_dir`] brings a regular file over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nodes {
    Copy,
    Link,
}

fn flatten_as(lowers: &[PathBuf], dest: &Path, nodes: Nodes) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    for layer in lowers {
        merge_dir(layer, dest, nodes)?;
    }
    Ok(())
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Copies one overlay-native layer dir onto `dest` with overlay's rules.
fn merge_dir(src: &Path, dest: &Path, nodes: Nodes) -> Result<(), SnapshotError> {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .map_err(io_err("readdir", src))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err("readdir", src))?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dest.join(&name);
        let md = std::fs::symlink_metadata(&s).map_err(io_err("stat", &s))?;
        let dmd = std::fs::symlink_metadata(&d).ok();
        if is_whiteout(&md) {
            remove_any(&d)?;
            continue;
        }
        if md.is_dir() {
            let opaque = sys::lgetxattr(&s, opaque_xattr())
                .map_err(io_err("getxattr", &s))?
                .is_some();
            match &dmd {
                Some(m) if m.is_dir() && !opaque => {}
                Some(_) => {
                    remove_any(&d)?;
                    std::fs::create_dir(&d).map_err(io_err("mkdir", &d))?;
                }
                None => std::fs::create_dir(&d).map_err(io_err("mkdir", &d))?,
            }
            merge_dir(&s, &d, nodes)?;
            copy_meta(&s, &d, &md)?;
            continue;
        }
        if dmd.is_some() {
            remove_any(&d)?;
        }
        if nodes == Nodes::Link && md.is_file() && std::fs::hard_link(&s, &d).is_ok() {
            continue;
        }
        copy_node(&s, &d, &md)?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<(), SnapshotError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => std::fs::remove_file(p).map_err(io_err("remove", p)),
        Err(_) => Ok(()),
    }
}

/// Copies a non-directory (file, symlink, device, fifo) with its metadata.
pub(crate) fn copy_node(s: &Path, d: &Path, md: &std::fs::Metadata) -> Result<(), SnapshotError> {
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(s).map_err(io_err("readlink", s))?;
        std::os::unix::fs::symlink(&t, d).map_err(io_err("symlink", d))?;
    } else if ft.is_file() {
        let mut from = std::fs::File::open(s).map_err(io_err("open", s))?;
        // As std::fs::copy: an existing file is replaced.
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(d)
            .map_err(io_err("create", d))?;
        crate::sparse::copy_file(&mut from, &mut to).map_err(io_err("copy", d))?;
    } else {
        sys::mknod(d, md.mode(), md.rdev()).map_err(io_err("mknod", d))?;
    }
    copy_meta(s, d, md)
}

pub(crate) fn copy_meta(s: &Path, d: &Path, md: &std::fs::Metadata) -> Result<(), SnapshotError> {
    crate::userns::tolerate_unmapped(std::os::unix::fs::lchown(d, Some(md.uid()), Some(md.gid())))
        .map_err(io_err("chown", d))?;
    for (k, v) in sys::llist_xattrs(s).map_err(io_err("listxattr", s))? {
        if k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.") {
            continue;
        }
        let parent = d.parent().unwrap_or(Path::new("/"));
        let pfd = sys::open_dir(parent).map_err(io_err("open", parent))?;
        let name = d.file_name().unwrap_or_default();
        let _ = sys::lsetxattr_at(pfd.as_raw_fd(), name, &k, &v);
    }
    if !md.file_type().is_symlink() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io_err("chmod", d))?;
    }
    let parent = d.parent().unwrap_or(Path::new("/"));
    let pfd = sys::open_dir(parent).map_err(io_err("open", parent))?;
    sys::set_times_at(
        pfd.as_raw_fd(),
        d.file_name().unwrap_or_default(),
        (md.mtime(), md.mtime_nsec()),
    )
    .map_err(io_err("utimes", d))
}

/// Normalises an absolute in-container path to components beneath a root,
/// refusing `..`; used by callers that create mount points and workdirs.
pub fn rel_components(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The merged, read-only view of a stack of overlay-native layer dirs, read
/// without mounting them: what a diff compares against, and what answers
/// "what did the lower layers have here".
#[derive(Debug, Clone)]
pub struct LowerView {
    /// Lowest first, as everywhere in kiln.
    layers: Vec<PathBuf>,
}

impl LowerView {
    /// A view of `layers` (lowest first).
    pub fn new(layers: &[PathBuf]) -> Self {
        LowerView {
            layers: layers.to_vec(),
        }
    }

    /// Where `rel` lives in the merged view (the topmost layer holding it),
    /// honouring whiteouts and opaque directories; `None` if it is absent.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        for layer in self.layers.iter().rev() {
            let mut stop_below = false;
            let mut prefix = layer.clone();
            let comps: Vec<_> = rel.iter().collect();
            for (i, c) in comps.iter().enumerate() {
                prefix.push(c);
                let Ok(md) = std::fs::symlink_metadata(&prefix) else {
                    break;
                };
                if is_whiteout(&md) {
                    return None;
                }
                if i + 1 == comps.len() {
                    return Some(prefix);
                }
                if !md.is_dir() {
                    return None; // a file above hides everything below it
                }
                if sys::lgetxattr(&prefix, opaque_xattr())
                    .ok()
                    .flatten()
                    .is_some()
                {
                    stop_below = true;
                }
            }
            if stop_below {
                return None;
            }
        }
        None
    }

    /// The names in directory `rel` of the merged view, sorted by bytes.
    pub fn children(&self, rel: &Path) -> Vec<OsString> {
        let mut seen: std::collections::BTreeMap<Vec<u8>, bool> = Default::default();
        for layer in self.layers.iter().rev() {
            // The directory must be visible through this layer's own ancestors.
            let mut hidden = false;
            let mut prefix = layer.clone();
            let mut opaque_here = false;
            let comps: Vec<_> = rel.iter().collect();
            for c in &comps {
                prefix.push(c);
                match std::fs::symlink_metadata(&prefix) {
                    Ok(md) if md.is_dir() => {
                        if sys::lgetxattr(&prefix, opaque_xattr())
                            .ok()
                            .flatten()
                            .is_some()
                        {
                            opaque_here = true;
                        }
                    }
                    Ok(_) => {
                        hidden = true;
                        break;
                    }
                    Err(_) => {
                        prefix = PathBuf::new();
                        break;
                    }
                }
            }
            if hidden {
                break;
            }
            if !prefix.as_os_str().is_empty() {
                if let Ok(rd) = std::fs::read_dir(&prefix) {
                    for e in rd.flatten() {
                        let name = e.file_name().as_bytes().to_vec();
                        let wh = e.metadata().map(|m| is_whiteout(&m)).unwrap_or(false);
                        seen.entry(name).or_insert(!wh);
                    }
                }
            }
            if opaque_here {
                break;
            }
        }
        seen.into_iter()
            .filter(|(_, live)| *live)
            .map(|(n, _)| OsString::from_vec(n))
            .collect()
    }
}

use std::os::unix::ffi::OsStringExt;

/// A snapshot being written: an overlay over the lowers where the kernel
/// allows it, a full copy of them otherwise.
#[derive(Debug)]
pub struct Active {
    lowers: Vec<PathBuf>,
    rootfs: PathBuf,
    kind: ActiveKind,
    /// Why this snapshot is a copy though overlay was wanted (the mount's
    /// error): copying is slower and larger, so the build says so.
    fallback: Option<String>,
}

#[derive(Debug)]
enum ActiveKind {
    Overlay {
        mounted: Mounted,
        upper: PathBuf,
        base: Vec<PathBuf>,
    },
    /// kiln's overlay over FUSE, served by threads of this process.
    Fuse {
        mounted: crate::fuse_overlay::InProcessMount,
        upper: PathBuf,
        base: Vec<PathBuf>,
    },
    Copy,
    /// A tree of hard links to the lowers ([`flatten_linked`]) for a
    /// snapshot only file operations write, where kernel overlay cannot be
    /// mounted: creating thousands of files through FUSE costs several
    /// round trips each, a linked tree one `link` per lower file. `fuse`:
    /// it stands in for the FUSE overlay (which RUN steps use).
    Linked {
        fuse: bool,
    },
}

/// How [`Active::prepare_with`] makes a snapshot: the snapshotter asked
/// for, and whether `auto` may pick FUSE.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMode {
    pub snapshotter: crate::snapshotter::Snapshotter,
    /// The kiln binary, when this is kiln (`auto` skips FUSE without it).
    /// The FUSE overlay of a build is served by threads of this process,
    /// so it is not executed; it marks a caller able to serve FUSE.
    pub helper_exe: Option<PathBuf>,
    /// Only kiln's file operations (never a RUN) write this snapshot, so
    /// where kernel overlay cannot be mounted it is a tree of hard links
    /// to the lowers rather than a FUSE mount or a full copy.
    pub files_only: bool,
}

/// A finished snapshot, ready to be diffed into a layer.
#[derive(Debug, Clone)]
pub enum Finished {
    /// The upper dir holds exactly the changes (overlay-native).
    Overlay {
        /// The upper dir, itself usable as a layer dir afterwards.
        upper: PathBuf,
        /// The lowers it stood on (flattened ones included), lowest first.
        lowers: Vec<PathBuf>,
    },
    /// A full root filesystem; the changes are found by comparing it with
    /// the lowers.
    Copy {
        rootfs: PathBuf,
        lowers: Vec<PathBuf>,
    },
}

impl Active {
    /// Prepares a writable snapshot over `lowers` (lowest first) inside the
    /// empty directory `dir` (which must be on a filesystem overlay accepts
    /// as upper, not overlay itself). With `force_copy`, or when overlay
    /// cannot be mounted, the lowers are copied into `dir/rootfs` instead.
    pub fn prepare(
        lowers: &[PathBuf],
        dir: &Path,
        force_copy: bool,
    ) -> Result<Active, SnapshotError> {
        let snapshotter = if force_copy {
            crate::snapshotter::Snapshotter::Copy
        } else {
            crate::snapshotter::Snapshotter::Auto
        };
        Active::prepare_with(
            lowers,
            dir,
            &SnapshotMode {
                snapshotter,
                helper_exe: None,
                files_only: false,
            },
        )
    }

    /// Prepares a writable snapshot over `lowers` (lowest first) in the
    /// empty directory `dir` with the snapshotter `mode` names: kernel
    /// overlay, FUSE, a copy, or (`auto`) the first of them that works.
    /// A snapshotter asked for by name fails rather than falling back.
    pub fn prepare_with(
        lowers: &[PathBuf],
        dir: &Path,
        mode: &SnapshotMode,
    ) -> Result<Active, SnapshotError> {
        use crate::snapshotter::Snapshotter;
        let lowers = lowers.to_vec();
        let mut fallback = None;
        if matches!(mode.snapshotter, Snapshotter::Auto | Snapshotter::Overlay) {
            let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
            for d in [&upper, &work, &merged] {
                std::fs::create_dir_all(d).map_err(io_err("create", d))?;
            }
            let mut base = unique_lowers(&lowers);
            if base.len() > MAX_LOWERS {
                // Squash the bottom of the stack into one dir so the rest fits.
                let cut = base.len() - MAX_LOWERS + 1;
                let flat = dir.join("flat");
                flatten(&base[..cut], &flat)?;
                base.splice(..cut, [flat]);
            }
            match mount_overlay(&base, &upper, &work, &merged) {
                Ok(mounted) => {
                    return Ok(Active {
                        lowers,
                        rootfs: merged,
                        kind: ActiveKind::Overlay {
                            mounted,
                            upper,
                            base,
                        },
                        fallback: None,
                    })
                }
                Err(e @ SnapshotError::Mount { .. }) if mode.snapshotter == Snapshotter::Auto => {
                    fallback = Some(e.to_string());
                    let _ = std::fs::remove_dir_all(&upper);
                    let _ = std::fs::remove_dir_all(&work);
                    let _ = std::fs::remove_dir(&merged);
                    let _ = std::fs::remove_dir_all(dir.join("flat"));
                }
                Err(e) => return Err(e),
            }
        }
        let fuse_wanted = match mode.snapshotter {
            Snapshotter::Fuse => true,
            Snapshotter::Auto => mode.helper_exe.is_some() && crate::fuse_overlay::usable().is_ok(),
            _ => false,
        };
        if mode.files_only {
            let rootfs = dir.join("rootfs");
            flatten_linked(&lowers, &rootfs)?;
            return Ok(Active {
                lowers,
                rootfs,
                kind: ActiveKind::Linked { fuse: fuse_wanted },
                fallback,
            });
        }
        if fuse_wanted {
            let (upper, merged) = (dir.join("upper"), dir.join("merged"));
            for d in [&upper, &merged] {
                std::fs::create_dir_all(d).map_err(io_err("create", d))?;
            }
            let base = unique_lowers(&lowers);
            let mounted = crate::fuse_overlay::usable()
                .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))
                .and_then(|()| crate::fuse_overlay::mount_in_process(&base, &upper, &merged));
            match mounted {
                Ok(mounted) => {
                    return Ok(Active {
                        lowers,
                        rootfs: merged,
                        kind: ActiveKind::Fuse {
                            mounted,
                            upper,
                            base,
                        },
                        fallback,
                    })
                }
                Err(source) if mode.snapshotter == Snapshotter::Fuse => {
                    return Err(SnapshotError::Mount {
                        target: merged,
                        source,
                    })
                }
                Err(e) => {
                    fallback = Some(format!("{}; FUSE: {e}", fallback.unwrap_or_default()));
                    let _ = std::fs::remove_dir_all(&upper);
                    let _ = std::fs::remove_dir(&merged);
                }
            }
        }
        let rootfs = dir.join("rootfs");
        flatten(&lowers, &rootfs)?;
        Ok(Active {
            lowers,
            rootfs,
            kind: ActiveKind::Copy,
            fallback,
        })
    }

    /// Why overlay could not be mounted, when this snapshot fell back to a
    /// copy (None when it is an overlay, or a copy was asked for).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The root filesystem to run in or copy into.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// Whether this snapshot is on kernel overlayfs (false: FUSE or a
    /// plain copy).
    pub fn is_overlay(&self) -> bool {
        matches!(self.kind, ActiveKind::Overlay { .. })
    }

    /// Whether the changes land in an upper dir over the lowers (kernel or
    /// FUSE overlay), which an incremental copy can pre-fill.
    pub fn has_upper(&self) -> bool {
        matches!(
            self.kind,
            ActiveKind::Overlay { .. } | ActiveKind::Fuse { .. }
        )
    }

    /// Whether this snapshot is kiln's FUSE overlay, or the linked tree a
    /// file operation uses in its place.
    pub fn is_fuse(&self) -> bool {
        matches!(
            self.kind,
            ActiveKind::Fuse { .. } | ActiveKind::Linked { fuse: true }
        )
    }

    /// Ends writing (unmounts) and says where the changes are.
    pub fn finish(self) -> Result<Finished, SnapshotError> {
        match self.kind {
            ActiveKind::Overlay {
                mounted,
                upper,
                base,
            } => {
                mounted.unmount()?;
                Ok(Finished::Overlay {
                    upper,
                    lowers: base,
                })
            }
            ActiveKind::Fuse {
                mounted,
                upper,
                base,
            } => {
                mounted.unmount().map_err(io_err("umount", &self.rootfs))?;
                Ok(Finished::Overlay {
                    upper,
                    lowers: base,
                })
            }
            ActiveKind::Copy | ActiveKind::Linked { .. } => Ok(Finished::Copy {
                rootfs: self.rootfs,
                lowers: self.lowers,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source folder: a file, a folder with a file, a symlink.
    fn source(t: &Path) -> PathBuf {
        let src = t.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("f"), "f").unwrap();
        std::fs::write(src.join("sub/g"), "g").unwrap();
        std::os::unix::fs::symlink("f", src.join("l")).unwrap();
        src
    }

    /// A linked tree shares the layers' files, and a heredoc written over
    /// one of them (the one file operation that writes in place) gets a
    /// copy of its own: the layer dir never changes, and the parent's
    /// times stay as they were.
    #[test]
    fn a_linked_tree_never_writes_into_a_layer() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let layer = source(t.path());
        let rootfs = t.path().join("rootfs");
        flatten_linked(std::slice::from_ref(&layer), &rootfs).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&layer.join("sub/g")), ino(&rootfs.join("sub/g")));
        assert_eq!(names(&rootfs), names(&layer));
        let before = std::fs::symlink_metadata(rootfs.join("sub")).unwrap();
        crate::fileops::mkfile(&rootfs, "/sub/g", b"new", 0o600, None, None).unwrap();
        assert_eq!(std::fs::read(layer.join("sub/g")).unwrap(), b"g");
        assert_eq!(std::fs::read(rootfs.join("sub/g")).unwrap(), b"new");
        assert_ne!(ino(&layer.join("sub/g")), ino(&rootfs.join("sub/g")));
        let after = std::fs::symlink_metadata(rootfs.join("sub")).unwrap();
        assert_eq!(
            (before.mtime(), before.mtime_nsec()),
            (after.mtime(), after.mtime_nsec())
        );
        assert_eq!(names(&rootfs.join("sub")), vec!["g".to_string()]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Writes, deletes and creates through the view; the source keeps
    /// everything, and the scratch folder goes with the view.
    fn writes_stay_in_the_view(force_copy: bool) -> bool {
        let t = tempfile::tempdir().unwrap();
        let src = source(t.path());
        let dir = t.path().join("scratch");
        std::fs::create_dir(&dir).unwrap();
        let view = Throwaway::over(&src, &dir, force_copy).unwrap();
        let p = view.path().to_path_buf();
        std::fs::write(p.join("f"), "changed").unwrap();
        std::fs::remove_dir_all(p.join("sub")).unwrap();
        std::fs::remove_file(p.join("l")).unwrap();
        std::os::unix::fs::symlink("/", p.join("root")).unwrap();
        std::fs::write(p.join("new"), "n").unwrap();
        assert_eq!(names(&p), ["f", "new", "root"]);
        assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "changed");
        let overlay = view.is_overlay();
        drop(view);
        assert_eq!(names(&src), ["f", "l", "sub"]);
        assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "f");
        assert_eq!(std::fs::read_to_string(src.join("sub/g")).unwrap(), "g");
        assert_eq!(std::fs::read_link(src.join("l")).unwrap(), Path::new("f"));
        assert!(!dir.exists(), "the scratch folder is removed");
        overlay
    }

    #[test]
    fn a_throwaway_copy_never_writes_through() {
        assert!(!writes_stay_in_the_view(true));
    }

    #[test]
    fn a_throwaway_overlay_never_writes_through() {
        // An overlay as root; a copy where overlay cannot be mounted.
        let overlay = writes_stay_in_the_view(false);
        eprintln!("throwaway over a folder: overlay {overlay}");
    }

    #[test]
    fn a_throwaway_file_is_a_copy() {
        let t = tempfile::tempdir().unwrap();
        let src = source(t.path());
        let dir = t.path().join("scratch");
        std::fs::create_dir(&dir).unwrap();
        let view = Throwaway::over(&src.join("f"), &dir, false).unwrap();
        std::fs::write(view.path(), "changed").unwrap();
        drop(view);
        assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "f");
        assert!(!dir.exists());
    }
}
