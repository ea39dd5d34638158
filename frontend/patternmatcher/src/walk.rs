//! The build-context walk (tonistiigi/fsutil's filtered `Walk`): which files
//! of a context directory a build sees, in the order BuildKit sends them.
//!
//! Directories are read in byte order of their names, parents come before
//! children, symlinks are reported as themselves (never followed). An
//! excluded directory is still descended into when a `!` exception could
//! re-include something below it; such a directory is reported lazily, just
//! before the first entry under it that is included, exactly as fsutil does.
//! The walk is an iterator so callers can stream (tar, checksum) without
//! holding the whole tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::gostr::go_string;
use crate::matcher::{MatchInfo, PatternMatcher};
use crate::pattern::Pattern;

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (`lstat`, `readdir`).
        op: &'static str,
        /// The absolute path it failed on.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A pattern turned out malformed when it was first used.
    #[error(transparent)]
    Pattern(#[from] Error),
}

/// Include and exclude patterns for a context walk (fsutil's `FilterOpt`).
/// Include patterns keep only what they match (plus parents); exclude
/// patterns are `.dockerignore` semantics.
#[derive(Debug, Clone, Default)]
pub struct ContextFilter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

/// Characters that make a pattern more than a plain path prefix.
const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

fn without_trailing_glob(p: &Pattern) -> &str {
    let s = p.as_str();
    let s = s.strip_suffix("/**").unwrap_or(s);
    s.strip_suffix("/*").unwrap_or(s)
}

impl ContextFilter {
    /// A filter from compiled matchers; `None` (or an empty matcher) means
    /// no filtering of that kind.
    pub fn new(include: Option<PatternMatcher>, exclude: Option<PatternMatcher>) -> Self {
        let include = include.filter(|m| !m.is_empty());
        let exclude = exclude.filter(|m| !m.is_empty());
        let only_prefix_includes = include.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| !p.is_exclusion())
                .all(|p| !without_trailing_glob(p).contains(PATTERN_CHARS))
        });
        let only_prefix_exclude_exceptions = exclude.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| p.is_exclusion())
                .all(|p| !without_trailing_glob(p).contains(PATTERN_CHARS))
        });
        ContextFilter {
            include,
            exclude,
            only_prefix_includes,
            only_prefix_exclude_exceptions,
        }
    }

    /// Compiles raw include and exclude pattern lists (as `COPY` sources and
    /// `--exclude` flags, or `.dockerignore` lines, give them).
    pub fn from_patterns<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Self, Error> {
        let include = PatternMatcher::new(include)?;
        let exclude = PatternMatcher::new(exclude)?;
        Ok(Self::new(Some(include), Some(exclude)))
    }

    /// Whether a single relative path passes the filter, checking its
    /// parents too (fsutil's filtered `Open`): for looking up one file
    /// without walking.
    pub fn is_included(&self, path: &str) -> Result<bool, Error> {
        if let Some(include) = &self.include {
            if !include.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        if let Some(exclude) = &self.exclude {
            if exclude.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Walks `root` (which is not itself reported).
    pub fn walk(&self, root: impl Into<PathBuf>) -> Walk<'_> {
        Walk {
            filter: self,
            root: root.into(),
            stack: Vec::new(),
            ready: VecDeque::new(),
            started: false,
            last_dir_depth: None,
        }
    }

    /// Whether no include pattern could match below `dir` (so the walk
    /// needn't enter it). Only sound when all includes are plain prefixes.
    fn include_prunes(&self, matcher: &PatternMatcher, dir: &str) -> bool {
        self.only_prefix_includes && !could_match_below(matcher, dir, false)
    }

    fn exclude_prunes(&self, matcher: &PatternMatcher, dir: &str) -> bool {
        self.only_prefix_exclude_exceptions
            && (!matcher.exclusions() || !could_match_below(matcher, dir, true))
    }
}

/// Whether a pattern of the given polarity names a path under `dir`.
fn could_match_below(matcher: &PatternMatcher, dir: &str, exclusion: bool) -> bool {
    let dir_slash = format!("{dir}/");
    matcher
        .patterns()
        .iter()
        .filter(|p| p.is_exclusion() == exclusion)
        .any(|p| format!("{}/", without_trailing_glob(p)).starts_with(&dir_slash))
}

/// One path of the context.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative, slash-separated, as the patterns see it (invalid UTF-8
    /// bytes shown as U+FFFD).
    pub path: String,
    /// Relative path with the exact bytes of the file names.
    pub rel_path: PathBuf,
    /// `lstat` of the entry: symlinks are described, not followed.
    pub metadata: Metadata,
    /// Number of path components (1 for top-level entries).
    pub depth: usize,
}

impl Entry {
    /// Whether the entry is a real directory (a symlink to one is not),
    /// i.e. whether its children follow in the walk.
    pub fn is_dir(&self) -> bool {
        self.metadata.is_dir()
    }
}

