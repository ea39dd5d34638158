//! Starting a re-executed kiln helper (`kiln sandbox-helper`,
//! `kiln container-helper …`): the one way the worker gets a
//! single-threaded process of its own to fork from, since kiln itself runs
//! on tokio and must never fork.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The stdio a helper gets.
#[derive(Debug)]
pub struct HelperStdio {
    /// Its stdin (the sandbox helper's private socket, a terminal, or null).
    pub stdin: Stdio,
    /// Its stdout.
    pub stdout: Stdio,
    /// Its stderr.
    pub stderr: Stdio,
}

/// Spawns `exe` (the kiln binary) with `args` (the helper's subcommand
/// first) and only the variables in `env`: a helper inherits nothing of
/// kiln's environment. std spawns it with posix_spawn (vfork), so this is
/// safe from a multi-threaded process.
pub fn spawn_helper<S: AsRef<OsStr>>(
    exe: &Path,
    args: &[S],
    env: &[(&str, &str)],
    stdio: HelperStdio,
) -> io::Result<Child> {
    Command::new(exe)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr)
        .spawn()
}
