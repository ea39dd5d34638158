//! `--metadata-file`: the JSON buildx writes after a build, with the keys
//! its consumers read (CI actions, `docker buildx imagetools`, scripts):
//!
//! - `buildx.build.ref`: `<builder>/<node>/<ref>`; kiln's builder and node
//!   are `kiln`/`kiln0` and the ref is the build's invocation id (the
//!   provenance's `buildInvocationID`, as BuildKit's job id is both).
//! - `buildx.build.provenance` (one platform) or
//!   `buildx.build.provenance/<os/arch>` (several): the SLSA v0.2
//!   predicate of the build record, which BuildKit makes with `mode=max`
//!   whether or not `--provenance` is given; buildx then drops
//!   `buildConfig` and `metadata` unless `BUILDX_METADATA_PROVENANCE=max`,
//!   drops an empty `builder`, and writes nothing with `disabled`/`false`.
//! - `containerimage.digest`, `containerimage.descriptor` (with the
//!   `org.opencontainers.image.created` annotation the image exporter
//!   adds), `containerimage.config.digest` (one platform, no index) and
//!   `image.name` (the names, comma separated), when an image was made.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use crate::attest::{self, ProvenanceMode, ProvenanceOptions, TargetFacts};
use crate::export::Built;

/// The environment variable buildx reads for the provenance it writes in
/// the metadata file.
pub const PROVENANCE_ENV: &str = "BUILDX_METADATA_PROVENANCE";

/// How much provenance the metadata file carries
/// (`BUILDX_METADATA_PROVENANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetadataProvenance {
    /// `buildType`, `materials`, `invocation` (buildx's default).
    #[default]
    Min,
    /// The whole predicate, `buildConfig` and `metadata` included.
    Max,
    /// No provenance key.
    Disabled,
}

impl MetadataProvenance {
    /// buildx's `ParseMetadataProvenance`: `min`, `max`, `disabled`, a
    /// false boolean (disabled); anything else is the default, `min`.
    pub fn parse(v: &str) -> MetadataProvenance {
        match v {
            "min" => MetadataProvenance::Min,
            "max" => MetadataProvenance::Max,
            "disabled" => MetadataProvenance::Disabled,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => MetadataProvenance::Disabled,
            _ => MetadataProvenance::Min,
        }
    }
}

/// The builder and node `buildx.build.ref` names.
pub const BUILDER: &str = "kiln/kiln0";

/// What the metadata file says of the image, when one was made.
pub struct ImageFacts<'a> {
    /// The final manifest or index (as pushed when pushed).
    pub top: &'a Descriptor,
    /// The config digest of a single-platform image.
    pub config: Option<String>,
    /// Every name the image got.
    pub names: Vec<String>,
    /// `org.opencontainers.image.created` for the descriptor.
    pub created: &'a str,
}

/// The provenance predicate buildx writes for one platform: the record's
/// (`mode=max`, SLSA v0.2), cut down as `mode` says.
pub fn provenance(
    ctx: &attest::Context,
    facts: &TargetFacts,
    mode: MetadataProvenance,
) -> Option<Value> {
    if mode == MetadataProvenance::Disabled {
        return None;
    }
    let opts = ProvenanceOptions {
        mode: ProvenanceMode::Max,
        ..Default::default()
    };
    let (_, mut p) = attest::provenance::predicate(&opts, ctx, facts);
    if let Some(obj) = p.as_object_mut() {
        if obj
            .get("builder")
            .and_then(|b| b.get("id"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj.remove("builder");
        }
        if mode == MetadataProvenance::Min {
            obj.remove("buildConfig");
            obj.remove("metadata");
        }
    }
    Some(p)
}

/// The metadata file's document.
pub fn document(
    ctx: &attest::Context,
    built: &[Built],
    facts: &[TargetFacts],
    mode: MetadataProvenance,
    image: Option<ImageFacts<'_>>,
) -> Value {
    let mut meta: BTreeMap<String, Value> = BTreeMap::new();
    meta.insert(
        "buildx.build.ref".into(),
        json!(format!("{BUILDER}/{}", ctx.invocation_id)),
    );
    let none = TargetFacts::default();
    let multi = built.len() > 1;
    for (i, b) in built.iter().enumerate() {
        if let Some(p) = provenance(ctx, facts.get(i).unwrap_or(&none), mode) {
            let key = if multi {
                format!("buildx.build.provenance/{}", b.platform)
            } else {
                "buildx.build.provenance".to_string()
            };
            meta.insert(key, p);
        }
    }
    if let Some(img) = image {
        let top = crate::export::epoch::annotate_created(img.top, img.created);
        meta.insert(
            "containerimage.digest".into(),
            json!(top.digest().to_string()),
        );
        meta.insert("containerimage.descriptor".into(), json!(top));
        if let Some(c) = img.config {
            meta.insert("containerimage.config.digest".into(), json!(c));
        }
        if !img.names.is_empty() {
            meta.insert("image.name".into(), json!(img.names.join(",")));
        }
    }
    json!(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_parse_as_buildx() {
        assert_eq!(MetadataProvenance::parse(""), MetadataProvenance::Min);
        assert_eq!(MetadataProvenance::parse("true"), MetadataProvenance::Min);
        assert_eq!(MetadataProvenance::parse("max"), MetadataProvenance::Max);
        assert_eq!(
            MetadataProvenance::parse("false"),
            MetadataProvenance::Disabled
        );
        assert_eq!(
            MetadataProvenance::parse("disabled"),
            MetadataProvenance::Disabled
        );
    }

    #[test]
    fn min_drops_build_config_metadata_and_empty_builder() {
        let ctx = attest::Context {
            invocation_id: "abc".into(),
            ..Default::default()
        };
        let f = TargetFacts::default();
        let min = provenance(&ctx, &f, MetadataProvenance::Min).unwrap_or_default();
        assert!(min.get("buildConfig").is_none() && min.get("metadata").is_none());
        assert!(min.get("builder").is_none());
        assert!(min.get("buildType").is_some() && min.get("invocation").is_some());
        let max = provenance(&ctx, &f, MetadataProvenance::Max).unwrap_or_default();
        assert_eq!(max["metadata"]["buildInvocationID"], "abc");
        assert!(max.get("buildConfig").is_some());
        assert!(provenance(&ctx, &f, MetadataProvenance::Disabled).is_none());
    }
}
