//! The generic parse tree: one [`Node`] per instruction, as BuildKit's parser
//! produces it. This is the contract between the grammar and everything that
//! interprets instructions; fields may be added, never repurposed.

use serde::Serialize;

/// Where something sits in its Dockerfile, so every later error can point at
/// a line and column. Lines and columns are 1-based; offsets are byte offsets
/// into the original source (after nothing was removed from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    /// First physical line of the instruction.
    pub start_line: usize,
    /// Last physical line consumed, heredoc bodies and continuations included.
    pub end_line: usize,
    /// Column of the first character (1-based, in characters).
    pub start_col: usize,
    /// Byte offset of the first character.
    pub offset: usize,
    /// Byte length of the whole instruction text.
    pub len: usize,
}

/// A heredoc body attached to an instruction (`<<EOF`, `<<-EOF`, `3<<"IN"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word without quotes or `-`.
    pub name: String,
    /// The body, lines joined with `\n` and ending with `\n` (tabs already
    /// stripped for `<<-`).
    pub content: String,
    /// False when the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<IN`), if any.
    pub fd: Option<u32>,
}

/// One instruction as the parser sees it, before any typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword in lower case (`from`, `run`, … or an unknown word).
    pub keyword: String,
    /// Leading `--flags`, quotes removed, as BuildKit's dump prints them.
    pub flags: Vec<String>,
    /// The arguments, split per instruction as BuildKit's parser splits them
    /// (see shared/conformance/README.md). ONBUILD has none: see `next`.
    pub args: Vec<String>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// ONBUILD's inner instruction.
    pub next: Option<Box<Node>>,
    /// The instruction's text as written, continuations joined (without the
    /// escape-newline pairs), heredoc bodies excluded.
    pub original: String,
    /// Where the instruction sits.
    pub span: Span,
}

/// The parser directives at the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    /// `\` unless `# escape=` says a backtick.
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// Something worth telling the user that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub message: String,
    pub span: Span,
}

/// A whole parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}
