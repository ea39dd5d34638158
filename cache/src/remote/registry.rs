//! A cache in a registry (`type=registry`), and inline caches read from an
//! image in a registry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use oci_spec::image::Descriptor;
use serde_json::Value;

use super::manifest::{config_desc, read_records, Layers};
use super::{Error, Records};
use crate::compress::{Compression, Conversion};
use crate::registry::{self, Outcome, PushOptions, RegistryConfig, RemoteManifest, RemoteSource};
use crate::{media, Digest, Reference, Root};

/// Reads the records and layers a registry reference offers, and the
/// connection that fetches its blobs later.
pub(crate) async fn read(
    root: &Root,
    config: &RegistryConfig,
    r: &Reference,
) -> Result<(Records, Layers, RemoteSource), Error> {
    let src = RemoteSource::connect(config, r).await?;
    let top = src.manifest().await?;
    let m = if media::is_index(&top.media_type) {
        let entry = host_entry(&top)?;
        src.manifest_by_digest(&entry).await?
    } else {
        top
    };
    let doc: Value = serde_json::from_slice(&m.bytes).map_err(|e| Error::Format(e.to_string()))?;
    let (cd, size, mt) = config_desc(&doc)?;
    src.blob(root, &cd, size, &mt).await?;
    let bytes = root.blobs().read(&cd)?;
    let (records, layers) = read_records(&doc, &mt, &bytes)?;
    Ok((records, layers, src))
}

/// This machine's entry of an index (an inline cache on a multi-platform
/// image).
fn host_entry(index: &RemoteManifest) -> Result<Digest, Error> {
    let doc: Value =
        serde_json::from_slice(&index.bytes).map_err(|e| Error::Format(e.to_string()))?;
    let host = crate::image::Platform::host();
    doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["platform"]["os"].as_str() == Some(host.os.as_str())
                && m["platform"]["architecture"].as_str() == Some(host.architecture.as_str())
        })
        .and_then(|m| m["digest"].as_str())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::Format("the index has no manifest for this platform".into()))
}

/// Counts what a push did with each blob.
#[derive(Default)]
struct Counts {
    uploaded: AtomicUsize,
    existed: AtomicUsize,
    mounted: AtomicUsize,
}

impl registry::Progress for Counts {
    fn start(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str, outcome: Outcome) {
        let c = match outcome {
            Outcome::Transferred => &self.uploaded,
            Outcome::Exists => &self.existed,
            Outcome::Mounted => &self.mounted,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn message(&self, _: &str) {}
}

/// What a push did: blobs uploaded, already there, mounted.
pub(crate) struct Pushed {
    pub uploaded: usize,
    pub existed: usize,
    pub mounted: usize,
}

/// Pushes the cache manifest `desc` (its layers compressed as they
/// travel: the push converts nothing) to `reference`.
pub(crate) async fn push(
    root: &Root,
    config: &RegistryConfig,
    desc: &Descriptor,
    reference: &Reference,
    compression: Compression,
) -> Result<Pushed, Error> {
    let counts = Arc::new(Counts::default());
    let push = PushOptions {
        config: config.clone(),
        // What `desc` already is: nothing left to convert.
        compression: Conversion::to(compression),
        ..PushOptions::default()
    };
    registry::push_descriptor(root, desc, reference, reference, &push, counts.clone()).await?;
    Ok(Pushed {
        uploaded: counts.uploaded.load(Ordering::Relaxed),
        existed: counts.existed.load(Ordering::Relaxed),
        mounted: counts.mounted.load(Ordering::Relaxed),
    })
}
