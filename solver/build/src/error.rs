//! Why a build failed, by kind, so a caller picks its exit code and its
//! rendering from the kind and never from the message.

use crate::export::ExportError;
use crate::secrets::SecretSpecError;

/// A failed build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile could not be parsed, planned or lowered (a base image
    /// that cannot be resolved among them); the report carries the
    /// Dockerfile's text and the span, for a rendering that points at it.
    #[error("{0}")]
    Frontend(miette::Report),
    /// A step failed, or the solve refused to start (an entitlement the
    /// build was not given): BuildKit's `failed to solve: …`.
    #[error("failed to solve: {message}")]
    Solve {
        message: String,
        /// The Dockerfile lines the failed step was written on, rendered
        /// as BuildKit shows them (`Dockerfile:3`, `>>> RUN false`), to go
        /// before the error.
        lines: Option<String>,
    },
    /// An option cannot be used (a platform this machine cannot emulate,
    /// a network mode, an ignore file); the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A `--secret` / `--ssh` value cannot be used.
    #[error(transparent)]
    Secret(#[from] SecretSpecError),
    /// A `--cache-to` / `--cache-from` value is malformed.
    #[error(transparent)]
    CacheSpec(kiln_cache::remote::Error),
    /// The image is built and named, but exporting the build cache failed
    /// (BuildKit fails the build then too).
    #[error(transparent)]
    CacheExport(kiln_cache::remote::Error),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// The registry settings could not be read.
    #[error(transparent)]
    Registry(#[from] kiln_cache::registry::RegistryError),
    /// Exporting the result failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The context or the Dockerfile could not be had (stdin, git, URL).
    #[error(transparent)]
    Input(#[from] crate::context::InputError),
    /// A `--build-context` cannot be used.
    #[error(transparent)]
    NamedContext(#[from] crate::context::named::NamedContextError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Something failed while doing what the message says; the cause is
    /// the source.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BuildError {
    pub(crate) fn context<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> BuildError {
        let context = context.into();
        move |e| BuildError::Context {
            context,
            source: e.into(),
        }
    }
}
