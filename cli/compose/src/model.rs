//! Typed views of the resolved model, for the commands that act on it
//! (`compose build`, later `up`): the JSON tree stays the source of truth
//! (it is what `config` prints); these read the parts a command needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value as J;

use crate::Project;

/// What `compose build` needs of one service's `build:`.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// The service.
    pub service: String,
    /// Absolute context folder.
    pub context: PathBuf,
    /// Dockerfile path relative to the context (or absolute).
    pub dockerfile: Option<String>,
    /// `dockerfile_inline`.
    pub dockerfile_inline: Option<String>,
    /// `args` (null values are left out, as compose does).
    pub args: BTreeMap<String, String>,
    /// `target`.
    pub target: Option<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `cache_from`.
    pub cache_from: Vec<String>,
    /// `cache_to`.
    pub cache_to: Vec<String>,
    /// `platforms`.
    pub platforms: Vec<String>,
    /// `tags` (besides the image name).
    pub tags: Vec<String>,
    /// `no_cache`.
    pub no_cache: bool,
    /// `pull`.
    pub pull: bool,
    /// Build secrets: id and file.
    pub secrets: Vec<(String, PathBuf)>,
    /// `network`.
    pub network: Option<String>,
    /// The image name: `image:` or `<project>-<service>`.
    pub image: String,
}

fn strs(v: Option<&J>) -> Vec<String> {
    v.and_then(J::as_array)
        .map(|a| a.iter().filter_map(J::as_str).map(String::from).collect())
        .unwrap_or_default()
}

fn map(v: Option<&J>) -> BTreeMap<String, String> {
    v.and_then(J::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Project {
    /// The services with a `build:` section, in name order.
    pub fn builds(&self) -> Vec<BuildSpec> {
        let mut out = Vec::new();
        let Some(services) = self.model.get("services").and_then(J::as_object) else {
            return out;
        };
        for (name, svc) in services {
            let Some(b) = svc.get("build") else { continue };
            let image = svc
                .get("image")
                .and_then(J::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("{}-{name}", self.name));
            let secrets = b
                .get("secrets")
                .and_then(J::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            let src = s.get("source")?.as_str()?;
                            let file =
                                self.model.get("secrets")?.get(src)?.get("file")?.as_str()?;
                            let id = s
                                .get("target")
                                .and_then(J::as_str)
                                .unwrap_or(src)
                                .to_string();
                            Some((id, PathBuf::from(file)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(BuildSpec {
                service: name.clone(),
                context: PathBuf::from(b.get("context").and_then(J::as_str).unwrap_or(".")),
                dockerfile: b.get("dockerfile").and_then(J::as_str).map(String::from),
                dockerfile_inline: b
                    .get("dockerfile_inline")
                    .and_then(J::as_str)
                    .map(String::from),
                args: map(b.get("args")),
                target: b.get("target").and_then(J::as_str).map(String::from),
                labels: map(b.get("labels")),
                cache_from: strs(b.get("cache_from")),
                cache_to: strs(b.get("cache_to")),
                platforms: strs(b.get("platforms")),
                tags: strs(b.get("tags")),
                no_cache: b.get("no_cache").and_then(J::as_bool).unwrap_or(false),
                pull: b.get("pull").and_then(J::as_bool).unwrap_or(false),
                secrets,
                network: b.get("network").and_then(J::as_str).map(String::from),
                image,
            });
        }
        out
    }
}
