//! kiln-compose: the Compose Specification as `docker compose` v2 reads it.
//!
//! Files are found, merged and resolved the way compose-go does it (docker
//! compose's loader), so `kiln compose config` prints what `docker compose
//! config` prints and `kiln compose build`/`up` act on the same model:
//!
//! - [`yaml`]: the YAML tree with line/column (yaml-rust2's event parser);
//! - [`template`]: `${X:-d}` interpolation; [`dotenv`]: `.env` files;
//! - [`schema`]: validation with the spec's own JSON schema;
//! - [`merge`]: `-f` and override merging, unicity of redefined entries;
//! - [`extends`], [`normalize`] (long syntax, defaults, absolute paths);
//! - [`load`]: the pipeline; [`emit`]: YAML/JSON output as compose prints it;
//! - [`model`]: typed views of the resolved model for the commands.

use std::path::PathBuf;

pub mod dotenv;
pub mod duration;
pub mod emit;
pub mod extends;
pub mod include;
pub mod load;
pub mod merge;
pub mod model;
pub mod normalize;
pub mod schema;
pub mod template;
pub mod value;
pub mod yaml;

pub use load::{load, LoadOptions, Project};

/// Why a project could not be loaded; the messages are docker compose's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `-f` and no compose file here or in a parent folder.
    #[error("no configuration file provided: not found")]
    NotFound,
    /// A file could not be read.
    #[error("open {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// YAML syntax.
    #[error("yaml: line {line}: {message}\n  --> {}:{line}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// The parser's words.
        message: String,
    },
    /// The file breaks the schema: unknown key, wrong type...
    #[error("validating {}: {}{message}\n  --> {}:{line}:{column}", file.display(), if path.is_empty() { String::new() } else { format!("{path} ") }, file.display())]
    Schema {
        /// The file.
        file: PathBuf,
        /// Dotted path of the key.
        path: String,
        /// compose's words.
        message: String,
        /// Line of the key or value.
        line: usize,
        /// Its column.
        column: usize,
    },
    /// `${X:?err}` or a value that cannot be cast after interpolation.
    #[error("error while interpolating {path}: {message}")]
    Interpolation {
        /// Dotted path of the value.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An env file that does not parse.
    #[error("failed to read {}: {message}", path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A project name compose refuses.
    #[error("invalid project name {0:?}: must consist only of lowercase alphanumeric characters, hyphens, and underscores as well as start with a letter or number")]
    ProjectName(String),
    /// Anything else compose refuses (merge conflicts, bad extends...).
    #[error("{0}")]
    Invalid(String),
}
