//! moby's patternmatcher, as BuildKit uses it for `.dockerignore` and for
//! COPY `--exclude`: one implementation, so the build context and COPY
//! filters can never disagree, used by the frontend and by the worker
//! without either depending on the other.
//!
//! - [`read_all`] / [`parse`]: a `.dockerignore` text into patterns / a
//!   [`PatternMatcher`]; malformed patterns are [`Error`]s with the line
//!   and column.
//! - [`PatternMatcher`]: `*`, `?`, `**`, classes, `!` exceptions, last match
//!   wins, parent directories.
//! - [`locate`]: which ignore file a build uses (`NAME.dockerignore` first).
//! - [`ContextFilter`] / [`Walk`]: the filtered, streaming context walk
//!   (tonistiigi/fsutil's semantics).
//! - [`gopath`] and [`gostr`]: the Go library behaviour the above (and
//!   BuildKit's messages) depend on: `path.Clean`, `path.Dir`,
//!   `filepath.Match`, `strconv.Quote`, rune decoding.

mod error;
mod glob;
pub mod gopath;
mod goregex;
pub mod gostr;
mod ignorefile;
mod matcher;
mod pattern;
mod walk;

pub use error::{Error, Location, Result};
pub use glob::{go_match, BadPattern};
pub use ignorefile::{locate, parse, read_all, IgnorePattern};
pub use matcher::{matches, matches_or_parent_matches, MatchInfo, PatternMatcher};
pub use pattern::Pattern;
pub use walk::{ContextFilter, Entry, Walk, WalkError};
