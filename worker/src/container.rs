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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sandbox::{self, Mount, Network, SandboxSpec, Step};
use crate::sys::{self, SingleThreaded};

/// The hidden `kiln` subcommand that runs [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "container-helper";

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
    #[error("container {0:?} is ambiguous: give more of its ID")]
    Ambiguous(String),
    #[error("the container name \"/{0}\" is already in use")]
    NameInUse(String),
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error(transparent)]
    Lock(#[from] kiln_cache::Error),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

type Result<T, E = ContainerError> = std::result::Result<T, E>;

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

/// The containers of one kiln store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<kiln_root>/containers`.
    pub fn open(kiln_root: &Path) -> Result<Store> {
        let dir = kiln_root.join("containers");
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            // Containers' environments (secrets passed with -e) are in
            // their state: for the owner only, as docker's.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", &dir))?;
        }
        Ok(Store { dir })
    }

    /// A container's folder.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn global_lock(&self) -> Result<kiln_cache::lock::FileLock> {
        Ok(kiln_cache::lock::FileLock::exclusive(
            &self.dir.join(".lock"),
        )?)
    }

    /// Records a new container: picks its id (and its name when `c.name` is
    /// empty), checks the name is free, makes its folder and writes its
    /// state, all under the store's lock so two runs never share a name.
    pub fn create(&self, mut c: Container) -> Result<Container> {
        if !c.name.is_empty() && !valid_name(&c.name) {
            return Err(ContainerError::BadName(c.name));
        }
        let _lock = self.global_lock()?;
        let all = self.list()?;
        if c.name.is_empty() {
            let mut seed = random_bytes::<8>();
            loop {
                let n = generated_name(u64::from_le_bytes(seed));
                if !all.iter().any(|x| x.name == n) {
                    c.name = n;
                    break;
                }
                seed = random_bytes::<8>();
            }
        } else if all.iter().any(|x| x.name == c.name) {
            return Err(ContainerError::NameInUse(c.name));
        }
        c.id = hex::encode(random_bytes::<32>());
        c.created_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.dir_of(&c.id);
        for sub in ["upper", "work", "rootfs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        write_state(&dir, &c)?;
        Ok(c)
    }

    /// Reads one container's record.
    pub fn load(&self, id: &str) -> Result<Container> {
        read_state(&self.dir_of(id))
    }

    /// Changes one container's record under its lock and returns the result.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Container)) -> Result<Container> {
        let dir = self.dir_of(id);
        let _lock = kiln_cache::lock::FileLock::exclusive(&dir.join("lock"))?;
        let mut c = read_state(&dir)?;
        f(&mut c);
        write_state(&dir, &c)?;
        Ok(c)
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            // A folder being removed (or half made) is no container.
            if let Ok(c) = read_state(&e.path()) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| (b.created, b.created_ns, &b.id).cmp(&(a.created, a.created_ns, &a.id)));
        Ok(out)
    }

    /// Finds a container as docker does: full ID, exact name, or an
    /// unambiguous ID prefix.
    pub fn find(&self, key: &str) -> Result<Container> {
        let all = self.list()?;
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = all.iter().find(|c| c.id == key || c.name == key) {
            return Ok(c.clone());
        }
        let hits: Vec<&Container> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|c| c.id.starts_with(key)).collect()
        };
        match hits.as_slice() {
            [c] => Ok((*c).clone()),
            [] => Err(ContainerError::NotFound(key.to_string())),
            _ => Err(ContainerError::Ambiguous(key.to_string())),
        }
    }

    /// Deletes a container's folder (its upper dir, log and state).
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.global_lock()?;
        let dir = self.dir_of(id);
        // Renamed first so no reader sees a half-deleted container.
        let gone = self.dir.join(format!(".removing-{id}"));
        match fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("rename", &dir)(e)),
        }
        fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))
    }
}

fn read_state(dir: &Path) -> Result<Container> {
    let path = dir.join("state.json");
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::State {
        path,
        detail: e.to_string(),
    })
}

