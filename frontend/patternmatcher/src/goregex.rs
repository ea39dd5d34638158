//! The slice of Go's `regexp/syntax` that moby's pattern translation can
//! produce, parsed with Go's rules and re-emitted as an unambiguous Rust
//! `regex`.
//!
//! moby turns a glob into a Go regular expression by plain string pasting, so
//! the glob's `[`, `]`, `^` and backslash escapes reach Go's regexp parser
//! untouched: `[[:alpha:]]` is a POSIX class, `\d` a digit, a reversed range
//! an error at match time. Handing that text to the `regex` crate would give
//! different answers at the edges (nested classes, set operators, Unicode
//! `\d`), so the text is parsed here the way Go parses it and every atom is
//! re-emitted explicitly (literals as `\x{..}`, classes as code-point ranges).
//! The `regex` crate then guarantees linear-time matching.

use std::fmt::Write as _;

/// Go rejected the generated expression; the text is Go's error kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GoRegexError(pub String);

#[derive(Debug, Clone)]
enum Item {
    Range(char, char),
    /// A fixed ASCII set (`\d`, `[:alpha:]`).
    Ranges(Vec<(char, char)>),
    /// A Unicode general category by Go's name, possibly negated.
    Unicode {
        name: String,
        negated: bool,
    },
    /// A whole sub-class, negated (`\D`, `[:^alpha:]`).
    NegatedRanges(Vec<(char, char)>),
}

#[derive(Debug, Clone)]
enum Node {
    Lit(char),
    Class {
        negated: bool,
        items: Vec<Item>,
    },
    AnyNotNl,
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
    /// A parenthesised group: alternatives, each a sequence.
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, Rep),
}

/// A repetition operator; greediness never changes whether a match exists.
#[derive(Debug, Clone, Copy)]
enum Rep {
    Star,
    Plus,
    Quest,
    /// `{min}`, `{min,}` (max `None`) or `{min,max}`.
    Counted(u32, Option<u32>),
}

const PERL_DIGIT: &[(char, char)] = &[('0', '9')];
const PERL_SPACE: &[(char, char)] = &[('\t', '\n'), ('\x0c', '\r'), (' ', ' ')];
const PERL_WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];

