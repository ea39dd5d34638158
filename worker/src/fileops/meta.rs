//! Metadata calls the standard library lacks or only offers in a
//! symlink-following form: times and ownership of a symlink itself, extended
//! attributes, device nodes. Every call here acts on the named entry, never on
//! what it points to.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A timestamp as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    pub sec: i64,
    pub nsec: i64,
}

/// Set atime and mtime of `p` without following a final symlink.
pub fn lutimes(p: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = cpath(p)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.sec as libc::time_t,
            tv_nsec: atime.nsec as _,
        },
        libc::timespec {
            tv_sec: mtime.sec as libc::time_t,
            tv_nsec: mtime.nsec as _,
        },
    ];
    // SAFETY: c is a valid NUL-terminated path and ts has two elements.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create a device node, fifo, or (for a socket) an empty regular file stub,
/// as fsutil does: a socket cannot be copied, only its name.
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(p)?;
    let mut mode = mode;
    if mode & libc::S_IFMT == libc::S_IFSOCK {
        mode &= !libc::S_IFMT;
        mode |= libc::S_IFREG;
    }
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Names of the extended attributes of `p` itself.
pub fn list_xattrs(p: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(<[u8]>::to_vec)
                .collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e);
    }
}

/// Value of one extended attribute of `p` itself.
pub fn get_xattr(p: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is valid for buf.len() bytes; c and n are NUL-terminated.
        let r =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

/// Set one extended attribute on `p` itself.
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pointers valid for the given lengths.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Overlay's own bookkeeping must never travel with a copied file: an opaque
/// marker or a redirect copied into another snapshot would change what that
/// snapshot shows.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Copy the extended attributes of `src` to `dst`, best effort as BuildKit
/// does (it logs and goes on: a destination filesystem may refuse some).
pub fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = list_xattrs(src) else { return };
    for name in names {
        if is_private_xattr(&name) {
            continue;
        }
        if let Ok(v) = get_xattr(src, &name) {
            let _ = set_xattr(dst, &name, &v);
        }
    }
}
