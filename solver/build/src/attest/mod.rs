//! Supply-chain attestations (`--provenance`, `--sbom`, `--attest`): in-toto
//! statements attached to the image as BuildKit attaches them.
//!
//! Layout (BuildKit's `docs/attestations/attestation-storage.md`, which
//! `docker buildx imagetools inspect` and scanners read): the result
//! becomes an index whose manifests are the platform images followed by
//! one *attestation manifest* per platform, with platform
//! `unknown/unknown` and the annotations `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <image manifest
//! digest>`. Its layers are in-toto statements (`application/vnd.in-toto+
//! json`, annotated `in-toto.io/predicate-type`) whose subject is that
//! image manifest; its config is an `unknown/unknown` image config whose
//! diff_ids are the statements' digests.
//!
//! [`provenance`] makes the SLSA predicate, [`sbom`] the SPDX document.
//! kiln attaches nothing unless asked (docker 28.5's buildx adds
//! `mode=min` provenance on its own for some exports; kiln keeps the image
//! of a plain build unchanged, so its digest is what it always was).

pub mod files;
pub mod provenance;
pub mod sbom;

use std::collections::BTreeMap;

use kiln_cache::compress::{self, Conversion};
use kiln_cache::{media, Digest, Reference, Root};
use kiln_frontend::plan::Platform;
use kiln_solver::ops::{BuildOp, ExecMount, Network};
use kiln_solver::NodeId;
use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use crate::export::{Built, ExportError, Image};

/// The in-toto statement type BuildKit writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
/// Media type of an attestation layer.
pub const MEDIA_IN_TOTO: &str = "application/vnd.in-toto+json";
/// Layer annotation naming the statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// Index annotation: what kind of reference a manifest is.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Index annotation: the manifest an attestation manifest describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The value of [`ANNOTATION_REFERENCE_TYPE`] on attestation manifests.
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";
/// SLSA provenance v0.2 (BuildKit's default).
pub const PREDICATE_SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1 (`version=v1`).
pub const PREDICATE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// An SPDX document.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// Why the attestation flags were refused or an attestation could not be
/// made.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A flag value is malformed (buildx's words where it has them).
    #[error("{0}")]
    Spec(String),
    /// Writing the attestation into the store failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How much the provenance says (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    /// No build arguments, secrets or build steps (BuildKit's default).
    #[default]
    Min,
    /// Everything: build arguments, secret and ssh ids, the build steps.
    Max,
}

/// Which SLSA provenance format (`version=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceVersion {
    /// `https://slsa.dev/provenance/v0.2`, BuildKit's default.
    #[default]
    V02,
    /// `https://slsa.dev/provenance/v1`.
    V1,
}

/// `--provenance` / `--attest type=provenance,…`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceOptions {
    pub mode: ProvenanceMode,
    pub version: ProvenanceVersion,
    /// `builder-id=`: `builder.id` (empty without it, as BuildKit's).
    pub builder_id: Option<String>,
    /// `reproducible=true`: the result claims to be reproducible.
    pub reproducible: bool,
}

/// The attestations a build attaches; the default attaches none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttestOptions {
    pub provenance: Option<ProvenanceOptions>,
    /// `--sbom=true` / `--attest type=sbom`: an SPDX document of the
    /// packages in the image.
    pub sbom: bool,
}

impl AttestOptions {
    /// True when nothing is attached (the image is exactly the plain one).
    pub fn is_empty(&self) -> bool {
        self.provenance.is_none() && !self.sbom
    }
}

fn parse_bool(k: &str, v: &str) -> Result<bool, AttestError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(AttestError::Spec(format!(
            "invalid value {v:?} for {k}: expected true or false"
        ))),
    }
}

/// buildx's canonical form of `--provenance V` / `--sbom V`: a boolean
/// enables or disables, anything else is the attestation's options.
fn canonical(kind: &str, value: &str) -> String {
    match parse_bool(kind, value) {
        Ok(b) => format!("type={kind},disabled={}", !b),
        Err(_) => format!("type={kind},{value}"),
    }
}

