//! `kiln build` for CI: `--push`, `-o type=registry`, `-o
//! type=image,name=…,push=true` to a real `docker-registry` on 127.0.0.1,
//! read back with skopeo; the digest kiln prints, writes to the metadata
//! file and shows in `inspect`'s RepoDigests is the registry's. Unknown
//! `-o` keys are errors; `dest=-` and `-o -` write to stdout.

use std::path::Path;
use std::process::Output;

use kiln_testsupport::{skopeo, tar_listing, Kiln, TestRegistry};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const DOCKERFILE: &str = "FROM busybox:1.35\nCOPY hello.txt /hello.txt\nENV A=b\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn context(k: &Kiln) -> std::path::PathBuf {
    k.context(
        "ctx",
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "hello push\n")],
    )
}

fn build(k: &Kiln, args: &[&str], ctx: &Path) -> Output {
    let mut a = vec!["build", "--progress", "plain"];
    a.extend_from_slice(args);
    let ctx = ctx.display().to_string();
    a.push(&ctx);
    k.run(&a)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "build failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The raw manifest (or index) the registry serves for `reference`, and
/// its digest as the registry computes it.
fn remote_raw(reference: &str) -> (Value, String) {
    let url = format!("docker://{reference}");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &url]);
    let digest = kiln_testsupport::sha256(&raw);
    (serde_json::from_slice(&raw).expect("manifest JSON"), digest)
}

fn metadata(k: &Kiln) -> Value {
    let bytes = std::fs::read(k.path("meta.json")).expect("metadata file");
    serde_json::from_slice(&bytes).expect("metadata JSON")
}

fn repo_digests(k: &Kiln, name: &str) -> Vec<String> {
    let (out, _) = k.ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0]["RepoDigests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

#[test]
fn push_flag_sends_the_image_and_names_the_registry_digest() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let name = reg.reference("app:1");
    let meta = k.path("meta.json").display().to_string();
    let iid = k.path("iid").display().to_string();
    let out = build(
        &k,
        &[
            "-t",
            &name,
            "--push",
            "--metadata-file",
            &meta,
            "--iidfile",
            &iid,
        ],
        &ctx,
    );
    let stderr = ok(&out);
    let (manifest, digest) = remote_raw(&name);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2));
    let m = metadata(&k);
    assert_eq!(m["containerimage.digest"], digest.as_str(), "{m}");
    assert_eq!(m["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        m["containerimage.config.digest"], manifest["config"]["digest"],
        "the config is what the registry has"
    );
    assert_eq!(
        std::fs::read_to_string(k.path("iid")).expect("iid"),
        manifest["config"]["digest"].as_str().unwrap_or_default()
    );
    assert_eq!(m["image.name"], name.as_str());
    assert!(
        stderr.contains(&format!("pushing manifest for {name}@{digest} done")),
        "{stderr}"
    );
    let repo = name.trim_end_matches(":1");
    assert_eq!(
        repo_digests(&k, &name),
        vec![format!("{repo}@{digest}")],
        "RepoDigests name the pushed digest"
    );
}

#[test]
fn registry_output_with_several_names_and_zstd() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let (a, b) = (reg.reference("one:z"), reg.reference("two:z"));
    let o = format!("type=registry,\"name={a},{b}\",compression=zstd,force-compression=true");
    let meta = k.path("meta.json").display().to_string();
    let out = build(&k, &["-o", &o, "--metadata-file", &meta], &ctx);
    ok(&out);
    let (ma, da) = remote_raw(&a);
    let (_, db) = remote_raw(&b);
    assert_eq!(da, db, "both names hold the same manifest");
    for l in ma["layers"].as_array().cloned().unwrap_or_default() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    assert_eq!(metadata(&k)["containerimage.digest"], da.as_str());
}

