//! Why a remote cache could not be read, used or written.

use std::path::PathBuf;

use crate::registry::RegistryError;

/// A remote cache failure. The messages are the ones the CLI prints in its
/// warnings and errors, so they name what went wrong in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--cache-to` / `--cache-from` value is malformed.
    #[error("{0}")]
    Spec(String),
    /// The cache's documents are not what kiln writes.
    #[error("{0}")]
    Format(String),
    /// A file of a cache folder could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// The registry refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A blob of a cache folder does not match its digest.
    #[error("{} does not match its digest", .0.display())]
    Corrupt(PathBuf),
    /// Fetching a blob failed (as the store said it).
    #[error("{}: {source}", path.display())]
    Copy {
        path: PathBuf,
        source: Box<crate::Error>,
    },
    /// A layer could not be made from another.
    #[error("layer {want} from {from}: {source}")]
    Decompress {
        want: String,
        from: String,
        source: Box<crate::Error>,
    },
    /// An object store (s3, azblob, gcs) refused or could not be
    /// reached; `message` has its credentials replaced by `***`.
    #[error("{what}: {message}")]
    Object { what: String, message: String },
    /// A background task died.
    #[error("{0}")]
    Task(String),
    /// A destination could not be written: what was being done (the
    /// message shown), the cause behind it.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// A failed export, named as BuildKit names it.
    #[error("failed to export cache to {target}: {source}")]
    Export { target: String, source: Box<Error> },
}

impl Error {
    /// Wraps `self` under `context`, which is what gets shown.
    pub(crate) fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
