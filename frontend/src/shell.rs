//! Word expansion as BuildKit's shell lexer does it.
//!
//! Dockerfile words are not run through a real shell: BuildKit has its own small
//! lexer that removes quotes, processes escapes and expands `$V` / `${V...}`
//! forms, with its own quirks (escapes kept inside `#`/`%`/`/` patterns, glob
//! patterns translated to regular expressions, error wording). kiln must expand
//! exactly as BuildKit does or images differ, so this module follows that
//! lexer's observable behaviour, quirks included, while guaranteeing what
//! BuildKit does not: bounded stack use (the lexer is an explicit state machine,
//! so deeply nested `${a:-${b:-...}}` cannot overflow) and matching without
//! exponential backtracking (patterns run on a Pike VM).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_patternmatcher::gostr::quote as go_quote;

/// The variables visible to an expansion.
///
/// A trait rather than a map type because the planner keeps ARG and ENV scopes
/// in its own structures and must not copy them for every word.
pub trait Env {
    /// `None` when unset; `Some("")` when set and empty.
    fn get(&self, name: &str) -> Option<String>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Ordered `(name, value)` pairs, as an image config's `Env` list is kept; a
/// later pair overrides an earlier one of the same name, as in BuildKit.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref().to_string())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// Builds an environment from `NAME=value` strings the way BuildKit's
/// `BuildEnvs` does (an entry without `=` is set and empty; the last one of a
/// name wins), since image configs and build tables store variables that way.
pub fn env_from_assignments<S: AsRef<str>>(entries: &[S]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for entry in entries {
        let entry = entry.as_ref();
        match entry.split_once('=') {
            Some((k, v)) => env.insert(k.to_string(), v.to_string()),
            None => env.insert(entry.to_string(), String::new()),
        };
    }
    env
}

/// Why a word could not be expanded. Every message reads as BuildKit's,
/// `failed to process "WORD": REASON`, so users can search for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// Malformed word: unterminated quote or `${`, bad substitution, an
    /// unsupported modifier such as `${V:=x}`.
    #[error("failed to process {}: {message}", go_quote(.word))]
    Syntax {
        /// The whole word being expanded.
        word: String,
        /// BuildKit's reason, e.g. `syntax error: missing '}'`.
        message: String,
    },
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty) variable: the Dockerfile
    /// author asked for the build to stop.
    #[error("failed to process {}: {name}: {message}", go_quote(.word))]
    Required {
        /// The whole word being expanded.
        word: String,
        /// The variable that had to be set.
        name: String,
        /// The author's message, or BuildKit's default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that is not a valid glob (a stray `\`).
    #[error(
        "failed to process {}: invalid pattern ({pattern}) in substitution: {message}",
        go_quote(.word)
    )]
    Pattern {
        /// The whole word being expanded.
        word: String,
        /// The pattern as BuildKit saw it (reversed for `%`/`%%`).
        pattern: String,
        /// Why it is invalid, e.g. `invalid escape '\x'`.
        message: String,
    },
    /// The expansion grew past [`Lexer::max_len`]: `ENV A=$B$B$B$B` chained a
    /// few dozen times would otherwise take all the host's memory.
    #[error(
        "failed to process {}: expanded word exceeds the limit of {limit} bytes",
        go_quote(&clip(.word))
    )]
    TooLong {
        /// The whole word being expanded.
        word: String,
        /// The limit that was hit, in bytes.
        limit: usize,
    },
}

/// The longest expansion of one word, in bytes, unless the word itself is
/// longer: no Dockerfile needs more, and BuildKit stops such words too.
pub const MAX_EXPANDED_WORD: usize = 1 << 20;

/// A word as shown in an error: its first 64 characters, so a huge word does
/// not make a huge message.
fn clip(word: &str) -> String {
    match word.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &word[..i]),
        None => word.to_string(),
    }
}

impl ShellError {
    /// The word that failed, so a caller can point at it in the source.
    pub fn word(&self) -> &str {
        match self {
            ShellError::Syntax { word, .. }
            | ShellError::Required { word, .. }
            | ShellError::Pattern { word, .. }
            | ShellError::TooLong { word, .. } => word,
        }
    }
}

/// The result of expanding one word: its value and the variable names it
/// referenced (set or not), which the planner needs to report unused build
/// args.
///
/// Every name the word mentions is in `used`, even inside a default that was
/// not taken (`${A:-$B}` with A set still uses B), as in BuildKit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded<T> {
    /// The expanded word (one-word mode) or fields (field-splitting mode).
    pub value: T,
    /// Every variable name referenced, set or not; callers that need
    /// BuildKit's "unmatched" set take the names their environment lacks.
    pub used: BTreeSet<String>,
}

/// A shell-word lexer for one escape character (`\` or a backtick).
///
/// The flags mirror BuildKit's `Lex` options, because its dispatcher expands
/// some words differently: heredoc bodies with `skip_process_quotes` (quotes
/// belong to the script), RUN's displayed name with `raw_quotes` and
/// `skip_unset_env`, heredoc detection with `raw_quotes` and `raw_escapes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The `# escape=` directive's character.
    pub escape: char,
    /// Keep quote characters in the output (they still group words).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (they still escape).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written instead of expanding
    /// them to nothing.
    pub skip_unset_env: bool,
    /// The most bytes an expansion may produce (or the word's own length if
    /// larger); checked while expanding, so the huge string is never built.
    pub max_len: usize,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer for Dockerfile words with the given escape character and
    /// BuildKit's default behaviour (quotes and escapes removed).
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
            max_len: MAX_EXPANDED_WORD,
        }
    }

    /// See [`Lexer::raw_quotes`].
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// See [`Lexer::raw_escapes`].
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// See [`Lexer::skip_process_quotes`].
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// See [`Lexer::skip_unset_env`].
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// See [`Lexer::max_len`].
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// One-word mode: quotes removed, escapes processed, no field splitting
    /// (BuildKit's `ProcessWord`, used for ENV values, WORKDIR, USER, ...).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded<String>, ShellError> {
        let (done, used) = self.run(word, env)?;
        Ok(Expanded {
            value: done.result,
            used,
        })
    }

    /// Field-splitting mode: unquoted expansions split on whitespace
    /// (BuildKit's `ProcessWords`, used for FROM, COPY sources, EXPOSE, ...).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expanded<Vec<String>>, ShellError> {
        let (done, used) = self.run(word, env)?;
        Ok(Expanded {
            value: done.words,
            used,
        })
    }

    fn run(&self, word: &str, env: &dyn Env) -> Result<(Done, BTreeSet<String>), ShellError> {
        let mut machine = Machine {
            lexer: *self,
            scanner: Scanner::new(word),
            env,
            used: BTreeSet::new(),
            limit: self.max_len.max(word.len()),
            stack: vec![Frame::Word(WordFrame {
                stop: None,
                raw_escapes: self.raw_escapes,
                result: String::new(),
                words: Some(Words::default()),
                then: Then::Finish,
            })],
        };
        match machine.drive() {
            Ok(done) => Ok((done, machine.used)),
            Err(fault) => Err(fault.into_error(word)),
        }
    }
}