struct DirState {
    entry: Option<Entry>,
    include_info: MatchInfo,
    exclude_info: MatchInfo,
    reported: bool,
}

struct Frame {
    names: std::vec::IntoIter<OsString>,
    dir: DirState,
}

/// Iterator over the included entries of a context, in fsutil's order.
pub struct Walk<'a> {
    filter: &'a ContextFilter,
    root: PathBuf,
    stack: Vec<Frame>,
    ready: VecDeque<Entry>,
    started: bool,
    last_dir_depth: Option<usize>,
}

fn read_sorted(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    sort_names(&mut names);
    Ok(names)
}

#[cfg(unix)]
fn sort_names(names: &mut [OsString]) {
    use std::os::unix::ffi::OsStrExt;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
}

#[cfg(not(unix))]
fn sort_names(names: &mut [OsString]) {
    names.sort();
}

#[cfg(unix)]
fn name_string(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    go_string(name.as_bytes())
}

#[cfg(not(unix))]
fn name_string(name: &std::ffi::OsStr) -> String {
    go_string(name.to_string_lossy().as_bytes())
}

impl Walk<'_> {
    /// Don't descend into the directory returned last by `next` (if it
    /// was a directory); entries already queued below it are dropped.
    pub fn skip_dir(&mut self) {
        if let Some(depth) = self.last_dir_depth.take() {
            self.stack.truncate(depth);
            self.ready.retain(|e| e.depth <= depth);
        }
    }

    fn emit(&mut self, entry: Entry) -> Entry {
        self.last_dir_depth = entry.is_dir().then_some(entry.depth);
        entry
    }

    fn step(&mut self) -> Result<bool, WalkError> {
        let Some(frame) = self.stack.last_mut() else {
            return Ok(false);
        };
        let Some(name) = frame.names.next() else {
            self.stack.pop();
            return Ok(true);
        };
        let parent = &frame.dir;
        let (rel_path, path, depth) = match &parent.entry {
            Some(p) => (
                p.rel_path.join(&name),
                format!("{}/{}", p.path, name_string(&name)),
                p.depth + 1,
            ),
            None => (PathBuf::from(&name), name_string(&name), 1),
        };
        let full = self.root.join(&rel_path);
        let metadata = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            // Vanished between listing and stat: as fsutil, not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(source) => {
                return Err(WalkError::Io {
                    op: "lstat",
                    path: full,
                    source,
                })
            }
        };
        let is_dir = metadata.is_dir();
        let filter = self.filter;
        let mut skip = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        if let Some(include) = &filter.include {
            let (m, info) = include.matches_using_parent_results(&path, &parent.include_info)?;
            include_info = info;
            if !m {
                if is_dir && filter.include_prunes(include, &path) {
                    return Ok(true);
                }
                skip = true;
            }
        }
        if let Some(exclude) = &filter.exclude {
            let (m, info) = exclude.matches_using_parent_results(&path, &parent.exclude_info)?;
            exclude_info = info;
            if m {
                if is_dir && filter.exclude_prunes(exclude, &path) {
                    return Ok(true);
                }
                skip = true;
            }
        }
        let entry = Entry {
            path,
            rel_path,
            metadata,
            depth,
        };
        if is_dir {
            let names = match read_sorted(&full) {
                Ok(names) => names,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                Err(e) if skip && e.kind() == io::ErrorKind::PermissionDenied => return Ok(true),
                Err(source) => {
                    return Err(WalkError::Io {
                        op: "readdir",
                        path: full,
                        source,
                    })
                }
            };
            if !skip {
                self.report_parents();
                self.ready.push_back(entry.clone());
            }
            self.stack.push(Frame {
                names: names.into_iter(),
                dir: DirState {
                    entry: Some(entry),
                    include_info,
                    exclude_info,
                    reported: !skip,
                },
            });
        } else if !skip {
            self.report_parents();
            self.ready.push_back(entry);
        }
        Ok(true)
    }

    /// Queues the directories above the current entry that were skipped
    /// themselves but now hold an included entry.
    fn report_parents(&mut self) {
        for frame in &mut self.stack {
            if !frame.dir.reported {
                frame.dir.reported = true;
                if let Some(entry) = &frame.dir.entry {
                    self.ready.push_back(entry.clone());
                }
            }
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            match read_sorted(&self.root) {
                Ok(names) => self.stack.push(Frame {
                    names: names.into_iter(),
                    dir: DirState {
                        entry: None,
                        include_info: MatchInfo::default(),
                        exclude_info: MatchInfo::default(),
                        reported: true,
                    },
                }),
                Err(source) => {
                    return Some(Err(WalkError::Io {
                        op: "readdir",
                        path: self.root.clone(),
                        source,
                    }))
                }
            }
        }
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(self.emit(entry)));
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    // Stop for good after an error.
                    self.stack.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}
