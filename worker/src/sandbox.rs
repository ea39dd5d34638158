//! The sandbox that runs a RUN step.
//!
//! A build runs on tokio, and forking a multi-threaded process is unsound
//! (another thread may hold the allocator's lock at the fork). So [`run`]
//! re-executes the kiln binary as a small single-threaded *helper*
//! (`kiln <HELPER_SUBCOMMAND>`), hands it the [`SandboxSpec`] as JSON over a
//! socket on fd 3, and reads back one JSON status. The helper unshares the
//! namespaces, forks the step's process as pid 1 of a new pid namespace,
//! builds its filesystem view (rootfs, /proc, a minimal /dev, read-only
//! /sys, /etc/hosts and /etc/resolv.conf), pivots into it, drops to docker's
//! default capabilities and the step's user, and execs. The process's
//! stdout and stderr are pipes straight back to [`run`], which hands the
//! bytes to the caller's sink as they come.
//!
//! What pid 1 does between fork and exec is first *planned* as a list of
//! [`Step`]s by a pure function ([`plan`]) and then carried out one syscall
//! per step; the plan is what unit tests check, the syscalls are what the
//! integration tests (real namespaces, as root) check.
//!
//! Confinement: docker's default capabilities, docker's default seccomp
//! profile ([`crate::seccomp`], loaded right before execve), and docker's
//! device rule without a devices cgroup: every mount in the sandbox is
//! `nodev` (the rootfs and everything beneath it, binds, tmpfs, /dev
//! itself) except the device nodes kiln binds into /dev (null, zero, full,
//! random, urandom, tty, `--device` nodes) and the private devpts behind
//! /dev/pts and /dev/ptmx. `mknod` still works (CAP_MKNOD, as in docker),
//! but opening any node it makes fails with EACCES whatever its numbers,
//! those docker's rule would allow (1:3, 1:5, …) included: the nodes in
//! /dev are the ones to use. Chosen over the cgroup v1 devices controller
//! because it needs no cgroup (v2-only hosts have no devices file) and
//! leaves nothing to clean up.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::sys;

/// The hidden `kiln` subcommand that runs [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "sandbox-helper";
/// The fd on which the helper finds its spec and writes its status: its
/// stdin, a socket.
pub const HELPER_FD: RawFd = 0;
/// PATH when the step's environment has none, as docker and BuildKit set it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP): what `CapBnd` reads in any docker container.
pub const DEFAULT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 13)
    | (1 << 18)
    | (1 << 27)
    | (1 << 29)
    | (1 << 31);

/// Every capability (`RUN --security=insecure`); bits past the kernel's
/// last capability are ignored.
pub const ALL_CAPS: u64 = (1 << 41) - 1;

/// Whether the step shares the host's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// BuildKit's default for RUN: the host's network namespace.
    #[default]
    Host,
    /// A fresh network namespace holding only `lo` (down, as in docker).
    None,
    /// A network namespace of its own with outbound access, prepared by
    /// the build ([`crate::netpool`]) and named by [`SandboxSpec::netns`]:
    /// BuildKit's default for RUN.
    Private,
}

/// An extra mount of a step (RUN --mount, heredoc files, cache dirs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// A host file or directory at `target` (absolute, in the sandbox).
    Bind {
        source: PathBuf,
        target: String,
        #[serde(default)]
        readonly: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        target: String,
        /// Size limit in bytes; the kernel's default (half of RAM) if absent.
        #[serde(default)]
        size: Option<u64>,
        /// Permission bits of its root; 1777 if absent, as docker's tmpfs.
        #[serde(default)]
        mode: Option<u32>,
    },
}

impl Mount {
    fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// A resource limit; values above the helper's own hard limit are clamped
/// to it (an unprivileged-looking failure otherwise: EPERM at setup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The `RLIMIT_*` resource number (e.g. `libc::RLIMIT_NOFILE`).
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Everything the helper needs to start one process. Plain data, so it
/// crosses the process boundary as JSON and tests can build it directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The root filesystem (usually a mounted overlay snapshot).
    pub rootfs: PathBuf,
    /// The command; `argv[0]` is looked up in the step's PATH when it holds
    /// no slash.
    pub argv: Vec<String>,
    /// `KEY=value` pairs; PATH is added ([`DEFAULT_PATH`]) when absent.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory, created (as root, 0755) when missing.
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Supplementary groups (from /etc/group for the step's user).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub network: Network,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Limits to set; when empty the process keeps the helper's (kiln's
    /// own), as a BuildKit RUN keeps its daemon's: BuildKit sets none, so
    /// a step sees the limits of whoever started the build. Containers
    /// pass [`SandboxSpec::default_rlimits`] explicitly.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Bytes fed to the process's stdin; /dev/null when absent.
    #[serde(default)]
    pub stdin: Option<Vec<u8>>,
    /// QEMU user emulation for a foreign platform's step: the helper then
    /// runs the step in a user namespace of its own with a private
    /// binfmt_misc (see [`crate::emulation`]); `None` runs natively.
    #[serde(default)]
    pub emulator: Option<crate::emulation::Emulator>,
    /// The namespace file to join with [`Network::Private`].
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The file bound at /etc/resolv.conf instead of the host's (a
    /// private network cannot reach a nameserver on the host's loopback).
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// The file bound at /etc/hosts instead of the host's (a build's
    /// `--add-host` lines).
    #[serde(default)]
    pub hosts_file: Option<PathBuf>,
    /// Size of /dev/shm in bytes; 64 MiB (docker's) when absent.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--sysctl KEY=VALUE`: written to /proc/sys in the sandbox's own
    /// namespaces before /proc/sys turns read-only (the caller allows only
    /// namespaced keys, as docker does).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// `cgroup.procs` files the helper writes its pid to before it starts
    /// the step (`--cgroup-parent`: see [`crate::resources::StepCgroup`]).
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// The seccomp filter ([`crate::seccomp`]): docker's default profile
    /// unless `kiln run --security-opt seccomp=…` said otherwise.
    #[serde(default)]
    pub seccomp: crate::seccomp::Seccomp,
    /// `RUN --security=insecure` (with `kiln build --allow
    /// security.insecure`): every capability and no seccomp filter, as in
    /// BuildKit's insecure mode.
    #[serde(default)]
    pub privileged: bool,
    /// Host device nodes passed in on purpose (`kiln run --device`): bound
    /// in as the nodes of kiln's own /dev are, the only device nodes
    /// besides those that can be opened in the sandbox.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// `kiln run --read-only`: the root filesystem is remounted read-only
    /// once every mount is in place (volumes, tmpfs and /dev stay
    /// writable), as runc's `readonlyRootfs`.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// `kiln run -t` / `exec -t`: the process gets a pseudo-terminal of
    /// the sandbox's own devpts (see [`Terminal`]).
    #[serde(default)]
    pub terminal: Option<Terminal>,
    /// `kiln run --cap-add/--cap-drop`: the capability set instead of
    /// [`DEFAULT_CAPS`] (ignored when `privileged`); the seccomp profile's
    /// capability rules follow it, as docker's do.
    #[serde(default)]
    pub caps: Option<u64>,
    /// The capability set the seccomp profile's rules follow when it is
    /// not `caps` (`kiln exec --privileged`: every capability for the
    /// process, the container's filter kept, as docker's exec does).
    #[serde(default)]
    pub filter_caps: Option<u64>,
}

/// A pseudo-terminal for the process (docker's `-t`), made inside the
/// sandbox after the pivot, so it is `/dev/pts/0` of the sandbox's own
/// devpts: the slave becomes the process's stdin, stdout, stderr and
/// controlling terminal; the master goes over `socket` (SCM_RIGHTS) to the
/// helper, which holds it (as runc's console socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// The window size to start with (0 when unknown).
    pub rows: u16,
    pub cols: u16,
    /// The unix socket (an fd inherited over the fork) for the master.
    pub socket: i32,
}

/// A host device node given to a sandbox (`--device HOST[:CONTAINER[:PERMS]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The node on the host (absolute).
    pub host: PathBuf,
    /// Where it appears in the sandbox (absolute).
    pub target: String,
    /// No `w` in PERMS: bound read-only.
    #[serde(default)]
    pub readonly: bool,
}

