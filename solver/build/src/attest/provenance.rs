//! SLSA provenance as BuildKit writes it (`solver/llbsolver/provenance`,
//! `docs/attestations/slsa-definitions.md`): v0.2 by default, v1 with
//! `version=v1`.
//!
//! Both modes carry the builder id, the build type, the config source (the
//! Dockerfile's name), the frontend (`dockerfile.v0`), the `target` and
//! `platform` arguments, the locals (context and Dockerfile), the base
//! images as materials with their digests, the times, and completeness.
//! `mode=min` leaves out the build arguments (so the parameters are not
//! complete), secrets and ssh ids, and the build steps; `mode=max` has
//! them all. kiln has no LLB: `buildConfig` lists kiln's own ops
//! (`BuildOp`, inputs first), which is what the build ran.

use std::collections::BTreeMap;

use kiln_frontend::plan::Platform;
use serde_json::{json, Map, Value};

use super::{
    image_purl, Context, ProvenanceMode, ProvenanceOptions, ProvenanceVersion, TargetFacts,
    PREDICATE_SLSA_V02, PREDICATE_SLSA_V1,
};

/// BuildKit's v0.2 build type.
pub const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";
/// BuildKit's v1 build type.
pub const BUILD_TYPE_V1: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// The frontend BuildKit names for Dockerfile builds.
pub const FRONTEND: &str = "dockerfile.v0";

/// The frontend's arguments as BuildKit receives them (`build-arg:K`,
/// `target`, `platform`), build arguments only in `mode=max`.
fn args(p: &ProvenanceOptions, ctx: &Context) -> Map<String, Value> {
    let mut args = Map::new();
    if p.mode == ProvenanceMode::Max {
        for (k, v) in &ctx.build_args {
            args.insert(format!("build-arg:{k}"), json!(v));
        }
    }
    if let Some(t) = &ctx.target {
        args.insert("target".into(), json!(t));
    }
    if !ctx.platforms.is_empty() {
        let ps: Vec<String> = ctx.platforms.iter().map(Platform::to_string).collect();
        args.insert("platform".into(), json!(ps.join(",")));
    }
    args
}

/// `invocation.parameters` (v0.2) / `externalParameters.request` (v1).
fn request(p: &ProvenanceOptions, ctx: &Context, f: &TargetFacts) -> Value {
    let mut r = json!({
        "frontend": FRONTEND,
        "args": args(p, ctx),
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    });
    if p.mode == ProvenanceMode::Max {
        let list = |m: &BTreeMap<String, bool>| -> Vec<Value> {
            m.iter()
                .map(|(id, optional)| json!({"id": id, "optional": optional}))
                .collect()
        };
        let (secrets, ssh) = (list(&f.secrets), list(&f.ssh));
        if !secrets.is_empty() {
            r["secrets"] = json!(secrets);
        }
        if !ssh.is_empty() {
            r["ssh"] = json!(ssh);
        }
    }
    r
}

fn materials(f: &TargetFacts) -> Vec<Value> {
    let mut seen = BTreeMap::new();
    for m in &f.materials {
        let uri = image_purl(&m.reference, Some(&m.platform));
        let (alg, hex) = m.digest.split_once(':').unwrap_or(("sha256", &m.digest));
        seen.entry(uri.clone())
            .or_insert_with(|| json!({"uri": uri, "digest": {alg: hex}}));
    }
    seen.into_values().collect()
}