/// Parses the flags as buildx does: `--attest` entries
/// (`type=provenance|sbom[,disabled=true][,mode=min|max][,version=v0.2|v1]
/// [,builder-id=…][,reproducible=true]`), then `--provenance` and `--sbom`
/// (`true`, `false` or such options); an attestation type given twice is
/// refused.
pub fn parse(
    provenance: Option<&str>,
    sbom: Option<&str>,
    attest: &[String],
) -> Result<AttestOptions, AttestError> {
    let mut all: Vec<String> = attest.to_vec();
    if let Some(p) = provenance.filter(|p| !p.trim().is_empty()) {
        all.push(canonical("provenance", p));
    }
    if let Some(s) = sbom.filter(|s| !s.trim().is_empty()) {
        all.push(canonical("sbom", s));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = AttestOptions::default();
    for entry in all.iter().filter(|e| !e.trim().is_empty()) {
        let mut fields = BTreeMap::new();
        for part in entry.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                AttestError::Spec(format!(
                    "invalid attestation option {part:?}: expected key=value"
                ))
            })?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let kind = fields
            .remove("type")
            .ok_or_else(|| AttestError::Spec(format!("attestation type not specified: {entry}")))?;
        if !seen.insert(kind.clone()) {
            return Err(AttestError::Spec(format!(
                "duplicate attestation field {kind}"
            )));
        }
        let disabled = match fields.remove("disabled") {
            Some(v) => parse_bool("disabled", &v)?,
            None => false,
        };
        match kind.as_str() {
            "provenance" => {
                let mut p = ProvenanceOptions::default();
                for (k, v) in fields {
                    match k.as_str() {
                        "mode" => {
                            p.mode = match v.as_str() {
                                "min" => ProvenanceMode::Min,
                                "max" => ProvenanceMode::Max,
                                _ => {
                                    return Err(AttestError::Spec(format!(
                                        "invalid provenance mode {v:?} (min, max)"
                                    )))
                                }
                            }
                        }
                        "version" => {
                            p.version = match v.as_str() {
                                "v0.2" | "v02" | PREDICATE_SLSA_V02 => ProvenanceVersion::V02,
                                "v1" | "v1.0" | "v1.1" | PREDICATE_SLSA_V1 => ProvenanceVersion::V1,
                                _ => {
                                    return Err(AttestError::Spec(format!(
                                        "invalid provenance version {v:?} (v0.2, v1)"
                                    )))
                                }
                            }
                        }
                        "builder-id" => p.builder_id = Some(v),
                        "reproducible" => p.reproducible = parse_bool("reproducible", &v)?,
                        // BuildKit's other knobs (filename, inline-only…)
                        // change nothing kiln writes.
                        _ => {}
                    }
                }
                out.provenance = (!disabled).then_some(p);
            }
            "sbom" => out.sbom = !disabled,
            other => {
                return Err(AttestError::Spec(format!(
                    "unsupported attestation type {other:?} (provenance, sbom)"
                )))
            }
        }
    }
    Ok(out)
}

/// A base image the build used, for provenance materials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The normalised reference, as the `FROM` resolved it.
    pub reference: String,
    /// The platform it was used for.
    pub platform: Platform,
    /// The digest the reference pinned: the tag's target in the store (an
    /// index or a manifest), as BuildKit pins it when it resolves a tag.
    pub digest: String,
}

/// What the provenance of one platform's image is made of, besides what
/// [`Context`] holds for the whole build.
#[derive(Debug, Clone, Default)]
pub struct TargetFacts {
    /// Base images in the target's graph.
    pub materials: Vec<Material>,
    /// Some step could reach the network (a RUN not `--network=none`).
    pub network: bool,
    /// `mode=max`'s build steps: kiln's ops of the target, inputs first.
    pub steps: Vec<Value>,
    /// The secrets its RUN steps mount: id and whether optional (ids
    /// only: values never enter an attestation).
    pub secrets: BTreeMap<String, bool>,
    /// The ssh agents its RUN steps mount, likewise.
    pub ssh: BTreeMap<String, bool>,
}

/// What the build was asked, for provenance: the same for every platform.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The Dockerfile's name as the client gave it (`Dockerfile`).
    pub entry_point: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `--platform` as given (empty when not given).
    pub platforms: Vec<Platform>,
    /// RFC 3339 times the build started and finished.
    pub started: String,
    pub finished: String,
    /// The id shared by every platform's provenance of this build.
    pub invocation_id: String,
    /// The image's `created` time (SBOM creation time).
    pub created: String,
}

