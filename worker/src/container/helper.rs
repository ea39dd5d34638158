//! The helper's side (`kiln container-helper run|exec`): a single-threaded
//! re-executed kiln that starts a container's pid 1 (or an exec'd
//! process), pumps its output to the log, forwards signals and records how
//! it ended.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::launch::StartReport;
use super::{
    now, proc_start_time, Container, Status, Store, EXIT_CANNOT_EXEC, EXIT_KILN, EXIT_NOT_FOUND,
};
use crate::sandbox::{self, Network, SandboxSpec, StartError, StartErrorKind, Step};
use crate::sys::{self, SingleThreaded};

/// The hidden `kiln` subcommand that runs [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "container-helper";

/// The environment variable holding the exec helper's [`ExecSpec`] (JSON):
/// unlike argv, a process's environment is not readable by other users.
pub const EXEC_SPEC_ENV: &str = "KILN_EXEC_SPEC";

/// What `kiln exec` asks the exec helper to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    pub pid: i32,
    pub start_time: u64,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    /// Join the container's network namespace (it has one of its own).
    pub join_net: bool,
    /// The container's seccomp filter, which the process gets too.
    #[serde(default)]
    pub seccomp: crate::seccomp::Seccomp,
    // --- tty
    /// `exec -t`: a pseudo-terminal of this size (rows, columns; 0 when
    /// unknown); the helper's stdin is then the attach stream.
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
    // --- life
    /// The container's cgroup dirs, which the process joins.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The container's capability set (`--cap-add/--cap-drop`), which
    /// the process gets too (None: docker's default set).
    #[serde(default)]
    pub caps: Option<u64>,
    /// The container is `--privileged`: every capability, no seccomp.
    #[serde(default)]
    pub privileged: bool,
    /// `exec --privileged`: every capability for this process; the
    /// container's seccomp filter stays (docker's exec).
    #[serde(default)]
    pub privileged_exec: bool,
    /// The container's `--group-add` groups, which the process gets too.
    #[serde(default)]
    pub group_add: Vec<String>,
}

/// The exit code docker gives a process that failed to start, by kind:
/// 127 not found, 126 not executable, 125 anything else.
pub fn start_failure_code(e: &StartError) -> i32 {
    match e.kind {
        StartErrorKind::NotFound => EXIT_NOT_FOUND,
        StartErrorKind::NotExecutable => EXIT_CANNOT_EXEC,
        StartErrorKind::Other => EXIT_KILN,
    }
}

/// The helper's entry point (`kiln container-helper run DIR [--detach]` or
/// `kiln container-helper exec` with an [`ExecSpec`] in [`EXEC_SPEC_ENV`]);
/// must run before any thread starts.
/// Returns the exit code: the container's (or exec'd process's) code, or
/// 125/126/127 when it could not start.
pub fn helper_main(args: &[String]) -> i32 {
    let one_thread = match SingleThreaded::check() {
        Ok(t) => t,
        Err(threads) => {
            eprintln!(
                "kiln: the container helper must be single-threaded, it has {threads} threads"
            );
            return EXIT_KILN;
        }
    };
    match args {
        [mode, dir, rest @ ..] if mode == "run" => run_helper(
            &one_thread,
            Path::new(dir),
            rest.iter().any(|a| a == "--detach"),
            super::pty::HelperTty::from_args(rest),
        ),
        [mode] if mode == "proxy" => crate::network::ports::proxy_main(),
        [mode] if mode == "dns" => crate::network::resolver::resolver_main(),
        [mode] if mode == "exec" => match serde_json::from_str::<ExecSpec>(
            &std::env::var(EXEC_SPEC_ENV).unwrap_or_default(),
        ) {
            Ok(spec) => exec_helper(&one_thread, &spec),
            Err(e) => {
                eprintln!("kiln: bad exec spec: {e}");
                EXIT_KILN
            }
        },
        _ => {
            eprintln!("kiln: usage: {HELPER_SUBCOMMAND} run DIR [--detach] | exec");
            EXIT_KILN
        }
    }
}

/// Signals the helper passes on to its process (kiln forwards Ctrl-C and
/// SIGTERM here; `kill` aimed at the helper works the same).
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Makes this process pass SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
/// SIGUSR2 on to `pid` (kiln in the foreground of `run` and `exec` forwards
/// them to its helper, which forwards them to the container's process).
pub fn forward_signals(pid: i32) {
    sys::set_forward_target(pid);
    install_forwarding();
}

