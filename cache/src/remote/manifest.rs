//! The cache's documents: the config blob of a cache manifest, the inline
//! form in an image config, and the manifest that carries them.

use std::collections::{BTreeMap, HashSet};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::reuse::Reuse;
use super::{Error, LayerRef, Records};
use crate::layer::oci_layer_type;
use crate::{media, Digest, Root};

/// The media type of a kiln cache manifest's config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// The image config key of inline cache records (BuildKit's is
/// `moby.buildkit.cache.v0`).
pub const INLINE_KEY: &str = "kiln.cache.v1";

/// The format version written; imports refuse others.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The config blob of a cache manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    /// Cache key (hex) → the snapshot's layers, lowest first.
    records: BTreeMap<String, Vec<LayerRef>>,
    /// The diff_id of each of the manifest's layers, in its order.
    #[serde(default)]
    layers: Vec<Digest>,
}

/// The inline form, under [`INLINE_KEY`] in an image config: the layers
/// are the image's own (`rootfs.diff_ids` beside the manifest's layers).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InlineCache {
    version: u32,
    records: BTreeMap<String, Vec<LayerRef>>,
}

/// The inline cache value for an image config.
pub(crate) fn inline_value(records: Records) -> Value {
    json!(InlineCache {
        version: FORMAT_VERSION,
        records,
    })
}

/// A layer blob a cache offers: digest, size, media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// diff_id → the blob of the source that holds it.
pub(crate) type Layers = Vec<(Digest, Blob)>;

fn format(message: String) -> Error {
    Error::Format(message)
}

/// Whether `k` is a cache key as kiln spells them (64 hex digits); the
/// lower-case spelling is returned.
fn key_hex(k: &str) -> Option<String> {
    (k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())).then(|| k.to_ascii_lowercase())
}

/// Records and layers out of a manifest and its config: a kiln cache
/// config, or an image config with inline records.
pub(crate) fn read_records(
    manifest: &Value,
    config_mt: &str,
    config: &[u8],
) -> Result<(Records, Layers), Error> {
    let descs: Vec<Blob> = manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let digest: Digest = l["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format("a layer of the manifest has no valid digest".into()))?;
            Ok(Blob {
                digest,
                size: l["size"].as_u64().unwrap_or(0),
                media_type: l["mediaType"]
                    .as_str()
                    .unwrap_or(media::OCI_LAYER)
                    .to_string(),
            })
        })
        .collect::<Result<_, Error>>()?;
    let (records, diff_ids) = if config_mt == CONFIG_MEDIA_TYPE {
        let c: CacheConfig = serde_json::from_slice(config)
            .map_err(|e| format(format!("invalid cache config: {e}")))?;
        if c.version != FORMAT_VERSION {
            return Err(format(format!(
                "cache format version {} is not supported",
                c.version
            )));
        }
        (c.records, c.layers)
    } else {
        let v: Value = serde_json::from_slice(config)
            .map_err(|e| format(format!("invalid image config: {e}")))?;
        let Some(inline) = v.get(INLINE_KEY) else {
            return Err(format(
                "neither a kiln cache manifest nor an image with an inline kiln cache".into(),
            ));
        };
        let c: InlineCache = serde_json::from_value(inline.clone())
            .map_err(|e| format(format!("invalid inline cache: {e}")))?;
        if c.version != FORMAT_VERSION {
            return Err(format(format!(
                "cache format version {} is not supported",
                c.version
            )));
        }
        let ids = v["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        (c.records, ids)
    };
    if diff_ids.len() != descs.len() {
        return Err(format(format!(
            "{} layers but {} diff_ids in the cache",
            descs.len(),
            diff_ids.len()
        )));
    }
    let records = records
        .into_iter()
        .filter_map(|(k, v)| {
            if super::mounts::is_mount_key(&k) {
                return Some((k, v));
            }
            key_hex(&k).map(|k| (k, v))
        })
        .collect();
    Ok((records, diff_ids.into_iter().zip(descs).collect()))
}

/// The config descriptor of a manifest: digest, size, media type.
pub(crate) fn config_desc(doc: &Value) -> Result<(Digest, u64, String), Error> {
    let c = &doc["config"];
    let d: Digest = c["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format("the manifest has no config".into()))?;
    Ok((
        d,
        c["size"].as_u64().unwrap_or(0),
        c["mediaType"].as_str().unwrap_or("").to_string(),
    ))
}

/// Writes the cache manifest for `records` into the store: config, then
/// manifest (layers: each distinct blob once, as stored, or the compressed
/// blob `reuse` names for a plain layer; the records keep the plain
/// layer). Returns its descriptor and how many layers it names.
pub(crate) fn write_manifest(
    root: &Root,
    records: Records,
    reuse: &Reuse,
) -> Result<(Descriptor, usize), Error> {
    let mut seen = HashSet::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in records.values().flatten() {
        if seen.insert(l.diff_id.clone()) {
            diff_ids.push(l.diff_id.clone());
            if let Some(b) = reuse.get(&l.diff_id).filter(|_| l.digest == l.diff_id) {
                layers.push(json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size}));
                continue;
            }
            let mt = match l.media_type.as_str() {
                media::DOCKER_LAYER_GZIP | media::DOCKER_LAYER => oci_layer_type(&l.media_type),
                other => other,
            };
            layers.push(json!({"mediaType": mt, "digest": l.digest, "size": l.size}));
        }
    }
    let config = CacheConfig {
        version: FORMAT_VERSION,
        records,
        layers: diff_ids,
    };
    let config_bytes = serde_json::to_vec(&config).map_err(|e| format(e.to_string()))?;
    let config_digest = root.blobs().put(&config_bytes)?;
    let n = layers.len();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| format(e.to_string()))?;
    let digest = root.blobs().put(&bytes)?;
    let desc: Descriptor = serde_json::from_value(json!({
        "mediaType": media::OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": bytes.len(),
    }))
    .map_err(|e| format(e.to_string()))?;
    Ok((desc, n))
}
