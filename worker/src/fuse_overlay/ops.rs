//! The FUSE operations over the merged view.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};

use super::inodes::{Place, ROOT};
use super::lookup::{attr, is_opaque, is_whiteout};
use super::{Handle, OverlayFs};
use crate::snapshot::opaque_xattr;
use crate::sys;

/// How long the kernel may trust names, misses and attributes. The mount
/// is private to one sandbox, the lower dirs are read-only and the upper
/// dir changes only through this filesystem while it is mounted, so the
/// kernel sees every change and invalidates what it cached itself (the
/// parent's attributes on create/remove, a file's on write, a name's on
/// rename). Names of an upper hard link share one node (`remember` keys
/// them by the upper inode), so no other name goes stale. A short TTL
/// made every created file cost extra round trips for nothing.
const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A cacheable miss: an entry with node id 0 tells the kernel that the
/// name does not exist for `TTL` (a plain ENOENT is not cached), so PATH
/// searches and repeated probes of missing names stop reaching us.
fn negative_entry() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// What to create in a directory.
enum NewEntry<'a> {
    File { mode: u32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u32 },
    Symlink { target: &'a Path },
    Link { ino: u64 },
}

/// A node's path and place, read in one go.
struct At {
    rel: PathBuf,
    place: Place,
    unlinked: bool,
}

fn to_pair(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
        Err(e) => {
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut n = d.subsec_nanos() as i64;
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s, n)
        }
    }
}

fn time_pair(t: TimeOrNow) -> (i64, i64) {
    match t {
        TimeOrNow::SpecificTime(t) => to_pair(t),
        TimeOrNow::Now => to_pair(SystemTime::now()),
    }
}

impl OverlayFs {
    fn at(&self, ino: u64) -> io::Result<At> {
        let t = self.table();
        let n = t.get(ino).ok_or_else(|| err(libc::ESTALE))?;
        let rel = t.rel_path(ino).ok_or_else(|| err(libc::ESTALE))?;
        Ok(At {
            rel,
            place: n.place.clone(),
            unlinked: n.unlinked,
        })
    }

    /// Resolves `name` in `parent` against the layers as they are now.
    fn resolve_in(
        &self,
        parent: u64,
        name: &OsStr,
    ) -> io::Result<(At, Option<(Place, std::fs::Metadata)>)> {
        let p = self.at(parent)?;
        if !p.place.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        let found = self.layers.resolve(&p.rel, &p.place, name)?;
        Ok((p, found))
    }

    /// Whether some lower layer still shows `name` in the directory `p`:
    /// removing or moving it then needs a whiteout.
    fn lower_positive(&self, p: &At, name: &OsStr) -> bool {
        let rel = p.rel.join(name);
        for &i in &p.place.lowers {
            match std::fs::symlink_metadata(self.layers.lower_path(i, &rel)) {
                Ok(md) => return !is_whiteout(&md),
                Err(_) => continue,
            }
        }
        false
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> io::Result<fuser::FileAttr> {
        let (_, found) = self.resolve_in(parent, name)?;
        let (place, md) = found.ok_or_else(enoent)?;
        let links = (place.upper && !md.is_dir() && md.nlink() > 1).then(|| md.ino());
        let ino = self.table_mut().remember(parent, name, place, links);
        Ok(attr(ino, &md))
    }

    fn stat_node(&self, ino: u64, fh: Option<FileHandle>) -> io::Result<fuser::FileAttr> {
        let at = self.at(ino)?;
        if at.unlinked {
            if let Some(h) = fh.and_then(|fh| self.handle(fh.0)) {
                let f = h.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
                return Ok(attr(ino, &f.metadata()?));
            }
        }
        let md = std::fs::symlink_metadata(self.layers.backing(&at.rel, &at.place))?;
        Ok(attr(ino, &md))
    }

    fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    fn add_handle(&self, ino: u64, file: std::fs::File, upper: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                fh,
                Arc::new(Handle {
                    ino,
                    state: Mutex::new((Arc::new(file), upper)),
                }),
            );
        fh
    }

    /// The file to read through: reopened on the upper dir if the node
    /// was copied up since this handle was opened on a lower layer.
    fn file_for_read(&self, fh: u64) -> io::Result<Arc<std::fs::File>> {
        let h = self.handle(fh).ok_or_else(|| err(libc::EBADF))?;
        let mut st = h.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.1 {
            let at = self.at(h.ino)?;
            if at.place.upper && !at.unlinked {
                let f = std::fs::File::open(self.layers.upper_path(&at.rel))?;
                *st = (Arc::new(f), true);
            }
        }
        Ok(st.0.clone())
    }

