//! One `.dockerignore` pattern, compiled as moby's patternmatcher compiles it.
//!
//! moby classifies each cleaned pattern as an exact path, a `prefix/**`, a
//! `**suffix` or a regular expression, and the classification itself changes
//! results (`**/foo` is a plain suffix test, so `x**/foo`-style regex quirks
//! never apply to it). kiln keeps the same four kinds so every edge agrees.

use crate::error::{Error, Location};
use crate::glob;
use crate::goregex::{self, GoRegexError};

/// How a pattern is tested against a path (moby's `matchType`).
#[derive(Debug, Clone)]
enum Kind {
    /// The path must equal the pattern.
    Exact,
    /// `prefix**`: the path must start with the text before `**`.
    Prefix,
    /// `**suffix`: the path ends with the text after `**` (or equals it
    /// without its leading `/`).
    Suffix,
    /// Anything else: a translated regular expression.
    Regex(regex::Regex),
}

/// A parsed pattern. Malformed regular expressions are kept rather than
/// rejected, because moby only reports them when a path is actually tested
/// against the pattern; `kind` holds that deferred failure.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Result<Kind, GoRegexError>,
    location: Option<Location>,
}

impl Pattern {
    /// Builds a pattern from one raw entry the way `patternmatcher.New`
    /// does; `Ok(None)` for blank entries, which moby skips.
    pub(crate) fn new(raw: &str, location: Option<Location>) -> Result<Option<Pattern>, Error> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let mut cleaned = crate::gopath::clean(trimmed);
        let mut exclusion = false;
        if let Some(rest) = cleaned.strip_prefix('!') {
            if rest.is_empty() {
                return Err(located(
                    Error::new("illegal exclusion pattern: \"!\""),
                    location,
                ));
            }
            cleaned = rest.to_string();
            exclusion = true;
        }
        if glob::go_match(&cleaned, ".").is_err() {
            return Err(located(
                Error::new(format!("syntax error in pattern {trimmed:?}")),
                location,
            ));
        }
        let kind = compile(&cleaned);
        Ok(Some(Pattern {
            cleaned,
            exclusion,
            kind,
            location,
        }))
    }

    /// The cleaned pattern without its `!` (moby's `Pattern.String`).
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this pattern re-includes (`!pattern`).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Where the pattern was written, when it came from a file.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// Tests one slash-separated path (no parent logic).
    pub fn matches(&self, path: &str) -> Result<bool, Error> {
        let kind = match &self.kind {
            Ok(kind) => kind,
            Err(reason) => {
                let message = format!("syntax error in pattern {:?}: {reason}", self.cleaned);
                return Err(located(Error::new(message), self.location));
            }
        };
        Ok(match kind {
            Kind::Exact => path == self.cleaned,
            // Byte slicing, as in Go: a pattern starting with a byte-order
            // mark cuts it in half and so matches (almost) nothing.
            Kind::Prefix => {
                let prefix = &self.cleaned.as_bytes()[..self.cleaned.len().saturating_sub(2)];
                path.as_bytes().starts_with(prefix)
            }
            Kind::Suffix => {
                let suffix = self.cleaned.as_bytes().get(2..).unwrap_or(b"");
                path.as_bytes().ends_with(suffix)
                    || suffix
                        .strip_prefix(b"/")
                        .is_some_and(|bare| path.as_bytes() == bare)
            }
            Kind::Regex(re) => re.is_match(path),
        })
    }
}

fn located(error: Error, location: Option<Location>) -> Error {
    match location {
        Some(loc) => error.at(loc),
        None => error,
    }
}

/// moby's translation of a glob into its kind and, for regex patterns, Go
/// regular-expression text, which is then parsed with Go's rules.
fn compile(pattern: &str) -> Result<Kind, GoRegexError> {
    let mut expr = String::from("^");
    let mut kind = KindTag::Exact;
    let mut chars = pattern.chars().peekable();
    // Go's text/scanner drops a byte-order mark at the very start.
    if chars.peek() == Some(&'\u{FEFF}') {
        chars.next();
    }
    let mut i = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == KindTag::Exact {
                        kind = KindTag::Prefix;
                    } else {
                        expr.push_str(".*");
                        kind = KindTag::Regex;
                    }
                } else {
                    expr.push_str("(.*/)?");
                    kind = KindTag::Regex;
                }
                if i == 0 {
                    kind = KindTag::Suffix;
                }
            }
            '*' => {
                expr.push_str("[^/]*");
                kind = KindTag::Regex;
            }
            '?' => {
                expr.push_str("[^/]");
                kind = KindTag::Regex;
            }
            // moby means to escape `.+()|{}$`, but its lookup bitmap drops
            // every byte from 64 up, so `|`, `{` and `}` reach the regexp
            // parser raw (alternation and counted repeats); keep that.
            '.' | '+' | '(' | ')' | '$' => {
                expr.push('\\');
                expr.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    expr.push('\\');
                    expr.push(next);
                    kind = KindTag::Regex;
                }
                None => expr.push('\\'),
            },
            '[' | ']' => {
                expr.push(ch);
                kind = KindTag::Regex;
            }
            other => expr.push(other),
        }
        i += 1;
    }
    Ok(match kind {
        KindTag::Exact => Kind::Exact,
        KindTag::Prefix => Kind::Prefix,
        KindTag::Suffix => Kind::Suffix,
        KindTag::Regex => {
            expr.push('$');
            Kind::Regex(goregex::compile(&expr)?)
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindTag {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> &'static str {
        match compile(p) {
            Ok(Kind::Exact) => "exact",
            Ok(Kind::Prefix) => "prefix",
            Ok(Kind::Suffix) => "suffix",
            Ok(Kind::Regex(_)) => "regex",
            Err(_) => "error",
        }
    }

    #[test]
    fn kinds_like_moby() {
        for (p, want) in [
            ("*", "regex"),
            ("**", "suffix"),
            ("**/**", "regex"),
            ("dir/**", "prefix"),
            ("**/dir", "suffix"),
            ("**/dir2/*", "regex"),
            ("**file", "suffix"),
            ("abc.def", "exact"),
            ("a(b)c/def", "exact"),
            ("a.|)$(}+{bc", "exact"),
            ("a[b-d]e", "regex"),
            ("[Local-Only]", "error"),
        ] {
            assert_eq!(kind(p), want, "{p}");
        }
    }
}
