//! The two pattern languages of COPY: source wildcards, which are Go's
//! `filepath.Match` applied to whole relative paths (`*` never crosses a `/`,
//! `**` is nothing special), and `--exclude` / `--parents` filters, which are
//! moby's patternmatcher (`**` spans directories, `!` re-includes, a pattern
//! also matches everything below what it matches). Both come from the one
//! shared crate, `kiln-patternmatcher`, so the worker has no engine of its
//! own; the filters are applied by that crate's walk ([`compile`] only words
//! its errors as the copy's).

use kiln_patternmatcher::go_match;

use super::error::{FileOpsError, Result};

/// A COPY/ADD source wildcard. BuildKit (fsutil's `resolveWildcards`)
/// matches it with Go's `filepath.Match` against each path relative to the
/// wildcard's base directory, so this is the shared crate's [`go_match`],
/// not an engine of its own.
///
/// Go reports `ErrBadPattern` for a malformed pattern whatever the name
/// (after a mismatch it still checks the rest of the pattern), so checking
/// once against an empty name up front rejects exactly what Go rejects.
/// BuildKit drops that error and matches nothing; kiln reports it.
#[derive(Debug, Clone)]
pub struct SourceGlob {
    pattern: String,
}

impl SourceGlob {
    /// Accept a pattern Go accepts; a malformed one (an unclosed or empty
    /// class, a trailing backslash) is [`FileOpsError::BadPattern`].
    pub fn new(pattern: &str) -> Result<Self> {
        go_match(pattern, "").map_err(|_| FileOpsError::BadPattern {
            pattern: pattern.to_string(),
        })?;
        Ok(SourceGlob {
            pattern: pattern.to_string(),
        })
    }

    /// Whether the whole of the slash-separated relative path `name`
    /// matches (`*` and `?` never match a `/`).
    pub fn matches(&self, name: &str) -> bool {
        // `new` checked the pattern, and Go's errors do not depend on the name.
        go_match(&self.pattern, name).unwrap_or(false)
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

/// Compiles `--exclude` / `--parents` / `.dockerignore` patterns as
/// patternmatcher's `New` does; a malformed one is
/// [`FileOpsError::BadPattern`] naming the list.
pub fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<kiln_patternmatcher::PatternMatcher> {
    kiln_patternmatcher::PatternMatcher::new(patterns.iter().map(|p| p.as_ref())).map_err(|e| {
        FileOpsError::BadPattern {
            pattern: format!(
                "{}: {e}",
                patterns
                    .iter()
                    .map(|p| p.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_go_filepath_match() {
        let m = |p: &str, s: &str| SourceGlob::new(p).unwrap().matches(s);
        assert!(m("*.md", "one.md"));
        assert!(!m("*.md", "skip.mdx"));
        assert!(!m("*", "a/b"));
        assert!(m("sub/*/dir2/foo", "sub/dir1/dir2/foo"));
        assert!(m("[a-c]?", "bz"));
        assert!(!m("[^a-c]?", "bz"));
        assert!(m("\\*", "*"));
        assert!(!m("**", "a/b"));
        assert!(m("a[/]b", "a/b"));
        assert!(!m("[b-a]", "a"));
        assert!(SourceGlob::new("[").is_err());
        assert!(SourceGlob::new("a\\").is_err());
        assert!(SourceGlob::new("[]a]").is_err());
    }

    #[test]
    fn clean_is_go_path_clean() {
        assert_eq!(clean("/a/../../b/./c/"), "/b/c");
        assert_eq!(clean("a/.."), ".");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean(""), ".");
    }
}