fn default_cwd() -> String {
    "/".into()
}

fn default_hostname() -> String {
    "buildkitsandbox".into()
}

impl SandboxSpec {
    /// A spec with docker's defaults: root, `/`, host network, BuildKit's
    /// sandbox hostname.
    pub fn new(rootfs: impl Into<PathBuf>, argv: Vec<String>) -> Self {
        SandboxSpec {
            rootfs: rootfs.into(),
            argv,
            env: Vec::new(),
            cwd: default_cwd(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            network: Network::Host,
            hostname: default_hostname(),
            mounts: Vec::new(),
            rlimits: Vec::new(),
            stdin: None,
            emulator: None,
            netns: None,
            resolv_conf: None,
            hosts_file: None,
            shm_size: None,
            sysctls: Vec::new(),
            cgroup_procs: Vec::new(),
            seccomp: crate::seccomp::Seccomp::Default,
            privileged: false,
            devices: Vec::new(),
            readonly_rootfs: false,
            terminal: None,
            caps: None,
            filter_caps: None,
        }
    }

    /// The limits a container (`kiln run`) gets when none are given: open
    /// files 1048576, clamped to what this host allows. Build steps do not
    /// use them: a step keeps kiln's own limits, as BuildKit's steps keep
    /// the daemon's (a million open files makes every program that closes
    /// all descriptors before exec, apt and dpkg among them, pay per fork).
    pub fn default_rlimits() -> Vec<Rlimit> {
        vec![Rlimit {
            resource: libc::RLIMIT_NOFILE,
            soft: 1_048_576,
            hard: 1_048_576,
        }]
    }
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// The code BuildKit reports (`exit code: N`); 128+signal when killed,
    /// as a shell would say it.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code: {}", self.code())
    }
}

/// What a finished sandbox run leaves for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// Mount points (and the folders made to hold them) that did not exist
    /// in the rootfs, were created for the run and removed again after it
    /// (relative to the rootfs, e.g. `etc/hosts`, `a/b/c`, `a/b`, `a`). A
    /// stub the run wrote into (a folder no longer empty, a file no longer
    /// empty) stays, as part of the run's result, and is not listed. Pass
    /// these to [`crate::diff::DiffOptions::exclude`] so that none of them
    /// can reach a layer.
    pub created: Vec<PathBuf>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why a sandboxed process did not start: the kind, decided where the
/// failure happened, picks the exit code docker would give (127, 126, 125);
/// the message is what is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartErrorKind {
    /// The program is not on `PATH`, or its path does not exist.
    NotFound,
    /// The program exists but cannot be executed.
    NotExecutable,
    /// Anything else: setting up the sandbox failed.
    Other,
}

/// A failure to set up a sandbox or to exec its process. It crosses a pipe
/// from the forked child (see [`StartError::encode`]), so its kind travels
/// with it instead of being guessed from the words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub kind: StartErrorKind,
    pub message: String,
}

impl StartError {
    /// A setup failure ([`StartErrorKind::Other`]).
    pub fn other(message: impl Into<String>) -> Self {
        StartError {
            kind: StartErrorKind::Other,
            message: message.into(),
        }
    }

    /// The bytes a child writes to its error pipe: one tag byte for the
    /// kind, then the message.
    pub fn encode(&self) -> Vec<u8> {
        let tag = match self.kind {
            StartErrorKind::NotFound => b'N',
            StartErrorKind::NotExecutable => b'X',
            StartErrorKind::Other => b'O',
        };
        let mut out = Vec::with_capacity(self.message.len() + 1);
        out.push(tag);
        out.extend_from_slice(self.message.as_bytes());
        out
    }

    /// Reads what [`encode`](Self::encode) wrote; `None` for nothing (the
    /// exec worked and closed the pipe).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, message) = bytes.split_first()?;
        let kind = match tag {
            b'N' => StartErrorKind::NotFound,
            b'X' => StartErrorKind::NotExecutable,
            _ => StartErrorKind::Other,
        };
        Some(StartError {
            kind,
            message: String::from_utf8_lossy(message).into_owned(),
        })
    }
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::other(message)
    }
}

impl From<&str> for StartError {
    fn from(message: &str) -> Self {
        StartError::other(message)
    }
}

