//! The store folder and its layout.
//!
//! ```text
//! $KILN_ROOT/
//!   blobs/sha256/<hex>   content-addressed blobs (complete and verified)
//!   tmp/*.partial        blobs being written (flocked by their writer)
//!   images.json          name → descriptor table
//!   compressed/          plain layer → its gzip/zstd blob, for push/save
//!   locks/               flock files (images, gc)
//!   buildcache/          one record per build-step cache key
//!   layers/              layers unpacked into folders, by diff_id
//!   exports/             hints for no-op rebuilds (same image ID)
//!   checksums/           the worker's memo of context checksums
//!   cachemounts/         `RUN --mount=type=cache` folders
//!   containers/          `kiln run` containers
//!   work/<pid>/          per-process scratch (removed when the process dies)
//! ```
//!
//! [`Root`] has a method per folder: no other code spells these names.
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

const BLOBS: &str = "blobs";
const TMP: &str = "tmp";
const LOCKS: &str = "locks";

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
        let blob_dir = path.join(BLOBS).join("sha256");
        let tmp = path.join(TMP);
        let locks = path.join(LOCKS);
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
        self.path.join(TMP)
    }

    /// `blobs/`: the content-addressed blobs (`blobs/<algorithm>/<hex>`).
    pub fn blobs_dir(&self) -> PathBuf {
        self.path.join(BLOBS)
    }

    /// `buildcache/`: one record per build-step cache key, so a rebuild
    /// finds a step's layers without running it.
    pub fn buildcache_dir(&self) -> PathBuf {
        self.path.join("buildcache")
    }

    /// `layers/`: layers unpacked into folders named by diff_id, shared by
    /// the snapshots and containers that stand on them.
    pub fn layers_dir(&self) -> PathBuf {
        Self::layers_dir_of(&self.path)
    }

    /// [`Root::layers_dir`] of a store known by its path only (the worker's
    /// layer store opens by path).
    pub fn layers_dir_of(path: &Path) -> PathBuf {
        path.join("layers")
    }

    /// `exports/`: hints that let a fully cached rebuild keep its image ID.
    pub fn exports_dir(&self) -> PathBuf {
        self.path.join("exports")
    }

    /// `checksums/`: the worker's memo of context file checksums.
    pub fn checksums_dir(&self) -> PathBuf {
        self.path.join("checksums")
    }

    /// `checksums.memo`: the file older versions kept that memo in (removed
    /// when found).
    pub fn old_checksums_file(&self) -> PathBuf {
        self.path.join("checksums.memo")
    }

    /// `compressed/`: which compressed blob a plain layer became, per
    /// compression, so push and save compress each layer once.
    pub fn compressed_dir(&self) -> PathBuf {
        self.path.join("compressed")
    }

    /// `cachemounts/`: the folders of `RUN --mount=type=cache`.
    pub fn cachemounts_dir(&self) -> PathBuf {
        self.path.join("cachemounts")
    }

    /// `containers/`: the state of `kiln run` containers.
    pub fn containers_dir(&self) -> PathBuf {
        Self::containers_dir_of(&self.path)
    }

    /// [`Root::containers_dir`] of a store known by its path only (the
    /// container supervisor runs without opening the store).
    pub fn containers_dir_of(path: &Path) -> PathBuf {
        path.join("containers")
    }

    /// `volumes/`: named and anonymous volumes of `kiln run`, each
    /// `volumes/<name>/_data` (docker's layout) beside its `opts.json`.
    pub fn volumes_dir(&self) -> PathBuf {
        Self::volumes_dir_of(&self.path)
    }

    /// [`Root::volumes_dir`] of a store known by its path only (the
    /// container helper removes `--rm` containers' anonymous volumes).
    pub fn volumes_dir_of(path: &Path) -> PathBuf {
        path.join("volumes")
    }

    /// `networks/`: `kiln network` records (`<id>.json`) and their
    /// address allocations, under `networks/.lock`.
    pub fn networks_dir(&self) -> PathBuf {
        Self::networks_dir_of(&self.path)
    }

    /// [`Root::networks_dir`] of a store known by its path only (the
    /// container helper runs without opening the store).
    pub fn networks_dir_of(path: &Path) -> PathBuf {
        path.join("networks")
    }

    /// `locks/`: flock files.
    pub fn locks_dir(&self) -> PathBuf {
        self.path.join(LOCKS)
    }

    /// `work/`: per-process scratch folders (`work/<pid>`), removed by the
    /// next command once their process is gone.
    pub fn work_dir(&self) -> PathBuf {
        Self::work_dir_of(&self.path)
    }

    /// [`Root::work_dir`] of a store known by its path only.
    pub fn work_dir_of(path: &Path) -> PathBuf {
        path.join("work")
    }

    /// This process's scratch folder under [`Root::work_dir`].
    pub fn own_work_dir(&self) -> PathBuf {
        self.work_dir().join(std::process::id().to_string())
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.locks_dir().join("gc.lock")
    }

    /// Takes a shared lease that keeps garbage collection away while an
    /// operation writes blobs it has not yet named (pull, load, build).
    /// Hold it from the first blob written until the name is set.
    pub fn lease(&self) -> Result<FileLock> {
        FileLock::shared(&self.gc_lock_path())
    }

    /// Whether someone holds a lease right now (a build, pull or load is
    /// running), so a command about to wait for [`Root::gc_lock`] can say
    /// why it waits. A moment's answer: it may change at once.
    pub fn leased(&self) -> bool {
        let path = self.gc_lock_path();
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
        FileLock::exclusive(&self.gc_lock_path())
    }
}
