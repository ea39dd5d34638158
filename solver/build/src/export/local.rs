//! `type=local`: the image's root filesystem written into a folder, one
//! folder per platform when there are several.

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_cache::{media, LayerRef, Root};

use super::{Built, ExportError, FsOptions};

/// Opens a layer blob decompressed.
pub(super) fn layer_reader(root: &Root, l: &LayerRef) -> Result<Box<dyn Read>, ExportError> {
    let f = root.blobs().open(&l.digest)?;
    let mut f = std::io::BufReader::new(f);
    let head = {
        use std::io::BufRead;
        f.fill_buf()?.to_vec()
    };
    Ok(match media::sniff_compression(&head) {
        media::Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
        media::Compression::Zstd => Box::new(zstd::Decoder::new(f)?),
        media::Compression::None => Box::new(f),
    })
}

/// Applies the layers in order onto `dir`: the image's root filesystem.
pub fn write_rootfs(root: &Root, layers: &[LayerRef], dir: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ExportError::context(format!("creating {}", dir.display()))(e.into()))?;
    for l in layers {
        let r = layer_reader(root, l)?;
        kiln_worker::snapshot::apply_layer_merged(r, dir)
            .map_err(|e| ExportError::context(format!("applying layer {}", l.digest))(e.into()))?;
    }
    Ok(())
}

/// Where each platform's root filesystem goes inside a `type=local` folder
/// or `type=tar` archive: the top itself for one platform, else a folder
/// per platform named as BuildKit names them (`linux_amd64`,
/// `linux_arm_v7`).
fn platform_dirs(built: &[Built]) -> Vec<(PathBuf, &[LayerRef])> {
    match built {
        [one] => vec![(PathBuf::new(), one.layers.as_slice())],
        many => many
            .iter()
            .map(|b| {
                let name = b.platform.to_string().replace('/', "_");
                (PathBuf::from(name), b.layers.as_slice())
            })
            .collect(),
    }
}

/// Writes each platform's root filesystem under `dir`. With `epoch`
/// (`SOURCE_DATE_EPOCH`), every file written gets it as its times, as
/// BuildKit's local exporter does.
pub fn write(
    root: &Root,
    built: &[Built],
    dir: &Path,
    epoch: Option<i64>,
) -> Result<(), ExportError> {
    write_with(root, built, dir, epoch, &FsOptions::default(), &[])
}

/// [`write`], then each platform's `attestations` (in `built`'s order) as
/// statement files in its folder ([`crate::attest::files`]), named with
/// `opts.attestation_prefix`.
pub fn write_with(
    root: &Root,
    built: &[Built],
    dir: &Path,
    epoch: Option<i64>,
    opts: &FsOptions,
    attestations: &[Vec<crate::attest::Predicate>],
) -> Result<(), ExportError> {
    for (i, (sub, layers)) in platform_dirs(built).into_iter().enumerate() {
        let target = dir.join(sub);
        write_rootfs(root, layers, &target)?;
        if let Some(e) = epoch {
            let written = super::epoch::layer_paths(root, layers)?;
            super::epoch::set_tree_times(&target, e, Some(&written))?;
        }
        if let Some(preds) = attestations.get(i) {
            crate::attest::files::write(&target, &opts.attestation_prefix, preds, epoch)
                .map_err(|e| ExportError::context("writing the attestation files")(Box::new(e)))?;
        }
    }
    Ok(())
}