/// What can go wrong running a sandbox. A process that runs and fails is
/// not an error: its [`ExitStatus`] says so.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec is unusable (empty argv, relative paths, `..`).
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    /// Starting or talking to the helper failed.
    #[error("sandbox helper {exe}: {source}")]
    Helper {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The helper set up the sandbox but could not start the process, e.g.
    /// `exec: "foo": executable file not found in $PATH`.
    #[error("{0}")]
    Setup(String),
    /// The run was cancelled through [`run_cancellable`].
    #[error("cancelled")]
    Cancelled,
    /// Creating or removing mount points in the rootfs failed.
    #[error("preparing mount point {path}: {source}")]
    Stub {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The helper's one-line answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HelperStatus {
    Exited(ExitStatus),
    Error(String),
}

/// Runs `spec` in a sandbox through the helper binary `helper_exe` (the kiln
/// binary itself), streaming output chunks to `sink` as they arrive, and
/// blocks until the process has exited. Call it from a blocking thread
/// (`spawn_blocking`) under tokio.
pub fn run(
    spec: &SandboxSpec,
    helper_exe: &Path,
    sink: &mut dyn FnMut(Stream, &[u8]),
) -> Result<RunOutcome, SandboxError> {
    run_cancellable(spec, helper_exe, sink, &AtomicBool::new(false))
}

/// [`run`], stopped early when `cancel` turns true (another step of the
/// build failed): the helper is killed, its death kills pid 1, and pid 1's
/// death kills everything else in the sandbox's pid namespace. A cancelled
/// run reports [`SandboxError::Cancelled`].
pub fn run_cancellable(
    spec: &SandboxSpec,
    helper_exe: &Path,
    sink: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<RunOutcome, SandboxError> {
    validate(spec)?;
    let stubs = create_stubs(spec)?;
    let result = run_helper(spec, helper_exe, sink, cancel);
    let cleanup = remove_stubs(&spec.rootfs, &stubs);
    let status = result?;
    Ok(RunOutcome {
        status,
        created: cleanup?,
    })
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(SandboxError::Spec("no command to run".into()));
    }
    if !spec.rootfs.is_absolute() {
        return Err(SandboxError::Spec(format!(
            "rootfs {} is not absolute",
            spec.rootfs.display()
        )));
    }
    for m in &spec.mounts {
        if crate::snapshot::rel_components(m.target()).is_none_or_empty() {
            return Err(SandboxError::Spec(format!(
                "bad mount target {:?}",
                m.target()
            )));
        }
        if let Mount::Bind { source, .. } = m {
            if !source.is_absolute() {
                return Err(SandboxError::Spec(format!(
                    "bind source {} is not absolute",
                    source.display()
                )));
            }
        }
    }
    for d in &spec.devices {
        if !d.host.is_absolute() || crate::snapshot::rel_components(&d.target).is_none_or_empty() {
            return Err(SandboxError::Spec(format!(
                "bad device {} -> {:?}",
                d.host.display(),
                d.target
            )));
        }
    }
    if crate::snapshot::rel_components(&spec.cwd).is_none() {
        return Err(SandboxError::Spec(format!(
            "working directory {:?} contains `..`",
            spec.cwd
        )));
    }
    Ok(())
}

trait NoneOrEmpty {
    fn is_none_or_empty(&self) -> bool;
}

impl NoneOrEmpty for Option<PathBuf> {
    fn is_none_or_empty(&self) -> bool {
        self.as_ref().is_none_or(|p| p.as_os_str().is_empty())
    }
}

/// Mount points a run needs: (path in the rootfs, is a directory). Every
/// one of them that did not exist, and every folder created to hold one,
/// goes again after the run when the run left it empty: the runtime's own
/// (/proc, /etc/hosts …) and every RUN `--mount`'s (bind, cache, tmpfs,
/// secret, ssh), as BuildKit's stub cleaner does for a Dockerfile RUN
/// (`RemoveMountStubsRecursive`), so a mount leaves no empty folder or file
/// in the layer.
fn stub_targets(spec: &SandboxSpec) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = vec![
        ("proc".into(), true),
        ("dev".into(), true),
        ("sys".into(), true),
        ("etc/hosts".into(), false),
        ("etc/resolv.conf".into(), false),
    ];
    for m in &spec.mounts {
        let dir = match m {
            Mount::Bind { source, .. } => source.is_dir(),
            Mount::Tmpfs { .. } => true,
        };
        if let Some(rel) = crate::snapshot::rel_components(m.target()) {
            out.push((rel, dir));
        }
    }
    out
}

/// Mount points created for a run, and the times of the directories they
/// were created in, to put back when the stubs go.
#[derive(Debug, Default)]
struct Stubs {
    /// Everything created, parents before their children.
    created: Vec<PathBuf>,
    /// (directory, mtime before the stub, mtime right after it).
    parent_times: Vec<(PathBuf, Mtime, Mtime)>,
}

/// A modification time as (seconds, nanoseconds).
type Mtime = (i64, i64);

fn dir_mtime(root: RawFd, dir: &Path) -> Option<(i64, i64)> {
    let fd = sys::open_in_root(root, dir, libc::O_PATH | libc::O_DIRECTORY).ok()?;
    let st = sys::lstat_at(fd.as_raw_fd(), OsStr::new("."))
        .ok()
        .flatten()?;
    Some((st.st_mtime, st.st_mtime_nsec))
}

/// Creates every missing mount point (and missing parent) beneath the rootfs
/// and returns what it created, parents first.
fn create_stubs(spec: &SandboxSpec) -> Result<Stubs, SandboxError> {
    let root = sys::open_dir(&spec.rootfs).map_err(|source| SandboxError::Stub {
        path: spec.rootfs.clone(),
        source,
    })?;
    let mut stubs = Stubs::default();
    for (rel, is_dir) in stub_targets(spec) {
        let before = stubs.created.len();
        // The times of the existing folders on the way, before anything is
        // created in them: the first thing created goes into one of them.
        let ancestors: Vec<(PathBuf, Mtime)> = rel
            .ancestors()
            .skip(1)
            .filter_map(|a| dir_mtime(root.as_raw_fd(), a).map(|t| (a.to_path_buf(), t)))
            .collect();
        ensure_in_root(root.as_raw_fd(), &rel, is_dir, &mut stubs.created).map_err(|source| {
            SandboxError::Stub {
                path: rel.clone(),
                source,
            }
        })?;
        let Some(first) = stubs.created.get(before) else {
            continue;
        };
        let parent = first.parent().unwrap_or(Path::new(""));
        if let Some((_, b)) = ancestors.iter().find(|(a, _)| a == parent) {
            if let Some(a) = dir_mtime(root.as_raw_fd(), parent) {
                stubs.parent_times.push((parent.to_path_buf(), *b, a));
            }
        }
    }
    Ok(stubs)
}

/// Opens `rel` beneath `root` as the sandbox will see it (symlinks resolved
/// inside the root, never out of it), creating it and missing parents.
fn ensure_in_root(
    root: RawFd,
    rel: &Path,
    is_dir: bool,
    created: &mut Vec<PathBuf>,
) -> io::Result<OwnedFd> {
    let comps: Vec<&OsStr> = rel.iter().collect();
    let mut so_far = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        so_far.push(c);
        match sys::open_in_root(root, &so_far, libc::O_PATH) {
            Ok(fd) if i + 1 == comps.len() => return Ok(fd),
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = sys::open_in_root(
                    root,
                    so_far.parent().unwrap_or(Path::new("")),
                    libc::O_PATH | libc::O_DIRECTORY,
                )?;
                let last = i + 1 == comps.len();
                if last && !is_dir {
                    drop(sys::create_file_at(parent.as_raw_fd(), c, 0o644)?);
                } else {
                    sys::mkdir_at(parent.as_raw_fd(), c, 0o755)?;
                }
                created.push(so_far.clone());
                if last {
                    return sys::open_in_root(root, &so_far, libc::O_PATH);
                }
            }
            Err(e) => return Err(e),
        }
    }
    sys::open_in_root(root, Path::new(""), libc::O_PATH)
}

