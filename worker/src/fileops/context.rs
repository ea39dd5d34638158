//! The build context as a COPY sees it: BuildKit first transfers the
//! context filtered by `.dockerignore` (patterns anchored at the context
//! root), then copies from that with the COPY's own filters (relative to
//! each source). kiln copies straight from the host folder, so this module
//! answers "does this path exist in the transferred context?" and hands the
//! walk its outer filter.

use std::path::Path;

use kiln_patternmatcher::ContextFilter;

use super::error::Result;
use super::pattern::compile;
use super::rootpath;

/// The `.dockerignore` of a context, compiled once per copy.
pub(crate) struct ContextView {
    filter: ContextFilter,
}

impl ContextView {
    /// From the `.dockerignore` patterns (empty: everything is there).
    pub(crate) fn new(exclude: &[String]) -> Result<Self> {
        let filter = if exclude.is_empty() {
            ContextFilter::default()
        } else {
            ContextFilter::new(None, Some(compile(exclude)?))
        };
        Ok(ContextView { filter })
    }

    /// The walk's outer filter for a source at `inner` (its path in the
    /// root, symlinks resolved); `None` when nothing is ignored.
    pub(crate) fn outer<'a>(&'a self, inner: &'a str) -> Option<(&'a ContextFilter, &'a str)> {
        (!self.filter.is_empty()).then_some((&self.filter, inner))
    }

    /// Whether the path `p` of `root` (as written; symlinks are followed
    /// as the copy follows them) is in the transferred context: kept by the
    /// patterns, or a directory they drop that still holds a kept entry
    /// (a `!` exception). Returns the resolved inner path when it is.
    pub(crate) fn lookup(&self, root: &Path, p: &str) -> Result<Option<String>> {
        let r = rootpath::resolve(root, Path::new(p), true)?;
        let inner = r
            .inner_path()
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        if self.filter.is_empty() || inner.is_empty() {
            return Ok(Some(inner));
        }
        let kept =
            self.filter
                .is_included(&inner)
                .map_err(|e| super::FileOpsError::BadPattern {
                    pattern: e.to_string(),
                })?;
        if kept {
            return Ok(Some(inner));
        }
        if self.filter.may_keep_below_dropped()
            && std::fs::symlink_metadata(&r.host).is_ok_and(|m| m.is_dir())
        {
            let all = ContextFilter::default();
            let mut below = all.walk(&r.host).within(&self.filter, &inner);
            if below.next().is_some_and(|e| e.is_ok()) {
                return Ok(Some(inner));
            }
        }
        Ok(None)
    }
}
