//! Attestations of `type=local` and `type=tar` outputs: written as files
//! beside the root filesystem, as BuildKit's local exporter writes them
//! (`exporter/local/fs.go`).
//!
//! Each platform's folder (the output itself for one platform,
//! `linux_amd64/`… for several) gets one file per attestation, named
//! `<attestation-prefix><path>`: `provenance.json`, `sbom.spdx.json`. Each
//! is an in-toto statement indented by two spaces, mode 0600, whose
//! subjects are the regular files of that root filesystem (path relative
//! to it, sha256 of the content), walked in lexical order before the
//! statements are added; its time is `SOURCE_DATE_EPOCH` when set, else
//! the export's.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::Digest as _;

use super::{AttestError, Predicate, STATEMENT_TYPE};

/// A regular file of the exported root filesystem, as a statement names
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Relative to the platform's folder, `/`-separated, no leading `/`.
    pub name: String,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
}

/// The regular files under `dir`, in the order Go's `filepath.WalkDir`
/// (which fsutil's walk follows) visits them: each folder's entries sorted
/// by name. Symlinks are not followed, and hard links are hashed once.
pub fn subjects(dir: &Path) -> Result<Vec<Subject>, AttestError> {
    let mut out = Vec::new();
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    walk(dir, "", &mut out, &mut seen)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<Subject>,
    seen: &mut HashMap<(u64, u64), String>,
) -> Result<(), AttestError> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let rel = if rel.is_empty() {
            name.into_owned()
        } else {
            format!("{rel}/{name}")
        };
        let md = std::fs::symlink_metadata(&path)?;
        if md.is_dir() {
            walk(&path, &rel, out, seen)?;
        } else if md.is_file() {
            let key = (md.dev(), md.ino());
            let sha256 = match seen.get(&key) {
                Some(h) => h.clone(),
                None => {
                    let h = hash_file(&path)?;
                    seen.insert(key, h.clone());
                    h
                }
            };
            out.push(Subject { name: rel, sha256 });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<String, AttestError> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(kiln_cache::Digest::from_sha256(h).hex().to_string())
}

/// The statement file `p` becomes, about `subjects`: BuildKit's JSON
/// (`json.MarshalIndent(stmt, "", "  ")`).
pub fn statement_bytes(p: &Predicate, subjects: &[Subject]) -> Result<Vec<u8>, AttestError> {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| json!({"name": s.name, "digest": {"sha256": s.sha256}}))
        .collect();
    let st = json!({
        "_type": STATEMENT_TYPE,
        "predicateType": p.predicate_type,
        "subject": subjects,
        "predicate": p.predicate,
    });
    serde_json::to_vec_pretty(&st)
        .map_err(|e| AttestError::Spec(format!("encoding an attestation: {e}")))
}

/// Writes `predicates` as statement files into the platform folder `dir`
/// (its root filesystem already there), named `prefix` + BuildKit's path.
/// `epoch` (`SOURCE_DATE_EPOCH`) is their time when set. Returns the
/// files written.
pub fn write(
    dir: &Path,
    prefix: &str,
    predicates: &[Predicate],
    epoch: Option<i64>,
) -> Result<Vec<PathBuf>, AttestError> {
    if predicates.is_empty() {
        return Ok(Vec::new());
    }
    let subjects = subjects(dir)?;
    let mut names = BTreeSet::new();
    let mut written = Vec::new();
    for p in predicates {
        let name = format!("{prefix}{}", p.file_name);
        if name.contains('/') || name == ".." {
            return Err(AttestError::Spec(format!(
                "invalid attestation file name {name:?}: attestation-prefix must not contain '/'"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(AttestError::Spec(format!(
                "duplicate attestation path name {name}"
            )));
        }
        let bytes = statement_bytes(p, &subjects)?;
        let path = dir.join(&name);
        // A file the rootfs put there is replaced, never written through
        // (it may be a symlink out of the folder).
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(_) => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        let secs = epoch.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let t = kiln_worker::fileops::meta::Time { sec: secs, nsec: 0 };
        kiln_worker::fileops::meta::lutimes(&path, t, t)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_regular_files_in_walk_order() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        std::fs::create_dir_all(d.join("a/b")).expect("mkdir");
        std::fs::write(d.join("a/b/x"), b"x").expect("write");
        std::fs::write(d.join("a.txt"), b"y").expect("write");
        std::fs::write(d.join("a/c"), b"z").expect("write");
        std::os::unix::fs::symlink("a.txt", d.join("link")).expect("symlink");
        std::fs::hard_link(d.join("a/c"), d.join("hard")).expect("link");
        let s = subjects(d).expect("subjects");
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        // WalkDir order: "a" (a folder) sorts before "a.txt".
        assert_eq!(names, ["a/b/x", "a/c", "a.txt", "hard"]);
        assert_eq!(s[1].sha256, s[3].sha256);
        assert_eq!(
            s[0].sha256,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
