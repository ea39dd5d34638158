//! Thin, safe wrappers over the Linux system calls the worker needs.
//!
//! Everything unsafe lives here so the modules above read as plain logic and
//! every call's error becomes an `io::Error` carrying errno. The `*at` forms
//! are used throughout because the only safe way to write into a directory
//! that hostile content may have seeded with symlinks is to hold a verified
//! directory fd and name one component at a time.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a path or name into a C string; interior NULs cannot name a file.
pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a directory as the anchor for later `*at` calls.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated string; the fd is owned on success.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel
/// refuses (EXDEV) any resolution that would leave `root`, including through
/// absolute or `..`-laden symlinks, so there is no check-then-use race.
pub fn open_beneath(root: RawFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid pointers; size matches the struct we pass.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat2` with `RESOLVE_IN_ROOT`: paths (and symlinks, absolute ones
/// included) resolve as if `root` were `/`, the way the sandboxed process
/// will see them; used for mount points, so a planted symlink such as
/// `etc/hosts -> /etc/shadow` names the rootfs's file, never the host's.
pub fn open_in_root(root: RawFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid pointers; size matches the struct we pass.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Like `fstatat(.., AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when the name is absent.
pub fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// Creates a new regular file `name` in `dir` for writing; never follows or
/// reuses an existing entry (O_EXCL | O_NOFOLLOW).
pub fn create_file_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    // SAFETY: valid pointer.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `mkdirat`.
pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid pointer.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `mknodat`: devices, fifos and the overlay whiteout (char 0/0).
pub fn mknod_at(dir: RawFd, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid pointer.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

/// `symlinkat`.
pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid pointers.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

/// `linkat` without following a final symlink (a hard link to the link).
pub fn link_at(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> io::Result<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    // SAFETY: valid pointers.
    check(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) }).map(drop)
}

/// `unlinkat`; `dir_flag` removes an empty directory.
pub fn unlink_at(dir: RawFd, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid pointer.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

/// Removes `name` in `dir` whatever it is, recursively, never following
/// symlinks: what a whiteout or a replaced entry needs.
pub fn remove_all_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = open_beneath(
            dir,
            Path::new(name),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW,
        )?;
        for child in read_dir_fd(sub.as_raw_fd())? {
            remove_all_at(sub.as_raw_fd(), &child)?;
        }
        unlink_at(dir, name, true)
    } else {
        unlink_at(dir, name, false)
    }
}

