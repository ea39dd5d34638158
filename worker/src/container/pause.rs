//! `kiln pause`/`unpause`: freezing a container's processes through its
//! cgroup's freezer (v1 `freezer.state`, v2 `cgroup.freeze`), as docker
//! does. A container without a cgroup (none could be made here) falls back
//! to SIGSTOP to every process of its pid namespace (found through /proc),
//! SIGCONT to thaw.

use std::fs;

use super::{cgroup, Container};
use crate::sys;

/// The host pids of the container's processes (pid 1 first), none when it
/// does not run: its cgroup's members, else its pid namespace's.
pub fn processes(c: &Container) -> Vec<i32> {
    let (true, Some(pid1)) = (c.is_alive(), c.pid) else {
        return Vec::new();
    };
    let mut out = vec![pid1];
    let in_cgroup = cgroup::processes(&c.life.cgroups);
    if !in_cgroup.is_empty() {
        out.extend(in_cgroup.into_iter().filter(|p| *p != pid1));
        return out;
    }
    let Ok(ns) = fs::read_link(format!("/proc/{pid1}/ns/pid")) else {
        return out;
    };
    // Sharing the host's pid namespace: only the cgroup tells them apart.
    if fs::read_link("/proc/self/ns/pid").is_ok_and(|mine| mine == ns) {
        return out;
    }
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == pid1 {
            continue;
        }
        if fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns) {
            out.push(pid);
        }
    }
    out
}

/// Freezes the container's processes.
pub fn freeze(c: &Container) -> std::io::Result<()> {
    if cgroup::freeze(&c.life.cgroups, true) {
        return Ok(());
    }
    for pid in processes(c) {
        let _ = sys::kill(pid, libc::SIGSTOP);
    }
    Ok(())
}

/// Thaws them.
pub fn thaw(c: &Container) {
    if cgroup::freeze(&c.life.cgroups, false) {
        return;
    }
    for pid in processes(c) {
        let _ = sys::kill(pid, libc::SIGCONT);
    }
}

/// Runs `f` with the running container `c` frozen when `pause` (docker's
/// `commit --pause`, the default): recorded as paused meanwhile (`ps`
/// shows it, as docker's), thawed after. A container that is not running,
/// or paused already, is left as it is.
pub fn frozen_during<T>(
    store: &super::Store,
    c: &Container,
    pause: bool,
    f: impl FnOnce() -> T,
) -> T {
    if !pause || !c.is_alive() || c.life.paused {
        return f();
    }
    if store.update(&c.id, |c| c.life.paused = true).is_err() || freeze(c).is_err() {
        let _ = store.update(&c.id, |c| c.life.paused = false);
        return f();
    }
    let out = f();
    thaw(c);
    let _ = store.update(&c.id, |c| c.life.paused = false);
    out
}
