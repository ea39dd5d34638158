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
//! The op vocabulary and the graph live in `kiln-llb` (re-exported here,
//! so `kiln_solver::ops::…` keeps working) because they need no async
//! runtime and the frontend uses them without the scheduler.
//!
//! What an op *is* and how it runs belongs to the caller, through [`Op`] and
//! [`Executor`]: this keeps the scheduler testable without sandboxes, and the
//! worker free of scheduling.

mod inflight;
mod progress;
mod scheduler;

pub use inflight::InFlight;
pub use kiln_llb::{mode, ops, Graph, Key, NodeId, Op};
pub use progress::{Event, LogTicket, Progress, Stream};
pub use scheduler::{default_jobs, solve, Executor, IgnoreCache, SolveError, SolveOptions, Solved};
