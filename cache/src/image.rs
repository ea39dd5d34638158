//! Reading images out of the store: manifests, indexes, configs, platforms.
//!
//! Shared by the CLI's image commands, archives, garbage collection and the
//! build's image source, so that "which manifest is linux/arm64 of this
//! index" has one answer everywhere.

use std::collections::BTreeSet;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::DeserializeOwned;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media;
use crate::reference::Reference;
use crate::root::Root;

/// Manifests and configs larger than this are refused: real ones are a few
/// KiB, and a hostile one must not exhaust memory.
pub const MAX_JSON_BLOB: u64 = 8 * 1024 * 1024;

/// The workspace's one platform type (`kiln-platform`), re-exported
/// where image code has always found it.
pub use kiln_platform::Platform;

/// Parses a `--platform` value for the image commands; a malformed one is
/// an [`Error::InvalidImage`] naming it.
pub fn parse_platform(s: &str) -> Result<Platform> {
    Platform::parse(s).map_err(|_| Error::InvalidImage {
        what: format!("platform {s:?}"),
        detail: "expected os/arch[/variant]".into(),
    })
}

/// Reads a config's platform (`os`, `architecture`, `variant`); absent
/// fields are empty, an empty variant is none.
pub fn config_platform(config: &serde_json::Value) -> Platform {
    let s = |k: &str| {
        config
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let variant = s("variant");
    Platform {
        os: s("os"),
        architecture: s("architecture"),
        variant: (!variant.is_empty()).then_some(variant),
    }
}

/// The media type of a descriptor as a plain string.
pub fn media_type(d: &Descriptor) -> String {
    d.media_type().to_string()
}

/// The digest of a descriptor, validated as kiln's type.
pub fn digest_of(d: &Descriptor) -> Result<Digest> {
    Digest::from_oci(d.digest())
}

/// Builds a descriptor (kiln's digests are always valid oci digests).
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type.into(), size, digest.to_oci())
}

/// Reads and parses a small JSON blob, refusing huge ones.
pub fn read_json<T: DeserializeOwned>(blobs: &BlobStore, digest: &Digest, what: &str) -> Result<T> {
    let size = blobs.size(digest)?;
    if size > MAX_JSON_BLOB {
        return Err(Error::InvalidImage {
            what: format!("{what} {digest}"),
            detail: format!("{size} bytes is too large for a JSON document"),
        });
    }
    let bytes = blobs.read(digest)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("{what} {digest}"), e))
}

/// A manifest or index, as found behind a descriptor.
#[derive(Debug, Clone)]
pub enum Node {
    /// A multi-platform list.
    Index(Box<ImageIndex>),
    /// A single-platform image.
    Manifest(Box<ImageManifest>),
}

/// Reads what a descriptor points at, deciding by its media type (or, when
/// the descriptor's type is unusual, by the document's own shape).
pub fn read_node(blobs: &BlobStore, d: &Descriptor) -> Result<Node> {
    let digest = digest_of(d)?;
    let mt = media_type(d);
    if media::is_index(&mt) {
        return Ok(Node::Index(Box::new(read_json(blobs, &digest, "index")?)));
    }
    if media::is_manifest(&mt) {
        return Ok(Node::Manifest(Box::new(read_json(
            blobs, &digest, "manifest",
        )?)));
    }
    let v: serde_json::Value = read_json(blobs, &digest, "manifest")?;
    if v.get("manifests").is_some() {
        Ok(Node::Index(Box::new(read_json(blobs, &digest, "index")?)))
    } else if v.get("config").is_some() {
        Ok(Node::Manifest(Box::new(read_json(
            blobs, &digest, "manifest",
        )?)))
    } else {
        Err(Error::InvalidImage {
            what: format!("{digest}"),
            detail: format!("media type {mt} is neither a manifest nor an index"),
        })
    }
}

/// True for index entries that are not runnable images: BuildKit's
/// attestation manifests (`unknown/unknown`).
pub fn is_attestation(d: &Descriptor) -> bool {
    let by_annotation = d
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(media::ANNOTATION_DOCKER_REFERENCE_TYPE));
    let by_platform = Platform::of_descriptor(d)
        .is_some_and(|p| p.architecture == "unknown" || p.os == "unknown");
    by_annotation || by_platform
}

