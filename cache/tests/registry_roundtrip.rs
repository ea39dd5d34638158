//! Push and pull against a real `docker-registry`, and interop with skopeo
//! and umoci in both directions.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln_cache::registry::{
    self, progress::Outcome, NoProgress, Platform, Progress, PullOptions, PushOptions,
};
use kiln_cache::Reference;
use kiln_testsupport::*;

/// Records outcomes, to check mounts and skips really happened.
#[derive(Default)]
struct Record(Mutex<Vec<(String, Outcome)>>);

impl Progress for Record {
    fn start(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, digest: &str, outcome: Outcome) {
        self.0.lock().unwrap().push((digest.to_string(), outcome));
    }
    fn message(&self, _: &str) {}
}

impl Record {
    fn count(&self, o: Outcome) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, x)| *x == o)
            .count()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn fixture_index_digest() -> String {
    let (_d, root) = temp_root();
    import_oci_archive(&root, &busybox_fixture(), "busybox:1.35")
        .digest()
        .to_string()
}

#[test]
fn push_then_pull_keeps_both_platforms_identical() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, src) = temp_root();
    let top = import_oci_archive(&src, &busybox_fixture(), "busybox:1.35");
    let want: BTreeSet<String> = reachable(&src, top.digest().as_ref());
    assert_eq!(
        want.len(),
        7,
        "the fixture: index, 2 manifests, 2 configs, 2 layers"
    );

    let local = Reference::parse("busybox:1.35").unwrap();
    let remote = Reference::parse(&reg.reference("kiln/busybox:1.35")).unwrap();
    let rec = Arc::new(Record::default());
    let pushed = rt
        .block_on(registry::push(
            &src,
            &local,
            &remote,
            &PushOptions::default(),
            rec.clone(),
        ))
        .unwrap();
    assert_eq!(
        pushed.digest().to_string(),
        top.digest().to_string(),
        "the index keeps its digest"
    );
    assert_eq!(
        rec.count(Outcome::Transferred),
        4,
        "2 configs + 2 layers uploaded"
    );

    // Pushing again uploads nothing: every blob is found by HEAD.
    let rec = Arc::new(Record::default());
    rt.block_on(registry::push(
        &src,
        &local,
        &remote,
        &PushOptions::default(),
        rec.clone(),
    ))
    .unwrap();
    assert_eq!(rec.count(Outcome::Exists), 4);
    assert_eq!(rec.count(Outcome::Transferred), 0);

    // Pull into an empty store: the same index, every blob byte-identical.
    let (_b, dst) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &dst,
            &remote,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), top.digest().to_string());
    assert_eq!(
        dst.images()
            .get(&remote)
            .unwrap()
            .map(|d| d.digest().to_string()),
        Some(top.digest().to_string())
    );
    let have = reachable(&dst, got.digest().as_ref());
    assert_eq!(have, want);
    for d in &want {
        let dg: kiln_cache::Digest = d.parse().unwrap();
        assert_eq!(
            dst.blobs().read(&dg).unwrap(),
            src.blobs().read(&dg).unwrap(),
            "{d}"
        );
    }

    // Each platform, as the oracle sees it, is exactly the fixture's.
    let layout = tempfile::tempdir().unwrap();
    export_layout(&dst, &got, layout.path());
    for p in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            imagefs(layout.path(), Some(p)),
            imagefs(&busybox_fixture(), Some(p)),
            "{p}"
        );
    }

    // By digest, too.
    let by_digest =
        Reference::parse(&format!("{}/kiln/busybox@{}", reg.addr, top.digest())).unwrap();
    let (_c, dst2) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &dst2,
            &by_digest,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), top.digest().to_string());
}

#[test]
fn pull_one_platform() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, src) = temp_root();
    import_oci_archive(&src, &busybox_fixture(), "busybox:1.35");
    let remote = Reference::parse(&reg.reference("bb:1")).unwrap();
    let local = Reference::parse("busybox:1.35").unwrap();
    rt.block_on(registry::push(
        &src,
        &local,
        &remote,
        &PushOptions::default(),
        Arc::new(NoProgress),
    ))
    .unwrap();

    let (_b, dst) = temp_root();
    let opts = PullOptions {
        platform: Platform::parse("linux/arm64").ok(),
        ..Default::default()
    };
    let got = rt
        .block_on(registry::pull(&dst, &remote, &opts, Arc::new(NoProgress)))
        .unwrap();
    assert_eq!(
        got.media_type().to_string(),
        "application/vnd.oci.image.manifest.v1+json"
    );
    let blobs = reachable(&dst, got.digest().as_ref());
    assert_eq!(blobs.len(), 3, "manifest, config, layer of one platform");
    let layout = tempfile::tempdir().unwrap();
    export_layout(&dst, &got, layout.path());
    assert_eq!(
        imagefs(layout.path(), Some("linux/arm64")),
        imagefs(&busybox_fixture(), Some("linux/arm64"))
    );

    let opts = PullOptions {
        platform: Platform::parse("linux/s390x").ok(),
        ..Default::default()
    };
    let err = rt
        .block_on(registry::pull(&dst, &remote, &opts, Arc::new(NoProgress)))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64"),
        "{msg}"
    );
}

