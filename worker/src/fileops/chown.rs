//! `--chown` resolution. Names are looked up in the DESTINATION root's
//! /etc/passwd and /etc/group (not the host's, not the source's), because the
//! ids only mean something in the image the files land in. Those files are
//! opened through the in-root resolver: an image whose /etc/passwd is a
//! symlink to the host's must not read the host's.

use std::path::Path;

use super::error::{io_err, FileOpsError, Result};
use crate::users::{self, DbError};

/// A numeric owner, as files are finally written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A user or group name the destination's `/etc/passwd` or `/etc/group`
/// does not list. BuildKit says nothing and uses its default; kiln builds
/// the same way but warns, since the author usually meant a real account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// `user` or `group`.
    pub kind: &'static str,
    pub name: String,
    /// Why it was not found (no such entry, no such file).
    pub reason: String,
    /// The id used instead: uid 0 for a user, for a group the gid the user
    /// part gave.
    pub used: u32,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = if self.kind == "user" { "uid" } else { "gid" };
        write!(
            f,
            "{} {:?} not found in the image ({}): using {id} {}",
            self.kind, self.name, self.reason, self.used
        )
    }
}

/// `--chown` resolved: the owner, and the names that were not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub owner: Owner,
    pub unknown: Vec<UnknownName>,
}

/// Resolve `user[:group]` against `dest_root` as BuildKit's file backend
/// does (`readUser`): numeric parts (and `root`, and an empty part) need no
/// lookup; a user alone gives its primary group when named, the same number
/// when numeric. A name the image does not know, or an image without
/// `/etc/passwd` or `/etc/group`, is not an error: an unknown user leaves
/// uid and gid 0, an unknown group leaves the gid the user part gave. Only
/// a database that is not a regular file or is too big fails.
pub fn resolve_chown(spec: &str, dest_root: &Path) -> Result<Owner> {
    Ok(resolve_chown_reporting(spec, dest_root)?.owner)
}

/// [`resolve_chown`], also telling which names were not found, so the
/// build can warn about them.
pub fn resolve_chown_reporting(spec: &str, dest_root: &Path) -> Result<Resolution> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut unknown = Vec::new();
    let mut owner = match parse_id(user) {
        Some(id) => Owner { uid: id, gid: id },
        None => match lookup(dest_root, "/etc/passwd", user)? {
            Found::Entry(uid, gid) => Owner { uid, gid },
            Found::Missing(reason) => {
                unknown.push(UnknownName {
                    kind: "user",
                    name: user.to_string(),
                    reason,
                    used: 0,
                });
                Owner { uid: 0, gid: 0 }
            }
        },
    };
    if let Some(g) = group {
        match parse_id(g) {
            Some(id) => owner.gid = id,
            None => match lookup(dest_root, "/etc/group", g)? {
                Found::Entry(gid, _) => owner.gid = gid,
                Found::Missing(reason) => unknown.push(UnknownName {
                    kind: "group",
                    name: g.to_string(),
                    reason,
                    used: owner.gid,
                }),
            },
        }
    }
    Ok(Resolution { owner, unknown })
}

/// A number (`strconv.ParseInt(s, 10, 32)`, negative ids wrapping as
/// BuildKit's `uint32` conversion does), `root`, or an empty name, which
/// LLB sends as id 0.
fn parse_id(s: &str) -> Option<u32> {
    if s == "root" || s.is_empty() {
        return Some(0);
    }
    s.parse::<i32>().ok().map(|v| v as u32)
}

/// What a lookup in a passwd- or group-format file found.
enum Found {
    /// The id and, for passwd, the primary gid.
    Entry(u32, u32),
    /// Why nothing was found.
    Missing(String),
}

/// Find `name` in a passwd- or group-format file. Ids that are not numbers
/// read as 0, as moby's user parser reads them.
fn lookup(root: &Path, file: &str, name: &str) -> Result<Found> {
    let fail = |reason: String| FileOpsError::UnknownId {
        kind: if file.ends_with("passwd") {
            "user"
        } else {
            "group"
        },
        name: name.to_string(),
        reason,
    };
    let entries = match users::read_db(root, file) {
        Ok(Some(entries)) => entries,
        Ok(None) => return Ok(Found::Missing(format!("no {file}"))),
        Err(DbError::Resolve(e)) => return Err(e),
        Err(DbError::Io { op, source, .. }) => return Err(io_err(op, file)(source)),
        Err(e @ (DbError::NotRegular { .. } | DbError::TooLarge { .. })) => {
            return Err(fail(e.to_string()))
        }
    };
    for fields in &entries {
        if fields.first().map(String::as_str) != Some(name) {
            continue;
        }
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(0)
        };
        return Ok(Found::Entry(num(2), num(3)));
    }
    Ok(Found::Missing(format!("no matching entries in {file}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_the_destination() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\nstaff:x:50:\n",
        )
        .unwrap();
        let r = |s| resolve_chown(s, t.path());
        assert_eq!(
            r("nobody:nogroup").unwrap(),
            Owner {
                uid: 65534,
                gid: 65534
            }
        );
        assert_eq!(r("daemon").unwrap(), Owner { uid: 1, gid: 1 });
        assert_eq!(
            r("1000").unwrap(),
            Owner {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(r("1000:staff").unwrap(), Owner { uid: 1000, gid: 50 });
        assert_eq!(r("root:12").unwrap(), Owner { uid: 0, gid: 12 });
        assert_eq!(r("1000:").unwrap(), Owner { uid: 1000, gid: 0 });
        assert_eq!(r(":staff").unwrap(), Owner { uid: 0, gid: 50 });
        // Unknown names are BuildKit's defaults, reported.
        let r = |s| resolve_chown_reporting(s, t.path()).unwrap();
        let ghost = r("ghost");
        assert_eq!(ghost.owner, Owner { uid: 0, gid: 0 });
        assert_eq!(ghost.unknown.len(), 1);
        assert_eq!(ghost.unknown[0].kind, "user");
        assert!(ghost.unknown[0]
            .to_string()
            .contains("user \"ghost\" not found in the image"));
        let g = r("nobody:ghosts");
        assert_eq!(
            g.owner,
            Owner {
                uid: 65534,
                gid: 65534
            },
            "an unknown group keeps the user's group"
        );
        assert_eq!(g.unknown[0].kind, "group");
        assert_eq!(r("7:ghosts").owner, Owner { uid: 7, gid: 7 });
        assert_eq!(r("ghost:ghosts").unknown.len(), 2);
        assert_eq!(r("ghost:staff").owner, Owner { uid: 0, gid: 50 });
        assert!(r("daemon:staff").unknown.is_empty());
        // No user database at all: the same defaults.
        let empty = tempfile::tempdir().unwrap();
        let none = resolve_chown_reporting("ghost:ghosts", empty.path()).unwrap();
        assert_eq!(none.owner, Owner { uid: 0, gid: 0 });
        assert!(none.unknown[0].reason.contains("no /etc/passwd"));
    }
}
