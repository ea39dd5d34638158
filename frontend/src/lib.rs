//! kiln's Dockerfile frontend: everything between the bytes of a Dockerfile and
//! a resolved, per-stage build plan.
//!
//! The layers mirror BuildKit's `frontend/dockerfile`:
//! - [`parser`]: the pest grammar and the generic instruction [`parser::Node`]
//!   (what BuildKit's parser dumps), with parser directives, continuations and
//!   heredocs already resolved and every node carrying its source span.
//! - [`shell`]: word expansion as BuildKit's shell lexer does it.
//! - [`dockerignore`]: `.dockerignore` parsing and moby patternmatcher matching.
//! - [`instructions`]: typed instructions (flags checked, arguments split) built
//!   from nodes.
//! - [`plan`]: stages, ARG/ENV scoping, image-config accumulation, target pruning.
//! - [`lint`]: BuildKit's build checks (`--check`, `# check=`).
//! - [`lower`]: plans to the solver's graph of build ops.
//! - [`source_map`]: which Dockerfile lines and stage each lowered node
//!   came from, to show a failed step where it was written.
//! - [`mode`]: `--chmod` values, octal or symbolic, as BuildKit reads them
//!   (defined in `kiln-llb`, which the worker shares; re-exported here).

pub mod dockerignore;
pub mod error;
pub mod instructions;
pub mod lint;
pub mod lower;
pub mod parser;
pub mod plan;
pub mod shell;
pub mod source_map;

pub use error::{Error, ErrorKind, Location, Result};
pub use kiln_llb::mode;
