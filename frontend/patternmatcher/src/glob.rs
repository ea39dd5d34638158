//! Go's `filepath.Match` (Unix flavour), used as moby uses it (to reject
//! malformed patterns when a matcher is built) and as BuildKit's fsutil uses
//! it (to expand COPY/ADD source wildcards, path by path, in the worker).
//!
//! moby validates each pattern by calling `filepath.Match(pattern, ".")` and
//! keeping the error. Which patterns that rejects (and which it lets through
//! because the match ended early) is part of the observable behaviour, so this
//! follows the same chunk-by-chunk algorithm rather than a separate validator.

use crate::gostr::decode_rune;

/// The pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

/// Reports whether `name` matches the shell pattern, or the pattern's error.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it holds a separator.
            return Ok(!name.contains(&b'/'));
        }
        let (t, ok, err) = match_chunk(chunk, name);
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if let Some(e) = err {
            return Err(e);
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                if let Some(e) = err {
                    return Err(e);
                }
                i += 1;
            }
        }
        // Failing without an error still requires the rest to be well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if let (_, _, Some(e)) = match_chunk(chunk, b"") {
                return Err(e);
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches one star-free chunk at the start of `s`: (rest, matched, error).
/// After a mismatch it keeps reading the chunk to check its syntax.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> (&'a [u8], bool, Option<BadPattern>) {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (c, n) = decode_rune(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if let [b'^', rest @ ..] = chunk {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if let [b']', rest @ ..] = chunk {
                        if nrange > 0 {
                            chunk = rest;
                            break;
                        }
                    }
                    let (lo, rest) = match get_esc(chunk) {
                        Ok(v) => v,
                        Err(e) => return (b"", false, Some(e)),
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if let [b'-', rest @ ..] = chunk {
                        match get_esc(rest) {
                            Ok((h, rest)) => {
                                hi = h;
                                chunk = rest;
                            }
                            Err(e) => return (b"", false, Some(e)),
                        }
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let mut c = c;
                if c == b'\\' {
                    chunk = &chunk[1..];
                    match chunk.first() {
                        Some(&next) => c = next,
                        None => return (b"", false, Some(BadPattern)),
                    }
                }
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        (b"", false, None)
    } else {
        (s, true, None)
    }
}

/// One possibly escaped character of a class; errors where Go errors.
fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    let mut chunk = match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(_) => chunk,
    };
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BadPattern);
        }
    }
    let (r, n) = decode_rune(chunk);
    let invalid = r == '\u{FFFD}' && n == 1 && chunk.get(..3) != Some("\u{FFFD}".as_bytes());
    let rest = &chunk[n..];
    if invalid || rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        let ok = |p: &str, s: &str| go_match(p, s);
        assert_eq!(ok("abc", "abc"), Ok(true));
        assert_eq!(ok("*", "abc"), Ok(true));
        assert_eq!(ok("a*/b", "a/c/b"), Ok(false));
        assert_eq!(ok("a*b*c*d*e*/f", "axbxcxdxexxx/f"), Ok(true));
        assert_eq!(ok("ab[^e-g]", "abc"), Ok(true));
        assert_eq!(ok("a\\*b", "ab"), Ok(false));
        assert_eq!(ok("a?b", "a☺b"), Ok(true));
        assert_eq!(ok("[a-ζ]*", "α"), Ok(true));
        assert_eq!(ok("[\\-x]", "-"), Ok(true));
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[",
        ] {
            assert_eq!(go_match(bad, "."), Err(BadPattern), "{bad}");
        }
        assert_eq!(go_match("[Local-Only]", "."), Ok(false));
    }
}
