//! Progress events: what the CLI draws (a tree on a terminal, numbered lines
//! in CI, JSON for machines). The solver emits node lifecycle events; an
//! executor adds log lines through its [`Progress`] handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::NodeId;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One thing that happened to one node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// The node's result came from the cache; it did not run.
    Cached { vertex: NodeId, name: String },
    /// The node started running.
    Started { vertex: NodeId, name: String },
    /// Output of a running node.
    Log {
        vertex: NodeId,
        stream: Stream,
        data: String,
        /// Keeps `data` counted as in flight until the event is dropped.
        #[serde(skip)]
        ticket: LogTicket,
    },
    /// Something the user should know that does not fail the node (a
    /// slow fallback, an owner that was not found), said once.
    Warning { vertex: NodeId, message: String },
    /// The node finished.
    Done {
        vertex: NodeId,
        name: String,
        #[serde(serialize_with = "secs")]
        elapsed: Duration,
    },
    /// The node failed; the build is being cancelled.
    Error {
        vertex: NodeId,
        name: String,
        message: String,
    },
}

/// The most log bytes sent and not yet consumed (drawn, or dropped) across
/// the process. The event channel is unbounded, so without this a step that
/// prints faster than the terminal (or CI pipe) takes them would queue its
/// whole output in memory; past it, [`Progress::log`] waits, and so the
/// step's own writes block on its pipe, as they would under docker.
pub const MAX_LOG_IN_FLIGHT: usize = 8 << 20;

static LOG_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A [`Event::Log`]'s share of [`MAX_LOG_IN_FLIGHT`], given back when the
/// event is dropped. A clone holds nothing (only the original is counted),
/// and tickets compare equal so events compare by their content.
#[derive(Debug, Default)]
pub struct LogTicket {
    len: usize,
}

impl LogTicket {
    fn take(len: usize) -> Self {
        LOG_IN_FLIGHT.fetch_add(len, Ordering::AcqRel);
        LogTicket { len }
    }
}

impl Clone for LogTicket {
    fn clone(&self) -> Self {
        LogTicket::default()
    }
}

impl PartialEq for LogTicket {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Drop for LogTicket {
    fn drop(&mut self) {
        if self.len > 0 {
            LOG_IN_FLIGHT.fetch_sub(self.len, Ordering::AcqRel);
        }
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// An executor's handle for reporting about the node it runs.
#[derive(Clone)]
pub struct Progress {
    pub(crate) vertex: NodeId,
    pub(crate) tx: Option<UnboundedSender<Event>>,
}

impl Progress {
    /// A handle that reports nowhere (tests, or quiet builds).
    pub fn discard(vertex: NodeId) -> Self {
        Progress { vertex, tx: None }
    }

    pub fn vertex(&self) -> NodeId {
        self.vertex
    }

    /// Reports output of the running node. Lossy UTF-8: progress is for
    /// people, the bytes themselves go into the layer.
    ///
    /// Waits while more than [`MAX_LOG_IN_FLIGHT`] bytes of output are
    /// queued and not yet drawn, so a fast-printing step is slowed to the
    /// speed of whoever reads the progress instead of filling memory. Call it
    /// from a blocking thread (executors read output there).
    pub fn log(&self, stream: Stream, data: &[u8]) {
        let Some(tx) = &self.tx else { return };
        while LOG_IN_FLIGHT.load(Ordering::Acquire) > MAX_LOG_IN_FLIGHT && !tx.is_closed() {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.send(Event::Log {
            vertex: self.vertex,
            stream,
            data: String::from_utf8_lossy(data).into_owned(),
            ticket: LogTicket::take(data.len()),
        });
    }

    /// Reports a warning about the running node (see [`Event::Warning`]).
    pub fn warn(&self, message: impl Into<String>) {
        self.send(Event::Warning {
            vertex: self.vertex,
            message: message.into(),
        });
    }

    pub(crate) fn send(&self, e: Event) {
        if let Some(tx) = &self.tx {
            // A closed receiver means nobody draws progress any more; the
            // build itself goes on.
            let _ = tx.send(e);
        }
    }
}
