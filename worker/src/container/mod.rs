//! Containers: the run backend's state on disk and its process lifecycle
//! (`kiln run`, `ps`, `logs`, `stop`, `rm`, `exec`).
//!
//! Each container has a folder `$KILN_ROOT/containers/<id>/` holding:
//! - `state.json`: the [`Container`] record (config and status), replaced
//!   atomically (write + rename) under an flock on `lock`, so concurrent
//!   kiln processes read whole records and never lose an update;
//! - `upper/`, `work/`: the overlay's upper and work dirs (the container's
//!   own changes; the image's layer dirs are only ever lower dirs);
//! - `rootfs/`: the mount point of the overlay, mounted only inside the
//!   container's own mount namespace (it vanishes with the container);
//! - `log`: the container's output as JSON lines, one object per line of
//!   output: `{"time_ns":…,"stream":"stdout"|"stderr","log":"text\n"}`
//!   (docker's json-file layout; bytes that are not UTF-8 are replaced); a
//!   line longer than 16 KiB is split into several objects, all but the
//!   last without the `\n`, as docker splits it.
//!
//! kiln may run on tokio and must not fork, so a container is started by
//! re-executing kiln as `kiln container-helper run <dir>` (posix_spawn, no
//! fork of kiln). That helper is single-threaded: it leaves kiln's session
//! (`setsid`), unshares the pid, uts, ipc (and net for `--network none`)
//! namespaces, forks the container's pid 1, which takes a mount namespace
//! of its own, mounts the overlay and then follows the sandbox's plan
//! ([`crate::sandbox::plan`]) up to exec. The helper copies pid 1's output
//! to the log (and to its own stdout/stderr in the foreground), forwards
//! the signals it gets to pid 1, waits for it and records the exit status.
//! A detached (`-d`) container is the same helper with its stdio away from
//! the terminal; kiln returns once the helper says the process started.
//!
//! `kiln exec` re-executes kiln as `kiln container-helper exec` (the
//! request in its environment, which only its owner can read, not argv),
//! which joins the running container's namespaces (`setns`), forks, enters
//! the container's root and execs the command through the same plan's
//! tail (rlimits, fds, workdir, capabilities, user, exec).

//!
//! `kiln attach` reaches a running container through the unix socket its
//! helper serves in the container's folder: the terminal of a `-t`
//! container ([`pty`]), or stdout and stderr apart and a stdin pipe (`-i`)
//! of one without ([`stream`]).
//!
//! The concepts each have a module: [`store`] (the state records),
//! `names` (ids and docker-like names), [`logs`] (the json-file log),
//! [`lifecycle`] (stopping and signalling), [`helper`] (the re-executed
//! helper's side), [`launch`] (kiln's side: starting the helper and the
//! line it answers with) and [`run`] (from an image and `kiln run`'s
//! options to a started container).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sandbox::{self, Mount, Network};

pub mod attach;
pub mod cgroup;
pub mod commit;
pub mod files;
pub mod health;
pub mod helper;
mod init;
pub mod inspect;
pub mod launch;
pub mod life;
pub mod lifecycle;
mod limits;
pub mod logs;
mod names;
pub mod pause;
pub mod pty;
pub mod restart;
pub mod run;
pub mod store;
pub mod stream;
pub mod volumes;

pub use helper::{
    forward_signals, helper_main, start_failure_code, ExecSpec, EXEC_SPEC_ENV, HELPER_SUBCOMMAND,
};
pub use launch::StartReport;
pub use lifecycle::{kill, remove_named, stop, stop_named};
pub use logs::{follow_log, for_each_log, LogEntry, LogSink, MAX_LOG_RECORD};
pub use store::Store;

/// Exit code for kiln's own failures to run a container (docker's 125).
pub const EXIT_KILN: i32 = 125;
/// Exit code when the command exists but cannot be executed (docker's 126).
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// Exit code when the command is not found (docker's 127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// What can go wrong with the container store.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container state {path}: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("No such container: {0}")]
    NotFound(String),
    /// `rm` without `--force` of a running container (docker's words).
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    RemoveRunning(String),
    #[error("container {0:?} is ambiguous: give more of its ID")]
    Ambiguous(String),
    #[error("the container name \"/{0}\" is already in use")]
    NameInUse(String),
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error(transparent)]
    Lock(#[from] kiln_cache::Error),
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, its process not started (yet, or it failed to start).
    Created,
    /// Its pid 1 runs (check [`Container::is_alive`]: a killed helper
    /// cannot record the end).
    Running,
    /// Its pid 1 ended; `exit_code` says how.
    Exited,
}