/// One platform's image: the manifest's descriptor, the manifest, and the
/// parsed config.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Descriptor of the platform manifest.
    pub descriptor: Descriptor,
    /// The manifest itself.
    pub manifest: ImageManifest,
    /// Digest of the config blob (docker's classic image ID).
    pub config_digest: Digest,
    /// The config document, kept as JSON so docker-only fields survive.
    pub config: serde_json::Value,
}

impl Resolved {
    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        config_platform(&self.config)
    }

    /// Config plus layers, as stored (compressed) — what `images` shows.
    pub fn content_size(&self) -> u64 {
        let layers: u64 = self.manifest.layers().iter().map(|l| l.size()).sum();
        self.manifest.config().size() + layers
    }
}

/// Every runnable platform manifest below `d` (an index, nested indexes,
/// or a single manifest), in index order.
pub fn platform_manifests(blobs: &BlobStore, d: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    collect_manifests(blobs, d, 0, &mut out)?;
    Ok(out)
}

fn collect_manifests(
    blobs: &BlobStore,
    d: &Descriptor,
    depth: usize,
    out: &mut Vec<Descriptor>,
) -> Result<()> {
    if depth > 8 {
        return Err(Error::InvalidImage {
            what: d.digest().to_string(),
            detail: "indexes nested too deep".into(),
        });
    }
    match read_node(blobs, d)? {
        Node::Manifest(_) => out.push(d.clone()),
        Node::Index(idx) => {
            for m in idx.manifests() {
                if is_attestation(m) {
                    continue;
                }
                let mt = media_type(m);
                if media::is_index(&mt) {
                    collect_manifests(blobs, m, depth + 1, out)?;
                } else if blobs.has(&digest_of(m)?) {
                    // Platforms whose manifest is absent (a single-platform
                    // pull of a multi-platform index) are simply not here.
                    out.push(m.clone());
                }
            }
        }
    }
    Ok(())
}

/// Loads one platform manifest and its config.
pub fn resolve_manifest(blobs: &BlobStore, d: &Descriptor) -> Result<Resolved> {
    let digest = digest_of(d)?;
    let manifest: ImageManifest = read_json(blobs, &digest, "manifest")?;
    let config_digest = digest_of(manifest.config())?;
    let config: serde_json::Value = read_json(blobs, &config_digest, "config")?;
    Ok(Resolved {
        descriptor: d.clone(),
        manifest,
        config_digest,
        config,
    })
}

/// Picks the manifest for `platform` (default: the host's, else the only
/// one, else the first) below `d`.
pub fn resolve(
    blobs: &BlobStore,
    d: &Descriptor,
    platform: Option<&Platform>,
    name: &str,
) -> Result<Resolved> {
    let all = platform_manifests(blobs, d)?;
    let with_platform: Vec<(Option<Platform>, &Descriptor)> = all
        .iter()
        .map(|m| (Platform::of_descriptor(m), m))
        .collect();
    let want = platform.cloned();
    let host = Platform::host();
    let pick = |p: &Platform| {
        with_platform
            .iter()
            .find(|(c, _)| c.as_ref().is_some_and(|c| p.matches(c)))
            .map(|(_, m)| *m)
    };
    let chosen = match &want {
        Some(p) => pick(p),
        None => pick(&host).or_else(|| all.first()),
    };
    match chosen {
        Some(m) => {
            let r = resolve_manifest(blobs, m)?;
            // A single manifest carries its platform only in its config.
            if let Some(p) = &want {
                if Platform::of_descriptor(m).is_none() && !p.matches(&r.platform()) {
                    return Err(no_platform(name, p, &[r.platform()]));
                }
            }
            Ok(r)
        }
        None => {
            let available: Vec<Platform> = with_platform
                .iter()
                .filter_map(|(p, _)| p.clone())
                .collect();
            Err(no_platform(
                name,
                want.as_ref().unwrap_or(&host),
                &available,
            ))
        }
    }
}