fn install_forwarding() {
    sys::forward_signals(&FORWARDED);
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StartError> {
    sys::pipe().map_err(|e| StartError::other(format!("pipe: {e}")))
}

pub(super) fn wait_child(pid: i32) -> Result<i32, StartError> {
    let ws = sys::waitpid(pid).map_err(|e| format!("waitpid: {e}"))?;
    if libc::WIFEXITED(ws) {
        Ok(libc::WEXITSTATUS(ws))
    } else if libc::WIFSIGNALED(ws) {
        Ok(128 + libc::WTERMSIG(ws))
    } else {
        Ok(EXIT_KILN)
    }
}

fn run_helper(
    one_thread: &SingleThreaded,
    dir: &Path,
    detach: bool,
    mut tty: super::pty::HelperTty,
) -> i32 {
    // Out of kiln's session: a terminal's Ctrl-C reaches kiln only, which
    // forwards it once; a detached container outlives kiln and its terminal.
    let _ = sys::setsid();
    // Hold no directory of the caller's busy (the paths given are absolute).
    let _ = std::env::set_current_dir("/");
    let Some(store_dir) = dir.parent() else {
        eprintln!("kiln: bad container folder {}", dir.display());
        return EXIT_KILN;
    };
    let store = Store::at(store_dir.to_path_buf());
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let c = match store.load(&id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return EXIT_KILN;
        }
    };
    install_forwarding();
    let code = super::restart::supervise(one_thread, &store, &id, detach, |first| {
        run_attempt(
            one_thread,
            &store,
            &id,
            dir,
            detach,
            detach && first,
            &mut tty,
        )
    });
    crate::network::helper::after_exit(&store, &c);
    if c.auto_remove {
        let _ = store.remove(&id);
        super::volumes::remove_anonymous_of(store_dir, &c);
    }
    code
}

/// One run of the container (a forked child of the helper, see
/// [`super::restart`]): starts pid 1, reports (`report`: on stdout, for
/// kiln's `run -d`), pumps its output, records its end.
fn run_attempt(
    one_thread: &SingleThreaded,
    store: &Store,
    id: &str,
    dir: &Path,
    detach: bool,
    report: bool,
    tty: &mut super::pty::HelperTty,
) -> i32 {
    let mut c = match store.load(id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return EXIT_KILN;
        }
    };
    let fail = |code: i32, msg: String| -> i32 {
        let _ = store.update(id, |c| {
            c.status = Status::Exited;
            c.exit_code = Some(code);
            c.finished = Some(now());
            c.error = Some(msg.clone());
            c.life.finished_ns = super::life::now_ns();
        });
        if report {
            let report = StartReport::Failed {
                code,
                message: msg.clone(),
            };
            sys::write_all_fd(1, report.to_line().as_bytes());
        } else {
            sys::write_all_fd(2, format!("kiln: {msg}\n").as_bytes());
        }
        code
    };
    if let Err(e) = tty.prepare(&c, dir) {
        return fail(EXIT_KILN, e);
    }
    // Without a terminal: the attach socket (and a stdin pipe for `-i`).
    let mut plain = match super::stream::PlainAttach::prepare(&c, dir, detach) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_KILN, e),
    };
    if let Err(e) = super::limits::prepare(store, &mut c) {
        return fail(EXIT_KILN, e.message);
    }
    let started = match start_container(one_thread, store, &c, dir, tty) {
        Ok(s) => s,
        Err(e) => {
            super::limits::finish(&c);
            plain.finish(dir);
            return fail(EXIT_KILN, e.message);
        }
    };
    let Started {
        pid,
        out,
        err,
        errpipe,
    } = started;
    sys::set_forward_target(pid);
    tty.receive_master();
    let mut failure = Vec::new();
    let _ = File::from(errpipe).read_to_end(&mut failure);
    if let Some(e) = StartError::decode(&failure) {
        let _ = wait_child(pid);
        tty.finish(dir);
        plain.finish(dir);
        super::limits::finish(&c);
        return fail(start_failure_code(&e), e.message);
    }
    let start_time = proc_start_time(pid);
    let _ = store.update(id, |c| {
        c.status = Status::Running;
        c.pid = Some(pid);
        c.start_time = start_time;
        c.started = Some(now());
        c.life.on_start();
    });
    if report {
        sys::write_all_fd(1, StartReport::Started.to_line().as_bytes());
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            // Replaces our stdout (the handshake pipe) with /dev/null.
            let _ = sys::dup2(null.as_raw_fd(), 1);
        }
    }
    let log = if c.log_config.keeps_log() {
        super::logs::LogFile::open(&dir.join("log"), c.log_config.rotation)
    } else {
        Err(std::io::Error::other("--log-driver none"))
    };
    let clients = if tty.active() {
        drop((out, err));
        tty.serve(log.ok())
    } else {
        let mut health = super::health::HealthRunner::new(store, id);
        plain.pump(out, err, log.ok(), !detach, &mut || {
            health.as_mut().map_or(-1, |h| h.tick())
        })
    };
    let code = wait_child(pid).unwrap_or(EXIT_KILN);
    sys::set_forward_target(0);
    let oom = super::limits::finish(&c);
    let _ = store.update(id, |c| {
        c.status = Status::Exited;
        c.exit_code = Some(code);
        c.finished = Some(now());
        c.life.on_exit();
        (c.life.oom_killed, c.life.cgroups) = (oom, Vec::new());
    });
    super::pty::tell_exit(clients, code);
    tty.finish(dir);
    plain.finish(dir);
    code
}

