//! A build's resources for its RUN steps (buildx's `--add-host`,
//! `--ulimit`, `--shm-size`, `--cgroup-parent`) turned into what the
//! sandbox applies: the /etc/hosts text BuildKit writes, `RLIMIT_*`
//! limits over the defaults, and the cgroup a step's process joins.

use std::path::{Path, PathBuf};

use kiln_solver::ops::Ulimit;

use crate::sandbox::{Rlimit, SandboxSpec};

/// Why a step's resources cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid ulimit type: {0}")]
    UnknownUlimit(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard { soft: i64, hard: i64 },
    #[error("invalid cgroup parent {0:?}: a path of cgroup names, without `..`")]
    CgroupPath(String),
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
const ULIMITS: &[(&str, libc::__rlimit_resource_t)] = &[
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
    ULIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r as u32)
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

/// The default limits with each of `ulimits` replacing its resource's.
pub fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Rlimit>, ResourceError> {
    let mut out = SandboxSpec::default_rlimits();
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
            ulimit_resource(&u.name).ok_or(ResourceError::UnknownUlimit(u.name.clone()))?;
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
    let parts: Vec<&str> = parent
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "..") {
        return Err(ResourceError::CgroupPath(parent.to_string()));
    }
    Ok(parts)
}

/// Where a hierarchy's cgroup at `parts` lives under `mount`.
pub fn cgroup_dir(mount: &Path, parts: &[&str]) -> PathBuf {
    parts.iter().fold(mount.to_path_buf(), |p, c| p.join(c))
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
                resource: libc::RLIMIT_NOFILE as u32,
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
    }
}
