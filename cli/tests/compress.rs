//! Layers go out compressed, as docker and BuildKit send them: `kiln push`,
//! `kiln save` and `kiln build --output type=oci|docker` gzip the plain
//! layers kiln builds (zstd or uncompressed on request), leave layers that
//! are already compressed byte for byte alone, and compress a layer once:
//! the second push reuses the remembered blob and uploads nothing. Checked
//! with the real `docker-registry`, skopeo, umoci and imagefs.py; each test
//! has its own `$KILN_ROOT`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use kiln_cache::compress::{self, Compression, Conversion};
use kiln_cache::{gc, image, media, Digest, Reference, Root};
use kiln_testsupport::{imagefs, skopeo, umoci_unpack, Kiln, BUSYBOX_INDEX};
use kiln_testsupport::{sha256, TestRegistry};
use serde_json::{json, Value};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// What only this file's tests do with a kiln.
trait CompressKiln {
    /// Builds `Dockerfile` text with a context of `files` as `tag`, with
    /// extra arguments (outputs).
    fn build(&self, dockerfile: &str, files: &[(&str, &str)], extra: &[&str]);

    /// The memo of conversions: file name → content.
    fn memo(&self) -> BTreeMap<String, String>;
}

impl CompressKiln for Kiln {
    fn build(&self, dockerfile: &str, files: &[(&str, &str)], extra: &[&str]) {
        let mut all = vec![("Dockerfile", dockerfile)];
        all.extend_from_slice(files);
        let ctx = self.context("ctx", &all).display().to_string();
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.ok(&args);
    }

    fn memo(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for c in ["gzip", "zstd"] {
            let dir = self.root.join("compressed").join(c);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).expect("memo entry");
                out.insert(format!("{c}/{}", e.file_name().to_string_lossy()), text);
            }
        }
        out
    }
}

const DOCKERFILE: &str = "FROM busybox:1.35
COPY a.txt /a.txt
RUN echo built-by-kiln > /b.txt && mkdir -p /data && seq 1 20000 > /data/numbers
";
const FILES: &[(&str, &str)] = &[("a.txt", "from the context\n")];

/// One platform's image as the store holds it.
struct Local {
    config: String,
    diff_ids: Vec<String>,
    layers: Vec<(String, String)>,
}

fn local_image(root: &Root, name: &str) -> Local {
    let found = image::find(root, name).expect("image in store");
    let r = image::resolve(root.blobs(), &found.descriptor, None, name).expect("resolve");
    Local {
        config: r.config_digest.to_string(),
        diff_ids: r.config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .map(|v| v.as_str().expect("diff_id").to_string())
            .collect(),
        layers: r
            .manifest
            .layers()
            .iter()
            .map(|l| (l.media_type().to_string(), l.digest().to_string()))
            .collect(),
    }
}

fn inspect_raw(reference: &str) -> Vec<u8> {
    skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])
}

/// `skopeo copy docker://… oci:DIR:TAG` (skopeo verifies every digest).
fn copy_to_layout(reference: &str, dir: &Path, tag: &str) {
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:{tag}", dir.display()),
    ]);
}

fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(dir.join("blobs/sha256").join(hex)).expect("blob in layout")
}

/// The decompressed content of a layer blob of the given media type.
fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match media::layer_compression(media_type).expect("a layer type") {
        Compression::Gzip => {
            assert_eq!(&blob[..2], &[0x1f, 0x8b], "{media_type} is gzip");
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        Compression::Zstd => {
            out = zstd::decode_all(blob).expect("zstd");
        }
        Compression::None => out = blob.to_vec(),
    }
    out
}

