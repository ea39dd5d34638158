//! Supply-chain attestations through the binary: `--provenance`, `--sbom`
//! and `--attest` attach in-toto statements as BuildKit does (an
//! attestation manifest per platform in the image index, `unknown/unknown`,
//! pointing at the image manifest), with SLSA provenance naming the
//! busybox base by digest and an SPDX document listing the packages of
//! the dpkg, apk, Python and npm databases the Dockerfile copies in.
//! Without the flags the image is exactly what it was.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use kiln_testsupport::Kiln;
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const DOCKERFILE: &str = "FROM busybox:1.35
COPY status /var/lib/dpkg/status
COPY installed /lib/apk/db/installed
COPY METADATA /usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA
COPY package.json /app/node_modules/left-pad/package.json
ARG FOO
RUN --mount=type=secret,id=tok echo $FOO > /foo
";

const DPKG_STATUS: &str = "Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library
 Shared libraries.

Package: removed-pkg
Status: deinstall ok config-files
Version: 0.1
";

const APK_INSTALLED: &str = "C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl

C:Q1def=
P:zlib
V:1.3.1-r0
A:x86_64
L:Zlib
";

const PY_METADATA: &str = "Metadata-Version: 2.1
Name: requests
Version: 2.31.0
License: Apache-2.0

Long description.
";

const PACKAGE_JSON: &str = r#"{"name": "left-pad", "version": "1.3.0", "license": "WTFPL"}"#;

/// An OCI archive, read: its blobs by digest and its `index.json`.
struct Archive {
    index: Value,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Archive {
    fn read(path: &Path) -> Archive {
        let f = std::fs::File::open(path).expect("open archive");
        let mut ar = tar::Archive::new(f);
        let mut index = Value::Null;
        let mut blobs = BTreeMap::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read entry");
            if name == "index.json" {
                index = serde_json::from_slice(&bytes).expect("index.json");
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                if !hex.is_empty() {
                    blobs.insert(format!("sha256:{hex}"), bytes);
                }
            }
        }
        Archive { index, blobs }
    }

    fn json(&self, digest: &str) -> Value {
        let b = self
            .blobs
            .get(digest)
            .unwrap_or_else(|| panic!("blob {digest} in the archive"));
        serde_json::from_slice(b).expect("JSON blob")
    }

    /// The descriptor `index.json` names.
    fn top(&self) -> Value {
        self.index["manifests"][0].clone()
    }
}

fn context(k: &Kiln) -> std::path::PathBuf {
    k.context(
        "ctx",
        &[
            ("Dockerfile", DOCKERFILE),
            ("status", DPKG_STATUS),
            ("installed", APK_INSTALLED),
            ("METADATA", PY_METADATA),
            ("package.json", PACKAGE_JSON),
        ],
    )
}

/// Builds `ctx` into the OCI archive `name` with `extra` flags (creation
/// times fixed, so equal builds give equal digests); asserts success.
fn build_oci(k: &Kiln, ctx: &Path, name: &str, extra: &[&str]) -> Archive {
    let dest = k.path(name);
    let out_spec = format!("type=oci,dest={}", dest.display());
    let ctx = ctx.display().to_string();
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "FOO=bar",
        "-o",
        &out_spec,
    ];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let out = k
        .cmd(&args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running kiln");
    assert!(
        out.status.success(),
        "build {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Archive::read(&dest)
}

/// The digest the busybox fixture's tag names (its index).
fn busybox_digest() -> String {
    let f = std::fs::File::open(kiln_testsupport::busybox_fixture()).expect("fixture");
    let mut ar = tar::Archive::new(f);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").as_os_str() == "index.json" {
            let mut s = String::new();
            e.read_to_string(&mut s).expect("read");
            let v: Value = serde_json::from_str(&s).expect("json");
            return v["manifests"][0]["digest"]
                .as_str()
                .expect("digest")
                .to_string();
        }
    }
    panic!("no index.json in the fixture");
}

