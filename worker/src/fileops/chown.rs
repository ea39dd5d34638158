//! `--chown` resolution. Names are looked up in the DESTINATION root's
//! /etc/passwd and /etc/group (not the host's, not the source's), because the
//! ids only mean something in the image the files land in. Those files are
//! opened through the in-root resolver: an image whose /etc/passwd is a
//! symlink to the host's must not read the host's.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::error::{io_err, FileOpsError, Result};
use super::rootpath::{host_path, is_absent};

/// A numeric owner, as files are finally written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// BuildKit refuses user databases larger than this.
const MAX_USER_FILE: u64 = 10 << 20;

/// Resolve `user[:group]` against `dest_root`. Numeric parts (and `root`)
/// need no lookup; a user alone gives its primary group when named, the same
/// number when numeric (as BuildKit does). An unknown name is an error, as
/// docker documents.
pub fn resolve_chown(spec: &str, dest_root: &Path) -> Result<Owner> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut owner = match parse_id(user) {
        Some(id) => Owner { uid: id, gid: id },
        None => {
            let entry = lookup(dest_root, "/etc/passwd", user, "user")?;
            Owner {
                uid: entry.0,
                gid: entry.1.unwrap_or(0),
            }
        }
    };
    if let Some(g) = group {
        owner.gid = match parse_id(g) {
            Some(id) => id,
            None => lookup(dest_root, "/etc/group", g, "group")?.0,
        };
    }
    Ok(owner)
}

fn parse_id(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    s.parse::<i32>().ok().and_then(|v| u32::try_from(v).ok())
}

/// Find `name` in a passwd- or group-format file: (id, primary gid if passwd).
fn lookup(root: &Path, file: &str, name: &str, kind: &'static str) -> Result<(u32, Option<u32>)> {
    let unknown = |reason: &str| FileOpsError::UnknownId {
        kind,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let path = host_path(root, Path::new(file), true)?;
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Err(unknown(&format!("no {file} in the image"))),
        Err(e) => return Err(io_err("open", file)(e)),
    };
    let md = f.metadata().map_err(io_err("stat", file))?;
    if !md.is_file() {
        return Err(unknown(&format!("{file} is not a regular file")));
    }
    if md.len() > MAX_USER_FILE {
        return Err(unknown(&format!("{file} exceeds {MAX_USER_FILE} bytes")));
    }
    let reader = BufReader::new(f.take(MAX_USER_FILE));
    for line in reader.split(b'\n') {
        let line = line.map_err(io_err("read", file))?;
        let line = String::from_utf8_lossy(&line);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            continue;
        }
        let id = fields.get(2).and_then(|s| s.trim().parse::<u32>().ok());
        let gid = fields.get(3).and_then(|s| s.trim().parse::<u32>().ok());
        return match id {
            Some(id) => Ok((id, if kind == "user" { gid } else { None })),
            None => Err(unknown(&format!("malformed entry in {file}"))),
        };
    }
    Err(unknown(&format!("no matching entries in {file}")))
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
        assert!(matches!(
            r("ghost"),
            Err(FileOpsError::UnknownId { kind: "user", .. })
        ));
        assert!(matches!(
            r("0:ghosts"),
            Err(FileOpsError::UnknownId { kind: "group", .. })
        ));
    }
}