/// Checks a pushed or exported manifest against the local image: same
/// config, layer types as `want`, every layer decompressing to its
/// diff_id. Returns the layer digests.
fn check_layers(
    manifest: &Value,
    local: &Local,
    want: &[&str],
    blob: impl Fn(&str) -> Vec<u8>,
) -> Vec<String> {
    assert_eq!(
        manifest["config"]["digest"],
        local.config.as_str(),
        "image ID kept"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), local.diff_ids.len());
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let mt = l["mediaType"].as_str().expect("mediaType");
        assert_eq!(mt, want[i], "layer {i}: {manifest}");
        let digest = l["digest"].as_str().expect("digest");
        let bytes = blob(digest);
        assert_eq!(sha256(&bytes), digest);
        assert_eq!(bytes.len() as u64, l["size"].as_u64().expect("size"));
        assert_eq!(
            sha256(&decompress(mt, &bytes)),
            local.diff_ids[i],
            "layer {i} decompresses to its diff_id"
        );
        out.push(digest.to_string());
    }
    out
}

/// Unpacks an archive (tar of an OCI layout) into a folder.
fn unpack(archive: &Path, dir: &Path) {
    let f = std::fs::File::open(archive).expect("archive");
    tar::Archive::new(f).unpack(dir).expect("unpack archive");
}

/// The single platform manifest of an unpacked OCI layout.
fn layout_manifest(dir: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("json");
    let d = index["manifests"][0]["digest"].as_str().expect("digest");
    serde_json::from_slice(&layout_blob(dir, d)).expect("manifest json")
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The main round trip: a built image (plain layers on a gzip base) is
/// pushed with gzip layers that decompress to its diff_ids and that skopeo
/// and umoci read; a second push compresses and uploads nothing; after a
/// prune, compressing again gives the very same blobs; pulled back into a
/// fresh store it describes the same filesystem.
#[test]
fn push_gzips_built_layers_once_and_round_trips() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    k.build(DOCKERFILE, FILES, &["-t", "app:1"]);
    let local = local_image(&k.store(), "app:1");
    assert_eq!(local.layers.len(), 3);
    assert_eq!(local.layers[0].0, media::OCI_LAYER_GZIP, "the base's layer");
    for (mt, d) in &local.layers[1..] {
        assert_eq!(mt, media::OCI_LAYER, "kiln stores built layers plain");
        assert!(local.diff_ids.contains(d));
    }

    let remote = reg.reference("team/app:1");
    let (_, err) = k.ok(&["push", "app:1", &remote]);
    assert_eq!(lines_with(&err, "compressed (gzip)").len(), 2, "{err}");
    let raw = inspect_raw(&remote);
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest");
    let layout = k.path("layout");
    copy_to_layout(&remote, &layout, "app");
    let pushed = check_layers(&manifest, &local, &[media::OCI_LAYER_GZIP; 3], |d| {
        layout_blob(&layout, d)
    });
    assert_eq!(
        pushed[0], local.layers[0].1,
        "the base layer went as it was"
    );
    for d in &pushed[1..] {
        let blob = layout_blob(&layout, d);
        assert_eq!(&blob[4..8], &[0, 0, 0, 0], "no mtime in the gzip header");
        assert_eq!(blob[3] & 0x08, 0, "no file name in the gzip header");
    }
    let bundle = k.path("bundle");
    umoci_unpack(&layout, "app", &bundle);
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/b.txt")).expect("b.txt"),
        "built-by-kiln\n"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/a.txt")).expect("a.txt"),
        "from the context\n"
    );

    // Second push: the remembered blobs are reused, unchanged, and the
    // registry already has every one (a different compression would have
    // produced other digests, which it would not have had).
    let memo = k.memo();
    assert_eq!(memo.len(), 2, "one memo entry per built layer: {memo:?}");
    for d in &pushed[1..] {
        assert!(memo.values().any(|v| v.trim() == d), "{d} remembered");
    }
    let store = k.store();
    let mtime = |d: &str| {
        let d: Digest = d.parse().expect("digest");
        std::fs::metadata(store.blobs().path(&d))
            .and_then(|m| m.modified())
            .expect("compressed blob in the store")
    };
    let before: Vec<_> = pushed[1..].iter().map(|d| mtime(d)).collect();
    let blobs_before = store.blobs().list().expect("list");
    let (out, err) = k.ok(&["push", "app:1", &remote]);
    assert_eq!(lines_with(&err, "reused (gzip)").len(), 2, "{err}");
    assert!(lines_with(&err, "compressed (gzip)").is_empty(), "{err}");
    assert!(lines_with(&err, "transferring").is_empty(), "{err}");
    assert_eq!(lines_with(&err, "already exists").len(), 4, "{err}");
    assert!(out.contains(&sha256(&raw)), "same manifest: {out}");
    assert_eq!(k.memo(), memo);
    let after: Vec<_> = pushed[1..].iter().map(|d| mtime(d)).collect();
    assert_eq!(before, after, "the compressed blobs were not rewritten");
    assert_eq!(store.blobs().list().expect("list"), blobs_before);

    // The pulled image describes the same filesystem as the original.
    let orig = k.path("orig.tar");
    k.ok(&[
        "save",
        "--compression",
        "uncompressed",
        "-o",
        orig.to_str().expect("utf8"),
        "app:1",
    ]);
    let k2 = Kiln::empty(KILN);
    k2.ok(&["pull", "-q", &remote]);
    let pulled = k2.path("pulled.tar");
    k2.ok(&["save", "-o", pulled.to_str().expect("utf8"), &remote]);
    assert!(k2.memo().is_empty(), "gzip layers pulled are not converted");
    assert_eq!(
        imagefs(&pulled, Some("linux/amd64")),
        imagefs(&orig, Some("linux/amd64"))
    );

    // prune drops the converted blobs and their memo entries (no name
    // holds them); the next push compresses again, to the same digests.
    k.ok(&["prune"]);
    assert!(k.memo().is_empty(), "memo entries of pruned blobs are gone");
    for d in &pushed[1..] {
        assert!(!store.blobs().has(&d.parse().expect("digest")));
    }
    let (out, err) = k.ok(&["push", "app:1", &remote]);
    assert_eq!(lines_with(&err, "compressed (gzip)").len(), 2, "{err}");
    assert_eq!(lines_with(&err, "already exists").len(), 4, "{err}");
    assert!(out.contains(&sha256(&raw)), "same manifest: {out}");
}

