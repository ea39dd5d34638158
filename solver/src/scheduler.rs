//! Running a graph: cache keys first, then demand-driven execution.
//!
//! 1. Keys. For every node the targets need, in dependency order:
//!    `key = blake3(op encoding, input keys…, content key)`, where the
//!    executor supplies the content key (checksums of the context files a
//!    COPY reads, the digest an image reference resolves to). Content keys
//!    are computed concurrently; nothing is executed to compute a key.
//! 2. Execution, from the targets down: a node whose key the executor has a
//!    result for is a cache hit and its inputs are never touched (a no-op
//!    rebuild runs nothing); otherwise its inputs are materialised
//!    concurrently, then it runs, at most `jobs` at a time. Each node's work
//!    is a shared future, so a node many others consume runs once. The
//!    first failure drops every future still pending, which cancels them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;

use crate::inflight::InFlight;
use crate::progress::{Event, Progress};
use crate::{Graph, Key, NodeId, Op};

/// What runs the ops: the worker, in a real build; something small in tests.
pub trait Executor: Send + Sync + 'static {
    type Op: Op;
    /// A node's result (a snapshot, a layer chain…); cloned to each consumer.
    type Output: Clone + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the node's result depends on beyond its op and its inputs' keys,
    /// e.g. the checksum of the context files it reads. `None` when nothing.
    fn content_key(
        &self,
        graph: &Graph<Self::Op>,
        node: NodeId,
    ) -> impl Future<Output = Result<Option<Key>, Self::Error>> + Send;

    /// A result recorded earlier under `key`, if the executor still has it.
    fn lookup(
        &self,
        op: &Self::Op,
        key: Key,
    ) -> impl Future<Output = Result<Option<Self::Output>, Self::Error>> + Send;

    /// Runs the op on its inputs' results (in input order). The executor
    /// records the result under `key` so a later [`Executor::lookup`] finds it.
    fn execute(
        &self,
        op: &Self::Op,
        key: Key,
        inputs: Vec<Self::Output>,
        progress: Progress,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// Decides, per node, that a cached result must not be used. It is given
/// the node as well as its op, so the caller can decide from what it knows
/// about the node beyond the op (the stage a step was written in).
pub type IgnoreCache<O> = Arc<dyn Fn(NodeId, &O) -> bool + Send + Sync>;

/// How to solve.
pub struct SolveOptions<O> {
    /// How many nodes may execute at once (at least 1).
    pub jobs: usize,
    /// Ops for which a cached result must not be used (`--no-cache`,
    /// `--no-cache-filter`). Whatever consumes such an op runs again too.
    pub ignore_cache: Option<IgnoreCache<O>>,
    /// Where progress events go.
    pub events: Option<UnboundedSender<Event>>,
    /// Shared with the other solves of this process, so a key two of them
    /// need at once is worked on by one ([`InFlight`]); `None` for a solve
    /// on its own.
    pub inflight: Option<Arc<InFlight>>,
}

impl<O> Default for SolveOptions<O> {
    fn default() -> Self {
        SolveOptions {
            jobs: default_jobs(),
            ignore_cache: None,
            events: None,
            inflight: None,
        }
    }
}

/// As many jobs as the machine has cores, as buildx does.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What a solve produced.
#[derive(Debug)]
pub struct Solved<T> {
    /// One result per target, in the order the targets were given.
    pub outputs: Vec<T>,
    /// The cache key of every node the targets needed.
    pub keys: HashMap<NodeId, Key>,
    /// Nodes whose results came from the cache.
    pub cached: Vec<NodeId>,
    /// Nodes that ran.
    pub executed: Vec<NodeId>,
}

/// Why a solve failed: the node that failed first, and its error.
#[derive(Debug, thiserror::Error)]
pub enum SolveError<E: std::error::Error + 'static> {
    #[error("{name}: {source}")]
    Failed {
        vertex: NodeId,
        name: String,
        #[source]
        source: Arc<E>,
    },
}

impl<E: std::error::Error + 'static> Clone for SolveError<E> {
    fn clone(&self) -> Self {
        match self {
            SolveError::Failed {
                vertex,
                name,
                source,
            } => SolveError::Failed {
                vertex: *vertex,
                name: name.clone(),
                source: source.clone(),
            },
        }
    }
}

impl<E: std::error::Error + 'static> SolveError<E> {
    /// The node that failed.
    pub fn vertex(&self) -> NodeId {
        match self {
            SolveError::Failed { vertex, .. } => *vertex,
        }
    }

    /// What progress called the failed node.
    pub fn name(&self) -> &str {
        match self {
            SolveError::Failed { name, .. } => name,
        }
    }

    /// The executor's own error.
    pub fn inner(&self) -> &E {
        match self {
            SolveError::Failed { source, .. } => source,
        }
    }
}

type NodeFuture<E> =
    Shared<BoxFuture<'static, Result<<E as Executor>::Output, SolveError<<E as Executor>::Error>>>>;

struct Run<E: Executor> {
    graph: Arc<Graph<E::Op>>,
    exec: Arc<E>,
    keys: HashMap<NodeId, Key>,
    ignored: HashSet<NodeId>,
    memo: Mutex<HashMap<NodeId, NodeFuture<E>>>,
    jobs: Semaphore,
    events: Option<UnboundedSender<Event>>,
    inflight: Option<Arc<InFlight>>,
    cached: Mutex<Vec<NodeId>>,
    executed: Mutex<Vec<NodeId>>,
}

