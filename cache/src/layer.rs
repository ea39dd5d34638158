//! One layer of a build result as the store knows it: the unit the build
//! cache records, the remote cache transfers and the exporters write into
//! manifests.

use serde::{Deserialize, Serialize};

use crate::media;

/// One layer of a snapshot: enough to find its blob and its unpacked
/// directory and to describe it in a manifest. The store crate owns it so
/// the worker, the build cache and the remote cache share one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:` of the uncompressed tar (the config's rootfs.diff_ids).
    pub diff_id: String,
    /// `sha256:` of the blob as stored (compressed).
    pub digest: String,
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
