//! The `--cache-to` / `--cache-from` values, parsed as buildx parses them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use super::object_options::{self, ObjectCache, SECRET_ATTRS};
use super::Error;
use crate::compress::{self, Compression};
use crate::Reference;

/// Which records an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps the final image's layers came from.
    Min,
    /// Every step of the solve that has a record.
    Max,
}

/// Where an export goes (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Registry {
        reference: Reference,
        mode: CacheMode,
        compression: Compression,
        ignore_error: bool,
        /// `cache-mounts=true`: the build's `RUN --mount=type=cache`
        /// folders go with the records.
        cache_mounts: bool,
    },
    Local {
        dest: PathBuf,
        mode: CacheMode,
        compression: Compression,
        ignore_error: bool,
        cache_mounts: bool,
    },
    Inline,
    /// An object store (`type=s3`, `azblob`, `gcs`).
    Object {
        cache: ObjectCache,
        mode: CacheMode,
        compression: Compression,
        ignore_error: bool,
        cache_mounts: bool,
    },
}

/// Where an import comes from (`--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Registry(Reference),
    Local(PathBuf),
    /// An object store (`type=s3`, `azblob`, `gcs`).
    Object(ObjectCache),
}

/// The build's remote cache destinations and sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheOptions {
    pub to: Vec<CacheTo>,
    pub from: Vec<CacheFrom>,
}

impl CacheOptions {
    /// Parses `--cache-to` and `--cache-from` as buildx does;
    /// `BUILDKIT_INLINE_CACHE=1` among the build args means inline.
    pub fn parse(
        to: &[String],
        from: &[String],
        build_args: &BTreeMap<String, String>,
    ) -> Result<CacheOptions, Error> {
        let mut out = CacheOptions {
            to: to.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
            from: from.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
        };
        let inline_arg = build_args
            .get("BUILDKIT_INLINE_CACHE")
            .is_some_and(|v| matches!(v.trim(), "1" | "true"));
        if inline_arg && !out.inline() {
            out.to.push(CacheTo::Inline);
        }
        Ok(out)
    }

    /// Whether an inline cache goes into the image config.
    pub fn inline(&self) -> bool {
        self.to.iter().any(|t| matches!(t, CacheTo::Inline))
    }
}

fn spec(message: String) -> Error {
    Error::Spec(message)
}

/// `k=v,k=v` into pairs; a part without `=` is an error naming it.
fn attrs(s: &str, flag: &str) -> Result<Vec<(String, String)>, Error> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    // The value may carry a credential: quote it only
                    // when it names none.
                    let whole = if SECRET_ATTRS.iter().any(|k| s.contains(k)) {
                        "<redacted>".to_string()
                    } else {
                        format!("{s:?}")
                    };
                    spec(format!(
                        "{flag} {whole}: invalid attribute {p:?}, expected key=value"
                    ))
                })
        })
        .collect()
}

/// Refuses attributes `kind` does not know, naming them and the known ones.
fn check_known(
    flag: &str,
    kind: &str,
    attrs: &[(String, String)],
    allowed: &[&str],
) -> Result<(), Error> {
    let unknown: Vec<&str> = attrs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(spec(format!(
        "{flag}: unknown attribute(s) {} for type={kind} (known: {})",
        unknown.join(", "),
        allowed.join(", ")
    )))
}

fn parse_bool(flag: &str, k: &str, v: &str) -> Result<bool, Error> {
    v.parse()
        .map_err(|_| spec(format!("{flag}: {k}={v:?}: expected true or false")))
}

impl FromStr for CacheTo {
    type Err = Error;