/// Removes the stubs [`create_stubs`] made, deepest first, when the run left
/// them empty (a folder with nothing in it, a file of no bytes), and puts
/// back the times of the directories they were made in, so an overlay upper
/// dir shows no trace of them (a directory merely copied up with its times
/// intact is not part of the diff). Returns what it removed; a stub the run
/// wrote into stays, with its parents, as BuildKit's cleaner leaves it.
fn remove_stubs(rootfs: &Path, stubs: &Stubs) -> Result<Vec<PathBuf>, SandboxError> {
    let root = sys::open_dir(rootfs).map_err(|source| SandboxError::Stub {
        path: rootfs.into(),
        source,
    })?;
    // Which directories only the stubs changed: their time is still the one
    // the last stub made in them left.
    let mut restore: Vec<(PathBuf, (i64, i64))> = Vec::new();
    for (i, (dir, before, _)) in stubs.parent_times.iter().enumerate() {
        if restore.iter().any(|(d, _)| d == dir) {
            continue; // the earliest `before` of a directory wins
        }
        let last_after = stubs.parent_times[i..]
            .iter()
            .rev()
            .find(|(d, _, _)| d == dir)
            .map(|(_, _, a)| *a);
        if dir_mtime(root.as_raw_fd(), dir) == last_after {
            restore.push((dir.clone(), *before));
        }
    }
    let mut removed = Vec::new();
    for rel in stubs.created.iter().rev() {
        let (Some(name), parent) = (rel.file_name(), rel.parent().unwrap_or(Path::new(""))) else {
            continue;
        };
        let Ok(pfd) = sys::open_in_root(root.as_raw_fd(), parent, libc::O_PATH | libc::O_DIRECTORY)
        else {
            continue;
        };
        let p = pfd.as_raw_fd();
        let Ok(Some(st)) = sys::lstat_at(p, name) else {
            continue;
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let empty = if is_dir {
            sys::open_beneath(p, Path::new(name), libc::O_DIRECTORY | libc::O_RDONLY)
                .and_then(|d| sys::read_dir_fd(d.as_raw_fd()))
                .map(|v| v.is_empty())
                .unwrap_or(false)
        } else {
            st.st_size == 0
        };
        if empty {
            sys::unlink_at(p, name, is_dir).map_err(|source| SandboxError::Stub {
                path: rel.clone(),
                source,
            })?;
            removed.push(rel.clone());
        }
    }
    // Put a directory's time back only if nothing but the stubs touched it
    // (checked above, before the removals changed it) and every stub made
    // in it went again: a step that wrote there keeps its own time, and a
    // folder holding a stub the step wrote into keeps the time of that.
    for (dir, before) in restore.iter().rev() {
        let stub_stays = stubs
            .created
            .iter()
            .any(|c| c.parent() == Some(dir.as_path()) && !removed.contains(c));
        if stub_stays {
            continue;
        }
        if let Ok(fd) = sys::open_in_root(root.as_raw_fd(), dir, libc::O_PATH | libc::O_DIRECTORY) {
            let _ = sys::set_times_at(fd.as_raw_fd(), OsStr::new("."), *before);
        }
    }
    Ok(removed)
}

fn run_helper(
    spec: &SandboxSpec,
    helper_exe: &Path,
    sink: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<ExitStatus, SandboxError> {
    let herr = |source| SandboxError::Helper {
        exe: helper_exe.to_path_buf(),
        source,
    };
    let (mut ours, theirs) = UnixStream::pair().map_err(herr)?;
    // The socket is the helper's stdin: no fd juggling between fork and
    // exec, so std can spawn with posix_spawn (vfork) instead of copying
    // this process's page tables with fork.
    let stdio = crate::reexec::HelperStdio {
        stdin: Stdio::from(OwnedFd::from(theirs)),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
    };
    let mut child =
        crate::reexec::spawn_helper(helper_exe, &[HELPER_SUBCOMMAND], &[], stdio).map_err(herr)?;

    let json = serde_json::to_vec(spec).map_err(|e| herr(io::Error::other(e)))?;
    ours.write_all(&json).map_err(herr)?;
    ours.shutdown(std::net::Shutdown::Write).map_err(herr)?;

    let out = child.stdout.take();
    let err = child.stderr.take();
    let mut fds: Vec<(Stream, Box<dyn Read>, RawFd)> = Vec::new();
    if let Some(o) = out {
        let fd = o.as_raw_fd();
        fds.push((Stream::Stdout, Box::new(o), fd));
    }
    if let Some(e) = err {
        let fd = e.as_raw_fd();
        fds.push((Stream::Stderr, Box::new(e), fd));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut cancelled = false;
    while !fds.is_empty() {
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|(_, _, fd)| libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Err(e) = sys::poll(&mut pfds, 50) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(herr(e));
            }
        }
        let mut done = Vec::new();
        for (i, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let (stream, reader, _) = &mut fds[i];
            match reader.read(&mut buf) {
                Ok(0) => done.push(i),
                Ok(k) => sink(*stream, &buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => done.push(i),
            }
        }
        for i in done.into_iter().rev() {
            fds.remove(i);
        }
        if !cancelled && cancel.load(Ordering::Relaxed) {
            cancelled = true;
            let _ = child.kill();
        }
    }

    let mut answer = Vec::new();
    let read = ours.read_to_end(&mut answer);
    let helper_status = child.wait().map_err(herr)?;
    if cancelled {
        return Err(SandboxError::Cancelled);
    }
    read.map_err(herr)?;
    if answer.is_empty() {
        return Err(herr(io::Error::other(format!(
            "helper ended without a status ({helper_status})"
        ))));
    }
    match serde_json::from_slice::<HelperStatus>(&answer) {
        Ok(HelperStatus::Exited(s)) => Ok(s),
        Ok(HelperStatus::Error(msg)) => Err(SandboxError::Setup(msg)),
        Err(e) => Err(herr(io::Error::other(format!(
            "unreadable helper status: {e}"
        )))),
    }
}

// ---------------------------------------------------------------------------
// The helper side.

/// One action of pid 1 between fork and exec. Paths are inside the rootfs
/// (relative) unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A session of its own (as runc does without a terminal), so signals
    /// aimed at kiln's terminal do not reach the step directly: kiln
    /// cancels it instead.
    NewSession,
    /// Docker's umask (022), whatever kiln's is.
    Umask(u32),
    /// Stop mount events from leaking back to the host (`/` rprivate).
    MakeRootPrivate,
    /// Bind the rootfs onto itself (pivot_root needs a mount point) and
    /// make it, with every mount beneath it, nodev.
    BindRootfs,
    /// mount(2) onto a target beneath the rootfs, creating it if missing.
    Mount {
        source: String,
        target: PathBuf,
        fstype: Option<String>,
        flags: libc::c_ulong,
        data: Option<String>,
        is_dir: bool,
    },
    /// Bind a host path (absolute) onto a target beneath the rootfs;
    /// `nodev` (all but device nodes) makes it and every mount beneath it
    /// nodev.
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
        is_dir: bool,
        nodev: bool,
    },
    /// A symlink beneath the rootfs (e.g. /dev/fd -> /proc/self/fd).
    Symlink {
        target: String,
        link: PathBuf,
    },
    /// Mount a private binfmt_misc on the sandbox's
    /// /proc/sys/fs/binfmt_misc and write this rule to its `register` (the
    /// interpreter path is the host's: F opens it before the pivot).
    Binfmt(String),
    /// Write a value to /proc/sys/KEY (dots as slashes) of the sandbox's
    /// own /proc, before /proc/sys is made read-only.
    Sysctl {
        key: String,
        value: String,
    },
    /// Make the rootfs the process's `/` and detach the host's.
    PivotRoot,
    /// Remount `/` read-only (`--read-only`), right after the pivot.
    ReadonlyRoot,
    /// Hide a kernel interface as docker does: /dev/null over a file, an
    /// empty read-only tmpfs over a directory; skipped when absent.
    MaskPath(PathBuf),
    /// Make a path beneath the rootfs read-only (bind onto itself, then
    /// remount), e.g. /proc/sys; skipped when absent.
    ReadonlyPath(PathBuf),
    SetHostname(String),
    /// Make the pseudo-terminal ([`Terminal`]): after the hostname, so
    /// `exec`'s tail of the plan has it too.
    Terminal(Terminal),
    SetRlimits(Vec<Rlimit>),
    /// Close every inherited fd but stdio and the error pipe, so no host
    /// directory stays reachable through /proc/self/fd.
    CloseFds,
    /// chdir, creating the directory (0755, as root) if missing.
    Chdir(String),
    /// Keep only these capabilities in the bounding set.
    DropBoundingCaps(u64),
    SetGroups(Vec<u32>),
    SetGid(u32),
    SetUid(u32),
    /// Effective/permitted to the mask, inheritable and ambient cleared.
    SetCaps(u64),
    NoNewPrivs,
    /// Default signal dispositions and an empty mask (Rust ignores SIGPIPE).
    ResetSignals,
    Exec {
        argv: Vec<String>,
        env: Vec<String>,
    },
}

