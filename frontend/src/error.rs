//! The frontend's one error type. Every error that comes from a Dockerfile or a
//! `.dockerignore` carries where it happened, so the CLI can show the line with
//! a caret; the CLI attaches the source text with [`Error::with_source`].

use serde::Serialize;

/// What went wrong, coarsely, so callers and tests can match on it without
/// parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorKind {
    /// The file has no instructions at all.
    Empty,
    /// Malformed text: quotes, continuations, heredocs, directives, JSON.
    Syntax,
    /// A line longer than BuildKit accepts.
    LineTooLong,
    /// An instruction keyword kiln does not know.
    UnknownInstruction,
    /// A `--flag` the instruction does not take.
    UnknownFlag,
    /// A flag or argument with a bad value, or a wrong number of arguments.
    InvalidArgument,
    /// Word expansion failed (`${V:?msg}`, unterminated quote, …).
    Expansion,
    /// Resolving stages, targets or bases failed.
    Plan,
    /// A `.dockerignore` pattern is malformed.
    Dockerignore,
}

/// Where an error sits: 1-based line and column, and the byte range to
/// underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub len: usize,
}

/// A frontend error: a kind, a message in BuildKit's words where BuildKit has
/// words for it, and a location when the input has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub location: Option<Location>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            location: None,
        }
    }

    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// A miette report that shows `file:line:column`, the line and a caret.
    pub fn with_source(&self, file_name: &str, source: &str) -> miette::Report {
        let mut diag = miette::MietteDiagnostic::new(self.message.clone());
        if let Some(loc) = self.location {
            let offset = loc.offset.min(source.len());
            let len = loc.len.min(source.len() - offset);
            diag = diag.with_label(miette::LabeledSpan::at(
                offset..offset + len,
                format!("line {}, column {}", loc.line, loc.column),
            ));
        }
        miette::Report::new(diag)
            .with_source_code(miette::NamedSource::new(file_name, source.to_string()))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
