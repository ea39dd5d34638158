//! `--annotation` and `--label`: what a build adds to the image beyond the
//! Dockerfile's own. Annotations go into the manifests, the index and
//! their descriptors, as BuildKit's image exporter puts them; labels into
//! the config of every platform's image, as the Dockerfile frontend's
//! `label:` attributes do.

use std::collections::BTreeMap;

use kiln_cache::{Digest, Root};
use kiln_frontend::plan::Platform;
use oci_spec::image::Descriptor;
use serde_json::Value;

use crate::export::{ExportError, Image};

/// Where an annotation goes (buildx's type prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Each platform's manifest (also what no prefix means).
    Manifest,
    /// The descriptor of each platform's manifest: in the index, or the
    /// top descriptor (an OCI layout's `index.json`) of a single-platform
    /// image.
    ManifestDescriptor,
    /// The index of a multi-platform image.
    Index,
    /// The descriptor of the index (an OCI layout's `index.json`).
    IndexDescriptor,
}

/// One `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub level: Level,
    /// `[PLATFORM]`: only that platform's manifest (or its descriptor).
    pub platform: Option<Platform>,
    pub key: String,
    pub value: String,
}

/// Why an `--annotation` is refused, in buildx's words.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("invalid annotation {0:?}, expected key=value")]
    NoValue(String),
    #[error(
        "invalid annotation type {0:?}, expected type and optional platform in square brackets"
    )]
    BadType(String),
    #[error("unknown annotation type {0:?}")]
    UnknownType(String),
    #[error("invalid platform {0:?}: {1}")]
    Platform(String, String),
}

/// Parses `--annotation` values as buildx's `ParseAnnotations`:
/// `KEY=VALUE`, or `TYPE[PLATFORM],…:KEY=VALUE`.
pub fn parse(raw: &[String]) -> Result<Vec<Annotation>, AnnotationError> {
    let mut out: Vec<Annotation> = Vec::new();
    let mut push = |a: Annotation| {
        // A later value for the same place and key wins, as in buildx's map.
        out.retain(|o| !(o.level == a.level && o.platform == a.platform && o.key == a.key));
        out.push(a);
    };
    for s in raw.iter().filter(|s| !s.is_empty()) {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| AnnotationError::NoValue(s.clone()))?;
        let Some((types, key)) = k.split_once(':') else {
            push(Annotation {
                level: Level::Manifest,
                platform: None,
                key: k.to_string(),
                value: v.to_string(),
            });
            continue;
        };
        for t in types.split(',') {
            let (typ, platform) = match t.split_once('[') {
                Some((typ, rest)) => {
                    let p = rest
                        .strip_suffix(']')
                        .filter(|p| {
                            !p.is_empty()
                                && p.chars().all(|c| {
                                    c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-')
                                })
                        })
                        .ok_or_else(|| AnnotationError::BadType(t.to_string()))?;
                    (typ, Some(p))
                }
                None => (t, None),
            };
            if typ.is_empty() || !typ.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                return Err(AnnotationError::BadType(t.to_string()));
            }
            let level = match typ {
                "manifest" => Level::Manifest,
                "manifest-descriptor" => Level::ManifestDescriptor,
                "index" => Level::Index,
                "index-descriptor" => Level::IndexDescriptor,
                other => return Err(AnnotationError::UnknownType(other.to_string())),
            };
            let platform = platform
                .map(|p| {
                    Platform::parse(p)
                        .map_err(|e| AnnotationError::Platform(p.to_string(), e.to_string()))
                })
                .transpose()?;
            push(Annotation {
                level,
                platform,
                key: key.to_string(),
                value: v.to_string(),
            });
        }
    }
    Ok(out)
}

