//! COPY and ADD, exactly as BuildKit's Dockerfile frontend and file-op
//! backend do them, between two plain directories: a source root (the build
//! context, or another stage's or an image's rootfs) and a destination root
//! (the mounted rootfs of the snapshot being built).
//!
//! The rules, all BuildKit's: every source is its own copy action; a source
//! directory copies its contents; a file lands inside an existing directory
//! and a destination ending in `/` is a directory; missing parents are made
//! (0755, or the `--chmod` mode, owned by the `--chown` user); wildcards are
//! Go's `filepath.Match` and may match nothing; top-level symlinks are
//! followed, symlinks inside a tree copied as symlinks; hard links within one
//! source stay linked; context files become root-owned, files of a stage or
//! image keep their owner; modes, mtimes and xattrs are kept; `--exclude`
//! and `--parents` filter with patternmatcher semantics; ADD extracts local
//! tar archives, told by content.
//!
//! No path, symlink or hard link of either tree, nor any archive entry, can
//! lead a copy outside its root: see [`rootpath`] and [`unpack`].

pub mod actions;
pub mod checksum;
pub mod chmod;
pub mod chown;
mod context;
mod copier;
pub mod error;
pub mod meta;
pub mod pattern;
pub mod reuse;
pub mod rootpath;
pub mod treeindex;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use actions::{mkdir, mkfile, rm};
pub use checksum::{checksum_sources, ChecksumMemo};
pub use chmod::Chmod;
pub use chown::{resolve_chown, resolve_chown_reporting, Owner, Resolution, UnknownName};
pub use copier::SourceIds;
pub use error::{FileOpsError, Result};
pub use meta::Time;

use kiln_patternmatcher::{ContextFilter, PatternMatcher};
use pattern::{clean, has_wildcards, SourceGlob};

/// What to copy, from where, to where, and how.
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// Root of the source tree (context dir or a rootfs).
    pub src_root: PathBuf,
    /// Source paths or wildcards as written, relative to `src_root` (a
    /// leading `/` or `..` cannot leave it).
    pub sources: Vec<String>,
    /// Root of the destination tree.
    pub dest_root: PathBuf,
    /// Destination as written: absolute, or relative to `workdir`; a
    /// trailing `/` makes it a directory.
    pub dest: String,
    /// The stage's WORKDIR, for a relative `dest`.
    pub workdir: String,
    /// `--chown`, already resolved (see [`resolve_chown`]).
    pub owner: Option<Owner>,
    /// Ownership of copied files without `--chown`.
    pub source_ids: SourceIds,
    /// `--chmod` (an octal mode applies to files and directories alike, and
    /// to the parent directories the copy creates).
    pub mode: Option<Chmod>,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// The build context's `.dockerignore` patterns, anchored at
    /// `src_root` (not at the source): what they drop is not there.
    pub context_exclude: Vec<String>,
    /// ADD: extract local archives.
    pub unpack: bool,
    /// A wildcard that matches nothing is no error (the Dockerfile frontend's
    /// choice, so `COPY go.mod go.sum* ./` works).
    pub allow_empty_wildcard: bool,
    /// Fixed times for everything written (`SOURCE_DATE_EPOCH`); `None`
    /// keeps the source's.
    pub timestamp: Option<Time>,
    /// Incremental copy: the destination already holds the previous result
    /// of the same step (see [`reuse`]); `None` copies everything.
    pub reuse: Option<std::sync::Arc<reuse::Reuse>>,
}

impl CopySpec {
    /// A plain COPY from the build context: no flags, WORKDIR `/`.
    pub fn new(
        src_root: impl Into<PathBuf>,
        sources: Vec<String>,
        dest_root: impl Into<PathBuf>,
        dest: &str,
    ) -> Self {
        CopySpec {
            src_root: src_root.into(),
            sources,
            dest_root: dest_root.into(),
            dest: dest.to_string(),
            workdir: "/".into(),
            owner: None,
            source_ids: SourceIds::Root,
            mode: None,
            parents: false,
            exclude: Vec::new(),
            context_exclude: Vec::new(),
            unpack: false,
            allow_empty_wildcard: true,
            timestamp: None,
            reuse: None,
        }
    }
}