/// The statements of the attestation manifest `att`, by predicate type.
fn statements(a: &Archive, att: &Value) -> BTreeMap<String, Value> {
    let m = a.json(att["digest"].as_str().expect("digest"));
    let config = a.json(m["config"]["digest"].as_str().expect("config"));
    assert_eq!(config["architecture"], "unknown");
    assert_eq!(config["os"], "unknown");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(layers.len())
    );
    let mut out = BTreeMap::new();
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        let ptype = l["annotations"]["in-toto.io/predicate-type"]
            .as_str()
            .expect("predicate-type annotation")
            .to_string();
        let st = a.json(l["digest"].as_str().expect("digest"));
        assert_eq!(st["_type"], "https://in-toto.io/Statement/v0.1");
        assert_eq!(st["predicateType"], ptype.as_str());
        out.insert(ptype, st);
    }
    out
}

#[test]
fn provenance_and_sbom_are_attached_as_buildkit_attaches_them() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let plain = build_oci(&k, &ctx, "plain.tar", &[]);
    let a = build_oci(
        &k,
        &ctx,
        "attested.tar",
        &[
            "--provenance",
            "mode=max",
            "--sbom=true",
            "-t",
            "example.com/app:1",
        ],
    );

    // An index: the image manifest, then its attestation manifest.
    let top = a.top();
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let index = a.json(top["digest"].as_str().expect("digest"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2, "{index:#}");
    let (image, att) = (&manifests[0], &manifests[1]);
    assert_ne!(image["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    let image_digest = image["digest"].as_str().expect("digest");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image_digest
    );
    // The image itself is the one a plain build makes (same layers,
    // config and manifest): attestations only add beside it.
    assert_eq!(
        plain.top()["digest"].as_str(),
        Some(image_digest),
        "the attested image's manifest is the plain build's"
    );
    // Everything the index names is in the archive.
    for d in [image_digest, att["digest"].as_str().expect("digest")] {
        let m = a.json(d);
        assert!(a
            .blobs
            .contains_key(m["config"]["digest"].as_str().expect("cfg")));
        for l in m["layers"].as_array().expect("layers") {
            assert!(a.blobs.contains_key(l["digest"].as_str().expect("layer")));
        }
    }

    let st = statements(&a, att);
    let keys: Vec<&str> = st.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "https://slsa.dev/provenance/v0.2",
            "https://spdx.dev/Document"
        ]
    );
    for s in st.values() {
        let subject = &s["subject"][0];
        assert_eq!(
            Some(format!(
                "sha256:{}",
                subject["digest"]["sha256"].as_str().unwrap_or("")
            ))
            .as_deref(),
            Some(image_digest),
            "the statement is about the image manifest"
        );
        let name = subject["name"].as_str().expect("subject name");
        assert!(
            name.starts_with("pkg:docker/example.com/app@1?platform=linux%2F"),
            "{name}"
        );
    }

    // Provenance: BuildKit's fields, max mode's build args and steps, the
    // busybox base pinned by the digest its tag names.
    let p = &st["https://slsa.dev/provenance/v0.2"]["predicate"];
    assert_eq!(p["buildType"], "https://mobyproject.org/buildkit@v1");
    assert!(p["builder"]["id"].is_string());
    assert_eq!(p["invocation"]["configSource"]["entryPoint"], "Dockerfile");
    let params = &p["invocation"]["parameters"];
    assert_eq!(params["frontend"], "dockerfile.v0");
    assert_eq!(params["args"]["build-arg:FOO"], "bar");
    assert_eq!(
        params["secrets"],
        serde_json::json!([{"id": "tok", "optional": true}]),
        "the secret the RUN mounts, by id only"
    );
    assert!(p["invocation"]["environment"]["platform"]
        .as_str()
        .is_some_and(|s| s.starts_with("linux/")));
    let materials = p["materials"].as_array().expect("materials");
    let bb = materials
        .iter()
        .find(|m| {
            m["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("pkg:docker/busybox@1.35?platform=linux%2F"))
        })
        .unwrap_or_else(|| panic!("busybox among the materials: {materials:?}"));
    assert_eq!(
        format!("sha256:{}", bb["digest"]["sha256"].as_str().unwrap_or("")),
        busybox_digest()
    );
    let md = &p["metadata"];
    for k in ["buildStartedOn", "buildFinishedOn", "buildInvocationID"] {
        assert!(md[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {md}");
    }
    assert_eq!(md["completeness"]["parameters"], true);
    assert_eq!(md["reproducible"], false);
    let steps = p["buildConfig"]["llbDefinition"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["op"].to_string().contains("echo $FOO")),
        "max mode lists the RUN step"
    );

    // SBOM: SPDX 2.3 listing what the databases hold.
    let doc = &st["https://spdx.dev/Document"]["predicate"];
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    let pkgs = doc["packages"].as_array().expect("packages");
    let purls: Vec<&str> = pkgs
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    for want in [
        "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64",
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
        "pkg:apk/alpine/zlib@1.3.1-r0?arch=x86_64",
        "pkg:pypi/requests@2.31.0",
        "pkg:npm/left-pad@1.3.0",
    ] {
        assert!(purls.contains(&want), "{want} not in {purls:?}");
    }
    assert!(!purls.iter().any(|p| p.contains("removed-pkg")));
    let by_name = |n: &str| pkgs.iter().find(|p| p["name"] == n).cloned();
    assert_eq!(
        by_name("musl").map(|p| p["licenseDeclared"].clone()),
        Some("MIT".into())
    );
    assert_eq!(
        by_name("requests").map(|p| p["versionInfo"].clone()),
        Some("2.31.0".into())
    );
}

#[test]
fn without_the_flags_the_image_is_unchanged() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let plain = build_oci(&k, &ctx, "plain.tar", &[]);
    let off = build_oci(&k, &ctx, "off.tar", &["--provenance=false", "--sbom=false"]);
    assert_eq!(
        plain.top()["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(plain.top()["digest"], off.top()["digest"]);
    assert_eq!(plain.blobs.len(), off.blobs.len());
}

#[test]
fn attest_flag_picks_min_mode_and_slsa_v1() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let a = build_oci(
        &k,
        &ctx,
        "v1.tar",
        &[
            "--attest",
            "type=provenance,version=v1,builder-id=https://ci/1",
        ],
    );
    let index = a.json(a.top()["digest"].as_str().expect("digest"));
    let att = &index["manifests"][1];
    let st = statements(&a, att);
    let keys: Vec<&str> = st.keys().map(String::as_str).collect();
    assert_eq!(keys, ["https://slsa.dev/provenance/v1"], "no SBOM unasked");
    let p = &st["https://slsa.dev/provenance/v1"]["predicate"];
    let def = &p["buildDefinition"];
    assert_eq!(
        def["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let args = &def["externalParameters"]["request"]["args"];
    assert!(
        args.get("build-arg:FOO").is_none(),
        "min mode: no build args"
    );
    assert!(def["internalParameters"].get("buildConfig").is_none());
    assert!(def["resolvedDependencies"]
        .as_array()
        .is_some_and(|d| d.iter().any(|m| m["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("pkg:docker/busybox@1.35")))));
    assert_eq!(p["runDetails"]["builder"]["id"], "https://ci/1");
    assert_eq!(
        p["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        false
    );
    // No tag: the subject is unnamed, as BuildKit's.
    assert_eq!(
        st["https://slsa.dev/provenance/v1"]["subject"][0]["name"],
        "_"
    );
}

#[test]
fn bad_attestation_flags_are_refused_before_building() {
    let k = Kiln::empty(KILN);
    let ctx = k.context("c", &[("Dockerfile", "FROM scratch\n")]);
    let ctx = ctx.display().to_string();
    for bad in [
        vec!["--provenance", "mode=huge"],
        vec!["--attest", "type=nope"],
        vec!["--provenance=true", "--attest", "type=provenance"],
    ] {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(&bad);
        args.push(&ctx);
        let out = k.run(&args);
        assert!(!out.status.success(), "{bad:?} should fail");
    }
}

#[test]
fn each_platform_gets_its_own_attestation_manifest() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "multi",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nCOPY package.json /app/node_modules/left-pad/package.json\n",
            ),
            ("package.json", PACKAGE_JSON),
        ],
    );
    let a = build_oci(
        &k,
        &ctx,
        "multi.tar",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=true",
            "--sbom=true",
        ],
    );
    let index = a.json(a.top()["digest"].as_str().expect("digest"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 4, "{index:#}");
    // The images first, then one attestation manifest per image, in order.
    for (image, att) in manifests[..2].iter().zip(&manifests[2..]) {
        let arch = image["platform"]["architecture"].as_str().expect("arch");
        assert_eq!(att["platform"]["architecture"], "unknown");
        let image_digest = image["digest"].as_str().expect("digest");
        assert_eq!(
            att["annotations"]["vnd.docker.reference.digest"],
            image_digest
        );
        let st = statements(&a, att);
        assert_eq!(st.len(), 2);
        for s in st.values() {
            assert_eq!(
                format!(
                    "sha256:{}",
                    s["subject"][0]["digest"]["sha256"].as_str().unwrap_or("")
                ),
                image_digest
            );
        }
        let p = &st["https://slsa.dev/provenance/v0.2"]["predicate"];
        assert_eq!(
            p["invocation"]["parameters"]["args"]["platform"],
            "linux/amd64,linux/arm64"
        );
        let uri = p["materials"][0]["uri"].as_str().expect("material");
        assert_eq!(
            uri,
            format!("pkg:docker/busybox@1.35?platform=linux%2F{arch}")
        );
        let doc = &st["https://spdx.dev/Document"]["predicate"];
        assert!(doc["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "left-pad")));
    }
}

#[test]
fn statements_name_the_manifest_the_export_writes() {
    // zstd layers make a manifest of their own: the statements are about
    // it, not about the store's uncompressed one.
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "zstd",
        &[("Dockerfile", "FROM busybox:1.35\nCOPY f /f\n"), ("f", "x")],
    );
    let dest = k.path("zstd.tar");
    let spec = format!("type=oci,dest={},compression=zstd", dest.display());
    let ctx = ctx.display().to_string();
    k.ok(&[
        "build",
        "--progress",
        "plain",
        "--provenance=true",
        "-o",
        &spec,
        &ctx,
    ]);
    let a = Archive::read(&dest);
    let index = a.json(a.top()["digest"].as_str().expect("digest"));
    let image = &index["manifests"][0];
    let image_digest = image["digest"].as_str().expect("digest");
    let m = a.json(image_digest);
    let layers = m["layers"].as_array().expect("layers");
    assert!(layers
        .iter()
        .any(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let att = &index["manifests"][1];
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image_digest
    );
    for s in statements(&a, att).values() {
        assert_eq!(
            format!(
                "sha256:{}",
                s["subject"][0]["digest"]["sha256"].as_str().unwrap_or("")
            ),
            image_digest
        );
    }
}

#[test]
fn index_annotations_apply_with_attestations() {
    // The index with attestation manifests is written by the same path as
    // any index, so `--annotation index:…` and the descriptor levels land
    // on it, in the archive and in the registry alike.
    let reg = kiln_testsupport::TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "annotated",
        &[("Dockerfile", "FROM busybox:1.35\nCOPY f /f\n"), ("f", "x")],
    );
    let name = reg.reference("att/annotated:1");
    let flags = [
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=min",
        "--annotation",
        "index:a=b",
        "--annotation",
        "index-descriptor:c=d",
        "--annotation",
        "manifest-descriptor:e=f",
    ];
    let check = |index: &Value| {
        assert_eq!(index["annotations"]["a"], "b", "{index:#}");
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), 4, "{index:#}");
        for image in &manifests[..2] {
            assert_ne!(image["platform"]["architecture"], "unknown");
            assert_eq!(image["annotations"]["e"], "f", "{image:#}");
        }
        for (image, att) in manifests[..2].iter().zip(&manifests[2..]) {
            assert_eq!(att["platform"]["os"], "unknown");
            assert_eq!(
                att["annotations"]["vnd.docker.reference.type"],
                "attestation-manifest"
            );
            assert_eq!(
                att["annotations"]["vnd.docker.reference.digest"],
                image["digest"]
            );
        }
    };
    let a = build_oci(&k, &ctx, "annotated.tar", &flags);
    assert_eq!(a.top()["annotations"]["c"], "d", "{:#}", a.index);
    let index = a.json(a.top()["digest"].as_str().expect("digest"));
    check(&index);
    assert!(statements(&a, &index["manifests"][2]).contains_key("https://slsa.dev/provenance/v0.2"));

    let ctx_s = ctx.display().to_string();
    let mut args = vec!["build", "--progress", "plain", "--push", "-t", &name];
    args.extend_from_slice(&flags);
    args.push(&ctx_s);
    k.ok(&args);
    let raw = kiln_testsupport::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    let pushed: Value = serde_json::from_slice(&raw).expect("index JSON");
    check(&pushed);
}

/// Runs `kiln build` with `extra` flags on `ctx` (epoch fixed); asserts
/// success.
fn build_with(k: &Kiln, ctx: &Path, extra: &[&str]) {
    let ctx = ctx.display().to_string();
    let mut args = vec!["build", "--progress", "plain", "--build-arg", "FOO=bar"];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let out = k
        .cmd(&args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running kiln");
    assert!(
        out.status.success(),
        "build {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The statement file at `path`: BuildKit's indented in-toto statement.
fn statement_file(path: &Path) -> Value {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "{}", path.display());
    assert_eq!(md.mtime(), 1_700_000_000, "{}", path.display());
    let text = std::fs::read_to_string(path).expect("read statement");
    assert!(text.starts_with("{\n  \""), "indented JSON: {text:.40}");
    let st: Value = serde_json::from_str(&text).expect("statement JSON");
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v0.1");
    st
}

/// The subject named `name` of a statement, as its sha256.
fn subject<'a>(st: &'a Value, name: &str) -> Option<&'a str> {
    st["subject"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["digest"]["sha256"]
        .as_str()
}

#[test]
fn local_and_tar_outputs_get_attestation_files() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let out = k.path("out");
    let spec = format!("type=local,dest={}", out.display());
    build_with(&k, &ctx, &["--sbom=true", "--provenance=true", "-o", &spec]);
    // The rootfs is there, and beside it one file per attestation.
    assert!(out.join("var/lib/dpkg/status").is_file());
    let prov = statement_file(&out.join("provenance.json"));
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v0.2");
    assert_eq!(
        prov["predicate"]["materials"][0]["uri"],
        format!(
            "pkg:docker/busybox@1.35?platform={}",
            kiln_frontend::plan::Platform::host()
                .to_string()
                .replace('/', "%2F")
        )
    );
    let sbom = statement_file(&out.join("sbom.spdx.json"));
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    assert!(sbom["predicate"]["packages"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["name"] == "libc6")));
    // Subjects: the regular files of the exported rootfs, by relative
    // path and content digest; not the statements, not symlinks.
    for st in [&prov, &sbom] {
        assert_eq!(
            subject(st, "var/lib/dpkg/status"),
            Some(kiln_testsupport::sha256(DPKG_STATUS.as_bytes()).trim_start_matches("sha256:"))
        );
        assert!(subject(st, "bin/busybox").is_some());
        assert!(subject(st, "provenance.json").is_none());
        let names: Vec<&str> = st["subject"]
            .as_array()
            .expect("subjects")
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('/')));
        assert!(names.iter().all(|n| out.join(n).is_file()));
    }

    // A tar has the same files, here with attestation-prefix.
    let tar_path = k.path("out.tar");
    let spec = format!(
        "type=tar,dest={},attestation-prefix=att.",
        tar_path.display()
    );
    build_with(&k, &ctx, &["--provenance=mode=max", "-o", &spec]);
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).expect("tar"));
    let mut found = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let name = name.trim_start_matches("./").to_string();
        if name.ends_with(".json") && !name.contains('/') {
            assert_eq!(e.header().mode().expect("mode") & 0o777, 0o600);
            let mut s = String::new();
            e.read_to_string(&mut s).expect("read");
            found.insert(name, serde_json::from_str::<Value>(&s).expect("json"));
        }
    }
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["att.provenance.json"],
        "{found:#?}"
    );
    assert_eq!(
        found["att.provenance.json"]["predicate"]["invocation"]["parameters"]["args"]
            ["build-arg:FOO"],
        "bar"
    );
}

