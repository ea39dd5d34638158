//! Cache mounts (`RUN --mount=type=cache`) in the remote cache, when the
//! export asks (`cache-mounts=true`): what moby/buildkit#1474 has asked
//! BuildKit for since 2020, so a fresh CI runner starts with the package
//! manager caches the last run left.
//!
//! A cache mount travels as a record `mount:<name>` (the name of its
//! folder in `cachemounts/`, which the worker derives from the mount's
//! id and options) whose one layer is a tar of the folder, stored plain
//! and compressed on transfer as any layer. Readers that do not know the
//! spelling skip the record (it is not a cache key). An import restores a
//! mount the build uses only when the store has no folder of that name:
//! a local cache is never overwritten.

use std::fs;
use std::path::Path;

use super::{Error, Imported, LayerRef, Records};
use crate::{media, Root};

/// The record key spelling of cache mount `name`.
pub(crate) fn record_key(name: &str) -> String {
    format!("mount:{name}")
}

/// Whether `k` is a cache mount record key (a 64-hex name).
pub(crate) fn is_mount_key(k: &str) -> bool {
    k.strip_prefix("mount:")
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Tars each existing folder of `names` into a plain layer blob: the
/// records to add to an export.
pub(crate) fn pack(root: &Root, names: &[String]) -> Result<Records, Error> {
    let mut out = Records::new();
    for name in names {
        let dir = root.cachemounts_dir().join(name);
        if !dir.is_dir() {
            continue;
        }
        let w = root.blobs().writer(None, None)?;
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(".", &dir)
            .map_err(Error::io("packing cache mount", &dir))?;
        let w = tar
            .into_inner()
            .map_err(Error::io("packing cache mount", &dir))?;
        let (digest, size) = w.commit()?;
        out.insert(
            record_key(name),
            vec![LayerRef {
                diff_id: digest.clone(),
                digest,
                size,
                media_type: media::OCI_LAYER.to_string(),
            }],
        );
    }
    Ok(out)
}

/// Unpacks the plain tar blob of `layer` as the cache mount folder `dir`
/// (through a temporary folder beside it, renamed into place).
fn unpack(root: &Root, layer: &LayerRef, dir: &Path) -> Result<(), Error> {
    let parent = root.cachemounts_dir();
    fs::create_dir_all(&parent).map_err(Error::io("creating", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(&parent)
        .map_err(Error::io("creating in", &parent))?;
    let f = root.blobs().open(&layer.digest)?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.unpack(tmp.path())
        .map_err(Error::io("unpacking cache mount into", tmp.path()))?;
    let kept = tmp.keep();
    if let Err(e) = fs::rename(&kept, dir) {
        // Another build made the folder first: keep its.
        let _ = fs::remove_dir_all(&kept);
        if !dir.is_dir() {
            return Err(Error::io("restoring", dir)(e));
        }
    }
    Ok(())
}

impl Imported {
    /// Restores the imported cache mounts among `names` that the store
    /// lacks; a mount that cannot be restored is a warning (the step
    /// starts with an empty cache, as it would have). Returns how many
    /// were restored.
    pub fn restore_mounts(&self, names: &[String]) -> usize {
        let root = self.root().clone();
        let mut n = 0;
        for name in names {
            let dir = root.cachemounts_dir().join(name);
            if dir.exists() {
                continue;
            }
            let Some(layers) = self.record(&record_key(name)) else {
                continue;
            };
            let done = self
                .block_on(self.materialize(layers))
                .and_then(|l| match l.first() {
                    Some(layer) => unpack(&root, layer, &dir),
                    None => Ok(()),
                });
            match done {
                Ok(()) => n += 1,
                Err(e) => self.warn(format!("cache mount {name} not restored: {e}")),
            }
        }
        n
    }
}
