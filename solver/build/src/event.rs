//! What a build tells whoever shows its progress.

use kiln_cache::remote;

/// One thing that happened in a build, in order.
#[derive(Debug)]
pub enum BuildEvent {
    /// A Dockerfile warning from planning (a deprecated form, a missing
    /// stage name…), with its line.
    Warning { message: String, line: usize },
    /// A build check's warning (BuildKit's lint rules), raised before the
    /// solve; the CLI lists them after the build as BuildKit does.
    Check(kiln_frontend::lint::Warning),
    /// The solve begins: step events follow until [`BuildEvent::SolveFinished`].
    SolveStarted,
    /// A step of the solve (cached, started, output, done, failed).
    Step(kiln_solver::Event),
    /// The solve is over; `failed` names the step that failed, if one did.
    SolveFinished { failed: Option<FailedStep> },
    /// The remote cache (import and export steps, warnings).
    Cache(remote::Event),
}

/// The step that failed a solve, so the caller can show BuildKit's box
/// around its last lines (always, when the step's Dockerfile lines follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStep {
    /// The step's display name (`[3/4] RUN false`).
    pub step: String,
    /// Whether the error carries the step's Dockerfile lines
    /// ([`crate::BuildError::Solve`]'s `lines`).
    pub at_source: bool,
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
