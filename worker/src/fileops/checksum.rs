//! Content checksums of exactly what a COPY reads, for the solver's cache
//! keys: a step is re-run when, and only when, something it would copy
//! changed. The walk makes the same decisions as the copy (wildcards,
//! followed top-level symlinks, `--parents`, `--exclude`, parents created
//! only for included paths) and hashes, per entry, its path as copied, type,
//! mode, ownership as it will be written, link target, device number and
//! content. Mtimes are left out, as BuildKit leaves them out: touching a file
//! does not invalidate a build.
//!
//! File contents are streamed into blake3, never held whole, on every core
//! (rayon; the records still enter the checksum in the walk's order); a
//! [`ChecksumMemo`] kept by the caller remembers each file's digest by
//! (path, size, mtime, ctime, inode), so an unchanged context is not re-read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use super::error::{io_err, FileOpsError, Result};
use kiln_patternmatcher::ContextFilter;
use rayon::prelude::*;

use super::pattern::{compile, has_wildcards};
use super::rootpath::{self, is_absent, strip};
use super::treeindex::{self, EntryStamp, Recording};
use super::{plan_source, resolve_wildcards, Chmod, CopySpec, Owner, SourceIds};

/// The parts of a copy that decide what it reads and how it writes it.
#[derive(Debug, Clone, Default)]
pub struct ChecksumOptions {
    pub parents: bool,
    pub exclude: Vec<String>,
    /// `.dockerignore`, anchored at the source root.
    pub context_exclude: Vec<String>,
    pub source_ids: SourceIds,
    pub owner: Option<Owner>,
    pub mode: Option<Chmod>,
    pub allow_empty_wildcard: bool,
}

impl From<&CopySpec> for ChecksumOptions {
    fn from(s: &CopySpec) -> Self {
        ChecksumOptions {
            parents: s.parents,
            exclude: s.exclude.clone(),
            context_exclude: s.context_exclude.clone(),
            source_ids: s.source_ids,
            owner: s.owner,
            mode: s.mode.clone(),
            allow_empty_wildcard: s.allow_empty_wildcard,
        }
    }
}

/// The first bytes of a saved [`ChecksumMemo`] (format version 1).
const MEMO_MAGIC: &[u8; 8] = b"kilnmem1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(md: &Metadata) -> Self {
        Stamp {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

/// Remembered file digests. Keep one per context for the life of the
/// process (or longer): it is what makes a no-op rebuild cheap. Shareable
/// between threads.
#[derive(Debug, Default)]
pub struct ChecksumMemo {
    /// By path bytes: hashing a `Path` goes component by component, which
    /// showed in no-op rebuilds of 30,000-file contexts.
    files: Mutex<HashMap<OsString, (Stamp, blake3::Hash)>>,
    reads: Mutex<u64>,
}

impl ChecksumMemo {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many files had to be read so far (the rest came from the memo).
    pub fn files_read(&self) -> u64 {
        self.reads.lock().map(|g| *g).unwrap_or(0)
    }

    /// A memo saved by [`ChecksumMemo::save`], so a new kiln process does
    /// not re-read an unchanged context (a no-op rebuild of a large context
    /// would otherwise hash all of it again). A missing or damaged file
    /// gives an empty memo: the memo is only ever a shortcut.
    pub fn load(file: &Path) -> Self {
        let memo = Self::default();
        let Ok(data) = fs::read(file) else {
            return memo;
        };
        let mut map = HashMap::new();
        let mut rest = data.as_slice();
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, b) = (rest.get(..n)?, rest.get(n..)?);
            rest = b;
            Some(a)
        };
        let u64_of = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
        let complete = (|| -> Option<()> {
            if take(8)? != MEMO_MAGIC {
                return None;
            }
            loop {
                let Some(len) = take(4) else {
                    return Some(());
                };
                let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
                let path = std::ffi::OsStr::from_bytes(take(len)?).to_os_string();
                let mut n = [0u64; 7];
                for v in n.iter_mut() {
                    *v = u64_of(take(8)?)?;
                }
                let hash: [u8; 32] = take(32)?.try_into().ok()?;
                let stamp = Stamp {
                    size: n[0],
                    mtime: (n[1] as i64, n[2] as i64),
                    ctime: (n[3] as i64, n[4] as i64),
                    ino: n[5],
                    dev: n[6],
                };
                map.insert(path, (stamp, blake3::Hash::from_bytes(hash)));
            }
        })();
        if complete.is_some() {
            if let Ok(mut m) = memo.files.lock() {
                *m = map;
            }
        }
        memo
    }

    /// Writes the memo for [`ChecksumMemo::load`] (temp file and rename, so
    /// concurrent kiln processes never see half a memo; the last one wins).
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let mut out = MEMO_MAGIC.to_vec();
        if let Ok(map) = self.files.lock() {
            for (path, (s, h)) in map.iter() {
                let p = path.as_bytes();
                let Ok(len) = u32::try_from(p.len()) else {
                    continue;
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
                out.extend_from_slice(h.as_bytes());
            }
        }
        let tmp = crate::tmpname::beside(file, "tmp");
        fs::write(&tmp, &out)?;
        fs::rename(&tmp, file)
    }

    fn content(&self, path: &Path, md: &Metadata, shown: &Path) -> Result<blake3::Hash> {
        let stamp = Stamp::of(md);
        if let Ok(map) = self.files.lock() {
            if let Some((s, h)) = map.get(path.as_os_str()) {
                if *s == stamp {
                    return Ok(*h);
                }
            }
        }
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err("open", shown))?;
        let mut hasher = blake3::Hasher::new();
        io::copy(&mut f, &mut hasher).map_err(io_err("read", shown))?;
        let h = hasher.finalize();
        // Stat again: a file changed while being read must not be
        // remembered under its old stamp.
        if let Ok(after) = f.metadata() {
            if Stamp::of(&after) == stamp {
                if let Ok(mut map) = self.files.lock() {
                    map.insert(path.as_os_str().to_os_string(), (stamp, h));
                }
            }
        }
        if let Ok(mut r) = self.reads.lock() {
            *r += 1;
        }
        Ok(h)
    }
}

