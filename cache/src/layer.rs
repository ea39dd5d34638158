//! One layer of a build result as the store knows it: the unit the build
//! cache records, the remote cache transfers and the exporters write into
//! manifests.

use serde::{Deserialize, Serialize};

use crate::media;
use crate::Digest;

/// One layer of a snapshot: enough to find its blob and its unpacked
/// directory and to describe it in a manifest. The store crate owns it so
/// the worker, the build cache and the remote cache share one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the uncompressed tar (the config's rootfs.diff_ids).
    /// Serializes as the `sha256:…` string, so records written when this
    /// was a plain string still read.
    pub diff_id: Digest,
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// The OCI media type for a layer of `media_type`: OCI manifests carry OCI
/// layer types, and docker's (from a base pulled off Docker Hub) are the
/// same bytes under another name.
pub fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_LAYER => media::OCI_LAYER,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => media::OCI_LAYER_ZSTD,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written when the digests were plain strings read, and write
    /// back byte for byte.
    #[test]
    fn serialized_form_is_the_digest_string() {
        let json = format!(
            r#"{{"diff_id":"sha256:{}","digest":"sha256:{}","size":12,"media_type":"{}"}}"#,
            "a".repeat(64),
            "b".repeat(64),
            media::OCI_LAYER_GZIP
        );
        let l: LayerRef = serde_json::from_str(&json).unwrap();
        assert_eq!(l.diff_id.hex(), "a".repeat(64));
        assert_eq!(serde_json::to_string(&l).unwrap(), json);
        let bad = json.replace(&"a".repeat(64), "../../etc");
        assert!(serde_json::from_str::<LayerRef>(&bad).is_err());
    }
}
