//! The helper's side of a container's limits and privileges: its cgroup
//! for each run ([`super::cgroup`]), the namespaces it shares with the host
//! or another container (`--pid`, `--ipc`), and what the sandbox plan gets
//! from `--ulimit`, `--cap-add/--cap-drop` and `--privileged`. helper.rs
//! calls these at the few points where they apply.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::{cgroup, Container, Store};
use crate::sandbox::{SandboxSpec, StartError};
use crate::sys;

/// Makes the container's cgroup for this run and records it (in the store
/// and in `c`, which pid 1 is about to be started from).
pub(super) fn prepare(store: &Store, c: &mut Container) -> Result<(), StartError> {
    let dirs = cgroup::create(&c.id, &c.life.resources)
        .map_err(|e| StartError::other(format!("setting the container's limits: {e}")))?;
    c.life.cgroups = dirs.clone();
    store
        .update(&c.id, |r| r.life.cgroups = dirs)
        .map_err(|e| StartError::other(e.to_string()))?;
    Ok(())
}

/// After the run: whether the kernel OOM-killed a process in it; the
/// cgroup is removed.
pub(super) fn finish(c: &Container) -> bool {
    let oom = cgroup::oom_kills(&c.life.cgroups) > 0;
    cgroup::remove(&c.life.cgroups);
    oom
}

/// The pid 1 of the container named by a `container:ID` mode, running.
fn target_pid(store: &Store, mode: &str) -> Result<Option<i32>, StartError> {
    let Some(key) = mode.strip_prefix("container:") else {
        return Ok(None);
    };
    let other = store
        .find(key)
        .map_err(|e| StartError::other(e.to_string()))?;
    match (other.is_alive(), other.pid) {
        (true, Some(pid)) => Ok(Some(pid)),
        _ => Err(StartError::other(format!(
            "cannot join the namespaces of container {key}: it is not running"
        ))),
    }
}

/// The namespaces to unshare, less those shared (`--pid`/`--ipc` `host`
/// or `container:X`); the shared ones of another container are joined now
/// (a pid namespace joined applies to the children forked next).
pub(super) fn namespaces(
    store: &Store,
    c: &Container,
    mut flags: libc::c_int,
) -> Result<libc::c_int, StartError> {
    let s = &c.life.security;
    for (mode, flag, ns) in [
        (&s.pid_mode, libc::CLONE_NEWPID, "pid"),
        (&s.ipc_mode, libc::CLONE_NEWIPC, "ipc"),
    ] {
        if mode == "host" || mode.starts_with("container:") {
            flags &= !flag;
        }
        if let Some(pid) = target_pid(store, mode)? {
            let path = format!("/proc/{pid}/ns/{ns}");
            let f = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            sys::setns(f.as_raw_fd(), 0).map_err(|e| format!("joining the {ns} namespace: {e}"))?;
        }
    }
    Ok(flags)
}

/// pid 1, before its plan: joins the cgroup.
pub(super) fn join(c: &Container) -> Result<(), StartError> {
    cgroup::join(&c.life.cgroups)
        .map_err(|e| StartError::other(format!("joining the container's cgroup: {e}")))
}

/// What the plan takes from the container's privileges and limits.
pub(super) fn apply(c: &Container, spec: &mut SandboxSpec) {
    let s = &c.life.security;
    spec.privileged = s.privileged;
    let mut rl = SandboxSpec::default_rlimits();
    for u in &s.ulimits {
        rl.retain(|l| l.resource != u.resource);
        rl.push(*u);
    }
    spec.rlimits = rl;
    spec.sysctls = s.sysctls.clone().into_iter().collect();
    let shm = c.life.resources.shm_size;
    spec.shm_size = (shm > 0).then_some(shm as u64);
    if !s.cap_add.is_empty() || !s.cap_drop.is_empty() {
        spec.caps = s.caps().ok();
    }
}

/// The exec helper: the `cgroup.procs` files of the container, opened
/// before it enters the container's mount namespace (where they are not
/// visible); the exec'd child joins through them.
pub(super) fn open_procs(dirs: &[PathBuf]) -> Vec<File> {
    dirs.iter()
        .filter_map(|d| {
            File::options()
                .write(true)
                .open(d.join("cgroup.procs"))
                .ok()
        })
        .collect()
}

/// The exec'd child joins the cgroup (best effort: the container may be
/// gone).
pub(super) fn join_through(files: &[File]) {
    use std::io::Write;
    for mut f in files {
        let _ = f.write_all(b"0");
    }
}
