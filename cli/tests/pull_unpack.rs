//! `kiln pull` unpacks the layers of the platform it pulls while they
//! download (as `docker pull` leaves an image ready to run), and a blob
//! that is not what its digest says, or a layer that is not what its
//! diff_id says, fails the pull with a clear error and leaves nothing
//! behind: no layer directory, no half-unpacked staging folder, no blob,
//! no name. Against a real `docker-registry` whose storage the test
//! corrupts, and a hand-made registry for the wrong diff_id (a real
//! registry checks blob digests, not configs).

use std::io::Read;
use std::path::Path;

use kiln_testsupport::fake_registry::{FakeRegistry, Route};
use kiln_testsupport::*;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The diff_ids of busybox's amd64 layers (sha256 of each inflated tar).
fn busybox_diff_ids() -> Vec<String> {
    busybox_layers()
        .iter()
        .map(|gz| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut tar)
                .expect("gunzip");
            sha256(&tar)
        })
        .collect()
}

/// Every entry below `dir` (recursively), as paths relative to it.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// busybox pushed to a fresh registry; returns the registry and the
/// reference.
fn registry_with_busybox() -> (TestRegistry, String) {
    let reg = TestRegistry::plain();
    let remote = reg.reference("library/busybox:1.35");
    let k = Kiln::with_busybox(KILN);
    k.ok(&["push", "-q", "busybox:1.35", &remote]);
    (reg, remote)
}

/// Where the registry keeps a blob.
fn blob_file(reg: &TestRegistry, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    reg.dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// The store holds nothing of a failed pull: no layer directory, nothing
/// in the scratch space, not the layer's blob, no name.
fn assert_nothing_left(k: &Kiln, layer_digest: &str, what: &str) {
    let layers = entries(&k.root.join("layers"));
    assert!(layers.is_empty(), "{what}: layers left: {layers:?}");
    let work = entries(&k.root.join("work"));
    assert!(
        work.iter().all(|p| !p.contains('/')),
        "{what}: scratch space left: {work:?}"
    );
    let hex = layer_digest.strip_prefix("sha256:").expect("sha256");
    assert!(
        !k.root.join("blobs/sha256").join(hex).exists(),
        "{what}: the layer's blob was stored"
    );
    let (out, _) = k.ok(&["images"]);
    assert!(!out.contains("busybox"), "{what}: named anyway:\n{out}");
}

#[test]
fn pull_leaves_the_layers_unpacked() {
    let (_reg, remote) = registry_with_busybox();
    let k = Kiln::empty(KILN);
    k.ok(&["pull", &remote]);
    for id in busybox_diff_ids() {
        let dir = k
            .root
            .join("layers")
            .join(id.strip_prefix("sha256:").unwrap());
        let busybox = dir.join("bin/busybox");
        let size = std::fs::metadata(&busybox)
            .unwrap_or_else(|e| panic!("{} after pull: {e}", busybox.display()))
            .len();
        assert!(size > 100_000, "bin/busybox of {size} bytes");
    }
    // Nothing is left in the scratch space once the pull is done.
    let work = entries(&k.root.join("work"));
    assert!(work.iter().all(|p| !p.contains('/')), "left: {work:?}");
    // A build on it starts from the unpacked layers at once.
    let ctx = k.context(
        "ctx",
        &[("Dockerfile", &format!("FROM {remote}\nRUN true\n"))],
    );
    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "-t",
        "after-pull",
        ctx.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "build failed:\n{err}");
    assert!(
        !err.contains("unpacking base layers"),
        "the build unpacked again:\n{err}"
    );
}

#[test]
fn pull_of_a_corrupted_blob_fails_and_leaves_nothing() {
    let (reg, remote) = registry_with_busybox();
    let layers = busybox_layers();
    let digest = sha256(&layers[0]);
    let file = blob_file(&reg, &digest);
    let good = std::fs::read(&file).expect("the layer blob in the registry's storage");
    assert_eq!(good, layers[0], "the registry stores the blob as pushed");
    // Wrong bytes of the right size from the middle on: the unpacking has
    // created files by the time the damage arrives, and the registry
    // serves the blob as if nothing were wrong.
    let mut bad = good.clone();
    for b in &mut bad[good.len() / 2..] {
        *b = b.wrapping_add(0x55);
    }
    std::fs::write(&file, &bad).expect("corrupt the blob");

    let k = Kiln::empty(KILN);
    let out = k.run(&["pull", &remote]);
    let err = stderr(&out);
    assert!(!out.status.success(), "pull of a corrupt blob succeeded");
    assert!(
        err.contains("wrong digest") && err.contains(&digest),
        "not a clear error:\n{err}"
    );
    assert_nothing_left(&k, &digest, "corrupt blob");

    // The registry repaired, the same store pulls it whole.
    std::fs::write(&file, &good).expect("repair the blob");
    k.ok(&["pull", &remote]);
    let id = &busybox_diff_ids()[0];
    assert!(k
        .root
        .join("layers")
        .join(id.strip_prefix("sha256:").unwrap())
        .join("bin/busybox")
        .is_file());
}

#[test]
fn pull_of_a_layer_that_is_not_its_diff_id_fails_and_leaves_nothing() {
    // A valid tar, but the config claims another diff_id: the blob's
    // digest is right (a registry checks only that), its content is not
    // what the image says.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let body = vec![b'x'; 300_000];
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    tar.append_data(&mut h, "payload", &body[..]).expect("tar");
    let layer = tar.into_inner().expect("tar");
    let claimed = sha256(b"something else");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [claimed]},
        "config": {}
    }))
    .expect("json");
    let (cd, ld) = (sha256(&config), sha256(&layer));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .expect("json");
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let octets = "application/octet-stream";
    let reg = FakeRegistry::start(vec![
        Route::ok("/v2/library/busybox/manifests/lie", mt, manifest),
        Route::ok(&format!("/v2/library/busybox/blobs/{cd}"), octets, config),
        Route::ok(&format!("/v2/library/busybox/blobs/{ld}"), octets, layer),
    ]);
    let k = Kiln::empty(KILN);
    let out = k.run(&["pull", &format!("{}/library/busybox:lie", reg.addr)]);
    let err = stderr(&out);
    assert!(!out.status.success(), "pull of a lying image succeeded");
    assert!(
        err.contains(&claimed) && err.contains("diff_id"),
        "not a clear error:\n{err}"
    );
    assert_nothing_left(&k, &ld, "wrong diff_id");
}
