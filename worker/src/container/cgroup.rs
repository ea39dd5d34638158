//! A container's own cgroup: what `--memory`, `--memory-swap`, `--cpus`,
//! `--cpu-shares` and `--pids-limit` are enforced through, what `stats`
//! reads, what `pause` freezes and what says a container was OOM-killed.
//!
//! docker (cgroupfs driver) puts a container at `/docker/<id>` in every
//! hierarchy; kiln uses `/kiln/<id>`. Both layouts are handled:
//! - cgroup v2 (one `cgroup2` mount whose `cgroup.controllers` lists
//!   controllers): one dir; `memory`, `cpu`, `pids` and `io` are enabled in
//!   the `subtree_control` of the root and of `/kiln` on the way down;
//! - cgroup v1 (one mount per controller, as on this project's CI
//!   machine): one dir in each of the memory, cpu, cpuacct, pids, freezer
//!   and blkio hierarchies that are mounted (a hybrid machine's empty
//!   `unified` v2 mount is left alone).
//!
//! The values written are computed apart from the writing (`v2_settings`,
//! `v1_settings`: docker's and runc's translations of the flags), and
//! the hierarchies are read from a mountinfo text (`hierarchies_in`), so
//! both layouts are unit-tested on fake trees; v2's asynchronous freeze
//! (`cgroup.events`' `frozen`) and `cgroup.kill` are used where the
//! kernel has them.
//!
//! The helper makes the cgroup for each run of the container and removes
//! it when that run ends (after reading whether the kernel OOM-killed a
//! process in it); `rm` removes what a killed helper left behind. Only
//! pid 1 (and every `exec`'d process) joins it, never the helper itself,
//! so an out-of-memory kill never picks the supervisor.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::life::Resources;

/// The folder under each hierarchy's root holding kiln's containers.
const PARENT: &str = "kiln";

/// The v1 controllers kiln uses (one hierarchy each, or shared).
const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"];

/// v2 controllers enabled for containers.
const V2_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];

/// Why a container's cgroup could not be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy is mounted: resource limits need one")]
    NoCgroupFs,
    #[error("cgroup {path}: {what}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel has no {0} cgroup controller for this limit")]
    NoController(&'static str),
}

/// One mounted hierarchy: its mount point and, for v1, its controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// True for a cgroup2 mount.
    v2: bool,
    controllers: Vec<String>,
}

/// The hierarchies to use on this machine (from /proc/self/mountinfo).
fn hierarchies() -> Vec<Hierarchy> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|info| hierarchies_in(&info))
        .unwrap_or_default()
}

/// The hierarchies to use given a mountinfo text (the seam the tests use
/// with a fake cgroup tree: the mount points it names are read for their
/// `cgroup.controllers`): a v2 mount with controllers alone if there is
/// one, else every v1 mount holding one of [`V1_CONTROLLERS`] (the first
/// mount of each hierarchy: the same one may be mounted twice).
fn hierarchies_in(info: &str) -> Vec<Hierarchy> {
    let mut v1: Vec<Hierarchy> = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let super_opts = post.nth(1).unwrap_or("");
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        match fstype {
            "cgroup2" => {
                let mount = PathBuf::from(point);
                let controllers: Vec<String> = fs::read_to_string(mount.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                // A hybrid machine's `unified` mount may hold a controller
                // or two (hugetlb) but none of the ones limits need.
                if controllers
                    .iter()
                    .any(|c| V2_CONTROLLERS.contains(&c.as_str()))
                {
                    return vec![Hierarchy {
                        mount,
                        v2: true,
                        controllers,
                    }];
                }
            }
            "cgroup" => {
                let controllers: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                if controllers.is_empty() || v1.iter().any(|h| h.controllers == controllers) {
                    continue;
                }
                v1.push(Hierarchy {
                    mount: PathBuf::from(point),
                    v2: false,
                    controllers,
                });
            }
            _ => {}
        }
    }
    v1
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("writing", path))
}

