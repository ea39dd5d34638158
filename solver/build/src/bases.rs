//! Base images: resolved from the store, pulled when missing or with
//! `--pull`, once per reference and platform (the planner and the lowering
//! ask for the same images).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use kiln_cache::registry::{self, NoProgress, PullOptions, RegistryConfig};
use kiln_cache::{image, Reference, Root};
use kiln_frontend::lower::ResolvedImage;
use kiln_frontend::plan::Platform;

/// The base image resolver of one build.
pub(crate) struct Bases<'a> {
    pub root: &'a Root,
    pub rt: &'a tokio::runtime::Runtime,
    pub pull: bool,
    pub config: RegistryConfig,
    pub seen: RefCell<HashMap<(String, Platform), ResolvedImage>>,
    /// `--build-context NAME=docker-image://REF` (and loaded OCI layouts):
    /// the reference to resolve in place of a name, by
    /// [`kiln_frontend::plan::named_context_key`] (`NAME` or
    /// `NAME::PLATFORM`).
    pub aliases: HashMap<String, String>,
}

/// Why a base image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BaseError {
    /// The reference, the store or the image in it.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// Not in the store and not pulled (BuildKit's words).
    #[error("failed to resolve source metadata for {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: registry::RegistryError,
    },
}

/// A base image failure as the frontend reports it (a planning error with
/// the same message).
pub(crate) fn frontend_err(e: BaseError) -> kiln_frontend::Error {
    kiln_frontend::Error::new(kiln_frontend::ErrorKind::Plan, e.to_string())
}

impl Bases<'_> {
    /// `d` itself when it is an image manifest (not an index), whatever
    /// platform its config names.
    fn single_manifest(
        root: &Root,
        d: &oci_spec::image::Descriptor,
        name: &str,
    ) -> Option<image::Resolved> {
        if !kiln_cache::media::is_manifest(&image::media_type(d)) {
            return None;
        }
        image::resolve(root.blobs(), d, None, name).ok()
    }

    /// The image `reference` for `platform`.
    pub fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, BaseError> {
        // `NAME::PLATFORM` first, then `NAME` (BuildKit's order).
        let key = kiln_frontend::plan::context_key(reference);
        let reference = self
            .aliases
            .get(&format!("{key}::{}", platform.normalize()))
            .or_else(|| self.aliases.get(&key))
            .map_or(reference, String::as_str);
        let key = (reference.to_string(), platform.clone());
        if let Some(hit) = self.seen.borrow().get(&key) {
            return Ok(hit.clone());
        }
        let r = Reference::parse(reference)?;
        let want = image::Platform {
            os: platform.os.clone(),
            architecture: platform.architecture.clone(),
            variant: platform.variant.clone(),
        };
        let local = self.root.images().get(&r)?;
        let from_store = |d: &oci_spec::image::Descriptor| {
            match image::resolve(self.root.blobs(), d, Some(&want), &r.familiar()) {
                // A single manifest (a pull for one platform) names its
                // platform only in its config.
                Err(kiln_cache::Error::NoMatchingPlatform { .. }) => {
                    let one = image::resolve(self.root.blobs(), d, None, &r.familiar())?;
                    let p = one.platform();
                    if p.os == want.os && p.architecture == want.architecture {
                        Ok(one)
                    } else {
                        image::resolve(self.root.blobs(), d, Some(&want), &r.familiar())
                    }
                }
                other => other,
            }
        };
        let resolved = match (&local, self.pull) {
            (Some(d), false) => match from_store(d) {
                Ok(res) => Some(res),
                // An index pulled for another platform: fetch this one.
                Err(kiln_cache::Error::NoMatchingPlatform { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            _ => None,
        };
        // A single manifest of another platform in the store (a local-only
        // image): used when no registry has this platform, as BuildKit
        // uses a base whose manifest is not an index; the checks then
        // report InvalidBaseImagePlatform.
        let single = match (&local, resolved.is_some(), self.pull) {
            (Some(d), false, false) => Self::single_manifest(self.root, d, &r.familiar()),
            _ => None,
        };
        let resolved = match resolved {
            Some(res) => res,
            None => {
                let opts = PullOptions {
                    platform: Some(registry::Platform {
                        os: platform.os.clone(),
                        architecture: platform.architecture.clone(),
                        variant: platform.variant.clone(),
                    }),
                    config: self.config.clone(),
                    ..PullOptions::default()
                };
                let pulled =
                    self.rt
                        .block_on(registry::pull(self.root, &r, &opts, Arc::new(NoProgress)));
                // `--pull` with no registry in reach is an error, as
                // buildx's: the local copy is not used in its place.
                match (pulled, single) {
                    // A registry's single manifest of another platform too.
                    (Ok(d), _) => match from_store(&d) {
                        Ok(res) => res,
                        Err(e @ kiln_cache::Error::NoMatchingPlatform { .. }) => {
                            Self::single_manifest(self.root, &d, &r.familiar()).ok_or(e)?
                        }
                        Err(e) => return Err(e.into()),
                    },
                    (Err(_), Some(one)) => one,
                    (Err(source), None) => {
                        return Err(BaseError::Pull {
                            image: r.familiar_tagged(),
                            source,
                        })
                    }
                }
            }
        };
        let out = ResolvedImage {
            reference: r.to_string(),
            manifest: resolved.descriptor.digest().to_string(),
            config: resolved.config,
        };
        self.seen.borrow_mut().insert(key, out.clone());
        Ok(out)
    }
}
