//! Reading a `.dockerignore` file into patterns (moby's `ignorefile.ReadAll`)
//! and finding which ignore file a build uses.

use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};
use crate::gostr::go_string;
use crate::PatternMatcher;

/// The longest line Go's line scanner accepts; longer ones fail the read.
const MAX_LINE: usize = 64 * 1024 - 1;

/// One pattern as `ReadAll` leaves it (trimmed, cleaned, leading `/`
/// dropped, `!` kept), with where it was written for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    /// The pattern as moby's matcher receives it.
    pub pattern: String,
    /// The trimmed pattern's span in the file, for diagnostics.
    pub location: Location,
}

/// Splits `.dockerignore` text into patterns as moby's `ReadAll` does:
/// a UTF-8 BOM on the first line is dropped, lines starting with `#` are
/// comments (only in column one), surrounding whitespace is trimmed, blank
/// lines are skipped, and each path is cleaned with a leading `/` removed
/// (after a `!`, too). Patterns are not validated here; see [`parse`].
pub fn read_all(text: &[u8]) -> Result<Vec<IgnorePattern>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    let mut line_no = 0usize;
    let mut rest = text;
    while !rest.is_empty() {
        let (raw, next, consumed) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], i + 1),
            None => (rest, &rest[rest.len()..], rest.len()),
        };
        let line_start = offset;
        offset += consumed;
        rest = next;
        line_no += 1;
        if raw.len() > MAX_LINE {
            let loc = Location {
                line: line_no,
                column: 1,
                offset: line_start,
                len: 0,
            };
            return Err(
                Error::new("error reading .dockerignore: bufio.Scanner: token too long").at(loc),
            );
        }
        let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut skipped = 0usize;
        if line_no == 1 {
            if let Some(stripped) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = stripped;
                skipped = 3;
            }
        }
        let line = go_string(line);
        if line.starts_with('#') {
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        let location = Location {
            line: line_no,
            column: line[..lead].chars().count() + 1,
            offset: line_start + skipped + lead,
            len: trimmed.len(),
        };
        let (invert, body) = match trimmed.strip_prefix('!') {
            Some(body) => (true, body.trim()),
            None => (false, trimmed),
        };
        let mut pattern = String::new();
        if !body.is_empty() {
            let cleaned = crate::gopath::clean(body);
            pattern = match cleaned.strip_prefix('/') {
                Some(rel) if !rel.is_empty() => rel.to_string(),
                _ => cleaned,
            };
        }
        if invert {
            pattern.insert(0, '!');
        }
        out.push(IgnorePattern { pattern, location });
    }
    Ok(out)
}

/// Reads and compiles a `.dockerignore`: [`read_all`] then
/// [`PatternMatcher::from_ignore_patterns`], so a lone `!` or a malformed
/// glob is an [`Error`] at its line and column.
pub fn parse(text: &[u8]) -> Result<PatternMatcher> {
    PatternMatcher::from_ignore_patterns(&read_all(text)?)
}

/// The ignore file a build with this Dockerfile and context uses:
/// `NAME.dockerignore` beside a Dockerfile named `NAME` wins over
/// `<context>/.dockerignore`; `None` when neither exists.
pub fn locate(dockerfile: &Path, context: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let default = context.join(".dockerignore");
    default.is_file().then_some(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_all_like_moby() {
        let text = b"test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let got: Vec<String> = read_all(text)
            .unwrap()
            .into_iter()
            .map(|p| p.pattern)
            .collect();
        assert_eq!(
            got,
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
    }

    #[test]
    fn locations_point_at_the_pattern() {
        let text = "\u{FEFF}a\r\n  #2  \n\t[\n";
        let got = read_all(text.as_bytes()).unwrap();
        assert_eq!(got[0].pattern, "a");
        assert_eq!(
            (
                got[0].location.line,
                got[0].location.column,
                got[0].location.offset
            ),
            (1, 1, 3)
        );
        assert_eq!(got[1].pattern, "#2");
        assert_eq!((got[1].location.line, got[1].location.column), (2, 3));
        let err = parse(text.as_bytes()).unwrap_err();
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.column, loc.len), (3, 2, 1));
        assert_eq!(&text[loc.offset..loc.offset + loc.len], "[");
    }
}
