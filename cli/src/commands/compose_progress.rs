//! The progress of several service builds running at once (`kiln compose
//! build`, `up --build`): one stream of BuildKit's plain lines, each step
//! named with its service as docker compose shows them (`#5 [web base 2/3]
//! RUN …`), numbered across all the builds. A step two services share runs
//! once (the builder's solves share their in-flight keys): it shows under
//! the service that ran it, and as `CACHED` under the other.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use kiln_build::BuildEvent;
use kiln_solver::{Event, NodeId};

use crate::progress::MAX_LINE;

/// What every service's build prints into.
pub(crate) struct Services {
    quiet: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `#N` and the step's start, by (build, vertex): vertices of two
    /// builds' graphs may have the same id.
    numbers: HashMap<(usize, NodeId), (usize, Instant)>,
    /// The unterminated end of each step's output.
    partial: HashMap<(usize, NodeId), String>,
}

impl State {
    fn number(&mut self, at: (usize, NodeId)) -> (usize, Instant) {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(at).or_insert((next, Instant::now()))
    }

    /// Prints the rest of a step's last line, if any.
    fn flush(&mut self, err: &mut impl Write, at: (usize, NodeId)) -> std::io::Result<()> {
        match self.partial.remove(&at).filter(|r| !r.is_empty()) {
            Some(rest) => {
                let (n, t0) = self.number(at);
                let line = rest.trim_end_matches('\r');
                writeln!(err, "#{n} {:.3} {line}", t0.elapsed().as_secs_f64())
            }
            None => Ok(()),
        }
    }
}

impl Services {
    pub(crate) fn new(quiet: bool) -> Services {
        Services {
            quiet,
            state: Mutex::new(State::default()),
        }
    }

    /// The progress of build number `index`, building `service`.
    pub(crate) fn service(&self, index: usize, service: &str) -> Service<'_> {
        Service {
            all: self,
            index,
            service: service.to_string(),
        }
    }

    fn step(&self, index: usize, service: &str, e: Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not fail a build.
        let _ = write_step(&mut state, &mut err, index, service, e);
    }
}

/// A step's name with its service: `[base 2/3] RUN x` becomes
/// `[web base 2/3] RUN x`, and a name without brackets `[web] name`.
fn with_service(service: &str, name: &str) -> String {
    match name.strip_prefix('[') {
        Some(rest) => format!("[{service} {rest}"),
        None => format!("[{service}] {name}"),
    }
}

fn write_step(
    state: &mut State,
    err: &mut impl Write,
    index: usize,
    service: &str,
    e: Event,
) -> std::io::Result<()> {
    match e {
        Event::Cached { vertex, name } => {
            let (n, _) = state.number((index, vertex));
            writeln!(err, "#{n} {}\n#{n} CACHED\n", with_service(service, &name))
        }
        Event::Started { vertex, name } => {
            let (n, _) = state.number((index, vertex));
            writeln!(err, "#{n} {}", with_service(service, &name))
        }
        Event::Log { vertex, data, .. } => {
            let at = (index, vertex);
            let (n, t0) = state.number(at);
            let secs = t0.elapsed().as_secs_f64();
            let buf = state.partial.entry(at).or_default();
            buf.push_str(&data);
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                let line = line.trim_end_matches('\n').trim_end_matches('\r');
                writeln!(err, "#{n} {secs:.3} {line}")?;
            }
            if buf.len() > MAX_LINE {
                let line = std::mem::take(buf);
                writeln!(err, "#{n} {secs:.3} {line}")?;
            }
            Ok(())
        }
        Event::Warning { vertex, message } => {
            let (n, _) = state.number((index, vertex));
            writeln!(err, "#{n} WARNING: {message}")
        }
        Event::Done {
            vertex, elapsed, ..
        } => {
            state.flush(err, (index, vertex))?;
            let (n, _) = state.number((index, vertex));
            writeln!(err, "#{n} DONE {:.1}s\n", elapsed.as_secs_f64())
        }
        Event::Error {
            vertex, message, ..
        } => {
            state.flush(err, (index, vertex))?;
            let (n, _) = state.number((index, vertex));
            writeln!(err, "#{n} ERROR: {message}\n")
        }
    }
}

/// One service's build, printing into [`Services`].
pub(crate) struct Service<'a> {
    all: &'a Services,
    index: usize,
    service: String,
}

impl kiln_build::Progress for Service<'_> {
    fn event(&self, e: BuildEvent) {
        use kiln_cache::remote::Event as C;
        if self.all.quiet {
            return;
        }
        let service = &self.service;
        match e {
            BuildEvent::Step(e) => self.all.step(self.index, service, e),
            BuildEvent::Warning { message, line } => {
                eprintln!("WARNING: [{service}] {message} (line {line})")
            }
            BuildEvent::Check(w) => eprintln!("WARNING: [{service}] {}", w.short()),
            BuildEvent::Cache(C::Started(s)) => {
                eprintln!("#0 {}", with_service(service, &s.name))
            }
            BuildEvent::Cache(C::Failed(_, message)) => {
                eprintln!("#0 [{service}] ERROR: {message}")
            }
            BuildEvent::Cache(C::Warning(message)) => {
                eprintln!("WARNING: [{service}] {message}")
            }
            BuildEvent::Cache(_) | BuildEvent::SolveStarted | BuildEvent::SolveFinished { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_named_with_their_service() {
        assert_eq!(
            with_service("web", "[base 2/3] RUN sleep 2"),
            "[web base 2/3] RUN sleep 2"
        );
        assert_eq!(
            with_service("web", "[internal] load build context"),
            "[web internal] load build context"
        );
        assert_eq!(with_service("db", "exporting"), "[db] exporting");
    }

    #[test]
    fn two_builds_number_their_steps_apart() {
        use kiln_solver::ops::BuildOp;
        let mut g = kiln_solver::Graph::<BuildOp>::new();
        let v = g.add(BuildOp::Scratch, &[]);
        let mut state = State::default();
        let mut out = Vec::new();
        for (i, s) in [(0, "a"), (1, "b")] {
            let e = Event::Started {
                vertex: v,
                name: "[1/1] RUN x".into(),
            };
            write_step(&mut state, &mut out, i, s, e).unwrap();
        }
        let log = Event::Log {
            vertex: v,
            stream: kiln_solver::Stream::Stdout,
            data: "one\ntw".into(),
            ticket: Default::default(),
        };
        write_step(&mut state, &mut out, 1, "b", log).unwrap();
        let done = Event::Done {
            vertex: v,
            name: "[1/1] RUN x".into(),
            elapsed: std::time::Duration::from_millis(100),
        };
        write_step(&mut state, &mut out, 1, "b", done).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], "#1 [a 1/1] RUN x");
        assert_eq!(lines[1], "#2 [b 1/1] RUN x");
        assert!(lines[2].starts_with("#2 ") && lines[2].ends_with(" one"));
        assert!(lines[3].starts_with("#2 ") && lines[3].ends_with(" tw"));
        assert_eq!(lines[4], "#2 DONE 0.1s");
    }
}