#[test]
fn each_platform_folder_gets_its_own_attestation_files() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "multi-local",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nCOPY package.json /app/node_modules/left-pad/package.json\n",
            ),
            ("package.json", PACKAGE_JSON),
        ],
    );
    let out = k.path("out");
    let spec = format!("type=local,dest={}", out.display());
    build_with(
        &k,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=true",
            "--sbom=true",
            "-o",
            &spec,
        ],
    );
    assert!(!out.join("provenance.json").exists());
    let mut busybox = Vec::new();
    for arch in ["amd64", "arm64"] {
        let dir = out.join(format!("linux_{arch}"));
        let prov = statement_file(&dir.join("provenance.json"));
        assert_eq!(
            prov["predicate"]["materials"][0]["uri"],
            format!("pkg:docker/busybox@1.35?platform=linux%2F{arch}")
        );
        let sbom = statement_file(&dir.join("sbom.spdx.json"));
        assert!(sbom["predicate"]["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "left-pad")));
        // Subjects are relative to the platform's own folder.
        assert_eq!(
            subject(&prov, "app/node_modules/left-pad/package.json"),
            Some(kiln_testsupport::sha256(PACKAGE_JSON.as_bytes()).trim_start_matches("sha256:"))
        );
        busybox.push(subject(&prov, "bin/busybox").expect("busybox").to_string());
    }
    // Each platform's statement is about its own files.
    assert_ne!(busybox[0], busybox[1]);
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

#[test]
fn attestation_layout_is_field_for_field_buildkits() {
    // What BuildKit 0.25 (docker 28.5) writes, from its
    // exporter/containerimage/writer.go (commitAttestationsManifest,
    // attestationsConfig, RemoveInternalLayerAnnotations), control.go (the
    // SBOM processor before the provenance one) and
    // docs/attestations/attestation-storage.md.
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let a = build_oci(
        &k,
        &ctx,
        "layout.tar",
        &["-t", "layout:1", "--provenance=true", "--sbom=true"],
    );
    let index = a.json(a.top()["digest"].as_str().expect("digest"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2, "the image, then its attestations");
    let image = &manifests[0];
    let att = &manifests[1];
    assert_eq!(
        image["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_ne!(image["platform"]["os"], "unknown");

    // The index entry: exactly these fields and annotations.
    assert_eq!(
        keys(att),
        ["annotations", "digest", "mediaType", "platform", "size"]
    );
    assert_eq!(
        att["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        att["annotations"],
        serde_json::json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": image["digest"],
        })
    );
    assert_eq!(
        att["platform"],
        serde_json::json!({"architecture": "unknown", "os": "unknown"})
    );

    // The attestation manifest.
    let m = a.json(att["digest"].as_str().expect("digest"));
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert!(m.get("annotations").is_none() && m.get("subject").is_none());
    let layers = m["layers"].as_array().expect("layers");
    // SBOM first, then provenance, as BuildKit's processors append them.
    let types: Vec<&str> = layers
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v0.2"
        ]
    );
    for l in layers {
        assert_eq!(keys(l), ["annotations", "digest", "mediaType", "size"]);
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        // Internal annotations (containerd.io/uncompressed) are not
        // exported: only the predicate type.
        assert_eq!(keys(&l["annotations"]), ["in-toto.io/predicate-type"]);
        let blob = &a.blobs[l["digest"].as_str().expect("digest")];
        assert_eq!(l["size"].as_u64(), Some(blob.len() as u64));
    }

    // Its config: an unknown/unknown image whose diff_ids are the
    // statements' digests (uncompressed = the blob itself).
    let config = a.json(m["config"]["digest"].as_str().expect("config"));
    assert_eq!(
        config,
        serde_json::json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>(),
            },
        })
    );

    // The statements: in-toto v0.1 (BuildKit moved to v1 after 0.25),
    // the subject the image manifest under the tag's package URL.
    let purl = format!(
        "pkg:docker/layout@1?platform={}%2F{}",
        image["platform"]["os"].as_str().unwrap_or(""),
        image["platform"]["architecture"].as_str().unwrap_or("")
    );
    for l in layers {
        let st = a.json(l["digest"].as_str().expect("digest"));
        assert_eq!(
            keys(&st),
            ["_type", "predicate", "predicateType", "subject"]
        );
        assert_eq!(st["_type"], "https://in-toto.io/Statement/v0.1");
        assert_eq!(
            st["predicateType"],
            l["annotations"]["in-toto.io/predicate-type"]
        );
        let hex = image["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .expect("sha256");
        assert_eq!(
            st["subject"],
            serde_json::json!([{"name": purl, "digest": {"sha256": hex}}])
        );
    }
}
