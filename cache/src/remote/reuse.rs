//! Naming, in a cache export, a compressed blob kiln already knows for a
//! plain layer instead of compressing the layer again.
//!
//! kiln stores the layers it builds, and the layers it imports from a
//! cache, as plain tars (blob digest == diff_id, for image-ID parity); an
//! export sends them compressed, and compressing is the costly part of it
//! (~3 s of gzip for a 64 MiB layer). A CI runner that imported the cache
//! already has, or knows where to find, the compressed blob of every layer
//! it imported: the one it decompressed. BuildKit never recompresses a blob
//! it has compressed (it keeps the compressed blob and its descriptor with
//! the layer); neither does kiln. For each plain layer of the export and
//! the destination's compression, in order:
//!
//! - kiln's own compression memo ([`crate::compress`]: the layer was
//!   compressed by an earlier export or push of this store, and the blob is
//!   still here): [`convert`] finds it by itself;
//! - the blob an import offers for the layer's diff_id, compressed the same
//!   way: named as it is when it is in the local store (checked to
//!   decompress to the diff_id first, unless the import checked it when it
//!   decompressed it), or when the destination already holds it (a HEAD, a
//!   file, an object), so nothing is sent and nothing downloaded;
//! - else the layer is compressed, as before, and remembered in the memo.
//!
//! Only the cache manifest's layer list changes: the records keep the plain
//! layers, and the config's `layers` maps each transferred blob to its
//! diff_id, so an import decompresses it back to the same plain blob and
//! image ID. Layers of a base image are stored as pulled (compressed) and
//! travel as they are anyway. Image pushes are not changed: their layers are
//! compressed by kiln, or reused from its memo, as before.

use std::collections::{HashMap, HashSet};

use oci_spec::image::Descriptor;

use super::manifest::Blob;
use super::{Error, Imported, Records};
use crate::compress::{self, Compression, Conversion};
use crate::{media, Digest, Reference, Root};

/// A compressed blob an import offers for a plain layer of the export.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// The plain layer's diff_id (its stored digest).
    pub diff_id: Digest,
    /// The compressed blob, with the OCI media type of its compression.
    pub blob: Blob,
    /// Whether the blob is in the local store (and checked).
    pub local: bool,
    /// The registry reference of the imported cache that holds the blob,
    /// when it came from a registry (a mount source).
    pub source: Option<Reference>,
}

/// diff_id of a plain layer → the compressed blob the cache manifest names
/// for it.
pub(crate) type Reuse = HashMap<Digest, Blob>;

/// The blobs the import offers for the plain layers of `records`, for a
/// destination that wants `compression`: local ones checked to decompress
/// to their diff_id (one that does not is left out, with a warning through
/// the import), others to be confirmed at the destination. Layers kiln's
/// memo already has a blob for are left to [`convert`].
pub(crate) fn candidates(
    root: &Root,
    records: &Records,
    compression: Compression,
    imported: Option<&Imported>,
) -> Vec<Candidate> {
    let Some(imp) = imported else {
        return Vec::new();
    };
    if compression == Compression::None {
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for l in records.values().flatten() {
        if l.digest != l.diff_id || !seen.insert(l.diff_id.clone()) {
            continue;
        }
        if compress::remembered(root, &l.diff_id, compression).is_some() {
            continue;
        }
        let Some(blob) = imp.compressed_blob(&l.diff_id, compression) else {
            continue;
        };
        let local = root.blobs().has(&blob.digest);
        if local && !imp.is_verified(&blob.digest, &l.diff_id) {
            match super::import::diff_id_of(root, &blob.digest, &blob.media_type) {
                Ok(d) if d == l.diff_id => imp.mark_verified(&blob.digest, &l.diff_id),
                Ok(d) => {
                    imp.warn(format!(
                        "cached layer {} unpacks to {d}, not {}: compressing the layer instead",
                        blob.digest, l.diff_id
                    ));
                    continue;
                }
                Err(e) => {
                    imp.warn(format!(
                        "cached layer {} not reused: {e}: compressing the layer instead",
                        blob.digest
                    ));
                    continue;
                }
            }
        }
        let media_type = match compression {
            Compression::Zstd => media::OCI_LAYER_ZSTD,
            _ => media::OCI_LAYER_GZIP,
        };
        out.push(Candidate {
            diff_id: l.diff_id.clone(),
            blob: Blob {
                media_type: media_type.to_string(),
                ..blob
            },
            local,
            source: imp.registry_source(&l.diff_id).cloned(),
        });
    }
    out
}

/// The candidates an export names: the local ones, and the others whose
/// digest is in `present` (the destination holds them).
pub(crate) fn choose(candidates: Vec<Candidate>, present: &HashSet<Digest>) -> Reuse {
    candidates
        .into_iter()
        .filter(|c| c.local || present.contains(&c.blob.digest))
        .map(|c| (c.diff_id, c.blob))
        .collect()
}

/// What [`convert`] did.
pub(crate) struct Converted {
    /// The cache manifest as it travels: every plain layer compressed.
    pub descriptor: Descriptor,
    /// Layers compressed now.
    pub compressed: usize,
    /// Layers whose compressed blob kiln's memo had.
    pub reused: usize,
}

/// Compresses the plain layers of the cache manifest `desc` as
/// `compression` says (kiln's memo reused, blobs already compressed kept).
/// Hold a [`Root::lease`] until the result is sent.
pub(crate) fn convert(
    root: &Root,
    desc: &Descriptor,
    compression: Compression,
) -> Result<Converted, Error> {
    let c = compress::convert(root, desc, &Conversion::to(compression))
        .map_err(|e| Error::from(e).context("compressing the cache's layers"))?;
    let reused = c.layers.iter().filter(|l| l.reused).count();
    Ok(Converted {
        descriptor: c.descriptor,
        compressed: c.layers.len() - reused,
        reused,
    })
}
