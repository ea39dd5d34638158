//! The two pattern languages of COPY: source wildcards, which are Go's
//! `filepath.Match` applied to whole relative paths (`*` never crosses a `/`,
//! `**` is nothing special), and `--exclude` / `--parents` filters, which are
//! moby's patternmatcher (`**` spans directories, `!` re-includes, a pattern
//! also matches everything below what it matches). Both run in time linear in
//! pattern × path (a table, no backtracking), since patterns come from users.

use super::error::{FileOpsError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled `filepath.Match` pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    /// Compile, rejecting what Go calls `ErrBadPattern` (an unclosed or empty
    /// class, a trailing backslash).
    pub fn new(pattern: &str) -> Result<Self> {
        let bad = || FileOpsError::BadPattern {
            pattern: pattern.to_string(),
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                    i += 1;
                }
                '?' => {
                    toks.push(Tok::Any);
                    i += 1;
                }
                '\\' => {
                    let c = *chars.get(i + 1).ok_or_else(bad)?;
                    toks.push(Tok::Lit(c));
                    i += 2;
                }
                '[' => {
                    i += 1;
                    let negated = chars.get(i) == Some(&'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        let c = *chars.get(i).ok_or_else(bad)?;
                        if c == ']' && !ranges.is_empty() {
                            i += 1;
                            break;
                        }
                        let lo = class_char(&chars, &mut i).ok_or_else(bad)?;
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') {
                            i += 1;
                            hi = class_char(&chars, &mut i).ok_or_else(bad)?;
                            if hi < lo {
                                return Err(bad());
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Glob { toks })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let s: Vec<char> = name.chars().collect();
        // prev[j]: tokens[..t] match s[..j]
        let mut prev = vec![false; s.len() + 1];
        prev[0] = true;
        for tok in &self.toks {
            let mut cur = vec![false; s.len() + 1];
            for j in 0..=s.len() {
                cur[j] = match tok {
                    Tok::Star => prev[j] || (j > 0 && s[j - 1] != '/' && cur[j - 1]),
                    _ => j > 0 && prev[j - 1] && tok_matches(tok, s[j - 1]),
                };
            }
            prev = cur;
        }
        prev[s.len()]
    }
}

fn class_char(chars: &[char], i: &mut usize) -> Option<char> {
    let c = *chars.get(*i)?;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        let e = *chars.get(*i + 1)?;
        *i += 2;
        return Some(e);
    }
    *i += 1;
    Some(c)
}

fn tok_matches(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => c != '/',
        Tok::Star => c != '/',
        Tok::Class { negated, ranges } => {
            if c == '/' {
                return false;
            }
            let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
            inside != *negated
        }
    }
}

/// Whether a path element holds wildcard characters (an escaped character
/// does not count), as BuildKit decides whether to glob at all.
pub fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `path.Clean`, from the shared pattern crate.
pub use kiln_patternmatcher::gopath::clean;

/// What a directory's match left for its children (which patterns matched
/// it, and so match everything below it).
pub type MatchInfo = kiln_patternmatcher::MatchInfo;

/// patternmatcher patterns (`--exclude`, `--parents` filters): the
/// shared implementation of moby's matcher (`kiln-patternmatcher`), so `.dockerignore`
/// and COPY filters can never disagree.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    inner: kiln_patternmatcher::PatternMatcher,
}

impl PatternMatcher {
    /// Compile patterns as patternmatcher's `New` does: trimmed, cleaned,
    /// empty ones dropped, a leading `!` marks a re-inclusion.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let inner = kiln_patternmatcher::PatternMatcher::new(patterns.iter().map(|p| p.as_ref()))
            .map_err(|e| FileOpsError::BadPattern {
            pattern: format!(
                "{}: {e}",
                patterns
                    .iter()
                    .map(|p| p.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        Ok(PatternMatcher { inner })
    }

    /// Whether any pattern is a `!` re-inclusion, in which case excluded
    /// directories must still be walked.
    pub fn has_exclusions(&self) -> bool {
        self.inner.exclusions()
    }

    /// Whether nothing was given.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Match a slash-separated relative path, reusing its parent directory's
    /// result (`None` at the top of a walk: then its parent directories are
    /// tried too). A pattern that fails to match (malformed at match time)
    /// counts as no match.
    pub fn matches(&self, path: &str, parent: Option<&MatchInfo>) -> (bool, MatchInfo) {
        let default = MatchInfo::default();
        self.inner
            .matches_using_parent_results(path, parent.unwrap_or(&default))
            .unwrap_or((false, MatchInfo::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_go_filepath_match() {
        let m = |p: &str, s: &str| Glob::new(p).unwrap().matches(s);
        assert!(m("*.md", "one.md"));
        assert!(!m("*.md", "skip.mdx"));
        assert!(!m("*", "a/b"));
        assert!(m("sub/*/dir2/foo", "sub/dir1/dir2/foo"));
        assert!(m("[a-c]?", "bz"));
        assert!(!m("[^a-c]?", "bz"));
        assert!(m("\\*", "*"));
        assert!(!m("**", "a/b"));
        assert!(Glob::new("[").is_err());
        assert!(Glob::new("a\\").is_err());
    }

    #[test]
    fn patternmatcher_semantics() {
        let pm = PatternMatcher::new(&["*.tmp", "cache"]).unwrap();
        assert!(pm.matches("b.tmp", None).0);
        assert!(!pm.matches("d/e.tmp", None).0);
        assert!(pm.matches("cache/x", None).0);
        let pm = PatternMatcher::new(&["**/*.tmp"]).unwrap();
        assert!(pm.matches("e.tmp", None).0);
        assert!(pm.matches("f/g.tmp", None).0);
        let pm = PatternMatcher::new(&["*.log", "!keep.log"]).unwrap();
        assert!(pm.matches("a.log", None).0);
        assert!(!pm.matches("keep.log", None).0);
        let pm = PatternMatcher::new(&["src/**"]).unwrap();
        assert!(!pm.matches("src", None).0);
        assert!(pm.matches("src/x", None).0);
        let (m, info) = PatternMatcher::new(&["tmp"]).unwrap().matches("tmp", None);
        assert!(m);
        let pm = PatternMatcher::new(&["tmp"]).unwrap();
        assert!(pm.matches("tmp/x", Some(&info)).0);
    }

    #[test]
    fn clean_is_go_path_clean() {
        assert_eq!(clean("/a/../../b/./c/"), "/b/c");
        assert_eq!(clean("a/.."), ".");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean(""), ".");
    }
}
