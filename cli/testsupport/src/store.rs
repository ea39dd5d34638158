//! Looking into a kiln store without kiln's own import and export code:
//! a fresh store, an importer of OCI archives, the blobs an image reaches,
//! and a layout writer for the independent readers.

use std::io::Write;
use std::path::Path;

/// Imports an OCI archive into `root` under `name` through the blob store
/// (the test's own importer, so the registry tests do not depend on the
/// archive code); returns the descriptor of its top index or manifest.
pub fn import_oci_archive(
    root: &kiln_cache::Root,
    archive: &Path,
    name: &str,
) -> oci_spec::image::Descriptor {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = std::fs::File::open(archive).expect("open archive");
    tar::Archive::new(f)
        .unpack(dir.path())
        .expect("unpack archive");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("index.json"))
            .expect("json");
    for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let digest: kiln_cache::Digest = format!("sha256:{}", entry.file_name().to_string_lossy())
            .parse()
            .expect("digest");
        let bytes = std::fs::read(entry.path()).expect("read blob");
        let mut w = root
            .blobs()
            .writer(Some(&digest), Some(bytes.len() as u64))
            .expect("writer");
        w.write_all(&bytes).expect("write");
        w.commit().expect("commit");
    }
    let top: oci_spec::image::Descriptor =
        serde_json::from_value(index["manifests"][0].clone()).expect("descriptor");
    let reference = kiln_cache::Reference::parse(name).expect("reference");
    root.images()
        .set(&reference, top.clone())
        .expect("set name");
    top
}

/// Every blob reachable from `digest` (manifests, indexes, configs, layers).
pub fn reachable(root: &kiln_cache::Root, digest: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![digest.to_string()];
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let dg: kiln_cache::Digest = d.parse().expect("digest");
        let bytes = root.blobs().read(&dg).expect("blob in store");
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("schemaVersion").is_none() {
            continue; // a config
        }
        for key in ["manifests", "layers"] {
            if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
                for e in list {
                    if let Some(d) = e.get("digest").and_then(|d| d.as_str()) {
                        todo.push(d.to_string());
                    }
                }
            }
        }
        if let Some(d) = v
            .get("config")
            .and_then(|c| c.get("digest"))
            .and_then(|d| d.as_str())
        {
            todo.push(d.to_string());
        }
    }
    out
}

/// Writes the image `desc` of `root` as an OCI layout folder, so tools that
/// read layouts (imagefs.py, umoci) can look at what a pull stored.
pub fn export_layout(root: &kiln_cache::Root, desc: &oci_spec::image::Descriptor, dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    for d in reachable(root, desc.digest().as_ref()) {
        let dg: kiln_cache::Digest = d.parse().expect("digest");
        std::fs::copy(
            root.blobs().path(&dg),
            dir.join("blobs/sha256").join(dg.hex()),
        )
        .expect("copy blob");
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [serde_json::to_value(desc).expect("desc")]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
}

/// A fresh store in its own temp dir (kept alive by the returned guard).
pub fn temp_root() -> (tempfile::TempDir, kiln_cache::Root) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = kiln_cache::Root::open(dir.path()).expect("open root");
    (dir, root)
}
