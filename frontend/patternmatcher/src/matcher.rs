//! An ordered list of patterns with moby's "last match wins" rules and its
//! three ways of treating parent directories.
//!
//! Excluding a directory excludes everything below it, so a path is tested
//! against its parents too. moby has three entry points that differ exactly
//! there, and BuildKit uses each in a different place (the context walk uses
//! the parent-results form, single-file checks the parent-matches form), so
//! all three are kept.

use crate::error::{Error, Result};
use crate::gopath as clean;
use crate::pattern::Pattern;

/// Compiled `.dockerignore` (or include/exclude) patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// What a directory's patterns matched, handed down to its children so a
/// walk doesn't re-test every ancestor (moby's `MatchInfo`). The default
/// value means "no parent information": parents are then tested directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl PatternMatcher {
    /// Compiles patterns as `patternmatcher.New` does: entries are trimmed
    /// and cleaned, blank ones skipped, a lone `!` and malformed globs are
    /// errors.
    pub fn new<I, S>(patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::from_located(patterns.into_iter().map(|p| (p.as_ref().to_string(), None)))
    }

    /// Like [`PatternMatcher::new`], keeping where each pattern was written
    /// so errors point at the `.dockerignore` line.
    pub fn from_ignore_patterns(patterns: &[crate::IgnorePattern]) -> Result<Self> {
        Self::from_located(
            patterns
                .iter()
                .map(|p| (p.pattern.clone(), Some(p.location))),
        )
    }

    fn from_located(
        patterns: impl Iterator<Item = (String, Option<crate::error::Location>)>,
    ) -> Result<Self> {
        let mut out = PatternMatcher::default();
        for (raw, location) in patterns {
            if let Some(p) = Pattern::new(&raw, location)? {
                out.exclusions |= p.is_exclusion();
                out.patterns.push(p);
            }
        }
        Ok(out)
    }

    /// The compiled patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exception.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// moby's deprecated `Matches`: a parent is only tried at the depth of
    /// the pattern. Kept because moby's tables and the classic builder
    /// behave this way; new callers want
    /// [`PatternMatcher::matches_or_parent_matches`].
    pub fn matches(&self, file: &str) -> Result<bool> {
        let parent = clean::dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.is_exclusion() != matched {
                continue;
            }
            let mut hit = pattern.matches(file)?;
            if !hit && parent != "." {
                let depth = pattern.as_str().split('/').count();
                if depth <= parent_dirs.len() {
                    hit = pattern
                        .matches(&parent_dirs[..depth].join("/"))
                        .unwrap_or(false);
                }
            }
            if hit {
                matched = !pattern.is_exclusion();
            }
        }
        Ok(matched)
    }

    /// Whether `file` (slash-separated, relative) or any of its parent
    /// directories is matched by the last pattern that decides it.
    pub fn matches_or_parent_matches(&self, file: &str) -> Result<bool> {
        let parent = clean::dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.is_exclusion() != matched {
                continue;
            }
            let mut hit = pattern.matches(file)?;
            if !hit && parent != "." {
                hit = parent_matches(pattern, &parent_dirs);
            }
            if hit {
                matched = !pattern.is_exclusion();
            }
        }
        Ok(matched)
    }

    /// The walk-friendly form: `parent` is what this returned for the
    /// parent directory (or the default for a top-level entry).
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo)> {
        let parent_matched = &parent.parent_matched;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(Error::new("wrong number of values in parentMatched"));
        }
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.is_exclusion() != matched {
                    continue;
                }
                hit = pattern.matches(file)?;
                if !hit && parent_matched.is_empty() {
                    let parent = clean::dir(file);
                    if parent != "." {
                        let parent_dirs: Vec<&str> = parent.split('/').collect();
                        hit = parent_matches(pattern, &parent_dirs);
                    }
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.is_exclusion();
            }
        }
        Ok((matched, info))
    }
}

/// Tries each ancestor from the top down; errors count as "no match", as in
/// moby (the same pattern already failed loudly on the path itself).
fn parent_matches(pattern: &Pattern, parent_dirs: &[&str]) -> bool {
    let mut ancestor = String::new();
    for (i, dir) in parent_dirs.iter().enumerate() {
        if i > 0 {
            ancestor.push('/');
        }
        ancestor.push_str(dir);
        if pattern.matches(&ancestor).unwrap_or(false) {
            return true;
        }
    }
    false
}

/// moby's package-level `Matches(file, patterns)`: compiles the patterns,
/// cleans the path, and never matches the context root itself.
pub fn matches(file: &str, patterns: &[&str]) -> Result<bool> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean::clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches(&file)
}

/// moby's package-level `MatchesOrParentMatches(file, patterns)`.
pub fn matches_or_parent_matches(file: &str, patterns: &[&str]) -> Result<bool> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean::clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&file)
}
