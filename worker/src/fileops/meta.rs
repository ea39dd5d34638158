//! Metadata calls the standard library lacks or only offers in a
//! symlink-following form: times and ownership of a symlink itself, extended
//! attributes, device nodes. Every call here acts on the named entry, never on
//! what it points to.

use std::io;
use std::path::Path;

use crate::sys;

/// A timestamp as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    pub sec: i64,
    pub nsec: i64,
}

/// Set atime and mtime of `p` without following a final symlink.
pub fn lutimes(p: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    sys::lutimens(p, (atime.sec, atime.nsec), (mtime.sec, mtime.nsec))
}

/// Create a device node, fifo, or (for a socket) an empty regular file stub,
/// as fsutil does: a socket cannot be copied, only its name.
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let mut mode = mode;
    if mode & libc::S_IFMT == libc::S_IFSOCK {
        mode &= !libc::S_IFMT;
        mode |= libc::S_IFREG;
    }
    sys::mknod(p, mode, rdev)
}

/// Names of the extended attributes of `p` itself.
pub fn list_xattrs(p: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let e = match sys::llistxattr_into(p, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(e) => e,
        };
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
    let mut buf = vec![0u8; 256];
    loop {
        let e = match sys::lgetxattr_into(p, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) => e,
        };
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

/// Set one extended attribute on `p` itself.
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    sys::lsetxattr(p, name, value)
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
