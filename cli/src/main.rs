//! `kiln`: build, store, move and run OCI images from Dockerfiles, with no daemon.

use clap::{Parser, Subcommand};

mod commands;
mod progress;
mod rawjson;
mod rootless;
mod table;
mod units;

/// kiln: a daemonless Dockerfile build engine.
#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from Dockerfiles as BuildKit does; store, move and run them. One binary, no daemon; the store is $KILN_ROOT."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Each group of commands lives in its own module under `commands/` and is
/// flattened here, so work on one group never touches another's code.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Build(commands::build::Cmd),
    #[command(flatten)]
    Check(commands::check::Cmd),
    #[command(flatten)]
    Container(commands::container::Cmd),
    #[command(flatten)]
    Frontend(commands::frontend::Cmd),
    #[command(flatten)]
    Images(commands::images::Cmd),
    #[command(flatten)]
    Registry(commands::registry::Cmd),
    #[command(flatten)]
    Run(commands::run::Cmd),
    #[command(flatten)]
    Worker(commands::worker::Cmd),
}

fn main() -> std::process::ExitCode {
    rootless::pause_if_asked();
    let cli = Cli::parse();
    // Checking and parsing Dockerfiles touch no store: no namespace needed.
    if !matches!(cli.command, Command::Check(_) | Command::Frontend(_)) {
        if let Err(code) = rootless::enter_if_needed() {
            return code;
        }
    }
    let result = match cli.command {
        Command::Build(c) => commands::build::run(c),
        Command::Check(c) => commands::check::run(c),
        Command::Container(c) => commands::container::run(c),
        Command::Frontend(c) => commands::frontend::run(c),
        Command::Images(c) => commands::images::run(c),
        Command::Registry(c) => commands::registry::run(c),
        Command::Run(c) => commands::run::run(c),
        Command::Worker(c) => commands::worker::run(c),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            std::process::ExitCode::from(1)
        }
    }
}
