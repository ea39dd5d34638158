//! Finding heredoc markers in an instruction line.
//!
//! BuildKit finds them by running its shell lexer over the whole line (quotes
//! and escapes kept raw, variables left unexpanded) and testing each resulting
//! word against the marker pattern; the delimiter word is then lexed again to
//! learn whether any part of it was quoted (quoted = no expansion of the
//! body). Which words come out of that lexer decides which markers count
//! (`RUN "<<EOF"` has none, `RUN << EOF` has one), so this module reproduces
//! the lexer's word splitting, including its quirks, without expanding
//! anything: every variable is unset.

use super::grammar;

/// Beyond this nesting of `${…}` the line is treated as unlexable (no
/// heredocs): it bounds recursion on hostile input.
const MAX_NESTING: usize = 200;

/// A heredoc found on the instruction line; the body is read afterwards.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: Option<u32>,
}

/// Words being collected; the buffer of the word in progress is shared by all
/// nesting levels, as in BuildKit's lexer (a nested `${…}` clears it).
struct Words {
    words: Vec<String>,
    in_word: bool,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    buf: String,
    depth: usize,
}

type Lexed<T> = Result<T, LexError>;

/// Why BuildKit's lexer gives up on a word, in its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LexError {
    /// `${…}` nested beyond [`MAX_NESTING`].
    #[error("nested too deeply")]
    TooDeep,
    /// A quote or `${…}` never closed; what was looked for.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unmatched(String),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// The modifier characters as written.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
}

/// Why a heredoc marker could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MarkerError {
    /// The delimiter word (Go-quoted, as BuildKit prints it) does not lex.
    #[error("failed to process {word}: {source}")]
    Lex {
        word: String,
        #[source]
        source: LexError,
    },
    /// The two lexings of the delimiter disagree on its words.
    #[error("internal lexing of heredoc produced inconsistent results: {0}")]
    Inconsistent(String),
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, ch);
        }
    }
    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }
    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
        self.words
    }
}

const ESCAPE: char = '\\';

impl Lexer {
    fn new(text: &str, raw_quotes: bool, raw_escapes: bool) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            raw_quotes,
            raw_escapes,
            buf: String::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn words(mut self) -> Lexed<Vec<String>> {
        let raw = self.raw_escapes;
        self.stop_on(None, raw).map(|(_, w)| w)
    }

    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Lexed<(String, Vec<String>)> {
        if self.depth >= MAX_NESTING {
            return Err(LexError::TooDeep);
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Lexed<(String, Vec<String>)> {
        let mut result = String::new();
        self.buf.clear();
        let mut words = Words {
            words: Vec::new(),
            in_word: false,
        };
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                let mut buf = std::mem::take(&mut self.buf);
                let w = words.finish(&mut buf);
                self.buf = buf;
                return Ok((result, w));
            }
            let special = match ch {
                '$' => Some(self.dollar()?),
                '<' => Some(self.possible_heredoc()),
                '\'' => Some(self.single_quote()?),
                '"' => Some(self.double_quote()?),
                _ => None,
            };
            let mut buf = std::mem::take(&mut self.buf);
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&mut buf, &tmp);
                } else {
                    words.add_raw_string(&mut buf, &tmp);
                }
                self.buf = buf;
                continue;
            }
            let mut ch = self.next().unwrap_or(ch);
            if ch == ESCAPE {
                if self.raw_escapes {
                    words.add_raw_char(&mut buf, ch);
                    result.push(ch);
                }
                match self.next() {
                    None => {
                        self.buf = buf;
                        break;
                    }
                    Some(c) => {
                        ch = c;
                        words.add_raw_char(&mut buf, ch);
                    }
                }
            } else {
                words.add_char(&mut buf, ch);
            }
            result.push(ch);
            self.buf = buf;
        }
        if let Some(stop) = stop {
            return Err(LexError::Unmatched(stop.to_string()));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let w = words.finish(&mut buf);
        self.buf = buf;
        Ok((result, w))
    }

    fn single_quote(&mut self) -> Lexed<String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => return Err(LexError::Unmatched("single-quote".into())),
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Lexed<String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => return Err(LexError::Unmatched("double-quote".into())),
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or(' ');
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some('"') | Some('$') | Some(ESCAPE) => ch = self.next().unwrap_or(ch),
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    /// `$name` and `${…}` with every variable unset: the text comes back as
    /// written (minus what BuildKit drops), or an error where BuildKit errs.
    fn dollar(&mut self) -> Lexed<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.next();
        match self.peek() {
            None => return Err(LexError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(LexError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let first = self.next();
        let mut chs: String = first.map_or('\u{FFFD}', |c| c).to_string();
        match first {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':') | Some('+') | Some('-') | Some('?') | Some('#') | Some('%') => {
                let mut op = first;
                let null_is_unset = op == Some(':');
                if null_is_unset {
                    op = self.next();
                    chs.push(op.map_or('\u{FFFD}', |c| c));
                }
                let raw = matches!(op, Some('#') | Some('%'));
                if null_is_unset && raw {
                    return Err(LexError::UnsupportedModifier(chs));
                }
                let (word, _) = self.stop_on(Some('}'), raw).map_err(|e| {
                    if self.peek().is_none() {
                        LexError::MissingBrace
                    } else {
                        e
                    }
                })?;
                Ok(format!("${{{name}{chs}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let (pattern, _) = self.stop_on(Some('/'), true)?;
                let (replacement, _) = self.stop_on(Some('}'), true)?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(LexError::UnsupportedModifier(chs)),
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut s = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            self.next();
            s.push(c);
        }
        s
    }
}

/// The heredoc markers of an instruction line, in order. A line the lexer
/// cannot split (an unterminated quote, say) has none, as in BuildKit.
pub(crate) fn markers(line: &str) -> Result<Vec<Marker>, MarkerError> {
    let Ok(words) = Lexer::new(line, true, true).words() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for w in words {
        if let Some(m) = marker(&w)? {
            out.push(m);
        }
    }
    Ok(out)
}

fn marker(word: &str) -> Result<Option<Marker>, MarkerError> {
    let Some(m) = grammar::heredoc_marker(word) else {
        return Ok(None);
    };
    let rest = m.word.as_str();
    if rest.is_empty() {
        return Ok(None);
    }
    let fail = |source| MarkerError::Lex {
        word: super::quote::go_quote(rest),
        source,
    };
    let words = Lexer::new(rest, false, false).words().map_err(fail)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer::new(rest, true, false).words().map_err(fail)?;
    if raw.len() != words.len() {
        return Err(MarkerError::Inconsistent(rest.to_string()));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Marker {
        name,
        expand,
        chomp: m.chomp,
        fd: m.fd,
    }))
}