/// What a copy wrote, for progress output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Devices, fifos, socket stubs.
    pub others: u64,
    pub bytes: u64,
    /// Archives extracted (ADD).
    pub archives: u64,
}

/// The destination as BuildKit computes it: relative to WORKDIR, cleaned,
/// with a trailing `/` (or `/.`) kept because it decides file vs directory.
pub fn destination_path(dest: &str, workdir: &str, several_sources: bool) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        let d = if dest.is_empty() || dest == "." {
            "./"
        } else {
            dest
        };
        format!("{}/{}", workdir.trim_end_matches('/'), d)
    };
    let keep_slash = joined.ends_with('/') || joined.ends_with("/.") || several_sources;
    let mut out = clean(&format!("/{joined}"));
    if keep_slash && out != "/" {
        out.push('/');
    }
    out
}

/// BuildKit's `cleanPath` for a source: absolute, cleaned, a trailing `/`
/// or `/.` kept.
fn source_path(s: &str) -> String {
    let mut out = clean(&format!("/{s}"));
    if s.ends_with("/.") {
        if out != "/" {
            out.push('/');
        }
        out.push('.');
    } else if s.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Split a path at its first element holding a wildcard.
fn split_wildcards(p: &str) -> (String, String) {
    let c = clean(p);
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut found = false;
    for part in c.split('/') {
        if !found && has_wildcards(part) {
            found = true;
        }
        if found {
            tail.push(part);
        } else {
            head.push(part);
        }
    }
    let mut h = head.join("/");
    if h.is_empty() {
        h = "/".into();
    }
    (h, tail.join("/"))
}

/// Expand a source wildcard as fsutil's `ResolveWildcards`: the part before
/// the first wildcard is resolved inside the root (symlinks followed), the
/// rest matched against relative paths below it in lexical order, a matched
/// directory not descended. Returns paths relative to the root.
pub fn resolve_wildcards(root: &Path, src: &str) -> Result<Vec<String>> {
    let (d1, d2) = split_wildcards(src);
    if d2.is_empty() {
        return Ok(vec![d1]);
    }
    let base = rootpath::resolve(root, Path::new(&d1), true)?;
    let glob = SourceGlob::new(&d2)?;
    let depth = d2.split('/').count();
    let prefix = base.inner_path().display().to_string();
    let mut out = Vec::new();
    match std::fs::symlink_metadata(&base.host) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(out),
        Err(_) => return Err(FileOpsError::NotFound { path: clean(&d1) }),
    }
    walk_matches(&base.host, "", depth, &glob, &mut |rel| {
        out.push(clean(&format!("{prefix}/{rel}")));
    })?;
    Ok(out)
}

