//! HEALTHCHECK: run by the container's helper (the attempt process that
//! pumps its output) on docker's schedule, each probe an exec into the
//! container's namespaces (`kiln container-helper exec`, as `kiln exec`),
//! its result kept in the record's `health` as docker's `State.Health`:
//! status `starting|healthy|unhealthy`, the failing streak and the last
//! five results.
//!
//! The helper is single-threaded and waits in poll(2) for the container's
//! output; [`HealthRunner::tick`] is called whenever that poll wakes and
//! says how long it may sleep next, so probes need no thread or timer.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::helper::{EXEC_SPEC_ENV, HELPER_SUBCOMMAND};
use super::life::{now_ns, rfc3339_ns, Health, HealthConfig, HealthResult};
use super::run::{exec_spec, ExecOptions};
use super::Store;
use crate::reexec::{spawn_helper, HelperStdio};

/// Docker keeps this many results.
const MAX_LOG_ENTRIES: usize = 5;
/// And this much of each probe's output.
const MAX_OUTPUT: usize = 4096;

struct Probe {
    child: Child,
    began: Instant,
    start_ns: i64,
    output: PathBuf,
}

/// The check of one run of a container.
pub struct HealthRunner {
    store: Store,
    id: String,
    cfg: HealthConfig,
    argv: Vec<String>,
    output: PathBuf,
    started: Instant,
    next: Instant,
    running: Option<Probe>,
}

impl HealthRunner {
    /// The runner for container `id` just started, `None` when it has no
    /// (enabled) check.
    pub fn new(store: &Store, id: &str) -> Option<HealthRunner> {
        let c = store.load(id).ok()?;
        let cfg = c.life.healthcheck.clone()?;
        let argv = cfg.argv()?;
        let now = Instant::now();
        let first = if cfg.start_period() > Duration::ZERO {
            cfg.start_interval()
        } else {
            cfg.interval()
        };
        Some(HealthRunner {
            store: store.clone(),
            id: id.to_string(),
            output: store.dir_of(id).join("health.out"),
            cfg,
            argv,
            started: now,
            next: now + first,
            running: None,
        })
    }

    /// Starts a probe when one is due, collects one that ended or ran out
    /// of time; returns how many milliseconds until it needs calling again.
    pub fn tick(&mut self) -> i32 {
        let now = Instant::now();
        if let Some(p) = self.running.as_mut() {
            match p.child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().unwrap_or(-1);
                    let p = self.running.take();
                    if let Some(p) = p {
                        let out = read_output(&p.output);
                        self.record(p.start_ns, code, out);
                    }
                }
                Ok(None) if now.duration_since(p.began) >= self.cfg.timeout() => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    let start_ns = p.start_ns;
                    self.running = None;
                    let msg = format!(
                        "Health check exceeded timeout ({})",
                        go_duration(self.cfg.timeout())
                    );
                    self.record(start_ns, -1, msg);
                }
                Ok(None) => return 50,
                Err(e) => {
                    let start_ns = p.start_ns;
                    self.running = None;
                    self.record(start_ns, -1, e.to_string());
                }
            }
        }
        let now = Instant::now();
        if self.running.is_none() && now >= self.next {
            match self.spawn() {
                Ok(p) => self.running = Some(p),
                Err(msg) => {
                    self.record(now_ns(), -1, msg);
                }
            }
            if self.running.is_some() {
                return 50;
            }
        }
        let wait = self.next.saturating_duration_since(Instant::now());
        i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX)
    }

    fn spawn(&mut self) -> Result<Probe, String> {
        let c = self.store.load(&self.id).map_err(|e| e.to_string())?;
        let spec = exec_spec(
            &c,
            ExecOptions {
                command: self.argv.clone(),
                ..ExecOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let out = File::create(&self.output).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let start_ns = now_ns();
        let child = spawn_helper(
            &exe,
            &[HELPER_SUBCOMMAND, "exec"],
            &[(EXEC_SPEC_ENV, &json)],
            HelperStdio {
                stdin: Stdio::null(),
                stdout: Stdio::from(out),
                stderr: Stdio::from(err),
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Probe {
            child,
            began: Instant::now(),
            start_ns,
            output: self.output.clone(),
        })
    }

    /// Docker's handleProbeResult, then the next probe scheduled.
    fn record(&mut self, start_ns: i64, code: i32, output: String) {
        let in_start_period = self.started.elapsed() < self.cfg.start_period();
        let retries = self.cfg.retries();
        let result = HealthResult {
            start: rfc3339_ns(start_ns),
            end: rfc3339_ns(now_ns()),
            exit_code: code,
            output,
        };
        let mut status = String::new();
        let _ = self.store.update(&self.id, |c| {
            let h = c.life.health.get_or_insert_with(|| Health {
                status: "starting".into(),
                ..Health::default()
            });
            if code == 0 {
                h.failing_streak = 0;
                h.status = "healthy".into();
            } else if !(h.status == "starting" && in_start_period) {
                h.failing_streak += 1;
                if h.failing_streak >= retries {
                    h.status = "unhealthy".into();
                }
            }
            h.log.push(result);
            let extra = h.log.len().saturating_sub(MAX_LOG_ENTRIES);
            h.log.drain(..extra);
            status = h.status.clone();
        });
        let gap = if status == "starting" && in_start_period {
            self.cfg.start_interval()
        } else {
            self.cfg.interval()
        };
        self.next = Instant::now() + gap;
    }
}

impl Drop for HealthRunner {
    fn drop(&mut self) {
        if let Some(p) = self.running.as_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

fn read_output(path: &PathBuf) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(MAX_OUTPUT as u64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A duration as Go prints one (`30s`, `1m30s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    let (h, m) = ((secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64);
    let s = secs % 60.0;
    let s_text = if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s}s")
    };
    match (h, m) {
        (0, 0) => s_text,
        (0, m) => format!("{m}m{s_text}"),
        (h, m) => format!("{h}h{m}m{s_text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
    }
}
