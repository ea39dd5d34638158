//! `.dockerignore` files and the build-context walk, with the semantics of
//! moby/patternmatcher and tonistiigi/fsutil (what BuildKit uses), so the
//! same context yields the same files under kiln as under docker.
//!
//! - [`read_all`] / [`parse`]: a `.dockerignore` text into patterns / a
//!   [`PatternMatcher`]; malformed patterns are [`ErrorKind::Dockerignore`]
//!   errors with the line and column.
//! - [`PatternMatcher`]: `*`, `?`, `**`, classes, `!` exceptions, last match
//!   wins, parent directories.
//! - [`locate`]: which ignore file a build uses (`NAME.dockerignore` first).
//! - [`ContextFilter`] / [`Walk`]: the filtered, streaming context walk.
//!
//! [`ErrorKind::Dockerignore`]: crate::ErrorKind::Dockerignore

mod clean;
mod glob;
mod goregex;
mod ignorefile;
mod matcher;
mod pattern;
mod walk;

pub use clean::clean as clean_path;
pub use ignorefile::{locate, parse, read_all, IgnorePattern};
pub use matcher::{matches, matches_or_parent_matches, MatchInfo, PatternMatcher};
pub use pattern::Pattern;
pub use walk::{ContextFilter, Entry, Walk, WalkError};
