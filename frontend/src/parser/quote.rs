//! Go's `strconv.Quote` and `strings.ToLower`, because BuildKit's dump format
//! is defined by them and `kiln parse` must print the same bytes.

use std::fmt::Write;

/// Go's `unicode.IsPrint` as `strconv` uses it: letters, marks, numbers,
/// punctuation and symbols, plus the ASCII space. Everything in categories
/// C* (controls, format chars, private use, noncharacters) and Z* other than
/// U+0020 is not printable. Unassigned code points are treated as printable
/// (the one place where this differs from Go, which carries full tables).
pub(crate) fn is_print(c: char) -> bool {
    let u = c as u32;
    if u < 0x20 || (0x7F..0xA0).contains(&u) {
        return false;
    }
    if c == ' ' {
        return true;
    }
    if c.is_whitespace() {
        return false; // Zs, Zl, Zp (and the controls above)
    }
    const FORMAT: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xD800, 0xF8FF), // surrogates and private use
        (0xFDD0, 0xFDEF),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
        (0xF0000, 0x10FFFF),
    ];
    if u & 0xFFFE == 0xFFFE {
        return false; // noncharacters U+xFFFE, U+xFFFF
    }
    !FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
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

/// Go's `strings.ToLower`: one rune to one rune (simple case mapping), so
/// U+0130 becomes a plain `i` and no context-dependent sigma rule applies.
pub(crate) fn go_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            if c == '\u{130}' {
                return 'i';
            }
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.TrimSpace`.
pub(crate) fn go_trim_space(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}
