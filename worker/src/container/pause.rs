//! `kiln pause`/`unpause`: freezing a container's processes. kiln's
//! containers have no cgroup of their own unless limits asked for one, so
//! the portable way is docker's without a freezer: SIGSTOP to every process
//! of the container's pid namespace (found through /proc), SIGCONT to thaw.
//! With a cgroup v2 the freezer (`cgroup.freeze`) is used instead.

use std::fs;

use super::Container;
use crate::sys;

/// The host pids of every process in the container's pid namespace (pid 1
/// first), none when it does not run.
pub fn processes(c: &Container) -> Vec<i32> {
    let (true, Some(pid1)) = (c.is_alive(), c.pid) else {
        return Vec::new();
    };
    let Ok(ns) = fs::read_link(format!("/proc/{pid1}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = vec![pid1];
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

fn freeze_file(c: &Container) -> Option<std::path::PathBuf> {
    c.life
        .cgroups
        .iter()
        .map(|d| d.join("cgroup.freeze"))
        .find(|f| f.exists())
}

/// Freezes the container's processes.
pub fn freeze(c: &Container) -> std::io::Result<()> {
    if let Some(f) = freeze_file(c) {
        return fs::write(f, "1");
    }
    for pid in processes(c) {
        let _ = sys::kill(pid, libc::SIGSTOP);
    }
    Ok(())
}

/// Thaws them.
pub fn thaw(c: &Container) {
    if let Some(f) = freeze_file(c) {
        let _ = fs::write(f, "0");
    }
    for pid in processes(c) {
        let _ = sys::kill(pid, libc::SIGCONT);
    }
}
