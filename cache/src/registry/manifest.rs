//! The parts of manifests and indexes a transfer needs, read loosely.
//!
//! Manifests are stored and pushed as the exact bytes the registry sent
//! (their digest is their name), so they are only *read* here, into small
//! structs that accept both OCI and docker schema 2 documents and ignore
//! fields kiln does not need, instead of a strict model that would reject
//! an image every other tool accepts.

use serde::Deserialize;

/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's manifest list (multi-platform) type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's schema 2 image manifest type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of a manifest request: every type kiln can store,
/// indexes first so a multi-platform image comes whole.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest accepted; the distribution spec lets registries refuse
/// bigger ones, and it bounds what a hostile server can make kiln buffer.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Whether `mt` names an index (OCI index or docker manifest list).
pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

/// Whether `mt` names an image manifest.
pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// The workspace's one platform type; index entries deserialise into it
/// as the registry spelled them.
pub use kiln_platform::Platform;

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
pub struct Desc {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The platform, for index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A manifest or an index: whichever fields are present say which.
#[derive(Debug, Clone, Deserialize)]
pub struct Doc {
    /// The media type the document declares, when it does.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The config of an image manifest.
    #[serde(default)]
    pub config: Option<Desc>,
    /// The layers of an image manifest.
    #[serde(default)]
    pub layers: Vec<Desc>,
    /// The entries of an index.
    #[serde(default)]
    pub manifests: Vec<Desc>,
}

impl Doc {
    /// Parses manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Doc, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The media type to file it under: the registry's `Content-Type` when
    /// that is a manifest type, else the document's own field, else a guess
    /// from its shape.
    pub fn media_type_with(&self, content_type: Option<&str>) -> String {
        if let Some(ct) = content_type {
            let ct = ct.split(';').next().unwrap_or(ct).trim();
            if is_index(ct) || is_manifest(ct) {
                return ct.to_string();
            }
        }
        if let Some(mt) = &self.media_type {
            if is_index(mt) || is_manifest(mt) {
                return mt.clone();
            }
        }
        if !self.manifests.is_empty() || self.config.is_none() {
            OCI_INDEX.to_string()
        } else {
            OCI_MANIFEST.to_string()
        }
    }

    /// The blobs an image manifest needs: config then layers.
    pub fn blobs(&self) -> Vec<Desc> {
        let mut out: Vec<Desc> = self.config.iter().cloned().collect();
        out.extend(self.layers.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into())
        }));
        assert!(p.matches(&Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None
        }));
        assert!(!p.matches(&Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None
        }));
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert!(!p.matches(&Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v6".into())
        }));
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        // A lone OS means the host's architecture, as containerd reads it.
        assert_eq!(Platform::parse("linux").unwrap(), Platform::host());
        assert!(Platform::parse("linux//").is_err());
    }

    #[test]
    fn media_type_guess() {
        let d = Doc::parse(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(d.media_type_with(Some("application/json")), OCI_INDEX);
        let d = Doc::parse(br#"{"config":{"digest":"sha256:00","size":1},"layers":[]}"#).unwrap();
        assert_eq!(d.media_type_with(None), OCI_MANIFEST);
        assert_eq!(
            d.media_type_with(Some(
                "application/vnd.docker.distribution.manifest.v2+json; x=y"
            )),
            DOCKER_MANIFEST
        );
    }
}