#[test]
fn chunked_upload_and_cross_repository_mount() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, root) = temp_root();
    let top = import_oci_archive(&root, &busybox_fixture(), "busybox:1.35");
    let local = Reference::parse("busybox:1.35").unwrap();
    let first = Reference::parse(&reg.reference("team/one:1")).unwrap();
    let opts = PushOptions {
        chunk_size: Some(64 * 1024),
        ..Default::default()
    };
    rt.block_on(registry::push(
        &root,
        &local,
        &first,
        &opts,
        Arc::new(NoProgress),
    ))
    .unwrap();
    // The chunked upload stored the right bytes: a fresh pull verifies them.
    let (_b, other) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &other,
            &first,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), top.digest().to_string());

    // Now the store knows team/one lives on this registry: a push to
    // another repository mounts every blob instead of uploading it.
    rt.block_on(registry::pull(
        &root,
        &first,
        &PullOptions::default(),
        Arc::new(NoProgress),
    ))
    .unwrap();
    let second = Reference::parse(&reg.reference("team/two:1")).unwrap();
    let rec = Arc::new(Record::default());
    rt.block_on(registry::push(
        &root,
        &local,
        &second,
        &PushOptions::default(),
        rec.clone(),
    ))
    .unwrap();
    assert_eq!(
        rec.count(Outcome::Mounted),
        4,
        "{:?}",
        rec.0.lock().unwrap()
    );
    assert_eq!(rec.count(Outcome::Transferred), 0);
}

#[test]
fn errors_name_the_reference_and_registry() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, root) = temp_root();
    let missing = Reference::parse(&reg.reference("nothing/here:1")).unwrap();
    let err = rt
        .block_on(registry::pull(
            &root,
            &missing,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, registry::RegistryError::NotFound { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("nothing/here:1") && msg.contains(&reg.addr) && msg.contains("not found"),
        "{msg}"
    );

    // Nothing listens on a fresh port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
    let err = rt
        .block_on(registry::pull(
            &root,
            &nowhere,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.to_lowercase().contains("refused"),
        "{msg}"
    );

    let local = Reference::parse("not/in/store:1").unwrap();
    let err = rt
        .block_on(registry::push(
            &root,
            &local,
            &missing,
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("not/in/store"), "{err}");
    assert!(
        root.blobs().list().unwrap().is_empty(),
        "failed pulls stored nothing"
    );
}

#[test]
fn skopeo_pushes_kiln_pulls() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let dest = format!("docker://{}", reg.reference("sk/busybox:1"));
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", busybox_fixture().display()))
        .arg(&dest)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_a, root) = temp_root();
    let r = Reference::parse(&reg.reference("sk/busybox:1")).unwrap();
    let got = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(
        got.digest().to_string(),
        fixture_index_digest(),
        "skopeo --all keeps the index"
    );
    let layout = tempfile::tempdir().unwrap();
    export_layout(&root, &got, layout.path());
    for p in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            imagefs(layout.path(), Some(p)),
            imagefs(&busybox_fixture(), Some(p)),
            "{p}"
        );
    }
}

#[test]
fn kiln_pushes_skopeo_and_umoci_read() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, root) = temp_root();
    let top = import_oci_archive(&root, &busybox_fixture(), "busybox:1.35");
    let local = Reference::parse("busybox:1.35").unwrap();
    let remote = Reference::parse(&reg.reference("kp/busybox:2")).unwrap();
    rt.block_on(registry::push(
        &root,
        &local,
        &remote,
        &PushOptions::default(),
        Arc::new(NoProgress),
    ))
    .unwrap();

    let src = format!("docker://{}", reg.reference("kp/busybox:2"));
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &src])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256(&out.stdout),
        top.digest().to_string(),
        "the registry serves kiln's index as pushed"
    );
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &src,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Os"], "linux");

    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false", &src])
        .arg(format!("oci:{}:copied", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "copied");
    for p in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            imagefs(&layout, Some(p)),
            imagefs(&busybox_fixture(), Some(p)),
            "{p}"
        );
    }
}

