//! Images without a name (`<none>`): a build without `-t`, or the image a
//! tag moved away from. The name table only maps names to descriptors, so
//! such an image is kept under a reserved name, `kiln-dangling@<digest>`,
//! as moby's containerd store keeps its `moby-dangling@…` images: garbage
//! collection keeps its content, `find` reaches it by ID, and every
//! listing shows it as `<none>`. An image has such a name only while no
//! other name points at it.

use oci_spec::image::Descriptor;

use crate::images::Names;
use crate::reference::Reference;
use crate::{Digest, Result, Root};

/// The repository of the reserved names.
pub const DANGLING_REPOSITORY: &str = "kiln-dangling";

/// How the reserved names are spelled in the table.
const DANGLING_PREFIX: &str = "docker.io/library/kiln-dangling@";

fn is_dangling_key(k: &str) -> bool {
    k.starts_with(DANGLING_PREFIX)
}

/// The reserved name of the image `d`.
pub fn dangling_name(d: &Descriptor) -> Result<Reference> {
    Reference::parse(&format!("{DANGLING_REPOSITORY}@{}", d.digest()))
}

/// Whether `r` is a reserved `<none>` name, not a user's.
pub fn is_dangling(r: &Reference) -> bool {
    is_dangling_key(&r.to_string())
}

/// Points each name at its descriptor in one step of the table; an image a
/// name moved away from and that no name holds any more stays as
/// `<none>`, and an image that now has a name loses its `<none>` entry.
/// With no entries, `unnamed` (a build without `-t`) is kept as `<none>`.
pub fn name(
    root: &Root,
    entries: &[(Reference, Descriptor)],
    unnamed: Option<&Descriptor>,
) -> Result<()> {
    root.images().update(|t| {
        let mut moved = Vec::new();
        for (r, d) in entries {
            if let Some(old) = t.insert(r.clone(), d.clone()) {
                if old.digest() != d.digest() {
                    moved.push(old);
                }
            }
        }
        if let Some(d) = unnamed {
            moved.push(d.clone());
        }
        for old in moved {
            keep_if_unnamed(t, &old)?;
        }
        for (_, d) in entries {
            t.remove(&dangling_name(d)?);
        }
        Ok(())
    })
}

/// Gives `d` its `<none>` name unless a name points at it.
fn keep_if_unnamed(t: &mut Names, d: &Descriptor) -> Result<()> {
    let named = t
        .iter()
        .any(|(n, x)| x.digest() == d.digest() && !is_dangling_key(n));
    if !named {
        t.insert(dangling_name(d)?, d.clone());
    }
    Ok(())
}

/// Removes every `<none>` image's name (`kiln prune`, `image prune`);
/// returns the descriptors so the caller can delete their content.
pub fn forget_all(root: &Root) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    root.images().update(|t| {
        let gone: Vec<(String, Descriptor)> = t
            .iter()
            .filter(|(n, _)| is_dangling_key(n))
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        for (_, d) in &gone {
            t.remove(&dangling_name(d)?);
            out.push(d.clone());
        }
        Ok(())
    })?;
    Ok(out)
}

/// The image ID, the same in every command (`build`, `-q`, `--iidfile`,
/// `images`, `inspect`, `history`, `run`, `rmi`, `save`/`load`): docker's
/// convention, the config digest of a single-platform image, which no
/// layer conversion (push, save, compression) changes; an index (a
/// multi-platform image) has no one config, so its own digest.
pub fn image_id(root: &Root, d: &Descriptor) -> Result<Digest> {
    match crate::image::read_node(root.blobs(), d)? {
        crate::image::Node::Manifest(m) => Digest::from_oci(m.config().digest()),
        crate::image::Node::Index(_) => crate::image::digest_of(d),
    }
}
