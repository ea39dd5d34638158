//! `kiln parse`: the frontend's view of a Dockerfile.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Parse a Dockerfile and print BuildKit's dump, the typed AST, or the plan.
    Parse {
        /// The Dockerfile.
        file: std::path::PathBuf,
    },
}

pub fn run(cmd: Cmd) -> miette::Result<std::process::ExitCode> {
    match cmd {
        Cmd::Parse { file } => Err(miette::miette!("parse of {} is not implemented yet", file.display())),
    }
}
