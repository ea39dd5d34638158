//! The worker: what actually executes a build step on this machine.
//!
//! Scheduling lives in the solver; here live the mechanics that need root and
//! the kernel: a sandbox for RUN (namespaces entered by a re-executed, single
//! threaded helper so we never fork a multi-threaded process), copy-on-write
//! snapshots on kernel overlayfs, and the conversion between overlay upper
//! dirs and OCI layer tars (whiteouts in both directions).

pub mod container;
pub mod diff;
pub mod emulation;
pub mod executor;
pub mod fileops;
pub mod fuse_overlay;
pub mod git_source;
pub mod http_source;
pub mod key_agent;
pub mod layer_unpack;
pub mod layers;
pub mod network;
pub mod phase_timing;
/// The RUN steps' namespace pool, where it always was (now in [`network`]).
pub use network::netpool;
pub mod reexec;
pub mod resources;
pub mod sandbox;
pub mod seccomp;
pub mod secrets;
pub mod slots;
pub mod snapshot;
pub mod snapshotter;
pub mod sparse;
// The one module allowed to call the kernel directly: thin, safe wrappers
// (its own inner attribute lifts the workspace's lint).
mod sys;
mod tmpname;
pub mod userns;
pub mod users;
