//! What a build tells whoever shows its progress.

use kiln_cache::remote;

/// One thing that happened in a build, in order.
#[derive(Debug)]
pub enum BuildEvent {
    /// A Dockerfile warning from planning (a deprecated form, a missing
    /// stage name…), with its line.
    Warning { message: String, line: usize },
    /// The solve begins: step events follow until [`BuildEvent::SolveFinished`].
    SolveStarted,
    /// A step of the solve (cached, started, output, done, failed).
    Step(kiln_solver::Event),
    /// The solve is over; `failed` when a step failed.
    SolveFinished { failed: bool },
    /// The remote cache (import and export steps, warnings).
    Cache(remote::Event),
}

/// Where a build's events go. Called from the build's threads, in order
/// for each kind; the solve's step events come from a thread of their own.
pub trait Progress: Sync {
    fn event(&self, e: BuildEvent);
}

/// Shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: BuildEvent) {}
}