/// An error before it is tied to the whole word.
#[derive(Debug)]
enum Fault {
    Syntax(String),
    Required { name: String, message: String },
    Pattern { pattern: String, message: String },
    TooLong { limit: usize },
}

impl Fault {
    fn syntax(message: impl Into<String>) -> Self {
        Fault::Syntax(message.into())
    }

    fn into_error(self, word: &str) -> ShellError {
        let word = word.to_string();
        match self {
            Fault::Syntax(message) => ShellError::Syntax { word, message },
            Fault::Required { name, message } => ShellError::Required {
                word,
                name,
                message,
            },
            Fault::Pattern { pattern, message } => ShellError::Pattern {
                word,
                pattern,
                message,
            },
            Fault::TooLong { limit } => ShellError::TooLong { word, limit },
        }
    }
}

/// Go's `text/scanner` over the word's characters: it drops a byte-order mark
/// at the very start, which BuildKit therefore does too.
struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn new(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        if chars.first() == Some(&'\u{FEFF}') {
            chars.remove(0);
        }
        Scanner { chars, pos: 0 }
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
}

/// How Go prints a rune that is really end-of-input (`string(rune(-1))`).
fn rune_text(c: Option<char>) -> char {
    c.unwrap_or('\u{FFFD}')
}

/// Field splitting as BuildKit does it: unquoted whitespace ends a word,
/// empty words are dropped, quoted or escaped text is kept whole.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    word: String,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.word.is_empty() {
                self.done.push(std::mem::take(&mut self.word));
            }
        } else {
            self.word.push(c);
        }
    }

    fn add_str(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.done.push(self.word);
        }
        self.done
    }
}

/// One level of word processing: the whole word, or the text inside
/// `${V<op>...}` up to its closing character.
struct WordFrame {
    stop: Option<char>,
    raw_escapes: bool,
    result: String,
    /// Only the outermost level splits into fields.
    words: Option<Words>,
    then: Then,
}

impl WordFrame {
    fn add_char(&mut self, c: char) {
        self.result.push(c);
        if let Some(w) = &mut self.words {
            w.add_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.result.push(c);
        if let Some(w) = &mut self.words {
            w.word.push(c);
        }
    }

    fn add_raw_str(&mut self, s: &str) {
        self.result.push_str(s);
        if let Some(w) = &mut self.words {
            w.word.push_str(s);
        }
    }

    /// Expansion results are split into fields when unquoted.
    fn add_expansion(&mut self, s: &str) {
        self.result.push_str(s);
        if let Some(w) = &mut self.words {
            w.add_str(s);
        }
    }
}

/// What to do with a [`WordFrame`]'s text once its closing character is read.
enum Then {
    /// The outermost word: expansion is over.
    Finish,
    /// `${name<op>word}` for `- + ? # %`, optionally after `:`.
    Modifier {
        name: String,
        op: Option<char>,
        chs: String,
        null_is_unset: bool,
    },
    /// `${name/pattern/...`: the pattern is read, the replacement is next.
    ReplacePattern { name: String, all: bool },
    /// `${name/pattern/replacement}`.
    ReplaceWith {
        name: String,
        all: bool,
        pattern: String,
    },
}

/// The inside of a double-quoted string.
struct QuoteFrame {
    body: String,
    raw_escapes: bool,
}

enum Frame {
    Word(WordFrame),
    Quote(QuoteFrame),
}

struct Done {
    result: String,
    words: Vec<String>,
}

/// The lexer as an explicit stack machine; each step consumes input or
/// finishes a frame, so the work is linear in the input plus the text copied
/// out of nested expansions.
struct Machine<'a> {
    lexer: Lexer,
    scanner: Scanner,
    env: &'a dyn Env,
    used: BTreeSet<String>,
    /// See [`Lexer::max_len`].
    limit: usize,
    stack: Vec<Frame>,
}

