//! Thin, safe wrappers over the Linux system calls the worker needs.
//!
//! Everything unsafe lives here so the modules above read as plain logic and
//! every call's error becomes an `io::Error` carrying errno. The `*at` forms
//! are used throughout because the only safe way to write into a directory
//! that hostile content may have seeded with symlinks is to hold a verified
//! directory fd and name one component at a time.
#![allow(unsafe_code)]

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
    // SAFETY: open_how is plain integers, for which all zeroes is valid.
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
    // SAFETY: open_how is plain integers, for which all zeroes is valid.
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
    // SAFETY: stat is plain integers, for which all zeroes is valid.
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
        if v.is_empty() {
            // A flag such as `userxattr` takes no value.
            const FSCONFIG_SET_FLAG: libc::c_uint = 0;
            let kc = cstr(k)?;
            // SAFETY: valid key pointer, NULL value, fsfd is open.
            check_long(unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fsfd.as_raw_fd(),
                    FSCONFIG_SET_FLAG,
                    kc.as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0 as libc::c_int,
                )
            })?;
        } else {
            set(k, OsStr::new(v))?;
        }
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

// ---------------------------------------------------------------------------
// Metadata of a path itself (never what a final symlink points to).

/// `mknod(2)` at a path: device nodes, fifos.
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) }).map(drop)
}

