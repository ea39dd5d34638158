//! `kiln save`: writing images as an OCI archive or a docker-archive.
//!
//! Both flavours are one tar holding an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), which is what skopeo and umoci read and
//! what docker 25+ itself writes. The docker flavour adds docker's
//! `manifest.json` (Config / RepoTags / Layers per platform) so that
//! `docker load`, old and new, accepts it; docker inflates gzip layers
//! itself, so blobs are written as stored and every digest stays valid.
//! Blobs stream from the store into the tar; nothing is held in memory.
//!
//! [`save_compressed`] and [`save_compressed_to_file`] first convert the
//! images' plain layers (gzip unless told otherwise, as docker and
//! BuildKit export them; see [`crate::compress`]); [`save`] writes what is
//! stored as it is.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use crate::compress::{self, Conversion};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, Platform};
use crate::media;
use crate::reference::Reference;
use crate::root::Root;

/// Archive flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `docker load`'s input (an OCI layout plus docker's manifest.json).
    #[default]
    Docker,
    /// A tar of an OCI image layout.
    Oci,
}

/// What to save.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Archive flavour.
    pub format: Format,
}

/// One image to save: its name (none when named by ID) and descriptor.
pub type SaveItem = (Option<Reference>, Descriptor);

/// Writes the images as a tar stream to `out`.
pub fn save(
    root: &Root,
    images: &[SaveItem],
    out: &mut dyn Write,
    opts: &SaveOptions,
) -> Result<()> {
    let blobs = root.blobs();
    // Collect the blobs to carry, refusing images whose content is not all
    // here (an index may miss platforms never pulled: that is allowed).
    let mut digests: Vec<Digest> = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, d) in images {
        let shown = name
            .as_ref()
            .map_or_else(|| d.digest().to_string(), |n| n.familiar());
        let manifests = image::platform_manifests(blobs, d)?;
        let mut required = BTreeSet::new();
        for m in &manifests {
            let r = image::resolve_manifest(blobs, m)?;
            required.insert(r.config_digest.clone());
            for l in r.manifest.layers() {
                required.insert(image::digest_of(l)?);
            }
        }
        for c in image::closure(blobs, d)? {
            let dg = image::digest_of(&c)?;
            if !blobs.has(&dg) {
                if required.contains(&dg) || image::digest_of(d)? == dg {
                    return Err(Error::InvalidImage {
                        what: shown.clone(),
                        detail: format!("blob {dg} is missing from the store"),
                    });
                }
                continue;
            }
            if seen.insert(dg.clone()) {
                digests.push(dg);
            }
        }
    }

    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    for (name, d) in images {
        let mut entry = serde_json::to_value(d).map_err(|e| Error::json("descriptor", e))?;
        if let (Some(n), Some(obj)) = (name, entry.as_object_mut()) {
            let mut ann = obj
                .get("annotations")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let full = n.to_string();
            ann.insert(media::ANNOTATION_CONTAINERD_NAME.into(), json!(full));
            if let Some(t) = n.tag() {
                ann.insert(media::ANNOTATION_REF_NAME.into(), json!(t));
            }
            obj.insert("annotations".into(), Value::Object(ann));
        }
        index_entries.push(entry);
        if opts.format == Format::Docker {
            docker_entries.extend(docker_manifest_entries(root, name.as_ref(), d)?);
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    });

    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let layout = json!({ "imageLayoutVersion": media::OCI_LAYOUT_VERSION });
    append_bytes(&mut tar, "oci-layout", &to_bytes(&layout)?)?;
    append_bytes(&mut tar, "index.json", &to_bytes(&index)?)?;
    if opts.format == Format::Docker {
        append_bytes(
            &mut tar,
            "manifest.json",
            &to_bytes(&Value::Array(docker_entries))?,
        )?;
    }
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    for dg in &digests {
        let mut f = blobs.open(dg)?;
        let size = f
            .metadata()
            .map_err(|e| Error::io(blobs.path(dg), e))?
            .len();
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        let path = format!("blobs/sha256/{}", dg.hex());
        tar.append_data(&mut h, &path, &mut f)
            .map_err(|e| Error::io(&path, e))?;
    }
    tar.into_inner()
        .and_then(|w| w.flush())
        .map_err(|e| Error::io("<archive>", e))?;
    Ok(())
}

/// The images with their layers converted as `conv` says (names kept);
/// the caller holds a [`Root::lease`] until the archive is written, so
/// garbage collection leaves the converted blobs alone.
pub fn compress_items(
    root: &Root,
    images: &[SaveItem],
    conv: &Conversion,
) -> Result<Vec<SaveItem>> {
    images
        .iter()
        .map(|(name, d)| Ok((name.clone(), compress::convert(root, d, conv)?.descriptor)))
        .collect()
}

/// [`save`] with the layers converted as `conv` says first.
pub fn save_compressed(
    root: &Root,
    images: &[SaveItem],
    out: &mut dyn Write,
    opts: &SaveOptions,
    conv: &Conversion,
) -> Result<()> {
    let _lease = root.lease()?;
    let items = compress_items(root, images, conv)?;
    save(root, &items, out, opts)
}

/// [`save_to_file`] with the layers converted as `conv` says first.
pub fn save_compressed_to_file(
    root: &Root,
    images: &[SaveItem],
    path: &Path,
    opts: &SaveOptions,
    conv: &Conversion,
) -> Result<()> {
    let _lease = root.lease()?;
    let items = compress_items(root, images, conv)?;
    save_to_file(root, &items, path, opts)
}

/// Saves to a file, atomically: a partial archive never carries the
/// final name.
pub fn save_to_file(
    root: &Root,
    images: &[SaveItem],
    path: &Path,
    opts: &SaveOptions,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = path
        .file_name()
        .map_or_else(|| "archive".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{base}.kiln-{}.tmp", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let mut w = io::BufWriter::with_capacity(1024 * 1024, file);
        save(root, images, &mut w, opts)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// docker's manifest.json entries for one image: one per platform, the
/// name on the host's platform (else the first) only, since `docker
/// load` would otherwise give every platform the same tag in turn.
fn docker_manifest_entries(
    root: &Root,
    name: Option<&Reference>,
    d: &Descriptor,
) -> Result<Vec<Value>> {
    let blobs = root.blobs();
    let manifests = image::platform_manifests(blobs, d)?;
    let host = Platform::host();
    let mut resolved = Vec::new();
    for m in &manifests {
        resolved.push(image::resolve_manifest(blobs, m)?);
    }
    let tagged = resolved
        .iter()
        .position(|r| host.matches(&r.platform()))
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, r) in resolved.iter().enumerate() {
        let layers: Vec<String> = r
            .manifest
            .layers()
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.digest().digest()))
            .collect();
        let tags = match name {
            Some(n) if i == tagged && n.tag().is_some() => json!([n.familiar_tagged()]),
            _ => Value::Null,
        };
        out.push(json!({
            "Config": format!("blobs/sha256/{}", r.config_digest.hex()),
            "RepoTags": tags,
            "Layers": layers,
        }));
    }
    Ok(out)
}

fn to_bytes(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::json("archive metadata", e))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .map_err(|e| Error::io(path, e))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, path, io::empty())
        .map_err(|e| Error::io(path, e))
}
