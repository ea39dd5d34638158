//! A cache in a folder (`type=local`): an OCI image layout, as BuildKit's
//! local cache writes it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use super::manifest::{config_desc, read_records, Layers};
use super::{Error, Records};
use crate::{media, Digest, Root};

/// BuildKit's local cache names its manifest so in `index.json`.
const LOCAL_TAG: &str = "latest";

/// Where the layout in `dir` keeps the blob `d`.
pub(crate) fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Reads a verified blob of an OCI layout.
fn read_blob(dir: &Path, d: &Digest) -> Result<Vec<u8>, Error> {
    let path = blob_path(dir, d);
    let bytes = fs::read(&path).map_err(Error::io("reading", &path))?;
    if Digest::of(&bytes) != *d {
        return Err(Error::Corrupt(path));
    }
    Ok(bytes)
}

/// The records and layers of the cache in `dir`.
pub(crate) fn read(dir: &Path) -> Result<(Records, Layers), Error> {
    let index_path = dir.join("index.json");
    let index: Value =
        serde_json::from_slice(&fs::read(&index_path).map_err(Error::io("reading", &index_path))?)
            .map_err(|e| Error::Format(format!("{}: {e}", index_path.display())))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][media::ANNOTATION_REF_NAME].as_str() == Some(LOCAL_TAG))
        .or(entries.first())
        .ok_or_else(|| Error::Format(format!("{} lists no manifest", index_path.display())))?;
    let md: Digest = entry["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Format(format!("{}: bad manifest digest", index_path.display())))?;
    let doc: Value = serde_json::from_slice(&read_blob(dir, &md)?)
        .map_err(|e| Error::Format(format!("manifest {md}: {e}")))?;
    let (cd, _, mt) = config_desc(&doc)?;
    let config = read_blob(dir, &cd)?;
    read_records(&doc, &mt, &config)
}

/// Whether the layout in `dir` holds the blob `d` of `size` bytes.
pub(crate) fn has_blob(dir: &Path, d: &Digest, size: u64) -> bool {
    fs::metadata(blob_path(dir, d)).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Writes the cache manifest `desc` (its layers compressed as they travel)
/// as an OCI layout in `dest`: blobs first (each renamed into place when
/// complete), then `index.json` replaced atomically, so a crash leaves
/// either the old index or the new one, never half of one. Returns how many
/// blobs were written (those already there are kept; a blob the layout has
/// need not be in the local store).
pub(crate) fn write(root: &Root, desc: &Descriptor, dest: &Path) -> Result<usize, Error> {
    let md: Digest = desc.digest().to_string().parse()?;
    let manifest_bytes = root.blobs().read(&md)?;
    let doc: Value =
        serde_json::from_slice(&manifest_bytes).map_err(|e| Error::Format(e.to_string()))?;
    let mut wanted: Vec<Digest> = Vec::new();
    for d in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten()) {
        let d: Digest = d["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Format(format!("cache manifest {md}: bad blob digest")))?;
        wanted.push(d);
    }
    wanted.push(md.clone());
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| {
        Error::io("creating", &blob_dir)(e).context(format!("creating {}", blob_dir.display()))
    })?;
    let mut written = 0;
    for d in &wanted {
        let path = blob_path(dest, d);
        if !root.blobs().has(d) && path.is_file() {
            // Named because the layout has it (see `reuse`).
            continue;
        }
        let size = root.blobs().size(d)?;
        if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            continue;
        }
        let mut src = root.blobs().open(d)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&blob_dir)
            .map_err(Error::io("creating in", &blob_dir))?;
        std::io::copy(&mut src, &mut tmp).map_err(|e| {
            Error::io("writing", &blob_dir)(e)
                .context(format!("writing blob {d} to {}", blob_dir.display()))
        })?;
        tmp.as_file()
            .sync_all()
            .map_err(Error::io("syncing", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| Error::io("writing", &path)(e.error))?;
        written += 1;
    }
    write_atomic(
        dest,
        "oci-layout",
        json!({"imageLayoutVersion": media::OCI_LAYOUT_VERSION})
            .to_string()
            .as_bytes(),
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": md.to_string(),
            "size": manifest_bytes.len(),
            "annotations": {media::ANNOTATION_REF_NAME: LOCAL_TAG},
        }],
    });
    write_atomic(dest, "index.json", index.to_string().as_bytes())?;
    Ok(written)
}

/// Replaces `dir/name` with `bytes` by rename of a synced temp file.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io("creating in", dir))?;
    tmp.write_all(bytes)
        .map_err(Error::io("writing", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("syncing", tmp.path()))?;
    let path = dir.join(name);
    tmp.persist(&path)
        .map_err(|e| Error::io("writing", &path)(e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        // Best effort: the rename is atomic either way.
        let _ = d.sync_all();
    }
    Ok(())
}