fn write_state(dir: &Path, c: &Container) -> Result<()> {
    let path = dir.join("state.json");
    let tmp = dir.join(format!("state.json.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(c).map_err(|e| ContainerError::State {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // No urandom: time and pid still make clashes unlikely, and the
        // store's lock plus the name check catch the rest.
        let seed = blake3::hash(
            format!(
                "{:?}{}",
                SystemTime::now().duration_since(UNIX_EPOCH),
                std::process::id()
            )
            .as_bytes(),
        );
        for (d, s) in buf.iter_mut().zip(seed.as_bytes().iter().cycle()) {
            *d = *s;
        }
    }
    buf
}

const ADJECTIVES: [&str; 24] = [
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "inspiring",
    "jolly",
    "keen",
    "loving",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "trusting",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];
const SURNAMES: [&str; 24] = [
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "feynman",
    "galileo",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
    "yonath",
    "zhukovsky",
    "lamport",
];

/// A docker-like `adjective_surname` name.
fn generated_name(seed: u64) -> String {
    let a = ADJECTIVES[(seed % ADJECTIVES.len() as u64) as usize];
    let s = SURNAMES[((seed / 64) % SURNAMES.len() as u64) as usize];
    let n = (seed / 4096) % 100;
    format!("{a}_{s}{n}")
}

// ---------------------------------------------------------------------------
// Stopping.

fn wait_dead(pid: i32, start: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if proc_start_time(pid) != Some(start) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: i32, start: u64, sig: libc::c_int) {
    if proc_start_time(pid) == Some(start) {
        // The start time check keeps a reused pid from being signalled.
        let _ = sys::kill(pid, sig);
    }
}

/// Sends `sig` to a running container's pid 1 (pid 1 of a namespace gets
/// only signals it handles, SIGKILL aside, as in docker).
pub fn kill(c: &Container, sig: libc::c_int) {
    if let (true, Some(pid), Some(start)) = (c.is_alive(), c.pid, c.start_time) {
        signal(pid, start, sig);
    }
}

/// `docker stop`: SIGTERM, SIGKILL after `timeout`, then waits for the
/// helper to record the exit (recording it itself if the helper is gone).
pub fn stop(store: &Store, id: &str, timeout: Duration) -> Result<Container> {
    let c = store.load(id)?;
    if let (true, Some(pid), Some(start)) = (c.is_alive(), c.pid, c.start_time) {
        signal(pid, start, libc::SIGTERM);
        if !wait_dead(pid, start, timeout) {
            signal(pid, start, libc::SIGKILL);
            wait_dead(pid, start, Duration::from_secs(60));
        }
    }
    wait_recorded(store, id)
}

/// Waits (a few seconds at most) for a dead container's helper to write its
/// final state; writes it when the helper is gone.
fn wait_recorded(store: &Store, id: &str) -> Result<Container> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = match store.load(id) {
            Ok(c) => c,
            // Removed by its own helper (`--rm`).
            Err(ContainerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NotFound(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        if c.status != Status::Running {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            return store.update(id, |c| {
                if c.status == Status::Running {
                    c.status = Status::Exited;
                    c.exit_code = Some(137);
                    c.finished = Some(now());
                }
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Logs.

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub time_ns: u128,
    /// "stdout" or "stderr".
    pub stream: String,
    pub log: String,
}

/// The largest log record, in bytes of output: docker's json-file driver
/// splits a longer line into records of 16 KiB, so a container printing
/// gigabytes without a newline costs its log writer (and readers) no more
/// than this. A record that does not end in `\n` is a piece of a longer line.
pub const MAX_LOG_RECORD: usize = 16 << 10;

/// The longest line of a log file a reader accepts (a record of
/// [`MAX_LOG_RECORD`] bytes escaped as JSON is at most six times longer);
/// longer lines, which kiln never writes, are skipped unread.
const MAX_LOG_LINE: usize = 8 * MAX_LOG_RECORD;

/// Streams the complete log entries from byte `offset` on (up to byte `end`
/// when given) to `f`, one at a time, so a log of any size is read in
/// bounded memory; returns the offset after the last complete line (for
/// `logs -f`). A line still being written is left for the next call.
pub fn for_each_log(
    path: &Path,
    offset: u64,
    end: Option<u64>,
    mut f: impl FnMut(LogEntry),
) -> Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let limit = end.map_or(u64::MAX, |e| e.saturating_sub(offset));
    let mut r = io::BufReader::with_capacity(64 << 10, file.take(limit));
    let mut pos = offset;
    let mut line = Vec::new();
    let mut line_len = 0usize;
    loop {
        let buf = r.fill_buf().map_err(io_err("read", path))?;
        if buf.is_empty() {
            break; // the end, or a line still being written
        }
        let (part, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        line_len += part.len();
        if line_len <= MAX_LOG_LINE {
            line.extend_from_slice(part);
        } else {
            line.clear();
        }
        let used = part.len();
        r.consume(used);
        if complete {
            pos += line_len as u64;
            if line_len <= MAX_LOG_LINE {
                if let Ok(e) = serde_json::from_slice::<LogEntry>(&line) {
                    f(e);
                }
            }
            line.clear();
            line_len = 0;
        }
    }
    Ok(pos)
}

/// Splits output into log records (kept with their newline): a line waits
/// for its end up to [`MAX_LOG_RECORD`] bytes, then goes out in pieces of
/// that size, as docker's logger does.
struct LineBuf {
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineBuf {
    fn push(&mut self, mut bytes: &[u8], log: &mut File) {
        while !bytes.is_empty() {
            let room = MAX_LOG_RECORD - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&bytes[..=i]);
                bytes = &bytes[i + 1..];
                let line = std::mem::take(&mut self.pending);
                write_entry(log, self.stream, &line);
                continue;
            }
            self.pending.extend_from_slice(window);
            bytes = &bytes[window.len()..];
            if self.pending.len() >= MAX_LOG_RECORD {
                // Keep a character cut at the end whole for the next record.
                let keep = incomplete_utf8_tail(&self.pending);
                let rest = self.pending.split_off(self.pending.len() - keep);
                let record = std::mem::replace(&mut self.pending, rest);
                write_entry(log, self.stream, &record);
            }
        }
    }

    fn flush(&mut self, log: &mut File) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            write_entry(log, self.stream, &line);
        }
    }
}

/// How many bytes at the end of `b` start a UTF-8 character that is not
/// complete yet (0 to 3).
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    let start = b.len().saturating_sub(3);
    let Some(i) = (start..b.len()).rev().find(|&i| b[i] & 0xC0 != 0x80) else {
        return 0;
    };
    let need = match b[i] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    if b.len() - i < need {
        b.len() - i
    } else {
        0
    }
}

fn write_entry(log: &mut File, stream: &str, bytes: &[u8]) {
    let e = LogEntry {
        time_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        stream: stream.to_string(),
        log: String::from_utf8_lossy(bytes).into_owned(),
    };
    if let Ok(mut v) = serde_json::to_vec(&e) {
        v.push(b'\n');
        // One write per entry on an O_APPEND file: readers see whole lines.
        let _ = log.write_all(&v);
    }
}

// ---------------------------------------------------------------------------
// The helper.

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
}

/// The exit code docker gives a process that failed to start with `msg`.
pub fn start_failure_code(msg: &str) -> i32 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        EXIT_NOT_FOUND
    } else if msg.contains("permission denied") {
        EXIT_CANNOT_EXEC
    } else {
        EXIT_KILN
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
        ),
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

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    sys::pipe().map_err(|e| format!("pipe: {e}"))
}

