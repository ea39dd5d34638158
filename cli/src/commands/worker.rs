//! `kiln sandbox-helper` (hidden): the re-executed helper that starts a
//! build step's sandbox.
//!
//! kiln runs builds on tokio, and a multi-threaded process must not fork, so
//! `kiln_worker::sandbox::run` starts this same binary afresh with this command;
//! it reads its spec from fd 3 and stays single-threaded until it execs the
//! step. It is not for people, so it is hidden from `--help`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start one sandboxed process from the spec on fd 3 (internal).
    #[command(name = "sandbox-helper", hide = true)]
    SandboxHelper,
    /// Serve kiln's FUSE overlay at TARGET over UPPER and LOWERS (lowest
    /// first) until unmounted (internal).
    #[command(name = "fuse-helper", hide = true)]
    FuseHelper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show the store and which snapshotter RUN steps use here, and why.
    Info {
        /// The snapshotter to check (default: config.json's, else auto).
        #[arg(long)]
        snapshotter: Option<String>,
    },
}

pub fn run(cmd: Cmd) -> miette::Result<std::process::ExitCode> {
    match cmd {
        Cmd::SandboxHelper => {
            let code = kiln_worker::sandbox::helper_main();
            Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::FuseHelper { args } => {
            let code = kiln_worker::fuse_overlay::helper_main(&args);
            Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Info { snapshotter } => super::snapshotter::info(snapshotter.as_deref()),
    }
}
