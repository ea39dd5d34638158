//! `--build-context NAME=VALUE` (buildx's flag): extra contexts a
//! Dockerfile reads by name, with `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME`, as BuildKit's dockerui named contexts:
//!
//! - a folder or a git repository: brought onto disk as the main context
//!   is ([`super::prepare`]'s code) and handed to the worker as one more
//!   local context; its own `.dockerignore` (at its top) applies, as
//!   BuildKit's `namedcontext.go` reads it;
//! - an HTTP URL: a folder with the body as the file `context`, not
//!   unpacked, as BuildKit's `llb.HTTP(url, Filename("context"))`;
//! - `docker-image://REF`: the image `REF` stands in for `NAME`;
//! - `oci-layout://PATH[@DIGEST]`: the image of the OCI layout at `PATH`
//!   is loaded into the store and stands in for `NAME`;
//! - `target:STAGE` is bake's form and is refused, as `buildx build` does.
//!
//! A name is matched as BuildKit matches it
//! ([`kiln_frontend::plan::context_key`]); `NAME::PLATFORM` serves the
//! builds of that platform only, ahead of `NAME`
//! ([`kiln_frontend::plan::find_context`]). A context named as a stage
//! replaces that stage, whose instructions then do not run (BuildKit's
//! dispatch).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_cache::archive::{self, LoadOptions};
use kiln_cache::{Reference, Root};
use kiln_frontend::plan::named_context_key;

use super::{remote, Context};
use crate::{BuildError, BuildOptions};

/// Why a `--build-context` could not be used; buildx's words where it has
/// them.
#[derive(Debug, thiserror::Error)]
pub enum NamedContextError {
    #[error("invalid context value: {0}, expected key=value")]
    Syntax(String),
    #[error("failed to get build context {name}: stat {path}: no such file or directory")]
    Missing { name: String, path: String },
    #[error("failed to get build context path {path}: not a directory")]
    NotDir { path: String },
    #[error("build context {name}: {value}: target: contexts are only supported by bake")]
    Target { name: String, value: String },
    #[error("build context {name}: invalid image reference {value:?}: {reason}")]
    BadImage {
        name: String,
        value: String,
        reason: String,
    },
    #[error("build context {name}: failed to load OCI layout {path}: {reason}")]
    Layout {
        name: String,
        path: String,
        reason: String,
    },
    #[error("invalid context name {name}: {reason}")]
    Platform { name: String, reason: String },
    #[error("build context {name}: OCI layout {path} has no image {digest}")]
    LayoutDigest {
        name: String,
        path: String,
        digest: String,
    },
}

/// Splits one `--build-context` value into its name and source.
pub fn parse_flag(arg: &str) -> Result<(String, String), NamedContextError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.is_empty() => {
            Ok((k.trim().to_string(), v.to_string()))
        }
        _ => Err(NamedContextError::Syntax(arg.to_string())),
    }
}

/// The named contexts of a build, ready: folders for the worker and image
/// aliases for the base resolver. The temporary folders live as long as
/// this.
#[derive(Default)]
pub(crate) struct Named {
    /// Folder contexts by key: the folder and its `.dockerignore` patterns.
    pub dirs: BTreeMap<String, (PathBuf, Vec<String>)>,
    /// Image contexts by key: the reference to resolve in `NAME`'s place.
    pub images: HashMap<String, String>,
    _guards: Vec<tempfile::TempDir>,
}

