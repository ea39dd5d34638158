//! `.dockerignore` files and the build-context walk, with the semantics of
//! moby/patternmatcher and tonistiigi/fsutil (what BuildKit uses), so the
//! same context yields the same files under kiln as under docker.
//!
//! The matcher itself lives in `kiln-patternmatcher`, shared with the
//! worker's COPY `--exclude`; this module re-exports it and reads ignore
//! files into the frontend's error type, where a malformed pattern is an
//! [`ErrorKind::Dockerignore`] error with the line and column.
//!
//! [`ErrorKind::Dockerignore`]: crate::ErrorKind::Dockerignore

pub use kiln_patternmatcher::gopath::clean as clean_path;
pub use kiln_patternmatcher::{
    locate, matches, matches_or_parent_matches, ContextFilter, Entry, IgnorePattern, MatchInfo,
    Pattern, PatternMatcher, Walk, WalkError,
};

use crate::error::Result;

/// Splits `.dockerignore` text into patterns as moby's `ReadAll` does (see
/// [`kiln_patternmatcher::read_all`]), errors as frontend errors.
pub fn read_all(text: &[u8]) -> Result<Vec<IgnorePattern>> {
    Ok(kiln_patternmatcher::read_all(text)?)
}

/// Reads and compiles a `.dockerignore` (see [`kiln_patternmatcher::parse`]);
/// a malformed pattern is an error at its line and column.
pub fn parse(text: &[u8]) -> Result<PatternMatcher> {
    Ok(kiln_patternmatcher::parse(text)?)
}