/// Sets atime and mtime (seconds, nanoseconds) of `path` without following
/// a final symlink.
pub fn lutimens(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cstr(path)?;
    let ts = |t: (i64, i64)| libc::timespec {
        tv_sec: t.0 as libc::time_t,
        tv_nsec: t.1 as _,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: a valid C string and an array of the two timespecs utimensat reads.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// One `llistxattr(2)` into `buf`: the length of the NUL-separated name
/// list (ERANGE when `buf` is too small; the caller grows it).
pub fn llistxattr_into(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    let c = cstr(path)?;
    // SAFETY: a valid C string; the kernel writes at most buf.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `lgetxattr(2)` into `buf`: the value's length (ERANGE when `buf` is
/// too small, ENODATA when absent).
pub fn lgetxattr_into(path: &Path, name: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    let c = cstr(path)?;
    let k = cstr(OsStr::from_bytes(name))?;
    // SAFETY: valid C strings; the kernel writes at most buf.len() bytes.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `lsetxattr(2)`: sets one extended attribute on `path` itself.
pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    let k = cstr(OsStr::from_bytes(name))?;
    // SAFETY: valid C strings; value's pointer and length describe a live slice.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

// ---------------------------------------------------------------------------
// Processes: the helpers' forks, waits, pipes and signals.

/// Proof that the process had one thread when it was made: what makes
/// [`fork`] sound (a fork of a multi-threaded process may copy a lock held
/// by another thread, the allocator's among them). Only the re-executed
/// helpers make one, first thing, and they never start a thread; it cannot
/// leave the thread that made it.
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// Counts this process's threads; `Err(count)` when there are several.
    pub fn check() -> Result<SingleThreaded, usize> {
        let threads = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(1);
        if threads == 1 {
            Ok(SingleThreaded(std::marker::PhantomData))
        } else {
            Err(threads)
        }
    }
}

/// fork(2): `None` in the child, the child's pid in the parent.
pub fn fork(_one_thread: &SingleThreaded) -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the process is single-threaded (the token says so), so the
    // child gets a consistent copy of every lock and may do anything.
    let pid = check(unsafe { libc::fork() })?;
    Ok((pid != 0).then_some(pid))
}

/// _exit(2): leaves at once, without destructors, atexit handlers or
/// flushing (what a forked child that failed before exec must do).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Has the kernel SIGKILL this process when its parent dies.
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// unshare(2) with `flags` (`CLONE_NEW*`).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare with integer flags only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// waitpid(2) for one child, EINTR retried: its raw wait status.
pub fn waitpid(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: a valid out-pointer for the status.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// waitpid(-1) (blocking, EINTR retried): the pid and raw wait status of
/// any child that ended; how an init reaps orphans.
pub fn wait_any() -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    loop {
        // SAFETY: a valid out-pointer for the status.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r > 0 {
            return Ok((r, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// dup2(2): makes `to` a copy of `from` (used for a child's stdio).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes integers; an invalid fd fails with EBADF.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Takes ownership of this process's stdin, which the helpers' parent hands
/// over as their private channel (a socket); nothing else in a helper reads
/// `std::io::stdin`.
pub fn take_stdin() -> OwnedFd {
    // SAFETY: fd 0 was given to the helper for this use only, and is taken
    // once, at its start.
    unsafe { OwnedFd::from_raw_fd(0) }
}

/// Marks `fd` close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// setsid(2): a new session (and process group) led by this process.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// kill(2).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Writes all of `bytes` to `fd` with plain write(2) calls (EINTR retried),
/// unbuffered; gives up silently on any other error, as a reporter with
/// nowhere else to report must.
pub fn write_all_fd(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: pointer and length of a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// poll(2) on `fds` (`timeout_ms` < 0 waits forever): how many are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: pointer and length of a live, initialised pollfd slice.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// pid the signal handler of [`forward_signals`] passes signals on to.
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes integers only.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Installs a handler for each of `signals` that passes it on to the pid
/// last set with [`set_forward_target`] (none while that is 0).
pub fn forward_signals(signals: &[libc::c_int]) {
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; the handler only loads an
        // atomic and calls async-signal-safe kill.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Where forwarded signals go (0: nowhere).
pub fn set_forward_target(pid: libc::pid_t) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// Namespaces.

/// setns(2) into the namespace `fd` refers to (`nstype` 0: whatever it is).
pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments; an fd that is no namespace fails (EINVAL).
    check(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// Makes the directory `root` (an open fd) this process's root and cwd
/// (fchdir + chroot("."): how `exec` enters a running container's root).
pub fn enter_root(root: RawFd) -> io::Result<()> {
    // SAFETY: integer argument.
    check(unsafe { libc::fchdir(root) })?;
    // SAFETY: a static C string.
    check(unsafe { libc::chroot(c".".as_ptr()) }).map(drop)
}

/// Sets `lo` up in a fresh network namespace, as docker's `--network none`
/// has it: 127.0.0.1 works, nothing else does.
pub fn loopback_up() -> io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: plain socket call.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is fresh and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: an ioctl on an ifreq-sized, initialised struct.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: as above.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// What a sandbox's pid 1 does between fork and exec (single-threaded, so
// allocation is fine; nothing here adds any the callers did not have).

/// umask(2).
pub fn umask(mode: u32) {
    // SAFETY: integer argument; umask cannot fail.
    unsafe { libc::umask(mode as libc::mode_t) };
}

/// chdir(2).
pub fn chdir(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: a valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

/// pivot_root(".", "."): the cwd becomes the root, the old root is stacked
/// on it (the caller detaches it with [`umount`] of ".").
pub fn pivot_root_to_cwd() -> io::Result<()> {
    let dot = c".";
    // SAFETY: static C strings.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) }).map(drop)
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length of a live byte slice.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// getrlimit(2): (soft, hard).
pub fn getrlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    check(unsafe { libc::getrlimit(resource as _, &mut cur) })?;
    Ok((cur.rlim_cur, cur.rlim_max))
}

/// setrlimit(2).
pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid pointer.
    check(unsafe { libc::setrlimit(resource as _, &new) }).map(drop)
}

/// Closes every fd from 3 up except `keep` (close_range(2)); errors are
/// ignored, as there is nothing to do about them.
pub fn close_fds_except(keep: RawFd) {
    // SAFETY: closing fds this process does not use; `keep` stays open.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// Drops `cap` from the bounding set (PR_CAPBSET_DROP).
pub fn drop_bounding_cap(cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// setgroups(2).
pub fn setgroups(gids: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: pointer and length of a live slice.
    check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) }).map(drop)
}

/// setresgid(2) with one gid for all three.
pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map(drop)
}

/// setresuid(2) with one uid for all three.
pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// PR_SET_NO_NEW_PRIVS.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// Clears the ambient set and makes `mask` the effective and permitted sets
/// (inheritable empty) with one capset(2), v3 (64 bits).
///
/// Raw rather than the `caps` crate: that crate sets each set in a call of
/// its own through hash sets of the capabilities it knows by name, while
/// this sets all three at once from a bit mask that may hold capabilities
/// newer than the crate.
pub fn set_caps(mask: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut h = Header {
        version: V3,
        pid: 0,
    };
    let lo = Data {
        effective: mask as u32,
        permitted: mask as u32,
        inheritable: 0,
    };
    let hi = Data {
        effective: (mask >> 32) as u32,
        permitted: (mask >> 32) as u32,
        inheritable: 0,
    };
    let data = [lo, hi];
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: capset with a v3 header and the two data structs v3 reads.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, data.as_ptr()) })
        .map(drop)
}

/// Resets every signal's disposition to the default and empties the
/// signal mask, as a freshly exec'd process expects.
pub fn reset_signals() {
    // SAFETY: resetting dispositions and the mask of this process; a zeroed
    // sigset_t is then initialised by sigemptyset.
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// access(path, X_OK) == 0.
pub fn is_executable(path: &Path) -> bool {
    let Ok(c) = cstr(path) else { return false };
    // SAFETY: a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// A program, its argv and environment as execve(2) wants them, built
/// ahead so that [`Exec::exec`] itself allocates nothing (it runs under the
/// step's seccomp filter).
pub struct Exec {
    prog: CString,
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Exec {
    /// Prepares `prog` with `args` and `env` (`KEY=VALUE`).
    pub fn new(prog: &Path, args: &[String], env: &[String]) -> io::Result<Exec> {
        let prog = cstr(prog)?;
        let args: Vec<CString> = args.iter().map(cstr).collect::<io::Result<_>>()?;
        let env: Vec<CString> = env.iter().map(cstr).collect::<io::Result<_>>()?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Exec {
            prog,
            _args: args,
            _env: env,
            argv,
            envp,
        })
    }

    /// execve(2); returns only on failure, with the error.
    pub fn exec(&self) -> io::Error {
        // SAFETY: NULL-terminated arrays of pointers into C strings that
        // `self` owns and keeps alive across the call.
        unsafe { libc::execve(self.prog.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        io::Error::last_os_error()
    }
}

// ---------------------------------------------------------------------------
// What the FUSE overlay (crate::fuse_overlay) needs beyond the calls above.

/// `renameat2(2)` between two paths with `flags` (RENAME_NOREPLACE,
/// RENAME_EXCHANGE, RENAME_WHITEOUT): the overlay passes a caller's flags
/// on and leaves a whiteout behind a renamed lower entry.
pub fn rename2(old: &Path, new: &Path, flags: u32) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            o.as_ptr(),
            libc::AT_FDCWD,
            n.as_ptr(),
            flags as libc::c_uint,
        )
    })
    .map(drop)
}

/// `lremovexattr(2)`.
pub fn lremovexattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    let k = cstr(OsStr::from_bytes(name))?;
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(c.as_ptr(), k.as_ptr()) }).map(drop)
}

/// `lsetxattr(2)` with the caller's XATTR_CREATE / XATTR_REPLACE flags.
pub fn lsetxattr_flags(path: &Path, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let c = cstr(path)?;
    let k = cstr(OsStr::from_bytes(name))?;
    // SAFETY: valid C strings; value's pointer and length describe a live slice.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// Sets atime and/or mtime of `path` itself (never a symlink's target);
/// `None` leaves that time as it is (UTIME_OMIT).
pub fn lutimens_opt(
    path: &Path,
    atime: Option<(i64, i64)>,
    mtime: Option<(i64, i64)>,
) -> io::Result<()> {
    let c = cstr(path)?;
    let ts = |t: Option<(i64, i64)>| match t {
        Some(t) => libc::timespec {
            tv_sec: t.0 as libc::time_t,
            tv_nsec: t.1 as _,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT as _,
        },
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: a valid C string and an array of the two timespecs utimensat reads.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// What `statfs` answers about the filesystem under `path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// `statvfs(3)`.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = cstr(path)?;
    // SAFETY: statvfs is plain integers, for which all zeroes is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a live statvfs.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(FsStats {
        blocks: st.f_blocks,
        bfree: st.f_bfree,
        bavail: st.f_bavail,
        files: st.f_files,
        ffree: st.f_ffree,
        bsize: st.f_bsize as u32,
        namelen: st.f_namemax as u32,
        frsize: st.f_frsize as u32,
    })
}

/// `fallocate(2)` on an open file.
pub fn fallocate(file: &std::fs::File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on an fd the File owns.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

// ---------------------------------------------------------------------------
// Terminals: the container's pseudo-terminal and the caller's raw mode.

/// Opens a new pseudo-terminal from `/dev/ptmx` as this process sees it
/// (inside the container: its own devpts, so the process sees
/// `/dev/pts/0`): the unlocked master and its slave, both close-on-exec
/// and neither becoming our controlling terminal.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a static C string and integer flags.
    let m = check(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })?;
    // SAFETY: m is a fresh fd owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) })?;
    // SAFETY: TIOCGPTPEER takes the open flags and returns a new fd.
    let s = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let slave = if s >= 0 {
        // SAFETY: s is a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(s) }
    } else {
        // Kernels before 4.13: by number, beneath the same devpts.
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int through the pointer.
        check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
        let path = cstr(format!("/dev/pts/{n}"))?;
        // SAFETY: a valid C string and integer flags.
        let s = check(unsafe { libc::open(path.as_ptr(), flags) })?;
        // SAFETY: s is a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(s) }
    };
    Ok((master, slave))
}

