//! Transfer events for whoever draws progress.
//!
//! The client only reports; the CLI decides between indicatif bars on a
//! terminal and plain lines in a log, and a library caller (the build, the
//! remote cache) may ignore it all with [`NoProgress`].

/// How a blob ended up where it had to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Bytes were transferred.
    Transferred,
    /// The destination already had it.
    Exists,
    /// The registry linked it from another repository (cross-repo mount).
    Mounted,
}

/// Receives transfer events; called from several concurrent transfers.
pub trait Progress: Send + Sync {
    /// A blob transfer starts; `total` is its size in bytes.
    fn start(&self, digest: &str, kind: &str, total: u64);
    /// `bytes` more bytes of `digest` moved.
    fn advance(&self, digest: &str, bytes: u64);
    /// The blob is done.
    fn done(&self, digest: &str, outcome: Outcome);
    /// A line for the user (resolved digests, "pushed tag …").
    fn message(&self, line: &str);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str, _: Outcome) {}
    fn message(&self, _: &str) {}
}
