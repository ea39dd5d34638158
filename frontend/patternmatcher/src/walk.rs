//! The build-context walk (tonistiigi/fsutil's filtered `Walk`): which files
//! of a context directory a build sees, in the order BuildKit sends them.
//!
//! Directories are read in byte order of their names, parents come before
//! children, symlinks are reported as themselves (never followed). An
//! excluded directory is still descended into when a `!` exception could
//! re-include something below it; such a directory is reported lazily, just
//! before the first entry under it that is included, exactly as fsutil does.
//! The walk is an iterator so callers can stream (tar, checksum, COPY)
//! without holding the whole tree. Patterns are tested on the type the
//! directory listing gives (as fsutil tests them on its `DirEntry`), so an
//! excluded file is never `lstat`ed.
//!
//! A walk can carry a second, outer filter ([`Walk::within`]): the build
//! context's `.dockerignore`, anchored at the context root while the walk
//! starts at a COPY source below it. Paths the outer filter drops do not
//! exist for the inner one, exactly as BuildKit first transfers the
//! filtered context and then copies from it with the COPY's own filter.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{FileType, Metadata};
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
            outer: None,
            root: root.into(),
            stack: Vec::new(),
            ready: VecDeque::new(),
            started: false,
            last_dir_depth: None,
        }
    }

    /// Whether the filter keeps everything (no include nor exclude
    /// patterns), so callers can skip matching altogether.
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether a path this filter drops could still have kept entries
    /// below it (an include pattern, or a `!` exception): then an existence
    /// check of a dropped directory needs a walk of it.
    pub fn may_keep_below_dropped(&self) -> bool {
        self.include.is_some() || self.exclude.as_ref().is_some_and(|e| e.exclusions())
    }

    /// Tests one entry given its parent's match results: whether the
    /// filter drops it, whether the walk may skip everything below it (a
    /// directory no pattern can bring anything back from), and the results
    /// to hand down to its children.
    fn eval(
        &self,
        path: &str,
        parent_include: &MatchInfo,
        parent_exclude: &MatchInfo,
        is_dir: bool,
    ) -> Result<Verdict, Error> {
        let mut v = Verdict::default();
        if let Some(include) = &self.include {
            let (m, info) = include.matches_using_parent_results(path, parent_include)?;
            v.include_info = info;
            if !m {
                if is_dir && self.include_prunes(include, path) {
                    v.prune = true;
                    return Ok(v);
                }
                v.skip = true;
            }
        }
        if let Some(exclude) = &self.exclude {
            let (m, info) = exclude.matches_using_parent_results(path, parent_exclude)?;
            v.exclude_info = info;
            if m {
                if is_dir && self.exclude_prunes(exclude, path) {
                    v.prune = true;
                    return Ok(v);
                }
                v.skip = true;
            }
        }
        Ok(v)
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

/// What a filter says about one entry.
#[derive(Default)]
struct Verdict {
    skip: bool,
    prune: bool,
    include_info: MatchInfo,
    exclude_info: MatchInfo,
}

/// One path of the context.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative, slash-separated, as the patterns see it (invalid UTF-8
    /// bytes shown as U+FFFD).
    pub path: String,
    /// Relative path with the exact bytes of the file names.
    pub rel_path: PathBuf,
    /// The walk's root joined with `rel_path`: where to read the entry.
    pub full_path: PathBuf,
    /// `lstat` of the entry: symlinks are described, not followed.
    pub metadata: Metadata,
    /// Number of path components (1 for top-level entries).
    pub depth: usize,
    /// Whether the entry passed the filter itself; `false` for a directory
    /// reported only because something below it did (a COPY creates such
    /// a parent when it first needs it, and treats its metadata apart).
    pub matched: bool,
}

impl Entry {
    /// Whether the entry is a real directory (a symlink to one is not),
    /// i.e. whether its children follow in the walk.
    pub fn is_dir(&self) -> bool {
        self.metadata.is_dir()
    }
}

/// The outer filter of a walk and where the walk's root sits under it.
struct Outer<'a> {
    filter: &'a ContextFilter,
    prefix: String,
}