/// Prepares every `--build-context` of `opts`.
pub(crate) fn prepare(
    opts: &BuildOptions,
    root: &Root,
    rt: &tokio::runtime::Runtime,
) -> Result<Named, BuildError> {
    let mut out = Named::default();
    for (name, value) in &opts.named_contexts {
        let key = named_context_key(name).map_err(|reason| NamedContextError::Platform {
            name: name.clone(),
            reason,
        })?;
        if let Some(r) = value.strip_prefix("docker-image://") {
            let parsed = Reference::parse(r).map_err(|e| NamedContextError::BadImage {
                name: name.clone(),
                value: value.clone(),
                reason: e.to_string(),
            })?;
            out.images.insert(key, parsed.to_string());
        } else if let Some(spec) = value.strip_prefix("oci-layout://") {
            let r = load_layout(name, &key, spec, root)?;
            out.images.insert(key, r);
        } else if value.starts_with("target:") {
            return Err(NamedContextError::Target {
                name: name.clone(),
                value: value.clone(),
            }
            .into());
        } else {
            let (dir, guard) = match Context::parse(value) {
                Context::Git(spec) => {
                    let (tmp, dir) = remote::git(&spec, opts, root)?;
                    (dir, Some(tmp))
                }
                Context::Url(url) => {
                    let (tmp, dir) = download(&url, root, rt)?;
                    (dir, Some(tmp))
                }
                _ => {
                    let p = Path::new(value);
                    if !p.exists() {
                        return Err(NamedContextError::Missing {
                            name: name.clone(),
                            path: value.clone(),
                        }
                        .into());
                    }
                    if !p.is_dir() {
                        return Err(NamedContextError::NotDir {
                            path: value.clone(),
                        }
                        .into());
                    }
                    (std::fs::canonicalize(p)?, None)
                }
            };
            out._guards.extend(guard);
            let excludes = dockerignore(&dir)?;
            out.dirs.insert(key, (dir, excludes));
        }
    }
    Ok(out)
}

/// An HTTP named context as BuildKit's (`llb.HTTP` with the filename
/// `context`): a folder holding the body as the file `context`, never
/// unpacked (unlike the main context's URL form).
fn download(
    url: &str,
    root: &Root,
    rt: &tokio::runtime::Runtime,
) -> Result<(tempfile::TempDir, PathBuf), BuildError> {
    let (tmp, body) = remote::download(url, root, rt, "url-named-context-")?;
    let dir = tmp.path().join("context");
    std::fs::create_dir(&dir)?;
    std::fs::rename(&body, dir.join("context"))?;
    Ok((tmp, dir))
}

/// The patterns of `dir/.dockerignore`, if there is one.
fn dockerignore(dir: &Path) -> Result<Vec<String>, BuildError> {
    let p = dir.join(".dockerignore");
    if !p.is_file() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(&p)?;
    Ok(kiln_frontend::dockerignore::read_all(&bytes)
        .map_err(|e| BuildError::Invalid(format!("{}: {e}", p.display())))?
        .into_iter()
        .map(|p| p.pattern)
        .collect())
}

/// Loads the image of the OCI layout `spec` (`PATH[@DIGEST]`) into the
/// store under a name of kiln's (`kiln-build-context/KEY`), which it
/// returns.
fn load_layout(name: &str, key: &str, spec: &str, root: &Root) -> Result<String, BuildError> {
    // A digest is `@algorithm:hex` at the end; a path may hold `@` too.
    let (path, digest) = match spec.rsplit_once('@') {
        Some((p, d)) if d.contains(':') => (p, Some(d)),
        _ => (spec, None),
    };
    let layout_err = |reason: String| NamedContextError::Layout {
        name: name.to_string(),
        path: path.to_string(),
        reason,
    };
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let r = Reference::parse(&format!("kiln-build-context/{safe}:latest"))
        .map_err(|e| layout_err(e.to_string()))?;
    let report = archive::load(
        root,
        Path::new(path),
        &LoadOptions {
            tag: Some(r.clone()),
        },
    )
    .map_err(|e| layout_err(e.to_string()))?;
    if let Some(d) = digest {
        if !report
            .images
            .iter()
            .any(|i| i.descriptor.digest().to_string() == d)
        {
            return Err(NamedContextError::LayoutDigest {
                name: name.to_string(),
                path: path.to_string(),
                digest: d.to_string(),
            }
            .into());
        }
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        assert_eq!(
            parse_flag("base=docker-image://busybox").unwrap(),
            ("base".into(), "docker-image://busybox".into())
        );
        assert!(parse_flag("nothing").is_err());
        assert!(parse_flag("=x").is_err());
        assert!(parse_flag("x=").is_err());
    }
}
