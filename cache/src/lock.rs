//! Advisory file locks (flock) shared by several kiln processes.
//!
//! flock locks belong to an open file description and vanish when the
//! holder dies, so a killed kiln never leaves the store locked; that is
//! what lets the next process tell a live writer's temp file from a dead
//! one's.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

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
        Self::acquire(path, FlockOperation::LockExclusive)
    }

    /// Waits for a shared lock on `path` (created if missing).
    pub fn shared(path: &Path) -> Result<FileLock> {
        Self::acquire(path, FlockOperation::LockShared)
    }

    /// The lock file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn acquire(path: &Path, op: FlockOperation) -> Result<FileLock> {
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
pub(crate) fn flock(file: &File, op: FlockOperation) -> std::io::Result<()> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Tries an exclusive lock without waiting; `Ok(false)` if someone holds it.
pub(crate) fn try_exclusive(file: &File) -> std::io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}
