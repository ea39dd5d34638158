//! `--metadata-file` with the keys buildx writes: `buildx.build.ref`,
//! `buildx.build.provenance` (per platform when there are several; cut
//! down as `BUILDX_METADATA_PROVENANCE` says, `min` by default),
//! `containerimage.digest`, `containerimage.descriptor`,
//! `containerimage.config.digest` and `image.name`; the digests agree
//! with what the registry (skopeo) and `kiln inspect` report.

use std::path::Path;

use kiln_testsupport::{skopeo, Kiln, TestRegistry};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn context(k: &Kiln) -> std::path::PathBuf {
    k.context(
        "ctx",
        &[
            ("Dockerfile", "FROM busybox:1.35\nARG FOO\nCOPY f /f\n"),
            ("f", "meta\n"),
        ],
    )
}

/// Builds `ctx` with `args`, the metadata file and `BUILDX_METADATA_PROVENANCE`
/// set to `mode` (unset: `None`); returns the metadata document.
fn build(k: &Kiln, ctx: &Path, args: &[&str], mode: Option<&str>) -> Value {
    let meta = k.path("meta.json");
    let _ = std::fs::remove_file(&meta);
    let meta_s = meta.display().to_string();
    let ctx = ctx.display().to_string();
    let mut a = vec![
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "FOO=bar",
        "--metadata-file",
        &meta_s,
    ];
    a.extend_from_slice(args);
    a.push(&ctx);
    let mut cmd = k.cmd(&a);
    cmd.env_remove("BUILDX_METADATA_PROVENANCE");
    if let Some(m) = mode {
        cmd.env("BUILDX_METADATA_PROVENANCE", m);
    }
    let out = cmd.output().expect("running kiln");
    assert!(
        out.status.success(),
        "build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).expect("metadata JSON")
}

fn remote_raw(reference: &str) -> (Value, String) {
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{reference}"),
    ]);
    let digest = kiln_testsupport::sha256(&raw);
    (serde_json::from_slice(&raw).expect("manifest JSON"), digest)
}

/// The ref part of `buildx.build.ref`, checked for buildx's shape.
fn build_ref(m: &Value) -> String {
    let r = m["buildx.build.ref"].as_str().expect("buildx.build.ref");
    let parts: Vec<&str> = r.split('/').collect();
    assert_eq!(parts.len(), 3, "{r}");
    assert_eq!(&parts[..2], ["kiln", "kiln0"]);
    assert_eq!(parts[2].len(), 25, "{r}");
    assert!(parts[2]
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    parts[2].to_string()
}

#[test]
fn pushed_image_metadata_has_buildx_keys_and_registry_digests() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let name = reg.reference("meta/app:1");
    let m = build(&k, &ctx, &["-t", &name, "--push"], None);
    let (manifest, digest) = remote_raw(&name);

    build_ref(&m);
    assert_eq!(m["containerimage.digest"], digest.as_str(), "{m:#}");
    let desc = &m["containerimage.descriptor"];
    assert_eq!(desc["digest"], digest.as_str());
    assert_eq!(desc["mediaType"], manifest["mediaType"]);
    assert!(desc["size"].as_u64().is_some_and(|s| s > 0));
    assert!(desc["annotations"]["org.opencontainers.image.created"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        m["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    assert_eq!(m["image.name"], name.as_str());
    // `kiln inspect` agrees: the image ID is the config digest.
    let (out, _) = k.ok(&["inspect", &name]);
    let inspect: Value = serde_json::from_str(&out).expect("inspect JSON");
    assert_eq!(inspect[0]["Id"], m["containerimage.config.digest"]);

    // buildx's default (`min`): the record's provenance without
    // buildConfig and metadata, even without --provenance.
    let p = &m["buildx.build.provenance"];
    assert_eq!(p["buildType"], "https://mobyproject.org/buildkit@v1");
    assert!(p["materials"][0]["uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("pkg:docker/busybox@1.35")));
    assert_eq!(
        p["invocation"]["parameters"]["args"]["build-arg:FOO"], "bar",
        "{p:#}"
    );
    assert!(p.get("metadata").is_none() && p.get("buildConfig").is_none());
    assert!(p.get("builder").is_none());
}

#[test]
fn provenance_follows_buildx_metadata_provenance() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let m = build(&k, &ctx, &["-t", "meta-max"], Some("max"));
    let r = build_ref(&m);
    let p = &m["buildx.build.provenance"];
    // The ref is the invocation the provenance names.
    assert_eq!(p["metadata"]["buildInvocationID"], r.as_str());
    assert!(p["buildConfig"]["llbDefinition"].is_array());

    for off in ["disabled", "false"] {
        let m = build(&k, &ctx, &["-t", "meta-off"], Some(off));
        assert!(m.get("buildx.build.provenance").is_none(), "{off}: {m:#}");
        build_ref(&m);
        assert!(m["containerimage.digest"].is_string());
    }

    // A local export makes no image: no containerimage keys.
    let out = k.path("rootfs");
    let spec = format!("type=local,dest={}", out.display());
    let m = build(&k, &ctx, &["-o", &spec], None);
    assert!(m.get("containerimage.digest").is_none(), "{m:#}");
    assert!(m["buildx.build.provenance"]["buildType"].is_string());
}

#[test]
fn multi_platform_metadata_names_the_index_and_each_platforms_provenance() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let name = reg.reference("meta/multi:1");
    let m = build(
        &k,
        &ctx,
        &[
            "-t",
            &name,
            "--push",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=true",
        ],
        None,
    );
    let (index, digest) = remote_raw(&name);
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(4));
    assert_eq!(m["containerimage.digest"], digest.as_str());
    assert_eq!(m["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(m.get("containerimage.config.digest").is_none());
    assert!(m.get("buildx.build.provenance").is_none());
    for arch in ["amd64", "arm64"] {
        let p = &m[format!("buildx.build.provenance/linux/{arch}").as_str()];
        assert_eq!(
            p["materials"][0]["uri"],
            format!("pkg:docker/busybox@1.35?platform=linux%2F{arch}"),
            "{m:#}"
        );
    }
}
