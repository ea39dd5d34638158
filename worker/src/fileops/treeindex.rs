//! A whole-copy shortcut for the context check: the stamps of every entry a
//! COPY's checksum walked (directories, files, links, and the path down to
//! each source), beside the checksum they gave.
//!
//! Why: a no-op rebuild of a 30,000-file context spent its time reading
//! directories, matching each entry against the filters, looking each file
//! up in the [`ChecksumMemo`](super::checksum::ChecksumMemo) under a lock and
//! hashing records, one entry after the other. An unchanged tree needs none
//! of that: when every recorded entry still has its recorded stamp (size,
//! mtime, ctime to the nanosecond, inode, device), nothing the copy reads
//! changed, so the recorded checksum stands. The stamps are checked on every
//! core (rayon). A directory's ctime and mtime move when an entry is added,
//! removed or renamed in it; a file's ctime moves on any write, chmod or
//! chown, even when its mtime is put back; so one lstat per entry proves the
//! tree, and no directory is read.
//!
//! Racy entries (git's "racily clean" rule): an entry whose mtime or ctime
//! is not clearly older than the walk that recorded it could change again
//! within the same clock tick without its stamp moving, so an index holding
//! one is not written; the next check walks and records again.
//!
//! Only plain copies use it: no `--exclude`, no `.dockerignore` patterns, no
//! `--parents`, no wildcards. With filters, a directory the walk reads but
//! does not keep could gain a kept entry unseen; those copies walk as before.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use super::checksum::ChecksumOptions;
use super::pattern::has_wildcards;

/// The first bytes of an index file (format version 1).
const MAGIC: &[u8; 8] = b"kilntre1";

/// How much older than the walk an entry's mtime and ctime must be for the
/// index to be written: the kernel's coarse clock ticks every 1-10 ms.
const RACY: Duration = Duration::from_millis(50);

/// The same for an entry whose stamps have no fraction of a second (a
/// filesystem with whole-second times).
const RACY_WHOLE_SECONDS: Duration = Duration::from_secs(2);

/// What identifies an entry's state: any change to it moves one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryStamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl EntryStamp {
    pub(crate) fn of(md: &fs::Metadata) -> Self {
        EntryStamp {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }

    /// Whether a change after `started` could leave this stamp as it is.
    fn racy(&self, started: SystemTime) -> bool {
        let margin = if self.mtime.1 == 0 && self.ctime.1 == 0 {
            RACY_WHOLE_SECONDS
        } else {
            RACY
        };
        let limit = started
            .checked_sub(margin)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        ns(self.mtime).max(ns(self.ctime)) >= limit
    }
}

/// The entries one checksum walked, gathered while it walks.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    /// When the walk started.
    pub(crate) started: Option<SystemTime>,
    /// Host paths and their stamps.
    pub(crate) entries: Vec<(PathBuf, EntryStamp)>,
}

impl Recording {
    pub(crate) fn new() -> Self {
        Recording {
            started: Some(SystemTime::now()),
            entries: Vec::new(),
        }
    }

    /// Records `host` and each folder above it up to `root` (the path the
    /// copy resolves to reach a source).
    pub(crate) fn path_down(&mut self, root: &Path, host: &Path) {
        let mut p = Some(host);
        while let Some(cur) = p {
            if let Ok(md) = fs::symlink_metadata(cur) {
                self.entries.push((cur.to_path_buf(), EntryStamp::of(&md)));
            }
            if cur == root || !cur.starts_with(root) {
                break;
            }
            p = cur.parent();
        }
    }
}

/// The index key of a copy, or `None` when the copy is not a plain one
/// (see the module notes).
pub fn key(src_root: &Path, sources: &[String], opts: &ChecksumOptions) -> Option<blake3::Hash> {
    if opts.parents
        || !opts.exclude.is_empty()
        || !opts.context_exclude.is_empty()
        || sources.iter().any(|s| has_wildcards(s))
    {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"kiln.treeindex.v1\0");
    h.update(src_root.as_os_str().as_bytes());
    h.update(&[0]);
    for s in sources {
        h.update(s.as_bytes());
        h.update(&[0]);
    }
    // The options decide the records (mode, owner), so they key the index.
    h.update(format!("{:?}", opts.source_ids).as_bytes());
    h.update(format!("{:?}", opts.owner).as_bytes());
    h.update(format!("{:?}", opts.mode).as_bytes());
    h.update(&[u8::from(opts.allow_empty_wildcard)]);
    Some(h.finalize())
}

/// The recorded checksum, when every recorded entry still has its stamp.
/// Any doubt (no index, a damaged one, one entry changed or gone) is `None`.
pub fn check(file: &Path) -> Option<blake3::Hash> {
    let data = fs::read(file).ok()?;
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (hash, mut rest) = (rest.get(..32)?, rest.get(32..)?);
    let hash = blake3::Hash::from_bytes(hash.try_into().ok()?);
    let mut entries: Vec<(&[u8], EntryStamp)> = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let path = rest.get(4..4 + len)?;
        let nums = rest.get(4 + len..4 + len + 56)?;
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                nums.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let stamp = EntryStamp {
            size: n(0)?,
            mtime: (n(1)? as i64, n(2)? as i64),
            ctime: (n(3)? as i64, n(4)? as i64),
            ino: n(5)?,
            dev: n(6)?,
        };
        entries.push((path, stamp));
        rest = rest.get(4 + len + 56..)?;
    }
    let all_same = entries.par_iter().with_min_len(256).all(|(path, stamp)| {
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        fs::symlink_metadata(p).is_ok_and(|md| EntryStamp::of(&md) == *stamp)
    });
    all_same.then_some(hash)
}

/// Writes the index of a finished walk (temp file and rename), unless an
/// entry is racy; best effort, as the index is only ever a shortcut.
pub(crate) fn save(file: &Path, hash: &blake3::Hash, rec: &Recording) -> io::Result<()> {
    let Some(started) = rec.started else {
        return Ok(());
    };
    if rec.entries.iter().any(|(_, s)| s.racy(started)) {
        // Too fresh to trust: drop any older index, which would now be stale.
        return match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(hash.as_bytes());
    for (path, s) in &rec.entries {
        let p = path.as_os_str().as_bytes();
        let Ok(len) = u32::try_from(p.len()) else {
            return Ok(());
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
        for v in [
            s.size,
            s.mtime.0 as u64,
            s.mtime.1 as u64,
            s.ctime.0 as u64,
            s.ctime.1 as u64,
            s.ino,
            s.dev,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let tmp = crate::tmpname::beside(file, "tmp");
    fs::write(&tmp, &out)?;
    fs::rename(&tmp, file)
}
