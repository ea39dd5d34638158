//! The pest grammar (`dockerfile.pest`) and small typed wrappers around each
//! of its entry rules, so the rest of the parser never walks raw pairs.
//!
//! Why several entry rules instead of one rule for a whole instruction:
//! BuildKit splits an instruction in stages (keyword, flags, then arguments by
//! a per-instruction rule), and some stages look at bytes while others look at
//! runes. Running one grammar rule per stage keeps each stage exact.

use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "parser/dockerfile.pest"]
struct DockerfileGrammar;

/// Nesting beyond which Go's encoding/json rejects a document ("exceeded max
/// depth"); such input is not JSON for BuildKit either.
const GO_JSON_MAX_DEPTH: usize = 10_000;

/// Prefixes `text` with the escape character, which the grammar pushes on its
/// stack and matches with `PEEK`.
fn with_escape(escape: char, text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 1);
    s.push(escape);
    s.push_str(text);
    s
}

/// Decodes bytes as Latin-1 (one char per byte), so that the grammar can run
/// the byte-wise loops of BuildKit exactly: a byte such as 0x85 or 0xA0 is
/// whitespace for Go's `unicode.IsSpace(rune(b))` even inside a UTF-8 char.
fn latin1(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

/// Maps a byte offset in a Latin-1 decoded string back to the offset in the
/// original bytes.
fn latin1_offset(decoded: &str, pos: usize) -> usize {
    decoded[..pos].chars().count()
}

/// Cuts `text` at byte offset `at`, which may fall inside a UTF-8 char when it
/// came from a byte-wise loop; such a char is replaced rather than split.
fn lossy_from(text: &str, at: usize) -> String {
    String::from_utf8_lossy(&text.as_bytes()[at.min(text.len())..]).into_owned()
}

fn lossy_to(text: &str, at: usize) -> String {
    String::from_utf8_lossy(&text.as_bytes()[..at.min(text.len())]).into_owned()
}

/// Splits an instruction line into its keyword and the text after the first
/// run of whitespace (which may be empty).
pub(crate) fn split_command(line: &str) -> (String, String) {
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::command, line) else {
        // The rule accepts every input; keep going with the whole line as the
        // keyword if it ever did not.
        return (line.to_string(), String::new());
    };
    let mut keyword = String::new();
    let mut rest = String::new();
    if let Some(top) = pairs.next() {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::keyword => keyword = p.as_str().to_string(),
                Rule::cmd_rest => rest = line[p.as_span().start()..].to_string(),
                _ => {}
            }
        }
    }
    (keyword, rest)
}

/// The flags at the start of an instruction's arguments and the arguments
/// that follow them (untrimmed).
pub(crate) struct Flags {
    pub flags: Vec<String>,
    pub rest: String,
}

/// Extracts leading `--flags` as BuildKit's extractBuilderFlags does, byte by
/// byte: each byte of a flag becomes one char (so non-ASCII bytes come out as
/// Latin-1 chars, exactly as BuildKit's `WriteRune(rune(byte))` makes them).
pub(crate) fn extract_flags(args: &str, escape: char) -> Flags {
    // BuildKit stops at the first word that does not start with `--`; the
    // text here starts at a word (it follows the keyword's whitespace).
    if !args.starts_with("--") {
        return Flags {
            flags: Vec::new(),
            rest: args.to_string(),
        };
    }
    let decoded = latin1(args);
    let input = with_escape(escape, &decoded);
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::flags, &input) else {
        return Flags {
            flags: Vec::new(),
            rest: args.to_string(),
        };
    };
    let esc_len = escape.len_utf8();
    let mut flags = Vec::new();
    let Some(top) = pairs.next() else {
        return Flags {
            flags,
            rest: args.to_string(),
        };
    };
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::flag => {
                let end = p.as_span().end();
                let value = flag_value(p);
                if value == "--" {
                    let at = latin1_offset(&decoded, end - esc_len);
                    return Flags {
                        flags,
                        rest: lossy_from(args, at),
                    };
                }
                flags.push(value);
            }
            Rule::flags_rest => {
                let start = p.as_span().start();
                let at = latin1_offset(&decoded, start - esc_len);
                return Flags {
                    flags,
                    rest: lossy_from(args, at),
                };
            }
            _ => {}
        }
    }
    Flags {
        flags,
        rest: String::new(),
    }
}

