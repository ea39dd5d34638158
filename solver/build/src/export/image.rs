//! `type=image`: the result assembled as an OCI image in the store and
//! named there.
//!
//! The config is assembled as BuildKit's image exporter does: the base
//! image's config document is the starting point (so fields kiln does not
//! model, like `os.version`, survive), the stage's `config` object replaces
//! the base's, the history is the base's followed by the Dockerfile's with
//! creation times, and `rootfs.diff_ids` are exactly the layers of the
//! result. The image ID is the config's digest, as docker's IMAGE ID.

use std::path::{Path, PathBuf};

use kiln_cache::layer::oci_layer_type;
use kiln_cache::{media, Digest, Reference, Root};
use oci_spec::image::Descriptor;
use serde_json::{json, Map, Value};

use super::{Built, ExportError};

/// An image written to the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest, with its platform.
    pub manifest: Descriptor,
    /// The config blob's digest: docker's image ID.
    pub config: Digest,
}

/// The image config document for `b`.
pub fn config_document(b: &Built, created: &str) -> Value {
    let mut doc: Map<String, Value> = b
        .meta
        .base
        .as_ref()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    // Fields of docker's legacy builder that describe the base's build, not
    // this one.
    for k in [
        "container",
        "container_config",
        "docker_version",
        "id",
        "parent",
    ] {
        doc.remove(k);
    }
    doc.insert("architecture".into(), json!(b.platform.architecture));
    doc.insert("os".into(), json!(b.platform.os));
    match &b.platform.variant {
        Some(v) => {
            doc.insert("variant".into(), json!(v));
        }
        None => {
            doc.remove("variant");
        }
    }
    doc.insert("config".into(), b.meta.config.clone());
    doc.insert("created".into(), json!(created));
    if let Some(a) = &b.meta.author {
        doc.insert("author".into(), json!(a));
    }
    let mut history: Vec<Value> = doc
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for h in &b.meta.history {
        let mut e = Map::new();
        e.insert("created".into(), json!(created));
        e.insert("created_by".into(), json!(h.created_by));
        e.insert("comment".into(), json!(h.comment));
        if h.empty_layer {
            e.insert("empty_layer".into(), json!(true));
        }
        history.push(Value::Object(e));
    }
    doc.insert("history".into(), Value::Array(history));
    let diff_ids: Vec<&Digest> = b.layers.iter().map(|l| &l.diff_id).collect();
    doc.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    Value::Object(doc)
}

fn to_bytes(v: &Value) -> Result<Vec<u8>, ExportError> {
    serde_json::to_vec(v).map_err(|e| ExportError::Invalid(e.to_string()))
}

fn digest_str(d: &Digest) -> String {
    format!("{}:{}", d.algorithm(), d.hex())
}

fn parse_descriptor(v: Value) -> Result<Descriptor, ExportError> {
    serde_json::from_value(v).map_err(|e| ExportError::context("building a descriptor")(e.into()))
}

/// Writes the config and manifest of one platform's image into the store.
/// The layer blobs must already be there (the worker wrote them).
pub fn assemble(root: &Root, b: &Built, created: &str) -> Result<Image, ExportError> {
    let blobs = root.blobs();
    for l in &b.layers {
        if !blobs.has(&l.digest) {
            return Err(ExportError::Invalid(format!(
                "layer blob {} is missing from the store",
                l.digest
            )));
        }
    }
    let config = to_bytes(&config_document(b, created))?;
    let config_digest = blobs.put(&config)?;
    let layers: Vec<Value> = b
        .layers
        .iter()
        .map(|l| json!({"mediaType": oci_layer_type(&l.media_type), "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": digest_str(&config_digest), "size": config.len()},
        "layers": layers,
    });
    let bytes = to_bytes(&manifest)?;
    let digest = blobs.put(&bytes)?;
    let mut platform = json!({"os": b.platform.os, "architecture": b.platform.architecture});
    if let Some(v) = &b.platform.variant {
        platform["variant"] = json!(v);
    }
    let manifest = parse_descriptor(json!({
        "mediaType": media::OCI_MANIFEST,
        "digest": digest_str(&digest),
        "size": bytes.len(),
        "platform": platform,
    }))?;
    Ok(Image {
        manifest,
        config: config_digest,
    })
}

/// Where the export of a result is remembered: keyed by everything the
/// config and manifest are made of except the time.
fn reuse_record(root: &Root, b: &Built, epoch: Option<i64>) -> Result<PathBuf, ExportError> {
    let what = json!({
        "platform": b.platform,
        "layers": b.layers,
        "meta": b.meta,
        "epoch": epoch,
    });
    let key = Digest::of(&to_bytes(&what)?);
    Ok(root.exports_dir().join(format!("{}.json", key.hex())))
}

/// [`assemble`], except that a fully cached rebuild of a result exported
/// before gets that export back, as BuildKit's no-op rebuild keeps the
/// image ID: nothing is written, and the `created` times stay those of the
/// build that made the layers. The record is only a hint: its blobs are
/// checked, and anything missing or unreadable means a fresh export.
/// `epoch` (`SOURCE_DATE_EPOCH`) is part of what is remembered: a rebuild
/// with another epoch is another image.
pub fn assemble_reusing(
    root: &Root,
    b: &Built,
    created: &str,
    epoch: Option<i64>,
) -> Result<Image, ExportError> {
    let record = reuse_record(root, b, epoch)?;
    if b.all_cached {
        if let Some(image) = read_reuse_record(root, &record) {
            return Ok(image);
        }
    }
    let image = assemble(root, b, created)?;
    // Best effort: without the record the next no-op only exports afresh.
    let _ = write_reuse_record(&record, &image);
    Ok(image)
}

