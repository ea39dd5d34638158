//! What kiln's test crates and benches share, in one dev-only crate instead
//! of helper files each test crate includes: where `../shared` and the
//! busybox fixture are, a `kiln` with its own temporary store, a real and a
//! fake registry, the independent readers that judge kiln's output, and the
//! shapes of the benchmark contexts.
//!
//! The feature `cache` adds helpers that look into a store (they need
//! kiln-cache), `worker` the busybox rootfs unpacked with the worker's own
//! layer code; the rest needs no kiln crate, so the frontend's tests can use
//! it without building the engine.

pub mod containers;
pub mod fake_registry;
pub mod fixtures;
pub mod kiln;
pub mod mounts;
pub mod netns;
pub mod oracle;
pub mod registry;
pub mod rootless;
pub mod s3;
pub mod scale;
#[cfg(feature = "cache")]
pub mod store;

pub use fake_registry::{read_request, tiny_image, Bearer, FakeRegistry, Request, Route};
#[cfg(feature = "worker")]
pub use fixtures::busybox_layer_dirs;
pub use fixtures::{busybox_fixture, busybox_layers, shared, BUSYBOX_INDEX};
pub use kiln::{events, named, stderr, Kiln};
pub use mounts::mounts_below;
pub use oracle::{imagefs, skopeo, tar_listing, tree, umoci_unpack};
pub use registry::{http_status, TestRegistry};
pub use rootless::TestUser;
pub use s3::{TestS3, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY};
#[cfg(feature = "cache")]
pub use store::{export_layout, import_oci_archive, reachable, temp_root};

/// sha256 of `bytes` as `sha256:<hex>`, computed apart from kiln's own
/// digest code.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