fn flag_value(flag: Pair<'_, Rule>) -> String {
    let mut value = String::new();
    for p in flag.into_inner().flatten() {
        match p.as_rule() {
            Rule::flag_dashes
            | Rule::flag_char
            | Rule::flag_char_lit
            | Rule::flag_dq_char
            | Rule::flag_sq_char => value.push_str(p.as_str()),
            _ => {}
        }
    }
    value
}

/// BuildKit's parseWords: words of ENV, LABEL and ARG with quotes and escapes
/// kept as written.
pub(crate) fn words(text: &str, escape: char) -> Vec<String> {
    let input = with_escape(escape, text);
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::words, &input) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(top) = pairs.next() else { return out };
    for w in top.into_inner() {
        if w.as_rule() != Rule::word {
            continue;
        }
        let mut text = w.as_str();
        let ends_with_escape = w
            .clone()
            .into_inner()
            .flatten()
            .any(|p| p.as_rule() == Rule::word_eol_esc);
        if ends_with_escape {
            text = &text[..text.len() - escape.len_utf8()];
        }
        if !text.is_empty() {
            out.push(text.to_string());
        }
    }
    out
}

/// The legacy `KEY value` form: the key and the verbatim rest, if any.
pub(crate) fn legacy_name_value(text: &str) -> (String, Option<String>) {
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::name_val_legacy, text) else {
        return (text.to_string(), None);
    };
    let mut key = String::new();
    let mut value = None;
    if let Some(top) = pairs.next() {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::legacy_key => key = p.as_str().to_string(),
                Rule::legacy_value => value = Some(text[p.as_span().start()..].to_string()),
                _ => {}
            }
        }
    }
    (key, value)
}

/// Go's `reWhitespace.Split(text, -1)`.
pub(crate) fn whitespace_list(text: &str) -> Vec<String> {
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::ws_list, text) else {
        return vec![text.to_string()];
    };
    let Some(top) = pairs.next() else {
        return Vec::new();
    };
    top.into_inner()
        .filter(|p| p.as_rule() == Rule::ws_item)
        .map(|p| p.as_str().to_string())
        .collect()
}

/// HEALTHCHECK's type word and the command text after it.
pub(crate) fn health(text: &str) -> (String, String) {
    let decoded = latin1(text);
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::health, &decoded) else {
        return (text.to_string(), String::new());
    };
    let mut typ_end = 0;
    let mut rest_start = decoded.len();
    if let Some(top) = pairs.next() {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::health_type => typ_end = p.as_span().end(),
                Rule::health_rest => rest_start = p.as_span().start(),
                _ => {}
            }
        }
    }
    let typ = lossy_to(text, latin1_offset(&decoded, typ_end));
    let rest = lossy_from(text, latin1_offset(&decoded, rest_start));
    (typ, rest)
}

/// What the exec-form test made of an instruction's arguments.
pub(crate) enum JsonArray {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Valid JSON array holding something other than a string: an error.
    NotStrings,
    /// Not a JSON array at all: the caller falls back to shell form.
    NotJson,
}

/// Deepest nesting of `[`/`{` outside strings: a cheap bound that lets the
/// grammar skip texts Go's decoder would refuse for depth alone.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Go's json.Unmarshal into `[]any`, reduced to what BuildKit asks of it.
pub(crate) fn json_array(text: &str) -> JsonArray {
    let trimmed = text.trim_start_matches(char::is_whitespace);
    if !trimmed.starts_with('[') {
        return JsonArray::NotJson;
    }
    if nesting_depth(trimmed) > GO_JSON_MAX_DEPTH {
        return JsonArray::NotJson;
    }
    match json_array_parse(trimmed) {
        Some(j) => j,
        None => {
            // pest refuses to recurse when the native stack runs low; give a
            // deeply nested (but legal) document a thread with room for it.
            let owned = trimmed.to_string();
            std::thread::Builder::new()
                .stack_size(512 * 1024 * 1024)
                .spawn(move || json_array_parse(&owned).unwrap_or(JsonArray::NotJson))
                .ok()
                .and_then(|h| h.join().ok())
                .unwrap_or(JsonArray::NotJson)
        }
    }
}