    fn open_backing(&self, ino: u64, flags: i32) -> io::Result<(std::fs::File, bool, u64)> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if write {
            let _g = self.lock_mutations();
            self.copy_up(ino)?;
        }
        let at = self.at(ino)?;
        let path = self.layers.backing(&at.rel, &at.place);
        let keep = flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .truncate(flags & libc::O_TRUNC != 0)
            .custom_flags(keep | libc::O_NOFOLLOW)
            .open(&path)?;
        let nlink = f.metadata()?.nlink();
        Ok((f, at.place.upper, nlink))
    }

    /// Takes the owner a new entry gets: the caller's, with the group of
    /// a set-group-id parent (and that bit for a new directory), as the
    /// kernel gives it.
    fn new_owner(&self, req: &Request, p: &At, is_dir: bool) -> io::Result<(u32, u32, u32)> {
        let pmd = std::fs::symlink_metadata(self.layers.backing(&p.rel, &p.place))?;
        if pmd.mode() & libc::S_ISGID != 0 {
            let extra = if is_dir { libc::S_ISGID } else { 0 };
            Ok((req.uid(), pmd.gid(), extra))
        } else {
            Ok((req.uid(), req.gid(), 0))
        }
    }

    /// Creates `name` in `parent` as `what`; the new node's attributes.
    fn create_entry(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        what: NewEntry<'_>,
        umask: u32,
    ) -> io::Result<fuser::FileAttr> {
        let _g = self.lock_mutations();
        let (_, found) = self.resolve_in(parent, name)?;
        if found.is_some() {
            return Err(err(libc::EEXIST));
        }
        self.copy_up(parent)?;
        let p = self.at(parent)?;
        let rel = p.rel.join(name);
        let path = self.layers.upper_path(&rel);
        // A whiteout there hides something below: the new entry replaces
        // it, and a new directory must go on hiding what is below.
        let over_whiteout = match std::fs::symlink_metadata(&path) {
            Ok(md) if is_whiteout(&md) => {
                std::fs::remove_file(&path)?;
                true
            }
            Ok(_) => return Err(err(libc::EEXIST)),
            Err(_) => false,
        };
        let is_dir = matches!(what, NewEntry::Dir { .. });
        let (uid, gid, extra) = self.new_owner(req, &p, is_dir)?;
        let mut chmod = None;
        match what {
            NewEntry::File { mode } => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                chmod = Some(mode & !umask & 0o7777);
            }
            NewEntry::Dir { mode } => {
                std::fs::DirBuilder::new().mode(0o700).create(&path)?;
                chmod = Some((mode & !umask & 0o7777) | extra);
                if over_whiteout {
                    sys::lsetxattr(&path, opaque_xattr().as_bytes(), b"y")?;
                }
            }
            NewEntry::Node { mode, rdev } => {
                sys::mknod(&path, (mode & libc::S_IFMT) | 0o600, rdev as u64)?;
                chmod = Some(mode & !umask & 0o7777);
            }
            NewEntry::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path)?;
            }
            NewEntry::Link { ino } => {
                self.copy_up(ino)?;
                let src = self.at(ino)?;
                std::fs::hard_link(self.layers.upper_path(&src.rel), &path)?;
                let md = std::fs::symlink_metadata(&path)?;
                let mut t = self.table_mut();
                t.set_upper_ino(ino, md.ino());
                let new = t.remember(
                    parent,
                    name,
                    Place {
                        upper: true,
                        lowers: Vec::new(),
                        is_dir: false,
                    },
                    Some(md.ino()),
                );
                return Ok(attr(new, &md));
            }
        }
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if let Some(mode) = chmod {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
        let md = std::fs::symlink_metadata(&path)?;
        let ino = self.table_mut().remember(
            parent,
            name,
            Place {
                upper: true,
                lowers: Vec::new(),
                is_dir,
            },
            None,
        );
        Ok(attr(ino, &md))
    }

    #[allow(clippy::too_many_arguments)] // FUSE's setattr, one field each
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> io::Result<fuser::FileAttr> {
        let at = {
            let _g = self.lock_mutations();
            self.copy_up(ino)?;
            self.at(ino)?
        };
        let path = self.layers.upper_path(&at.rel);
        let open_file = fh.and_then(|fh| self.handle(fh.0)).and_then(|h| {
            let st = h.state.lock().unwrap_or_else(|p| p.into_inner());
            st.1.then(|| st.0.clone())
        });
        if at.unlinked {
            // Only through an open file; nothing else names it.
            let f = open_file.ok_or_else(enoent)?;
            if let Some(size) = size {
                f.set_len(size)?;
            }
            if let Some(mode) = mode {
                f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            return Ok(attr(ino, &f.metadata()?));
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if let Some(mode) = mode {
            let md = std::fs::symlink_metadata(&path)?;
            if !md.file_type().is_symlink() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
        }
        if let Some(size) = size {
            match open_file {
                Some(f) => f.set_len(size)?,
                None => std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?
                    .set_len(size)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            sys::lutimens_opt(&path, atime.map(time_pair), mtime.map(time_pair))?;
        }
        Ok(attr(ino, &std::fs::symlink_metadata(&path)?))
    }

    /// Empties the upper copy of a directory that is empty in the merged
    /// view (it may hold whiteouts only) and removes it.
    fn remove_upper_dir(path: &Path) -> io::Result<()> {
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let md = e.metadata()?;
            if !is_whiteout(&md) {
                return Err(err(libc::ENOTEMPTY));
            }
            std::fs::remove_file(e.path())?;
        }
        std::fs::remove_dir(path)
    }

    fn whiteout(path: &Path) -> io::Result<()> {
        sys::mknod(path, libc::S_IFCHR, 0)
    }

    fn do_remove(&self, parent: u64, name: &OsStr, dir: bool) -> io::Result<()> {
        let _g = self.lock_mutations();
        let (p, found) = self.resolve_in(parent, name)?;
        let (place, md) = found.ok_or_else(enoent)?;
        let rel = p.rel.join(name);
        if dir {
            if !md.is_dir() {
                return Err(err(libc::ENOTDIR));
            }
            if !self.layers.list(&rel, &place)?.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
        } else if md.is_dir() {
            return Err(err(libc::EISDIR));
        }
        let needs_whiteout = self.lower_positive(&p, name);
        if needs_whiteout {
            self.copy_up(parent)?;
        }
        let path = self.layers.upper_path(&rel);
        if place.upper {
            if dir {
                Self::remove_upper_dir(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        if needs_whiteout {
            Self::whiteout(&path)?;
        }
        self.table_mut().detach(parent, name);
        Ok(())
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(err(libc::EINVAL));
        }
        let _g = self.lock_mutations();
        let (p, src) = self.resolve_in(parent, name)?;
        let (src_place, src_md) = src.ok_or_else(enoent)?;
        let (np, dst) = self.resolve_in(newparent, newname)?;
        let is_dir = src_md.is_dir();
        if is_dir && !src_place.lowers.is_empty() {
            // overlayfs without redirect_dir cannot move a directory that
            // has lower content; `mv` copies it then.
            return Err(err(libc::EXDEV));
        }
        let src_rel = p.rel.join(name);
        let dst_rel = np.rel.join(newname);
        if src_rel == dst_rel {
            return Ok(());
        }
        if let Some((dplace, dmd)) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(err(libc::EEXIST));
            }
            match (is_dir, dmd.is_dir()) {
                (true, false) => return Err(err(libc::ENOTDIR)),
                (false, true) => return Err(err(libc::EISDIR)),
                (true, true) if !self.layers.list(&dst_rel, dplace)?.is_empty() => {
                    return Err(err(libc::ENOTEMPTY));
                }
                _ => {}
            }
        }
        let src_ino = self.table().child(parent, name);
        match src_ino {
            Some(ino) => self.copy_up(ino)?,
            None => {
                // Not known to the kernel (it always looks up first, but be
                // safe): make a node to copy up.
                let ino = self
                    .table_mut()
                    .remember(parent, name, src_place.clone(), None);
                self.copy_up(ino)?;
                self.table_mut().forget(ino, 1);
            }
        }
        self.copy_up(parent)?;
        self.copy_up(newparent)?;
        let np = self.at(newparent)?;
        let from = self.layers.upper_path(&src_rel);
        let to = self.layers.upper_path(&dst_rel);
        // What the upper dir has at the target: a whiteout or an emptied
        // directory goes first when the types differ.
        match std::fs::symlink_metadata(&to) {
            Ok(md) if is_whiteout(&md) && is_dir => std::fs::remove_file(&to)?,
            Ok(md) if md.is_dir() => Self::remove_upper_dir(&to)?,
            _ => {}
        }
        let src_lower = self.lower_positive(&p, name);
        let dst_lower = self.lower_positive(&np, newname);
        if src_lower {
            if let Err(e) = sys::rename2(&from, &to, libc::RENAME_WHITEOUT) {
                if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
                    return Err(e);
                }
                std::fs::rename(&from, &to)?;
                Self::whiteout(&from)?;
            }
        } else {
            std::fs::rename(&from, &to)?;
        }
        if is_dir && (dst_lower || !np.place.lowers.is_empty()) && !is_opaque(&to) {
            // A directory moved into a merged directory hides whatever the
            // lower layers have (or will have) under its new name.
            sys::lsetxattr(&to, opaque_xattr().as_bytes(), b"y")?;
        }
        let mut t = self.table_mut();
        t.rename(parent, name, newparent, newname);
        if let Some(ino) = t.child(newparent, newname) {
            if let Some(n) = t.get_mut(ino) {
                n.place = Place {
                    upper: true,
                    lowers: Vec::new(),
                    is_dir,
                };
            }
        }
        Ok(())
    }

    fn xattr_reply(value: io::Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn get_xattr(&self, ino: u64, name: &OsStr) -> io::Result<Vec<u8>> {
        if is_private_xattr(name.as_bytes()) {
            return Err(err(libc::ENODATA));
        }
        let at = self.at(ino)?;
        let path = self.layers.backing(&at.rel, &at.place);
        let mut buf = vec![0u8; 256];
        loop {
            match sys::lgetxattr_into(&path, name.as_bytes(), &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn list_xattr(&self, ino: u64) -> io::Result<Vec<u8>> {
        let at = self.at(ino)?;
        let path = self.layers.backing(&at.rel, &at.place);
        let mut buf = vec![0u8; 1024];
        let n = loop {
            match sys::llistxattr_into(&path, &mut buf) {
                Ok(n) => break n,
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => return Err(e),
            }
        };
        let mut out = Vec::new();
        for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if !is_private_xattr(name) {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    fn change_xattr(&self, ino: u64, name: &OsStr, value: Option<(&[u8], i32)>) -> io::Result<()> {
        if is_private_xattr(name.as_bytes()) {
            return Err(err(libc::EPERM));
        }
        let _g = self.lock_mutations();
        self.copy_up(ino)?;
        let at = self.at(ino)?;
        let path = self.layers.upper_path(&at.rel);
        match value {
            Some((v, flags)) => sys::lsetxattr_flags(&path, name.as_bytes(), v, flags),
            None => sys::lremovexattr(&path, name.as_bytes()),
        }
    }

    fn open_dir(&self, ino: u64) -> io::Result<u64> {
        let at = self.at(ino)?;
        let parent = self.table().get(ino).map(|n| n.parent).unwrap_or(ROOT);
        let names = self.layers.list(&at.rel, &at.place)?;
        let mut listing = Vec::with_capacity(names.len() + 2);
        listing.push((OsString::from("."), FileType::Directory, ino));
        listing.push((OsString::from(".."), FileType::Directory, parent));
        {
            let t = self.table();
            for (i, (name, kind)) in names.into_iter().enumerate() {
                let child = t.child(ino, &name).unwrap_or(u64::MAX / 2 + i as u64);
                listing.push((name, kind, child));
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(listing));
        Ok(fh)
    }
}

/// overlayfs's own xattrs are neither shown nor settable through it.
fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl fuser::Filesystem for OverlayFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&TTL, &negative_entry(), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.table_mut().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.stat_node(ino.0, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .at(ino.0)
            .and_then(|at| std::fs::read_link(self.layers.backing(&at.rel, &at.place)));
        match r {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = if mode & libc::S_IFMT == libc::S_IFREG {
            NewEntry::File { mode }
        } else {
            NewEntry::Node { mode, rdev }
        };
        match self.create_entry(req, parent.0, name, what, umask) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.create_entry(req, parent.0, name, NewEntry::Dir { mode }, umask) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.create_entry(req, parent.0, link_name, NewEntry::Symlink { target }, 0) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.create_entry(req, newparent.0, newname, NewEntry::Link { ino: ino.0 }, 0) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_backing(ino.0, flags.0) {
            Ok((f, upper, nlink)) => {
                let fh = self.add_handle(ino.0, f, upper);
                let keep = if nlink > 1 {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(FileHandle(fh), keep)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.file_for_read(fh.0).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .file_for_read(fh.0)
            .and_then(|f| f.write_all_at(data, offset));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// ENOSYS: the kernel then stops sending FLUSH for this mount. Every
    /// write is already in the upper dir when it is answered and locks are
    /// the kernel's own (no lock operations here), so a flush has nothing
    /// to do, yet it cost a synchronous round trip on every close (two for
    /// a shell redirection, which dups the descriptor).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file_for_read(fh.0).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(listing) = listing else {
            reply.error(Errno::from_i32(libc::EBADF));
            return;
        };
        for (i, (name, kind, ino)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match sys::statvfs(&self.layers.upper) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.change_xattr(ino.0, name, Some((value, flags))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        Self::xattr_reply(self.get_xattr(ino.0, name), size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        Self::xattr_reply(self.list_xattr(ino.0), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.change_xattr(ino.0, name, None) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .create_entry(req, parent.0, name, NewEntry::File { mode }, umask)
            .and_then(|a| {
                let (f, upper, _) = self.open_backing(a.ino.0, flags & !libc::O_TRUNC)?;
                Ok((a, self.add_handle(a.ino.0, f, upper)))
            });
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .file_for_read(fh.0)
            .and_then(|f| sys::fallocate(&f, mode, offset, length));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
