//! `type=image` with options (`name=`, `push=true`, `compression=`,
//! `oci-mediatypes=`) and `type=registry` (`--push`): the built image,
//! converted as the options say, named in the store and sent to the
//! registry of each name with the same code as `kiln push`.
//!
//! The store's names point at exactly what was pushed, so `kiln inspect`'s
//! RepoDigests and the metadata file name a digest the registry has; the
//! config (and so the image ID) is never changed by a conversion.

use std::sync::Arc;

use kiln_cache::compress;
use kiln_cache::image::{digest_of, media_type};
use kiln_cache::registry::{self, NoProgress, PushOptions, RegistryConfig};
use kiln_cache::{media, Digest, Reference, Root};
use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use super::{image, ExportError, ImageSpec};

/// What [`export`] named and pushed.
#[derive(Debug, Clone)]
pub struct Named {
    /// The names now pointing at `descriptor` in the store.
    pub names: Vec<Reference>,
    /// The image as named (and pushed): the build's, converted.
    pub descriptor: Descriptor,
    /// Whether it went to the registry under every name.
    pub pushed: bool,
}

/// The names an [`ImageSpec`] uses: its own, else the `-t` tags; a push
/// without any is refused (before the build, by the caller too).
pub fn names(spec: &ImageSpec, tags: &[Reference]) -> Result<Vec<Reference>, ExportError> {
    let names = if spec.names.is_empty() {
        tags.to_vec()
    } else {
        spec.names.clone()
    };
    if spec.push && names.is_empty() {
        return Err(ExportError::Spec(
            "pushing needs an image name: give -t NAME or name=NAME in --output".into(),
        ));
    }
    Ok(names)
}

/// Converts `top` as `spec` says, names it and pushes it. The caller holds
/// the store's lease (the converted blobs have no name until the end).
pub fn export(
    root: &Root,
    rt: &tokio::runtime::Runtime,
    config: &RegistryConfig,
    spec: &ImageSpec,
    top: &Descriptor,
    tags: &[Reference],
) -> Result<Named, ExportError> {
    let names = names(spec, tags)?;
    let mut d = top.clone();
    if spec.push || spec.convert {
        d = compress::convert(root, &d, &spec.conversion)?.descriptor;
    }
    if !spec.oci_mediatypes {
        d = docker_media_types(root, &d, 0)?;
    }
    image::name(root, &d, &names)?;
    if spec.push {
        let opts = PushOptions {
            config: config.clone(),
            compression: spec.conversion,
            ..PushOptions::default()
        };
        for n in &names {
            let remote = rt
                .block_on(registry::push_descriptor(
                    root,
                    &d,
                    n,
                    n,
                    &opts,
                    Arc::new(NoProgress),
                ))
                .map_err(|e| ExportError::context(format!("pushing {n}"))(e.into()))?;
            if remote.digest() != d.digest() {
                return Err(ExportError::Invalid(format!(
                    "pushed {n} as {} but the store names {}",
                    remote.digest(),
                    d.digest()
                )));
            }
        }
    }
    Ok(Named {
        names,
        descriptor: d,
        pushed: spec.push,
    })
}

/// The docker media type for an OCI one (`oci-mediatypes=false`); zstd
/// layers have none, so an image with one keeps OCI types, as BuildKit
/// forces `oci-mediatypes` for zstd.
fn docker_type(mt: &str) -> Option<&'static str> {
    match mt {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Some(media::DOCKER_MANIFEST),
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => Some(media::DOCKER_MANIFEST_LIST),
        media::OCI_CONFIG | media::DOCKER_CONFIG => Some(media::DOCKER_CONFIG),
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Some(media::DOCKER_LAYER_GZIP),
        media::OCI_LAYER | media::DOCKER_LAYER => Some(media::DOCKER_LAYER),
        _ => None,
    }
}

/// Rewrites the manifests of `d` with docker's media types; the config
/// and layer blobs stay as they are (the image ID does not change).
fn docker_media_types(
    root: &Root,
    d: &Descriptor,
    depth: usize,
) -> Result<Descriptor, ExportError> {
    if depth > 2 {
        return Err(ExportError::Invalid("indexes nested too deep".into()));
    }
    let blobs = root.blobs();
    let digest = digest_of(d)?;
    let mut doc: Value = serde_json::from_slice(&blobs.read(&digest)?)
        .map_err(|e| ExportError::Invalid(format!("manifest {digest}: {e}")))?;
    let mt = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| media_type(d));
    let Some(new_mt) = docker_type(&mt) else {
        return Ok(d.clone());
    };
    if new_mt == media::DOCKER_MANIFEST_LIST {
        let children: Vec<Value> = doc
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(children.len());
        for c in children {
            let child: Descriptor = serde_json::from_value(c.clone())
                .map_err(|e| ExportError::Invalid(format!("index {digest}: {e}")))?;
            let conv = docker_media_types(root, &child, depth + 1)?;
            let mut c = c;
            c["mediaType"] = json!(media_type(&conv));
            c["digest"] = json!(conv.digest().to_string());
            c["size"] = json!(conv.size());
            out.push(c);
        }
        doc["manifests"] = Value::Array(out);
    } else {
        let layers: Vec<Value> = doc
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(layers.len());
        for mut l in layers {
            let lmt = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
            let Some(t) = docker_type(lmt) else {
                // A zstd layer: docker has no type for it.
                return Ok(d.clone());
            };
            l["mediaType"] = json!(t);
            out.push(l);
        }
        doc["layers"] = Value::Array(out);
        doc["config"]["mediaType"] = json!(media::DOCKER_CONFIG);
    }
    doc["mediaType"] = json!(new_mt);
    let bytes = serde_json::to_vec(&doc).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let new: Digest = blobs.put(&bytes)?;
    let mut v = serde_json::to_value(d).map_err(|e| ExportError::Invalid(e.to_string()))?;
    v["mediaType"] = json!(new_mt);
    v["digest"] = json!(new.to_string());
    v["size"] = json!(bytes.len());
    serde_json::from_value(v).map_err(|e| ExportError::Invalid(e.to_string()))
}
