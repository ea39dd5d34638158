//! The build graph and its scheduler.
//!
//! A build is a DAG of operations. The solver does not know what an operation
//! does: it knows how to name it (a blake3 digest over a canonical encoding of
//! the op and its inputs, so identical work becomes one node), how to derive
//! its cache key (the op, its inputs' cache keys, and whatever content the
//! executor says it reads), and how to run the graph: only what the targets
//! need, cache hits without touching their inputs, independent nodes
//! concurrently, each node once, everything cancelled on the first failure.
//!
//! What an op *is* and how it runs belongs to the caller, through [`Op`] and
//! [`Executor`]: this keeps the scheduler testable without sandboxes, and the
//! worker free of scheduling.

mod graph;
mod key;
pub mod ops;
mod progress;
mod scheduler;

pub use graph::{Graph, NodeId};
pub use key::Key;
pub use progress::{Event, LogTicket, Progress, Stream};
pub use scheduler::{default_jobs, solve, Executor, IgnoreCache, SolveError, SolveOptions, Solved};

/// A unit of work the solver schedules.
pub trait Op: Send + Sync + 'static {
    /// Bytes that are equal exactly when two ops do the same work on the same
    /// inputs; the node's identity and cache key are derived from them.
    fn encode(&self) -> Vec<u8>;

    /// What progress output calls this op, e.g. `[build 2/4] RUN make`.
    fn name(&self) -> String;
}
