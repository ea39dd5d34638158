//! Stopping and signalling running containers (`docker stop`, `kill`).

use std::io;
use std::time::{Duration, Instant};

use super::{now, proc_start_time, Container, ContainerError, Result, Status, Store};
use crate::sys;

fn wait_dead(pid: i32, start: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if proc_start_time(pid) != Some(start) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: i32, start: u64, sig: libc::c_int) {
    if proc_start_time(pid) == Some(start) {
        // The start time check keeps a reused pid from being signalled.
        let _ = sys::kill(pid, sig);
    }
}

/// Sends `sig` to a running container's pid 1 (pid 1 of a namespace gets
/// only signals it handles, SIGKILL aside, as in docker).
pub fn kill(c: &Container, sig: libc::c_int) {
    if let (true, Some(pid), Some(start)) = (c.is_alive(), c.pid, c.start_time) {
        signal(pid, start, sig);
    }
}

/// `docker stop`: SIGTERM, SIGKILL after `timeout`, then waits for the
/// helper to record the exit (recording it itself if the helper is gone).
pub fn stop(store: &Store, id: &str, timeout: Duration) -> Result<Container> {
    stop_with(store, id, Some(timeout), None)
}

/// `docker stop [-t T] [-s SIG]`: the signal (default: the container's stop
/// signal, else SIGTERM), SIGKILL after the timeout (default: its
/// `--stop-timeout`, else 10 s; negative: wait forever); no restart policy
/// brings it back. Waits for the helper to record the exit.
pub fn stop_with(
    store: &Store,
    id: &str,
    timeout: Option<Duration>,
    sig: Option<libc::c_int>,
) -> Result<Container> {
    let c = store.update(id, |c| c.life.manually_stopped = true)?;
    let timeout = timeout.unwrap_or(match c.life.stop_timeout {
        Some(t) if t < 0 => Duration::from_secs(u64::MAX / 4),
        Some(t) => Duration::from_secs(t as u64),
        None => Duration::from_secs(10),
    });
    let sig = sig.unwrap_or_else(|| c.life.stop_signal());
    if let (true, Some(pid), Some(start)) = (c.is_alive(), c.pid, c.start_time) {
        if c.life.paused {
            super::pause::thaw(&c);
        }
        signal(pid, start, sig);
        if !wait_dead(pid, start, timeout) {
            signal(pid, start, libc::SIGKILL);
            wait_dead(pid, start, Duration::from_secs(60));
        }
    }
    wait_recorded(store, id)
}

/// Waits (a few seconds at most) for a dead container's helper to write its
/// final state; writes it when the helper is gone.
fn wait_recorded(store: &Store, id: &str) -> Result<Container> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = match store.load(id) {
            Ok(c) => c,
            // Removed by its own helper (`--rm`).
            Err(ContainerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NotFound(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        if c.status != Status::Running {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            return store.update(id, |c| {
                if c.status == Status::Running {
                    c.status = Status::Exited;
                    c.exit_code = Some(137);
                    c.finished = Some(now());
                }
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kiln stop KEY`: the container named by `key` (name or ID prefix)
/// stopped. One its own `--rm` removed as it stopped is stopped all the
/// same.
pub fn stop_named(store: &Store, key: &str, timeout: Duration) -> Result<()> {
    let c = store.find(key)?;
    match stop(store, &c.id, timeout) {
        Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `kiln rm KEY`: the container named by `key` removed (its changes and
/// log). A running one is refused unless `force`, which kills it first.
pub fn remove_named(store: &Store, key: &str, force: bool) -> Result<()> {
    let c = store.find(key)?;
    if c.is_alive() {
        if !force {
            return Err(ContainerError::RemoveRunning(c.id));
        }
        kill(&c, libc::SIGKILL);
        match stop(store, &c.id, Duration::from_secs(0)) {
            Ok(_) | Err(ContainerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    store.remove(&c.id)
}
