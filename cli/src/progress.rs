//! Drawing the solver's progress events: an indicatif tree on a terminal,
//! BuildKit-style numbered lines in CI logs, one JSON object per line for
//! machines, or nothing.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_solver::{Event, NodeId};
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
    /// BuildKit's raw `SolveStatus` stream on stderr (`crate::rawjson`).
    #[value(name = "rawjson")]
    Rawjson,
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
/// thread so drawing never slows the build. Returns the step that failed
/// first, with its last lines of output, for the error report.
pub fn spawn(mode: Mode, rx: UnboundedReceiver<Event>) -> std::thread::JoinHandle<Option<Failure>> {
    let mode = mode.resolve();
    std::thread::spawn(move || match mode {
        Mode::Json => drain(rx, Json),
        Mode::Rawjson => {
            let mut raw = crate::rawjson::RawJson::default();
            drain(rx, move |e: Event| raw.event(&e))
        }
        Mode::Plain => drain(rx, Plain::default()),
        Mode::Tty => drain(rx, Tty::new()),
        Mode::Quiet | Mode::Auto => drain(rx, |_: Event| {}),
    })
}

/// How many lines of a failed step's output the error report repeats
/// (BuildKit shows the tail of the log above its error too).
const TAIL_LINES: usize = 10;

/// The longest line of a step's output kept or printed whole, in bytes, as
/// docker splits log records at 16 KiB: a longer line (a step printing
/// gigabytes without a newline) is printed in pieces of this size, so
/// progress never holds more than this per step.
pub const MAX_LINE: usize = 16 << 10;

/// A step's output cut into lines: complete lines, and pieces of
/// [`MAX_LINE`] bytes of an overlong one, each without its line ending.
#[derive(Default)]
struct LineBuf {
    /// The start of the current, unterminated line (under [`MAX_LINE`]).
    buf: String,
}

impl LineBuf {
    /// Adds output, handing every line (or piece) it completes to `line`.
    fn push<E>(
        &mut self,
        data: &str,
        mut line: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = data;
        while let Some(i) = rest.find('\n') {
            self.append(&rest[..i], &mut line)?;
            line(self.buf.trim_end_matches('\r'))?;
            self.buf.clear();
            rest = &rest[i + 1..];
        }
        self.append(rest, &mut line)
    }

    /// Adds text without a newline, emitting full [`MAX_LINE`] pieces.
    fn append<E>(
        &mut self,
        mut text: &str,
        line: &mut impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.buf.len() + text.len() > MAX_LINE {
            let mut cut = MAX_LINE.saturating_sub(self.buf.len()).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.push_str(&text[..cut]);
            text = &text[cut..];
            line(&self.buf)?;
            self.buf.clear();
        }
        self.buf.push_str(text);
        Ok(())
    }

    /// The unterminated rest, if any; the buffer is left empty.
    fn take(&mut self) -> Option<String> {
        Some(std::mem::take(&mut self.buf)).filter(|r| !r.is_empty())
    }
}

/// The step that failed first and the end of what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub name: String,
    pub tail: Vec<String>,
}

impl Failure {
    /// BuildKit's box: the step, then its last lines, between rules.
    pub fn render(&self) -> String {
        let mut s = format!("------\n > {}:\n", self.name);
        for l in &self.tail {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("------\n");
        s
    }
}

/// The last lines each running step printed, until one fails.
#[derive(Default)]
struct Tails {
    lines: HashMap<NodeId, std::collections::VecDeque<String>>,
    partial: HashMap<NodeId, LineBuf>,
    failure: Option<Failure>,
}

impl Tails {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Log { vertex, data, .. } => {
                let buf = self.partial.entry(*vertex).or_default();
                let tail = self.lines.entry(*vertex).or_default();
                let _ = buf.push(data, |line| {
                    tail.push_back(line.to_string());
                    if tail.len() > TAIL_LINES {
                        tail.pop_front();
                    }
                    Ok::<(), ()>(())
                });
            }
            Event::Done { vertex, .. } | Event::Cached { vertex, .. } => {
                self.lines.remove(vertex);
                self.partial.remove(vertex);
            }
            Event::Error { vertex, name, .. } if self.failure.is_none() => {
                let mut tail: Vec<String> =
                    self.lines.remove(vertex).map(Vec::from).unwrap_or_default();
                if let Some(rest) = self.partial.remove(vertex).and_then(|mut b| b.take()) {
                    tail.push(rest);
                    if tail.len() > TAIL_LINES {
                        tail.remove(0);
                    }
                }
                self.failure = Some(Failure {
                    name: name.clone(),
                    tail,
                });
            }
            _ => {}
        }
    }
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

