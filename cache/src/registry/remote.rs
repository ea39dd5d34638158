//! Reads for the build's remote cache (`kiln build --cache-from`): one
//! manifest and its config up front, then single blobs on demand, as the
//! solve asks for them. A full [`super::pull`] would fetch every layer of
//! the cache, most of which a build never needs.

use std::sync::atomic::AtomicBool;

use super::client::{candidates, Endpoint};
use super::config::RegistryConfig;
use super::credentials::DockerConfig;
use super::error::RegistryError;
use super::manifest::Desc;
use super::progress::NoProgress;
use super::pull::{fetch_blob, fetch_manifest};
use crate::{Digest, Reference, Root};

/// A manifest as the registry holds it: its exact bytes, their digest and
/// media type.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// One repository of a registry, connected for pulls.
pub struct RemoteSource {
    ep: Endpoint,
    reference: Reference,
}

impl RemoteSource {
    /// Connects (and authenticates) for pulling from `reference`'s
    /// repository. Mirrors are not used: a cache lives where it was pushed.
    pub async fn connect(
        config: &RegistryConfig,
        reference: &Reference,
    ) -> Result<RemoteSource, RegistryError> {
        let registry = reference.registry().to_string();
        let repository = reference.repository().to_string();
        let creds = DockerConfig::load_default()?.credentials(&registry)?;
        let scopes = vec![format!("repository:{repository}:pull")];
        let bases = candidates(config, &registry, false);
        let ep = Endpoint::connect_with(
            &registry,
            &repository,
            &bases,
            creds,
            scopes,
            config.timeouts()?,
        )
        .await?;
        Ok(RemoteSource {
            ep,
            reference: reference.clone(),
        })
    }

    /// The reference this source was opened for.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The manifest (or index) the reference names, verified against its
    /// digest when the reference or the registry gives one.
    pub async fn manifest(&self) -> Result<RemoteManifest, RegistryError> {
        let wanted = match (self.reference.digest(), self.reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        self.fetch(&wanted, self.reference.digest()).await
    }

    /// A manifest of the repository by digest (an index's entry).
    pub async fn manifest_by_digest(
        &self,
        digest: &Digest,
    ) -> Result<RemoteManifest, RegistryError> {
        self.fetch(&digest.to_string(), Some(digest)).await
    }

    async fn fetch(
        &self,
        wanted: &str,
        expected: Option<&Digest>,
    ) -> Result<RemoteManifest, RegistryError> {
        let f = fetch_manifest(&self.ep, &self.reference, wanted, expected, None).await?;
        Ok(RemoteManifest {
            bytes: f.bytes,
            digest: f.digest,
            media_type: f.media_type,
        })
    }

    /// Downloads one blob into the store (verified against its digest and
    /// size); nothing when the store already has it.
    pub async fn blob(
        &self,
        root: &Root,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let desc = Desc {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            platform: None,
        };
        let cancel = AtomicBool::new(false);
        let pending = fetch_blob(
            root,
            &self.ep,
            &self.reference,
            &desc,
            "layer",
            &NoProgress,
            &cancel,
        )
        .await?;
        if let Some(p) = pending {
            p.commit()?;
        }
        Ok(())
    }
}