/// The dirs a container's cgroup has (or would have) on this machine.
pub fn dirs_of(id: &str) -> Vec<PathBuf> {
    dirs_in(&hierarchies(), id)
}

fn dirs_in(hs: &[Hierarchy], id: &str) -> Vec<PathBuf> {
    hs.iter().map(|h| h.mount.join(PARENT).join(id)).collect()
}

/// True if `dir` is a v2 cgroup (it has `cgroup.controllers`).
fn is_v2(dir: &Path) -> bool {
    dir.join("cgroup.controllers").exists()
}

/// Makes the container's cgroup and applies `r`. Without limits asked, a
/// machine where no cgroup can be made is no error (the container runs
/// without one: no stats, pause by signals); with limits it is.
pub fn create(id: &str, r: &Resources) -> Result<Vec<PathBuf>, CgroupError> {
    create_in(&hierarchies(), id, r)
}

/// [`create`] in the hierarchies `hs`.
fn create_in(hs: &[Hierarchy], id: &str, r: &Resources) -> Result<Vec<PathBuf>, CgroupError> {
    let limited = r.memory > 0
        || r.memory_swap != 0
        || r.nano_cpus > 0
        || r.cpu_shares > 0
        || r.pids_limit > 0;
    match create_dirs(hs, id) {
        Ok(dirs) if !dirs.is_empty() => {
            if let Err(e) = apply(&dirs, r) {
                remove(&dirs);
                return Err(e);
            }
            Ok(dirs)
        }
        Ok(_) if limited => Err(CgroupError::NoCgroupFs),
        Err(e) if limited => Err(e),
        _ => Ok(Vec::new()),
    }
}

fn create_dirs(hs: &[Hierarchy], id: &str) -> Result<Vec<PathBuf>, CgroupError> {
    let mut made = Vec::new();
    for h in hs {
        let parent = h.mount.join(PARENT);
        if !parent.is_dir() {
            match fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    remove(&made);
                    return Err(io_err("creating", &parent)(e));
                }
            }
        }
        if h.v2 {
            // Controllers must be enabled on the way down (best effort: a
            // controller the parent does not delegate stays off, and a
            // limit needing it fails below).
            for c in V2_CONTROLLERS {
                if h.controllers.iter().any(|x| x == c) {
                    let _ = fs::write(h.mount.join("cgroup.subtree_control"), format!("+{c}"));
                    let _ = fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        } else if h.controllers.iter().any(|c| c == "cpuset") {
            copy_cpuset(&h.mount, &parent);
        }
        let dir = parent.join(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove(&made);
                return Err(io_err("creating", &dir)(e));
            }
        }
        made.push(dir);
    }
    Ok(made)
}

/// v1's cpuset starts empty (no process may join): copy the parent's.
fn copy_cpuset(from: &Path, to: &Path) {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read_to_string(to.join(f)).is_ok_and(|v| v.trim().is_empty()) {
            if let Ok(v) = fs::read_to_string(from.join(f)) {
                let _ = fs::write(to.join(f), v.trim());
            }
        }
    }
}

/// The dir among `dirs` holding `file` (v1: the controller's hierarchy).
fn with_file(dirs: &[PathBuf], file: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(file)).find(|f| f.exists())
}

fn set(dirs: &[PathBuf], file: &str, controller: &'static str, v: &str) -> Result<(), CgroupError> {
    let f = with_file(dirs, file).ok_or(CgroupError::NoController(controller))?;
    write(&f, v)
}

/// The CFS period docker uses with `--cpus` (100 ms).
const CPU_PERIOD: i64 = 100_000;

/// One value to write: the file, the controller it belongs to (for the
/// error when it is missing), the value, and whether a missing file is
/// fine (swap limits without swap accounting: nothing to limit, docker
/// warns and goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    file: &'static str,
    controller: &'static str,
    value: String,
    optional: bool,
}

fn setting(file: &'static str, controller: &'static str, value: String) -> Setting {
    Setting {
        file,
        controller,
        value,
        optional: false,
    }
}

