//! What the image commands (`images`, `history`, `rmi`) decide, apart from
//! how they print it: which names a filter keeps, which layer each history
//! entry made, and what removing a name removes. Kept here so any front
//! end lists and removes images by the same rules.

use oci_spec::image::Descriptor;
use serde_json::Value;

use crate::image::{self, Resolved};
use crate::{gc, Reference, Root};

/// The image names of the store, sorted as `kiln images` shows them; with
/// a `filter`, only those of its repository (and of its tag when it has
/// one).
pub fn list(
    root: &Root,
    filter: Option<&Reference>,
) -> crate::Result<Vec<(Reference, Descriptor)>> {
    let mut list = root.images().list()?;
    list.sort_by_key(|(n, _)| n.familiar());
    list.retain(|(name, _)| {
        filter
            .is_none_or(|f| f.name() == name.name() && (f.tag().is_none() || f.tag() == name.tag()))
    });
    Ok(list)
}

/// The image's history entries, newest first, each with the size of the
/// layer it made (0 for an `empty_layer` entry): entries and layers pair up
/// in order, skipping the empty ones, as docker pairs them.
pub fn history(r: &Resolved) -> Vec<(Value, u64)> {
    let entries: Vec<Value> = r
        .config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layers = r.manifest.layers();
    let mut rows = Vec::with_capacity(entries.len());
    let mut li = 0;
    for h in entries {
        let empty = h
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            let s = layers.get(li).map_or(0, |l| l.size());
            li += 1;
            s
        };
        rows.push((h, size));
    }
    rows.reverse();
    rows
}

/// Why `rmi` refused or failed (docker's words for the refusals).
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Store(#[from] crate::Error),
    #[error("conflict: unable to delete {0} (must be forced) - image is referenced in multiple repositories")]
    MultipleRepositories(String),
    #[error("conflict: unable to remove repository reference \"{input}\" (must force) - container {container} is using its referenced image {image}")]
    InUse {
        input: String,
        /// The container's short ID.
        container: String,
        /// The image's short ID.
        image: String,
    },
}

/// What `rmi` removed.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// The names untagged, in order.
    pub untagged: Vec<Reference>,
    /// The image whose content went with its last name, if it did.
    pub deleted: Option<Descriptor>,
}

/// `rmi INPUT`: removes the name (or, for an ID, every name unless there
/// are several and not `force`), and the content with the last name. As
/// docker: the last name of an image a container was made from is not
/// removed unless forced, and its content stays while the container does;
/// `container_of` answers which container (short ID) uses a manifest
/// digest, the store knowing nothing of containers.
pub fn remove(
    root: &Root,
    input: &str,
    force: bool,
    container_of: impl FnOnce(&str) -> Option<String>,
) -> Result<Removed, RemoveError> {
    let found = image::find(root, input)?;
    let to_remove: Vec<Reference> = match &found.reference {
        Some(r) => vec![r.clone()],
        None if found.names.len() > 1 && !force => {
            return Err(RemoveError::MultipleRepositories(input.to_string()))
        }
        None => found.names.clone(),
    };
    let target_desc = found.descriptor;
    let target = target_desc.digest().to_string();
    let last_name = !root
        .images()
        .list()?
        .iter()
        .any(|(r, d)| d.digest() == target_desc.digest() && !to_remove.contains(r));
    let user = if last_name {
        container_of(&target)
    } else {
        None
    };
    if let (Some(c), false) = (&user, force) {
        return Err(RemoveError::InUse {
            input: input.to_string(),
            container: c.clone(),
            image: target
                .trim_start_matches("sha256:")
                .get(..12)
                .unwrap_or(&target)
                .to_string(),
        });
    }
    let mut removed = Removed::default();
    for r in to_remove {
        if root.images().remove(&r)? {
            removed.untagged.push(r);
        }
    }
    let still_named = root
        .images()
        .list()?
        .iter()
        .any(|(_, d)| d.digest() == target_desc.digest());
    if !still_named && user.is_none() {
        gc::remove_image_content(root, &target_desc, &[])?;
        removed.deleted = Some(target_desc);
    }
    Ok(removed)
}
