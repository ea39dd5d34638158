//! Two solves at once sharing one [`InFlight`] (what a `Builder` does for
//! `kiln compose build`'s services): a step both graphs hold runs once, the
//! other solve takes it from the cache; what differs still runs in both,
//! at the same time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_solver::{solve, Executor, Graph, InFlight, Key, NodeId, Op, Progress, SolveOptions};

#[derive(Clone)]
struct Step {
    name: &'static str,
    sleep_ms: u64,
}

impl Op for Step {
    fn encode(&self) -> Vec<u8> {
        format!("{}|{}", self.name, self.sleep_ms).into_bytes()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// One store of results both solves see, as the build cache on disk.
#[derive(Default)]
struct Shared {
    cache: Mutex<HashMap<Key, String>>,
    runs: Mutex<Vec<&'static str>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct Exec(Arc<Shared>);

impl Executor for Exec {
    type Op = Step;
    type Output = String;
    type Error = Never;

    async fn content_key(&self, _: &Graph<Step>, _: NodeId) -> Result<Option<Key>, Never> {
        Ok(None)
    }

    async fn lookup(&self, _op: &Step, key: Key) -> Result<Option<String>, Never> {
        Ok(self.0.cache.lock().unwrap().get(&key).cloned())
    }

    async fn execute(
        &self,
        op: &Step,
        key: Key,
        inputs: Vec<String>,
        _: Progress,
    ) -> Result<String, Never> {
        self.0.runs.lock().unwrap().push(op.name);
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(op.sleep_ms)).await;
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        let out = format!("{}({})", op.name, inputs.join(","));
        self.0.cache.lock().unwrap().insert(key, out.clone());
        Ok(out)
    }
}

/// base → shared (slow) → `last`.
fn graph(last: &'static str) -> (Arc<Graph<Step>>, NodeId) {
    let mut g = Graph::new();
    let base = g.add(
        Step {
            name: "base",
            sleep_ms: 0,
        },
        &[],
    );
    let shared = g.add(
        Step {
            name: "shared",
            sleep_ms: 300,
        },
        &[base],
    );
    let top = g.add(
        Step {
            name: last,
            sleep_ms: 300,
        },
        &[shared],
    );
    (Arc::new(g), top)
}

async fn both(inflight: Option<Arc<InFlight>>) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let (ga, a) = graph("a");
    let (gb, b) = graph("b");
    let opts = || SolveOptions {
        jobs: 4,
        inflight: inflight.clone(),
        ..Default::default()
    };
    let (ta, tb) = ([a], [b]);
    let (ra, rb) = tokio::join!(
        solve(ga, &ta, Arc::new(Exec(shared.clone())), opts()),
        solve(gb, &tb, Arc::new(Exec(shared.clone())), opts()),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.outputs, ["a(shared(base()))"]);
    assert_eq!(rb.outputs, ["b(shared(base()))"]);
    // The solve that waited took the shared step as cached (and never
    // looked at what it stands on).
    let cached = ra.cached.len() + rb.cached.len();
    match inflight {
        Some(_) => assert_eq!(cached, 1),
        None => assert_eq!(cached, 0),
    }
    shared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_two_solves_share_runs_once() {
    let s = both(Some(InFlight::new())).await;
    let mut runs = s.runs.lock().unwrap().clone();
    runs.sort();
    assert_eq!(runs, ["a", "b", "base", "shared"]);
    // The steps that differ still ran side by side.
    assert_eq!(s.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_table_both_solves_run_it() {
    let s = both(None).await;
    let mut runs = s.runs.lock().unwrap().clone();
    runs.sort();
    assert_eq!(runs, ["a", "b", "base", "base", "shared", "shared"]);
}