impl Machine<'_> {
    fn drive(&mut self) -> Result<Done, Fault> {
        loop {
            match self.step() {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {
                    // A step adds one run of input or one value to the top
                    // frame only, so checking it after every step bounds the
                    // text held to a small multiple of the limit.
                    if self.top_len() > self.limit {
                        return Err(Fault::TooLong { limit: self.limit });
                    }
                }
                Err(fault) => return Err(self.unwind(fault)),
            }
        }
    }

    /// The size of the text the innermost level has built so far.
    fn top_len(&self) -> usize {
        match self.stack.last() {
            Some(Frame::Word(w)) => w.result.len(),
            Some(Frame::Quote(q)) => q.body.len(),
            None => 0,
        }
    }

    /// BuildKit rewrites any error raised while reading the inside of a
    /// `${...}` into "missing '}'" (or "missing '/'") when the input is
    /// exhausted; propagating outwards, the outermost such level has the last
    /// word.
    fn unwind(&self, mut fault: Fault) -> Fault {
        if self.scanner.peek().is_some() {
            return fault;
        }
        for frame in self.stack.iter().rev() {
            if let Frame::Word(w) = frame {
                match w.then {
                    Then::Finish => {}
                    Then::Modifier { .. } | Then::ReplaceWith { .. } => {
                        fault = Fault::syntax("syntax error: missing '}'");
                    }
                    Then::ReplacePattern { .. } => {
                        fault = Fault::syntax("syntax error: missing '/' in ${}");
                    }
                }
            }
        }
        fault
    }

    fn step(&mut self) -> Result<Option<Done>, Fault> {
        let lexer = self.lexer;
        let escape = lexer.escape;
        let peeked = self.scanner.peek();
        let Some(top) = self.stack.last_mut() else {
            return Err(Fault::syntax("internal error: empty lexer stack"));
        };
        match top {
            Frame::Word(frame) => match peeked {
                None => {
                    if let Some(stop) = frame.stop {
                        return Err(Fault::syntax(format!(
                            "unexpected end of statement while looking for matching {stop}"
                        )));
                    }
                    self.finish_word()
                }
                Some(c) if Some(c) == frame.stop => {
                    self.scanner.next();
                    self.finish_word()
                }
                Some('$') => {
                    self.start_dollar()?;
                    Ok(None)
                }
                Some('<') => {
                    let text = self.possible_heredoc();
                    if let Some(Frame::Word(frame)) = self.stack.last_mut() {
                        frame.add_raw_str(&text);
                    }
                    Ok(None)
                }
                Some('\'') if !lexer.skip_process_quotes => {
                    let text = self.single_quote()?;
                    if let Some(Frame::Word(frame)) = self.stack.last_mut() {
                        frame.add_raw_str(&text);
                    }
                    Ok(None)
                }
                Some('"') if !lexer.skip_process_quotes => {
                    self.scanner.next();
                    let mut body = String::new();
                    if lexer.raw_quotes {
                        body.push('"');
                    }
                    let raw_escapes = frame.raw_escapes;
                    self.stack
                        .push(Frame::Quote(QuoteFrame { body, raw_escapes }));
                    Ok(None)
                }
                Some(c) => {
                    self.scanner.next();
                    if c == escape {
                        if frame.raw_escapes {
                            frame.add_raw_char(c);
                        }
                        // An escape at the very end is dropped.
                        if let Some(escaped) = self.scanner.next() {
                            frame.add_raw_char(escaped);
                        }
                    } else {
                        frame.add_char(c);
                        // Ordinary characters in bulk: one step per run.
                        let stop = frame.stop;
                        let special = |c: char| {
                            Some(c) == stop
                                || c == escape
                                || matches!(c, '$' | '<')
                                || (!lexer.skip_process_quotes && matches!(c, '\'' | '"'))
                        };
                        while let Some(c) = self.scanner.peek().filter(|c| !special(*c)) {
                            self.scanner.next();
                            frame.add_char(c);
                        }
                    }
                    Ok(None)
                }
            },
            Frame::Quote(quote) => match peeked {
                None => Err(Fault::syntax(
                    "unexpected end of statement while looking for matching double-quote",
                )),
                Some('"') => {
                    self.scanner.next();
                    if lexer.raw_quotes {
                        quote.body.push('"');
                    }
                    let body = std::mem::take(&mut quote.body);
                    self.stack.pop();
                    if let Some(Frame::Word(frame)) = self.stack.last_mut() {
                        frame.add_raw_str(&body);
                    }
                    Ok(None)
                }
                Some('$') => {
                    self.start_dollar()?;
                    Ok(None)
                }
                Some(c) => {
                    self.scanner.next();
                    let mut out = c;
                    if c == escape {
                        if quote.raw_escapes {
                            quote.body.push(c);
                        }
                        match self.scanner.peek() {
                            // A trailing escape is dropped; the missing quote
                            // is reported next.
                            None => return Ok(None),
                            Some(p) if p == '"' || p == '$' || p == escape => {
                                self.scanner.next();
                                out = p;
                            }
                            // Other escapes stay literal inside double quotes.
                            Some(_) => {}
                        }
                    }
                    quote.body.push(out);
                    Ok(None)
                }
            },
        }
    }

    /// Text between single quotes is taken as is; no escape can end it early.
    fn single_quote(&mut self) -> Result<String, Fault> {
        let mut text = String::new();
        let open = self.scanner.next();
        if self.lexer.raw_quotes {
            text.extend(open);
        }
        loop {
            match self.scanner.next() {
                None => {
                    return Err(Fault::syntax(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        text.push('\'');
                    }
                    return Ok(text);
                }
                Some(c) => text.push(c),
            }
        }
    }

    /// `<<` and the blanks after it stay glued to the next field, so a
    /// heredoc marker written `<< EOF` is one field, as BuildKit's parser
    /// expects when it looks for heredocs.
    fn possible_heredoc(&mut self) -> String {
        let mut text = String::from("<");
        self.scanner.next();
        if self.scanner.peek() != Some('<') {
            return text;
        }
        self.scanner.next();
        text.push('<');
        while let Some(c) = self
            .scanner
            .peek()
            .filter(|c| matches!(c, ' ' | '\t' | '\r'))
        {
            self.scanner.next();
            text.push(c);
        }
        text
    }

    /// Hands an expansion's value to the enclosing level.
    fn deliver(&mut self, value: &str) {
        match self.stack.last_mut() {
            Some(Frame::Word(frame)) => frame.add_expansion(value),
            Some(Frame::Quote(quote)) => quote.body.push_str(value),
            None => {}
        }
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        self.used.insert(name.to_string());
        self.env.get(name)
    }

    /// Reads a variable name: a run of digits (positional), one special
    /// parameter character, or letters, digits and `_`.
    fn read_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.scanner.peek() {
            if name.is_empty() && chars::is_digit(c) {
                while let Some(d) = self.scanner.peek().filter(|d| chars::is_digit(*d)) {
                    self.scanner.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.scanner.next();
                name.push(c);
                return name;
            }
            if !chars::is_letter(c) && !chars::is_digit(c) && c != '_' {
                break;
            }
            self.scanner.next();
            name.push(c);
        }
        name
    }

    /// Called with the scanner on a `$`.
    fn start_dollar(&mut self) -> Result<(), Fault> {
        self.scanner.next();
        if self.scanner.peek() != Some('{') {
            let name = self.read_name();
            if name.is_empty() {
                self.deliver("$");
                return Ok(());
            }
            let value = match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            };
            self.deliver(&value);
            return Ok(());
        }
        self.scanner.next();
        match self.scanner.peek() {
            None => return Err(Fault::syntax("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(Fault::syntax("syntax error: bad substitution")),
            Some(_) => {}
        }
        let name = self.read_name();
        let ch = self.scanner.next();
        let mut chs = rune_text(ch).to_string();
        let (op, null_is_unset) = match ch {
            Some('}') => {
                let value = match self.lookup(&name) {
                    Some(v) => v,
                    None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                };
                self.deliver(&value);
                return Ok(());
            }
            Some(':') => {
                let op = self.scanner.next();
                chs.push(rune_text(op));
                (op, true)
            }
            Some(c @ ('+' | '-' | '?' | '#' | '%')) => (Some(c), false),
            Some('/') => {
                let all = self.scanner.peek() == Some('/');
                if all {
                    self.scanner.next();
                }
                self.push_word(Some('/'), true, Then::ReplacePattern { name, all });
                return Ok(());
            }
            _ => {
                return Err(Fault::syntax(format!(
                    "unsupported modifier ({chs}) in substitution"
                )))
            }
        };
        // Pattern operators keep their escapes so `\*` stays a literal star.
        let raw = matches!(op, Some('#' | '%'));
        if null_is_unset && raw {
            // `${V:#p}` / `${V:%p}` are rejected before the pattern is read.
            return Err(Fault::syntax(format!(
                "unsupported modifier ({chs}) in substitution"
            )));
        }
        self.push_word(
            Some('}'),
            raw,
            Then::Modifier {
                name,
                op,
                chs,
                null_is_unset,
            },
        );
        Ok(())
    }

    /// Starts reading the inside of a `${...}`.
    ///
    /// BuildKit (at the commit kiln follows) keeps one shared buffer for the
    /// field being built, and every nested level resets it on entry: text of
    /// the current unquoted field before a `${V<op>...}` is lost in
    /// field-splitting mode (`a${V:-x}b` gives the one field `xb`). kiln
    /// reproduces that so EXPOSE and heredoc detection see what BuildKit sees.
    fn push_word(&mut self, stop: Option<char>, raw_escapes: bool, then: Then) {
        if let Some(Frame::Word(outer)) = self.stack.first_mut() {
            if let Some(words) = &mut outer.words {
                words.word.clear();
            }
        }
        self.stack.push(Frame::Word(WordFrame {
            stop,
            raw_escapes,
            result: String::new(),
            words: None,
            then,
        }));
    }

    /// The top word frame's closing character was read (or input ended for
    /// the outermost one).
    fn finish_word(&mut self) -> Result<Option<Done>, Fault> {
        let Some(Frame::Word(frame)) = self.stack.pop() else {
            return Err(Fault::syntax("internal error: lexer stack out of step"));
        };
        let word = frame.result;
        let skip_unset = self.lexer.skip_unset_env;
        let value = match frame.then {
            Then::Finish => {
                return Ok(Some(Done {
                    result: word,
                    words: frame.words.map(Words::finish).unwrap_or_default(),
                }))
            }
            Then::ReplacePattern { name, all } => {
                self.push_word(
                    Some('}'),
                    true,
                    Then::ReplaceWith {
                        name,
                        all,
                        pattern: word,
                    },
                );
                return Ok(None);
            }
            Then::ReplaceWith { name, all, pattern } => {
                let value = self.lookup(&name);
                match value {
                    None if skip_unset => format!("${{{name}/{pattern}/{word}}}"),
                    value => replace(&value.unwrap_or_default(), &pattern, &word, all, self.limit)?,
                }
            }
            Then::Modifier {
                name,
                op,
                chs,
                null_is_unset,
            } => {
                let value = self.lookup(&name);
                if value.is_none() && skip_unset {
                    format!("${{{name}{chs}{word}}}")
                } else {
                    apply_modifier(&name, value, op, &chs, null_is_unset, word)?
                }
            }
        };
        self.deliver(&value);
        Ok(None)
    }
}

/// `${V-w}`, `${V+w}`, `${V?w}`, `${V#p}`, `${V%p}` and their `:` forms (the
/// colon makes an empty value count as unset).
fn apply_modifier(
    name: &str,
    value: Option<String>,
    op: Option<char>,
    chs: &str,
    null_is_unset: bool,
    word: String,
) -> Result<String, Fault> {
    let missing = match &value {
        None => true,
        Some(v) => null_is_unset && v.is_empty(),
    };
    match op {
        Some('-') => Ok(if missing {
            word
        } else {
            value.unwrap_or_default()
        }),
        Some('+') => Ok(if missing { String::new() } else { word }),
        Some('?') => {
            if !missing {
                return Ok(value.unwrap_or_default());
            }
            let message = if !word.is_empty() {
                word
            } else if value.is_none() {
                "is not allowed to be unset".to_string()
            } else {
                "is not allowed to be empty".to_string()
            };
            Err(Fault::Required {
                name: name.to_string(),
                message,
            })
        }
        Some(c @ ('#' | '%')) => {
            let value = value.unwrap_or_default();
            // `##` / `%%` take the longest match, one `#` / `%` the shortest.
            let (pattern, greedy) = match word.strip_prefix(c) {
                Some(rest) => (rest.to_string(), true),
                None => (word, false),
            };
            if c == '#' {
                trim_prefix(&pattern, &value, greedy)
            } else {
                trim_suffix(&pattern, &value, greedy)
            }
        }
        _ => Err(Fault::syntax(format!(
            "unsupported modifier ({chs}) in substitution"
        ))),
    }
}

fn pattern_fault(pattern: &str, error: glob::InvalidEscape) -> Fault {
    Fault::Pattern {
        pattern: pattern.to_string(),
        message: error.to_string(),
    }
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fault> {
    let glob = glob::Glob::compile(pattern, greedy).map_err(|m| pattern_fault(pattern, m))?;
    let hay: Vec<char> = value.chars().collect();
    Ok(match glob.find(&hay, 0, true) {
        Some((_, end)) => hay[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// The shortest or longest matching suffix is the matching prefix of the
/// reversed value under the reversed pattern (escapes kept before the
/// character they escape); errors therefore name the reversed pattern, as
/// BuildKit's do.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fault> {
    let reversed_pattern = glob::reverse_pattern(pattern);
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed_pattern, &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// `${V/p/r}` replaces the leftmost longest-preferred match with `r` taken
/// literally; `${V//p/r}` replaces every match and, because BuildKit hands `r`
/// to Go's `ReplaceAllString`, expands `$0`/`${0}` in it to the match, `$$` to
/// `$` and any other `$name` to nothing. Stops with [`Fault::TooLong`] once
/// the result passes `limit` (a 1 MiB value with every character replaced by
/// a 1 MiB text would be a TiB).
fn replace(
    value: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
    limit: usize,
) -> Result<String, Fault> {
    let glob = glob::Glob::compile(pattern, true).map_err(|m| pattern_fault(pattern, m))?;
    let hay: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match glob.find(&hay, 0, false) {
            Some((start, end)) => {
                let mut out: String = hay[..start].iter().collect();
                out.push_str(replacement);
                out.extend(&hay[end..]);
                out
            }
            None => value.to_string(),
        });
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= hay.len() {
        let Some((start, end)) = glob.find(&hay, search, false) else {
            break;
        };
        out.extend(&hay[last_end..start]);
        // No replacement for an empty match right after the previous match.
        if end > last_end || start == 0 {
            let matched: String = hay[start..end].iter().collect();
            expand_template(&mut out, replacement, &matched);
        }
        if out.len() > limit {
            return Err(Fault::TooLong { limit });
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&hay[last_end.min(hay.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern with no capture groups.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| chars::is_letter(*c) || chars::is_digit(*c) || *c == '_')
            .map(char::len_utf8)
            .sum();
        let closed = !braced || body[name_len..].starts_with('}');
        if name_len == 0 || !closed {
            // Malformed: the `$` is literal.
            out.push('$');
            continue;
        }
        if &body[..name_len] == "0" {
            out.push_str(matched);
        }
        rest = &body[name_len + usize::from(braced)..];
    }
    out.push_str(rest);
}

/// Glob patterns of `${V#p}`, `${V%p}` and `${V/p/r}`.
///
/// Not the path matcher (`kiln_patternmatcher`): these are shell patterns
/// over a variable's value, not over paths, so `*` crosses `/` (only a
/// newline stops it), there are no classes, and `#`/`%` versus `##`/`%%`
/// choose the shortest or longest match, which Go's `filepath.Match` has no
/// notion of.
///
/// BuildKit turns `*` into `.*` (or `.*?`), `?` into `.` and runs Go's
/// regexp, which prefers matches in backtracking order. A Pike VM over the
/// three kinds of atom gives the same match in O(pattern × value) time, with
/// no backtracking and no recursion.
mod glob {
    /// A `\` before something it cannot escape (`None`: at the end), worded
    /// as Go's regexp parser words it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("invalid escape '\\{}'", super::rune_text(*.0))]
    pub struct InvalidEscape(pub Option<char>);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Atom {
        Lit(char),
        /// `?`: any character but a newline (Go's `.`).
        Any,
        /// `*`: any run of characters without a newline.
        Star,
    }

    #[derive(Debug)]
    pub struct Glob {
        atoms: Vec<Atom>,
        greedy: bool,
        scratch: std::cell::RefCell<Scratch>,
    }

    /// Thread lists and visit stamps, kept between searches of one value.
    #[derive(Debug, Default)]
    struct Scratch {
        seen: Vec<usize>,
        current: Vec<(usize, usize)>,
        next: Vec<(usize, usize)>,
    }

    impl Glob {
        /// `\` escapes `*`, `?` and `\`; before `}` or `/` it is dropped (it
        /// was only there to hide them from `${...}`); anything else after it
        /// is an error worded as Go's.
        pub fn compile(pattern: &str, greedy: bool) -> Result<Glob, InvalidEscape> {
            let mut chars = pattern.chars().peekable();
            // Go's text/scanner drops a leading byte-order mark.
            if chars.peek() == Some(&'\u{FEFF}') {
                chars.next();
            }
            let mut atoms = Vec::new();
            while let Some(c) = chars.next() {
                let atom = match c {
                    '*' => Atom::Star,
                    '?' => Atom::Any,
                    '\\' => {
                        if matches!(chars.peek(), Some('}' | '/')) {
                            continue;
                        }
                        match chars.next() {
                            Some(e @ ('*' | '?' | '\\')) => Atom::Lit(e),
                            other => return Err(InvalidEscape(other)),
                        }
                    }
                    c => Atom::Lit(c),
                };
                // `**` prefers the same match ends as `*`; one star keeps the
                // thread lists short.
                if atom == Atom::Star && atoms.last() == Some(&Atom::Star) {
                    continue;
                }
                atoms.push(atom);
            }
            Ok(Glob {
                atoms,
                greedy,
                scratch: Default::default(),
            })
        }

        /// The preferred match starting at `from` (anchored) or at the
        /// leftmost possible position from `from` on, as character offsets.
        pub fn find(&self, hay: &[char], from: usize, anchored: bool) -> Option<(usize, usize)> {
            let n = self.atoms.len();
            let mut scratch = self.scratch.borrow_mut();
            let Scratch {
                seen,
                current,
                next,
            } = &mut *scratch;
            seen.clear();
            seen.resize(n + 1, 0);
            current.clear();
            let mut matched = None;
            let mut pos = from;
            while pos <= hay.len() {
                let stamp = pos + 1;
                if matched.is_none() && (!anchored || pos == from) {
                    self.add(current, seen, stamp, 0, pos);
                }
                if current.is_empty() {
                    break;
                }
                let c = hay.get(pos).copied();
                let next_stamp = stamp + 1;
                next.clear();
                for &(pc, start) in current.iter() {
                    let Some(atom) = self.atoms.get(pc) else {
                        // Lower-priority threads lose to this match.
                        matched = Some((start, pos));
                        break;
                    };
                    match (atom, c) {
                        (Atom::Lit(l), Some(c)) if *l == c => {
                            self.add(next, seen, next_stamp, pc + 1, start)
                        }
                        (Atom::Any, Some(c)) if c != '\n' => {
                            self.add(next, seen, next_stamp, pc + 1, start)
                        }
                        (Atom::Star, Some(c)) if c != '\n' => {
                            self.add(next, seen, next_stamp, pc, start)
                        }
                        _ => {}
                    }
                }
                std::mem::swap(current, next);
                pos += 1;
            }
            matched
        }

        /// Adds the threads reachable from `pc` without consuming input, in
        /// priority order: a greedy star prefers another character, a lazy
        /// one prefers moving on.
        fn add(
            &self,
            list: &mut Vec<(usize, usize)>,
            seen: &mut [usize],
            stamp: usize,
            pc: usize,
            start: usize,
        ) {
            let n = self.atoms.len();
            let is_star = |p: usize| p < n && self.atoms[p] == Atom::Star;
            if self.greedy {
                let mut p = pc;
                loop {
                    if seen[p] == stamp {
                        return;
                    }
                    seen[p] = stamp;
                    list.push((p, start));
                    if !is_star(p) {
                        return;
                    }
                    p += 1;
                }
            } else {
                let mut p = pc;
                while is_star(p) && seen[p] != stamp {
                    seen[p] = stamp;
                    p += 1;
                }
                let first_unvisited_star = p;
                if !is_star(p) && seen[p] != stamp {
                    seen[p] = stamp;
                    list.push((p, start));
                }
                for s in (pc..first_unvisited_star).rev() {
                    list.push((s, start));
                }
            }
        }
    }

    /// Reverses a pattern character by character but keeps each `\` before
    /// the character it escapes (`a\*c` becomes `c\*a`).
    pub fn reverse_pattern(pattern: &str) -> String {
        let chars: Vec<char> = pattern.chars().collect();
        let mut out = vec!['\0'; chars.len()];
        let last = chars.len().saturating_sub(1);
        let mut i = 0;
        while i < chars.len() {
            let o = last - i;
            if chars[i] == '\\' && i != last {
                out[o - 1] = '\\';
                out[o] = chars[i + 1];
                i += 2;
            } else {
                out[o] = chars[i];
                i += 1;
            }
        }
        out.into_iter().collect()
    }
}

// Go's `unicode.IsLetter` and `unicode.IsDigit`, which decide where a
// variable name ends (written once, beside `strconv.Quote`).
use kiln_patternmatcher::gostr as chars;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(input: &str, pairs: &[(&str, &str)]) -> String {
        match Lexer::new('\\').process_word(input, &env(pairs)) {
            Ok(e) => e.value,
            Err(e) => panic!("{input:?}: {e}"),
        }
    }

    fn fails(input: &str, pairs: &[(&str, &str)]) -> String {
        match Lexer::new('\\').process_word(input, &env(pairs)) {
            Ok(e) => panic!("{input:?} should fail, gave {:?}", e.value),
            Err(e) => e.to_string(),
        }
    }

    fn used(input: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        let e = Lexer::new('\\')
            .process_word(input, &env(pairs))
            .expect(input);
        e.used.into_iter().collect()
    }

    #[test]
    fn expansion_is_bounded_while_expanding() {
        let big = "x".repeat(300_000);
        let vars = [("A", big.as_str())];
        // 4 × 300 kB passes the 1 MiB limit; 3 × does not.
        assert_eq!(word("$A$A$A", &vars).len(), 900_000);
        for input in [
            "$A$A$A$A",
            "\"$A$A$A$A\"",
            "${X:-$A$A$A$A}",
            "a${A}b${A}c${A}d${A}",
        ] {
            let e = fails(input, &vars);
            assert!(
                e.contains("exceeds the limit of 1048576 bytes"),
                "{input}: {e}"
            );
        }
        // Replacing every character by a big text would be 300 GB.
        let e = fails("${A//x/$A}", &vars);
        assert!(e.contains("exceeds the limit"), "{e}");
        // A word may always be as long as itself.
        let long = "y".repeat(2 << 20);
        assert_eq!(word(&long, &[]).len(), 2 << 20);
        // The message quotes only the start of a long word.
        let e = fails(
            &format!("${{A}}${{A}}${{A}}${{A}}{}", "z".repeat(500)),
            &vars,
        );
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn plain_and_braced_variables() {
        let e = [("A", "x"), ("B_2", "y"), ("한국", "k")];
        assert_eq!(word("$A-${A}-${B_2}-$B_2.-$한국", &e), "x-x-y-y.-k");
        assert_eq!(word("$UNSET|${UNSET}|$.|$", &e), "||$.|$");
        assert_eq!(word("$1x $@@ ${#} $0a", &e), "x @  a");
    }

    #[test]
    fn default_operators() {
        let e = [("SET", "v"), ("EMPTY", "")];
        assert_eq!(word("${SET-d}|${EMPTY-d}|${NO-d}", &e), "v||d");
        assert_eq!(word("${SET:-d}|${EMPTY:-d}|${NO:-d}", &e), "v|d|d");
        assert_eq!(word("${NO:-${NO2:-${SET}}}", &e), "v");
        assert_eq!(word("${NO:-'a b' \"c\" \\}}", &e), "a b c }");
    }

    #[test]
    fn alternate_operators() {
        let e = [("SET", "v"), ("EMPTY", "")];
        assert_eq!(word("${SET+a}|${EMPTY+a}|${NO+a}", &e), "a|a|");
        assert_eq!(word("${SET:+a}|${EMPTY:+a}|${NO:+a}", &e), "a||");
        assert_eq!(word("${SET:+-${SET}-}", &e), "-v-");
    }

    #[test]
    fn required_operators() {
        let e = [("SET", "v"), ("EMPTY", ""), ("M", "x")];
        assert_eq!(word("${SET?}${SET:?}${EMPTY?}", &e), "vv");
        assert_eq!(
            fails("${NO?}", &e),
            "failed to process \"${NO?}\": NO: is not allowed to be unset"
        );
        assert_eq!(
            fails("${EMPTY:?}", &e),
            "failed to process \"${EMPTY:?}\": EMPTY: is not allowed to be empty"
        );
        assert!(fails("${NO:?message here$M}", &e).ends_with("NO: message herex"));
        assert!(fails("${EMPTY:?message here$M}", &e).ends_with("EMPTY: message herex"));
    }

    #[test]
    fn prefix_removal() {
        let e = [("F", "xxyy"), ("X", "x"), ("E", ""), ("Q", "???y")];
        assert_eq!(
            word("${F#x}|${F#*x*y}|${F#*}|${F#}|${F#$X}|${F#$E}", &e),
            "xyy|y|xxyy|xxyy|xyy|xxyy"
        );
        assert_eq!(word("${F##*x}|${F##}|${F##*}", &e), "yy|xxyy|");
        assert_eq!(word("${Q#?\\?}", &e), "?y");
        assert!(fails("${F:#x}", &e).ends_with("unsupported modifier (:#) in substitution"));
        assert!(fails("${F:%x}", &e).ends_with("unsupported modifier (:%) in substitution"));
        assert_eq!(word("${NO#x}", &e), "");
        // Regex metacharacters are literal; `\}` hides the brace from `${}`.
        let meta = [("M", "()[]{}^$.*?|\\x")];
        assert_eq!(word("${M#()[]{\\}^$.\\*\\?|\\\\}", &meta), "x");
        // `?` and `*` never match a newline, as Go's `.` does not.
        assert_eq!(
            word("${N#?}|${N##*}", &[("N", "\nab\ncd")]),
            "\nab\ncd|\nab\ncd"
        );
    }

    #[test]
    fn suffix_removal() {
        let e = [
            ("F", "xxyy"),
            ("S", "xx**"),
            ("T", "a***yy*"),
            ("P", "a.tar.gz"),
        ];
        assert_eq!(word("${F%y}|${F%}|${F%%*}|${F%*}", &e), "xxy|xxyy||xxyy");
        assert_eq!(word("${S%%\\**}|${T%%\\**\\*}", &e), "xx|a");
        assert_eq!(
            word("${P%.*}|${P%%.*}|${P#*.}|${P##*.}", &e),
            "a.tar|a|tar.gz|gz"
        );
        assert_eq!(word("${ABC:-.}${F%x}${ABC:-.}", &e), ".xxyy.");
    }

    #[test]
    fn replacement() {
        let e = [
            ("F", "/foo*/*/*.txt"),
            ("N", "\\*/"),
            ("T", "/tmp/tmp/bar.txt"),
            ("TN", "/tmp"),
            ("A", "/a/foo/b/c.txt"),
            ("AN", "/?/"),
            ("R", "/"),
            ("U", "http://google.de"),
        ];
        assert_eq!(
            word("${F/$N/.} - ${F//$N/.}", &e),
            "/foo.*/*.txt - /foo..*.txt"
        );
        assert_eq!(
            word("${T/$TN/} - ${T//$TN/}", &e),
            "/tmp/bar.txt - /bar.txt"
        );
        assert_eq!(
            word("${A/$AN/$R} - ${A//$AN/$R}", &e),
            "/foo/b/c.txt - /foo/c.txt"
        );
        assert_eq!(word("${U/http:\\/\\//https://}", &e), "https://google.de");
        assert_eq!(word("${T//\\//\\/}", &e), "\\/tmp\\/tmp\\/bar.txt");
        assert_eq!(word("${T/$EMPTY/ww}", &e), "ww/tmp/tmp/bar.txt");
        assert_eq!(word("${T///}|${NO///}", &e), "/tmp/tmp/bar.txt|");
        assert!(fails("${T//ww}", &e).ends_with("syntax error: missing '/' in ${}"));
        assert!(fails("${T//}", &e).ends_with("syntax error: missing '/' in ${}"));
    }

    #[test]
    fn replace_all_follows_go_regexp() {
        let e = [("V", "banana"), ("N", "a\nb"), ("AB", "ab")];
        // ReplaceAllString expands `$0` to the match; a single replacement
        // is literal.
        assert_eq!(
            word("${V//a/'<$0>'}|${V/a/'<$0>'}", &e),
            "b<a>n<a>n<a>|b<$0>nana"
        );
        assert_eq!(word("${V//a/'$$${0}$x${y'}", &e), "b$a${yn$a${yn$a${y");
        // Empty matches right after a match are not replaced.
        assert_eq!(word("${AB//*/x}|${N//*/x}|${N//?/x}", &e), "x|x\nx|x\nx");
        assert_eq!(word("${AB//$EMPTY/-}", &e), "-a-b-");
    }

    #[test]
    fn invalid_patterns() {
        let e = [("V", "v")];
        assert_eq!(
            fails("${V#\\x}", &e),
            "failed to process \"${V#\\\\x}\": invalid pattern (\\x) in substitution: invalid escape '\\x'"
        );
        // Suffix patterns are reported reversed, as BuildKit reports them.
        assert!(fails("${V%\\xy}", &e).contains("invalid pattern (y\\x)"));
        assert!(fails("${V/\\a/b}", &e).contains("invalid pattern (\\a)"));
        // With a backtick escape, a trailing `\` reaches the pattern.
        let err = Lexer::new('`')
            .process_word("${V#a\\}", &env(&e))
            .unwrap_err();
        assert!(
            err.to_string().ends_with("invalid escape '\\\u{FFFD}'"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "${", "${}", "${:}", "${{a}", "${a", "${a:-b", "${a:=b}", "${a:x}", "'a", "\"a",
            "\"a\\\"",
        ] {
            assert!(fails(bad, &[]).starts_with("failed to process "), "{bad}");
        }
        assert!(fails("${a:x}", &[]).ends_with("unsupported modifier (:x) in substitution"));
        assert!(fails("${a:", &[]).ends_with("syntax error: missing '}'"));
    }

    #[test]
    fn quotes_and_escapes() {
        let e = [("P", "/home")];
        assert_eq!(word("a'b c'\"d $P\\\"\"\\ e", &e), "ab cd /home\" e");
        assert_eq!(word("'$P \\'", &e), "$P \\");
        assert_eq!(word("\"\\a\\\\\\$P\"", &e), "\\a\\$P");
        assert_eq!(word("x\\", &e), "x");
    }

    #[test]
    fn field_splitting() {
        let e = env(&[("S", " a  b "), ("E", "")]);
        let words = |s: &str| Lexer::new('\\').process_words(s, &e).unwrap().value;
        assert_eq!(words("x${S}y"), ["x", "a", "b", "y"]);
        assert_eq!(words("x\"${S}\"y"), ["x a  b y"]);
        assert_eq!(words("a\\ b  c\t'd e' \"\" $E"), ["a b", "c", "d e"]);
        assert_eq!(words("${NO:-p q}"), ["p", "q"]);
        assert!(words("  ").is_empty());
    }

    #[test]
    fn buildkit_field_quirks() {
        let e = env(&[("V", "v")]);
        let words = |s: &str| Lexer::new('\\').process_words(s, &e).unwrap().value;
        // `<<` keeps the blanks after it in the same field (heredoc markers).
        assert_eq!(words("a << \tEOF b <c"), ["a", "<< \tEOF", "b", "<c"]);
        // A nested `${V<op>...}` drops the pending unquoted field text, as
        // BuildKit's shared word buffer does; one-word mode is unaffected.
        assert_eq!(words("abc${V:-x}def ghi"), ["vdef", "ghi"]);
        assert_eq!(words("ab\"${V#x}\"c d${V}e"), ["vc", "dve"]);
        assert_eq!(word("abc${V:-x}def", &[("V", "v")]), "abcvdef");
    }

    #[test]
    fn used_names_include_untaken_branches() {
        let e = [("A", "1")];
        assert_eq!(
            used("${A:-$B} ${C+x} ${D#$E} ${F/$G/$H}", &e),
            ["A", "B", "C", "D", "E", "F", "G", "H"]
        );
        assert_eq!(used("$1 $@ ${#} '$NOT' \\$NOT2", &e), ["#", "1", "@"]);
    }

    #[test]
    fn lexer_modes() {
        let e = env(&[("A", "1")]);
        let raw = Lexer::new('\\')
            .with_raw_quotes(true)
            .with_skip_unset_env(true);
        assert_eq!(
            raw.process_words("x \"a $A\" '$B' $B ${B} ${B:-d} ${B//a/b}", &e)
                .unwrap()
                .value,
            ["x", "\"a 1\"", "'$B'", "$B", "${B}", "${B:-d}", "${B/a/b}"]
        );
        let raw_esc = Lexer::new('\\').with_raw_escapes(true);
        assert_eq!(
            raw_esc
                .process_words("a\\ b \"c\\x\\$\"", &e)
                .unwrap()
                .value,
            ["a\\ b", "c\\\\x\\$"]
        );
        let script = Lexer::new('\\').with_skip_process_quotes(true);
        assert_eq!(
            script.process_word("echo '$A' \"$A\"", &e).unwrap().value,
            "echo '1' \"1\""
        );
    }

    #[test]
    fn go_scanner_quirks() {
        // A leading byte-order mark is dropped, like Go's text/scanner does.
        assert_eq!(word("\u{FEFF}ab\u{FEFF}", &[]), "ab\u{FEFF}");
        // Names follow Go's Unicode categories: letters (L) and decimal
        // digits (Nd) only.
        let e = [("a١", "v"), ("١٢", "d")];
        assert_eq!(word("$a١|$١٢x|$Ⅻ", &e), "v|dx|$Ⅻ");
    }

    #[test]
    fn error_quoting_is_go_strconv() {
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("\t\n\x01\x7f"), "\"\\t\\n\\x01\\x7f\"");
        assert_eq!(go_quote("é한👽\u{a0}\u{200b}"), "\"é한👽\\u00a0\\u200b\"");
        assert_eq!(go_quote("\u{e0001}"), "\"\\U000e0001\"");
    }

    #[test]
    fn pattern_reversal() {
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ];
        for (pattern, reversed) in cases {
            assert_eq!(glob::reverse_pattern(pattern), reversed);
        }
    }

    #[test]
    fn envs_from_pairs_and_assignments() {
        let pairs = vec![("A", "1"), ("B", "2"), ("A", "3")];
        assert_eq!(
            Lexer::new('\\').process_word("$A$B", &pairs).unwrap().value,
            "32"
        );
        let env = env_from_assignments(&["foo=bar", "car=hat", "car=bike", "bare"]);
        assert_eq!(env.get("car").map(String::as_str), Some("bike"));
        assert_eq!(env.get("bare").map(String::as_str), Some(""));
    }

    #[test]
    fn release_file_name_example() {
        let w = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
        let mut v7 = base.to_vec();
        v7.extend([("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
        assert_eq!(word(w, &v7), "something-v1.2.3.linux-arm-v7.tar.gz");
        let mut plain = base.to_vec();
        plain.extend([("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]);
        assert_eq!(word(w, &plain), "something-v1.2.3.linux-arm64.tar.gz");
    }
}
