//! `kiln prune`'s part in the build cache, before blobs are collected:
//! records whose blobs are gone are dropped (nothing can use them); with
//! `all`, every record, every unpacked layer directory no running
//! container stands on, and the export hints go (they are derived data,
//! made again from blobs when needed).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use kiln_cache::{buildcache, Root};

use crate::BuildError;

/// Prunes the build cache; returns how many records were (or with
/// `dry_run` would be) dropped.
pub fn prune_records(root: &Root, all: bool, dry_run: bool) -> Result<usize, BuildError> {
    let _gc = root.gc_lock()?;
    if !dry_run {
        // What killed kiln processes left: their scratch folders (a killed
        // prune's half-deleted layers among them), and the folders older
        // versions of prune left in tmp/.
        kiln_worker::layers::clean_dead_work(&root.work_dir());
        clean_old_pruned(&root.tmp_dir());
    }
    let dropped = buildcache::prune(root, all, dry_run)?;
    let layers = root.layers_dir();
    if all && !dry_run && layers.is_dir() {
        // The layer dirs a running container's overlay stands on stay
        // (changing an overlay's lower dirs under it is undefined).
        // By name (the diff_id), whatever spelling of the store's path the
        // container was started with.
        let in_use: HashSet<OsString> = kiln_worker::container::Store::open(root.path())
            .and_then(|s| s.list())
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| c.is_alive())
                    .flat_map(|c| c.lowers)
                    .filter_map(|l| l.file_name().map(|n| n.to_os_string()))
                    .collect()
            })
            .unwrap_or_default();
        // In this process's scratch folder: if prune is killed midway,
        // the next kiln command that finds the folder of a dead process
        // removes it (kiln_worker::layers::clean_dead_work).
        let doomed = root.own_work_dir().join("layers-pruned");
        std::fs::create_dir_all(doomed.parent().unwrap_or(root.path()))?;
        if in_use.is_empty() {
            // Rename first so a half-removed tree never looks like a layer.
            std::fs::rename(&layers, &doomed)?;
        } else {
            std::fs::create_dir_all(&doomed)?;
            for e in std::fs::read_dir(&layers)?.flatten() {
                if !in_use.contains(&e.file_name()) {
                    std::fs::rename(e.path(), doomed.join(e.file_name()))?;
                }
            }
        }
        std::fs::remove_dir_all(&doomed)?;
    }
    let exports = root.exports_dir();
    if all && !dry_run && exports.is_dir() {
        // Hints for no-op rebuilds (export::image::assemble_reusing): with
        // the build cache gone they can only point at what is being pruned.
        std::fs::remove_dir_all(&exports)?;
    }
    Ok(dropped)
}

/// Removes `tmp/layers-pruned-<pid>` folders (where prune used to move the
/// layer dirs it deletes) whose process is gone.
fn clean_old_pruned(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("layers-pruned-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
