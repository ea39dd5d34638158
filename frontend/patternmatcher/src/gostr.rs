//! Go's string helpers that moby's and BuildKit's observable behaviour
//! depends on: rune decoding of invalid UTF-8, `unicode.IsPrint`/`IsLetter`/
//! `IsDigit`, and `strconv.Quote`, which
//! their error messages and BuildKit's parser dump use. Written once here
//! for the frontend and the worker.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// Decodes one rune the way Go does: invalid bytes are U+FFFD of width 1.
pub fn decode_rune(bytes: &[u8]) -> (char, usize) {
    if bytes.is_empty() {
        return ('\u{FFFD}', 0);
    }
    let max = bytes.len().min(4);
    for len in 1..=max {
        if let Ok(s) = std::str::from_utf8(&bytes[..len]) {
            if let Some(c) = s.chars().next() {
                return (c, len);
            }
        }
    }
    ('\u{FFFD}', 1)
}

/// Turns bytes into a string the way Go sees them: every invalid byte is
/// one U+FFFD, so matching of odd names agrees with Go's rune decoding.
pub fn go_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            let mut rest = bytes;
            while !rest.is_empty() {
                let (c, n) = decode_rune(rest);
                out.push(c);
                rest = &rest[n.max(1)..];
            }
            out
        }
    }
}

/// Sorted code point ranges of a Unicode class, from regex-syntax's tables
/// (Rust's `is_alphabetic`/`is_numeric` use wider properties than Go's
/// general categories).
type Ranges = Vec<(char, char)>;

fn class(expr: &str) -> Ranges {
    use regex_syntax::hir::{Class, HirKind};
    let Ok(hir) = regex_syntax::Parser::new().parse(expr) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => cls.iter().map(|r| (r.start(), r.end())).collect(),
        _ => Vec::new(),
    }
}

fn contains(ranges: &Ranges, c: char) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation and
/// symbols (Unicode categories L, M, N, P, S) plus the ASCII space; controls,
/// format characters, private use, unassigned code points and every other
/// space are not printable.
pub fn is_print(c: char) -> bool {
    static PRINTABLE: OnceLock<Ranges> = OnceLock::new();
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    contains(
        PRINTABLE.get_or_init(|| class(r"[\p{L}\p{M}\p{N}\p{P}\p{S}]")),
        c,
    )
}

/// Go's `unicode.IsLetter` (category L), which decides where a shell
/// variable name ends.
pub fn is_letter(c: char) -> bool {
    static LETTERS: OnceLock<Ranges> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    contains(LETTERS.get_or_init(|| class(r"\p{L}")), c)
}

/// Go's `unicode.IsDigit` (category Nd).
pub fn is_digit(c: char) -> bool {
    static DIGITS: OnceLock<Ranges> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    contains(DIGITS.get_or_init(|| class(r"\p{Nd}")), c)
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes, as
/// BuildKit's messages show the failing word and its dump shows arguments.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7F}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("\t\n\x01\x7f"), "\"\\t\\n\\x01\\x7f\"");
        assert_eq!(quote("é한👽\u{a0}\u{200b}"), "\"é한👽\\u00a0\\u200b\"");
        assert_eq!(quote("\u{e0001}"), "\"\\U000e0001\"");
        assert_eq!(quote("\u{ad}"), "\"\\u00ad\"");
    }

    #[test]
    fn invalid_utf8_is_one_replacement_per_byte() {
        assert_eq!(go_string(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(go_string(b"\xe2\x82"), "\u{FFFD}\u{FFFD}");
        assert_eq!(decode_rune("é".as_bytes()), ('é', 2));
    }
}
