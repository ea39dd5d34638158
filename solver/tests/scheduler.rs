//! The scheduler against a small in-memory executor: what runs, what is
//! cached, how many at once, and what a failure cancels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_solver::{solve, Event, Executor, Graph, Key, NodeId, Op, Progress, SolveOptions};

#[derive(Clone)]
struct Step {
    name: &'static str,
    sleep_ms: u64,
    fail: bool,
    /// Reads this "context file" (its content is part of the cache key).
    reads: Option<&'static str>,
}

fn step(name: &'static str) -> Step {
    Step {
        name,
        sleep_ms: 0,
        fail: false,
        reads: None,
    }
}

impl Op for Step {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{}|{}|{}|{:?}",
            self.name, self.sleep_ms, self.fail, self.reads
        )
        .into_bytes()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("step {0} failed")]
struct StepFailed(String);

#[derive(Default)]
struct Exec {
    cache: Mutex<HashMap<Key, String>>,
    context: Mutex<HashMap<&'static str, String>>,
    runs: Mutex<Vec<&'static str>>,
    finished: Mutex<Vec<&'static str>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Executor for Exec {
    type Op = Step;
    type Output = String;
    type Error = StepFailed;

    async fn content_key(
        &self,
        graph: &Graph<Step>,
        node: NodeId,
    ) -> Result<Option<Key>, StepFailed> {
        Ok(graph.op(node).reads.map(|file| {
            let content = self
                .context
                .lock()
                .unwrap()
                .get(file)
                .cloned()
                .unwrap_or_default();
            Key::of_parts("test", [content.as_bytes()])
        }))
    }

    async fn lookup(&self, _op: &Step, key: Key) -> Result<Option<String>, StepFailed> {
        Ok(self.cache.lock().unwrap().get(&key).cloned())
    }

    async fn execute(
        &self,
        op: &Step,
        key: Key,
        inputs: Vec<String>,
        progress: Progress,
    ) -> Result<String, StepFailed> {
        self.runs.lock().unwrap().push(op.name);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        progress.log(
            kiln_solver::Stream::Stdout,
            format!("running {}\n", op.name).as_bytes(),
        );
        tokio::time::sleep(Duration::from_millis(op.sleep_ms)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if op.fail {
            return Err(StepFailed(op.name.to_string()));
        }
        self.finished.lock().unwrap().push(op.name);
        let out = format!("{}({})", op.name, inputs.join(","));
        self.cache.lock().unwrap().insert(key, out.clone());
        Ok(out)
    }
}

fn opts(jobs: usize) -> SolveOptions<Step> {
    SolveOptions {
        jobs,
        ..Default::default()
    }
}

fn runs(e: &Exec) -> Vec<&'static str> {
    let mut r = e.runs.lock().unwrap().clone();
    r.sort();
    r
}

#[tokio::test]
async fn identical_work_runs_once_and_outputs_follow_inputs() {
    let mut g = Graph::new();
    let base = g.add(step("base"), &[]);
    let a = g.add(step("a"), &[base]);
    let a_again = g.add(step("a"), &[base]);
    let b = g.add(step("b"), &[base, a_again]);
    let g = Arc::new(g);
    let exec = Arc::new(Exec::default());
    let solved = solve(g, &[a, b], exec.clone(), opts(4)).await.unwrap();
    assert_eq!(solved.outputs, vec!["a(base())", "b(base(),a(base()))"]);
    assert_eq!(runs(&exec), vec!["a", "b", "base"]);
    assert_eq!(solved.executed.len(), 3);
}

#[tokio::test]
async fn a_cached_target_touches_none_of_its_inputs() {
    let mut g = Graph::new();
    let base = g.add(step("base"), &[]);
    let mid = g.add(step("mid"), &[base]);
    let top = g.add(step("top"), &[mid]);
    let g = Arc::new(g);
    let exec = Arc::new(Exec::default());
    solve(g.clone(), &[top], exec.clone(), opts(2))
        .await
        .unwrap();
    exec.runs.lock().unwrap().clear();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let solved = solve(
        g,
        &[top],
        exec.clone(),
        SolveOptions {
            events: Some(tx),
            ..opts(2)
        },
    )
    .await
    .unwrap();
    assert!(runs(&exec).is_empty());
    assert_eq!(solved.cached, vec![top], "only the target is looked up");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(
        events,
        vec![Event::Cached {
            vertex: top,
            name: "top".into()
        }]
    );
}

