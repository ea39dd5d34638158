//! Word expansion as BuildKit's shell lexer does it (owned by the shell-expansion
//! work; this is the contract other modules call).

/// The variables visible to an expansion.
pub trait Env {
    /// `None` when unset; `Some("")` when set and empty.
    fn get(&self, name: &str) -> Option<String>;
}

impl Env for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::BTreeMap::get(self, name).cloned()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("{0}")]
    Syntax(String),
}

/// The result of expanding one word: its value and the variable names it
/// referenced (set or not), which the planner needs to report unused build
/// args.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded<T> {
    pub value: T,
    pub used: std::collections::BTreeSet<String>,
}

/// A shell-word lexer for one escape character (`\` or a backtick).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// One-word mode: quotes removed, escapes processed, no field splitting.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded<String>, ShellError> {
        let _ = (word, env);
        Err(ShellError::Syntax("word expansion is not implemented yet".into()))
    }

    /// Field-splitting mode: unquoted expansions split on whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Expanded<Vec<String>>, ShellError> {
        let _ = (word, env);
        Err(ShellError::Syntax("word expansion is not implemented yet".into()))
    }
}