#[test]
fn image_output_push_true_with_docker_media_types() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let name = reg.reference("dock:1");
    let o = format!("type=image,name={name},push=true,oci-mediatypes=false");
    let meta = k.path("meta.json").display().to_string();
    ok(&build(&k, &["-o", &o, "--metadata-file", &meta], &ctx));
    let (m, d) = remote_raw(&name);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(metadata(&k)["containerimage.digest"], d.as_str());
}

#[test]
fn two_platform_push_is_an_index_with_the_printed_digest() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let name = reg.reference("multi:1");
    let meta = k.path("meta.json").display().to_string();
    let out = build(
        &k,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
            "--metadata-file",
            &meta,
        ],
        &ctx,
    );
    let stderr = ok(&out);
    let (index, digest) = remote_raw(&name);
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut archs: Vec<&str> = manifests
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(metadata(&k)["containerimage.digest"], digest.as_str());
    assert!(stderr.contains(&format!("@{digest} done")), "{stderr}");
    // Each platform's manifest is there too, by digest.
    let repo = name.trim_end_matches(":1");
    for m in &manifests {
        let d = m["digest"].as_str().unwrap_or_default();
        let (child, cd) = remote_raw(&format!("{repo}@{d}"));
        assert_eq!(cd, d);
        assert_eq!(child["layers"].as_array().map(Vec::len), Some(2));
    }
}

#[test]
fn push_without_a_name_is_refused_before_building() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    let out = build(&k, &["--push"], &ctx);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs an image name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_output_keys_are_errors_naming_the_key() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    for o in ["type=image,bogus=1", "type=tar,dest=x.tar,bogus=1"] {
        let out = build(&k, &["-o", o], &ctx);
        assert!(!out.status.success(), "{o} was accepted");
        let e = text(&out.stderr);
        assert!(e.contains("\"bogus\""), "{o}: {e}");
    }
}

#[test]
fn dest_dash_writes_to_stdout() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k);
    std::fs::create_dir_all(k.path("cwd")).expect("cwd");
    for args in [
        vec!["-o", "-"],
        vec!["-o", "type=tar,dest=-"],
        vec!["-q", "-o", "type=tar,dest=-"],
    ] {
        let mut a = vec!["build", "--progress", "plain"];
        a.extend_from_slice(&args);
        let c = ctx.display().to_string();
        a.push(&c);
        let out = k.cmd(&a).current_dir(k.path("cwd")).output().expect("kiln");
        ok(&out);
        let listing = tar_listing(&out.stdout);
        assert!(
            listing
                .iter()
                .any(|(p, _)| p.trim_start_matches("./") == "hello.txt"),
            "{args:?}: {listing:?}"
        );
        assert!(!k.path("cwd").join("-").exists(), "no file named -");
    }
    let out = k
        .cmd(&[
            "build",
            "--progress",
            "plain",
            "-o",
            "type=oci,dest=-",
            &ctx.display().to_string(),
        ])
        .current_dir(k.path("cwd"))
        .output()
        .expect("kiln");
    ok(&out);
    let listing = tar_listing(&out.stdout);
    assert!(
        listing.iter().any(|(p, _)| p == "index.json"),
        "{listing:?}"
    );
    assert!(!k.path("cwd").join("-").exists());
}

#[test]
fn pull_with_an_unreachable_registry_is_an_error() {
    let k = Kiln::with_busybox(KILN);
    // A name on a registry nobody answers for (a port just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let base = format!("127.0.0.1:{port}/busybox:1.35");
    k.ok(&["tag", "busybox:1.35", &base]);
    let ctx = k.context("ctx", &[("Dockerfile", &format!("FROM {base}\nENV A=b\n"))]);
    // Without --pull the local copy is the base.
    ok(&build(&k, &[], &ctx));
    // With --pull, as buildx: the registry must answer.
    let out = build(&k, &["--pull"], &ctx);
    assert!(!out.status.success(), "--pull used the local copy");
    let e = text(&out.stderr);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}