/// `--output type=oci` and `type=docker` archives carry gzip layers by
/// default and plain ones with `compression=uncompressed`; imagefs.py sees
/// the same filesystem in all of them, and skopeo reads the gzip one.
#[test]
fn archive_outputs_are_gzip_by_default() {
    let k = Kiln::with_busybox(KILN);
    let (gz, plain, docker) = (k.path("gz.tar"), k.path("plain.tar"), k.path("docker.tar"));
    k.build(
        DOCKERFILE,
        FILES,
        &[
            "-t",
            "app:1",
            "--output",
            "type=image",
            "--output",
            &format!("type=oci,dest={}", gz.display()),
            "--output",
            &format!("type=oci,dest={},compression=uncompressed", plain.display()),
            "--output",
            &format!("type=docker,dest={}", docker.display()),
        ],
    );
    let local = local_image(&k.store(), "app:1");

    let gz_dir = k.path("gz");
    unpack(&gz, &gz_dir);
    check_layers(
        &layout_manifest(&gz_dir),
        &local,
        &[media::OCI_LAYER_GZIP; 3],
        |d| layout_blob(&gz_dir, d),
    );
    let plain_dir = k.path("plain");
    unpack(&plain, &plain_dir);
    check_layers(
        &layout_manifest(&plain_dir),
        &local,
        &[media::OCI_LAYER_GZIP, media::OCI_LAYER, media::OCI_LAYER],
        |d| layout_blob(&plain_dir, d),
    );
    let docker_dir = k.path("docker");
    unpack(&docker, &docker_dir);
    let mj: Value = serde_json::from_slice(
        &std::fs::read(docker_dir.join("manifest.json")).expect("manifest.json"),
    )
    .expect("json");
    for l in mj[0]["Layers"].as_array().expect("Layers") {
        let blob = std::fs::read(docker_dir.join(l.as_str().expect("path"))).expect("layer");
        assert_eq!(
            &blob[..2],
            &[0x1f, 0x8b],
            "docker-archive layer {l} is gzip"
        );
    }

    let want = imagefs(&plain, Some("linux/amd64"));
    assert_eq!(imagefs(&gz, Some("linux/amd64")), want);
    assert_eq!(imagefs(&docker, Some("linux/amd64")), want);
    let layout = k.path("layout");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{}", gz.display()),
        &format!("oci:{}:app", layout.display()),
    ]);
}