/// What docker (and BuildKit, through containerd's default spec) hides.
const MASKED_PATHS: [&str; 11] = [
    "proc/asound",
    "proc/acpi",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];
/// What docker leaves visible but read-only: root in the sandbox is root
/// of the host, so a writable /proc/sys would reach the host's kernel.
const READONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Plans pid 1's setup for `spec`: a pure function, so its order (mounts
/// before pivot, user after chdir, capabilities after the user, exec last)
/// is checked without namespaces.
pub fn plan(spec: &SandboxSpec) -> Vec<Step> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME};
    let mut s = vec![
        Step::NewSession,
        Step::Umask(0o022),
        Step::MakeRootPrivate,
        Step::BindRootfs,
    ];
    let m = |source: &str, target: &str, fstype: &str, flags, data: Option<&str>| Step::Mount {
        source: source.into(),
        target: target.into(),
        fstype: Some(fstype.into()),
        flags,
        data: data.map(str::to_string),
        is_dir: true,
    };
    s.push(m(
        "proc",
        "proc",
        "proc",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    ));
    if let Some(line) = spec
        .emulator
        .as_ref()
        .and_then(crate::emulation::register_line)
    {
        s.push(Step::Binfmt(line));
    }
    // nodev, unlike docker's: kiln keeps host devices out by nodev
    // everywhere (see the module's docs) rather than by a devices cgroup;
    // the nodes bound into it are mounts of their own, and still work.
    s.push(m(
        "tmpfs",
        "dev",
        "tmpfs",
        MS_NOSUID | MS_NODEV | MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    ));
    for n in DEV_NODES {
        s.push(Step::Bind {
            source: PathBuf::from("/dev").join(n),
            target: PathBuf::from("dev").join(n),
            readonly: false,
            is_dir: false,
            nodev: false,
        });
    }
    for d in &spec.devices {
        if let Some(target) = crate::snapshot::rel_components(&d.target) {
            s.push(Step::Bind {
                source: d.host.clone(),
                target,
                readonly: d.readonly,
                is_dir: false,
                nodev: false,
            });
        }
    }
    s.push(m(
        "devpts",
        "dev/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    s.push(Step::Symlink {
        target: "pts/ptmx".into(),
        link: "dev/ptmx".into(),
    });
    s.push(m(
        "shm",
        "dev/shm",
        "tmpfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        Some(
            format!(
                "mode=1777,size={}k",
                spec.shm_size.map_or(65536, |b| b.div_ceil(1024))
            )
            .as_str(),
        ),
    ));
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        s.push(Step::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    s.push(m(
        "sysfs",
        "sys",
        "sysfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
        None,
    ));
    // Never the host's network parameters (the caller refuses them too).
    let own_net = spec.network != Network::Host;
    for (key, value) in spec
        .sysctls
        .iter()
        .filter(|(k, _)| own_net || !k.starts_with("net."))
    {
        s.push(Step::Sysctl {
            key: key.clone(),
            value: value.clone(),
        });
    }
    for p in MASKED_PATHS {
        s.push(Step::MaskPath(p.into()));
    }
    for p in READONLY_PATHS {
        s.push(Step::ReadonlyPath(p.into()));
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        let source = match (&spec.resolv_conf, &spec.hosts_file) {
            (Some(own), _) if f == "etc/resolv.conf" => own.clone(),
            (_, Some(own)) if f == "etc/hosts" => own.clone(),
            _ => PathBuf::from("/").join(f),
        };
        if !source.exists() {
            continue; // a host without one: the sandbox gets the empty stub
        }
        s.push(Step::Bind {
            source,
            target: f.into(),
            readonly: true,
            is_dir: false,
            nodev: true,
        });
    }
    for mount in &spec.mounts {
        let Some(target) = crate::snapshot::rel_components(mount.target()) else {
            continue;
        };
        match mount {
            Mount::Bind {
                source, readonly, ..
            } => s.push(Step::Bind {
                source: source.clone(),
                target,
                readonly: *readonly,
                is_dir: source.is_dir(),
                nodev: true,
            }),
            Mount::Tmpfs { size, mode, .. } => {
                let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
                if let Some(sz) = size {
                    data.push_str(&format!(",size={sz}"));
                }
                s.push(Step::Mount {
                    source: "tmpfs".into(),
                    target,
                    fstype: Some("tmpfs".into()),
                    flags: MS_NOSUID | MS_NODEV,
                    data: Some(data),
                    is_dir: true,
                });
            }
        }
    }
    s.push(Step::PivotRoot);
    if spec.readonly_rootfs {
        s.push(Step::ReadonlyRoot);
    }
    s.push(Step::SetHostname(spec.hostname.clone()));
    if let Some(t) = spec.terminal {
        s.push(Step::Terminal(t));
    }
    if !spec.rlimits.is_empty() {
        s.push(Step::SetRlimits(spec.rlimits.clone()));
    }
    s.push(Step::CloseFds);
    s.push(Step::Chdir(spec.cwd.clone()));
    let caps = if spec.privileged {
        ALL_CAPS
    } else {
        spec.caps.unwrap_or(DEFAULT_CAPS)
    };
    s.push(Step::DropBoundingCaps(caps));
    s.push(Step::SetGroups(spec.additional_gids.clone()));
    s.push(Step::SetGid(spec.gid));
    s.push(Step::SetUid(spec.uid));
    s.push(Step::SetCaps(if spec.uid == 0 { caps } else { 0 }));
    s.push(Step::NoNewPrivs);
    s.push(Step::ResetSignals);
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    s.push(Step::Exec {
        argv: spec.argv.clone(),
        env,
    });
    s
}

