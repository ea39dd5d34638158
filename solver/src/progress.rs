//! Progress events: what the CLI draws (a tree on a terminal, numbered lines
//! in CI, JSON for machines). The solver emits node lifecycle events; an
//! executor adds log lines through its [`Progress`] handle.

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
    pub fn log(&self, stream: Stream, data: &[u8]) {
        self.send(Event::Log {
            vertex: self.vertex,
            stream,
            data: String::from_utf8_lossy(data).into_owned(),
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