fn wait_child(pid: i32) -> Result<i32, String> {
    let ws = sys::waitpid(pid).map_err(|e| format!("waitpid: {e}"))?;
    if libc::WIFEXITED(ws) {
        Ok(libc::WEXITSTATUS(ws))
    } else if libc::WIFSIGNALED(ws) {
        Ok(128 + libc::WTERMSIG(ws))
    } else {
        Ok(EXIT_KILN)
    }
}

fn run_helper(one_thread: &SingleThreaded, dir: &Path, detach: bool) -> i32 {
    // Out of kiln's session: a terminal's Ctrl-C reaches kiln only, which
    // forwards it once; a detached container outlives kiln and its terminal.
    let _ = sys::setsid();
    // Hold no directory of the caller's busy (the paths given are absolute).
    let _ = std::env::set_current_dir("/");
    let Some(store_dir) = dir.parent() else {
        eprintln!("kiln: bad container folder {}", dir.display());
        return EXIT_KILN;
    };
    let store = Store {
        dir: store_dir.to_path_buf(),
    };
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
    let fail = |code: i32, msg: String| -> i32 {
        let _ = store.update(&id, |c| {
            c.status = Status::Exited;
            c.exit_code = Some(code);
            c.finished = Some(now());
            c.error = Some(msg.clone());
        });
        if detach {
            sys::write_all_fd(
                1,
                format!("error {code} {}\n", msg.replace('\n', " ")).as_bytes(),
            );
        } else {
            sys::write_all_fd(2, format!("kiln: {msg}\n").as_bytes());
        }
        if c.auto_remove {
            let _ = store.remove(&id);
        }
        code
    };
    let started = match start_container(one_thread, &c, dir) {
        Ok(s) => s,
        Err(msg) => return fail(EXIT_KILN, msg),
    };
    let Started {
        pid,
        out,
        err,
        errpipe,
    } = started;
    sys::set_forward_target(pid);
    let mut msg = String::new();
    let _ = File::from(errpipe).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = wait_child(pid);
        return fail(start_failure_code(&msg), msg);
    }
    let start_time = proc_start_time(pid);
    let _ = store.update(&id, |c| {
        c.status = Status::Running;
        c.pid = Some(pid);
        c.start_time = start_time;
        c.started = Some(now());
    });
    if detach {
        sys::write_all_fd(1, b"ok\n");
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            // Replaces our stdout (the handshake pipe) with /dev/null.
            let _ = sys::dup2(null.as_raw_fd(), 1);
        }
    }
    let log_path = dir.join("log");
    let log = OpenOptions::new().create(true).append(true).open(&log_path);
    pump(out, err, log.ok(), !detach);
    let code = wait_child(pid).unwrap_or(EXIT_KILN);
    sys::set_forward_target(0);
    let _ = store.update(&id, |c| {
        c.status = Status::Exited;
        c.exit_code = Some(code);
        c.finished = Some(now());
    });
    if c.auto_remove {
        let _ = store.remove(&id);
    }
    code
}