/// The helper's entry point (`kiln sandbox-helper`): reads the spec from
/// fd 3, runs it, writes the status to fd 3. Must be called before any
/// thread is started. Returns the helper's exit code (0 once a status was
/// written, whatever the process did).
pub fn helper_main() -> i32 {
    // The socket on our stdin was given to us by `run`.
    let mut chan = UnixStream::from(sys::take_stdin());
    // Keep it from the sandboxed process.
    let _ = sys::set_cloexec(HELPER_FD);
    let status = match helper(&mut chan) {
        Ok(s) => HelperStatus::Exited(s),
        Err(e) => HelperStatus::Error(e.message),
    };
    let bytes =
        serde_json::to_vec(&status).unwrap_or_else(|_| b"{\"error\":\"status encoding\"}".to_vec());
    match chan.write_all(&bytes) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn helper(chan: &mut UnixStream) -> Result<ExitStatus, StartError> {
    // If kiln dies, so do we (and, through the pid namespace, the step).
    sys::die_with_parent();
    // fork below is only sound with one thread: refuse loudly if a future
    // change starts a runtime before dispatching to the helper.
    let one_thread = sys::SingleThreaded::check().map_err(|threads| {
        format!("the sandbox helper must be single-threaded, it has {threads} threads")
    })?;
    let mut input = Vec::new();
    chan.read_to_end(&mut input)
        .map_err(|e| format!("reading sandbox spec: {e}"))?;
    let spec: SandboxSpec =
        serde_json::from_slice(&input).map_err(|e| format!("decoding sandbox spec: {e}"))?;
    validate(&spec).map_err(|e| StartError::other(e.to_string()))?;
    let steps = plan(&spec);
    // Before anything forks: the step and all it starts are in the cgroup.
    for f in &spec.cgroup_procs {
        std::fs::write(f, std::process::id().to_string())
            .map_err(|e| format!("joining cgroup {}: {e}", f.display()))?;
    }
    if spec.network == Network::Private {
        // Before any user namespace: the prepared namespace belongs to the
        // host's, and joining it needs that namespace's CAP_SYS_ADMIN.
        let path = spec
            .netns
            .as_deref()
            .ok_or("a private network without its namespace")?;
        crate::sys::join_netns(path)
            .map_err(|e| format!("joining the step's network namespace: {e}"))?;
    }
    if spec.emulator.is_some() {
        // Before the other namespaces, so they (the mount namespace above
        // all) belong to it and binfmt_misc may be mounted privately.
        crate::emulation::enter_user_namespace(&one_thread)
            .map_err(|e| StartError::other(e.to_string()))?;
    }

    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    sys::unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    if spec.network == Network::None {
        sys::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    }
    let (rd, wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    // The process's stdin: a pipe we fill with the spec's bytes, else the
    // host's /dev/null (opened now, before any mount changes).
    let stdin_pipe = match &spec.stdin {
        Some(_) => Some(sys::pipe().map_err(|e| format!("pipe: {e}"))?),
        None => None,
    };
    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;

    let Some(pid) = sys::fork(&one_thread).map_err(|e| format!("fork: {e}"))? else {
        drop(rd);
        sys::die_with_parent();
        let src = match &stdin_pipe {
            Some((r, _)) => r.as_raw_fd(),
            None => devnull.as_raw_fd(),
        };
        // Replaces our stdin (the helper's socket) with src.
        let err = if let Err(e) = sys::dup2(src, 0) {
            StartError::other(format!("stdin: {e}"))
        } else {
            drop(stdin_pipe);
            drop(devnull);
            match child(&spec, &steps, wr.as_raw_fd()) {
                Ok(never) => match never {},
                Err(e) => e,
            }
        };
        let mut w = std::fs::File::from(wr);
        let _ = w.write_all(&err.encode());
        // Leave without running the helper's destructors or atexit.
        sys::exit_now(127);
    };
    drop(wr);
    drop(devnull);
    if let (Some((r, w)), Some(bytes)) = (stdin_pipe, &spec.stdin) {
        drop(r);
        // The process may exit without reading it all: EPIPE is not ours to
        // report (SIGPIPE is ignored in Rust programs).
        let _ = std::fs::File::from(w).write_all(bytes);
    }
    let mut err = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut err);
    let wstatus = sys::waitpid(pid).map_err(|e| format!("waitpid: {e}"))?;
    if let Some(e) = StartError::decode(&err) {
        return Err(e);
    }
    if libc::WIFEXITED(wstatus) {
        Ok(ExitStatus::Exited(libc::WEXITSTATUS(wstatus)))
    } else if libc::WIFSIGNALED(wstatus) {
        Ok(ExitStatus::Signaled(libc::WTERMSIG(wstatus)))
    } else {
        Err(format!("unexpected wait status {wstatus:#x}").into())
    }
}

enum Never {}

/// Carries out `steps` (a [`plan`] or its tail) in the calling process and
/// execs; returns only on failure, with the message. For the run backend
/// ([`crate::container`]), whose single-threaded helpers fork their own
/// processes (a container's pid 1, an exec'd process) and so need the
/// setup without this module's fork and status protocol.
pub fn carry_out(spec: &SandboxSpec, steps: &[Step], errfd: RawFd) -> StartError {
    match child(spec, steps, errfd) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// pid 1: carries out the plan; returns only on failure.
fn child(spec: &SandboxSpec, steps: &[Step], errfd: RawFd) -> Result<Never, StartError> {
    let rootfs = &spec.rootfs;
    // Compiled before anything changes, loaded last, right before execve.
    // The profile's capability rules follow the container's set (docker's
    // default), whoever the user is, as docker resolves them.
    let filter = if spec.privileged {
        None
    } else {
        let caps = spec.filter_caps.or(spec.caps).unwrap_or(DEFAULT_CAPS);
        crate::seccomp::compile_mode(&spec.seccomp, caps).map_err(|e| e.to_string())?
    };
    let mut rootfd: Option<OwnedFd> = None;
    for step in steps {
        match step {
            Step::NewSession => {
                sys::setsid().map_err(|e| format!("setsid: {e}"))?;
            }
            Step::Umask(m) => {
                sys::umask(*m);
            }
            Step::MakeRootPrivate => {
                sys::mount(
                    None,
                    Path::new("/"),
                    None,
                    libc::MS_REC | libc::MS_PRIVATE,
                    None,
                )
                .map_err(|e| format!("making / private: {e}"))?;
            }
            Step::BindRootfs => {
                sys::mount(
                    Some(rootfs.as_os_str()),
                    rootfs,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| format!("binding rootfs {}: {e}", rootfs.display()))?;
                sys::set_nodev_recursive(rootfs)
                    .map_err(|e| format!("rootfs {} nodev: {e}", rootfs.display()))?;
                rootfd = Some(sys::open_dir(rootfs).map_err(|e| format!("opening rootfs: {e}"))?);
            }
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                is_dir,
            } => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let fd = ensure_in_root(root, target, *is_dir, &mut Vec::new())
                    .map_err(|e| format!("mount point /{}: {e}", target.display()))?;
                let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                let r = sys::mount(
                    Some(OsStr::new(source)),
                    &at,
                    fstype.as_deref(),
                    *flags,
                    data.as_deref(),
                );
                if let Err(e) = r {
                    if fstype.as_deref() == Some("sysfs") {
                        // No sysfs of our own (e.g. host network in some
                        // setups): a read-only recursive bind of the host's.
                        sys::mount(
                            Some(OsStr::new("/sys")),
                            &at,
                            None,
                            libc::MS_BIND | libc::MS_REC,
                            None,
                        )
                        .map_err(|e| format!("binding /sys: {e}"))?;
                        // A new fd: the old one names the covered inode. The
                        // host's flags are kept (locked in a user namespace).
                        let fd = sys::open_in_root(root, target, libc::O_PATH)
                            .map_err(|e| format!("reopening /{}: {e}", target.display()))?;
                        let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                        sys::mount(
                            None,
                            &at,
                            None,
                            libc::MS_BIND
                                | libc::MS_REMOUNT
                                | libc::MS_RDONLY
                                | libc::MS_NOSUID
                                | libc::MS_NODEV
                                | libc::MS_NOEXEC,
                            None,
                        )
                        .map_err(|e| format!("remounting /sys read-only: {e}"))?;
                    } else {
                        return Err(
                            format!("mounting {source} on /{}: {e}", target.display()).into()
                        );
                    }
                }
            }
            Step::Bind {
                source,
                target,
                readonly,
                is_dir,
                nodev,
            } => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let fd = ensure_in_root(root, target, *is_dir, &mut Vec::new())
                    .map_err(|e| format!("mount point /{}: {e}", target.display()))?;
                let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                sys::mount(
                    Some(source.as_os_str()),
                    &at,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| {
                    format!("binding {} on /{}: {e}", source.display(), target.display())
                })?;
                if *nodev {
                    // A new fd: the old one names the covered inode.
                    let fd = sys::open_in_root(root, target, libc::O_PATH)
                        .map_err(|e| format!("reopening /{}: {e}", target.display()))?;
                    let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                    sys::set_nodev_recursive(&at)
                        .map_err(|e| format!("/{} nodev: {e}", target.display()))?;
                }
                if *readonly {
                    // A new fd: the old one names the covered inode.
                    let fd = sys::open_in_root(root, target, libc::O_PATH)
                        .map_err(|e| format!("reopening /{}: {e}", target.display()))?;
                    let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                    // A device node bound read-only must stay openable.
                    let nodev_flag = if *nodev { libc::MS_NODEV } else { 0 };
                    sys::mount(
                        None,
                        &at,
                        None,
                        libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | nodev_flag,
                        None,
                    )
                    .map_err(|e| format!("read-only /{}: {e}", target.display()))?;
                }
            }
            Step::Symlink { target, link } => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let parent = link.parent().unwrap_or(Path::new(""));
                let pfd = sys::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(|e| format!("/{}: {e}", parent.display()))?;
                let name = link.file_name().unwrap_or_default();
                match sys::symlink_at(OsStr::new(target), pfd.as_raw_fd(), name) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(format!("symlink /{}: {e}", link.display()).into()),
                }
            }
            Step::Binfmt(line) => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                crate::emulation::mount_and_register(root, line)
                    .map_err(|e| StartError::other(e.to_string()))?;
            }
            Step::PivotRoot => {
                sys::chdir(rootfs).map_err(|e| format!("chdir rootfs: {e}"))?;
                sys::pivot_root_to_cwd().map_err(|e| format!("pivot_root: {e}"))?;
                // The old root now sits under the new one at "."; detach it.
                sys::umount(Path::new("."), libc::MNT_DETACH)
                    .map_err(|e| format!("unmounting the host root: {e}"))?;
                sys::chdir(Path::new("/")).map_err(|e| format!("chdir /: {e}"))?;
                rootfd = None;
            }
            Step::ReadonlyRoot => {
                sys::mount(
                    None,
                    Path::new("/"),
                    None,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    None,
                )
                .map_err(|e| format!("remounting / read-only: {e}"))?;
            }
            Step::MaskPath(target) => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let Ok(fd) = sys::open_in_root(root, target, libc::O_PATH) else {
                    continue;
                };
                let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                let is_dir = std::fs::metadata(&at).map(|m| m.is_dir()).unwrap_or(false);
                let r = if is_dir {
                    sys::mount(
                        Some(OsStr::new("tmpfs")),
                        &at,
                        Some("tmpfs"),
                        libc::MS_RDONLY,
                        Some("size=0"),
                    )
                } else {
                    sys::mount(
                        Some(OsStr::new("/dev/null")),
                        &at,
                        None,
                        libc::MS_BIND,
                        None,
                    )
                };
                r.map_err(|e| format!("masking /{}: {e}", target.display()))?;
            }
            Step::ReadonlyPath(target) => {
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let Ok(fd) = sys::open_in_root(root, target, libc::O_PATH) else {
                    continue;
                };
                let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                sys::mount(
                    Some(at.as_os_str()),
                    &at,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| format!("binding /{}: {e}", target.display()))?;
                let fd = sys::open_in_root(root, target, libc::O_PATH)
                    .map_err(|e| format!("reopening /{}: {e}", target.display()))?;
                let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                sys::mount(
                    None,
                    &at,
                    None,
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    None,
                )
                .map_err(|e| format!("read-only /{}: {e}", target.display()))?;
            }
            Step::Sysctl { key, value } => {
                use std::io::Write;
                let root = rootfd.as_ref().ok_or("rootfs not bound")?.as_raw_fd();
                let rel = PathBuf::from("proc/sys").join(key.replace('.', "/"));
                let fd = sys::open_in_root(root, &rel, libc::O_WRONLY)
                    .map_err(|e| format!("open /{}: {e}", rel.display()))?;
                std::fs::File::from(fd)
                    .write_all(value.as_bytes())
                    .map_err(|e| format!("write /{}: {e}", rel.display()))?;
            }
            Step::SetHostname(h) => {
                sys::sethostname(h).map_err(|e| format!("sethostname: {e}"))?;
            }
            Step::Terminal(t) => crate::container::pty::make_terminal(t)?,
            Step::SetRlimits(limits) => {
                for l in limits {
                    let (_, cur_hard) =
                        sys::getrlimit(l.resource).map_err(|e| format!("getrlimit: {e}"))?;
                    let hard = l.hard.min(cur_hard);
                    sys::setrlimit(l.resource, l.soft.min(hard), hard)
                        .map_err(|e| format!("setrlimit: {e}"))?;
                }
            }
            Step::CloseFds => {
                // errfd is kept (it is close-on-exec and tells the helper
                // about failures).
                sys::close_fds_except(errfd);
            }
            Step::Chdir(cwd) => {
                if sys::chdir(Path::new(cwd)).is_err() {
                    std::fs::create_dir_all(cwd)
                        .map_err(|e| format!("creating workdir {cwd}: {e}"))?;
                    sys::chdir(Path::new(cwd))
                        .map_err(|e| format!("chdir to workdir {cwd}: {e}"))?;
                }
                // A cwd outside the root (e.g. through a /proc/self/fd link)
                // reads "(unreachable)…": refuse to start there.
                let here = std::env::current_dir().map_err(|e| format!("workdir {cwd}: {e}"))?;
                if !here.is_absolute() {
                    return Err(format!("workdir {cwd} is outside the container").into());
                }
            }
            Step::DropBoundingCaps(keep) => {
                let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .unwrap_or(40);
                for cap in 0..=last {
                    if keep & (1u64 << cap) == 0 {
                        if let Err(e) = sys::drop_bounding_cap(cap) {
                            if e.raw_os_error() != Some(libc::EINVAL) {
                                return Err(format!("dropping capability {cap}: {e}").into());
                            }
                        }
                    }
                }
            }
            Step::SetGroups(gids) => {
                match sys::setgroups(gids) {
                    Ok(()) => {}
                    // Rootless with one id mapped: setgroups is denied to
                    // every process of the namespace (the kernel's rule for
                    // an unprivileged gid map); no groups can be set.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && crate::userns::mode() == crate::userns::Mode::SingleId => {}
                    Err(e) => return Err(format!("setgroups: {e}").into()),
                }
            }
            Step::SetGid(g) => {
                sys::setresgid(*g).map_err(|e| format!("setgid {g}: {e}{}", unmapped_hint()))?;
            }
            Step::SetUid(u) => {
                sys::setresuid(*u).map_err(|e| format!("setuid {u}: {e}{}", unmapped_hint()))?;
            }
            Step::SetCaps(mask) => set_caps(*mask)?,
            Step::NoNewPrivs => {
                sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
            }
            Step::ResetSignals => sys::reset_signals(),
            Step::Exec { argv, env } => return exec(argv, env, filter.as_ref()),
        }
    }
    Err("the sandbox plan has no exec step".into())
}

