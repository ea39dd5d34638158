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
//! - `oci-layout://PATH[:TAG][@DIGEST]`: one image of the OCI layout at
//!   `PATH` (by digest, else by tag, else the only one) is loaded into the
//!   store and stands in for `NAME`;
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
use kiln_cache::{media, Reference, Root};
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
    /// buildx's words, then which images there were to choose from.
    #[error(
        "oci-layout reference {value:?} could not be resolved: failed to resolve digest \
         (the layout lists {count} images and none is tagged {tag:?}; \
         choose one with :TAG or @DIGEST)"
    )]
    LayoutAmbiguous {
        value: String,
        count: usize,
        tag: String,
    },
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

/// `PATH[:TAG][@DIGEST]` of an `oci-layout://` value, split as buildx's
/// `ocilayout.Parse`: a trailing digest, then a trailing tag; `latest` when
/// neither is given.
fn split_layout_spec(spec: &str) -> (&str, Option<&str>, Option<&str>) {
    let mut path = spec;
    let mut digest = None;
    if let Some((p, d)) = path.rsplit_once('@') {
        if d.parse::<kiln_cache::Digest>().is_ok() {
            path = p;
            digest = Some(d);
        }
    }
    let mut tag = None;
    if let Some((p, t)) = path.rsplit_once(':') {
        let ok = t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if ok && !p.is_empty() {
            path = p;
            tag = Some(t);
        }
    }
    if tag.is_none() && digest.is_none() {
        tag = Some("latest");
    }
    (path, tag, digest)
}

/// Loads one image of the OCI layout `spec` (`PATH[:TAG][@DIGEST]`) into
/// the store under a name of kiln's (`kiln-build-context/KEY`), which it
/// returns. The image is the digest's when given (listed in `index.json`
/// or not), else the one tagged `TAG` (`io.containerd.image.name`, then
/// `org.opencontainers.image.ref.name`, as buildx's `resolveDigest`), else
/// the layout's only one; an index is then chosen from by platform when
/// the stage is resolved.
fn load_layout(name: &str, key: &str, spec: &str, root: &Root) -> Result<String, BuildError> {
    let (path, tag, digest) = split_layout_spec(spec);
    let layout_err = |reason: String| NamedContextError::Layout {
        name: name.to_string(),
        path: path.to_string(),
        reason,
    };
    let index = archive::layout_index(Path::new(path)).map_err(|e| layout_err(e.to_string()))?;
    let desc = match (digest, tag) {
        (Some(d), _) => {
            let listed = index
                .manifests()
                .iter()
                .find(|m| m.digest().to_string() == d)
                .cloned();
            let found = match listed {
                Some(m) => Some(m),
                None => {
                    let parsed: kiln_cache::Digest = d
                        .parse()
                        .map_err(|e: kiln_cache::Error| layout_err(e.to_string()))?;
                    archive::layout_blob_descriptor(Path::new(path), &parsed)
                        .map_err(|e| layout_err(e.to_string()))?
                }
            };
            found.ok_or_else(|| NamedContextError::LayoutDigest {
                name: name.to_string(),
                path: path.to_string(),
                digest: d.to_string(),
            })?
        }
        (None, tag) => {
            let tag = tag.unwrap_or("latest");
            let by = |annotation: &str| {
                index.manifests().iter().find(|m| {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get(annotation))
                        .is_some_and(|v| v == tag)
                })
            };
            let single = match index.manifests().as_slice() {
                [one] => Some(one),
                _ => None,
            };
            by(media::ANNOTATION_CONTAINERD_NAME)
                .or_else(|| by(media::ANNOTATION_REF_NAME))
                .or(single)
                .cloned()
                .ok_or_else(|| NamedContextError::LayoutAmbiguous {
                    value: format!("oci-layout://{spec}"),
                    count: index.manifests().len(),
                    tag: tag.to_string(),
                })?
        }
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
    archive::load_layout_image(
        root,
        Path::new(path),
        &desc,
        &LoadOptions {
            tag: Some(r.clone()),
        },
    )
    .map_err(|e| layout_err(e.to_string()))?;
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_spec_split_as_buildx() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(split_layout_spec("/l"), ("/l", Some("latest"), None));
        assert_eq!(split_layout_spec("/l:v1"), ("/l", Some("v1"), None));
        assert_eq!(split_layout_spec(&format!("/l@{d}")), ("/l", None, Some(d)));
        assert_eq!(
            split_layout_spec(&format!("/l:v1@{d}")),
            ("/l", Some("v1"), Some(d))
        );
        // A colon inside a path is not a tag.
        assert_eq!(
            split_layout_spec("/a:b/l"),
            ("/a:b/l", Some("latest"), None)
        );
    }

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