#[test]
fn a_mirror_stands_in_for_docker_hub() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, src) = temp_root();
    let top = import_oci_archive(&src, &busybox_fixture(), "busybox:1.35");
    let local = Reference::parse("busybox:1.35").unwrap();
    let on_mirror = Reference::parse(&reg.reference("library/busybox:1.35")).unwrap();
    rt.block_on(registry::push(
        &src,
        &local,
        &on_mirror,
        &PushOptions::default(),
        Arc::new(NoProgress),
    ))
    .unwrap();

    // A dead mirror is skipped, the live one serves docker.io's name (this
    // machine cannot reach docker.io itself).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config: registry::RegistryConfig = serde_json::from_value(serde_json::json!({
        "registry-mirrors": [format!("http://127.0.0.1:{dead}"), format!("http://{}", reg.addr)]
    }))
    .unwrap();
    let (_b, dst) = temp_root();
    let opts = PullOptions {
        config,
        ..Default::default()
    };
    let got = rt
        .block_on(registry::pull(&dst, &local, &opts, Arc::new(NoProgress)))
        .unwrap();
    assert_eq!(got.digest(), top.digest());
    let names: Vec<String> = dst
        .images()
        .list()
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(names, vec!["docker.io/library/busybox:1.35".to_string()]);
}

/// The round trip with the store's own archive code: load, push,
/// remove everything, pull, save as OCI and as docker-archive; the oracle
/// describes each platform of each archive exactly as it does the fixture.
#[test]
fn load_push_rmi_pull_save_round_trip() {
    use kiln_cache::archive::{self, Format, LoadOptions, SaveOptions};
    let reg = TestRegistry::plain();
    let rt = rt();
    let (_a, root) = temp_root();
    let report = archive::load(&root, &busybox_fixture(), &LoadOptions::default()).unwrap();
    let local = report.images[0].names[0].clone();
    let remote = Reference::parse(&reg.reference("trip/busybox:1.35")).unwrap();
    rt.block_on(registry::push(
        &root,
        &local,
        &remote,
        &PushOptions::default(),
        Arc::new(NoProgress),
    ))
    .unwrap();

    // rmi + prune: no name, no blob left.
    assert!(root.images().remove(&local).unwrap());
    for d in root.blobs().list().unwrap() {
        root.blobs().remove(&d).unwrap();
    }
    assert!(root.blobs().list().unwrap().is_empty());

    let got = rt
        .block_on(registry::pull(
            &root,
            &remote,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    for (format, file) in [(Format::Oci, "oci.tar"), (Format::Docker, "docker.tar")] {
        let path = out.path().join(file);
        archive::save_to_file(
            &root,
            &[(Some(remote.clone()), got.clone())],
            &path,
            &SaveOptions { format },
        )
        .unwrap();
        for p in ["linux/amd64", "linux/arm64"] {
            assert_eq!(
                imagefs(&path, Some(p)),
                imagefs(&busybox_fixture(), Some(p)),
                "{file} {p}"
            );
        }
    }
}

/// An insecure registry is tried over TLS first; a plain-HTTP one answers
/// the handshake with garbage and the client falls back to HTTP.
#[test]
fn insecure_registry_falls_back_from_tls_to_http() {
    let reg = TestRegistry::plain();
    let bases = vec![
        (format!("https://{}", reg.addr), true),
        (format!("http://{}", reg.addr), false),
    ];
    let ep = rt()
        .block_on(registry::client::Endpoint::connect(
            &reg.addr,
            "x",
            &bases,
            None,
            Vec::new(),
        ))
        .unwrap();
    assert_eq!(ep.base(), format!("http://{}", reg.addr));
}

/// Docker schema 2 media types (what `docker push` produces) pull and push
/// back unchanged, byte for byte.
#[test]
fn docker_schema2_images_round_trip() {
    let reg = TestRegistry::plain();
    let rt = rt();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--format",
            "v2s2",
            "--override-arch",
            "arm64",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci-archive:{}", busybox_fixture().display()))
        .arg(format!("docker://{}", reg.reference("d2/busybox:1")))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", reg.reference("d2/busybox:1")))
        .output()
        .unwrap();
    assert!(raw.status.success());

    let (_a, root) = temp_root();
    let r = Reference::parse(&reg.reference("d2/busybox:1")).unwrap();
    let got = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(
        got.media_type().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        got.digest().to_string(),
        sha256(&raw.stdout),
        "stored as served"
    );
    assert_eq!(reachable(&root, got.digest().as_ref()).len(), 3);

    let back = Reference::parse(&reg.reference("d2/again:1")).unwrap();
    let pushed = rt
        .block_on(registry::push(
            &root,
            &r,
            &back,
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(pushed.digest(), got.digest());
    assert_eq!(pushed.media_type(), got.media_type());
}