/// docker's memory plus swap: `--memory-swap` unset with `--memory` is
/// twice the memory (memory plus as much swap); -1 is unlimited swap; 0
/// without a memory limit.
fn memory_and_swap(r: &Resources) -> i64 {
    match (r.memory, r.memory_swap) {
        (0, _) => 0,
        (m, 0) => 2 * m,
        (_, s) => s,
    }
}

/// runc's conversion of v1 CPU shares (2..=262144, default 1024) to the
/// v2 weight (1..=10000, default 100), as runc 1.3.2 and later (which
/// docker 28.5 ships) make it: a quadratic in log2(shares) through the
/// minimum, the default and the maximum of both (the linear formula
/// before it, `1 + (shares - 2) * 9999 / 262142`, gave 1024 shares a
/// weight of 39); 0 is unset.
fn cpu_weight(shares: i64) -> i64 {
    if shares <= 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as i64
}

/// What a v2 cgroup gets for `r` (the unified hierarchy's files, see the
/// kernel's cgroup-v2.rst): `memory.max`, `memory.swap.max` (swap alone:
/// memory plus swap less the memory, `max` for unlimited), `cpu.max`
/// (`QUOTA PERIOD`), `cpu.weight`, `pids.max`.
fn v2_settings(r: &Resources) -> Vec<Setting> {
    let mut out = Vec::new();
    if r.memory > 0 {
        out.push(setting("memory.max", "memory", r.memory.to_string()));
        let swap = memory_and_swap(r);
        let swap_max = if swap < 0 {
            "max".to_string()
        } else {
            (swap - r.memory).max(0).to_string()
        };
        out.push(Setting {
            optional: true,
            ..setting("memory.swap.max", "memory", swap_max)
        });
    }
    if r.nano_cpus > 0 {
        let quota = r.nano_cpus * CPU_PERIOD / 1_000_000_000;
        out.push(setting("cpu.max", "cpu", format!("{quota} {CPU_PERIOD}")));
    }
    if r.cpu_shares > 0 {
        out.push(setting(
            "cpu.weight",
            "cpu",
            cpu_weight(r.cpu_shares).to_string(),
        ));
    }
    if r.pids_limit > 0 {
        out.push(setting("pids.max", "pids", r.pids_limit.to_string()));
    }
    out
}

/// What v1 cgroups get for `r`: `memory.limit_in_bytes`,
/// `memory.memsw.limit_in_bytes` (memory plus swap, -1 unlimited),
/// `cpu.cfs_period_us` and `cpu.cfs_quota_us`, `cpu.shares`, `pids.max`.
fn v1_settings(r: &Resources) -> Vec<Setting> {
    let mut out = Vec::new();
    if r.memory > 0 {
        out.push(setting(
            "memory.limit_in_bytes",
            "memory",
            r.memory.to_string(),
        ));
        out.push(Setting {
            optional: true,
            ..setting(
                "memory.memsw.limit_in_bytes",
                "memory",
                memory_and_swap(r).max(-1).to_string(),
            )
        });
    }
    if r.nano_cpus > 0 {
        let quota = r.nano_cpus * CPU_PERIOD / 1_000_000_000;
        out.push(setting("cpu.cfs_period_us", "cpu", CPU_PERIOD.to_string()));
        out.push(setting("cpu.cfs_quota_us", "cpu", quota.to_string()));
    }
    if r.cpu_shares > 0 {
        out.push(setting("cpu.shares", "cpu", r.cpu_shares.to_string()));
    }
    if r.pids_limit > 0 {
        out.push(setting("pids.max", "pids", r.pids_limit.to_string()));
    }
    out
}

/// Writes the limits in `r` (v1 or v2 files, whichever the dirs have).
fn apply(dirs: &[PathBuf], r: &Resources) -> Result<(), CgroupError> {
    let v2 = dirs.first().is_some_and(|d| is_v2(d));
    let settings = if v2 { v2_settings(r) } else { v1_settings(r) };
    for s in settings {
        if s.optional && with_file(dirs, s.file).is_none() {
            continue;
        }
        set(dirs, s.file, s.controller, &s.value)?;
    }
    Ok(())
}