/// Copies the container's stdout and stderr to the log (and to our own
/// stdout/stderr when `tee`) until both close: pid 1's death ends the pid
/// namespace, and with it every holder of the pipes.
fn pump(out: OwnedFd, err: OwnedFd, mut log: Option<File>, tee: bool) {
    let (out, err) = (File::from(out), File::from(err));
    let mut streams = vec![
        (
            out,
            1,
            LineBuf {
                stream: "stdout",
                pending: Vec::new(),
            },
        ),
        (
            err,
            2,
            LineBuf {
                stream: "stderr",
                pending: Vec::new(),
            },
        ),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    while !streams.is_empty() {
        let mut pfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(fd, _, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Err(e) = sys::poll(&mut pfds, -1) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        let mut done = Vec::new();
        for (i, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let (fd, target, lines) = &mut streams[i];
            let k = match fd.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => {
                    done.push(i);
                    continue;
                }
                Ok(k) => k,
            };
            let chunk = &buf[..k];
            if tee {
                sys::write_all_fd(*target, chunk);
            }
            if let Some(l) = log.as_mut() {
                lines.push(chunk, l);
            }
        }
        for i in done.into_iter().rev() {
            let (_, _, mut lines) = streams.remove(i);
            if let Some(l) = log.as_mut() {
                lines.flush(l);
            }
        }
    }
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
    c: &Container,
    dir: &Path,
) -> Result<Started, String> {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if c.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    sys::unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    if c.network == Network::None {
        sys::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (e_r, e_w) = pipe()?;
    let Some(pid) = sys::fork(one_thread).map_err(|e| format!("fork: {e}"))? else {
        drop((out_r, err_r, e_r));
        let msg = container_init(
            c,
            dir,
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            e_w.as_raw_fd(),
        );
        sys::write_all_fd(e_w.as_raw_fd(), msg.as_bytes());
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
fn container_init(c: &Container, dir: &Path, out: RawFd, err: RawFd, errfd: RawFd) -> String {
    sys::die_with_parent();
    if let Err(e) = sys::dup2(out, 1).and_then(|()| sys::dup2(err, 2)) {
        return format!("stdio: {e}");
    }
    if let Err(e) = sys::unshare(libc::CLONE_NEWNS) {
        return format!("unshare mount namespace: {e}");
    }
    // Nothing mounted from here on may reach the host.
    if let Err(e) = crate::sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    ) {
        return format!("making / private: {e}");
    }
    let rootfs = dir.join("rootfs");
    let (upper, copied) = (dir.join("upper"), dir.join("copied"));
    let mounted = if copied.exists() {
        Err(None)
    } else {
        crate::snapshot::mount_overlay(&c.lowers, &upper, &dir.join("work"), &rootfs).map_err(Some)
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
                    return format!("copying the image's layers: {e}");
                }
                if let Err(e) = File::create(&copied) {
                    return format!("{}: {e}", copied.display());
                }
            }
            if let Err(e) =
                crate::sys::mount(Some(upper.as_os_str()), &rootfs, None, libc::MS_BIND, None)
            {
                return format!("mounting the container's rootfs: {e}");
            }
        }
        Err(Some(e)) => return format!("mounting the container's rootfs: {e}"),
    }
    let user = match crate::users::resolve_user(&rootfs, &c.user) {
        Ok(u) => u,
        Err(e) => return e.to_string(),
    };
    let mut spec = SandboxSpec::new(&rootfs, c.command.clone());
    spec.env = c.env.clone();
    if !spec.env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        spec.env.insert(0, format!("HOSTNAME={}", c.hostname));
    }
    user.apply(&mut spec);
    spec.cwd = c.cwd.clone();
    spec.network = c.network;
    spec.hostname = c.hostname.clone();
    spec.mounts = c.mounts.clone();
    spec.seccomp = c.seccomp.clone();
    spec.devices = c.devices.clone();
    let steps = sandbox::plan(&spec);
    sandbox::carry_out(&spec, &steps, errfd)
}