/// One container's record: what it runs (fixed at creation) and how it is
/// doing. This is `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Unique among containers; generated docker-style when not given.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's manifest digest.
    pub image_id: String,
    /// The full argv (entrypoint and command).
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]` as docker takes it; resolved in the container's root.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// The image's unpacked layer dirs, lowest first.
    pub lowers: Vec<PathBuf>,
    /// `--rm`: the helper removes the container when it exits.
    pub auto_remove: bool,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Creation time in nanoseconds, to list containers made in the same
    /// second in order (set by [`Store::create`]).
    #[serde(default)]
    pub created_ns: u128,
    pub status: Status,
    /// pid 1's pid as the host sees it, while running.
    #[serde(default)]
    pub pid: Option<i32>,
    /// pid 1's start time (clock ticks since boot, /proc/PID/stat field 22),
    /// so a reused pid is never taken for the container.
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub started: Option<i64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub finished: Option<i64>,
    /// Why the process could not start, if it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// `--security-opt seccomp=…`: the filter of pid 1 and of every
    /// `kiln exec` process.
    #[serde(default)]
    pub seccomp: crate::seccomp::Seccomp,
    /// `--device`: host device nodes bound in.
    #[serde(default)]
    pub devices: Vec<sandbox::Device>,
    /// `--snapshotter`: how the root filesystem is made (kernel overlay,
    /// kiln's FUSE overlay, a copy, or `auto`).
    #[serde(default)]
    pub snapshotter: crate::snapshotter::Snapshotter,
    // --- life
    /// Lifecycle settings and state (stop signal, restart policy, health,
    /// pause, limits): [`life::LifeState`], its fields flattened here.
    #[serde(default, flatten)]
    pub life: life::LifeState,
    /// `--log-driver`/`--log-opt`: whether and how its log is kept.
    #[serde(default)]
    pub log_config: logs::LogConfig,
    // --- net
    /// Its network namespace when it has one made by the network layer
    /// (bridge networks, `container:X`); None for `--network host|none`.
    #[serde(default)]
    pub net: Option<crate::network::ContainerNet>,
    // --- vol
    /// The volumes it mounts (named, anonymous, from `--volumes-from`):
    /// what keeps them in use, and what `rm -v` removes.
    #[serde(default)]
    pub volumes: Vec<volumes::VolumeMount>,
    /// `--read-only`: the root filesystem is mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    // --- tty
    /// `-t` and `-i` as the container was made with them.
    #[serde(default)]
    pub tty: TtyConfig,
    // --- compose
    /// `--label KEY=VALUE` (docker's `Config.Labels`): how `kiln compose`
    /// finds the containers of a project and service, and their config hash.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A container's terminal settings (docker's `Config.Tty` and
/// `Config.OpenStdin`): with `tty` its helper holds a pseudo-terminal and
/// serves the attach socket ([`pty`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyConfig {
    /// `-t`: the process gets a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: its stdin is kept open for attached clients.
    #[serde(default)]
    pub open_stdin: bool,
}

impl Container {
    /// True while pid 1 really runs: recorded as running, and the pid still
    /// names a live (not zombie) process started at the recorded time.
    pub fn is_alive(&self) -> bool {
        match (self.status, self.pid, self.start_time) {
            (Status::Running, Some(pid), Some(t)) => proc_start_time(pid) == Some(t),
            _ => false,
        }
    }

    /// The status to show: a container recorded as running whose process is
    /// gone (its helper was killed) has exited, with no known code.
    pub fn effective_status(&self) -> Status {
        if self.status == Status::Running && !self.is_alive() {
            Status::Exited
        } else {
            self.status
        }
    }

    /// The short ID (12 hex digits), as docker shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The start time of a live process (field 22 of /proc/PID/stat), `None`
/// if there is none or it is a zombie.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The helper's path component check for `-v` targets and workdirs, shared
/// with the CLI so bad paths fail before anything starts.
pub fn valid_target(path: &str) -> bool {
    path.starts_with('/')
        && crate::snapshot::rel_components(path).is_some_and(|p| !p.as_os_str().is_empty())
}
