//! Unpacking layers while they download.
//!
//! `docker pull` ends with every layer unpacked; a pull that only stores
//! blobs leaves the unpacking (gzip decode and tar extraction, most of the
//! time of a large base) to the first build or run, which then re-reads
//! each blob from disk. A pull given a [`LayerUnpacker`] hands every
//! layer's bytes, as they arrive, to a [`LayerSink`] beside the blob
//! writer, so download, sha256, decompression and extraction overlap.
//!
//! The store crate does not know how layers are unpacked (the worker owns
//! the layer directories and the tar rules); it only drives these traits,
//! and keeps the order that makes a failure leave nothing behind: a layer
//! is moved into place ([`PendingLayer::commit`]) only after its blob's
//! digest was verified and every blob of the pull was.

use crate::layer::LayerRef;

use super::manifest::Platform;

/// Why unpacking a layer failed: the worker's own error, boxed, since the
/// store crate does not know its type.
pub type UnpackError = Box<dyn std::error::Error + Send + Sync>;

/// Unpacks the layers a pull downloads; given to
/// [`super::PullOptions::unpack`] by the worker.
pub trait LayerUnpacker: Send + Sync {
    /// Whether the layers of an image for `platform` should be unpacked:
    /// those of the platform the caller is about to run or build for, not
    /// every platform of a multi-platform index.
    fn wants(&self, platform: &Platform) -> bool;

    /// Starts unpacking `layer`; `None` when it is unpacked already (only
    /// its blob is then fetched).
    fn start(&self, layer: &LayerRef) -> Result<Option<Box<dyn LayerSink>>, UnpackError>;
}

/// Takes one layer's compressed bytes as they arrive.
pub trait LayerSink: Send {
    /// The next bytes of the blob, in order. Blocks while the unpacker is
    /// behind, so a slow disk slows the download instead of filling memory.
    /// After a failure the sink ignores what follows (the download goes on,
    /// so that a wrong blob is reported as a wrong digest, the clearer
    /// error) and [`LayerSink::finish`] returns the failure.
    fn write(&mut self, chunk: &[u8]);

    /// Every byte was given and the blob matched its digest: waits for the
    /// unpacking to end and checks the layer against its diff_id.
    fn finish(self: Box<Self>) -> Result<Box<dyn PendingLayer>, UnpackError>;
}

/// A layer unpacked and verified, not yet in place. Dropping it removes
/// it, as dropping a sink does with what it unpacked so far.
pub trait PendingLayer: Send {
    /// Moves the layer into place (where another process may have put the
    /// same layer meanwhile: then theirs stays).
    fn commit(self: Box<Self>) -> Result<(), UnpackError>;
}