/// Now, RFC 3339 UTC (provenance times are the build's real times, not
/// `SOURCE_DATE_EPOCH`, as BuildKit's).
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::export::rfc3339(secs)
}

/// An id for this build's invocation: 25 characters as BuildKit's build
/// refs, from the time and the process.
pub fn invocation_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = Digest::of(format!("{nanos}:{}", std::process::id()).as_bytes());
    d.hex()[..25].to_string()
}

/// What each target's provenance needs from the lowered graph: its base
/// images (pinned as the store names them), whether a step had the
/// network, and (for `mode=max`) its ops, inputs first.
pub fn target_facts(
    root: &Root,
    graph: &kiln_solver::Graph<BuildOp>,
    targets: &[NodeId],
    default_network: Network,
) -> Vec<TargetFacts> {
    targets
        .iter()
        .map(|t| {
            let nodes = graph.closure(&[*t]);
            let mut f = TargetFacts::default();
            let mut step_of = std::collections::HashMap::new();
            for (i, n) in nodes.iter().enumerate() {
                step_of.insert(*n, format!("step{i}"));
                let op = graph.op(*n);
                match op {
                    BuildOp::Image {
                        reference,
                        platform,
                        manifest,
                    } => f.materials.push(Material {
                        reference: reference.clone(),
                        platform: platform.clone(),
                        digest: pinned(root, reference)
                            .or_else(|| manifest.clone())
                            .unwrap_or_default(),
                    }),
                    BuildOp::Exec(e) => {
                        let net = match e.network {
                            Network::Default => default_network,
                            other => other,
                        };
                        f.network |= net != Network::None;
                        for m in &e.mounts {
                            // Optional when any step may go without it.
                            let (set, id, required) = match m {
                                ExecMount::Secret { id, required, .. } => {
                                    (&mut f.secrets, id, *required)
                                }
                                ExecMount::Ssh { id, required, .. } => (&mut f.ssh, id, *required),
                                _ => continue,
                            };
                            *set.entry(id.clone()).or_insert(false) |= !required;
                        }
                    }
                    _ => {}
                }
                let inputs: Vec<String> = graph
                    .inputs(*n)
                    .iter()
                    .filter_map(|i| step_of.get(i).map(|s| format!("{s}:0")))
                    .collect();
                f.steps.push(json!({
                    "id": format!("step{i}"),
                    "op": serde_json::to_value(op).unwrap_or(Value::Null),
                    "digest": format!("sha256:{}", graph.digest(*n).to_hex()),
                    "inputs": inputs,
                }));
            }
            f
        })
        .collect()
}

/// The digest `reference` pins: its own digest, else what the tag names
/// in the store.
fn pinned(root: &Root, reference: &str) -> Option<String> {
    let r = Reference::parse(reference).ok()?;
    if let Some(d) = r.digest() {
        return Some(d.to_string());
    }
    let d = root.images().get(&r).ok()??;
    Some(d.digest().to_string())
}

/// The package URL of an image reference for `platform`, as BuildKit's
/// `purl.RefToPURL` writes it: `pkg:docker/busybox@1.35?platform=linux%2Famd64`.
pub fn image_purl(reference: &str, platform: Option<&Platform>) -> String {
    let (name, version, digest) = match Reference::parse(reference) {
        Ok(r) => {
            let digest = r.digest().map(|d| d.to_string());
            let version = match (r.tag(), &digest) {
                (Some(t), _) => Some(t.to_string()),
                (None, Some(d)) => Some(d.clone()),
                (None, None) => Some("latest".to_string()),
            };
            let digest = if r.tag().is_some() { digest } else { None };
            (r.familiar_name(), version, digest)
        }
        Err(_) => (reference.to_string(), None, None),
    };
    let mut s = format!("pkg:docker/{name}");
    if let Some(v) = version {
        s.push('@');
        s.push_str(&v.replace(':', "%3A"));
    }
    let mut q = Vec::new();
    if let Some(d) = digest {
        q.push(format!("digest={}", d.replace(':', "%3A")));
    }
    if let Some(p) = platform {
        q.push(format!("platform={}", p.to_string().replace('/', "%2F")));
    }
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q.join("&"));
    }
    s
}