fn exec_helper(one_thread: &SingleThreaded, x: &ExecSpec) -> i32 {
    // Out of kiln's session (see run_helper).
    let _ = sys::setsid();
    install_forwarding();
    match exec_start(one_thread, x) {
        Ok((pid, errpipe)) => {
            sys::set_forward_target(pid);
            let mut msg = String::new();
            let _ = File::from(errpipe).read_to_string(&mut msg);
            let code = wait_child(pid).unwrap_or(EXIT_KILN);
            if msg.is_empty() {
                code
            } else {
                eprintln!("kiln: {msg}");
                start_failure_code(&msg)
            }
        }
        Err(msg) => {
            eprintln!("kiln: {msg}");
            EXIT_KILN
        }
    }
}

fn open_ro(path: &str, flags: libc::c_int) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // std opens with O_CLOEXEC.
    File::options()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("{path}: {e}"))
}

fn exec_start(one_thread: &SingleThreaded, x: &ExecSpec) -> Result<(i32, OwnedFd), String> {
    let pid = x.pid;
    if proc_start_time(pid) != Some(x.start_time) {
        return Err("the container is not running".into());
    }
    let root_path = PathBuf::from(format!("/proc/{pid}/root"));
    let user = crate::users::resolve_user(&root_path, &x.user).map_err(|e| e.to_string())?;
    let mut names = vec!["ipc", "uts"];
    if x.join_net {
        names.push("net");
    }
    names.extend(["pid", "mnt"]);
    let ns: Vec<(&str, OwnedFd)> = names
        .iter()
        .map(|n| Ok((*n, open_ro(&format!("/proc/{pid}/ns/{n}"), 0)?)))
        .collect::<Result<_, String>>()?;
    let root = open_ro(&format!("/proc/{pid}/root"), libc::O_DIRECTORY)?;
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
        let msg = exec_child(x, &root, &user, e_w.as_raw_fd());
        sys::write_all_fd(e_w.as_raw_fd(), msg.as_bytes());
        // Leave without the helper's destructors.
        sys::exit_now(EXIT_NOT_FOUND);
    };
    drop(e_w);
    Ok((child, e_r))
}