/// zstd: pushed layers are `+zstd` (the gzip base stays gzip unless
/// forced), skopeo copies them (verifying digests), they decompress to the
/// diff_ids, and kiln brings them back: pulled, then saved with
/// `--force-compression` as gzip, the filesystem is the original's.
#[test]
fn zstd_round_trip_through_skopeo() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    k.build(DOCKERFILE, FILES, &["-t", "app:1"]);
    let local = local_image(&k.store(), "app:1");
    let remote = reg.reference("z/app:1");
    k.ok(&["push", "--compression", "zstd", "app:1", &remote]);
    let manifest: Value = serde_json::from_slice(&inspect_raw(&remote)).expect("manifest");
    let layout = k.path("layout");
    copy_to_layout(&remote, &layout, "z");
    check_layers(
        &manifest,
        &local,
        &[
            media::OCI_LAYER_GZIP,
            media::OCI_LAYER_ZSTD,
            media::OCI_LAYER_ZSTD,
        ],
        |d| layout_blob(&layout, d),
    );

    let orig = k.path("orig.tar");
    k.ok(&[
        "save",
        "--compression",
        "uncompressed",
        "-o",
        orig.to_str().expect("utf8"),
        "app:1",
    ]);
    let k2 = Kiln::empty(KILN);
    k2.ok(&["pull", "-q", &remote]);
    let back = k2.path("back.tar");
    k2.ok(&[
        "save",
        "--format",
        "oci",
        "--compression",
        "gzip",
        "--force-compression",
        "-o",
        back.to_str().expect("utf8"),
        &remote,
    ]);
    let dir = k2.path("back");
    unpack(&back, &dir);
    check_layers(
        &layout_manifest(&dir),
        &local,
        &[media::OCI_LAYER_GZIP; 3],
        |d| layout_blob(&dir, d),
    );
    assert_eq!(
        imagefs(&back, Some("linux/amd64")),
        imagefs(&orig, Some("linux/amd64"))
    );

    // Forced zstd converts the gzip base too.
    let all = k.path("all-zstd.tar");
    k.ok(&[
        "save",
        "--format",
        "oci",
        "--compression",
        "zstd",
        "--force-compression",
        "-o",
        all.to_str().expect("utf8"),
        "app:1",
    ]);
    let dir = k.path("all-zstd");
    unpack(&all, &dir);
    check_layers(
        &layout_manifest(&dir),
        &local,
        &[media::OCI_LAYER_ZSTD; 3],
        |d| layout_blob(&dir, d),
    );
}

/// Layers that are already gzip (the fixture, loaded) are pushed byte for
/// byte: every manifest and the index keep their digests.
#[test]
fn gzip_layers_are_pushed_as_they_are() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let remote = reg.reference("library/busybox:1.35");
    let (out, err) = k.ok(&["push", "busybox:1.35", &remote]);
    assert!(out.contains(BUSYBOX_INDEX), "{out}");
    assert!(lines_with(&err, "compressed").is_empty(), "{err}");
    assert!(k.memo().is_empty());
    let raw = inspect_raw(&remote);
    assert_eq!(sha256(&raw), BUSYBOX_INDEX);
    let index: Value = serde_json::from_slice(&raw).expect("index");
    let store = k.store();
    let repo = remote.rsplit_once(':').expect("tag").0;
    for m in index["manifests"].as_array().expect("manifests") {
        let d = m["digest"].as_str().expect("digest");
        let raw = inspect_raw(&format!("{repo}@{d}"));
        let stored = store
            .blobs()
            .read(&d.parse().expect("digest"))
            .expect("stored");
        assert_eq!(raw, stored, "manifest {d} pushed byte for byte");
    }
}

// ----------------------------------------------------------------- library

