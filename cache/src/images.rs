//! The image store: names → descriptors of manifests or indexes.
//!
//! One small JSON file, replaced atomically (write temp, fsync, rename)
//! under an exclusive flock, so concurrent kiln processes never lose each
//! other's updates and readers never see a torn file. Readers take no lock:
//! the rename makes every version they can open complete.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::blobs::{create_locked_temp, sync_dir};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::reference::Reference;

/// The on-disk form; versioned so a later kiln can migrate it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    version: u32,
    images: BTreeMap<String, Descriptor>,
}

/// Handle on the name table of a store; cheap to clone.
#[derive(Debug, Clone)]
pub struct ImageStore {
    file: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

impl ImageStore {
    pub(crate) fn new(file: PathBuf, lock: PathBuf, tmp: PathBuf) -> ImageStore {
        ImageStore { file, lock, tmp }
    }

    /// The descriptor a name points at, if the name is in the store.
    pub fn get(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        Ok(self.read()?.images.remove(&reference.to_string()))
    }

    /// Points a name at a manifest or index, replacing what it pointed at.
    pub fn set(&self, reference: &Reference, descriptor: Descriptor) -> Result<()> {
        self.update(|t| {
            t.insert(reference.clone(), descriptor);
            Ok(())
        })
    }

    /// Sets several names in one atomic step, so an import either names
    /// everything or nothing.
    pub fn set_many(&self, entries: &[(Reference, Descriptor)]) -> Result<()> {
        self.update(|t| {
            for (r, d) in entries {
                t.insert(r.clone(), d.clone());
            }
            Ok(())
        })
    }

    /// Removes a name; `Ok(false)` if it was not there.
    pub fn remove(&self, reference: &Reference) -> Result<bool> {
        let mut found = false;
        self.update(|t| {
            found = t.remove(reference).is_some();
            Ok(())
        })?;
        Ok(found)
    }

    /// Every name and its descriptor, sorted by name.
    pub fn list(&self) -> Result<Vec<(Reference, Descriptor)>> {
        let t = self.read()?;
        let mut out = Vec::with_capacity(t.images.len());
        for (name, d) in t.images {
            // A name that no longer parses (hand-edited file) is skipped
            // rather than making every listing fail.
            if let Ok(r) = Reference::parse_name(&name) {
                out.push((r, d));
            }
        }
        Ok(out)
    }

    /// Read-modify-write under the store's lock: `f` sees the current table
    /// and its changes are written atomically when it returns `Ok`.
    pub fn update<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut Names) -> Result<()>,
    {
        let _guard = FileLock::exclusive(&self.lock)?;
        let mut table = self.read()?;
        let before = table.images.clone();
        let mut names = Names {
            map: std::mem::take(&mut table.images),
        };
        f(&mut names)?;
        if names.map == before && table.version == 1 {
            // Nothing changed (a rebuild naming the same image again):
            // skip the write and its fsyncs.
            return Ok(());
        }
        table.images = names.map;
        table.version = 1;
        self.write(&table)
    }

    fn read(&self) -> Result<Table> {
        match fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(self.file.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table {
                version: 1,
                images: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io(&self.file, e)),
        }
    }

    fn write(&self, table: &Table) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(table)
            .map_err(|e| Error::json(self.file.display().to_string(), e))?;
        let (mut file, tmp) = create_locked_temp(&self.tmp)?;
        let result = (|| {
            file.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
            fs::rename(&tmp, &self.file).map_err(|e| Error::io(&self.file, e))?;
            if let Some(dir) = self.file.parent() {
                sync_dir(dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// The name table as [`ImageStore::update`] hands it out.
#[derive(Debug)]
pub struct Names {
    map: BTreeMap<String, Descriptor>,
}

impl Names {
    /// The descriptor a name points at.
    pub fn get(&self, reference: &Reference) -> Option<&Descriptor> {
        self.map.get(&reference.to_string())
    }

    /// Points a name at a descriptor; returns the previous one.
    pub fn insert(&mut self, reference: Reference, d: Descriptor) -> Option<Descriptor> {
        self.map.insert(reference.to_string(), d)
    }

    /// Removes a name; returns what it pointed at.
    pub fn remove(&mut self, reference: &Reference) -> Option<Descriptor> {
        self.map.remove(&reference.to_string())
    }

    /// All names and descriptors.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Descriptor)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }
}