/// An in-toto statement about the image manifest `subject`.
pub fn statement(
    subject_names: &[String],
    subject: &Digest,
    predicate_type: &str,
    predicate: Value,
) -> Value {
    let subjects: Vec<Value> = subject_names
        .iter()
        .map(|n| json!({"name": n, "digest": {subject.algorithm(): subject.hex()}}))
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "predicateType": predicate_type,
        "subject": subjects,
        "predicate": predicate,
    })
}

fn to_bytes(v: &Value) -> Result<Vec<u8>, AttestError> {
    serde_json::to_vec(v).map_err(|e| AttestError::Spec(format!("encoding JSON: {e}")))
}

fn descriptor(v: Value) -> Result<Descriptor, AttestError> {
    serde_json::from_value(v).map_err(|e| AttestError::Spec(format!("building a descriptor: {e}")))
}

fn digest_of(d: &Descriptor) -> Result<Digest, AttestError> {
    Ok(d.digest().to_string().parse()?)
}

/// One attestation of one platform, before it becomes a statement: what
/// it says and the file name BuildKit gives it where attestations are
/// written as files (`type=local`, `type=tar`).
#[derive(Debug, Clone)]
pub struct Predicate {
    pub predicate_type: &'static str,
    /// BuildKit's attestation path: `provenance.json`, `sbom.spdx.json`.
    pub file_name: &'static str,
    pub predicate: Value,
}

/// The file BuildKit's provenance attestation is (`provenance.json`).
pub const PROVENANCE_FILE: &str = "provenance.json";
/// The file the SBOM scanner writes (`sbom.spdx.json`).
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// The predicates `opts` asks for about one platform's result `b`, in
/// BuildKit's order: the SBOM, then the provenance (its control API runs
/// the SBOM processor before the provenance processor, each appending to
/// the result's attestations). The one place both the attestation
/// manifests and the attestation files get them from.
pub fn predicates(
    root: &Root,
    opts: &AttestOptions,
    ctx: &Context,
    b: &Built,
    facts: &TargetFacts,
    names: &[String],
) -> Result<Vec<Predicate>, AttestError> {
    let mut out = Vec::new();
    if opts.sbom {
        out.push(Predicate {
            predicate_type: PREDICATE_SPDX,
            file_name: SBOM_FILE,
            predicate: sbom::document(root, b, names, &ctx.created)?,
        });
    }
    if let Some(p) = &opts.provenance {
        let (predicate_type, predicate) = provenance::predicate(p, ctx, facts);
        out.push(Predicate {
            predicate_type,
            file_name: PROVENANCE_FILE,
            predicate,
        });
    }
    Ok(out)
}

/// The subject names of an image's statements: the package URL of each
/// tag for the platform, else `_`, as BuildKit's image exporter.
pub fn subject_names(tags: &[Reference], platform: &Platform) -> Vec<String> {
    if tags.is_empty() {
        vec!["_".to_string()]
    } else {
        tags.iter()
            .map(|t| image_purl(&t.to_string(), Some(platform)))
            .collect()
    }
}

/// The layers exports will write: the conversion of the first archive
/// output, else gzip (what a push or an archive writes by default), so
/// the statements' subject is the manifest that leaves the store.
pub fn conversion_for(outputs: &[crate::Output]) -> Conversion {
    outputs
        .iter()
        .find_map(|o| match o {
            crate::Output::Oci(_, c) | crate::Output::Docker(_, c) => Some(*c),
            _ => None,
        })
        .unwrap_or_default()
}