/// Solves `targets` of `graph` with `exec`.
pub async fn solve<E: Executor>(
    graph: Arc<Graph<E::Op>>,
    targets: &[NodeId],
    exec: Arc<E>,
    opts: SolveOptions<E::Op>,
) -> Result<Solved<E::Output>, SolveError<E::Error>> {
    let order = graph.closure(targets);
    let progress_for = |vertex| Progress {
        vertex,
        tx: opts.events.clone(),
    };

    // Content keys, concurrently: hashing a big context must not wait for
    // another COPY's hashing.
    let content = futures::future::join_all(order.iter().map(|&n| {
        let (graph, exec) = (&graph, &exec);
        async move { (n, exec.content_key(graph, n).await) }
    }))
    .await;
    let mut content_keys = HashMap::with_capacity(content.len());
    for (n, ck) in content {
        match ck {
            Ok(ck) => {
                content_keys.insert(n, ck);
            }
            Err(e) => {
                let name = graph.op(n).name();
                progress_for(n).send(Event::Error {
                    vertex: n,
                    name: name.clone(),
                    message: e.to_string(),
                });
                return Err(SolveError::Failed {
                    vertex: n,
                    name,
                    source: Arc::new(e),
                });
            }
        }
    }

    let mut keys: HashMap<NodeId, Key> = HashMap::with_capacity(order.len());
    let mut ignored = HashSet::new();
    for &n in &order {
        let op = graph.op(n);
        let inputs = graph.inputs(n);
        let encoded = op.encode();
        let input_keys: Vec<[u8; 32]> = inputs.iter().map(|i| keys[i].0).collect();
        let ck = content_keys.get(&n).copied().flatten();
        let marker: [u8; 1] = [ck.is_some() as u8];
        let ck_bytes = ck.map(|k| k.0).unwrap_or([0; 32]);
        let parts = std::iter::once(encoded.as_slice())
            .chain(input_keys.iter().map(|k| k.as_slice()))
            .chain([&marker[..], &ck_bytes[..]]);
        keys.insert(n, Key::of_parts("kiln.cachekey.v1", parts));
        let ignore_self = opts.ignore_cache.as_ref().is_some_and(|f| f(n, op));
        if ignore_self || inputs.iter().any(|i| ignored.contains(i)) {
            ignored.insert(n);
        }
    }

    let run = Arc::new(Run {
        graph: graph.clone(),
        exec,
        keys,
        ignored,
        memo: Mutex::new(HashMap::new()),
        jobs: Semaphore::new(opts.jobs.max(1)),
        events: opts.events.clone(),
        inflight: opts.inflight.clone(),
        cached: Mutex::new(Vec::new()),
        executed: Mutex::new(Vec::new()),
    });
    let futures: Vec<_> = targets.iter().map(|&t| materialize(&run, t)).collect();
    let outputs = futures::future::try_join_all(futures).await;
    // The memo's futures hold the run itself: a node cancelled by a failure
    // elsewhere never completes, and that cycle would keep the run (and
    // the progress sender) alive forever. Break it whatever the outcome.
    lock(&run.memo).clear();
    let outputs = outputs?;
    let cached = std::mem::take(&mut *lock(&run.cached));
    let executed = std::mem::take(&mut *lock(&run.executed));
    Ok(Solved {
        outputs,
        keys: run.keys.clone(),
        cached,
        executed,
    })
}

/// A poisoned lock only means another task panicked while pushing to a list;
/// the list itself is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn materialize<E: Executor>(run: &Arc<Run<E>>, n: NodeId) -> NodeFuture<E> {
    let mut memo = lock(&run.memo);
    if let Some(f) = memo.get(&n) {
        return f.clone();
    }
    let run2 = run.clone();
    let fut = async move {
        let run = run2;
        let op = run.graph.op(n);
        let key = run.keys[&n];
        let progress = Progress {
            vertex: n,
            tx: run.events.clone(),
        };
        let fail = |e: E::Error| {
            let name = op.name();
            progress.send(Event::Error {
                vertex: n,
                name: name.clone(),
                message: e.to_string(),
            });
            SolveError::Failed {
                vertex: n,
                name,
                source: Arc::new(e),
            }
        };
        // Another solve working on the same key: wait for it, then find
        // its result below. Held until this node is done; a holder only
        // ever waits for keys its own key was derived from, so waits
        // cannot form a cycle. A step that must run anyway does not wait.
        let _flight = match &run.inflight {
            Some(f) if !run.ignored.contains(&n) => Some(f.enter(key).await),
            _ => None,
        };
        if !run.ignored.contains(&n) {
            if let Some(out) = run.exec.lookup(op, key).await.map_err(fail)? {
                progress.send(Event::Cached {
                    vertex: n,
                    name: op.name(),
                });
                lock(&run.cached).push(n);
                return Ok(out);
            }
        }
        let inputs: Vec<_> = run
            .graph
            .inputs(n)
            .into_iter()
            .map(|i| materialize(&run, i))
            .collect();
        let inputs = futures::future::try_join_all(inputs).await?;
        // The semaphore is never closed, so acquiring cannot fail; if it
        // somehow did, running unthrottled is still correct.
        let _permit = run.jobs.acquire().await.ok();
        let name = op.name();
        progress.send(Event::Started {
            vertex: n,
            name: name.clone(),
        });
        let started = Instant::now();
        let out = run
            .exec
            .execute(op, key, inputs, progress.clone())
            .await
            .map_err(fail)?;
        progress.send(Event::Done {
            vertex: n,
            name,
            elapsed: started.elapsed(),
        });
        lock(&run.executed).push(n);
        Ok(out)
    }
    .boxed()
    .shared();
    memo.insert(n, fut.clone());
    fut
}
