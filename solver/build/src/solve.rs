//! The solve: the lowered graph run by the worker (behind the imported
//! remote cache, when there is one), its step events sent to the caller.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_cache::remote::Imported;
use kiln_cache::{LayerRef, Root};
use kiln_frontend::lower::{self, ImageMeta};
use kiln_frontend::plan::Platform;
use kiln_frontend::source_map::SourceMap;
use kiln_solver::ops::BuildOp;
use kiln_solver::{Executor, NodeId, SolveOptions};
use kiln_worker::executor::{SharedWorker, Snapshot, Worker, WorkerOptions};

use crate::export::Built;
use crate::remote::RemoteCached;
use crate::{BuildError, BuildEvent, FailedStep, Progress};

/// Everything the solve needs.
pub(crate) struct Job<'a> {
    pub root: &'a Root,
    pub rt: &'a tokio::runtime::Runtime,
    pub graph: kiln_solver::Graph<BuildOp>,
    pub targets: Vec<(Platform, NodeId, ImageMeta)>,
    /// `--jobs`: `None` caps kiln's own work at the cores (the worker's
    /// slots) and leaves RUN processes uncapped, as BuildKit does; `N`
    /// caps both.
    pub jobs: Option<usize>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub context: PathBuf,
    /// The `--build-context` folders by their worker context name.
    pub named_contexts: Vec<(String, PathBuf)>,
    pub network: kiln_solver::ops::Network,
    /// Records imported with `--cache-from`.
    pub remote: Option<Arc<Imported>>,
    /// `--secret` and `--ssh`.
    pub secrets: kiln_worker::secrets::Secrets,
    pub allow_insecure: bool,
    pub helper_exe: PathBuf,
    /// `--snapshotter`.
    pub snapshotter: kiln_worker::snapshotter::Snapshotter,
    /// Where each node was written: `--no-cache-filter` picks steps by
    /// their stage, and a failed step is shown at its lines.
    pub sources: SourceMap,
    /// The keys the builder's other solves are working on now
    /// ([`kiln_solver::InFlight`]).
    pub inflight: Arc<kiln_solver::InFlight>,
}

/// The results and the cache keys (hex) of a solve.
pub(crate) type Solved = (Vec<Built>, Vec<String>);

/// Solves the graph with `exec`; a failed step is
/// [`BuildError::Solve`]. With the results come the cache keys of the
/// solve (for the cache export).
fn solve_with<E>(
    job: Job<'_>,
    exec: E,
    layers_of: impl Fn(&E::Output) -> Vec<LayerRef>,
    progress: &dyn Progress,
) -> Result<Solved, BuildError>
where
    E: Executor<Op = BuildOp>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let filter = job.no_cache_filter.clone();
    let ignore_cache: Option<kiln_solver::IgnoreCache<BuildOp>> = if job.no_cache {
        Some(Arc::new(|_, _: &BuildOp| true))
    } else if !filter.is_empty() {
        let sources = job.sources.clone();
        Some(Arc::new(move |n, _: &BuildOp| {
            sources.in_stages(n, &filter)
        }))
    } else {
        None
    };
    let opts = SolveOptions {
        jobs: job
            .jobs
            .map_or(tokio::sync::Semaphore::MAX_PERMITS, |n| n.max(1)),
        ignore_cache,
        events: Some(tx),
        inflight: Some(job.inflight.clone()),
    };
    let nodes: Vec<NodeId> = job.targets.iter().map(|(_, n, _)| *n).collect();
    let graph = Arc::new(job.graph);
    progress.event(BuildEvent::SolveStarted);
    let solved = std::thread::scope(|s| {
        // Events are handed on from a thread of their own, so showing them
        // never slows the build.
        s.spawn(|| {
            while let Some(e) = rx.blocking_recv() {
                progress.event(BuildEvent::Step(e));
            }
        });
        // The sender goes with the options when the solve returns.
        job.rt
            .block_on(kiln_solver::solve(graph, &nodes, Arc::new(exec), opts))
    });
    let solved = match solved {
        Ok(s) => {
            progress.event(BuildEvent::SolveFinished { failed: None });
            s
        }
        Err(e) => {
            // A failed step is shown at the Dockerfile lines it was written
            // on; the error then leaves out the step's name, which both
            // have shown.
            let source = job.sources.snippet(e.vertex());
            progress.event(BuildEvent::SolveFinished {
                failed: Some(FailedStep {
                    step: e.name().to_string(),
                    at_source: source.is_some(),
                }),
            });
            let message = match source {
                Some(_) => e.inner().to_string(),
                None => e.to_string(),
            };
            return Err(BuildError::Solve {
                message,
                lines: source,
            });
        }
    };
    let all_cached = solved.executed.is_empty();
    let keys: Vec<String> = solved.keys.values().map(|k| k.to_hex()).collect();
    let built = job
        .targets
        .into_iter()
        .zip(solved.outputs.iter())
        .map(|((platform, _, meta), out)| Built {
            platform,
            layers: layers_of(out),
            meta,
            all_cached,
        })
        .collect();
    Ok((built, keys))
}

/// Runs the job with the worker executor over this machine's sandboxes and
/// the store.
pub(crate) fn run_worker(job: Job<'_>, progress: &dyn Progress) -> Result<Solved, BuildError> {
    let mut contexts = HashMap::new();
    let ctx = std::fs::canonicalize(&job.context).unwrap_or_else(|_| job.context.clone());
    contexts.insert(lower::MAIN_CONTEXT.to_string(), ctx);
    contexts.extend(job.named_contexts.iter().cloned());
    let opts = WorkerOptions {
        contexts,
        default_network: match job.network {
            kiln_solver::ops::Network::None => kiln_worker::sandbox::Network::None,
            kiln_solver::ops::Network::Host => kiln_worker::sandbox::Network::Host,
            kiln_solver::ops::Network::Default => kiln_worker::sandbox::Network::Private,
        },
        helper_exe: job.helper_exe.clone(),
        snapshotter: job.snapshotter,
        cpu_slots: job.jobs.unwrap_or_else(kiln_solver::default_jobs),
        secrets: job.secrets.clone(),
        allow_insecure: job.allow_insecure,
    };
    let w =
        Worker::new(job.root.clone(), opts).map_err(BuildError::context("starting the worker"))?;
    let layers_of = |s: &Snapshot| s.layers.clone();
    let inner = SharedWorker(Arc::new(w));
    match job.remote.clone() {
        Some(imported) => solve_with(job, RemoteCached { inner, imported }, layers_of, progress),
        None => solve_with(job, inner, layers_of, progress),
    }
}