/// Makes the attestations `opts` asks for, one attestation manifest per
/// platform image, and returns the entries of the index BuildKit writes:
/// the images first, then their attestation manifests. The images are
/// first converted as `conv` says (their manifests' digests are the
/// statements' subjects; an export with the same conversion leaves them as
/// they are). The index itself is written by the one index path,
/// [`crate::export::image::index_of`], so `--annotation index:…` applies
/// to it as to any index.
#[allow(clippy::too_many_arguments)]
pub fn manifests(
    root: &Root,
    opts: &AttestOptions,
    ctx: &Context,
    images: &[Image],
    built: &[Built],
    facts: &[TargetFacts],
    tags: &[Reference],
    conv: &Conversion,
) -> Result<Vec<Descriptor>, AttestError> {
    let mut image_entries = Vec::with_capacity(images.len());
    let mut attest_entries = Vec::with_capacity(images.len());
    let empty = TargetFacts::default();
    for (i, (image, b)) in images.iter().zip(built).enumerate() {
        let converted = compress::convert(root, &image.manifest, conv)?.descriptor;
        let subject = digest_of(&converted)?;
        let names = subject_names(tags, &b.platform);
        let f = facts.get(i).unwrap_or(&empty);
        let statements: Vec<(&str, Value)> = predicates(root, opts, ctx, b, f, &names)?
            .into_iter()
            .map(|p| {
                let st = statement(&names, &subject, p.predicate_type, p.predicate);
                (p.predicate_type, st)
            })
            .collect();
        let blobs = root.blobs();
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (ptype, st) in &statements {
            let bytes = to_bytes(st)?;
            let d = blobs.put(&bytes)?;
            layers.push(json!({
                "mediaType": MEDIA_IN_TOTO,
                "digest": d.to_string(),
                "size": bytes.len(),
                "annotations": {ANNOTATION_PREDICATE_TYPE: ptype},
            }));
            diff_ids.push(d.to_string());
        }
        let config = to_bytes(&json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        let config_digest = blobs.put(&config)?;
        let manifest = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        }))?;
        let manifest_digest = blobs.put(&manifest)?;
        attest_entries.push(json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {
                ANNOTATION_REFERENCE_DIGEST: subject.to_string(),
                ANNOTATION_REFERENCE_TYPE: REFERENCE_TYPE_ATTESTATION,
            },
            "platform": {"architecture": "unknown", "os": "unknown"},
        }));
        image_entries.push(
            serde_json::to_value(&converted)
                .map_err(|e| AttestError::Spec(format!("encoding the image descriptor: {e}")))?,
        );
    }
    image_entries.extend(attest_entries);
    image_entries.into_iter().map(descriptor).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_buildx() {
        let p = parse(Some("mode=max"), Some("true"), &[]).ok();
        assert_eq!(
            p,
            Some(AttestOptions {
                provenance: Some(ProvenanceOptions {
                    mode: ProvenanceMode::Max,
                    ..Default::default()
                }),
                sbom: true,
            })
        );
        let p = parse(Some("true"), None, &[]).ok();
        assert_eq!(
            p.and_then(|p| p.provenance).map(|p| p.mode),
            Some(ProvenanceMode::Min)
        );
        assert_eq!(
            parse(Some("false"), Some("false"), &[]).ok(),
            Some(AttestOptions::default())
        );
        let a = parse(
            None,
            None,
            &[
                "type=provenance,mode=max,version=v1".into(),
                "type=sbom".into(),
            ],
        )
        .ok();
        assert_eq!(
            a.as_ref()
                .and_then(|a| a.provenance.clone())
                .map(|p| p.version),
            Some(ProvenanceVersion::V1)
        );
        assert!(a.is_some_and(|a| a.sbom));
        assert!(parse(Some("true"), None, &["type=provenance".into()]).is_err());
        assert!(parse(None, None, &["type=nope".into()]).is_err());
        assert!(parse(Some("mode=huge"), None, &[]).is_err());
        assert!(parse(None, None, &["mode=max".into()]).is_err());
        assert!(parse(None, None, &[]).is_ok_and(|a| a.is_empty()));
    }

    #[test]
    fn purls_are_buildkits() {
        let amd64 = Platform::parse("linux/amd64").ok();
        assert_eq!(
            image_purl("docker.io/library/busybox:1.35", amd64.as_ref()),
            "pkg:docker/busybox@1.35?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("localhost:5000/a/b", None),
            "pkg:docker/localhost:5000/a/b@latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            image_purl(&format!("alpine@{d}"), None),
            format!("pkg:docker/alpine@sha256%3A{}", "a".repeat(64))
        );
    }
}
