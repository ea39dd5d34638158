//! Errors of COPY/ADD, worded like BuildKit's where a user will compare them
//! (a missing source, an unknown `--chown` name), because Dockerfile authors
//! search for those exact messages.

use std::io;
use std::path::PathBuf;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileOpsError {
    /// A named source does not exist in the source root. BuildKit reports this
    /// while computing the cache key, as `"/path": not found`.
    #[error("failed to calculate checksum: \"{path}\": not found")]
    NotFound { path: String },

    /// A wildcard matched nothing while the caller asked for an error in that
    /// case (BuildKit's Dockerfile frontend allows empty wildcards; LLB users
    /// may not).
    #[error("{pattern} not found")]
    NoMatch { pattern: String },

    /// A source or exclude pattern is malformed (Go's `filepath.ErrBadPattern`).
    #[error("syntax error in pattern: {pattern}")]
    BadPattern { pattern: String },

    /// `--chown` named a user or group the destination image does not know.
    #[error("unable to find {kind} {name}: {reason}")]
    UnknownId {
        kind: &'static str,
        name: String,
        reason: String,
    },

    /// A `--chmod` value is neither octal nor chmod(1)'s symbolic syntax.
    #[error(transparent)]
    BadMode(#[from] kiln_solver::mode::ModeError),

    /// A directory would have to replace a file or the other way round.
    #[error("cannot copy to non-directory: {path}")]
    NotADirectory { path: String },

    /// A file would have to replace an existing directory.
    #[error("cannot replace to directory {path} with file")]
    ReplaceDirWithFile { path: String },

    /// Too many symlinks while resolving a path inside a root.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop { path: String },

    /// An archive entry tried to leave the extraction directory.
    #[error("archive entry breakout: {what}")]
    Breakout { what: String },

    /// An archive could not be read (corrupt stream, bad header).
    #[error("failed to extract {archive}: {source}")]
    Archive {
        archive: String,
        #[source]
        source: io::Error,
    },

    /// An operating system call failed on a path (shown relative to its root
    /// so host paths of the store do not leak into build output).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Result of file operations.
pub type Result<T, E = FileOpsError> = std::result::Result<T, E>;

/// Attach an operation name and path to an I/O error.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> FileOpsError {
    let path = path.into();
    move |source| FileOpsError::Io { op, path, source }
}
