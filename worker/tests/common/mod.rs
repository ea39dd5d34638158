//! Shared by the worker's and the CLI's sandbox tests: a real busybox rootfs
//! unpacked from ../shared's OCI archive with the worker's own apply_layer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// ../shared beside the checkout.
pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
}

fn archive_files() -> HashMap<String, Vec<u8>> {
    let f = std::fs::File::open(shared().join("fixtures/busybox-1.35-oci.tar"))
        .expect("busybox fixture");
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

/// Unpacks busybox as overlay-native layer dirs under `base`; returns them
/// lowest first.
pub fn busybox_layer_dirs(base: &Path) -> Vec<PathBuf> {
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

/// Names and types of a layer tar's entries, in order (`d`, `f`, `l`, `h`, `c`).
pub fn tar_listing(tar_bytes: &[u8]) -> Vec<(String, char)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .expect("tar")
        .map(|e| {
            let e = e.expect("entry");
            let t = match e.header().entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Regular => 'f',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                _ => '?',
            };
            (String::from_utf8_lossy(&e.path_bytes()).into_owned(), t)
        })
        .collect()
}

/// A comparable description of a tree: every path with its type, mode,
/// owner, and content (file bytes' length and hash, link target).
pub fn tree(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &Path, rel: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(base.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = base.join(&r);
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                let data = std::fs::read(&p).unwrap();
                let h = data
                    .iter()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64));
                format!("file {} {h:x}", data.len())
            } else {
                format!("special {:x}", md.rdev())
            };
            out.push(format!(
                "{} {what} {:o} {}:{}",
                r.display(),
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ));
            if md.is_dir() {
                walk(base, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut out);
    out
}
