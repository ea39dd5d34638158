//! Advisory file locks (flock) shared by several kiln processes.
//!
//! flock locks belong to an open file description and vanish when the
//! holder dies, so a killed kiln never leaves the store locked; that is
//! what lets the next process tell a live writer's temp file from a dead
//! one's.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Waits for an exclusive lock on `path` (created if missing).
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        Self::acquire(path, libc::LOCK_EX)
    }

    /// Waits for a shared lock on `path` (created if missing).
    pub fn shared(path: &Path) -> Result<FileLock> {
        Self::acquire(path, libc::LOCK_SH)
    }

    /// The lock file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn acquire(path: &Path, op: libc::c_int) -> Result<FileLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        flock(&file, op).map_err(|e| Error::io(path, e))?;
        Ok(FileLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

/// flock(2) with EINTR retried.
pub(crate) fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps
        // open for the duration of the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Tries an exclusive lock without waiting; `Ok(false)` if someone holds it.
pub(crate) fn try_exclusive(file: &File) -> std::io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}