#[tokio::test]
async fn editing_a_context_file_reruns_exactly_its_readers_and_their_dependents() {
    let mut g = Graph::new();
    let base = g.add(step("base"), &[]);
    let copy_a = g.add(
        Step {
            reads: Some("a.txt"),
            ..step("copy a")
        },
        &[base],
    );
    let copy_b = g.add(
        Step {
            reads: Some("b.txt"),
            ..step("copy b")
        },
        &[base],
    );
    let run = g.add(step("run"), &[copy_a]);
    let fin = g.add(step("final"), &[run, copy_b]);
    let g = Arc::new(g);
    let exec = Arc::new(Exec::default());
    exec.context.lock().unwrap().insert("a.txt", "one".into());
    exec.context.lock().unwrap().insert("b.txt", "two".into());
    solve(g.clone(), &[fin], exec.clone(), opts(2))
        .await
        .unwrap();
    assert_eq!(
        runs(&exec),
        vec!["base", "copy a", "copy b", "final", "run"]
    );

    exec.runs.lock().unwrap().clear();
    exec.context
        .lock()
        .unwrap()
        .insert("b.txt", "changed".into());
    let solved = solve(g, &[fin], exec.clone(), opts(2)).await.unwrap();
    assert_eq!(runs(&exec), vec!["copy b", "final"]);
    let mut cached = solved.cached.clone();
    cached.sort();
    assert_eq!(
        cached,
        vec![base, run],
        "run is a hit and never needs copy a"
    );
}

#[tokio::test]
async fn independent_nodes_run_concurrently_up_to_jobs() {
    for jobs in [1, 4] {
        let mut g = Graph::new();
        let base = g.add(step("base"), &[]);
        let names = ["s1", "s2", "s3", "s4"];
        let stages: Vec<_> = names
            .iter()
            .map(|n| {
                g.add(
                    Step {
                        sleep_ms: 100,
                        ..step(n)
                    },
                    &[base],
                )
            })
            .collect();
        let fin = g.add(step("final"), &stages);
        let exec = Arc::new(Exec::default());
        solve(Arc::new(g), &[fin], exec.clone(), opts(jobs))
            .await
            .unwrap();
        assert_eq!(exec.max_in_flight.load(Ordering::SeqCst), jobs);
    }
}

#[tokio::test]
async fn the_first_failure_cancels_the_rest_and_names_the_step() {
    let mut g = Graph::new();
    let slow = g.add(
        Step {
            sleep_ms: 300,
            ..step("slow")
        },
        &[],
    );
    let bad = g.add(
        Step {
            fail: true,
            sleep_ms: 10,
            ..step("bad")
        },
        &[],
    );
    let after = g.add(step("after"), &[slow, bad]);
    let exec = Arc::new(Exec::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let err = solve(
        Arc::new(g),
        &[after],
        exec.clone(),
        SolveOptions {
            events: Some(tx),
            ..opts(4)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.vertex(), bad);
    assert_eq!(err.to_string(), "bad: step bad failed");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        exec.finished.lock().unwrap().is_empty(),
        "slow was cancelled, after never ran"
    );
    let mut saw_error = false;
    let end = loop {
        match rx.try_recv() {
            Ok(Event::Error { vertex, name, .. }) => {
                assert_eq!((vertex, name.as_str()), (bad, "bad"));
                saw_error = true;
            }
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(saw_error);
    // Every sender is gone once the failed solve returned: a progress
    // display waiting for the end of the events must not wait forever.
    assert_eq!(end, tokio::sync::mpsc::error::TryRecvError::Disconnected);
}

#[tokio::test]
async fn ignoring_the_cache_of_one_op_reruns_it_and_its_dependents_only() {
    let mut g = Graph::new();
    let base = g.add(step("base"), &[]);
    let build = g.add(step("build"), &[base]);
    let fin = g.add(step("final"), &[build]);
    let g = Arc::new(g);
    let exec = Arc::new(Exec::default());
    solve(g.clone(), &[fin], exec.clone(), opts(2))
        .await
        .unwrap();
    exec.runs.lock().unwrap().clear();
    let filter: kiln_solver::IgnoreCache<Step> = Arc::new(|_, s: &Step| s.name == "build");
    solve(
        g,
        &[fin],
        exec.clone(),
        SolveOptions {
            ignore_cache: Some(filter),
            ..opts(2)
        },
    )
    .await
    .unwrap();
    assert_eq!(runs(&exec), vec!["build", "final"]);
}