fn read_reuse_record(root: &Root, path: &Path) -> Option<Image> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let manifest: Descriptor = serde_json::from_value(v.get("manifest")?.clone()).ok()?;
    let config: Digest = v.get("config")?.as_str()?.parse().ok()?;
    let blobs = root.blobs();
    let manifest_digest: Digest = manifest.digest().to_string().parse().ok()?;
    (blobs.has(&manifest_digest) && blobs.has(&config)).then_some(Image { manifest, config })
}

fn write_reuse_record(path: &Path, image: &Image) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let doc = json!({"manifest": image.manifest, "config": digest_str(&image.config)});
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, doc.to_string().as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// An OCI index over several platforms' manifests (`--platform a,b`).
pub fn index(root: &Root, images: &[Image]) -> Result<Descriptor, ExportError> {
    let manifests: Vec<Descriptor> = images.iter().map(|i| i.manifest.clone()).collect();
    index_of(root, &manifests)
}

/// Writes an OCI index over `manifests` (in that order) and returns its
/// descriptor: the one routine that makes a build's index, whether it
/// holds only the platform images or also their attestation manifests
/// ([`crate::attest::manifests`]), so index annotations
/// ([`crate::annotations::index`]) apply alike to both.
pub fn index_of(root: &Root, manifests: &[Descriptor]) -> Result<Descriptor, ExportError> {
    let manifests: Vec<Value> = manifests
        .iter()
        .map(|d| serde_json::to_value(d).map_err(|e| ExportError::Invalid(e.to_string())))
        .collect::<Result<_, _>>()?;
    let doc = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let bytes = to_bytes(&doc)?;
    let digest = root.blobs().put(&bytes)?;
    parse_descriptor(json!({
        "mediaType": media::OCI_INDEX,
        "digest": digest_str(&digest),
        "size": bytes.len(),
    }))
}

/// Names `top` in the image store under every tag; without tags it is
/// kept as a `<none>` image (as docker keeps an untagged build), and an
/// image a tag moves away from stays as `<none>` ([`kiln_cache::untagged`]).
pub fn name(root: &Root, top: &Descriptor, tags: &[Reference]) -> Result<(), ExportError> {
    let entries: Vec<(Reference, Descriptor)> =
        tags.iter().map(|t| (t.clone(), top.clone())).collect();
    kiln_cache::untagged::name(root, &entries, tags.is_empty().then_some(top))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::LayerRef;
    use kiln_frontend::lower::ImageMeta;
    use kiln_frontend::plan::Platform;

    #[test]
    fn config_keeps_the_base_and_follows_the_stage() {
        use kiln_frontend::plan::HistoryEntry;
        let (aa, bb) = (Digest::of(b"aa"), Digest::of(b"bb"));
        let base = json!({
            "architecture": "amd64", "os": "linux", "os.version": "x",
            "container_config": {"Cmd": ["old"]},
            "config": {"Cmd": ["sh"]},
            "history": [{"created": "2022-01-01T00:00:00Z", "created_by": "ADD rootfs"}],
            "rootfs": {"type": "layers", "diff_ids": [aa.to_string()]},
        });
        let b = Built {
            platform: Platform::host(),
            layers: vec![
                LayerRef {
                    diff_id: aa.clone(),
                    digest: Digest::of(b"a1"),
                    size: 1,
                    media_type: media::DOCKER_LAYER_GZIP.into(),
                },
                LayerRef {
                    diff_id: bb.clone(),
                    digest: Digest::of(b"b1"),
                    size: 2,
                    media_type: media::OCI_LAYER_GZIP.into(),
                },
            ],
            all_cached: false,
            meta: ImageMeta {
                config: json!({"Cmd": ["run"], "Env": ["A=b"]}),
                history: vec![
                    HistoryEntry {
                        created_by: "RUN /bin/sh -c true # buildkit".into(),
                        empty_layer: false,
                        comment: "buildkit.dockerfile.v0".into(),
                    },
                    HistoryEntry {
                        created_by: "ENV A=b".into(),
                        empty_layer: true,
                        comment: "buildkit.dockerfile.v0".into(),
                    },
                ],
                base: Some(base),
                author: None,
            },
        };
        let doc = config_document(&b, "2026-01-01T00:00:00Z");
        assert_eq!(doc["config"], json!({"Cmd": ["run"], "Env": ["A=b"]}));
        assert_eq!(doc["os.version"], "x", "fields kiln does not model survive");
        assert!(doc.get("container_config").is_none());
        assert_eq!(
            doc["rootfs"]["diff_ids"],
            json!([aa.to_string(), bb.to_string()])
        );
        let h = doc["history"].as_array().cloned().unwrap_or_default();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0]["created_by"], "ADD rootfs");
        assert_eq!(h[1]["created_by"], "RUN /bin/sh -c true # buildkit");
        assert!(h[1].get("empty_layer").is_none());
        assert_eq!(h[2]["empty_layer"], true);
        assert_eq!(h[2]["created"], "2026-01-01T00:00:00Z");
        assert_eq!(
            oci_layer_type(&b.layers[0].media_type),
            media::OCI_LAYER_GZIP
        );
    }
}