/// `None` when pest stopped for lack of stack, so the caller may retry.
fn json_array_parse(text: &str) -> Option<JsonArray> {
    let mut pairs = match DockerfileGrammar::parse(Rule::json_array, text) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.variant.message();
            if msg.contains("stack limit") || msg.contains("call limit") {
                return None;
            }
            return Some(JsonArray::NotJson);
        }
    };
    let Some(top) = pairs.next() else {
        return Some(JsonArray::NotJson);
    };
    // Go reports an out-of-range number as an error of its own, which
    // BuildKit treats like any invalid JSON (shell form).
    let mut overflow = false;
    let mut all_strings = true;
    let mut out = Vec::new();
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::json_string => out.push(json_string_value(p)),
            Rule::json_other => {
                all_strings = false;
                for n in p.into_inner().flatten() {
                    if n.as_rule() == Rule::json_number
                        && !n.as_str().parse::<f64>().is_ok_and(f64::is_finite)
                    {
                        overflow = true;
                    }
                }
            }
            _ => {}
        }
    }
    Some(if overflow {
        JsonArray::NotJson
    } else if all_strings {
        JsonArray::Strings(out)
    } else {
        JsonArray::NotStrings
    })
}

fn hex4(s: &str) -> Option<u32> {
    u32::from_str_radix(s.get(..4)?, 16).ok()
}

/// Decodes a JSON string the way Go does: unpaired surrogates become U+FFFD.
fn json_string_value(p: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    let parts: Vec<Pair<'_, Rule>> = p.into_inner().collect();
    let mut i = 0;
    while i < parts.len() {
        let part = &parts[i];
        i += 1;
        if part.as_rule() == Rule::json_unescaped {
            out.push_str(part.as_str());
            continue;
        }
        let e = part.as_str();
        match e.as_bytes().get(1) {
            Some(b'"') => out.push('"'),
            Some(b'\\') => out.push('\\'),
            Some(b'/') => out.push('/'),
            Some(b'b') => out.push('\u{08}'),
            Some(b'f') => out.push('\u{0C}'),
            Some(b'n') => out.push('\n'),
            Some(b'r') => out.push('\r'),
            Some(b't') => out.push('\t'),
            _ => {
                let cp = hex4(&e[2..]).unwrap_or(0xFFFD);
                if (0xD800..0xDC00).contains(&cp) {
                    // A high surrogate pairs with an immediately following
                    // low surrogate escape; otherwise it is replaced.
                    let low = parts
                        .get(i)
                        .filter(|n| {
                            n.as_rule() == Rule::json_escape && n.as_str().starts_with("\\u")
                        })
                        .and_then(|n| hex4(&n.as_str()[2..]))
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    if let Some(low) = low {
                        let c = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        i += 1;
                    } else {
                        out.push('\u{FFFD}');
                    }
                } else {
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                }
            }
        }
    }
    out
}

/// A heredoc marker word, split into its parts.
pub(crate) struct Marker {
    pub fd: Option<u32>,
    pub chomp: bool,
    pub word: String,
}

pub(crate) fn heredoc_marker(word: &str) -> Option<Marker> {
    let top = DockerfileGrammar::parse(Rule::heredoc_marker, word)
        .ok()?
        .next()?;
    let mut m = Marker {
        fd: None,
        chomp: false,
        word: String::new(),
    };
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::heredoc_fd if !p.as_str().is_empty() => m.fd = p.as_str().parse().ok(),
            Rule::heredoc_chomp => m.chomp = true,
            Rule::heredoc_word => m.word = p.as_str().to_string(),
            _ => {}
        }
    }
    Some(m)
}

/// A `# key = value` line: the key (lower case) and the value, as BuildKit's
/// directive regexp captures them.
pub(crate) fn directive(line: &str) -> Option<(String, String)> {
    let top = DockerfileGrammar::parse(Rule::directive, line)
        .ok()?
        .next()?;
    let mut key = String::new();
    let mut raw = "";
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::directive_key => key = p.as_str().to_ascii_lowercase(),
            Rule::directive_value => raw = p.as_str(),
            _ => {}
        }
    }
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{0C}' | '\r' | ' ');
    if raw.contains('\n') {
        return None;
    }
    let value = raw.trim_matches(is_s);
    if !value.is_empty() {
        return Some((key, value.to_string()));
    }
    // `(.+?)` needs one char: with only whitespace after `=`, the regexp
    // gives the last whitespace char back to the value.
    raw.chars().last().map(|c| (key, c.to_string()))
}
