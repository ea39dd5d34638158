//! Layers as the build uses them: a blob in the content store (what leaves
//! kiln) and, beside it, the same layer unpacked as an overlay-ready
//! directory (what RUN and COPY stand on), plus the per-process scratch
//! space steps work in.
//!
//! Layout under `$KILN_ROOT`:
//! - `layers/<diff_id hex>/` — one unpacked layer, overlay-native whiteouts.
//!   Made by renaming a finished upper dir, or by unpacking the blob on first
//!   use; a directory appears there only whole (built elsewhere, renamed).
//! - `work/<pid>/` — the scratch space of one kiln process: overlay
//!   upper/work/merged dirs, read-only views. A process that died (SIGKILL)
//!   leaves its folder, and perhaps mounts in it; the next worker detaches
//!   those mounts and removes the folder. Each [`LayerStore`] of the
//!   process works in a folder of its own, `work/<pid>/<n>`, which it
//!   removes when dropped, so builds running at once in one process
//!   (`kiln compose build`) never remove each other's scratch space.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_cache::Digest;
use rayon::prelude::*;

use crate::snapshot;

/// One layer of a snapshot. Defined in the store crate, which the build
/// cache records, the remote cache and the exporters share.
pub use kiln_cache::layer::LayerRef;

/// Why a layer could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest}: {source}")]
    Store {
        digest: Digest,
        #[source]
        source: kiln_cache::Error,
    },
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: Digest,
        #[source]
        source: snapshot::SnapshotError,
    },
    /// The layer's tar is not what the image's config says it is (its
    /// `rootfs.diff_ids`): a corrupt or hostile image.
    #[error("its tar is {actual}, not the diff_id {expected} its image names (layer {digest})")]
    DiffId {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The unpacked layers and the scratch space of this process.
#[derive(Debug)]
pub struct LayerStore {
    layers: PathBuf,
    work: PathBuf,
    seq: AtomicU64,
    /// One lock per layer being unpacked, so parallel steps on the same base
    /// (after `prune --all` dropped its directory) unpack it once and the
    /// others wait, instead of all of them unpacking it side by side.
    unpacking: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl LayerStore {
    /// Opens the layer folders under `root`, cleaning what dead kiln
    /// processes left in `work/`.
    pub fn open(root: &Path) -> Result<LayerStore, LayerError> {
        let layers = kiln_cache::Root::layers_dir_of(root);
        let work_root = kiln_cache::Root::work_dir_of(root);
        for d in [&layers, &work_root] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let own = work_root.join(std::process::id().to_string());
        if first_open(&work_root) {
            // Best effort: only ext4 (and a few others) know the flag.
            let _ = crate::sys::set_topdir(&work_root);
            clean_dead_work(&work_root);
            // A folder named by our pid at our first open is a dead
            // namesake's: start clean.
            if own.exists() {
                remove_tree(&own);
            }
        }
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let work = own.join(INSTANCE.fetch_add(1, Ordering::Relaxed).to_string());
        fs::create_dir_all(&work).map_err(io_err("create", &work))?;
        Ok(LayerStore {
            layers,
            work,
            seq: AtomicU64::new(0),
            unpacking: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh, empty scratch directory for one step.
    pub fn scratch(&self, what: &str) -> Result<PathBuf, LayerError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.work.join(format!("{what}-{n}"));
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Where the unpacked layer lives (whether or not it is there yet):
    /// named by the diff_id's hex, which the typed digest keeps a plain
    /// file name.
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.layers.join(diff_id.hex())
    }

    /// The layer's directory, unpacking its blob first if needed.
    pub fn dir(
        &self,
        layer: &LayerRef,
        blobs: &kiln_cache::BlobStore,
    ) -> Result<PathBuf, LayerError> {
        let path = self.path(&layer.diff_id);
        if path.is_dir() {
            return Ok(path);
        }
        let lock = {
            let mut table = self.unpacking.lock().unwrap_or_else(|p| p.into_inner());
            table.entry(layer.diff_id.clone()).or_default().clone()
        };
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        if path.is_dir() {
            return Ok(path);
        }
        let digest = &layer.digest;
        let store_err = |source| LayerError::Store {
            digest: layer.digest.clone(),
            source,
        };
        let file = blobs.open(digest).map_err(store_err)?;
        let staging = self.scratch("unpack")?.join("layer");
        fs::create_dir(&staging).map_err(io_err("create", &staging))?;
        // Inflating and extracting on two threads. The diff_id is not
        // checked here, as it never was: the blob's digest was, when it
        // entered the store.
        crate::layer_unpack::unpack_pipelined(file, layer, &staging, false)?;
        self.adopt(&staging, &layer.diff_id)
    }

    /// The directories of `layers`, in order, unpacking those missing in
    /// parallel: each layer unpacks into a directory of its own, so an
    /// image's layers need not wait for each other (the same layer twice
    /// is still unpacked once, by [`LayerStore::dir`]'s lock). The first
    /// error in layer order is returned.
    pub fn dirs(
        &self,
        layers: &[LayerRef],
        blobs: &kiln_cache::BlobStore,
    ) -> Result<Vec<PathBuf>, LayerError> {
        // All there already (the common case): no pool needed.
        if layers.iter().all(|l| self.path(&l.diff_id).is_dir()) {
            return Ok(layers.iter().map(|l| self.path(&l.diff_id)).collect());
        }
        layers
            .par_iter()
            .map(|l| self.dir(l, blobs))
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }

    /// Moves a finished directory (an overlay upper dir, or a staging dir)
    /// into place as the unpacked form of `diff_id`. If another build got
    /// there first, theirs stays and ours is dropped.
    pub fn adopt(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf, LayerError> {
        let path = self.path(diff_id);
        match fs::rename(dir, &path) {
            Ok(()) => Ok(path),
            Err(_) if path.is_dir() => {
                remove_tree(dir);
                Ok(path)
            }
            Err(e) => Err(io_err("rename into", &path)(e)),
        }
    }

    /// Removes this store's scratch space (the process's other stores
    /// keep theirs).
    pub fn cleanup(&self) {
        remove_tree(&self.work);
    }
}

impl Drop for LayerStore {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Whether this is the process's first [`LayerStore::open`] of the store
/// whose `work/` is `work_root`: what dead processes left is cleaned then,
/// and never again under the feet of this process's running builds.
fn first_open(work_root: &Path) -> bool {
    static OPENED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    if opened.iter().any(|p| p == work_root) {
        return false;
    }
    opened.push(work_root.to_path_buf());
    true
}

/// A reader of the layer's tar, whatever its compression (by media type,
/// and by magic bytes when the type says nothing).
pub(crate) fn decompress<'a, R: Read + 'a>(
    mut r: BufReader<R>,
    media_type: &str,
) -> io::Result<Box<dyn Read + 'a>> {
    use std::io::BufRead;
    let head = r.fill_buf()?;
    let gzip = media_type.ends_with("gzip") || head.starts_with(&[0x1f, 0x8b]);
    let zstd = media_type.ends_with("zstd") || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    Ok(if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if zstd {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Removes the scratch folders of kiln processes that no longer run,
/// detaching any mount they left behind first. Every command that opens
/// the layer store runs it, and `kiln prune` too, so a killed command's
/// leftovers never outlive the next one.
pub fn clean_dead_work(work_root: &Path) {
    let Ok(entries) = fs::read_dir(work_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_tree(&e.path());
    }
}

/// Removes a tree that may still have mounts in it: mounts below it are
/// detached (deepest first) before anything is deleted, so removal can never
/// reach through a mount into a layer or the host.
pub(crate) fn remove_tree(dir: &Path) {
    let mut mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &mounts {
        let _ = crate::sys::umount(m, libc::MNT_DETACH);
    }
    let still_mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .any(|p| p.starts_with(dir));
    if !still_mounted {
        let _ = fs::remove_dir_all(dir);
    }
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn layer_paths_accept_only_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path()).unwrap();
        assert!("sha256:../../etc".parse::<Digest>().is_err());
        let ok: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert!(store.path(&ok).starts_with(dir.path().join("layers")));
    }
}