    fn from_str(s: &str) -> Result<CacheTo, Error> {
        const FLAG: &str = "--cache-to";
        let attrs = attrs(s, FLAG)?;
        let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let kind = get("type").ok_or_else(|| spec(format!("{FLAG} {s:?}: type= is required")))?;
        let allowed: &[&str] = match kind {
            "registry" => &[
                "type",
                "ref",
                "mode",
                "compression",
                "ignore-error",
                "oci-mediatypes",
                "image-manifest",
                "cache-mounts",
            ],
            "local" => &[
                "type",
                "dest",
                "mode",
                "compression",
                "ignore-error",
                "oci-mediatypes",
                "image-manifest",
                "cache-mounts",
            ],
            "inline" => &["type"],
            other => match object_options::kind_of(other) {
                Some(k) => {
                    let mut a = vec![
                        "type",
                        "mode",
                        "compression",
                        "ignore-error",
                        "oci-mediatypes",
                        "image-manifest",
                        "cache-mounts",
                    ];
                    a.extend_from_slice(object_options::allowed(k));
                    check_known(FLAG, kind, &attrs, &a)?;
                    &[]
                }
                None => {
                    return Err(spec(format!(
                    "{FLAG}: cache type {other:?} is not supported (registry, local, inline, s3, azblob, gcs)"
                )))
                }
            },
        };
        if object_options::kind_of(kind).is_none() {
            check_known(FLAG, kind, &attrs, allowed)?;
        }
        let mode = match get("mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(m) => return Err(spec(format!("{FLAG}: mode={m:?}: expected min or max"))),
        };
        let compression = match get("compression") {
            None => Compression::Gzip,
            Some(c) => compress::parse_compression(c).map_err(|e| spec(format!("{FLAG}: {e}")))?,
        };
        let ignore_error = match get("ignore-error") {
            None => false,
            Some(v) => parse_bool(FLAG, "ignore-error", v)?,
        };
        let cache_mounts = match get("cache-mounts") {
            None => false,
            Some(v) => parse_bool(FLAG, "cache-mounts", v)?,
        };
        for k in ["oci-mediatypes", "image-manifest"] {
            // kiln always writes an OCI image manifest; only the syntax is
            // checked.
            if let Some(v) = get(k) {
                parse_bool(FLAG, k, v)?;
            }
        }
        match kind {
            "registry" => {
                let r =
                    get("ref").ok_or_else(|| spec(format!("{FLAG}: type=registry needs ref=")))?;
                let reference = Reference::parse(r)
                    .map_err(|e| spec(format!("{FLAG}: invalid ref {r:?}: {e}")))?;
                Ok(CacheTo::Registry {
                    reference,
                    mode,
                    compression,
                    ignore_error,
                    cache_mounts,
                })
            }
            "local" => {
                let dest =
                    get("dest").ok_or_else(|| spec(format!("{FLAG}: type=local needs dest=")))?;
                Ok(CacheTo::Local {
                    dest: PathBuf::from(dest),
                    mode,
                    compression,
                    ignore_error,
                    cache_mounts,
                })
            }
            "inline" => Ok(CacheTo::Inline),
            other => {
                let k = object_options::kind_of(other).ok_or_else(|| {
                    spec(format!("{FLAG}: cache type {other:?} is not supported"))
                })?;
                Ok(CacheTo::Object {
                    cache: ObjectCache::from_attrs(FLAG, k, &attrs)?,
                    mode,
                    compression,
                    ignore_error,
                    cache_mounts,
                })
            }
        }
    }
}

impl FromStr for CacheFrom {
    type Err = Error;

    fn from_str(s: &str) -> Result<CacheFrom, Error> {
        const FLAG: &str = "--cache-from";
        if !s.contains('=') {
            let reference = Reference::parse(s.trim())
                .map_err(|e| spec(format!("{FLAG}: invalid reference {s:?}: {e}")))?;
            return Ok(CacheFrom::Registry(reference));
        }
        let attrs = attrs(s, FLAG)?;
        let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let kind = get("type").unwrap_or("registry");
        let allowed: &[&str] = match kind {
            "registry" => &["type", "ref"],
            "local" => &["type", "src"],
            other => match object_options::kind_of(other) {
                Some(k) => {
                    // The same string as --cache-to is accepted (buildx
                    // users pass one to both); export-only keys are ignored.
                    let mut a = vec![
                        "type",
                        "mode",
                        "compression",
                        "ignore-error",
                        "oci-mediatypes",
                        "image-manifest",
                        "cache-mounts",
                    ];
                    a.extend_from_slice(object_options::allowed(k));
                    check_known(FLAG, kind, &attrs, &a)?;
                    return Ok(CacheFrom::Object(ObjectCache::from_attrs(FLAG, k, &attrs)?));
                }
                None => {
                    return Err(spec(format!(
                        "{FLAG}: cache type {other:?} is not supported (registry, local, s3, azblob, gcs)"
                    )))
                }
            },
        };
        check_known(FLAG, kind, &attrs, allowed)?;
        if kind == "local" {
            let src = get("src").ok_or_else(|| spec(format!("{FLAG}: type=local needs src=")))?;
            return Ok(CacheFrom::Local(PathBuf::from(src)));
        }
        let r = get("ref").ok_or_else(|| spec(format!("{FLAG}: type=registry needs ref=")))?;
        let reference =
            Reference::parse(r).map_err(|e| spec(format!("{FLAG}: invalid ref {r:?}: {e}")))?;
        Ok(CacheFrom::Registry(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_buildx() {
        let args = BTreeMap::new();
        let o = CacheOptions::parse(
            &["type=registry,ref=reg.lan/c:1,mode=max,compression=zstd".into()],
            &["reg.lan/c:1".into(), "type=local,src=/tmp/c".into()],
            &args,
        )
        .unwrap();
        assert!(matches!(
            &o.to[0],
            CacheTo::Registry {
                mode: CacheMode::Max,
                compression: Compression::Zstd,
                ..
            }
        ));
        assert_eq!(o.from[1], CacheFrom::Local(PathBuf::from("/tmp/c")));
        assert!(matches!(&o.from[0], CacheFrom::Registry(_)));
        let e = "type=gha,url=x".parse::<CacheTo>().unwrap_err().to_string();
        assert!(e.contains("\"gha\""), "{e}");
        let e = "type=local,dest=/x,colour=red"
            .parse::<CacheTo>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = "type=local,dest=/x"
            .parse::<CacheFrom>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("dest"), "{e}");
        let mut args = BTreeMap::new();
        args.insert("BUILDKIT_INLINE_CACHE".to_string(), "1".to_string());
        assert!(CacheOptions::parse(&[], &[], &args).unwrap().inline());
    }
}
