//! Rootless kiln: a user namespace of the store's own, entered before
//! anything else runs.
//!
//! As a plain user kiln cannot chown, mount overlays or unshare the
//! sandbox's namespaces. Rootless podman and BuildKit (rootlesskit) solve it
//! the same way, and so does kiln: a user namespace that maps uid 0 to the
//! user and 1..=N to the user's subordinate range from `/etc/subuid` and
//! `/etc/subgid` (written by the setuid `newuidmap`/`newgidmap` of Debian's
//! `uidmap`), plus a mount namespace owned by it. Inside, kiln is root: layer
//! files keep their owners, overlay mounts work (with `userxattr`), and the
//! sandbox unshares what it always does.
//!
//! As podman does, the namespaces are held open by a small *pause* process
//! (`kiln` [`PAUSE_SUBCOMMAND`], its pid in the store's `userns.pid`), and
//! every kiln process working on that store joins them with `setns` at the
//! very start of `main`, while it is still single-threaded. One namespace per
//! store means a container started by `kiln run -d` can later be reached by
//! `kiln exec`, `logs` and `stop`, and mounts made by one kiln are seen by the
//! next, exactly as on the host for root.
//!
//! With no subordinate range only the user's own id is mapped (to 0): files
//! owned by anyone else become root's (the user's) and RUN steps cannot
//! switch users; kiln says so once and tolerates the failed chowns
//! ([`tolerate_unmapped`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::sys;

/// The hidden `kiln` subcommand of the pause process ([`pause_main`]); it
/// comes as `argv[1]` and is handled before any flag parsing.
pub const PAUSE_SUBCOMMAND: &str = "__userns-pause";

/// The file in the store holding the pause process's pid.
const PID_FILE: &str = "userns.pid";
/// The lock that keeps two kilns from starting two pause processes.
const LOCK_FILE: &str = "userns.lock";

/// Why kiln could not enter its user namespace. Each message says what to
/// change on the machine, not which syscall failed.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// The kernel refuses unprivileged user namespaces.
    #[error(
        "rootless kiln needs unprivileged user namespaces, and this machine forbids them ({reason}); \
         {fix}"
    )]
    Forbidden {
        /// What the kernel said, or which setting is off.
        reason: String,
        /// The sysctl to change.
        fix: String,
    },
    /// `newuidmap`/`newgidmap` are not installed.
    #[error(
        "rootless kiln maps your subordinate ids ({file}) with {tool}, which is not installed; \
         install Debian's `uidmap` package (or run as root)"
    )]
    NoIdMapTool {
        /// `newuidmap` or `newgidmap`.
        tool: &'static str,
        /// Where the range was found.
        file: &'static str,
    },
    /// `newuidmap`/`newgidmap` refused the mapping.
    #[error("{tool} refused to map {what}: {stderr}")]
    IdMapRefused {
        /// `newuidmap` or `newgidmap`.
        tool: &'static str,
        /// The mapping asked for.
        what: String,
        /// What the tool printed.
        stderr: String,
    },
    /// Some other step of setting up the namespace failed.
    #[error("entering kiln's user namespace: {what}: {source}")]
    Io {
        /// The step.
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RootlessError {
    let what = what.into();
    move |source| RootlessError::Io { what, source }
}

/// One line of a uid/gid map: `count` ids from `outside` appear as `inside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id as seen inside.
    pub inside: u32,
    /// The first id as seen outside.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// The subordinate ranges `/etc/subuid`-style `text` gives the user `name`
/// (lines `name:start:count` or `uid:start:count`), in file order.
pub fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let who = f.next()?;
            let start = f.next()?.trim().parse::<u32>().ok()?;
            let count = f.next()?.trim().parse::<u32>().ok()?;
            (count > 0 && (Some(who) == name || who == id)).then_some((start, count))
        })
        .collect()
}

/// The map for one kind of id: 0 is the user, then the subordinate ranges
/// one after another from 1 (podman's and rootlesskit's layout).
pub fn id_map(own: u32, subordinate: &[(u32, u32)]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in subordinate {
        map.push(IdRange {
            inside: next,
            outside: start,
            count,
        });
        next = next.saturating_add(count);
    }
    map
}

/// The user namespace this process is in, as its uid map says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The initial namespace: real root (or a plain user not yet inside).
    Host,
    /// A user namespace mapping many ids (subordinate ranges).
    Mapped,
    /// A user namespace mapping one id only: ownership cannot be kept.
    SingleId,
}

/// Which namespace this process runs in, read once from `/proc/self/uid_map`.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/self/uid_map") else {
            return Mode::Host;
        };
        let ranges: Vec<Vec<u64>> = text
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .collect();
        let total: u64 = ranges.iter().filter_map(|r| r.get(2)).sum();
        if ranges.len() == 1 && ranges[0].first() == Some(&0) && total == u64::from(u32::MAX) {
            Mode::Host
        } else if total <= 1 {
            Mode::SingleId
        } else {
            Mode::Mapped
        }
    })
}