/// Lists a directory fd's entries (without `.` and `..`), sorted by bytes.
pub fn read_dir_fd(dir: RawFd) -> io::Result<Vec<std::ffi::OsString>> {
    // Reading through /proc/self/fd keeps the fd's identity (no path re-walk).
    let p = format!("/proc/self/fd/{dir}");
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`.
pub fn chown_at(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid pointer.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// `fchmodat` (never on a symlink: Linux has no symlink modes).
pub fn chmod_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid pointer.
    check(unsafe { libc::fchmodat(dir, c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

/// Sets atime and mtime (seconds, nanoseconds) without following symlinks.
pub fn set_times_at(dir: RawFd, name: &OsStr, mtime: (i64, i64)) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = libc::timespec {
        tv_sec: mtime.0 as libc::time_t,
        tv_nsec: mtime.1 as _,
    };
    let times = [ts, ts];
    // SAFETY: valid pointers.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// Sets an extended attribute on `name` in `dir` without following symlinks.
pub fn lsetxattr_at(dir: RawFd, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    let p = cstr(proc_fd_path(dir, name))?;
    let k = cstr(key)?;
    // SAFETY: valid pointers and lengths.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// The xattrs of a path (not following a final symlink), sorted by name.
pub fn llist_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let p = cstr(path)?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: buffer pointer and length are valid.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for key in buf[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = String::from_utf8_lossy(key).into_owned();
        if let Some(v) = lgetxattr(path, &key)? {
            out.push((key, v));
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr of a path (not following a final symlink); `None` when absent.
pub fn lgetxattr(path: &Path, key: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cstr(path)?;
    let k = cstr(key)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buffer pointer and length are valid.
        let n =
            unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// A path that names `name` inside the directory held by `dir`, for the few
/// calls (xattrs) that have no `*at` form; the fd pins the directory.
pub fn proc_fd_path(dir: RawFd, name: &OsStr) -> std::path::PathBuf {
    Path::new(&format!("/proc/self/fd/{dir}")).join(name)
}

/// Creates a new overlay mount at `target` with the new mount API, one
/// `lowerdir+` per layer (top-most first), which lifts the page-sized limit
/// of mount(2)'s option string up to the kernel's 500 layers.
pub fn mount_overlay_fsconfig(
    lowers_top_first: &[&Path],
    upper: Option<(&Path, &Path)>,
    options: &[(&str, &str)],
    target: &Path,
) -> io::Result<()> {
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    let fstype = cstr("overlay")?;
    // SAFETY: valid pointer.
    let fsfd =
        check_long(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsfd is a fresh fd we own.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as RawFd) };
    let set = |key: &str, value: &OsStr| -> io::Result<()> {
        let k = cstr(key)?;
        let v = cstr(value)?;
        // SAFETY: valid pointers; fsfd is open.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0 as libc::c_int,
            )
        })
        .map(drop)
    };
    for l in lowers_top_first {
        set("lowerdir+", l.as_os_str())?;
    }
    if let Some((u, w)) = upper {
        set("upperdir", u.as_os_str())?;
        set("workdir", w.as_os_str())?;
    }
    for (k, v) in options {
        set(k, OsStr::new(v))?;
    }
    // SAFETY: fsfd is open; the other arguments are plain integers / NULL.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_int,
        )
    })?;
    // SAFETY: fsfd is open.
    let mfd = check_long(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            0 as libc::c_uint,
        )
    })?;
    // SAFETY: mfd is a fresh fd we own.
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd as RawFd) };
    let empty = cstr("")?;
    let t = cstr(target)?;
    // SAFETY: valid pointers and fds.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// mount(2).
pub fn mount(
    source: Option<&OsStr>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = source.map(cstr).transpose()?;
    let t = cstr(target)?;
    let f = fstype.map(cstr).transpose()?;
    let d = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either NULL or a valid C string.
    check(unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    })
    .map(drop)
}

/// Moves the calling process into a mount namespace of its own whose
/// mounts never propagate back to the host's (the host's still reach it).
/// Must be called while the process has one thread: unshare(CLONE_NEWNS)
/// moves only the calling thread.
pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: plain syscall with constant flags.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
}

/// lseek(2) with SEEK_DATA (`data`) or SEEK_HOLE: the next offset at or
/// after `from` where data (or a hole) starts; `None` past the end (ENXIO).
pub fn seek_data_or_hole(fd: RawFd, from: u64, data: bool) -> io::Result<Option<u64>> {
    let whence = if data {
        libc::SEEK_DATA
    } else {
        libc::SEEK_HOLE
    };
    let off = libc::off_t::try_from(from)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    // SAFETY: lseek only reads its integer arguments.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// Makes the mount at `target` and every mount beneath it `nodev`
/// (mount_setattr(2) with AT_RECURSIVE, kernel 5.12+): a device node on
/// them, whoever made it, cannot be opened (EACCES). Other flags stay as
/// they are, locked ones included, so this works in a user namespace too.
pub fn set_nodev_recursive(target: &Path) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let t = cstr(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid C string and a mount_attr of the size passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            t.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// A pipe with one end a child process inherits (no close-on-exec), for a
/// program told that fd's number (slirp4netns's `--ready-fd` writes,
/// `--exit-fd` reads): (read end, write end); `child_reads` says which end
/// is the child's. The other end stays close-on-exec.
pub fn pipe_for_child(child_reads: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let child = if child_reads { &r } else { &w };
    // SAFETY: fcntl on an fd we own.
    check(unsafe { libc::fcntl(child.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok((r, w))
}

/// Joins the network namespace bound at `path` (setns(2)).
pub fn join_netns(path: &Path) -> io::Result<()> {
    let fd = std::fs::File::open(path)?;
    // SAFETY: setns on an fd we opened.
    check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid pointer.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// Marks a directory as the top of a hierarchy for ext4's Orlov allocator
/// (`chattr +T`): directories made in it are spread over random block
/// groups instead of packed beside their parent. Without it every kiln
/// process's scratch tree lands in the group where the last `prune` just
/// freed thousands of inodes, and on ext4 without a journal each new inode
/// then rescans all of those "recently deleted" ones (quadratic in the
/// number of files a COPY creates). Filesystems without the flag refuse;
/// the caller ignores that.
pub fn set_topdir(path: &Path) -> io::Result<()> {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;
    let dir = open_dir(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the fd is open; the kernel writes at most an int into flags,
    // which is a long, so the write stays within it.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) })?;
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: as above; the kernel reads an int from flags.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags) })?;
    Ok(())
}
