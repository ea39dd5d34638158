//! Image names, normalised the way docker normalises them.
//!
//! Users type `busybox`, `alpine:3.19`, `localhost:5000/app@sha256:…`; the
//! store and registries need one canonical spelling so that `busybox` and
//! `docker.io/library/busybox:latest` are the same image everywhere.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag an untagged, undigested name means.
pub const DEFAULT_TAG: &str = "latest";

/// A fully-qualified image reference: registry, repository, and a tag, a
/// digest, or both.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a name as `docker pull` would; a bare name gets
    /// the `latest` tag.
    pub fn parse(s: &str) -> Result<Reference> {
        let mut r = Self::parse_name(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses without adding a default tag, for places where "no tag" means
    /// "every tag" (e.g. `kiln images busybox`).
    pub fn parse_name(s: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty name"));
        }
        if s.len() > 4096 {
            return Err(bad("name too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it
        // (otherwise the ':' belongs to a registry port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| bad(&r.to_string()))?;
        }
        let (registry, repository) = split_domain(name);
        let registry = registry.map_err(|r| bad(&r.to_string()))?;
        if repository.is_empty() {
            return Err(bad("empty repository"));
        }
        for component in repository.split('/') {
            validate_component(component).map_err(|r| bad(&r.to_string()))?;
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path on the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, the full name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as docker shows it in tables: no `docker.io/`, no
    /// `library/`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short form docker prints, e.g. `busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    /// `familiar_name:tag` without any digest, as docker's RepoTags holds.
    pub fn familiar_tagged(&self) -> String {
        format!(
            "{}:{}",
            self.familiar_name(),
            self.tag.as_deref().unwrap_or(DEFAULT_TAG)
        )
    }

    /// The same name with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            value: tag.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same name pinned to a digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

/// What part of a reference is malformed (the reason of
/// [`Error::InvalidReference`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadPart {
    #[error("invalid registry {0:?}")]
    Registry(String),
    #[error("invalid port in registry {0:?}")]
    Port(String),
    #[error("empty path component")]
    EmptyComponent,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid path component {0:?}")]
    Component(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
}

/// Splits off the registry as docker does: the first component is a
/// registry only if it has a '.', a ':' or is `localhost`.
fn split_domain(name: &str) -> (std::result::Result<String, BadPart>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let domain = if first == "index.docker.io" || first == "registry-1.docker.io" {
                DOCKER_HUB.to_string()
            } else {
                first.to_string()
            };
            (validate_domain(&domain).map(|_| domain), rest)
        }
        _ => (Ok(DOCKER_HUB.to_string()), name),
    }
}

fn validate_domain(d: &str) -> std::result::Result<(), BadPart> {
    // `[v6addr]:port` keeps its colons inside the brackets.
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) if !h.is_empty() => match tail {
                "" => (h, None),
                t => match t.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(BadPart::Registry(d.to_string())),
                },
            },
            _ => return Err(BadPart::Registry(d.to_string())),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadPart::Port(d.to_string()));
        }
    }
    let v6 = d.starts_with('[');
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || (v6 && b == b':'))
        && !host.starts_with(['-', '.'])
        && !host.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(BadPart::Registry(d.to_string()))
    }
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__`
/// or runs of `-`.
fn validate_component(c: &str) -> std::result::Result<(), BadPart> {
    if c.is_empty() {
        return Err(BadPart::EmptyComponent);
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(BadPart::Uppercase);
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(BadPart::Component(c.to_string()));
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(BadPart::Component(c.to_string()));
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(t: &str) -> std::result::Result<(), BadPart> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BadPart::Tag(t.to_string()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse_name(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.35"), "docker.io/library/busybox:1.35");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            full("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(full("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(full("localhost/app:v1"), "localhost/app:v1");
        assert_eq!(full("ghcr.io/a/b/c:t"), "ghcr.io/a/b/c:t");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            full(&format!("alpine@{d}")),
            format!("docker.io/library/alpine@{d}")
        );
        assert_eq!(
            full(&format!("alpine:3@{d}")),
            format!("docker.io/library/alpine:3@{d}")
        );
        let r = Reference::parse("localhost:5000/app").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "app");
        assert_eq!(r.familiar(), "localhost:5000/app:latest");
        let r = Reference::parse("busybox").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(
            Reference::parse("user/app").map(|r| r.familiar()).ok(),
            Some("user/app:latest".into())
        );
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "Busybox",
            "a:b:c",
            "a@sha256:00",
            "-a",
            "a//b",
            "a/",
            "a:",
            "a..b",
            "a:t@",
            "ex ample",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