/// Moves the calling process into the cgroup (`0` is "myself" for both
/// v1 and v2, whatever pid namespace the caller is in).
pub fn join(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for d in dirs {
        write(&d.join("cgroup.procs"), "0")?;
    }
    Ok(())
}

/// Removes the cgroup: waits a little for its last processes to be gone
/// (a dead pid namespace's members are reaped a moment after pid 1).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for _ in 0..50 {
            match fs::remove_dir(d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    kill_all(d);
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
    }
}

/// Removes whatever cgroup container `id` has on this machine (`rm`, after
/// a helper that was killed could not).
pub fn remove_of(id: &str) {
    let dirs: Vec<PathBuf> = dirs_of(id).into_iter().filter(|d| d.is_dir()).collect();
    remove(&dirs);
}

/// SIGKILL to every process left in a cgroup being removed (v2's
/// `cgroup.kill` does it at once, descendants included, where the kernel
/// has it: 5.14 and later).
fn kill_all(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in procs(dir) {
        let _ = crate::sys::kill(pid, libc::SIGKILL);
    }
}

/// The pids (as this process sees them) in one cgroup dir.
fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every process of the container's cgroup (empty without one).
pub fn processes(dirs: &[PathBuf]) -> Vec<i32> {
    let mut all: Vec<i32> = dirs.first().map(|d| procs(d)).unwrap_or_default();
    all.sort_unstable();
    all.dedup();
    all
}

/// A `key value` line of a flat-keyed cgroup file.
fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// How many processes the kernel's OOM killer killed in the cgroup.
pub fn oom_kills(dirs: &[PathBuf]) -> u64 {
    if let Some(f) = with_file(dirs, "memory.events") {
        return keyed(&f, "oom_kill").unwrap_or(0);
    }
    with_file(dirs, "memory.oom_control")
        .and_then(|f| keyed(&f, "oom_kill"))
        .unwrap_or(0)
}