/// Sets `labels` in an image config's `config` object (`Labels`), over
/// the Dockerfile's.
pub fn apply_labels(config: &mut Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    let entry = obj
        .entry("Labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    if let Some(map) = entry.as_object_mut() {
        for (k, v) in labels {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

fn for_level<'a>(
    all: &'a [Annotation],
    level: Level,
    platform: Option<&'a Platform>,
) -> impl Iterator<Item = &'a Annotation> + 'a {
    all.iter().filter(move |a| {
        a.level == level
            && match (&a.platform, platform) {
                (None, _) => true,
                (Some(want), Some(p)) => want == p,
                (Some(_), None) => false,
            }
    })
}

/// Merges `(key, value)`s into a JSON document's `annotations` object.
fn merge(doc: &mut Value, items: &[(&str, &str)]) {
    if items.is_empty() {
        return;
    }
    if let Some(obj) = doc.as_object_mut() {
        let entry = obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = entry.as_object_mut() {
            for (k, v) in items {
                map.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
}

fn platform_of(d: &Descriptor) -> Option<Platform> {
    let p = d.platform().as_ref()?;
    Some(Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone(),
    })
}

fn to_descriptor(v: Value) -> Result<Descriptor, ExportError> {
    serde_json::from_value(v).map_err(|e| ExportError::Invalid(format!("descriptor: {e}")))
}

/// Rewrites a blob (a manifest or an index) with `items` added to its
/// annotations; the descriptor follows the new digest and size.
fn rewrite_blob(
    root: &Root,
    desc: &Descriptor,
    items: &[(&str, &str)],
) -> Result<Descriptor, ExportError> {
    if items.is_empty() {
        return Ok(desc.clone());
    }
    let digest: Digest = desc
        .digest()
        .to_string()
        .parse()
        .map_err(|e| ExportError::Invalid(format!("digest: {e:?}")))?;
    let bytes = root.blobs().read(&digest)?;
    let mut doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| ExportError::Invalid(e.to_string()))?;
    merge(&mut doc, items);
    let bytes = serde_json::to_vec(&doc).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let digest = root.blobs().put(&bytes)?;
    let mut d = serde_json::to_value(desc).map_err(|e| ExportError::Invalid(e.to_string()))?;
    d["digest"] = Value::String(format!("{}:{}", digest.algorithm(), digest.hex()));
    d["size"] = Value::from(bytes.len());
    to_descriptor(d)
}

fn add_to_descriptor(desc: &Descriptor, items: &[(&str, &str)]) -> Result<Descriptor, ExportError> {
    if items.is_empty() {
        return Ok(desc.clone());
    }
    let mut d = serde_json::to_value(desc).map_err(|e| ExportError::Invalid(e.to_string()))?;
    merge(&mut d, items);
    to_descriptor(d)
}

fn pairs<'a>(it: impl Iterator<Item = &'a Annotation>) -> Vec<(&'a str, &'a str)> {
    it.map(|a| (a.key.as_str(), a.value.as_str())).collect()
}

/// Adds the manifest and manifest-descriptor annotations to each
/// platform's manifest (a new blob) and its descriptor.
pub fn manifests(root: &Root, images: &mut [Image], all: &[Annotation]) -> Result<(), ExportError> {
    if all.is_empty() {
        return Ok(());
    }
    for img in images.iter_mut() {
        let p = platform_of(&img.manifest);
        let m = pairs(for_level(all, Level::Manifest, p.as_ref()));
        let d = pairs(for_level(all, Level::ManifestDescriptor, p.as_ref()));
        let desc = rewrite_blob(root, &img.manifest, &m)?;
        img.manifest = add_to_descriptor(&desc, &d)?;
    }
    Ok(())
}

/// Adds the index and index-descriptor annotations to a multi-platform
/// image's index (a new blob) and its descriptor.
pub fn index(root: &Root, top: Descriptor, all: &[Annotation]) -> Result<Descriptor, ExportError> {
    if all.is_empty() {
        return Ok(top);
    }
    let i = pairs(for_level(all, Level::Index, None));
    let d = pairs(for_level(all, Level::IndexDescriptor, None));
    let desc = rewrite_blob(root, &top, &i)?;
    add_to_descriptor(&desc, &d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_buildx() {
        let a = parse(&[
            "a=1".into(),
            "index,manifest[linux/amd64]:b=2".into(),
            "manifest-descriptor:c=x=y".into(),
        ])
        .unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].level, Level::Manifest);
        assert_eq!((a[1].level, a[1].key.as_str()), (Level::Index, "b"));
        assert_eq!(
            a[2].platform.as_ref().map(|p| p.architecture.as_str()),
            Some("amd64")
        );
        assert_eq!(
            (a[3].level, a[3].value.as_str()),
            (Level::ManifestDescriptor, "x=y")
        );
        assert_eq!(
            parse(&["nope".into()]).unwrap_err().to_string(),
            "invalid annotation \"nope\", expected key=value"
        );
        assert_eq!(
            parse(&["config:k=v".into()]).unwrap_err().to_string(),
            "unknown annotation type \"config\""
        );
    }
}
