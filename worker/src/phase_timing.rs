//! An opt-in timing log of a step's phases (`KILN_TIMING=1`): one line on
//! stderr per phase, `kiln-timing: <phase> <ms>`. It exists to find where a
//! snapshotter's fixed cost per RUN goes (mount, exec, unmount, diff)
//! without a profiler; off, it costs one cached environment check.

use std::sync::OnceLock;
use std::time::Instant;

/// Whether `KILN_TIMING` is set (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KILN_TIMING").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// A phase being timed: logs its duration when [`Phase::end`] is called
/// (or when dropped, so an early return still shows).
#[derive(Debug)]
pub struct Phase {
    name: &'static str,
    start: Option<Instant>,
}

impl Phase {
    /// Starts timing `name` (a no-op unless [`enabled`]).
    pub fn start(name: &'static str) -> Phase {
        Phase {
            name,
            start: enabled().then(Instant::now),
        }
    }

    /// Ends the phase and logs it.
    pub fn end(mut self) {
        self.log();
    }

    fn log(&mut self) {
        if let Some(t) = self.start.take() {
            eprintln!(
                "kiln-timing: {} {:.2}",
                self.name,
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.log();
    }
}