/// The records of one copied source, hashed in the copy's order.
struct Tree<'a> {
    root: &'a Path,
    opts: &'a ChecksumOptions,
    memo: &'a ChecksumMemo,
    hasher: blake3::Hasher,
}

impl Tree<'_> {
    fn record(&self, rel: &str, md: &Metadata, host: &Path) -> Result<Vec<u8>> {
        let mut r = Vec::new();
        r.extend_from_slice(rel.as_bytes());
        r.push(0);
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else {
            b'o'
        };
        r.push(kind);
        let mode = if ft.is_symlink() {
            0o777
        } else {
            match &self.opts.mode {
                Some(c) => c.apply(md.mode(), md.is_dir()),
                None => md.mode() & 0o7777,
            }
        };
        let owner = self.opts.owner.unwrap_or(match self.opts.source_ids {
            SourceIds::Root => Owner { uid: 0, gid: 0 },
            SourceIds::Preserve => Owner {
                uid: md.uid(),
                gid: md.gid(),
            },
        });
        r.extend_from_slice(&mode.to_le_bytes());
        r.extend_from_slice(&owner.uid.to_le_bytes());
        r.extend_from_slice(&owner.gid.to_le_bytes());
        let shown = strip(self.root, host);
        match kind {
            b'f' => {
                r.extend_from_slice(&md.len().to_le_bytes());
                r.extend_from_slice(self.memo.content(host, md, &shown)?.as_bytes());
            }
            b'l' => {
                let t = fs::read_link(host).map_err(io_err("readlink", &shown))?;
                r.extend_from_slice(t.as_os_str().as_bytes());
            }
            b'o' => {
                r.extend_from_slice(&(md.mode() & libc::S_IFMT).to_le_bytes());
                r.extend_from_slice(&md.rdev().to_le_bytes());
            }
            _ => {}
        }
        r.push(0xff);
        Ok(r)
    }

    fn emit(&mut self, rec: &[u8]) {
        self.hasher.update(&(rec.len() as u64).to_le_bytes());
        self.hasher.update(rec);
    }

    /// The source itself, then what the copy's walk of it keeps: the same
    /// walk the copy makes, so parents are recorded exactly when the copy
    /// creates them.
    fn visit(
        &mut self,
        host: &Path,
        filter: &ContextFilter,
        context: Option<(&ContextFilter, &str)>,
        seen: &mut Option<Recording>,
    ) -> Result<()> {
        if let Some(r) = seen.as_mut() {
            r.path_down(self.root, host);
        }
        let md = fs::symlink_metadata(host).map_err(io_err("lstat", strip(self.root, host)))?;
        let rec = self.record("", &md, host)?;
        self.emit(&rec);
        if !md.is_dir() {
            return Ok(());
        }
        let mut walk = filter.walk(host);
        if let Some((context, prefix)) = context {
            walk = walk.within(context, prefix);
        }
        // The walk reads directories (cheap, serial); the records read and
        // hash file contents, so they are made on every core and emitted
        // in the walk's order. A walk error is reported after the records
        // of the entries before it, as a serial walk would.
        let mut entries = Vec::new();
        let mut walk_error = None;
        for entry in walk {
            match entry {
                Ok(e) => entries.push(e),
                Err(e) => {
                    walk_error = Some(super::copier::walk_err(self.root)(e));
                    break;
                }
            }
        }
        let this = &*self;
        let records: Vec<Result<Vec<u8>>> = entries
            .par_iter()
            .map(|e| this.record(&e.path, &e.metadata, &e.full_path))
            .collect();
        for rec in records {
            self.emit(&rec?);
        }
        if let Some(r) = seen.as_mut() {
            r.entries.extend(
                entries
                    .iter()
                    .map(|e| (e.full_path.clone(), EntryStamp::of(&e.metadata))),
            );
        }
        match walk_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The checksum of everything a COPY of `sources` from `src_root` would
/// read, as it would write it. Errors as the copy would (a missing source is
/// `"/path": not found`).
pub fn checksum_sources(
    src_root: &Path,
    sources: &[String],
    opts: &ChecksumOptions,
    memo: &ChecksumMemo,
) -> Result<blake3::Hash> {
    checksum_inner(src_root, sources, opts, memo, &mut None)
}

/// [`checksum_sources`] through a [`treeindex`](super::treeindex) kept in
/// the folder `index_dir`: an unchanged plain copy is proven by one lstat
/// per entry, on every core, without reading a directory or loading the
/// memo (`memo` is only called when the tree must be walked).
pub fn checksum_sources_indexed(
    src_root: &Path,
    sources: &[String],
    opts: &ChecksumOptions,
    memo: impl FnOnce() -> std::sync::Arc<ChecksumMemo>,
    index_dir: &Path,
) -> Result<blake3::Hash> {
    let Some(key) = treeindex::key(src_root, sources, opts) else {
        return checksum_inner(src_root, sources, opts, &memo(), &mut None);
    };
    let file = index_dir.join(format!("{}.tree", &key.to_hex()[..32]));
    if let Some(h) = treeindex::check(&file) {
        return Ok(h);
    }
    let mut rec = Some(Recording::new());
    let h = checksum_inner(src_root, sources, opts, &memo(), &mut rec)?;
    if let Some(rec) = rec {
        // Best effort: without an index the next check walks again.
        let _ = fs::create_dir_all(index_dir);
        let _ = treeindex::save(&file, &h, &rec);
    }
    Ok(h)
}

fn checksum_inner(
    src_root: &Path,
    sources: &[String],
    opts: &ChecksumOptions,
    memo: &ChecksumMemo,
    rec: &mut Option<Recording>,
) -> Result<blake3::Hash> {
    let exclude = compile(&opts.exclude)?;
    let view = super::context::ContextView::new(&opts.context_exclude)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kiln.copy.v1\0");
    for s in sources {
        let plan = plan_source(s, opts.parents)?;
        hasher.update(plan.src.as_bytes());
        hasher.update(&[0]);
        if let Some(req) = &plan.required {
            let r = rootpath::resolve(src_root, Path::new(req), true)?;
            if fs::symlink_metadata(&r.host).is_err() || view.lookup(src_root, req)?.is_none() {
                return Err(FileOpsError::NotFound { path: req.clone() });
            }
        }
        let matches = if has_wildcards(&plan.src) {
            let m = resolve_wildcards(src_root, &plan.src)?;
            if m.is_empty() && !opts.allow_empty_wildcard {
                return Err(FileOpsError::NoMatch { pattern: plan.src });
            }
            m
        } else {
            vec![plan.src.clone()]
        };
        let wildcard = has_wildcards(&plan.src);
        for m in matches {
            let Some(inner) = view.lookup(src_root, &m)? else {
                if wildcard {
                    continue;
                }
                return Err(FileOpsError::NotFound {
                    path: super::pattern::clean(&m),
                });
            };
            let host = rootpath::host_path(src_root, Path::new(&m), true)?;
            match fs::symlink_metadata(&host) {
                Ok(_) => {}
                Err(e) if is_absent(&e) => {
                    return Err(FileOpsError::NotFound {
                        path: super::pattern::clean(&m),
                    })
                }
                Err(e) => return Err(io_err("lstat", strip(src_root, &host))(e)),
            }
            hasher.update(super::copier::base(&m).as_bytes());
            hasher.update(&[0]);
            let filter = ContextFilter::new(plan.include.clone(), Some(exclude.clone()));
            let mut w = Tree {
                root: src_root,
                opts,
                memo,
                hasher: blake3::Hasher::new(),
            };
            w.visit(&host, &filter, view.outer(&inner), rec)?;
            hasher.update(w.hasher.finalize().as_bytes());
        }
        hasher.update(&[0xfe]);
    }
    Ok(hasher.finalize())
}
