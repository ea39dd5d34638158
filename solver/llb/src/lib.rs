//! kiln's build-op vocabulary (BuildKit calls its equivalent LLB): what the
//! frontend lowers a Dockerfile into, what the solver schedules and what the
//! worker executes.
//!
//! It is pure data plus the content-addressed graph that holds it, with no
//! async runtime, so the frontend (and anything else that only *describes*
//! builds) can use it without depending on the scheduler:
//! - [`ops`]: the operations (`BuildOp`, `Exec`, `FileOp`, …).
//! - [`Graph`] / [`NodeId`]: the DAG, where identical work is one node.
//! - [`Key`]: blake3 content keys, a node's identity and cache key.
//! - [`mode`]: `--chmod` values, parsed by the frontend (which reports a bad
//!   one with its line) and applied by the worker.
//! - [`Platform`]: re-exported from `kiln-platform`.

mod graph;
mod key;
pub mod mode;
pub mod ops;

pub use graph::{Graph, NodeId};
pub use key::Key;
pub use kiln_platform::Platform;

/// A unit of work the solver schedules.
pub trait Op: Send + Sync + 'static {
    /// Bytes that are equal exactly when two ops do the same work on the same
    /// inputs; the node's identity and cache key are derived from them.
    fn encode(&self) -> Vec<u8>;

    /// What progress output calls this op, e.g. `[build 2/4] RUN make`.
    fn name(&self) -> String;
}