struct Started {
    pid: i32,
    out: OwnedFd,
    err: OwnedFd,
    errpipe: OwnedFd,
}

/// Unshares the namespaces and forks pid 1 (which sets itself up and
/// execs); returns at once, with the read ends of its output and of its
/// setup-error pipe (empty at EOF when the exec worked).
fn start_container(
    one_thread: &SingleThreaded,
    store: &Store,
    c: &Container,
    dir: &Path,
    tty: &super::pty::HelperTty,
) -> Result<Started, StartError> {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let net = crate::network::helper::before_unshare(store, c, dir)?;
    if c.network == Network::None || net.needs_own_namespace() {
        flags |= libc::CLONE_NEWNET;
    }
    let flags = super::limits::namespaces(store, c, flags)?;
    sys::unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    if c.network == Network::None {
        sys::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    }
    net.after_unshare(store, c)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (e_r, e_w) = pipe()?;
    let Some(pid) = sys::fork(one_thread).map_err(|e| format!("fork: {e}"))? else {
        drop((out_r, err_r, e_r));
        let failure = container_init(
            one_thread,
            c,
            dir,
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            e_w.as_raw_fd(),
            tty.terminal(),
        );
        sys::write_all_fd(e_w.as_raw_fd(), &failure.encode());
        // Leave without running the helper's destructors.
        sys::exit_now(EXIT_NOT_FOUND);
    };
    drop((out_w, err_w, e_w));
    Ok(Started {
        pid,
        out: out_r,
        err: err_r,
        errpipe: e_r,
    })
}