/// A plain tar with one file.
fn tar_of(name: &str, text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, text.as_bytes())
        .expect("append");
    b.into_inner().expect("tar")
}

fn put_json(root: &Root, v: &Value) -> (String, u64) {
    let bytes = serde_json::to_vec(v).expect("json");
    let d = root.blobs().put(&bytes).expect("put");
    (d.to_string(), bytes.len() as u64)
}

fn read_json(root: &Root, d: &str) -> Value {
    serde_json::from_slice(
        &root
            .blobs()
            .read(&d.parse().expect("digest"))
            .expect("blob"),
    )
    .expect("json")
}

/// A docker manifest list with a docker schema 2 image (one plain docker
/// layer) and a BuildKit attestation naming it; returns its descriptor and
/// the layer's digest.
fn docker_list(root: &Root) -> (oci_spec::image::Descriptor, String) {
    let layer = tar_of("hello.txt", &"hello\n".repeat(1000));
    let layer_digest = root.blobs().put(&layer).expect("layer").to_string();
    let (cd, cs) = put_json(
        root,
        &json!({"architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}),
    );
    let (md, ms) = put_json(
        root,
        &json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
                "config": {"mediaType": media::DOCKER_CONFIG, "digest": cd, "size": cs},
                "layers": [{"mediaType": media::DOCKER_LAYER, "digest": layer_digest, "size": layer.len()}]}),
    );
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#;
    let sd = root.blobs().put(statement).expect("statement").to_string();
    let (acd, acs) = put_json(root, &json!({"architecture": "unknown", "os": "unknown"}));
    let (ad, asz) = put_json(
        root,
        &json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": acd, "size": acs},
                "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sd, "size": statement.len()}]}),
    );
    let (ld, ls) = put_json(
        root,
        &json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST_LIST, "manifests": [
            {"mediaType": media::DOCKER_MANIFEST, "digest": md, "size": ms,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": media::OCI_MANIFEST, "digest": ad, "size": asz,
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.digest": md,
                             "vnd.docker.reference.type": "attestation-manifest"}}]}),
    );
    let d = serde_json::from_value(
        json!({"mediaType": media::DOCKER_MANIFEST_LIST, "digest": ld, "size": ls}),
    )
    .expect("descriptor");
    (d, layer_digest)
}