fn posix_group(name: &str) -> Option<(&'static [(char, char)], bool)> {
    let (negated, base) = match name.strip_prefix("[:^") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("[:")?),
    };
    let ranges: &'static [(char, char)] = match base {
        "alnum:]" => &[('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha:]" => &[('A', 'Z'), ('a', 'z')],
        "ascii:]" => &[('\0', '\x7f')],
        "blank:]" => &[('\t', '\t'), (' ', ' ')],
        "cntrl:]" => &[('\0', '\x1f'), ('\x7f', '\x7f')],
        "digit:]" => &[('0', '9')],
        "graph:]" => &[('!', '~')],
        "lower:]" => &[('a', 'z')],
        "print:]" => &[(' ', '~')],
        "punct:]" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space:]" => &[('\t', '\r'), (' ', ' ')],
        "upper:]" => &[('A', 'Z')],
        "word:]" => PERL_WORD,
        "xdigit:]" => &[('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    };
    Some((ranges, negated))
}

fn err(kind: &str, expr: &str) -> GoRegexError {
    GoRegexError(format!("{kind}: `{expr}`"))
}

fn next_char(s: &str) -> Option<(char, &str)> {
    let c = s.chars().next()?;
    Some((c, &s[c.len_utf8()..]))
}

/// `\d \s \w` and their negations, if `t` starts with one.
fn perl_class(t: &str) -> Option<(Item, &str)> {
    let b = t.as_bytes();
    if b.len() < 2 || b[0] != b'\\' {
        return None;
    }
    let ranges = match b[1] {
        b'd' | b'D' => PERL_DIGIT,
        b's' | b'S' => PERL_SPACE,
        b'w' | b'W' => PERL_WORD,
        _ => return None,
    };
    let item = if b[1].is_ascii_uppercase() {
        Item::NegatedRanges(ranges.to_vec())
    } else {
        Item::Ranges(ranges.to_vec())
    };
    Some((item, &t[2..]))
}

/// `\pX`, `\p{Name}`, `\PX`: Go's Unicode classes, if `t` starts with one.
fn unicode_class(t: &str) -> Result<Option<(Item, &str)>, GoRegexError> {
    let b = t.as_bytes();
    if b.len() < 2 || b[0] != b'\\' || (b[1] != b'p' && b[1] != b'P') {
        return Ok(None);
    }
    let mut negated = b[1] == b'P';
    let rest = &t[2..];
    let Some((c, after)) = next_char(rest) else {
        return Err(err("invalid character class range", t));
    };
    let (mut name, rest) = if c != '{' {
        (&rest[..c.len_utf8()], after)
    } else {
        match after.find('}') {
            Some(end) => (&after[..end], &after[end + 1..]),
            None => return Err(err("invalid character class range", t)),
        }
    };
    let seq = &t[..t.len() - rest.len()];
    if let Some(stripped) = name.strip_prefix('^') {
        negated = !negated;
        name = stripped;
    }
    let known = matches!(name, "Any" | "C" | "L" | "M" | "N" | "P" | "S" | "Z")
        || (name.len() == 2
            && matches!(
                name,
                "Cc" | "Cf"
                    | "Co"
                    | "Cs"
                    | "Ll"
                    | "Lm"
                    | "Lo"
                    | "Lt"
                    | "Lu"
                    | "Mc"
                    | "Me"
                    | "Mn"
                    | "Nd"
                    | "Nl"
                    | "No"
                    | "Pc"
                    | "Pd"
                    | "Pe"
                    | "Pf"
                    | "Pi"
                    | "Po"
                    | "Ps"
                    | "Sc"
                    | "Sk"
                    | "Sm"
                    | "So"
                    | "Zl"
                    | "Zp"
                    | "Zs"
            ));
    if !known {
        return Err(err("invalid character class range", seq));
    }
    Ok(Some((
        Item::Unicode {
            name: name.to_string(),
            negated,
        },
        rest,
    )))
}

/// One escape sequence that stands for a single character (Go's parseEscape).
fn parse_escape(s: &str) -> Result<(char, &str), GoRegexError> {
    let t = &s[1..];
    let Some((c, mut t)) = next_char(t) else {
        return Err(err("trailing backslash at end of expression", ""));
    };
    let invalid = |t: &str| err("invalid escape sequence", &s[..s.len() - t.len()]);
    let octal = |b: Option<&u8>| matches!(b, Some(b'0'..=b'7'));
    match c {
        '1'..='7' if !octal(t.as_bytes().first()) => Err(invalid(t)),
        '0'..='7' => {
            let mut r = c as u32 - '0' as u32;
            for _ in 1..3 {
                match t.as_bytes().first() {
                    Some(&d @ b'0'..=b'7') => {
                        r = r * 8 + u32::from(d - b'0');
                        t = &t[1..];
                    }
                    _ => break,
                }
            }
            Ok((char::from_u32(r).unwrap_or('\u{FFFD}'), t))
        }
        'x' => {
            let Some((c1, t1)) = next_char(t) else {
                return Err(invalid(t));
            };
            if c1 == '{' {
                let mut r: u32 = 0;
                let mut n = 0;
                let mut rest = t1;
                loop {
                    let Some((d, after)) = next_char(rest) else {
                        return Err(invalid(rest));
                    };
                    rest = after;
                    if d == '}' {
                        break;
                    }
                    let Some(v) = d.to_digit(16) else {
                        return Err(invalid(rest));
                    };
                    r = r * 16 + v;
                    if r > 0x10FFFF {
                        return Err(invalid(rest));
                    }
                    n += 1;
                }
                if n == 0 {
                    return Err(invalid(rest));
                }
                return match char::from_u32(r) {
                    Some(ch) => Ok((ch, rest)),
                    None => Err(invalid(rest)),
                };
            }
            let Some((c2, t2)) = next_char(t1) else {
                return Err(invalid(t1));
            };
            match (c1.to_digit(16), c2.to_digit(16)) {
                (Some(x), Some(y)) => Ok((char::from_u32(x * 16 + y).unwrap_or('\u{FFFD}'), t2)),
                _ => Err(invalid(t2)),
            }
        }
        'a' => Ok(('\x07', t)),
        'f' => Ok(('\x0c', t)),
        'n' => Ok(('\n', t)),
        'r' => Ok(('\r', t)),
        't' => Ok(('\t', t)),
        'v' => Ok(('\x0b', t)),
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c, t)),
        _ => Err(invalid(t)),
    }
}

fn parse_class_char(t: &str) -> Result<(char, &str), GoRegexError> {
    if t.starts_with('\\') {
        return parse_escape(t);
    }
    match next_char(t) {
        Some(v) => Ok(v),
        None => Err(err("missing closing ]", t)),
    }
}