/// Makes the terminal `fd` this process's controlling terminal (it must
/// lead a session that has none).
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// The window size of the terminal `fd`: (rows, columns); `None` when it
/// is no terminal.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: a zeroed winsize is valid; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize through the pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets the window size of the terminal `fd` (on a master: the kernel
/// sends SIGWINCH to the terminal's foreground process group).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// isatty(3).
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: integer argument.
    unsafe { libc::isatty(fd) == 1 }
}

/// A terminal's settings, to put back after raw mode.
#[derive(Clone, Copy)]
pub struct TermMode(libc::termios);

impl std::fmt::Debug for TermMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TermMode")
    }
}

/// Puts the terminal `fd` in raw mode (cfmakeraw, as docker's
/// `term.MakeRaw`): the previous settings, for [`restore_terminal`].
pub fn make_raw(fd: RawFd) -> io::Result<TermMode> {
    // SAFETY: a zeroed termios is valid; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes a termios through the pointer.
    check(unsafe { libc::tcgetattr(fd, &mut t) })?;
    let saved = TermMode(t);
    // SAFETY: cfmakeraw edits the termios in place.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: tcsetattr reads a termios through the pointer.
    check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })?;
    Ok(saved)
}

/// Puts back settings [`make_raw`] returned.
pub fn restore_terminal(fd: RawFd, mode: &TermMode) {
    // SAFETY: tcsetattr reads a termios through the pointer.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &mode.0) };
}

