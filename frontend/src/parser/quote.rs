//! Go's `strconv.Quote` (shared) and `strings.ToLower`, because BuildKit's dump format
//! is defined by them and `kiln parse` must print the same bytes.

/// Go's `strconv.Quote`, written once in `kiln-patternmatcher`.
pub use kiln_patternmatcher::gostr::quote as go_quote;

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
