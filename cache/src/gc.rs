//! Garbage collection: delete blobs nothing needs.
//!
//! A blob is live if a named image reaches it or another part of kiln (the
//! layer cache, later) declares it a root. Collection runs under the
//! store's exclusive gc lock, so blobs written by a pull or load that holds
//! a [`Root::lease`](crate::Root::lease) but has not named its image yet are
//! never collected from under it.

use std::collections::BTreeSet;

use crate::blobs::clean_temp;
use crate::compress;
use crate::digest::Digest;
use crate::error::Result;
use crate::image;
use crate::root::Root;

/// Where other parts of kiln add blobs that must survive collection (the
/// layer cache registers its records here). Each source gets the store
/// and returns the digests it keeps.
pub type RootSource = fn(&Root) -> Result<Vec<Digest>>;

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also drop what only `extra_roots` keep (e.g. the layer cache):
    /// afterwards only named images' content remains.
    pub all: bool,
    /// Roots besides named images (ignored with `all`).
    pub extra_roots: Vec<RootSource>,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
}

/// What collection removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Each removed blob and its size.
    pub removed: Vec<(Digest, u64)>,
    /// Total bytes freed.
    pub freed: u64,
    /// Blobs kept.
    pub kept: usize,
}

/// Every blob some named image reaches.
pub fn image_roots(root: &Root) -> Result<BTreeSet<Digest>> {
    let mut live = BTreeSet::new();
    for (_, d) in root.images().list()? {
        for c in image::closure(root.blobs(), &d)? {
            if let Ok(dg) = image::digest_of(&c) {
                live.insert(dg);
            }
        }
    }
    Ok(live)
}

/// Removes every blob not reachable from a root; see [`PruneOptions`].
pub fn prune(root: &Root, opts: &PruneOptions) -> Result<PruneReport> {
    let _gc = root.gc_lock()?;
    clean_temp(&root.tmp_dir())?;
    let mut live = image_roots(root)?;
    if !opts.all {
        for source in &opts.extra_roots {
            live.extend(source(root)?);
        }
    }
    let mut report = PruneReport::default();
    for d in root.blobs().list()? {
        if live.contains(&d) {
            report.kept += 1;
            continue;
        }
        let size = root.blobs().size(&d).unwrap_or(0);
        if opts.dry_run || root.blobs().remove(&d)? {
            report.freed += size;
            report.removed.push((d, size));
        }
    }
    if !opts.dry_run {
        // Compressed layers made for a push or an export are named by no
        // image, so they go like any other unreferenced blob; their memo
        // entries go with them (the next push compresses again).
        compress::forget_missing(root)?;
    }
    Ok(report)
}

/// Deletes the blobs of one image that no named image (and no extra root)
/// still uses: what `rmi` frees once an image's last name is gone.
pub fn remove_image_content(
    root: &Root,
    target: &oci_spec::image::Descriptor,
    extra_roots: &[RootSource],
) -> Result<PruneReport> {
    let _gc = root.gc_lock()?;
    let mut live = image_roots(root)?;
    for source in extra_roots {
        live.extend(source(root)?);
    }
    let mut report = PruneReport::default();
    for c in image::closure(root.blobs(), target)? {
        let Ok(d) = image::digest_of(&c) else {
            continue;
        };
        if live.contains(&d) {
            report.kept += 1;
            continue;
        }
        let size = root.blobs().size(&d).unwrap_or(0);
        if root.blobs().remove(&d)? {
            report.freed += size;
            report.removed.push((d, size));
        }
    }
    Ok(report)
}
