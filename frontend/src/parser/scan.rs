//! Physical lines, parser directives and line continuations: the part of the
//! Dockerfile syntax that depends on state (the escape character is chosen by
//! a directive, and a continuation depends on the escape character), so it is
//! scanned line by line before the grammar sees a logical instruction.

use super::grammar;
use crate::{Error, ErrorKind, Location};

/// BuildKit reads Dockerfiles with a `bufio.Scanner`, whose default token
/// limit is 64 KiB including the newline.
pub(crate) const MAX_LINE: usize = 65_535;

/// One physical line of the source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub number: usize,
    /// Byte offset of the line's first byte in the source.
    pub offset: usize,
    /// The line including its `\n`, if it has one.
    pub raw: &'a str,
}

impl<'a> Line<'a> {
    /// The line without trailing `\r` and `\n` (BuildKit's trimNewline).
    pub fn text(&self) -> &'a str {
        self.raw.trim_end_matches(['\r', '\n'])
    }
}

/// Splits the source into lines, stopping (as BuildKit's scanner does) at the
/// first line too long to read; `too_long` then says where it was.
pub(crate) struct Lines<'a> {
    src: &'a str,
    pos: usize,
    number: usize,
    pub too_long: Option<Error>,
}

impl<'a> Lines<'a> {
    pub fn new(src: &'a str) -> Self {
        Lines {
            src,
            pos: 0,
            number: 0,
            too_long: None,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.pos >= self.src.len() || self.too_long.is_some() {
            return None;
        }
        let rest = &self.src[self.pos..];
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let content_len = rest[..end].strip_suffix('\n').map_or(end, str::len);
        self.number += 1;
        if content_len > MAX_LINE {
            self.too_long = Some(
                Error::new(
                    ErrorKind::LineTooLong,
                    format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
                )
                .at(Location {
                    line: self.number,
                    column: 1,
                    offset: self.pos,
                    len: content_len,
                }),
            );
            return None;
        }
        let line = Line {
            number: self.number,
            offset: self.pos,
            raw: &rest[..end],
        };
        self.pos += end;
        Some(line)
    }
}

/// BuildKit's DirectiveParser: directives are recognised only on the lines
/// before the first line that is not one (a blank line or any other comment
/// ends them too), each at most once.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

/// A directive found on a line.
pub(crate) struct Directive {
    pub key: String,
    pub value: String,
}

impl DirectiveParser {
    /// `line` is the physical line with its newline and leading whitespace
    /// trimmed.
    pub fn parse_line(&mut self, line: &str) -> crate::Result<Option<Directive>> {
        if self.done {
            return Ok(None);
        }
        if !line.starts_with('#') {
            self.done = true;
            return Ok(None);
        }
        let Some((key, value)) = grammar::directive(line) else {
            self.done = true;
            return Ok(None);
        };
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(Error::new(
                ErrorKind::Syntax,
                format!("only one {key} parser directive can be used"),
            ));
        }
        self.seen.push(key.clone());
        Ok(Some(Directive { key, value }))
    }
}

/// `# escape=` accepts only a backslash or a backtick.
pub(crate) fn escape_token(value: &str) -> crate::Result<char> {
    match value {
        "\\" => Ok('\\'),
        "`" => Ok('`'),
        _ => Err(Error::new(
            ErrorKind::Syntax,
            format!("invalid escape token '{value}' does not match ` or \\"),
        )),
    }
}

pub(crate) fn trim_leading_ws(s: &str) -> &str {
    s.trim_start_matches(char::is_whitespace)
}

pub(crate) fn is_comment(line: &str) -> bool {
    trim_leading_ws(line).starts_with('#')
}

/// If the line ends with the escape character (then optional spaces and
/// tabs), not itself escaped, returns the line without it and `false` (the
/// instruction goes on); else the line unchanged and `true`.
///
/// BuildKit tests this with `([^E])E[ \t]*$|^E[ \t]*$`, so an escape preceded
/// by another escape never continues the line (`foo \\` ends it, and so, by
/// the same rule, does `foo \\\`).
pub(crate) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}