/// The predicate type and predicate of one platform's provenance.
pub fn predicate(p: &ProvenanceOptions, ctx: &Context, f: &TargetFacts) -> (&'static str, Value) {
    let max = p.mode == ProvenanceMode::Max;
    // A build from a local context cannot name all it used.
    let complete_materials = false;
    let complete_params = max;
    let hermetic = !f.network && complete_materials;
    let builder_id = p.builder_id.clone().unwrap_or_default();
    let host = Platform::host().to_string();
    let build_config = json!({"llbDefinition": f.steps});
    match p.version {
        ProvenanceVersion::V02 => {
            let mut pred = json!({
                "builder": {"id": builder_id},
                "buildType": BUILD_TYPE_V02,
                "materials": materials(f),
                "invocation": {
                    "configSource": {"entryPoint": ctx.entry_point},
                    "parameters": request(p, ctx, f),
                    "environment": {"platform": host},
                },
                "metadata": {
                    "buildInvocationID": ctx.invocation_id,
                    "buildStartedOn": ctx.started,
                    "buildFinishedOn": ctx.finished,
                    "completeness": {
                        "parameters": complete_params,
                        "environment": true,
                        "materials": complete_materials,
                    },
                    "reproducible": p.reproducible,
                    "https://mobyproject.org/buildkit@v1#hermetic": hermetic,
                },
            });
            if max {
                pred["buildConfig"] = build_config;
            }
            (PREDICATE_SLSA_V02, pred)
        }
        ProvenanceVersion::V1 => {
            let mut internal = json!({"builderPlatform": host});
            if max {
                internal["buildConfig"] = build_config;
            }
            let pred = json!({
                "buildDefinition": {
                    "buildType": BUILD_TYPE_V1,
                    "externalParameters": {
                        "configSource": {"path": ctx.entry_point},
                        "request": request(p, ctx, f),
                    },
                    "internalParameters": internal,
                    "resolvedDependencies": materials(f),
                },
                "runDetails": {
                    "builder": {"id": builder_id},
                    "metadata": {
                        "invocationID": ctx.invocation_id,
                        "startedOn": ctx.started,
                        "finishedOn": ctx.finished,
                        "buildkit_hermetic": hermetic,
                        "buildkit_completeness": {
                            "request": complete_params,
                            "resolvedDependencies": complete_materials,
                        },
                        "buildkit_reproducible": p.reproducible,
                    },
                },
            });
            (PREDICATE_SLSA_V1, pred)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Material;

    fn ctx() -> Context {
        Context {
            entry_point: "Dockerfile".into(),
            build_args: [("A".to_string(), "1".to_string())].into(),
            target: Some("final".into()),
            started: "2026-01-01T00:00:00Z".into(),
            finished: "2026-01-01T00:00:05Z".into(),
            invocation_id: "x".into(),
            ..Default::default()
        }
    }

    fn facts() -> TargetFacts {
        let amd64 = Platform::parse("linux/amd64").unwrap_or_else(|_| Platform::host());
        TargetFacts {
            materials: vec![Material {
                reference: "docker.io/library/busybox:1.35".into(),
                platform: amd64,
                digest: format!("sha256:{}", "b".repeat(64)),
            }],
            network: true,
            steps: vec![json!({"id": "step0"})],
            secrets: [("tok".to_string(), false)].into(),
            ssh: BTreeMap::new(),
        }
    }

    #[test]
    fn min_leaves_out_build_args_and_steps() {
        let p = ProvenanceOptions::default();
        let (t, pred) = predicate(&p, &ctx(), &facts());
        assert_eq!(t, PREDICATE_SLSA_V02);
        assert_eq!(pred["buildType"], BUILD_TYPE_V02);
        assert_eq!(
            pred["invocation"]["configSource"]["entryPoint"],
            "Dockerfile"
        );
        let params = &pred["invocation"]["parameters"];
        assert_eq!(params["frontend"], "dockerfile.v0");
        assert_eq!(params["args"], json!({"target": "final"}));
        assert!(params.get("secrets").is_none());
        assert!(pred.get("buildConfig").is_none());
        assert_eq!(pred["metadata"]["completeness"]["parameters"], false);
        assert_eq!(
            pred["materials"][0]["uri"],
            "pkg:docker/busybox@1.35?platform=linux%2Famd64"
        );
        assert_eq!(pred["materials"][0]["digest"]["sha256"], "b".repeat(64));
    }

    #[test]
    fn max_has_everything() {
        let p = ProvenanceOptions {
            mode: ProvenanceMode::Max,
            ..Default::default()
        };
        let (_, pred) = predicate(&p, &ctx(), &facts());
        let params = &pred["invocation"]["parameters"];
        assert_eq!(params["args"]["build-arg:A"], "1");
        assert_eq!(params["secrets"][0]["id"], "tok");
        assert_eq!(params["secrets"][0]["optional"], false);
        assert_eq!(pred["buildConfig"]["llbDefinition"][0]["id"], "step0");
        assert_eq!(pred["metadata"]["completeness"]["parameters"], true);
        let v1 = ProvenanceOptions {
            version: ProvenanceVersion::V1,
            ..p
        };
        let (t, pred) = predicate(&v1, &ctx(), &facts());
        assert_eq!(t, PREDICATE_SLSA_V1);
        assert_eq!(
            pred["buildDefinition"]["externalParameters"]["configSource"]["path"],
            "Dockerfile"
        );
        assert_eq!(
            pred["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"],
            "b".repeat(64)
        );
    }
}