/// pid 1 before exec: its stdio, a mount namespace of its own, the overlay,
/// the user, then the sandbox's plan. Returns only on failure.
fn container_init(
    one_thread: &SingleThreaded,
    c: &Container,
    dir: &Path,
    out: RawFd,
    err: RawFd,
    errfd: RawFd,
    terminal: Option<crate::sandbox::Terminal>,
) -> StartError {
    sys::die_with_parent();
    // With a terminal, its slave becomes the stdio (a step of the plan).
    if terminal.is_none() {
        if let Err(e) = sys::dup2(out, 1).and_then(|()| sys::dup2(err, 2)) {
            return format!("stdio: {e}").into();
        }
    }
    if let Err(e) = sys::unshare(libc::CLONE_NEWNS) {
        return format!("unshare mount namespace: {e}").into();
    }
    // Nothing mounted from here on may reach the host.
    if let Err(e) = crate::sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    ) {
        return format!("making / private: {e}").into();
    }
    let rootfs = dir.join("rootfs");
    let (upper, copied) = (dir.join("upper"), dir.join("copied"));
    use crate::snapshotter::Snapshotter;
    let work = dir.join("work");
    let start_fuse = || -> Result<(), String> {
        // kiln's overlay, served by a helper in this mount namespace; it
        // lives as long as the container's namespaces.
        let exe = std::env::current_exe().map_err(|e| format!("locating kiln: {e}"))?;
        let lowers = crate::snapshot::unique_lowers(&c.lowers);
        crate::fuse_overlay::FuseMount::start_with(&exe, &lowers, &upper, &rootfs, true)
            .map(std::mem::forget)
            .map_err(|e| format!("mounting the container's rootfs over FUSE: {e}"))
    };
    let mounted = if copied.exists() || c.snapshotter == Snapshotter::Copy {
        Err(None)
    } else if c.snapshotter == Snapshotter::Fuse {
        if let Err(e) = start_fuse() {
            return e.into();
        }
        Ok(None)
    } else {
        match crate::snapshot::mount_overlay(&c.lowers, &upper, &work, &rootfs) {
            Ok(m) => Ok(Some(m)),
            Err(crate::snapshot::SnapshotError::Mount { .. })
                if c.snapshotter == Snapshotter::Auto
                    && crate::fuse_overlay::usable().is_ok()
                    && start_fuse().is_ok() =>
            {
                Ok(None)
            }
            Err(e) => Err(Some(e)),
        }
    };
    match mounted {
        // It lives as long as the mount namespace: never unmount it here.
        Ok(m) => std::mem::forget(m),
        // No overlay here (e.g. the store itself on overlayfs): as the
        // build's snapshots do, fall back to a copy of the layers, made
        // once in the upper dir (which then holds the whole root).
        Err(Some(crate::snapshot::SnapshotError::Mount { .. })) | Err(None) => {
            if !copied.exists() {
                if let Err(e) = crate::snapshot::flatten(&c.lowers, &upper) {
                    return format!("copying the image's layers: {e}").into();
                }
                if let Err(e) = File::create(&copied) {
                    return format!("{}: {e}", copied.display()).into();
                }
            }
            if let Err(e) =
                crate::sys::mount(Some(upper.as_os_str()), &rootfs, None, libc::MS_BIND, None)
            {
                return format!("mounting the container's rootfs: {e}").into();
            }
        }
        Err(Some(e)) => return format!("mounting the container's rootfs: {e}").into(),
    }
    let mut user = match crate::users::resolve_user(&rootfs, &c.user) {
        Ok(u) => u,
        Err(e) => return e.to_string().into(),
    };
    if let Err(e) = user.add_groups(&rootfs, &c.life.security.group_add) {
        return e.into();
    }
    let mut spec = SandboxSpec::new(&rootfs, c.command.clone());
    spec.env = c.env.clone();
    if !spec.env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        spec.env.insert(0, format!("HOSTNAME={}", c.hostname));
    }
    user.apply(&mut spec);
    spec.cwd = c.cwd.clone();
    spec.network = c.network;
    (spec.hosts_file, spec.resolv_conf) = crate::network::helper::sandbox_files(c, dir);
    spec.hostname = c.hostname.clone();
    spec.mounts = c.mounts.clone();
    spec.seccomp = c.seccomp.clone();
    spec.devices = c.devices.clone();
    spec.readonly_rootfs = c.read_only;
    super::pty::with_terminal(&mut spec, terminal);
    super::limits::apply(c, &mut spec);
    let steps = sandbox::plan(&spec);
    if let Err(e) = super::limits::join(c) {
        return e;
    }
    if c.life.init {
        if let Err(e) = super::init::fork_init(one_thread, errfd) {
            return e;
        }
    }
    sandbox::carry_out(&spec, &steps, errfd)
}

fn exec_helper(one_thread: &SingleThreaded, x: &ExecSpec) -> i32 {
    // Out of kiln's session (see run_helper).
    let _ = sys::setsid();
    install_forwarding();
    let mut tty = super::pty::HelperTty::for_exec(x.tty);
    if let Err(e) = tty.prepare_exec() {
        eprintln!("kiln: {e}");
        return EXIT_KILN;
    }
    match exec_start(one_thread, x, &tty) {
        Ok((pid, errpipe)) => {
            sys::set_forward_target(pid);
            tty.receive_master();
            let mut report = Vec::new();
            let _ = File::from(errpipe).read_to_end(&mut report);
            let clients = if tty.active() && report.is_empty() {
                tty.serve(None)
            } else {
                Vec::new()
            };
            let code = wait_child(pid).unwrap_or(EXIT_KILN);
            super::pty::tell_exit(clients, code);
            match StartError::decode(&report) {
                None => code,
                Some(e) => {
                    eprintln!("kiln: {e}");
                    start_failure_code(&e)
                }
            }
        }
        Err(msg) => {
            eprintln!("kiln: {msg}");
            EXIT_KILN
        }
    }
}

