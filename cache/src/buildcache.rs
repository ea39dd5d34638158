//! The build cache's records: `$KILN_ROOT/buildcache/<key>.json`, one per
//! build-step cache key, naming the layers of that step's result. The
//! worker writes them as steps finish; `kiln du`, `kiln prune` and the
//! remote cache read them through this module instead of walking JSON.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::LayerRef;
use crate::{Digest, Root};

/// One record: a step's result as its layers, lowest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub layers: Vec<LayerRef>,
    /// Set when the result stands for a build context on the host rather
    /// than layers (the worker's `ContextRef`); kept opaque here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

/// A record on disk with where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record file.
    pub path: PathBuf,
    pub record: Record,
}

impl Entry {
    /// The cache key the record is for (its file name, hex).
    pub fn key(&self) -> String {
        self.path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// The sum of its layers' sizes.
    pub fn size(&self) -> u64 {
        self.record.layers.iter().map(|l| l.size).sum()
    }
}

/// The file of the record for the cache key `key_hex`.
pub fn path(root: &Root, key_hex: &str) -> PathBuf {
    root.buildcache_dir().join(format!("{key_hex}.json"))
}

/// Reads the record of `key_hex`; `None` when there is none or it cannot be
/// read (a record is only ever a shortcut).
pub fn read(root: &Root, key_hex: &str) -> Option<Record> {
    serde_json::from_slice(&fs::read(path(root, key_hex)).ok()?).ok()
}

/// The layers of `key_hex`'s record if every blob it names is in the store
/// and it is made of layers (not a build context).
pub fn read_complete(root: &Root, key_hex: &str) -> Option<Vec<LayerRef>> {
    let rec = read(root, key_hex)?;
    if rec.layers.is_empty() || rec.context.is_some() {
        return None;
    }
    let complete = rec.layers.iter().all(|l| root.blobs().has(&l.digest));
    complete.then_some(rec.layers)
}

/// Every readable record, sorted by file.
pub fn list(root: &Root) -> Vec<Entry> {
    let Ok(rd) = fs::read_dir(root.buildcache_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|path| {
            let record: Record = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
            Some(Entry { path, record })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The layer digests every record references, for `kiln prune` to keep
/// (a [`crate::gc::RootSource`]).
pub fn roots(root: &Root) -> Result<Vec<Digest>> {
    Ok(list(root)
        .into_iter()
        .flat_map(|e| e.record.layers)
        .map(|l| l.digest)
        .collect())
}

/// Drops the records whose blobs are gone (nothing can use them), or every
/// record with `all`. Returns how many were (or, with `dry_run`, would be)
/// dropped.
pub fn prune(root: &Root, all: bool, dry_run: bool) -> Result<usize> {
    let mut dropped = 0;
    for e in list(root) {
        let stale = e.record.layers.iter().any(|l| !root.blobs().has(&l.digest));
        if all || stale {
            dropped += 1;
            if !dry_run {
                fs::remove_file(&e.path).map_err(|err| Error::io(&e.path, err))?;
            }
        }
    }
    Ok(dropped)
}

/// What the build cache takes on disk, for `kiln du`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many records.
    pub records: usize,
    /// Distinct layer blobs the records name, and their total size.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Bytes of unpacked layer folders.
    pub unpacked_bytes: u64,
    /// Bytes of `RUN --mount=type=cache` folders.
    pub cache_mount_bytes: u64,
}

impl Usage {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.blob_bytes + self.unpacked_bytes + self.cache_mount_bytes
    }
}

/// Measures the build cache; `entries` are the records (from [`list`]).
pub fn usage(root: &Root, entries: &[Entry]) -> Usage {
    let mut seen = BTreeSet::new();
    let mut blob_bytes = 0;
    for l in entries.iter().flat_map(|e| &e.record.layers) {
        if seen.insert(l.digest.clone()) {
            blob_bytes += l.size;
        }
    }
    Usage {
        records: entries.len(),
        blobs: seen.len(),
        blob_bytes,
        unpacked_bytes: dir_size(&root.layers_dir()),
        cache_mount_bytes: dir_size(&root.cachemounts_dir()),
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