fn exec_child(x: &ExecSpec, root: &OwnedFd, user: &crate::users::ExecUser, errfd: RawFd) -> String {
    sys::die_with_parent();
    if let Err(e) = sys::enter_root(root.as_raw_fd()) {
        return format!("entering the container's root: {e}");
    }
    let mut spec = SandboxSpec::new("/", x.argv.clone());
    spec.env = x.env.clone();
    user.apply(&mut spec);
    spec.cwd = x.cwd.clone();
    spec.seccomp = x.seccomp.clone();
    // The container's mounts are in place: only what follows the hostname
    // (rlimits, fds, workdir, capabilities, user, exec) applies.
    let steps: Vec<Step> = sandbox::plan(&spec)
        .into_iter()
        .skip_while(|s| !matches!(s, Step::SetHostname(_)))
        .skip(1)
        .collect();
    sandbox::carry_out(&spec, &steps, errfd)
}

/// The helper's path component check for `-v` targets and workdirs, shared
/// with the CLI so bad paths fail before anything starts.
pub fn valid_target(path: &str) -> bool {
    path.starts_with('/')
        && crate::snapshot::rel_components(path).is_some_and(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records are cut at 16 KiB (never inside a character), a line ends a
    /// record, and reading streams them back to the same bytes.
    #[test]
    fn log_records_are_split_at_16_kib_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = File::create(&path).unwrap();
        let mut lines = LineBuf {
            stream: "stdout",
            pending: Vec::new(),
        };
        let mut written = Vec::new();
        // 100 000 bytes of 3-byte characters in odd-sized reads, then a line.
        let text = "€".repeat(100_000 / 3);
        for chunk in text.as_bytes().chunks(7_001) {
            lines.push(chunk, &mut log);
            assert!(lines.pending.len() < MAX_LOG_RECORD);
        }
        written.extend_from_slice(text.as_bytes());
        lines.push(b"\nshort\n", &mut log);
        written.extend_from_slice(b"\nshort\n");
        lines.flush(&mut log);

        let mut entries = Vec::new();
        let end = for_each_log(&path, 0, None, |e| entries.push(e)).unwrap();
        assert_eq!(end, std::fs::metadata(&path).unwrap().len());
        assert!(entries.iter().all(|e| e.log.len() <= MAX_LOG_RECORD));
        assert!(entries.iter().all(|e| !e.log.contains('\u{FFFD}')));
        assert_eq!(entries.iter().filter(|e| e.log.ends_with('\n')).count(), 2);
        let back: String = entries.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(back.as_bytes(), written.as_slice());
        // From an offset, and only up to an end.
        let mut n = 0;
        for_each_log(&path, 0, Some(end - 1), |_| n += 1).unwrap();
        assert_eq!(n, entries.len() - 1);
    }

    #[test]
    fn names_are_valid_and_vary() {
        let a = generated_name(1);
        let b = generated_name(12345678);
        assert!(valid_name(&a) && valid_name(&b));
        assert_ne!(a, b);
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn own_start_time_is_known() {
        let me = std::process::id() as i32;
        assert!(proc_start_time(me).is_some());
    }

    #[test]
    fn start_failures_map_to_docker_codes() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(start_failure_code("mounting: boom"), 125);
    }
}