/// Whether kiln runs inside a user namespace (rootless), where overlayfs
/// must be mounted with `userxattr` and its xattrs live under `user.`.
pub fn in_user_namespace() -> bool {
    mode() != Mode::Host
}

/// Swallows the EINVAL a chown to an unmapped id gets when only one id is
/// mapped (no subordinate range): the file stays the user's, as announced
/// when kiln entered the namespace. Every other error stands.
pub fn tolerate_unmapped(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && mode() == Mode::SingleId => Ok(()),
        other => other,
    }
}

/// Whether this process runs with euid 0 (in whatever namespace): then
/// there is nothing to enter.
pub fn euid_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The store a rootless kiln uses when `$KILN_ROOT` is not set:
/// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln` (podman's split).
pub fn default_store() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("kiln");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/share/kiln")
}

/// What [`enter`] has to tell the user once (on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// No subordinate range: only the user's own id is mapped.
    SingleId {
        /// The user's name (or uid).
        user: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::SingleId { user } => write!(
                f,
                "warning: {user} has no range in /etc/subuid and /etc/subgid, so rootless kiln maps only \
                 your own id (as root): files owned by any other user or group in images become \
                 owned by root (you), and RUN steps cannot switch to another user. Add a range \
                 (e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`) \
                 to keep ownership."
            ),
        }
    }
}

/// Puts this process (euid != 0, still single-threaded: the start of
/// `main`) into the user and mount namespaces of the store at `store`,
/// starting the pause process that holds them if none runs. Afterwards the
/// process is uid 0 with every capability inside, in the same working
/// directory.
pub fn enter(store: &Path) -> Result<Option<Notice>, RootlessError> {
    std::fs::create_dir_all(store).map_err(io_err(format!("creating {}", store.display())))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join(LOCK_FILE))
        .map_err(io_err("opening the namespace lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err("locking the namespace lock")(e.into()))?;

    let (user, uid, gid) = who_am_i();
    let uids = subordinate_ranges(&read_or_empty("/etc/subuid"), user.as_deref(), uid);
    let gids = subordinate_ranges(&read_or_empty("/etc/subgid"), user.as_deref(), uid);
    let single = uids.is_empty() || gids.is_empty();
    let notice = single.then(|| Notice::SingleId {
        user: user.clone().unwrap_or_else(|| uid.to_string()),
    });

    let pid_path = store.join(PID_FILE);
    if let Some(pid) = running_pause(&pid_path) {
        if join(pid).is_ok() {
            return Ok(notice);
        }
    }
    let pid = start_pause()?;
    let mapped = if single {
        map_single(pid, uid, gid)
    } else {
        map_with_tools(pid, &id_map(uid, &uids), &id_map(gid, &gids))
    };
    if let Err(e) = mapped {
        let _ = sys::kill(pid as libc::pid_t, libc::SIGKILL);
        return Err(e);
    }
    std::fs::write(&pid_path, format!("{pid}\n")).map_err(io_err("writing userns.pid"))?;
    join(pid)?;
    drop(lock);
    Ok(notice)
}

fn read_or_empty(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The user's name (from `$USER`/`$LOGNAME` only if it matches, else
/// /etc/passwd), uid and gid.
fn who_am_i() -> (Option<String>, u32, u32) {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let passwd = read_or_empty("/etc/passwd");
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    });
    (name, uid, gid)
}

/// The pid in `pid_path` if it is a live pause process of ours.
fn running_pause(pid_path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_pause = cmdline
        .split(|b| *b == 0)
        .any(|a| a == PAUSE_SUBCOMMAND.as_bytes());
    is_pause.then_some(pid)
}

