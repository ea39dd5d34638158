//! The crate's one error: a malformed pattern (or `.dockerignore` line),
//! with where it was written when the pattern came from a file.

/// Where a pattern sits in its `.dockerignore`: 1-based line and column,
/// and the byte range to underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub len: usize,
}

/// A malformed pattern, in moby's words, so the message reads as docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub message: String,
    pub location: Option<Location>,
}

impl Error {
    /// An error without a location (patterns given on a command line or in
    /// an op).
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            location: None,
        }
    }

    /// The same error, pointing at `location`.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
