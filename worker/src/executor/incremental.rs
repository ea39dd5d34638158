//! Which COPY steps may start from their previous result, and where that
//! result is remembered (see [`crate::fileops::reuse`] for how the copy
//! stays byte-identical to a full one).
//!
//! A step's *identity* is everything that decides its result except the
//! content of the context: the copy actions as written, the host folder of
//! each context and its `.dockerignore`, and the base layers. Its cache key
//! changes with every edit; its identity does not, so the rebuild after an
//! edit finds the layer the last build of the step made. The identity is
//! only a hint: every file kept is checked against its source, so a stale
//! or foreign record costs speed, never correctness.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_cache::Digest;
use kiln_solver::ops::{FileAction, FileOp};
use sha2::{Digest as _, Sha256};

use super::{Snapshot, Worker};
use crate::fileops::reuse::{clone_tree, Reuse};

/// The folder of identity records, beside the layer dirs they name (so
/// `prune --all`, which drops the layer dirs, drops them too).
fn records_dir(w: &Worker) -> PathBuf {
    w.root.layers_dir().join(".steps")
}

/// The identity of `f` on `base`, when every action is a plain COPY (no ADD
/// extraction) from a build context; `None` for anything else.
pub(super) fn identity(
    w: &Worker,
    f: &FileOp,
    inputs: &[Snapshot],
    base: &Snapshot,
) -> Option<String> {
    if f.actions.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"kiln incremental copy v1\0");
    for a in &f.actions {
        let FileAction::Copy { source, unpack, .. } = a else {
            return None;
        };
        if *unpack {
            return None;
        }
        let ctx = inputs.get(*source)?.context.as_ref()?;
        let dir = w.context_dir(&ctx.name).ok()?;
        h.update(serde_json::to_vec(a).ok()?);
        h.update(b"\0");
        h.update(dir.as_os_str().as_bytes());
        h.update(b"\0");
        for e in &ctx.exclude {
            h.update(e.as_bytes());
            h.update(b"\n");
        }
        h.update(b"\0");
    }
    for l in &base.layers {
        h.update(l.diff_id.to_string().as_bytes());
        h.update(b"\n");
    }
    Some(hex::encode(h.finalize()))
}

/// Clones the previous result of the step `id` into `upper` (not yet
/// mounted), when there is one that can be cloned. On `None` `upper` is
/// empty or absent, as a full copy wants it.
pub(super) fn start(w: &Worker, id: &str, upper: &Path) -> Option<Arc<Reuse>> {
    let text = fs::read_to_string(records_dir(w).join(id)).ok()?;
    let diff_id: Digest = text.trim().parse().ok()?;
    let previous = w.layers.path(&diff_id);
    if !previous.is_dir() {
        return None;
    }
    fs::create_dir_all(upper).ok()?;
    match clone_tree(&previous, upper, crate::snapshot::opaque_xattr()) {
        Ok(true) => Some(Arc::new(Reuse::new(upper))),
        _ => {
            let _ = fs::remove_dir_all(upper);
            None
        }
    }
}

/// Remembers `diff_id` as the latest result of the step `id`. Best effort:
/// a lost record only costs the next edit a full copy.
pub(super) fn record(w: &Worker, id: &str, diff_id: &Digest) {
    let dir = records_dir(w);
    if fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("{id}.{}.tmp", crate::tmpname::unique()));
    if fs::write(&tmp, diff_id.to_string()).is_ok() && fs::rename(&tmp, dir.join(id)).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}
