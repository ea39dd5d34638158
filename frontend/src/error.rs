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
    ///
    /// A huge line or span (a 20 MB line is rejected, and must be shown
    /// fast) is shown clipped: miette lays out every character it is given.
    pub fn with_source(&self, file_name: &str, source: &str) -> miette::Report {
        let mut diag = miette::MietteDiagnostic::new(self.message.clone());
        let mut shown = None;
        if let Some(loc) = self.location {
            let offset = floor_char_boundary(source, loc.offset.min(source.len()));
            let len = loc.len.min(source.len() - offset);
            let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
            let line_end = source[offset..]
                .find('\n')
                .map_or(source.len(), |i| offset + i);
            let (range, text) = if len > MAX_SHOWN_SPAN || line_end - line_start > MAX_SHOWN_SPAN {
                // Only the span's first line, clipped; blank lines before it
                // keep miette's line numbers right.
                let end = floor_char_boundary(source, line_end.min(offset + MAX_SHOWN_LINE));
                let start = floor_char_boundary(
                    source,
                    line_start.max(end.saturating_sub(2 * MAX_SHOWN_LINE)),
                );
                let pad = "\n".repeat(loc.line.saturating_sub(1));
                let text = format!("{pad}{}", &source[start..end]);
                let at = pad.len() + offset.max(start) - start;
                let len = len.min(text.len() - at);
                (at..at + len, text)
            } else {
                (offset..offset + len, source.to_string())
            };
            shown = Some(text);
            diag = diag.with_label(miette::LabeledSpan::at(
                range,
                format!("line {}, column {}", loc.line, loc.column),
            ));
        }
        let text = shown.unwrap_or_else(|| source.to_string());
        miette::Report::new(diag).with_source_code(miette::NamedSource::new(file_name, text))
    }
}

/// Spans and lines longer than this (bytes) are shown clipped.
const MAX_SHOWN_SPAN: usize = 64 << 10;

/// How much of a clipped line is shown.
const MAX_SHOWN_LINE: usize = 200;

/// The largest char boundary at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl From<kiln_patternmatcher::Location> for Location {
    fn from(l: kiln_patternmatcher::Location) -> Self {
        Location {
            line: l.line,
            column: l.column,
            offset: l.offset,
            len: l.len,
        }
    }
}

/// A malformed `.dockerignore` or `--exclude` pattern.
impl From<kiln_patternmatcher::Error> for Error {
    fn from(e: kiln_patternmatcher::Error) -> Self {
        Error {
            kind: ErrorKind::Dockerignore,
            message: e.message,
            location: e.location.map(Location::from),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