fn walk_matches(
    dir: &Path,
    rel: &str,
    depth: usize,
    glob: &SourceGlob,
    hit: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut entries: Vec<(String, bool)> = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(error::io_err("read", dir))?;
    for e in rd {
        let e = e.map_err(error::io_err("read", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        entries.push((name, is_dir));
    }
    entries.sort();
    for (name, is_dir) in entries {
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if glob.matches(&r) {
            hit(&r);
            continue;
        }
        let level = r.split('/').count();
        if is_dir && level < depth {
            walk_matches(&dir.join(&name), &r, depth, glob, hit)?;
        }
    }
    Ok(())
}

/// How one source of a COPY reads the source tree: where the copy starts
/// and which paths below it it takes. Shared by [`copy`] and
/// [`checksum_sources`] so the cache key covers exactly what is copied.
pub(crate) struct SourcePlan {
    /// The source path (absolute, trailing `/` kept) before wildcard
    /// expansion.
    pub src: String,
    /// `--parents`: the pattern below `src` to keep, with its parents.
    pub include: Option<PatternMatcher>,
    /// `--parents` without wildcards: this path must exist.
    pub required: Option<String>,
}

pub(crate) fn plan_source(s: &str, parents: bool) -> Result<SourcePlan> {
    if !parents {
        return Ok(SourcePlan {
            src: source_path(s),
            include: None,
            required: None,
        });
    }
    let (src, pattern) = match s.split_once("/./") {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => ("/".to_string(), s.to_string()),
    };
    let pattern = clean(&format!("/{pattern}"))
        .trim_start_matches('/')
        .to_string();
    let required = (!has_wildcards(&src) && !has_wildcards(&pattern))
        .then(|| clean(&format!("/{src}/{pattern}")));
    Ok(SourcePlan {
        src: clean(&format!("/{src}")),
        include: Some(pattern::compile(&[pattern])?),
        required,
    })
}

/// Run a COPY or ADD. Each source is copied in turn into the destination;
/// the first failure stops the copy (the caller discards the snapshot).
pub fn copy(spec: &CopySpec) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let dest = destination_path(&spec.dest, &spec.workdir, spec.sources.len() > 1);
    let exclude = pattern::compile(&spec.exclude)?;
    let view = context::ContextView::new(&spec.context_exclude)?;
    for s in &spec.sources {
        let plan = plan_source(s, spec.parents)?;
        if let Some(req) = &plan.required {
            let r = rootpath::resolve(&spec.src_root, Path::new(req), true)?;
            if std::fs::symlink_metadata(&r.host).is_err()
                || view.lookup(&spec.src_root, req)?.is_none()
            {
                return Err(FileOpsError::NotFound { path: req.clone() });
            }
        }
        let wildcard = has_wildcards(&plan.src);
        let matches = if has_wildcards(&plan.src) {
            let m = resolve_wildcards(&spec.src_root, &plan.src)?;
            if m.is_empty() {
                if spec.allow_empty_wildcard {
                    continue;
                }
                return Err(FileOpsError::NoMatch {
                    pattern: plan.src.clone(),
                });
            }
            m
        } else {
            vec![plan.src.clone()]
        };
        let filter = ContextFilter::new(plan.include, Some(exclude.clone()));
        for m in &matches {
            // Ignored by `.dockerignore`: not in the context BuildKit sends.
            let Some(inner) = view.lookup(&spec.src_root, m)? else {
                if wildcard {
                    continue;
                }
                return Err(FileOpsError::NotFound {
                    path: clean(&format!("/{m}")),
                });
            };
            let opts = copier::Opts {
                owner: spec.owner,
                ids: spec.source_ids,
                mode: spec.mode.as_ref(),
                utime: spec.timestamp,
                filter: &filter,
                context: view.outer(&inner),
                reuse: spec.reuse.as_deref(),
            };
            if spec.unpack {
                let src_host = rootpath::host_path(&spec.src_root, Path::new(m), true)?;
                if unpack::is_archive(&src_host) {
                    let d = rootpath::host_path(&spec.dest_root, Path::new(&dest), true)?;
                    copier::mkdir_all(&spec.dest_root, &d, 0o755, spec.owner, spec.timestamp)?;
                    unpack::extract(&src_host, m, &d, spec.owner, &mut report)?;
                    report.archives += 1;
                    continue;
                }
            }
            copier::copy_one(
                &spec.src_root,
                m,
                &spec.dest_root,
                &dest,
                &opts,
                &mut report,
            )?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_follow_buildkit() {
        assert_eq!(destination_path("/dst/", "/", false), "/dst/");
        assert_eq!(
            destination_path("./here.txt", "/app/sub/rel/deeper", false),
            "/app/sub/rel/deeper/here.txt"
        );
        assert_eq!(destination_path(".", "/w", false), "/w/");
        assert_eq!(destination_path("", "/w", false), "/w/");
        assert_eq!(destination_path("/multi", "/", true), "/multi/");
        assert_eq!(destination_path("/", "/", false), "/");
        assert_eq!(source_path("dir/"), "/dir/");
        assert_eq!(source_path("sub/dir1/."), "/sub/dir1/.");
        assert_eq!(source_path("../../a"), "/a");
        assert_eq!(
            split_wildcards("/sub/*/dir2/foo"),
            ("/sub".into(), "*/dir2/foo".into())
        );
        assert_eq!(split_wildcards("/*.md"), ("/".into(), "*.md".into()));
    }
}
