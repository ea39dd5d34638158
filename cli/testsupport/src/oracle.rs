//! The independent readers that judge kiln's output, so a test never grades
//! kiln with kiln's own code: the oracle's imagefs.py, skopeo, umoci, and
//! plain listings of tars and trees.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::fixtures::shared;
use crate::kiln::stderr;

/// The oracle's description of an image (archive or layout), one platform.
pub fn imagefs(image: &Path, platform: Option<&str>) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(shared().join("oracle/imagefs.py")).arg(image);
    if let Some(p) = platform {
        cmd.args(["--platform", p]);
    }
    let out = cmd.output().expect("running imagefs.py");
    assert!(out.status.success(), "imagefs.py: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("imagefs.py prints JSON")
}

/// Runs `skopeo ARGS` (it verifies every digest it copies), asserts
/// success, returns its stdout.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (run .ci/setup)");
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    out.stdout
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE`: an independent reader of an
/// OCI layout; asserts success. The root filesystem is `BUNDLE/rootfs`,
/// the runtime config `BUNDLE/config.json`.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("umoci (run .ci/setup)");
    assert!(out.status.success(), "umoci: {}", stderr(&out));
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
