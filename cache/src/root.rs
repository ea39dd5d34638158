//! The store folder and its layout.
//!
//! ```text
//! $KILN_ROOT/
//!   blobs/sha256/<hex>   content-addressed blobs (complete and verified)
//!   tmp/*.partial        blobs being written (flocked by their writer)
//!   images.json          name → descriptor table
//!   compressed/          plain layer → its gzip/zstd blob, for push/save
//!   locks/               flock files (images, gc)
//! ```
//!
//! Everything needed to go on after a crash is in that folder; opening it
//! removes what dead writers left behind.

use std::fs;
use std::path::{Path, PathBuf};

use crate::blobs::{clean_temp, BlobStore};
use crate::error::{Error, Result};
use crate::images::ImageStore;
use crate::lock::FileLock;

/// Environment variable naming the store folder.
pub const ENV_ROOT: &str = "KILN_ROOT";

/// An opened store.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    blobs: BlobStore,
    images: ImageStore,
}

impl Root {
    /// Opens (creating if needed) the store at `path` and cleans temp files
    /// whose writers have died.
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let path = path.as_ref().to_path_buf();
        let blob_dir = path.join("blobs").join("sha256");
        let tmp = path.join("tmp");
        let locks = path.join("locks");
        for d in [&blob_dir, &tmp, &locks] {
            fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        clean_temp(&tmp)?;
        Ok(Root {
            blobs: BlobStore::new(blob_dir, tmp.clone()),
            images: ImageStore::new(path.join("images.json"), locks.join("images.lock"), tmp),
            path,
        })
    }

    /// Opens the store named by `$KILN_ROOT`, else the default location.
    pub fn from_env() -> Result<Root> {
        Root::open(Self::default_path())
    }

    /// `$KILN_ROOT`, else `/var/lib/kiln` as root, else
    /// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`) — the same split as
    /// podman/buildah, so rootless users need no privileges.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os(ENV_ROOT).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p).join("kiln");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        home.join(".local/share/kiln")
    }

    /// The store folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The name table.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// A folder for scratch files of the store's own filesystem (so renames
    /// into the store stay atomic). Callers must name their files with the
    /// `.partial` suffix only if they hold an flock on them.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Takes a shared lease that keeps garbage collection away while an
    /// operation writes blobs it has not yet named (pull, load, build).
    /// Hold it from the first blob written until the name is set.
    pub fn lease(&self) -> Result<FileLock> {
        FileLock::shared(&self.path.join("locks").join("gc.lock"))
    }

    /// Whether someone holds a lease right now (a build, pull or load is
    /// running), so a command about to wait for [`Root::gc_lock`] can say
    /// why it waits. A moment's answer: it may change at once.
    pub fn leased(&self) -> bool {
        let path = self.path.join("locks").join("gc.lock");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map(|f| !crate::lock::try_exclusive(&f).unwrap_or(true))
            .unwrap_or(false)
    }

    /// The exclusive counterpart of [`Root::lease`], for garbage collection:
    /// waits until no lease is held.
    pub fn gc_lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.path.join("locks").join("gc.lock"))
    }
}
