//! The Dockerfile grammar and the generic parse tree (owned by the parser work).

mod node;

pub use node::{Directives, Dockerfile, Heredoc, Node, Span, Warning};
