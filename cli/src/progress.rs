//! Drawing the solver's progress events: an indicatif tree on a terminal,
//! BuildKit-style numbered lines in CI logs, one JSON object per line for
//! machines, or nothing.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use solver::{Event, NodeId};
use tokio::sync::mpsc::UnboundedReceiver;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Mode {
    /// A terminal gets the tree, anything else plain lines.
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    /// Resolves `auto` against where progress goes (stderr).
    pub fn resolve(self) -> Mode {
        match self {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Tty,
            Mode::Auto => Mode::Plain,
            m => m,
        }
    }
}

/// Consumes events until the sender side is dropped; run it on its own
/// thread so drawing never slows the build.
pub fn spawn(mode: Mode, rx: UnboundedReceiver<Event>) -> std::thread::JoinHandle<()> {
    let mode = mode.resolve();
    std::thread::spawn(move || match mode {
        Mode::Json => drain(rx, Json),
        Mode::Plain => drain(rx, Plain::default()),
        Mode::Tty => drain(rx, Tty::new()),
        Mode::Quiet | Mode::Auto => drain(rx, |_: Event| {}),
    })
}

trait Sink {
    fn event(&mut self, e: Event);
    fn finish(&mut self) {}
}

impl<F: FnMut(Event)> Sink for F {
    fn event(&mut self, e: Event) {
        self(e)
    }
}

fn drain(mut rx: UnboundedReceiver<Event>, mut sink: impl Sink) {
    while let Some(e) = rx.blocking_recv() {
        sink.event(e);
    }
    sink.finish();
}

struct Json;

impl Sink for Json {
    fn event(&mut self, e: Event) {
        if let Ok(line) = serde_json::to_string(&e) {
            let mut out = std::io::stdout().lock();
            // Progress is best effort: a closed pipe must not fail the build.
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Numbers vertices in the order they first appear, as BuildKit does.
#[derive(Default)]
struct Numbering {
    seq: HashMap<NodeId, (usize, Instant)>,
}

impl Numbering {
    fn get(&mut self, v: NodeId) -> (usize, Instant) {
        let next = self.seq.len() + 1;
        *self.seq.entry(v).or_insert((next, Instant::now()))
    }
}

#[derive(Default)]
struct Plain {
    numbers: Numbering,
}

impl Sink for Plain {
    fn event(&mut self, e: Event) {
        let mut err = std::io::stderr().lock();
        let _ = match e {
            Event::Cached { vertex, name } => {
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} {name}\n#{n} CACHED\n")
            }
            Event::Started { vertex, name } => {
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} {name}")
            }
            Event::Log { vertex, data, .. } => {
                let (n, t0) = self.numbers.get(vertex);
                let at = t0.elapsed().as_secs_f64();
                data.lines()
                    .try_for_each(|l| writeln!(err, "#{n} {at:.3} {l}"))
            }
            Event::Done {
                vertex, elapsed, ..
            } => {
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} DONE {:.1}s\n", elapsed.as_secs_f64())
            }
            Event::Error {
                vertex, message, ..
            } => {
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} ERROR: {message}\n")
            }
        };
    }
}

struct Tty {
    multi: MultiProgress,
    bars: HashMap<NodeId, (ProgressBar, String)>,
    started: Instant,
}

impl Tty {
    fn new() -> Self {
        Tty {
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn bar(&mut self, vertex: NodeId, name: &str) -> ProgressBar {
        let multi = &self.multi;
        let (bar, _) = self.bars.entry(vertex).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(" {spinner} {prefix} {msg} {elapsed:>4}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            (bar, name.to_string())
        });
        bar.clone()
    }
}

impl Sink for Tty {
    fn event(&mut self, e: Event) {
        match e {
            Event::Cached { vertex, name } => {
                let bar = self.bar(vertex, &name);
                bar.set_style(
                    ProgressStyle::with_template(" ✔ {prefix} CACHED")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.finish();
            }
            Event::Started { vertex, name } => {
                self.bar(vertex, &name);
            }
            Event::Log { vertex, data, .. } => {
                if let Some((bar, _)) = self.bars.get(&vertex) {
                    if let Some(last) = data.lines().rev().find(|l| !l.trim().is_empty()) {
                        let short: String = last.chars().take(80).collect();
                        bar.set_message(format!("│ {short}"));
                    }
                }
            }
            Event::Done {
                vertex,
                name,
                elapsed,
            } => {
                let bar = self.bar(vertex, &name);
                bar.set_style(
                    ProgressStyle::with_template(" ✔ {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.finish_with_message(format!("{:.1}s", elapsed.as_secs_f64()));
            }
            Event::Error {
                vertex,
                name,
                message,
            } => {
                let bar = self.bar(vertex, &name);
                bar.set_style(
                    ProgressStyle::with_template(" ✘ {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.abandon_with_message(format!("ERROR: {message}"));
            }
        }
    }

    fn finish(&mut self) {
        for (bar, _) in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        let _ = self.multi.println(format!(
            " finished in {:.1}s",
            self.started.elapsed().as_secs_f64()
        ));
    }
}