fn no_platform(name: &str, p: &Platform, available: &[Platform]) -> Error {
    Error::NoMatchingPlatform {
        image: name.to_string(),
        platform: p.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

/// Every blob reachable from `d` (itself, child manifests, configs,
/// layers), whether present or not: the roots garbage collection keeps and
/// the content an archive must carry.
pub fn closure(blobs: &BlobStore, d: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    walk(blobs, d, 0, &mut seen, &mut out)?;
    Ok(out)
}

fn walk(
    blobs: &BlobStore,
    d: &Descriptor,
    depth: usize,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Descriptor>,
) -> Result<()> {
    if !seen.insert(d.digest().to_string()) {
        return Ok(());
    }
    out.push(d.clone());
    if depth > 8 {
        return Err(Error::InvalidImage {
            what: d.digest().to_string(),
            detail: "indexes nested too deep".into(),
        });
    }
    let mt = media_type(d);
    let digest = digest_of(d)?;
    if !(media::is_index(&mt) || media::is_manifest(&mt)) || !blobs.has(&digest) {
        return Ok(());
    }
    match read_node(blobs, d)? {
        Node::Index(idx) => {
            for m in idx.manifests() {
                walk(blobs, m, depth + 1, seen, out)?;
            }
        }
        Node::Manifest(m) => {
            for c in std::iter::once(m.config()).chain(m.layers().iter()) {
                if seen.insert(c.digest().to_string()) {
                    out.push(c.clone());
                }
            }
        }
    }
    Ok(())
}

/// How a user named an image: by reference, or by (a prefix of) its ID.
#[derive(Debug, Clone)]
pub struct Found {
    /// The name it was found under; `None` when found by ID.
    pub reference: Option<Reference>,
    /// Every name pointing at the same descriptor.
    pub names: Vec<Reference>,
    /// The manifest or index.
    pub descriptor: Descriptor,
}

/// Finds an image the way docker's CLI does: a name (normalised), a full
/// `sha256:` ID, or an unambiguous hex prefix of an ID (at least 4
/// characters), where an ID is the digest of the named manifest or index,
/// or else of a config one of them carries (what `kiln build` prints).
pub fn find(root: &Root, input: &str) -> Result<Found> {
    let list = root.images().list()?;
    let names_of = |d: &Descriptor| -> Vec<Reference> {
        list.iter()
            .filter(|(_, x)| x.digest() == d.digest())
            .map(|(r, _)| r.clone())
            .collect()
    };
    if let Ok(r) = Reference::parse(input) {
        if let Some((_, d)) = list.iter().find(|(n, _)| *n == r) {
            return Ok(Found {
                reference: Some(r),
                names: names_of(d),
                descriptor: d.clone(),
            });
        }
        // name@digest: any name of that repository pointing at the digest.
        if let Some(dg) = r.digest() {
            if let Some((_, d)) = list
                .iter()
                .find(|(n, d)| n.name() == r.name() && d.digest().to_string() == dg.to_string())
            {
                return Ok(Found {
                    reference: Some(r.clone()),
                    names: names_of(d),
                    descriptor: d.clone(),
                });
            }
        }
    }
    let hex = input.strip_prefix("sha256:").unwrap_or(input);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let mut hits: Vec<&Descriptor> = Vec::new();
        // The image ID (`crate::untagged::image_id`), then the manifest
        // or index digest.
        for (_, d) in &list {
            let id = crate::untagged::image_id(root, d).ok();
            if id.is_some_and(|id| id.hex().starts_with(&hex))
                && !hits.iter().any(|h| h.digest() == d.digest())
            {
                hits.push(d);
            }
        }
        for (_, d) in &list {
            if !hits.is_empty() {
                break;
            }
            if d.digest().digest().starts_with(&hex)
                && !hits.iter().any(|h| h.digest() == d.digest())
            {
                hits.push(d);
            }
        }
        if hits.is_empty() {
            // The ID `kiln build` prints (and `--iidfile` holds) is the
            // config's digest, docker's classic image ID: it names the
            // image whose manifest carries that config.
            for (_, d) in &list {
                let configs = closure(root.blobs(), d).unwrap_or_default();
                let matches = configs.iter().any(|c| {
                    media::is_config(&media_type(c)) && c.digest().digest().starts_with(&hex)
                });
                if matches && !hits.iter().any(|h| h.digest() == d.digest()) {
                    hits.push(d);
                }
            }
        }
        match hits.as_slice() {
            [d] => {
                return Ok(Found {
                    reference: None,
                    names: names_of(d),
                    descriptor: (*d).clone(),
                })
            }
            [] => {}
            _ => {
                return Err(Error::InvalidReference {
                    value: input.to_string(),
                    reason: "ambiguous image ID prefix".into(),
                })
            }
        }
    }
    Err(Error::ImageNotFound(input.to_string()))
}