/// Parses a bracketed class starting at `s` (which begins with `[`).
fn parse_class(s: &str) -> Result<(Node, &str), GoRegexError> {
    let mut t = &s[1..];
    let mut negated = false;
    if let Some(rest) = t.strip_prefix('^') {
        negated = true;
        t = rest;
    }
    let mut items = Vec::new();
    let mut first = true;
    while t.is_empty() || !t.starts_with(']') || first {
        first = false;
        if t.len() > 2 && t.starts_with("[:") {
            if let Some(i) = t[2..].find(":]") {
                let name = &t[..i + 4];
                let Some((ranges, neg)) = posix_group(name) else {
                    return Err(err("invalid character class range", name));
                };
                items.push(if neg {
                    Item::NegatedRanges(ranges.to_vec())
                } else {
                    Item::Ranges(ranges.to_vec())
                });
                t = &t[i + 4..];
                continue;
            }
        }
        if let Some((item, rest)) = unicode_class(t)? {
            items.push(item);
            t = rest;
            continue;
        }
        if let Some((item, rest)) = perl_class(t) {
            items.push(item);
            t = rest;
            continue;
        }
        let range_start = t;
        let (lo, rest) = parse_class_char(t)?;
        t = rest;
        let mut hi = lo;
        if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
            let (h, rest) = parse_class_char(&t[1..])?;
            t = rest;
            hi = h;
            if hi < lo {
                let expr = &range_start[..range_start.len() - t.len()];
                return Err(err("invalid character class range", expr));
            }
        }
        items.push(Item::Range(lo, hi));
    }
    Ok((Node::Class { negated, items }, &t[1..]))
}

/// Go's `parseInt` for repeat counts: no leading zeros; `None` for "not a
/// number", `Some(-1)` for a number too large.
fn parse_int(s: &str) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.first().is_none_or(|c| !c.is_ascii_digit()) {
        return None;
    }
    if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_digit() {
        return None;
    }
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut n: i64 = 0;
    for &d in &b[..digits] {
        if n >= 100_000_000 {
            n = -1;
            break;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some((n, &s[digits..]))
}

/// Go's `parseRepeat`: `{n}`, `{n,}`, `{n,m}`; `None` means `{` is literal.
fn parse_repeat(s: &str) -> Option<(i64, i64, &str)> {
    let s = s.strip_prefix('{')?;
    let (mut min, s) = parse_int(s)?;
    let (max, s) = if let Some(rest) = s.strip_prefix(',') {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((min, -1, after));
        }
        let (max, rest) = parse_int(rest)?;
        if max < 0 {
            min = -1;
        }
        (max, rest)
    } else {
        (min, s)
    };
    let rest = s.strip_prefix('}')?;
    Some((min, max, rest))
}

/// Go's `repeatIsValid`: nested counted repeats may not multiply past `n`.
fn repeat_is_valid(node: &Node, mut n: u32) -> bool {
    match node {
        Node::Repeat(inner, rep) => {
            if let Rep::Counted(min, max) = rep {
                let m = max.unwrap_or(*min);
                if m == 0 {
                    return true;
                }
                if m > n {
                    return false;
                }
                n /= m;
            }
            repeat_is_valid(inner, n)
        }
        Node::Group(alts) => alts.iter().flatten().all(|sub| repeat_is_valid(sub, n)),
        _ => true,
    }
}

/// One level of parentheses: finished alternatives plus the current one.
type Frame = Vec<Vec<Node>>;

fn current(stack: &mut Vec<Frame>) -> &mut Vec<Node> {
    if stack.is_empty() {
        stack.push(Vec::new());
    }
    let top = stack.len() - 1;
    let frame = &mut stack[top];
    if frame.is_empty() {
        frame.push(Vec::new());
    }
    let last = frame.len() - 1;
    &mut frame[last]
}