/// Starts `kiln __userns-pause` in a process group of its own (a Ctrl-C
/// meant for this kiln must not end it) and waits for its word that it has
/// unshared.
fn start_pause() -> Result<u32, RootlessError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io_err("finding the kiln binary"))?;
    let mut child = Command::new(exe)
        .arg(PAUSE_SUBCOMMAND)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io_err("starting the namespace holder"))?;
    let pid = child.id();
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if line == "ok" {
        // It lives on; the kernel reparents it when this kiln exits.
        return Ok(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
    let errno = line
        .strip_prefix("unshare ")
        .and_then(|n| n.parse::<i32>().ok());
    Err(match errno {
        Some(n) if n == libc::EPERM || n == libc::ENOSPC || n == libc::EACCES => forbidden(n),
        Some(n) => io_err("unshare")(io::Error::from_raw_os_error(n)),
        None => {
            io_err("starting the namespace holder")(io::Error::other(format!("it said {line:?}")))
        }
    })
}

/// Names the setting that forbids user namespaces here.
fn forbidden(errno: i32) -> RootlessError {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let err = io::Error::from_raw_os_error(errno);
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return RootlessError::Forbidden {
            reason: "kernel.unprivileged_userns_clone = 0".into(),
            fix:
                "set `sysctl -w kernel.unprivileged_userns_clone=1` (as root), or run kiln as root"
                    .into(),
        };
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") || errno == libc::ENOSPC {
        return RootlessError::Forbidden {
            reason: format!("user.max_user_namespaces is 0 or exhausted: {err}"),
            fix: "raise it with `sysctl -w user.max_user_namespaces=28633` (as root), or run kiln as root"
                .into(),
        };
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return RootlessError::Forbidden {
            reason: "AppArmor restricts unprivileged user namespaces \
                     (kernel.apparmor_restrict_unprivileged_userns = 1)"
                .into(),
            fix: "allow them for kiln with an AppArmor profile granting `userns`, or set \
                  `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (as root)"
                .into(),
        };
    }
    RootlessError::Forbidden {
        reason: format!("unshare(CLONE_NEWUSER): {err}"),
        fix: "check kernel.unprivileged_userns_clone, user.max_user_namespaces, \
              kernel.apparmor_restrict_unprivileged_userns, or a seccomp profile of the \
              container kiln runs in"
            .into(),
    }
}

/// Maps the user's own ids only: an unprivileged process may write that one
/// line itself (after denying setgroups), so no setuid tool is needed.
fn map_single(pid: u32, uid: u32, gid: u32) -> Result<(), RootlessError> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(io_err(format!("writing /proc/{pid}/{file}")))
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("setgroups", "deny\n".into())?;
    write("gid_map", format!("0 {gid} 1\n"))
}

fn map_with_tools(pid: u32, uids: &[IdRange], gids: &[IdRange]) -> Result<(), RootlessError> {
    for (tool, file, map) in [
        ("newuidmap", "/etc/subuid", uids),
        ("newgidmap", "/etc/subgid", gids),
    ] {
        let mut args = vec![pid.to_string()];
        for r in map {
            args.extend([r.inside, r.outside, r.count].map(|n| n.to_string()));
        }
        let out = match Command::new(tool).args(&args).stdin(Stdio::null()).output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RootlessError::NoIdMapTool { tool, file })
            }
            Err(e) => return Err(io_err(format!("running {tool}"))(e)),
        };
        if !out.status.success() {
            return Err(RootlessError::IdMapRefused {
                tool,
                what: args[1..].join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Joins the pause process's user and mount namespaces, keeping the
/// working directory (setns into a mount namespace resets it to `/`).
fn join(pid: u32) -> Result<(), RootlessError> {
    let cwd = std::env::current_dir().ok();
    let user = File::open(format!("/proc/{pid}/ns/user")).map_err(io_err("opening its userns"))?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).map_err(io_err("opening its mount ns"))?;
    sys::setns(user.as_raw_fd(), libc::CLONE_NEWUSER).map_err(io_err("joining its userns"))?;
    sys::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS).map_err(io_err("joining its mount ns"))?;
    if let Some(cwd) = cwd {
        // A cwd that only the host could see stays `/`, as with podman.
        let _ = std::env::set_current_dir(cwd);
    }
    if rustix::process::getuid().as_raw() != 0 {
        return Err(io_err("checking the mapping")(io::Error::other(
            "this process is not root in kiln's namespace",
        )));
    }
    Ok(())
}

/// The pause process: unshares a user and a mount namespace, says `ok` on
/// stdout (or `unshare ERRNO`), then sleeps until killed, holding both for
/// every kiln that joins them. Must be called first thing in `main`.
pub fn pause_main() -> ! {
    let mut out = io::stdout();
    if let Err(e) = sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
        let _ = writeln!(out, "unshare {}", e.raw_os_error().unwrap_or(0));
        let _ = out.flush();
        sys::exit_now(1);
    }
    let _ = writeln!(out, "ok");
    let _ = out.flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:10\nbob:200000:65536\n";
        assert_eq!(
            subordinate_ranges(text, Some("alice"), 1001),
            vec![(100000, 65536), (300000, 10)]
        );
        assert!(subordinate_ranges(text, Some("carol"), 7).is_empty());
    }

    #[test]
    fn map_puts_the_user_at_zero() {
        let m = id_map(1001, &[(100000, 65536)]);
        assert_eq!(
            m[0],
            IdRange {
                inside: 0,
                outside: 1001,
                count: 1
            }
        );
        assert_eq!(
            m[1],
            IdRange {
                inside: 1,
                outside: 100000,
                count: 65536
            }
        );
    }
}
