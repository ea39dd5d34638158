//! The worker with the `--cache-from` records behind its own
//! ([`kiln_cache::remote`] reads and fetches them): a local miss whose key
//! an imported record has becomes a hit once that record's blobs are in
//! the store.

use std::sync::Arc;

use kiln_cache::remote::Imported;
use kiln_solver::ops::BuildOp;
use kiln_solver::{Executor, Graph, Key, NodeId, Progress};
use kiln_worker::executor::{ExecutorError, SharedWorker, Snapshot};

/// An [`Executor`] that asks the imported records when the worker's own
/// cache misses.
pub struct RemoteCached {
    pub inner: SharedWorker,
    pub imported: Arc<Imported>,
}

impl Executor for RemoteCached {
    type Op = BuildOp;
    type Output = Snapshot;
    type Error = ExecutorError;

    async fn content_key(
        &self,
        graph: &Graph<BuildOp>,
        node: NodeId,
    ) -> Result<Option<Key>, ExecutorError> {
        self.inner.content_key(graph, node).await
    }

    async fn lookup(&self, op: &BuildOp, key: Key) -> Result<Option<Snapshot>, ExecutorError> {
        if let Some(hit) = self.inner.lookup(op, key).await? {
            return Ok(Some(hit));
        }
        let Some(layers) = self.imported.record(&key.to_hex()) else {
            return Ok(None);
        };
        match self.imported.materialize(layers).await {
            Ok(layers) => {
                let snap = Snapshot {
                    layers,
                    context: None,
                };
                self.inner.0.write_record(key, &snap)?;
                Ok(Some(snap))
            }
            Err(e) => {
                self.imported
                    .warn(format!("cache record {key} not usable, step runs: {e}"));
                Ok(None)
            }
        }
    }

    async fn execute(
        &self,
        op: &BuildOp,
        key: Key,
        inputs: Vec<Snapshot>,
        progress: Progress,
    ) -> Result<Snapshot, ExecutorError> {
        self.inner.execute(op, key, inputs, progress).await
    }
}

/// The folder names of the cache mounts (`RUN --mount=type=cache`) of the
/// steps `nodes`, as the worker names them, for `cache-mounts=true`
/// exports and their restore on import. A mount seeded `from` another
/// stage is named by that stage's layers, known only once solved: it is
/// left out (it would start from its seed anyway).
pub fn cache_mount_names(graph: &Graph<BuildOp>, nodes: &[NodeId]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .filter_map(|n| match graph.op(*n) {
            BuildOp::Exec(e) => Some(e),
            _ => None,
        })
        .flat_map(|e| e.mounts.iter())
        .filter(|m| matches!(m, kiln_solver::ops::ExecMount::Cache { from: None, .. }))
        .filter_map(|m| kiln_worker::executor::cache_mount_name(m, &[]))
        .collect();
    names.sort();
    names.dedup();
    names
}