/// Parses the generated expression with Go's rules (Perl flags, one line).
fn parse(mut t: &str) -> Result<Vec<Vec<Node>>, GoRegexError> {
    let mut stack: Vec<Frame> = vec![vec![Vec::new()]];
    // The text of the previous token when it was a repetition operator.
    let mut last_repeat: Option<&str> = None;
    while !t.is_empty() {
        let mut repeat: Option<&str> = None;
        let c = t.as_bytes()[0];
        match c {
            b'(' => {
                if t[1..].starts_with('?') {
                    return Err(err("missing argument to repetition operator", "(?"));
                }
                stack.push(vec![Vec::new()]);
                t = &t[1..];
            }
            b')' => {
                if stack.len() < 2 {
                    return Err(err("unexpected )", t));
                }
                let group = stack.pop().unwrap_or_default();
                current(&mut stack).push(Node::Group(group));
                t = &t[1..];
            }
            b'|' => {
                if let Some(frame) = stack.last_mut() {
                    frame.push(Vec::new());
                }
                t = &t[1..];
            }
            b'^' => {
                current(&mut stack).push(Node::BeginText);
                t = &t[1..];
            }
            b'$' => {
                current(&mut stack).push(Node::EndText);
                t = &t[1..];
            }
            b'.' => {
                current(&mut stack).push(Node::AnyNotNl);
                t = &t[1..];
            }
            b'[' => {
                let (node, rest) = parse_class(t)?;
                current(&mut stack).push(node);
                t = rest;
            }
            b'*' | b'+' | b'?' | b'{' => {
                let before = t;
                let (rep, mut after) = if c == b'{' {
                    match parse_repeat(t) {
                        None => {
                            current(&mut stack).push(Node::Lit('{'));
                            t = &t[1..];
                            last_repeat = None;
                            continue;
                        }
                        Some((min, max, after)) => {
                            let text = &before[..before.len() - after.len()];
                            if !(0..=1000).contains(&min) || max > 1000 || (max >= 0 && min > max) {
                                return Err(err("invalid repeat count", text));
                            }
                            let max = u32::try_from(max).ok();
                            (Rep::Counted(min as u32, max), after)
                        }
                    }
                } else {
                    let rep = match c {
                        b'*' => Rep::Star,
                        b'+' => Rep::Plus,
                        _ => Rep::Quest,
                    };
                    (rep, &t[1..])
                };
                if let Some(rest) = after.strip_prefix('?') {
                    after = rest;
                }
                if let Some(last) = last_repeat {
                    let text = &last[..last.len() - after.len()];
                    return Err(err("invalid nested repetition operator", text));
                }
                let op_text = &before[..before.len() - after.len()];
                let seq = current(&mut stack);
                let Some(sub) = seq.pop() else {
                    return Err(err("missing argument to repetition operator", op_text));
                };
                let node = Node::Repeat(Box::new(sub), rep);
                if let Rep::Counted(min, max) = rep {
                    if (min >= 2 || max.is_some_and(|m| m >= 2)) && !repeat_is_valid(&node, 1000) {
                        return Err(err("invalid repeat count", op_text));
                    }
                }
                seq.push(node);
                repeat = Some(before);
                t = after;
            }
            b'\\' => {
                let b = t.as_bytes();
                if b.len() >= 2 {
                    let simple = match b[1] {
                        b'A' => Some(Node::BeginText),
                        b'z' => Some(Node::EndText),
                        b'b' => Some(Node::WordBoundary),
                        b'B' => Some(Node::NotWordBoundary),
                        _ => None,
                    };
                    if let Some(node) = simple {
                        current(&mut stack).push(node);
                        t = &t[2..];
                        last_repeat = None;
                        continue;
                    }
                    if b[1] == b'C' {
                        return Err(err("invalid escape sequence", "\\C"));
                    }
                    if b[1] == b'Q' {
                        let rest = &t[2..];
                        let (lit, after) = match rest.find("\\E") {
                            Some(i) => (&rest[..i], &rest[i + 2..]),
                            None => (rest, ""),
                        };
                        current(&mut stack).extend(lit.chars().map(Node::Lit));
                        t = after;
                        last_repeat = None;
                        continue;
                    }
                }
                if let Some((item, rest)) = unicode_class(t)? {
                    current(&mut stack).push(Node::Class {
                        negated: false,
                        items: vec![item],
                    });
                    t = rest;
                } else if let Some((item, rest)) = perl_class(t) {
                    current(&mut stack).push(Node::Class {
                        negated: false,
                        items: vec![item],
                    });
                    t = rest;
                } else {
                    let (ch, rest) = parse_escape(t)?;
                    current(&mut stack).push(Node::Lit(ch));
                    t = rest;
                }
            }
            _ => {
                let Some((ch, rest)) = next_char(t) else {
                    break;
                };
                current(&mut stack).push(Node::Lit(ch));
                t = rest;
            }
        }
        last_repeat = repeat;
    }
    if stack.len() != 1 {
        return Err(err("missing closing )", ""));
    }
    Ok(stack.pop().unwrap_or_default())
}