fn open_ro(path: &str, flags: libc::c_int) -> Result<OwnedFd, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    // std opens with O_CLOEXEC.
    File::options()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| StartError::other(format!("{path}: {e}")))
}

fn exec_start(
    one_thread: &SingleThreaded,
    x: &ExecSpec,
    tty: &super::pty::HelperTty,
) -> Result<(i32, OwnedFd), StartError> {
    let pid = x.pid;
    if proc_start_time(pid) != Some(x.start_time) {
        return Err("the container is not running".into());
    }
    let root_path = PathBuf::from(format!("/proc/{pid}/root"));
    let mut user = crate::users::resolve_user(&root_path, &x.user).map_err(|e| e.to_string())?;
    user.add_groups(&root_path, &x.group_add)?;
    let mut names = vec!["ipc", "uts"];
    if x.join_net {
        names.push("net");
    }
    names.extend(["pid", "mnt"]);
    let ns: Vec<(&str, OwnedFd)> = names
        .iter()
        .map(|n| Ok((*n, open_ro(&format!("/proc/{pid}/ns/{n}"), 0)?)))
        .collect::<Result<_, StartError>>()?;
    let root = open_ro(&format!("/proc/{pid}/root"), libc::O_DIRECTORY)?;
    let cgroup = super::limits::open_procs(&x.cgroups);
    // The pid may have been reused between the check and the opens.
    if proc_start_time(pid) != Some(x.start_time) {
        return Err("the container is not running".into());
    }
    for (n, fd) in &ns {
        sys::setns(fd.as_raw_fd(), 0).map_err(|e| format!("joining the {n} namespace: {e}"))?;
    }
    drop(ns);
    let (e_r, e_w) = pipe()?;
    let Some(child) = sys::fork(one_thread).map_err(|e| format!("fork: {e}"))? else {
        drop(e_r);
        super::limits::join_through(&cgroup);
        let failure = exec_child(x, &root, &user, e_w.as_raw_fd(), tty.terminal());
        sys::write_all_fd(e_w.as_raw_fd(), &failure.encode());
        // Leave without the helper's destructors.
        sys::exit_now(EXIT_NOT_FOUND);
    };
    drop(e_w);
    Ok((child, e_r))
}

fn exec_child(
    x: &ExecSpec,
    root: &OwnedFd,
    user: &crate::users::ExecUser,
    errfd: RawFd,
    terminal: Option<crate::sandbox::Terminal>,
) -> StartError {
    sys::die_with_parent();
    if let Err(e) = sys::enter_root(root.as_raw_fd()) {
        return format!("entering the container's root: {e}").into();
    }
    let mut spec = SandboxSpec::new("/", x.argv.clone());
    spec.env = x.env.clone();
    user.apply(&mut spec);
    spec.cwd = x.cwd.clone();
    spec.seccomp = x.seccomp.clone();
    spec.privileged = x.privileged;
    spec.caps = if x.privileged_exec {
        Some(crate::sandbox::ALL_CAPS)
    } else {
        x.caps
    };
    spec.filter_caps = x.caps;
    spec.rlimits = SandboxSpec::default_rlimits();
    super::pty::with_terminal(&mut spec, terminal);
    // The container's mounts are in place: only what follows the hostname
    // (rlimits, fds, workdir, capabilities, user, exec) applies.
    let steps: Vec<Step> = sandbox::plan(&spec)
        .into_iter()
        .skip_while(|s| !matches!(s, Step::SetHostname(_)))
        .skip(1)
        .collect();
    sandbox::carry_out(&spec, &steps, errfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_known() {
        let me = std::process::id() as i32;
        assert!(proc_start_time(me).is_some());
    }

    #[test]
    fn start_failures_map_to_docker_codes() {
        let e = |kind, message: &str| StartError {
            kind,
            message: message.into(),
        };
        let code =
            |err: StartError| start_failure_code(&StartError::decode(&err.encode()).unwrap());
        assert_eq!(
            code(e(StartErrorKind::NotFound, "exec: \"nope\": not found")),
            127
        );
        assert_eq!(
            code(e(StartErrorKind::NotExecutable, "exec: \"/etc\": x")),
            126
        );
        // The words do not decide: only the kind does.
        assert_eq!(code(StartError::other("mounting: permission denied")), 125);
        assert_eq!(StartError::decode(b""), None);
    }
}