/// Indexes convert platform by platform: a docker list keeps docker types
/// for gzip (and the attestation follows the renamed manifest), becomes OCI
/// for zstd; the config is untouched; converting again reuses the blob, a
/// forced conversion recompresses a compressed layer, and after garbage
/// collection the conversion compresses again to the same digest.
#[test]
fn indexes_docker_types_and_garbage_collection() {
    let (_dir, root) = kiln_testsupport::temp_root();
    let (list, layer) = docker_list(&root);
    let old = read_json(&root, list.digest().as_ref());
    let old_manifest = old["manifests"][0]["digest"]
        .as_str()
        .expect("d")
        .to_string();
    let config = read_json(&root, &old_manifest)["config"]["digest"].clone();

    let _lease = root.lease().expect("lease");
    let gz = compress::convert(&root, &list, &Conversion::default()).expect("gzip");
    assert_eq!(gz.layers.len(), 1);
    assert!(!gz.layers[0].reused);
    assert_eq!(
        gz.descriptor.media_type().to_string(),
        media::DOCKER_MANIFEST_LIST
    );
    let idx = read_json(&root, gz.descriptor.digest().as_ref());
    let m0 = idx["manifests"][0]["digest"]
        .as_str()
        .expect("d")
        .to_string();
    assert_ne!(m0, old_manifest);
    assert_eq!(idx["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(
        idx["manifests"][1]["annotations"]["vnd.docker.reference.digest"],
        m0.as_str(),
        "the attestation names the converted manifest"
    );
    assert_eq!(idx["manifests"][1]["digest"], old["manifests"][1]["digest"]);
    let m = read_json(&root, &m0);
    assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(m["config"]["digest"], config);
    assert_eq!(m["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
    let gz_layer = gz.layers[0].to.to_string();
    assert_eq!(m["layers"][0]["digest"], gz_layer.as_str());

    let again = compress::convert(&root, &list, &Conversion::default()).expect("again");
    assert_eq!(again.descriptor, gz.descriptor);
    assert!(again.layers[0].reused);

    let z = compress::convert(&root, &list, &Conversion::to(Compression::Zstd)).expect("zstd");
    assert_eq!(z.descriptor.media_type().to_string(), media::OCI_INDEX);
    let zi = read_json(&root, z.descriptor.digest().as_ref());
    let zm = read_json(&root, zi["manifests"][0]["digest"].as_str().expect("d"));
    assert_eq!(zi["manifests"][0]["mediaType"], media::OCI_MANIFEST);
    assert_eq!(zm["mediaType"], media::OCI_MANIFEST);
    assert_eq!(zm["config"]["mediaType"], media::OCI_CONFIG);
    assert_eq!(zm["config"]["digest"], config);
    assert_eq!(zm["layers"][0]["mediaType"], media::OCI_LAYER_ZSTD);

    // gzip → zstd only when forced, checked against the diff_id.
    let unforced =
        compress::convert(&root, &gz.descriptor, &Conversion::to(Compression::Zstd)).expect("z");
    assert!(
        unforced.layers.is_empty(),
        "compressed layers stay as they are"
    );
    let forced = compress::convert(
        &root,
        &gz.descriptor,
        &Conversion {
            compression: Compression::Zstd,
            force: true,
            level: None,
        },
    )
    .expect("forced");
    assert_eq!(forced.layers[0].from.to_string(), gz_layer);
    assert_eq!(forced.layers[0].to, z.layers[0].to);
    let plain = compress::convert(
        &root,
        &gz.descriptor,
        &Conversion {
            compression: Compression::None,
            force: true,
            level: None,
        },
    )
    .expect("decompress");
    let pm = read_json(
        &root,
        read_json(&root, plain.descriptor.digest().as_ref())["manifests"][0]["digest"]
            .as_str()
            .expect("d"),
    );
    assert_eq!(pm["layers"][0]["mediaType"], media::DOCKER_LAYER);
    assert_eq!(pm["layers"][0]["digest"], layer.as_str());
    drop(_lease);

    // Only the original is named: collection drops every converted blob
    // and its memo entry, and nothing the image needs.
    root.images()
        .set(&Reference::parse("list:1").expect("ref"), list.clone())
        .expect("name");
    let report = gc::prune(&root, &gc::PruneOptions::default()).expect("prune");
    assert!(report
        .removed
        .iter()
        .any(|(d, _)| d.to_string() == gz_layer));
    assert!(compress::remembered(&root, &layer.parse().expect("d"), Compression::Gzip).is_none());
    assert!(!has_memo_files(&root));
    for c in image::closure(root.blobs(), &list).expect("closure") {
        assert!(root.blobs().has(&image::digest_of(&c).expect("d")));
    }
    let _lease = root.lease().expect("lease");
    let fresh = compress::convert(&root, &list, &Conversion::default()).expect("gzip again");
    assert!(!fresh.layers[0].reused, "compressed again after the prune");
    assert_eq!(fresh.descriptor, gz.descriptor, "deterministic gzip");
}

/// Whether any memo entry is left in the store.
fn has_memo_files(root: &Root) -> bool {
    ["gzip", "zstd"].iter().any(|c| {
        std::fs::read_dir(root.path().join("compressed").join(c))
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false)
    })
}

/// `compression-level=` applies to the layers compressed now: in one
/// build, oci archives at levels 0 and 9 carry different blobs for the
/// built layers (the gzip base stays as it was), each decompressing to its
/// diff_id and reading as the same filesystem; level 0 is stored deflate,
/// so larger. The default export is unchanged: gzip level 6 with an empty
/// header, byte for byte what the test compresses itself, and the same as
/// an explicit level 6. The default's memo entry, written first, is not
/// served to the other levels; a push at level 0 sends the level-0 blobs.
#[test]
fn compression_level_applies_to_archives_and_push() {
    let reg = TestRegistry::plain();
    let k = Kiln::with_busybox(KILN);
    let remote = reg.reference("team/levels:0");
    let arch = |n: &str| k.path(&format!("{n}.tar"));
    let (def, l6, l0, l9) = (arch("def"), arch("l6"), arch("l0"), arch("l9"));
    k.build(
        DOCKERFILE,
        FILES,
        &[
            "-t",
            "app:1",
            "--output",
            "type=image",
            "--output",
            &format!("type=oci,dest={}", def.display()),
            "--output",
            &format!("type=oci,dest={},compression-level=0", l0.display()),
            "--output",
            &format!("type=oci,dest={},compression-level=9", l9.display()),
            "--output",
            &format!("type=oci,dest={},compression-level=6", l6.display()),
            "--output",
            &format!("type=registry,name={remote},compression-level=0"),
        ],
    );
    let local = local_image(&k.store(), "app:1");
    let layers_of = |archive: &Path| {
        let stem = archive.file_stem().expect("name").to_string_lossy();
        let dir = k.path(&format!("{stem}-layout"));
        unpack(archive, &dir);
        let got = check_layers(
            &layout_manifest(&dir),
            &local,
            &[media::OCI_LAYER_GZIP; 3],
            |d| layout_blob(&dir, d),
        );
        let blobs: Vec<Vec<u8>> = got.iter().map(|d| layout_blob(&dir, d)).collect();
        (got, blobs)
    };
    let (d_def, b_def) = layers_of(&def);
    let (d6, _) = layers_of(&l6);
    let (d0, b0) = layers_of(&l0);
    let (d9, b9) = layers_of(&l9);

    // The default: what gzip level 6 in parallel blocks (pigz's format,
    // no mtime/name) gives, as one gzip member.
    for (i, blob) in b_def.iter().enumerate().skip(1) {
        let plain = decompress(media::OCI_LAYER_GZIP, blob);
        let mut one_member = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut one_member)
            .expect("gzip");
        assert_eq!(one_member, plain, "layer {i}: one gzip member");
        let again = kiln_cache::pgzip::compress(&plain, 6).expect("gzip");
        assert_eq!(sha256(&again), d_def[i], "layer {i}: default is level 6");
    }
    assert_eq!(d6, d_def, "an explicit level 6 is the default");

    assert_eq!(d0[0], local.layers[0].1, "the base layer is kept");
    assert_eq!(d9[0], local.layers[0].1, "the base layer is kept");
    for i in 1..3 {
        assert_ne!(
            d0[i], d_def[i],
            "layer {i}: level 0 is not the default's blob"
        );
        assert_ne!(
            d9[i], d_def[i],
            "layer {i}: level 9 is not the default's blob"
        );
        assert_ne!(d0[i], d9[i], "layer {i}: levels 0 and 9 differ");
    }
    // seq's numbers compress well: stored (level 0) is far larger.
    assert!(
        b0[2].len() > 2 * b9[2].len(),
        "{} vs {}",
        b0[2].len(),
        b9[2].len()
    );

    let want = imagefs(&def, Some("linux/amd64"));
    assert_eq!(imagefs(&l0, Some("linux/amd64")), want);
    assert_eq!(imagefs(&l9, Some("linux/amd64")), want);
    let layout = k.path("skopeo-layout");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{}", l9.display()),
        &format!("oci:{}:app", layout.display()),
    ]);

    // The memo keeps one entry per level.
    let memo = |dir: &str| {
        std::fs::read_dir(k.root.join("compressed").join(dir))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    assert_eq!((memo("gzip"), memo("gzip-0"), memo("gzip-9")), (2, 2, 2));

    // The push at level 0 sent the level-0 blobs (skopeo verifies them).
    let manifest: Value = serde_json::from_slice(&inspect_raw(&remote)).expect("manifest");
    let pushed_layout = k.path("pushed");
    copy_to_layout(&remote, &pushed_layout, "app");
    let pushed = check_layers(&manifest, &local, &[media::OCI_LAYER_GZIP; 3], |d| {
        layout_blob(&pushed_layout, d)
    });
    assert_eq!(pushed, d0);
}
