//! What can go wrong talking to a registry, in terms a user can act on.
//!
//! Every variant names the registry (and the reference when there is one)
//! because a pull or push touches several hosts (mirrors, token servers,
//! blob redirects) and "401" alone does not say which one refused.

use std::path::PathBuf;

/// An error of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry has no manifest for the reference (`MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN` or a 404 on the manifest).
    #[error("{reference}: image not found on {registry} ({detail})")]
    NotFound {
        reference: String,
        registry: String,
        detail: String,
    },

    /// Credentials were missing or refused.
    #[error("unauthorized: {registry} refused access to {what}{hint}")]
    Unauthorized {
        registry: String,
        what: String,
        hint: String,
    },

    /// The credentials were accepted but do not grant the action.
    #[error("denied: {registry} does not allow {what} ({detail})")]
    Denied {
        registry: String,
        what: String,
        detail: String,
    },

    /// Content did not hash to the digest it was asked for: a corrupt or
    /// hostile registry, and nothing of it was stored.
    #[error("wrong digest from {registry} for {reference}: expected {expected}, got {actual}")]
    DigestMismatch {
        registry: String,
        reference: String,
        expected: String,
        actual: String,
    },

    /// Content was not the size its descriptor announced.
    #[error("wrong size from {registry} for {reference} blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        registry: String,
        reference: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// The registry could not be reached at all.
    #[error("cannot connect to {registry} ({url}): {detail}")]
    Connect {
        registry: String,
        url: String,
        detail: String,
    },

    /// A transfer broke off or the registry answered something unexpected.
    #[error("{registry}: {what} failed: {detail}")]
    Protocol {
        registry: String,
        what: String,
        detail: String,
    },

    /// A request went longer than the stall timeout without a byte moving.
    #[error("{registry}: {request} stalled: no data for {:.1} s (registry-stall-timeout in $KILN_ROOT/config.json, or KILN_REGISTRY_STALL_TIMEOUT)", after.as_secs_f64())]
    Stalled {
        registry: String,
        /// Method, host and path (`GET 10.0.0.1:5000/v2/app/manifests/1`).
        request: String,
        after: std::time::Duration,
    },

    /// A small request (ping, token, manifest, config, HEAD) did not finish
    /// within its deadline, though bytes may have trickled in.
    #[error("{registry}: {request} did not finish within {:.1} s (registry-timeout in $KILN_ROOT/config.json, or KILN_REGISTRY_TIMEOUT)", after.as_secs_f64())]
    TimedOut {
        registry: String,
        /// Method, host and path.
        request: String,
        after: std::time::Duration,
    },

    /// A setting (config key or environment variable) has a bad value.
    #[error("{name}={value:?}: expected {expected}")]
    InvalidSetting {
        name: String,
        value: String,
        expected: &'static str,
    },

    /// A manifest or index kiln cannot use.
    #[error("{reference} on {registry}: invalid manifest: {detail}")]
    InvalidManifest {
        registry: String,
        reference: String,
        detail: String,
    },

    /// `--platform` matched nothing in a multi-platform index.
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    /// A `--platform` value that is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),

    /// The image to push is not in the local store.
    #[error("{0}: no such image in the local store")]
    NoLocalImage(String),

    /// A docker or kiln configuration file could not be read or written.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// A `docker-credential-*` helper failed.
    #[error("credential helper {helper}: {message}")]
    CredentialHelper { helper: String, message: String },

    /// A transfer stopped because another one of the same pull failed;
    /// never the error a pull returns.
    #[error("transfer cancelled after another transfer failed")]
    Cancelled,

    /// A layer unpacked while it downloaded (`kiln pull`) could not be
    /// unpacked, or its content does not match the config's diff_id;
    /// nothing of it was kept.
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: super::unpack::UnpackError,
    },

    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