fn emit_ranges(out: &mut String, ranges: &[(char, char)]) {
    for (lo, hi) in ranges {
        let _ = write!(out, "\\x{{{:X}}}-\\x{{{:X}}}", *lo as u32, *hi as u32);
    }
}

fn emit_item(out: &mut String, item: &Item) {
    match item {
        Item::Range(lo, hi) => emit_ranges(out, &[(*lo, *hi)]),
        Item::Ranges(ranges) => emit_ranges(out, ranges),
        Item::NegatedRanges(ranges) => {
            out.push_str("[^");
            emit_ranges(out, ranges);
            out.push(']');
        }
        Item::Unicode { name, negated } => {
            // Go's `C` is Cc|Cf|Co|Cs (no unassigned code points).
            let body = match name.as_str() {
                "Any" => "\\x{0}-\\x{10FFFF}".to_string(),
                "C" => "\\p{Cc}\\p{Cf}\\p{Co}".to_string(),
                other => format!("\\p{{{other}}}"),
            };
            if *negated {
                let _ = write!(out, "[^{body}]");
            } else {
                out.push_str(&body);
            }
        }
    }
}

fn emit_alternatives(out: &mut String, alts: &[Vec<Node>]) {
    out.push_str("(?:");
    for (i, alt) in alts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        emit(out, alt);
    }
    out.push(')');
}

fn emit(out: &mut String, nodes: &[Node]) {
    for node in nodes {
        match node {
            Node::Lit(c) => {
                let _ = write!(out, "\\x{{{:X}}}", *c as u32);
            }
            Node::AnyNotNl => out.push_str("[^\\n]"),
            Node::BeginText => out.push_str("\\A"),
            Node::EndText => out.push_str("\\z"),
            Node::WordBoundary => out.push_str("(?-u:\\b)"),
            Node::NotWordBoundary => out.push_str("(?-u:\\B)"),
            Node::Class { negated, items } => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                for item in items {
                    emit_item(out, item);
                }
                out.push(']');
            }
            Node::Group(alts) => emit_alternatives(out, alts),
            Node::Repeat(inner, rep) => {
                out.push_str("(?:");
                emit(out, std::slice::from_ref(inner));
                out.push(')');
                match rep {
                    Rep::Star => out.push('*'),
                    Rep::Plus => out.push('+'),
                    Rep::Quest => out.push('?'),
                    Rep::Counted(min, None) => {
                        let _ = write!(out, "{{{min},}}");
                    }
                    Rep::Counted(min, Some(max)) => {
                        let _ = write!(out, "{{{min},{max}}}");
                    }
                }
            }
        }
    }
}

/// Compiles Go regular-expression text into an equivalent Rust regex.
pub fn compile(go_expr: &str) -> Result<regex::Regex, GoRegexError> {
    let alts = parse(go_expr)?;
    let mut out = String::with_capacity(go_expr.len() * 4);
    emit_alternatives(&mut out, &alts);
    regex::RegexBuilder::new(&out)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| GoRegexError(format!("expression too large or unsupported: {e}")))
}

#[cfg(test)]
mod tests {
    use super::compile;

    fn m(expr: &str, s: &str) -> bool {
        compile(expr)
            .map(|r| r.is_match(s))
            .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
    }

    #[test]
    fn go_semantics() {
        assert!(m("^[^/]*$", "abc"));
        assert!(!m("^[^/]*$", "a/c"));
        assert!(m("^(.*/)?dir2/[^/]*$", "a/b/dir2/x"));
        assert!(m("^[[:alpha:]]$", "q"));
        assert!(!m("^[[:alpha:]]$", "1"));
        assert!(m("^[[a]]$", "a]"));
        assert!(m("^[[a]]$", "[]"));
        assert!(m("^a\\d$", "a1"));
        assert!(!m("^a\\d$", "a٣"));
        assert!(m("^[a[^/]*b]$", "a[[b]"));
        assert!(m("^a\\Qb[^/]*$", "ab[^/]*$"));
        assert!(m("^\\x41$", "A"));
        assert!(m("^\\101$", "A"));
        assert!(m("^[\\-x]$", "-"));
        assert!(m("^\\pL$", "é"));
        assert!(m("^a\\b$", "a"));
        assert!(!m("^a\\B$", "a"));
        assert!(!m("^.$", "\n"));
        assert!(m("^[^a]$", "\n"));
        for bad in [
            "^[l-O]$",
            "^\\y$",
            "^[a$",
            "^\\1$",
            "^\\p\\{$",
            "^[[:foo:]]$",
            "^\\8$",
        ] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }
}
