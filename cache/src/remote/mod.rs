//! The remote build cache: `kiln build --cache-to` / `--cache-from`, so CI
//! runners that start with an empty store share their work through a
//! registry (or a folder), as BuildKit's cache backends do.
//!
//! kiln's cache keys are not BuildKit's, so the format is kiln's own, but
//! shaped like BuildKit's so registries and tools accept it: an OCI image
//! manifest whose config blob ([`CONFIG_MEDIA_TYPE`]) holds the records,
//! cache key (hex) → the snapshot's layers as the worker records them
//! (diff_id, digest, size, media type, lowest first), and `layers`, the
//! diff_id of each of the manifest's layers (same order), so an import maps
//! a record's layer to the transferred blob even when the transfer is a
//! compressed variant of the stored one. Inline caches put the records in
//! the image config under [`INLINE_KEY`]; their layers are the image's.
//!
//! Import is demand-driven: before the solve only manifests and configs
//! are read ([`import`]); a local lookup miss whose key an imported record
//! has downloads just that record's missing blobs
//! ([`Imported::materialize`]: verified by digest; a plain layer sent
//! compressed is decompressed to its diff_id, so the build goes on with the
//! exporter's blobs and image ID; a compressed layer's claimed diff_id is
//! checked). A record that cannot be used is a miss and a warning.
//!
//! Export runs after the image is written ([`export`]): `mode=min` takes
//! the records of the steps the final image's layers came from (those
//! whose layers are a prefix of the result's), `mode=max` every record of
//! the solve; a step the build used without looking it up (below an
//! imported hit) exports its imported record, its blobs fetched then. A
//! plain layer whose compressed blob kiln already knows (imported with the
//! cache, or compressed by an earlier export or push) is sent as that blob,
//! never compressed again ([`reuse`]), as BuildKit keeps a layer's
//! compressed blob.
//!
//! Object stores (`type=s3`, `azblob`, `gcs`; [`object`]) keep BuildKit's
//! s3 layout: `manifests/<name>` and `blobs/<digest>` under a prefix.
//!
//! This crate is below the solver and the worker: cache keys are their hex
//! spelling and layers are [`LayerRef`]s; the caller maps its own types.
//! Progress goes to a [`Report`] the caller supplies.

mod error;
mod export;
mod import;
mod layout;
mod manifest;
mod mounts;
mod object;
mod object_options;
mod options;
mod registry;
mod reuse;

use std::time::Duration;

pub use error::Error;
pub use export::{apply_inline, collect, export, Solution};
pub use import::{import, Imported};
pub use manifest::{CONFIG_MEDIA_TYPE, INLINE_KEY};
pub use object_options::{ObjectCache, ObjectKind, Secret};
pub use options::{CacheFrom, CacheMode, CacheOptions, CacheTo};

pub use crate::layer::LayerRef;

/// Cache key (hex) → a step's layers, lowest first.
pub type Records = std::collections::BTreeMap<String, Vec<LayerRef>>;

/// One cache step (`importing cache manifest from …`, `exporting cache to
/// …`), as the progress display names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// `import` or `export`.
    pub action: &'static str,
    /// The reference or folder.
    pub target: String,
    /// The line shown for the step.
    pub name: String,
}

/// What the remote cache tells the progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step began.
    Started(StepInfo),
    /// A line about the running step.
    Note(StepInfo, String),
    /// The step finished; `detail` says what moved (for machines).
    Done {
        step: StepInfo,
        elapsed: Duration,
        detail: serde_json::Value,
    },
    /// The step failed with this message.
    Failed(StepInfo, String),
    /// Something went wrong that does not fail the build.
    Warning(String),
}

/// Where the remote cache's progress goes; the caller renders it.
pub trait Report: Sync {
    fn event(&self, e: Event);
}

impl<F: Fn(Event) + Sync> Report for F {
    fn event(&self, e: Event) {
        self(e)
    }
}
