//! Where the shared test material is: `../shared` beside the checkout (the
//! conformance data, the build cases, the oracle) and the busybox fixture
//! every image test starts from. Every test finds them through here, so
//! there is one answer to "where is the fixture".

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// `../shared` beside the checkout, read-only material the tests compare
/// against.
pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

/// The busybox:1.35 fixture every image test builds on: a multi-platform
/// OCI archive.
pub fn busybox_fixture() -> PathBuf {
    shared().join("fixtures/busybox-1.35-oci.tar")
}

/// The fixture's index digest: the image ID `kiln load` gives it.
pub const BUSYBOX_INDEX: &str =
    "sha256:92113fb732fa5ce2fbd395951f3008d3c03ae3bb722f1be8c712e6e4e1acb4f6";

fn archive_files() -> HashMap<String, Vec<u8>> {
    let f = std::fs::File::open(busybox_fixture()).expect("busybox fixture");
    let mut a = tar::Archive::new(f);
    let mut out = HashMap::new();
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).expect("read");
        out.insert(name, v);
    }
    out
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    files
        .get(&format!("blobs/sha256/{hex}"))
        .expect("blob present")
}

/// The gzip layer blobs of linux/amd64 busybox, lowest first.
pub fn busybox_layers() -> Vec<Vec<u8>> {
    let files = archive_files();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&files["index.json"]).expect("index.json");
    // Follow nested indexes down to the amd64 manifest.
    loop {
        let manifests = doc["manifests"].as_array().expect("manifests").clone();
        let pick = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .or_else(|| manifests.first())
            .expect("a manifest");
        let next: serde_json::Value =
            serde_json::from_slice(blob(&files, pick["digest"].as_str().expect("digest")))
                .expect("json");
        if next.get("layers").is_some() {
            doc = next;
            break;
        }
        doc = next;
    }
    doc["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| blob(&files, l["digest"].as_str().expect("digest")).to_vec())
        .collect()
}

/// Unpacks busybox as overlay-native layer dirs under `base` with the
/// worker's own `apply_layer`; returns them lowest first.
#[cfg(feature = "worker")]
pub fn busybox_layer_dirs(base: &std::path::Path) -> Vec<PathBuf> {
    busybox_layers()
        .iter()
        .enumerate()
        .map(|(i, gz)| {
            let dir = base.join(format!("layer{i}"));
            kiln_worker::snapshot::apply_layer(flate2::read::GzDecoder::new(&gz[..]), &dir)
                .expect("apply layer");
            dir
        })
        .collect()
}