fn drain(mut rx: UnboundedReceiver<Event>, mut sink: impl Sink) -> Option<Failure> {
    let mut tails = Tails::default();
    while let Some(e) = rx.blocking_recv() {
        tails.event(&e);
        sink.event(e);
    }
    sink.finish();
    tails.failure
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

/// Plain lines, as BuildKit's `--progress plain` prints them. Output is
/// printed a whole line at a time: a line a step writes in several pieces
/// (`printf a; sleep 1; echo b`) is held until its newline, or until the
/// step ends, and then shows as one line; a line longer than [`MAX_LINE`]
/// shows as several.
#[derive(Default)]
struct Plain {
    numbers: Numbering,
    partial: HashMap<NodeId, LineBuf>,
}

impl Plain {
    /// Prints what is left of a step's last, unterminated line.
    fn flush(&mut self, err: &mut impl Write, vertex: NodeId) -> std::io::Result<()> {
        match self.partial.remove(&vertex).and_then(|mut b| b.take()) {
            Some(rest) => {
                let (n, t0) = self.numbers.get(vertex);
                let at = t0.elapsed().as_secs_f64();
                writeln!(err, "#{n} {at:.3} {}", rest.trim_end_matches('\r'))
            }
            _ => Ok(()),
        }
    }
}

impl Sink for Plain {
    fn event(&mut self, e: Event) {
        let mut err = std::io::stderr().lock();
        let _ = self.write(&mut err, e);
    }

    fn finish(&mut self) {
        let mut err = std::io::stderr().lock();
        let pending: Vec<NodeId> = self.partial.keys().copied().collect();
        for v in pending {
            let _ = self.flush(&mut err, v);
        }
    }
}

impl Plain {
    fn write(&mut self, err: &mut impl Write, e: Event) -> std::io::Result<()> {
        match e {
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
                let buf = self.partial.entry(vertex).or_default();
                buf.push(&data, |line| writeln!(err, "#{n} {at:.3} {line}"))
            }
            Event::Warning { vertex, message } => {
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} WARNING: {message}")
            }
            Event::Done {
                vertex, elapsed, ..
            } => {
                self.flush(err, vertex)?;
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} DONE {:.1}s\n", elapsed.as_secs_f64())
            }
            Event::Error {
                vertex, message, ..
            } => {
                self.flush(err, vertex)?;
                let (n, _) = self.numbers.get(vertex);
                writeln!(err, "#{n} ERROR: {message}\n")
            }
        }
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
            Event::Warning { vertex, message } => {
                let name = self
                    .bars
                    .get(&vertex)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                let _ = self.multi.println(format!(" ! WARNING: {name}: {message}"));
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

/// Draws a build's events ([`kiln_build::BuildEvent`]) in `mode`: the
/// solve's step events go to a drawer thread ([`spawn`]) for the length of
/// the solve; Dockerfile warnings, the remote cache's steps and the failed
/// step's last lines are printed as they come.
pub struct BuildProgress {
    mode: Mode,
    drawer: std::sync::Mutex<Option<Drawer>>,
    /// The build checks' warnings, listed after the build.
    checks: std::sync::Mutex<Vec<kiln_frontend::lint::Warning>>,
}

type Drawer = (
    tokio::sync::mpsc::UnboundedSender<Event>,
    std::thread::JoinHandle<Option<Failure>>,
);

impl BuildProgress {
    pub fn new(mode: Mode) -> BuildProgress {
        BuildProgress {
            mode,
            drawer: std::sync::Mutex::new(None),
            checks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The build checks' warnings so far, in the order raised.
    pub fn checks(&self) -> Vec<kiln_frontend::lint::Warning> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn drawer(&self) -> std::sync::MutexGuard<'_, Option<Drawer>> {
        self.drawer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remote cache's steps as BuildKit shows its `importing cache
    /// manifest from …` and `exporting cache to …` vertices: numbered lines
    /// in plain and tty mode, `{"event":"cache",…}` objects in JSON.
    fn cache(&self, e: kiln_cache::remote::Event) {
        use kiln_cache::remote::Event as C;
        use serde_json::json;
        let mode = self.mode.resolve();
        let lines = matches!(mode, Mode::Plain | Mode::Tty);
        match e {
            C::Started(s) => match mode {
                Mode::Json => json_line(json!({
                    "event": "cache", "action": s.action, "ref": s.target, "name": s.name,
                    "status": "started",
                })),
                _ if lines => eprintln!("#0 {}", s.name),
                _ => {}
            },
            C::Note(_, line) if lines => eprintln!("#0 {line}"),
            C::Note(..) => {}
            C::Done {
                step,
                elapsed,
                detail,
            } => {
                let secs = elapsed.as_secs_f64();
                match mode {
                    Mode::Json => json_line(json!({
                        "event": "cache", "action": step.action, "ref": step.target,
                        "name": step.name, "status": "done", "elapsed": secs, "detail": detail,
                    })),
                    _ if lines => eprintln!("#0 DONE {secs:.1}s\n"),
                    _ => {}
                }
            }
            C::Failed(s, message) => match mode {
                Mode::Json => json_line(json!({
                    "event": "cache", "action": s.action, "ref": s.target,
                    "name": s.name, "status": "error", "message": message,
                })),
                _ if lines => eprintln!("#0 ERROR: {message}\n"),
                _ => {}
            },
            C::Warning(message) => match mode {
                Mode::Json => json_line(json!({"event": "warning", "message": message})),
                _ => eprintln!("WARNING: {message}"),
            },
        }
    }
}

fn json_line(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // Progress is best effort, as the solver's events.
    let _ = writeln!(out, "{v}");
}

impl kiln_build::Progress for BuildProgress {
    fn event(&self, e: kiln_build::BuildEvent) {
        use kiln_build::BuildEvent as B;
        match e {
            B::Warning { message, line } => {
                if self.mode != Mode::Quiet {
                    eprintln!("WARNING: {message} (line {line})");
                }
            }
            B::Check(w) => {
                if self.mode == Mode::Json {
                    json_line(crate::commands::check::event_json(&w));
                }
                self.checks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(w);
            }
            B::SolveStarted => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                *self.drawer() = Some((tx, spawn(self.mode, rx)));
            }
            B::Step(ev) => {
                if let Some((tx, _)) = self.drawer().as_ref() {
                    let _ = tx.send(ev);
                }
            }
            B::SolveFinished { failed } => {
                let Some((tx, handle)) = self.drawer().take() else {
                    return;
                };
                // The drawer finishes its output once the sender is gone.
                drop(tx);
                let failure = handle.join().ok().flatten();
                // The failed step's last lines above the error, as BuildKit
                // shows them, whatever the display (JSON has them as
                // events); the box stands even empty when the step's
                // Dockerfile lines follow it.
                let shown = failure.filter(|f| {
                    failed
                        .as_ref()
                        .is_some_and(|s| s.step == f.name && (s.at_source || !f.tail.is_empty()))
                });
                if let Some(f) = shown {
                    if self.mode != Mode::Json {
                        eprint!("{}", f.render());
                    }
                }
            }
            B::Cache(c) => self.cache(c),
        }
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;
    use kiln_solver::Stream;

    /// Two distinct vertices (NodeIds only come from a graph).
    fn vertices() -> (NodeId, NodeId) {
        use kiln_solver::ops::BuildOp;
        let mut g = kiln_solver::Graph::<BuildOp>::new();
        let a = g.add(BuildOp::Scratch, &[]);
        (a, g.add(BuildOp::Merge, &[a]))
    }

    fn log(vertex: NodeId, data: &str) -> Event {
        Event::Log {
            vertex,
            stream: Stream::Stdout,
            data: data.into(),
            ticket: Default::default(),
        }
    }

    #[test]
    fn the_failed_step_keeps_its_last_lines() {
        let (one, two) = vertices();
        let mut t = Tails::default();
        let mut text = String::new();
        for i in 0..15 {
            text.push_str(&format!("line {i}\n"));
        }
        // Output arrives in arbitrary chunks, other steps interleaved.
        for chunk in text.as_bytes().chunks(7) {
            t.event(&log(one, std::str::from_utf8(chunk).unwrap()));
            t.event(&log(two, "other\n"));
        }
        t.event(&log(one, "no newline"));
        t.event(&Event::Error {
            vertex: one,
            name: "[2/2] RUN x".into(),
            message: "exit code: 1".into(),
        });
        let f = t.failure.clone().unwrap();
        assert_eq!(f.tail.len(), TAIL_LINES);
        assert_eq!(f.tail.first().unwrap(), "line 6");
        assert_eq!(f.tail.last().unwrap(), "no newline");
        assert!(f.render().starts_with("------\n > [2/2] RUN x:\nline 6\n"));
        // Only the first failure is reported.
        t.event(&Event::Error {
            vertex: two,
            name: "other".into(),
            message: "cancelled".into(),
        });
        assert_eq!(t.failure.unwrap().name, "[2/2] RUN x");
    }

    /// Plain output prints whole lines: pieces of one line arrive as one
    /// line, other steps' lines may come between, and a last line without
    /// a newline is printed when its step ends.
    #[test]
    fn plain_joins_a_line_written_in_pieces() {
        let (one, two) = vertices();
        let mut p = Plain::default();
        let mut out = Vec::new();
        let started = |vertex, name: &str| Event::Started {
            vertex,
            name: name.into(),
        };
        for e in [
            started(one, "RUN a"),
            started(two, "RUN b"),
            log(one, "a"),
            log(two, "other\n"),
            log(one, "b\nc"),
            log(one, "d\r\n"),
            log(one, "tail"),
            Event::Done {
                vertex: one,
                name: "RUN a".into(),
                elapsed: Duration::from_millis(5),
            },
        ] {
            p.write(&mut out, e).unwrap();
        }
        p.finish();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                // Drop the elapsed-time column of log lines.
                let f: Vec<&str> = l.splitn(3, ' ').collect();
                match f.as_slice() {
                    [n, t, rest] if t.contains('.') && t.parse::<f64>().is_ok() => {
                        format!("{n} {rest}")
                    }
                    _ => l.to_string(),
                }
            })
            .collect();
        assert_eq!(
            lines,
            [
                "#1 RUN a",
                "#2 RUN b",
                "#2 other",
                "#1 ab",
                "#1 cd",
                "#1 tail",
                "#1 DONE 0.0s"
            ],
            "{text}"
        );
    }

    /// A line without a newline is cut into MAX_LINE pieces as it arrives,
    /// never held whole, in Plain output and in a failed step's tail alike.
    #[test]
    fn overlong_lines_are_cut_at_max_line() {
        let (one, _) = vertices();
        let mut lb = LineBuf::default();
        let mut got = Vec::new();
        let chunk = "é".repeat(5000); // 10000 bytes of 2-byte characters
        for _ in 0..10 {
            lb.push(&chunk, |l| {
                got.push(l.len());
                Ok::<(), ()>(())
            })
            .unwrap();
            assert!(lb.buf.len() <= MAX_LINE);
        }
        lb.push("x\r\nend", |l| {
            got.push(l.len());
            Ok::<(), ()>(())
        })
        .unwrap();
        let (last, full) = got.split_last().unwrap();
        assert!(
            full.iter().all(|n| (MAX_LINE - 3..=MAX_LINE).contains(n)),
            "{got:?}"
        );
        assert_eq!(*last, 100_000 + 1 - full.iter().sum::<usize>());
        assert_eq!(got.iter().sum::<usize>(), 100_000 + 1);
        assert_eq!(lb.take().as_deref(), Some("end"));

        let mut t = Tails::default();
        for _ in 0..100 {
            t.event(&log(one, &"a".repeat(10_000)));
        }
        t.event(&Event::Error {
            vertex: one,
            name: "RUN x".into(),
            message: "exit code: 1".into(),
        });
        let f = t.failure.unwrap();
        assert_eq!(f.tail.len(), TAIL_LINES);
        assert!(f.tail.iter().all(|l| l.len() <= MAX_LINE));
    }
}