/// A directory being walked and what its match results left for its
/// children.
struct DirState {
    /// `None` for the walk's root.
    entry: Option<Entry>,
    include_info: MatchInfo,
    exclude_info: MatchInfo,
    /// Path under the outer filter's root (only kept with an outer filter).
    outer_path: String,
    outer_include_info: MatchInfo,
    outer_exclude_info: MatchInfo,
    /// Known to exist under the outer filter (it passed it, or something
    /// below it did).
    exists: bool,
    /// Passed the walk's own filter.
    matched: bool,
    reported: bool,
}

struct Frame {
    names: std::vec::IntoIter<(OsString, FileType)>,
    dir: DirState,
}

/// Iterator over the included entries of a context, in fsutil's order.
pub struct Walk<'a> {
    filter: &'a ContextFilter,
    outer: Option<Outer<'a>>,
    root: PathBuf,
    stack: Vec<Frame>,
    ready: VecDeque<Entry>,
    started: bool,
    last_dir_depth: Option<usize>,
}

fn read_sorted(dir: &Path) -> io::Result<Vec<(OsString, FileType)>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        // The listing's type (`d_type`; an `lstat` only where the file
        // system does not fill it in). Vanished meanwhile: not listed.
        match e.file_type() {
            Ok(t) => names.push((e.file_name(), t)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    sort_names(&mut names);
    Ok(names)
}

#[cfg(unix)]
fn sort_names(names: &mut [(OsString, FileType)]) {
    use std::os::unix::ffi::OsStrExt;
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

#[cfg(not(unix))]
fn sort_names(names: &mut [(OsString, FileType)]) {
    names.sort_by(|a, b| a.0.cmp(&b.0));
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

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl<'a> Walk<'a> {
    /// Applies `outer` too: a filter anchored at a directory above the
    /// walk's root, which sits at `prefix` (slash-separated, relative; empty
    /// for the same directory) below it. An entry the outer filter drops
    /// does not exist for this walk; a directory it drops but keeps
    /// something below exists (as a plain directory) once that is found.
    /// The caller checks that the root itself exists under `outer`.
    pub fn within(mut self, outer: &'a ContextFilter, prefix: &str) -> Self {
        if !outer.is_empty() {
            self.outer = Some(Outer {
                filter: outer,
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        self
    }

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

    fn root_state(&self) -> Result<DirState, WalkError> {
        let mut dir = DirState {
            entry: None,
            include_info: MatchInfo::default(),
            exclude_info: MatchInfo::default(),
            outer_path: String::new(),
            outer_include_info: MatchInfo::default(),
            outer_exclude_info: MatchInfo::default(),
            exists: true,
            matched: true,
            reported: true,
        };
        if let Some(outer) = &self.outer {
            if !outer.prefix.is_empty() {
                // Default infos: the root's own parents are tested directly.
                let v = outer.filter.eval(
                    &outer.prefix,
                    &MatchInfo::default(),
                    &MatchInfo::default(),
                    false,
                )?;
                dir.outer_include_info = v.include_info;
                dir.outer_exclude_info = v.exclude_info;
            }
            dir.outer_path = outer.prefix.clone();
        }
        Ok(dir)
    }

    fn lstat(full: &Path) -> Result<Option<Metadata>, WalkError> {
        match std::fs::symlink_metadata(full) {
            Ok(m) => Ok(Some(m)),
            // Vanished between listing and stat: as fsutil, not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WalkError::Io {
                op: "lstat",
                path: full.to_path_buf(),
                source,
            }),
        }
    }

    fn step(&mut self) -> Result<bool, WalkError> {
        let Some(frame) = self.stack.last_mut() else {
            return Ok(false);
        };
        let Some((name, ftype)) = frame.names.next() else {
            self.stack.pop();
            return Ok(true);
        };
        let Some(parent) = self.stack.last().map(|f| &f.dir) else {
            return Ok(false);
        };
        let is_dir = ftype.is_dir();
        let shown = name_string(&name);
        let (path, depth) = match &parent.entry {
            Some(p) => (join_path(&p.path, &shown), p.depth + 1),
            None => (shown.clone(), 1),
        };

        // The outer filter first: what it drops does not exist here.
        let mut exists = true;
        let mut outer_verdict = None;
        let mut outer_path = String::new();
        if let Some(outer) = &self.outer {
            outer_path = join_path(&parent.outer_path, &shown);
            let v = outer.filter.eval(
                &outer_path,
                &parent.outer_include_info,
                &parent.outer_exclude_info,
                is_dir,
            )?;
            if v.prune || (v.skip && !is_dir) {
                return Ok(true);
            }
            exists = !v.skip;
            outer_verdict = Some(v);
        }
        let v = self
            .filter
            .eval(&path, &parent.include_info, &parent.exclude_info, is_dir)?;
        let matched = !v.skip && !v.prune;
        // Skipping a subtree the walk's filter drops is only an
        // optimisation, and not allowed while something in it could still
        // prove that a kept directory above exists.
        let prune = v.prune && (exists || !self.awaits_existence());
        if prune && !exists {
            return Ok(true);
        }
        let rel_path = match &parent.entry {
            Some(p) => p.rel_path.join(&name),
            None => PathBuf::from(&name),
        };
        let full = self.root.join(&rel_path);
        if !is_dir {
            if exists {
                let metadata = if matched {
                    match Self::lstat(&full)? {
                        Some(m) => Some(m),
                        None => return Ok(true),
                    }
                } else {
                    None
                };
                self.confirm(matched);
                if let Some(metadata) = metadata {
                    self.ready.push_back(Entry {
                        path,
                        rel_path,
                        full_path: full,
                        metadata,
                        depth,
                        matched: true,
                    });
                }
            }
            return Ok(true);
        }
        let Some(metadata) = Self::lstat(&full)? else {
            return Ok(true);
        };
        if prune {
            // Exists but drops with everything below: it still proves its
            // parents exist.
            self.confirm(false);
            return Ok(true);
        }
        let names = match read_sorted(&full) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) if (!exists || !matched) && e.kind() == io::ErrorKind::PermissionDenied => {
                if exists {
                    self.confirm(false);
                }
                return Ok(true);
            }
            Err(source) => {
                return Err(WalkError::Io {
                    op: "readdir",
                    path: full,
                    source,
                })
            }
        };
        let entry = Entry {
            path,
            rel_path,
            full_path: full,
            metadata,
            depth,
            matched,
        };
        if exists {
            self.confirm(matched);
            if matched {
                self.ready.push_back(entry.clone());
            }
        }
        let (outer_include_info, outer_exclude_info) = match outer_verdict {
            Some(o) => (o.include_info, o.exclude_info),
            None => Default::default(),
        };
        self.stack.push(Frame {
            names: names.into_iter(),
            dir: DirState {
                entry: Some(entry),
                include_info: v.include_info,
                exclude_info: v.exclude_info,
                outer_path,
                outer_include_info,
                outer_exclude_info,
                exists,
                matched,
                reported: exists && matched,
            },
        });
        Ok(true)
    }

    /// Whether a directory above is kept by the walk's filter but not yet
    /// known to exist under the outer one.
    fn awaits_existence(&self) -> bool {
        self.stack.iter().any(|f| !f.dir.exists && f.dir.matched)
    }

    /// An entry that exists was found: every directory above it exists.
    /// Queues those of them that are now due, in order: the kept ones
    /// that waited for proof of existence, and, when the entry itself is
    /// kept (`kept`), every parent not reported yet.
    fn confirm(&mut self, kept: bool) {
        // A directory exists (is reported) only if all above it do, so the
        // innermost one tells whether there is anything to do: the hot path.
        if let Some(top) = self.stack.last() {
            if top.dir.exists && (top.dir.reported || !kept) {
                return;
            }
        }
        let due = if kept {
            self.stack.len()
        } else {
            self.stack
                .iter()
                .rposition(|f| !f.dir.exists && f.dir.matched)
                .map_or(0, |i| i + 1)
        };
        for (i, frame) in self.stack.iter_mut().enumerate() {
            frame.dir.exists = true;
            if i < due && !frame.dir.reported {
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
            let root = match self.root_state() {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            match read_sorted(&self.root) {
                Ok(names) => self.stack.push(Frame {
                    names: names.into_iter(),
                    dir: root,
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
