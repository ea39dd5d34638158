//! The storage half's error type.
//!
//! Every variant carries the digest, reference or path it is about, because
//! a store holds thousands of blobs and "not found" alone sends the user
//! hunting; the CLI renders these through miette as they are.

use std::path::PathBuf;

/// Result of the storage API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading or writing the local store and archives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed; the path says where.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A string that should be a digest is not one kiln accepts.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest { value: String, reason: String },

    /// Content hashed to something other than what it was announced as;
    /// it was discarded.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },

    /// Content was not the size its descriptor announced; it was discarded.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// The blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(String),

    /// A string that should name an image does not.
    #[error("invalid reference format {value:?}: {reason}")]
    InvalidReference { value: String, reason: String },

    /// No image of that name is in the store.
    #[error("no such image: {0}")]
    ImageNotFound(String),

    /// A JSON document (manifest, config, index, store file) is malformed.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A manifest, index or config is well-formed JSON but unusable.
    #[error("{what}: {detail}")]
    InvalidImage { what: String, detail: String },

    /// No manifest of an index matches the requested platform.
    #[error("{image}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        image: String,
        platform: String,
        available: String,
    },

    /// An archive is malformed or not a kind kiln knows.
    #[error("archive {path}: {detail}")]
    Archive { path: PathBuf, detail: String },

    /// An archive entry tries to escape its folder or lie about its content;
    /// the whole archive was refused and nothing was imported.
    #[error("refusing archive {path}: entry {entry:?} {reason}")]
    UnsafeArchive {
        path: PathBuf,
        entry: String,
        reason: String,
    },
}

impl Error {
    /// Wraps an io error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a JSON error with what was being parsed.
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }
}
