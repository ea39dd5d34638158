//! `kiln`: build, store, move and run OCI images from Dockerfiles, with no daemon.

use clap::{Parser, Subcommand};

mod commands;
mod progress;
mod rawjson;
mod rootless;
mod table;
mod template;
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
    Attach(commands::attach::Cmd),
    #[command(flatten)]
    Build(commands::build::Cmd),
    #[command(flatten)]
    Check(commands::check::Cmd),
    #[command(flatten)]
    Compose(commands::compose::Cmd),
    #[command(flatten)]
    Container(commands::container::Cmd),
    #[command(flatten)]
    Frontend(commands::frontend::Cmd),
    #[command(flatten)]
    Images(commands::images::Cmd),
    #[command(flatten)]
    Network(commands::network::Cmd),
    #[command(flatten)]
    Registry(commands::registry::Cmd),
    #[command(flatten)]
    Run(commands::run::Cmd),
    #[command(flatten)]
    Worker(commands::worker::Cmd),
    #[command(flatten)]
    Volume(commands::volume::Cmd),
    #[command(flatten)]
    ContainerFiles(commands::container_files::Cmd),
}

fn main() -> std::process::ExitCode {
    rootless::pause_if_asked();
    let cli = Cli::try_parse().unwrap_or_else(|e| commands::attach::flag_error(e));
    // Checking and parsing Dockerfiles touch no store: no namespace needed.
    if !matches!(cli.command, Command::Check(_) | Command::Frontend(_)) {
        if let Err(code) = rootless::enter_if_needed() {
            return code;
        }
    }
    let result = match cli.command {
        Command::Attach(c) => commands::attach::run(c),
        Command::Build(c) => commands::build::run(c),
        Command::Check(c) => commands::check::run(c),
        Command::Compose(c) => commands::compose::run(c),
        Command::Container(c) => commands::container::run(c),
        Command::Frontend(c) => commands::frontend::run(c),
        Command::Images(c) => commands::images::run(c),
        Command::Network(c) => commands::network::run(c),
        Command::Registry(c) => commands::registry::run(c),
        Command::Run(c) => commands::run::run(c),
        Command::Worker(c) => commands::worker::run(c),
        Command::Volume(c) => commands::volume::run(c),
        Command::ContainerFiles(c) => commands::container_files::run(c),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            std::process::ExitCode::from(1)
        }
    }
}