/// Freezes (`true`) or thaws the cgroup's processes; `false` when it has no
/// freezer (the caller falls back to signals).
pub fn freeze(dirs: &[PathBuf], frozen: bool) -> bool {
    if let Some(f) = with_file(dirs, "cgroup.freeze") {
        if fs::write(&f, if frozen { "1" } else { "0" }).is_err() {
            return false;
        }
        // v2 freezes asynchronously too: done when `cgroup.events` says
        // `frozen 1` (or 0 once thawed).
        let events = f.with_file_name("cgroup.events");
        for _ in 0..100 {
            if keyed(&events, "frozen").is_none_or(|v| v == u64::from(frozen)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        return true;
    }
    if let Some(f) = with_file(dirs, "freezer.state") {
        if fs::write(&f, if frozen { "FROZEN" } else { "THAWED" }).is_err() {
            return false;
        }
        // v1 freezes asynchronously: wait until it says so.
        for _ in 0..100 {
            let now = fs::read_to_string(&f).unwrap_or_default();
            if now.trim() == if frozen { "FROZEN" } else { "THAWED" } {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        return true;
    }
    false
}

/// What `stats` shows, read from the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, less the page cache (as docker's CLI computes it).
    pub mem_usage: u64,
    /// The memory limit (the host's memory when unlimited).
    pub mem_limit: u64,
    pub pids: u64,
    pub blk_read: u64,
    pub blk_write: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The host's memory in bytes (/proc/meminfo's MemTotal).
fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads the container's usage now.
pub fn stats(dirs: &[PathBuf]) -> Stats {
    let mut s = Stats::default();
    let host = host_memory();
    if dirs.first().is_some_and(|d| is_v2(d)) {
        let d = &dirs[0];
        s.cpu_ns = keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
        let usage = read_u64(&d.join("memory.current")).unwrap_or(0);
        let inactive = keyed(&d.join("memory.stat"), "inactive_file").unwrap_or(0);
        s.mem_usage = usage.saturating_sub(inactive);
        s.mem_limit = read_u64(&d.join("memory.max")).unwrap_or(host).min(host);
        s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        if let Ok(text) = fs::read_to_string(d.join("io.stat")) {
            for w in text.split_whitespace() {
                if let Some(v) = w.strip_prefix("rbytes=") {
                    s.blk_read += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = w.strip_prefix("wbytes=") {
                    s.blk_write += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        return s;
    }
    if let Some(f) = with_file(dirs, "cpuacct.usage") {
        s.cpu_ns = read_u64(&f).unwrap_or(0);
    }
    if let Some(f) = with_file(dirs, "memory.usage_in_bytes") {
        let usage = read_u64(&f).unwrap_or(0);
        let stat = f.with_file_name("memory.stat");
        let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
        s.mem_usage = usage.saturating_sub(inactive);
        s.mem_limit = read_u64(&f.with_file_name("memory.limit_in_bytes"))
            .unwrap_or(host)
            .min(host);
    }
    if let Some(f) = with_file(dirs, "pids.current") {
        s.pids = read_u64(&f).unwrap_or(0);
    }
    if let Some(f) = with_file(dirs, "blkio.throttle.io_service_bytes") {
        for l in fs::read_to_string(f).unwrap_or_default().lines() {
            let parts: Vec<&str> = l.split_whitespace().collect();
            if let [_, op, v] = parts.as_slice() {
                let v: u64 = v.parse().unwrap_or(0);
                match *op {
                    "Read" => s.blk_read += v,
                    "Write" => s.blk_write += v,
                    _ => {}
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse() {
        let dir = std::env::temp_dir().join(format!("kiln-cg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.oom_control");
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&f, "oom_kill"), Some(2));
        assert_eq!(oom_kills(std::slice::from_ref(&dir)), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn res(memory: i64, memory_swap: i64, nano_cpus: i64, cpu_shares: i64, pids: i64) -> Resources {
        Resources {
            memory,
            memory_swap,
            nano_cpus,
            cpu_shares,
            pids_limit: pids,
            shm_size: 0,
        }
    }

    fn value(settings: &[Setting], file: &str) -> Option<String> {
        settings
            .iter()
            .find(|s| s.file == file)
            .map(|s| s.value.clone())
    }

    #[test]
    fn v2_values_translate_dockers_flags() {
        const M: i64 = 64 << 20;
        // --cpus 1.5: 150 ms of every 100 ms period.
        let s = v2_settings(&res(0, 0, 1_500_000_000, 0, 0));
        assert_eq!(value(&s, "cpu.max").as_deref(), Some("150000 100000"));
        assert_eq!(value(&s, "memory.max"), None, "no limit, no file written");
        let s = v2_settings(&res(0, 0, 10_000_000, 0, 0));
        assert_eq!(value(&s, "cpu.max").as_deref(), Some("1000 100000"));
        // --memory alone: swap as much again (docker's default).
        let s = v2_settings(&res(M, 0, 0, 0, 0));
        assert_eq!(value(&s, "memory.max"), Some(M.to_string()));
        assert_eq!(value(&s, "memory.swap.max"), Some(M.to_string()));
        // --memory-swap is memory plus swap: swap.max is the difference.
        let s = v2_settings(&res(M, 3 * M, 0, 0, 0));
        assert_eq!(value(&s, "memory.swap.max"), Some((2 * M).to_string()));
        let s = v2_settings(&res(M, M, 0, 0, 0));
        assert_eq!(value(&s, "memory.swap.max").as_deref(), Some("0"));
        let s = v2_settings(&res(M, -1, 0, 0, 0));
        assert_eq!(value(&s, "memory.swap.max").as_deref(), Some("max"));
        assert!(s.iter().any(|x| x.file == "memory.swap.max" && x.optional));
        // --pids-limit.
        let s = v2_settings(&res(0, 0, 0, 0, 20));
        assert_eq!(value(&s, "pids.max").as_deref(), Some("20"));
        // --cpu-shares: runc's weight.
        let s = v2_settings(&res(0, 0, 0, 512, 0));
        assert_eq!(value(&s, "cpu.weight").as_deref(), Some("59"));
        for (shares, weight) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (3, 2),
            (512, 59),
            (1024, 100),
            (2000, 170),
            (2048, 174),
            (100_000, 4340),
            (262_143, 10_000),
            (262_144, 10_000),
            (1 << 20, 10_000),
        ] {
            assert_eq!(cpu_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn v1_values_translate_dockers_flags() {
        const M: i64 = 64 << 20;
        let s = v1_settings(&res(M, 0, 1_500_000_000, 512, 7));
        assert_eq!(value(&s, "memory.limit_in_bytes"), Some(M.to_string()));
        assert_eq!(
            value(&s, "memory.memsw.limit_in_bytes"),
            Some((2 * M).to_string())
        );
        assert_eq!(value(&s, "cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(value(&s, "cpu.cfs_quota_us").as_deref(), Some("150000"));
        assert_eq!(value(&s, "cpu.shares").as_deref(), Some("512"));
        assert_eq!(value(&s, "pids.max").as_deref(), Some("7"));
        let s = v1_settings(&res(M, -1, 0, 0, 0));
        assert_eq!(
            value(&s, "memory.memsw.limit_in_bytes").as_deref(),
            Some("-1")
        );
        let s = v1_settings(&res(M, 3 * M, 0, 0, 0));
        assert_eq!(
            value(&s, "memory.memsw.limit_in_bytes"),
            Some((3 * M).to_string())
        );
    }

    /// A mountinfo line for a fake mount at `point`.
    fn line(n: u32, point: &Path, fstype: &str, opts: &str) -> String {
        format!(
            "{n} 23 0:{n} / {} rw,nosuid,nodev,noexec,relatime shared:{n} - {fstype} {fstype} {opts}",
            point.display()
        )
    }

    fn touch(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            fs::write(dir.join(f), v).unwrap();
        }
    }

    #[test]
    fn detects_v2_hybrid_and_v1_trees() {
        let tmp = tempfile::tempdir().unwrap();
        // Pure v2: one cgroup2 mount whose root lists controllers.
        let v2 = tmp.path().join("v2");
        touch(
            &v2,
            &[(
                "cgroup.controllers",
                "cpuset cpu io memory pids
",
            )],
        );
        let info = [
            line(20, Path::new("/proc"), "proc", "rw"),
            line(30, &v2, "cgroup2", "rw,nsdelegate,memory_recursiveprot"),
        ]
        .join(
            "
",
        );
        let hs = hierarchies_in(&info);
        assert_eq!(hs.len(), 1);
        assert!(hs[0].v2);
        assert_eq!(hs[0].mount, v2);
        assert_eq!(dirs_in(&hs, "abc"), vec![v2.join("kiln/abc")]);

        // Hybrid (as this project's CI machine): v1 controllers, and a
        // `unified` v2 mount with none that limits need.
        let v1 = tmp.path().join("v1");
        let unified = v1.join("unified");
        touch(&unified, &[("cgroup.controllers", "")]);
        for d in ["memory", "cpu,cpuacct", "pids", "freezer", "devices"] {
            touch(&v1.join(d), &[]);
        }
        let info = [
            line(31, &unified, "cgroup2", "rw,nsdelegate"),
            line(32, &v1.join("memory"), "cgroup", "rw,memory"),
            line(33, &v1.join("cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct"),
            line(34, &v1.join("pids"), "cgroup", "rw,pids"),
            line(35, &v1.join("freezer"), "cgroup", "rw,freezer"),
            line(36, &v1.join("devices"), "cgroup", "rw,devices"),
            // The same hierarchy mounted twice counts once.
            line(37, &tmp.path().join("again"), "cgroup", "rw,memory"),
        ]
        .join(
            "
",
        );
        let hs = hierarchies_in(&info);
        assert!(hs.iter().all(|h| !h.v2));
        let got: Vec<(PathBuf, Vec<String>)> = hs
            .iter()
            .map(|h| (h.mount.clone(), h.controllers.clone()))
            .collect();
        let want = |d: &str, c: &[&str]| (v1.join(d), c.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            got,
            vec![
                want("memory", &["memory"]),
                want("cpu,cpuacct", &["cpu", "cpuacct"]),
                want("pids", &["pids"]),
                want("freezer", &["freezer"]),
            ]
        );
        // No cgroup filesystem at all.
        assert!(hierarchies_in(&line(20, Path::new("/proc"), "proc", "rw")).is_empty());
    }

    /// The v2 path end to end on a fake tree: the dirs, the controllers
    /// enabled on the way down, the limits written, freeze through
    /// `cgroup.freeze` + `cgroup.events`, `memory.events`' oom_kill,
    /// `cgroup.kill`.
    #[test]
    fn v2_cgroup_on_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cg");
        touch(
            &root,
            &[(
                "cgroup.controllers",
                "cpu io memory pids
",
            )],
        );
        touch(
            &root.join("kiln"),
            &[(
                "cgroup.controllers",
                "cpu io memory pids
",
            )],
        );
        // The files the kernel would make in a new cgroup (none here).
        let dir = root.join("kiln/c1");
        let files = [
            (
                "cgroup.controllers",
                "cpu io memory pids
",
            ),
            (
                "memory.max",
                "max
",
            ),
            (
                "memory.swap.max",
                "max
",
            ),
            (
                "cpu.max",
                "max 100000
",
            ),
            (
                "cpu.weight",
                "100
",
            ),
            (
                "pids.max", "max
",
            ),
            (
                "cgroup.freeze",
                "0
",
            ),
            (
                "cgroup.events",
                "populated 1
frozen 1
",
            ),
            (
                "memory.events",
                "low 0
high 0
max 4
oom 1
oom_kill 1
",
            ),
            ("cgroup.kill", ""),
        ];
        touch(&dir, &files);
        let hs = hierarchies_in(&line(30, &root, "cgroup2", "rw"));
        let r = res(32 << 20, 48 << 20, 500_000_000, 1024, 9);
        let dirs = create_in(&hs, "c1", &r).unwrap();
        assert_eq!(dirs, vec![dir.clone()]);
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (32u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (16u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "100");
        assert_eq!(read("pids.max"), "9");
        // Controllers enabled in the root's and kiln's subtree_control.
        for d in [&root, &root.join("kiln")] {
            let sc = fs::read_to_string(d.join("cgroup.subtree_control")).unwrap();
            assert!(sc.starts_with('+'), "{sc}");
        }
        assert!(freeze(&dirs, true));
        assert_eq!(read("cgroup.freeze"), "1");
        fs::write(
            dir.join("cgroup.events"),
            "populated 1
frozen 0
",
        )
        .unwrap();
        assert!(freeze(&dirs, false));
        assert_eq!(read("cgroup.freeze"), "0");
        assert_eq!(oom_kills(&dirs), 1);
        kill_all(&dir);
        assert_eq!(read("cgroup.kill"), "1");

        // Without swap accounting (no memory.swap.max) memory still
        // works; a limit whose controller is missing is an error.
        fs::remove_file(dir.join("memory.swap.max")).unwrap();
        fs::remove_file(dir.join("cpu.max")).unwrap();
        assert!(create_in(&hs, "c1", &res(32 << 20, 0, 0, 0, 0)).is_ok());
        let e = create_in(&hs, "c1", &res(0, 0, 1_000_000_000, 0, 0)).unwrap_err();
        assert!(matches!(e, CgroupError::NoController("cpu")), "{e}");
    }
}
