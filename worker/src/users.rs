//! Who a process runs as: USER (or `kiln run -u`, `kiln exec -u`) resolved
//! in the root filesystem it runs in, as BuildKit and docker resolve it and
//! as runc then sets it up (groups, HOME).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::executor::ExecutorError;
use crate::fileops;
use crate::sandbox::SandboxSpec;

/// A resolved user: what the sandbox switches to before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Every group the process is in, the primary one first: runc passes
    /// the primary gid to setgroups too, so `id` as `USER 1000:1000`
    /// prints `groups=1000`.
    pub groups: Vec<u32>,
    /// The home folder of the first passwd entry with this uid, else `/`
    /// (runc's rule, which BuildKit's RUN steps and docker's containers
    /// share; `go build` needs it).
    pub home: String,
}

impl ExecUser {
    /// Sets the spec's ids and, when the environment has none, HOME.
    pub fn apply(&self, spec: &mut SandboxSpec) {
        spec.uid = self.uid;
        spec.gid = self.gid;
        spec.additional_gids = self.groups.clone();
        if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
            spec.env.push(format!("HOME={}", self.home));
        }
    }
}

/// BuildKit refuses user databases larger than this; a hostile image must
/// not make kiln read gigabytes to find a name.
pub const MAX_USER_FILE: u64 = 10 << 20;

/// Why a passwd- or group-format file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Resolving the file inside the root failed for another reason than
    /// its absence.
    #[error(transparent)]
    Resolve(fileops::error::FileOpsError),
    #[error("{op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is not a regular file")]
    NotRegular { file: String },
    #[error("{file} exceeds {MAX_USER_FILE} bytes")]
    TooLarge { file: String },
}

/// The entries of a passwd- or group-format file inside `root`, split into
/// fields: the one reader of `/etc/passwd` and `/etc/group` (USER, `kiln
/// run -u`, `--chown`). The file is resolved in the root (a symlinked
/// /etc/passwd cannot point at the host's), must be a regular file of at
/// most [`MAX_USER_FILE`] bytes, and is read as lossy UTF-8 lines, trimmed,
/// without blank lines and `#` comments. `None` when the file is absent.
pub fn read_db(root: &Path, file: &str) -> Result<Option<Vec<Vec<String>>>, DbError> {
    let io = |op: &'static str| {
        move |source: std::io::Error| DbError::Io {
            op,
            file: file.to_string(),
            source,
        }
    };
    let path = match fileops::rootpath::host_path(root, Path::new(file), true) {
        Ok(p) => p,
        Err(fileops::error::FileOpsError::Io { source, .. })
            if fileops::rootpath::is_absent(&source) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(DbError::Resolve(e)),
    };
    let f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if fileops::rootpath::is_absent(&e) => return Ok(None),
        Err(e) => return Err(io("open")(e)),
    };
    let md = f.metadata().map_err(io("stat"))?;
    if !md.is_file() {
        return Err(DbError::NotRegular {
            file: file.to_string(),
        });
    }
    if md.len() > MAX_USER_FILE {
        return Err(DbError::TooLarge {
            file: file.to_string(),
        });
    }
    let mut entries = Vec::new();
    for line in BufReader::new(f.take(MAX_USER_FILE)).split(b'\n') {
        let line = line.map_err(io("read"))?;
        let line = String::from_utf8_lossy(&line);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        entries.push(line.split(':').map(str::to_string).collect());
    }
    Ok(Some(entries))
}

/// [`read_db`] for resolving USER: a missing or unreadable database is
/// empty, so only names (which must be listed) fail.
fn entries(root: &Path, file: &str) -> Vec<Vec<String>> {
    read_db(root, file).ok().flatten().unwrap_or_default()
}

/// Resolves USER in the rootfs as docker does: a name must exist; a bare
/// uid without an entry gets gid 0; `uid:gid` numbers are taken as they
/// are; supplementary groups come from /etc/group only when no group was
/// given.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ExecUser, ExecutorError> {
    let passwd = entries(rootfs, "/etc/passwd");
    if user.is_empty() {
        return Ok(ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: home_of(&passwd, 0),
        });
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let (uid, mut gid, name) = match (u.parse::<u32>(), entry) {
        (Ok(uid), Some(f)) => (uid, f[3].parse().unwrap_or(0), Some(f[0].clone())),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), Some(f)) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].clone()),
        ),
        (Err(_), None) => {
            return Err(ExecutorError::User {
                user: u.to_string(),
                reason: "no matching entries in passwd file".into(),
            })
        }
    };
    let groups = entries(rootfs, "/etc/group");
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| ExecutorError::User {
                    user: user.to_string(),
                    reason: format!("unable to find group {g}: no matching entries in group file"),
                })?,
        };
    }
    let mut all = vec![gid];
    if let (None, Some(name)) = (g, name) {
        for f in &groups {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups: all,
        home: home_of(&passwd, uid),
    })
}

impl ExecUser {
    /// Adds `--group-add`'s groups (names looked up in the rootfs's
    /// /etc/group, or numbers) to the supplementary groups, as docker does
    /// for a container's processes and its `exec`s.
    pub fn add_groups(&mut self, rootfs: &Path, extra: &[String]) -> Result<(), String> {
        if extra.is_empty() {
            return Ok(());
        }
        let groups = entries(rootfs, "/etc/group");
        for g in extra {
            let id = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|f| f.len() >= 3 && f[0] == *g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("Unable to find group {g}: no matching entries in group file")
                    })?,
            };
            if !self.groups.contains(&id) {
                self.groups.push(id);
            }
        }
        Ok(())
    }
}

/// The home folder of the first entry of `passwd` with `uid`, else `/`.
fn home_of(passwd: &[Vec<String>], uid: u32) -> String {
    passwd
        .iter()
        .find(|f| f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
        .map(|f| f[5].clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:1001:1001:::/bin/sh\n",
        )
        .unwrap();
        fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:app\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn the_primary_group_comes_first_then_memberships() {
        let t = root();
        let u = resolve_user(t.path(), "app").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 1000, vec![1000, 10, 50]));
        let u = resolve_user(t.path(), "1000:1000").unwrap();
        assert_eq!(u.groups, vec![1000]);
        let u = resolve_user(t.path(), "app:staff").unwrap();
        assert_eq!((u.gid, u.groups), (50, vec![50]));
        let u = resolve_user(t.path(), "").unwrap();
        assert_eq!(u.groups, vec![0]);
        let u = resolve_user(t.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (4242, 0, vec![0]));
        assert!(resolve_user(t.path(), "ghost").is_err());
        assert!(resolve_user(t.path(), "app:ghosts").is_err());
    }

    #[test]
    fn home_comes_from_the_entry_of_the_uid() {
        let t = root();
        let home = |user: &str, env: &[&str]| {
            let mut spec = SandboxSpec::new(t.path(), vec!["true".into()]);
            spec.env = env.iter().map(|s| s.to_string()).collect();
            resolve_user(t.path(), user).unwrap().apply(&mut spec);
            spec.env
                .iter()
                .find_map(|e| e.strip_prefix("HOME=").map(str::to_string))
                .unwrap()
        };
        assert_eq!(home("", &[]), "/root");
        assert_eq!(home("app", &["PATH=/bin"]), "/home/app");
        assert_eq!(home("1001", &[]), "/");
        assert_eq!(home("5", &[]), "/");
        assert_eq!(home("1000:1000", &["HOME=/mine"]), "/mine");
    }
}
