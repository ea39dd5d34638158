//! A build's resources for its RUN steps (buildx's `--add-host`,
//! `--ulimit`, `--shm-size`, `--cgroup-parent`) turned into what the
//! sandbox applies: the /etc/hosts text BuildKit writes, `RLIMIT_*`
//! limits over the defaults, and the cgroup a step's process joins.

use std::path::{Path, PathBuf};

use kiln_solver::ops::Ulimit;

use crate::sandbox::Rlimit;

/// Why a step's resources cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid ulimit type: {0}")]
    UnknownUlimit(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard { soft: i64, hard: i64 },
    #[error("invalid cgroup parent {0:?}: a path of cgroup names, without `..`")]
    CgroupPath(String),
    #[error("kiln does not support systemd cgroup parents ({0:?}): give a cgroupfs path")]
    CgroupSystemd(String),
    #[error("no cgroup hierarchy is mounted for --cgroup-parent")]
    NoCgroupFs,
    #[error("cgroup parent {parent:?}: {what} {path}: {source}")]
    Cgroup {
        parent: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// docker's ulimit names (go-units) and their `RLIMIT_*` resources.
const ULIMITS: &[(&str, u32)] = &[
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// The `RLIMIT_*` resource docker's name `name` stands for.
pub fn ulimit_resource(name: &str) -> Option<u32> {
    ULIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Checks one `--ulimit` as docker's `units.ParseUlimit` does.
pub fn check_ulimit(u: &Ulimit) -> Result<(), ResourceError> {
    if ulimit_resource(&u.name).is_none() {
        return Err(ResourceError::UnknownUlimit(u.name.clone()));
    }
    // -1 (unlimited) is the largest of all.
    let as_u = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
    if as_u(u.soft) > as_u(u.hard) {
        return Err(ResourceError::SoftAboveHard {
            soft: u.soft,
            hard: u.hard,
        });
    }
    Ok(())
}

/// The limits `--ulimit` sets for a build's steps: only the resources it
/// names; the others stay kiln's own, as BuildKit's stay its daemon's.
pub fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Rlimit>, ResourceError> {
    let mut out: Vec<Rlimit> = Vec::new();
    let value = |v: i64| {
        if v < 0 {
            libc::RLIM_INFINITY
        } else {
            v as u64
        }
    };
    for u in ulimits {
        check_ulimit(u)?;
        let resource =
            ulimit_resource(&u.name).ok_or_else(|| ResourceError::UnknownUlimit(u.name.clone()))?;
        out.retain(|l| l.resource != resource);
        out.push(Rlimit {
            resource,
            soft: value(u.soft),
            hard: value(u.hard),
        });
    }
    Ok(out)
}

/// The /etc/hosts BuildKit writes for a step with extra hosts
/// (`executor/oci/hosts.go`): its own two lines, then one `IP\tNAME`
/// line per `--add-host`, in order.
pub fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        s.push_str(&format!("{ip}\t{host}\n"));
    }
    s
}

/// The parts of a `--cgroup-parent` path, checked: relative to the
/// hierarchy's root whether written with a leading `/` or not, no `..`.
pub fn cgroup_parts(parent: &str) -> Result<Vec<&str>, ResourceError> {
    if parent.contains(".slice") && parent.ends_with(':') {
        return Err(ResourceError::CgroupSystemd(parent.to_string()));
    }
    let parts: Vec<&str> = parent
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(ResourceError::CgroupPath(parent.to_string()));
    }
    Ok(parts)
}

/// Every cgroup hierarchy mounted here (v2's one, or v1's each), from
/// /proc/self/mountinfo.
fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or("");
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        if matches!(fstype, "cgroup" | "cgroup2") && !out.iter().any(|p| p == Path::new(point)) {
            out.push(PathBuf::from(point));
        }
    }
    out
}

/// A step's own cgroup `/PARENT/buildkit/ID` in every hierarchy (where
/// BuildKit's executors put a step under `--cgroup-parent`); the
/// sandbox's helper joins it before it starts the step, so the step and
/// everything it starts are in it. Removed on drop (the step is over by
/// then, so the cgroups are empty); the parent folders stay.
#[derive(Debug)]
pub struct StepCgroup {
    dirs: Vec<PathBuf>,
}

impl StepCgroup {
    /// Makes the step's cgroup beneath `parent` in every hierarchy.
    pub fn create(parent: &str, id: &str) -> Result<StepCgroup, ResourceError> {
        let parts = cgroup_parts(parent)?;
        let mounts = cgroup_mounts();
        if mounts.is_empty() {
            return Err(ResourceError::NoCgroupFs);
        }
        let mut made = StepCgroup { dirs: Vec::new() };
        for m in mounts {
            let mut dir = m.clone();
            for c in parts.iter().copied().chain(["buildkit", id]) {
                let up = dir.clone();
                dir.push(c);
                if dir.is_dir() {
                    continue;
                }
                let err = |what: &'static str, path: &Path| {
                    let path = path.to_path_buf();
                    let parent = parent.to_string();
                    move |source| ResourceError::Cgroup {
                        parent,
                        what,
                        path,
                        source,
                    }
                };
                std::fs::create_dir(&dir).map_err(err("creating", &dir))?;
                // cgroup v1's cpuset starts a cgroup with no CPUs and no
                // memory nodes, which no process may join: the parent's,
                // as runc copies them.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let mine = dir.join(f);
                    let empty = std::fs::read_to_string(&mine).is_ok_and(|v| v.trim().is_empty());
                    if empty {
                        let theirs = std::fs::read_to_string(up.join(f))
                            .map_err(err("reading", &up.join(f)))?;
                        std::fs::write(&mine, theirs.trim()).map_err(err("writing", &mine))?;
                    }
                }
            }
            made.dirs.push(dir);
        }
        Ok(made)
    }

    /// The `cgroup.procs` files the helper writes its pid to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Best effort: a cgroup still holding a process stays.
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_replace_the_default_of_their_resource() {
        let l = rlimits(&[Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048,
        }])
        .unwrap();
        assert_eq!(
            l,
            vec![Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 1024,
                hard: 2048
            }]
        );
        let bad = Ulimit {
            name: "nofile".into(),
            soft: 10,
            hard: 5,
        };
        assert!(matches!(
            check_ulimit(&bad),
            Err(ResourceError::SoftAboveHard { soft: 10, hard: 5 })
        ));
        let unknown = Ulimit {
            name: "files".into(),
            soft: 1,
            hard: 1,
        };
        assert_eq!(
            check_ulimit(&unknown).unwrap_err().to_string(),
            "invalid ulimit type: files"
        );
    }

    #[test]
    fn hosts_file_is_buildkits() {
        assert_eq!(
            hosts_file("buildkitsandbox", &[("db".into(), "10.1.2.3".into())]),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb\n"
        );
    }

    #[test]
    fn cgroup_parents_stay_beneath_the_root() {
        assert_eq!(cgroup_parts("/a/b").unwrap(), vec!["a", "b"]);
        assert!(cgroup_parts("a/../..").is_err());
        assert!(cgroup_parts("/").is_err());
        assert!(matches!(
            cgroup_parts("user.slice:kiln:"),
            Err(ResourceError::CgroupSystemd(_))
        ));
    }
}
