//! kiln's side of the container helper: starting it (foreground, detached
//! or for `exec`), forwarding signals to it, and the one line a detached
//! helper answers with ([`StartReport`]).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::helper::{forward_signals, ExecSpec, EXEC_SPEC_ENV, HELPER_SUBCOMMAND};
use super::EXIT_KILN;
use crate::reexec::{spawn_helper, HelperStdio};

/// What can keep kiln from starting or waiting for a container helper.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The helper (the kiln binary itself) could not be started.
    #[error("starting {}: {source}", exe.display())]
    Start { exe: PathBuf, source: io::Error },
    /// Waiting for the container's helper failed.
    #[error("waiting for the container: {0}")]
    WaitContainer(io::Error),
    /// Waiting for an exec helper failed.
    #[error("{0}")]
    WaitExec(io::Error),
    /// The exec request could not be encoded.
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

/// A detached helper's answer, one line on its stdout once the container's
/// process started (`ok`) or failed to (`error CODE MESSAGE`). Written by
/// the helper and read by kiln through this type only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartReport {
    /// The container's process is running.
    Started,
    /// It could not start: the exit code docker would give and why.
    Failed { code: i32, message: String },
}

impl StartReport {
    /// The line the helper writes (newline included; the message on one line).
    pub fn to_line(&self) -> String {
        match self {
            StartReport::Started => "ok\n".to_string(),
            StartReport::Failed { code, message } => {
                format!("error {code} {}\n", message.replace('\n', " "))
            }
        }
    }

    /// Reads the helper's answer; a missing or unreadable one is a failure.
    pub fn parse(answer: &str) -> StartReport {
        let line = answer.lines().next().unwrap_or("");
        if line == "ok" {
            return StartReport::Started;
        }
        match line.strip_prefix("error ").and_then(|r| r.split_once(' ')) {
            Some((code, msg)) => StartReport::Failed {
                code: code.parse().unwrap_or(EXIT_KILN),
                message: msg.to_string(),
            },
            None => StartReport::Failed {
                code: EXIT_KILN,
                message: "the container helper ended without starting the container".to_string(),
            },
        }
    }
}

/// Starts the container whose folder is `dir` (absolute) detached: returns
/// once its helper says whether the process started; the helper lives on
/// (it records the container's end) and is not waited for.
pub fn run_detached(exe: &Path, dir: &Path) -> Result<StartReport, LaunchError> {
    let args = [
        HELPER_SUBCOMMAND.as_ref(),
        "run".as_ref(),
        dir.as_os_str(),
        "--detach".as_ref(),
    ];
    let stdio = HelperStdio {
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::null(),
    };
    let mut child = spawn_helper(exe, &args, &[], stdio).map_err(|source| LaunchError::Start {
        exe: exe.to_path_buf(),
        source,
    })?;
    let mut answer = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut answer);
    }
    Ok(StartReport::parse(&answer))
}

/// Runs the container whose folder is `dir` (absolute) in the foreground,
/// its output on ours and our signals forwarded: returns its exit code.
pub fn run_foreground(exe: &Path, dir: &Path, interactive: bool) -> Result<i32, LaunchError> {
    run_foreground_proxying(exe, dir, interactive, true)
}

/// [`run_foreground`]; without `sig_proxy` kiln forwards no signal (its
/// own default dispositions apply: Ctrl-C ends kiln, not the container,
/// whose helper is in a session of its own).
pub fn run_foreground_proxying(
    exe: &Path,
    dir: &Path,
    interactive: bool,
    sig_proxy: bool,
) -> Result<i32, LaunchError> {
    let args = [HELPER_SUBCOMMAND.as_ref(), "run".as_ref(), dir.as_os_str()];
    let mut child =
        spawn_helper(exe, &args, &[], foreground_stdio(interactive)).map_err(|source| {
            LaunchError::Start {
                exe: exe.to_path_buf(),
                source,
            }
        })?;
    if sig_proxy {
        return wait_forwarding(child).map_err(LaunchError::WaitContainer);
    }
    let status = child.wait().map_err(LaunchError::WaitContainer)?;
    Ok(code_of(status))
}

/// Runs `spec` in a running container (`kiln exec`): returns its exit code.
pub fn exec(exe: &Path, spec: &ExecSpec, interactive: bool) -> Result<i32, LaunchError> {
    let json = serde_json::to_string(spec)?;
    let child = spawn_helper(
        exe,
        &[HELPER_SUBCOMMAND, "exec"],
        &[(EXEC_SPEC_ENV, &json)],
        foreground_stdio(interactive),
    )
    .map_err(|source| LaunchError::Start {
        exe: exe.to_path_buf(),
        source,
    })?;
    wait_forwarding(child).map_err(LaunchError::WaitExec)
}

fn foreground_stdio(interactive: bool) -> HelperStdio {
    HelperStdio {
        stdin: if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        },
        stdout: Stdio::inherit(),
        stderr: Stdio::inherit(),
    }
}

/// Forwards our signals to `child` and waits: its code, 128 + a signal
/// that killed it, else 125.
fn wait_forwarding(mut child: Child) -> io::Result<i32> {
    forward_signals(child.id() as i32);
    let status = child.wait()?;
    Ok(code_of(status))
}

/// A helper's exit status as an exit code: its code, 128 + a signal that
/// killed it, else 125.
fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => EXIT_KILN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_reports_roundtrip() {
        for r in [
            StartReport::Started,
            StartReport::Failed {
                code: 127,
                message: "exec: \"x\": executable file not found in $PATH".into(),
            },
        ] {
            assert_eq!(StartReport::parse(&r.to_line()), r);
        }
        assert_eq!(
            StartReport::parse(""),
            StartReport::Failed {
                code: EXIT_KILN,
                message: "the container helper ended without starting the container".into()
            }
        );
    }
}