/// Write end of the pipe [`signal_pipe`]'s handler writes to (-1: none).
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn note_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write is async-signal-safe; one byte from the stack.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Turns `signals` into bytes (the signal number) readable from the
/// returned pipe, so a poll loop sees them (the self-pipe trick); the
/// write end is non-blocking, so a full pipe drops signals, never blocks.
pub fn signal_pipe(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: p[0] is fresh and owned by nobody else; p[1] stays open for
    // the life of the process (the handler may write to it at any time).
    let r = unsafe { OwnedFd::from_raw_fd(p[0]) };
    let old = SIGNAL_PIPE.swap(p[1], std::sync::atomic::Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: the previous write end was ours alone.
        unsafe { libc::close(old) };
    }
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; the handler only loads an
        // atomic and calls async-signal-safe write.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    Ok(r)
}

/// Sends the open fd `fd` over the unix socket `sock` (SCM_RIGHTS), with
/// one byte of data.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below to live
    // buffers, and the control message is built within cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        check_long(libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as libc::c_long).map(drop)
    }
}

/// Receives an fd [`send_fd`] sent (close-on-exec); `None` when the peer
/// closed the socket without sending one.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live
    // buffers; the control message is read only when the kernel wrote one.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break n;
        };
        check_long(n as libc::c_long)?;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 0 || cmsg.is_null() {
            return Ok(None);
        }
        if (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}