/// Why switching user fails rootless with one id mapped, for the message.
fn unmapped_hint() -> &'static str {
    if crate::userns::mode() == crate::userns::Mode::SingleId {
        " (rootless kiln maps only your own id, as root: add a range for your user in \
         /etc/subuid and /etc/subgid to run as other users)"
    } else {
        ""
    }
}

fn set_caps(mask: u64) -> Result<(), StartError> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63);
    let mut mask = mask & (u64::MAX >> (63 - last));
    // Never more than this process holds (a host that withholds some, e.g.
    // CAP_SYS_MODULE, would fail capset with EPERM otherwise).
    if let Some(prm) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    {
        mask &= prm;
    }
    sys::set_caps(mask).map_err(|e| StartError::other(format!("capset: {e}")))
}

/// Finds `name` on the step's PATH as runc does: the first regular,
/// executable file.
fn lookup(name: &str, env: &[String]) -> Option<PathBuf> {
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        if sys::is_executable(&cand) && cand.is_file() {
            return Some(cand);
        }
    }
    None
}

fn exec(
    argv: &[String],
    env: &[String],
    filter: Option<&seccompiler::BpfProgram>,
) -> Result<Never, StartError> {
    let prog = if argv[0].contains('/') {
        PathBuf::from(&argv[0])
    } else {
        lookup(&argv[0], env).ok_or_else(|| StartError {
            kind: StartErrorKind::NotFound,
            message: format!("exec: \"{}\": executable file not found in $PATH", argv[0]),
        })?
    };
    let call = sys::Exec::new(&prog, argv, env).map_err(|e| StartError::other(e.to_string()))?;
    // Last: the lookup above is done, so only execve (allowed by docker's
    // profile) and, on failure, the error report follow under the filter.
    if let Some(f) = filter {
        crate::seccomp::load(f).map_err(|e| StartError::other(e.to_string()))?;
    }
    let e = call.exec();
    let (kind, why) = match e.raw_os_error() {
        Some(libc::ENOENT) => (StartErrorKind::NotFound, "no such file or directory".into()),
        Some(libc::EACCES) => (StartErrorKind::NotExecutable, "permission denied".into()),
        _ => (StartErrorKind::Other, e.to_string()),
    };
    Err(StartError {
        kind,
        message: format!("exec: \"{}\": {why}", prog.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(f).expect("step present")
    }

    #[test]
    fn plan_orders_mounts_pivot_user_caps_exec() {
        let mut spec = SandboxSpec::new("/r", vec!["true".into()]);
        spec.uid = 1000;
        spec.gid = 1000;
        spec.mounts.push(Mount::Tmpfs {
            target: "/cache".into(),
            size: None,
            mode: None,
        });
        let s = plan(&spec);
        let pivot = pos(&s, |x| *x == Step::PivotRoot);
        let tmpfs = pos(
            &s,
            |x| matches!(x, Step::Mount { target, .. } if target == Path::new("cache")),
        );
        let proc_ = pos(
            &s,
            |x| matches!(x, Step::Mount { fstype: Some(t), .. } if t == "proc"),
        );
        assert!(proc_ < pivot && tmpfs < pivot);
        let chdir = pos(&s, |x| matches!(x, Step::Chdir(_)));
        let close = pos(&s, |x| *x == Step::CloseFds);
        let bnd = pos(&s, |x| matches!(x, Step::DropBoundingCaps(_)));
        let setuid = pos(&s, |x| *x == Step::SetUid(1000));
        let caps = pos(&s, |x| matches!(x, Step::SetCaps(0)));
        assert!(pivot < close && close < chdir && chdir < setuid);
        assert!(
            bnd < setuid && setuid < caps,
            "bounding set needs CAP_SETPCAP, so before setuid"
        );
        assert!(matches!(s.last(), Some(Step::Exec { .. })));
    }

    #[test]
    fn plan_adds_default_path_only_when_missing() {
        let spec = SandboxSpec::new("/r", vec!["true".into()]);
        let Some(Step::Exec { env, .. }) = plan(&spec).pop() else {
            panic!("no exec")
        };
        assert_eq!(env, vec![format!("PATH={DEFAULT_PATH}")]);
        let mut spec = SandboxSpec::new("/r", vec!["true".into()]);
        spec.env = vec!["PATH=/x".into()];
        let Some(Step::Exec { env, .. }) = plan(&spec).pop() else {
            panic!("no exec")
        };
        assert_eq!(env, vec!["PATH=/x".to_string()]);
    }

    #[test]
    fn only_device_nodes_escape_nodev() {
        let mut spec = SandboxSpec::new("/r", vec!["true".into()]);
        spec.mounts.push(Mount::Bind {
            source: "/h".into(),
            target: "/m".into(),
            readonly: false,
        });
        spec.devices.push(Device {
            host: "/dev/zero".into(),
            target: "/dev/z".into(),
            readonly: false,
        });
        for step in plan(&spec) {
            match step {
                Step::Bind { target, nodev, .. } => {
                    assert_eq!(nodev, !target.starts_with("dev"), "{target:?}")
                }
                Step::Mount { target, flags, .. } if target == Path::new("dev") => {
                    assert_ne!(flags & libc::MS_NODEV, 0)
                }
                _ => {}
            }
        }
    }

    #[test]
    fn insecure_keeps_every_capability() {
        let mut spec = SandboxSpec::new("/r", vec!["true".into()]);
        spec.privileged = true;
        let s = plan(&spec);
        assert!(s.contains(&Step::SetCaps(ALL_CAPS)));
        assert!(s.contains(&Step::DropBoundingCaps(ALL_CAPS)));
    }

    #[test]
    fn docker_default_caps_mask() {
        assert_eq!(DEFAULT_CAPS, 0xa80425fb);
    }

    #[test]
    fn root_keeps_default_caps() {
        let s = plan(&SandboxSpec::new("/r", vec!["true".into()]));
        assert!(s.contains(&Step::SetCaps(DEFAULT_CAPS)));
    }

    #[test]
    fn spec_roundtrips_as_json() {
        let mut spec = SandboxSpec::new("/r", vec!["sh".into(), "-c".into(), "x".into()]);
        spec.network = Network::None;
        spec.mounts.push(Mount::Bind {
            source: "/h".into(),
            target: "/m".into(),
            readonly: true,
        });
        spec.stdin = Some(b"in".to_vec());
        let back: SandboxSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn validate_rejects_escaping_targets() {
        let mut spec = SandboxSpec::new("/r", vec!["true".into()]);
        spec.mounts.push(Mount::Tmpfs {
            target: "/../x".into(),
            size: None,
            mode: None,
        });
        assert!(matches!(validate(&spec), Err(SandboxError::Spec(_))));
        let mut spec = SandboxSpec::new("/r", vec![]);
        spec.cwd = "/".into();
        assert!(matches!(validate(&spec), Err(SandboxError::Spec(_))));
    }
}
