//! The shared build cases whose steps are COPY/ADD from the context, run
//! through `kiln_worker::fileops::copy` into a busybox rootfs (extracted from the
//! shared OCI fixture with our own archive extraction), then compared path by
//! path with what BuildKit produced (`expected.json`) or with the
//! hand-written `expect`.
//!
//! Two fixture repairs, both because ../shared stores contexts read-only and
//! flattened: every context entry there lost its owner-write bit (files 0444,
//! dirs 0555, where BuildKit saw 0644/0755), and `links`'s
//! `dirwithlink/link.txt` is stored as a regular file holding its symlink
//! target (`real.txt`). The copy of each context made here restores both.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_testsupport::{busybox_fixture, shared};
use kiln_worker::fileops::{self, CopySpec, SourceIds};
use sha2::{Digest, Sha256};

/// Extract busybox 1.35 linux/amd64 from the OCI archive fixture.
fn busybox_rootfs(into: &Path) {
    let layout = tempfile::tempdir().unwrap();
    let f = fs::File::open(busybox_fixture()).unwrap();
    tar::Archive::new(f).unpack(layout.path()).unwrap();
    let blob = |d: &str| {
        layout
            .path()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blob(d)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let mut desc = index["manifests"][0].clone();
    loop {
        let doc = json(desc["digest"].as_str().unwrap());
        if let Some(ms) = doc["manifests"].as_array() {
            desc = ms
                .iter()
                .find(|m| {
                    m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux"
                })
                .unwrap()
                .clone();
            continue;
        }
        for layer in doc["layers"].as_array().unwrap() {
            let p = blob(layer["digest"].as_str().unwrap());
            let mut report = fileops::CopyReport::default();
            fileops::unpack::extract(&p, "layer", into, None, &mut report).unwrap();
            assert!(report.files > 0);
        }
        return;
    }
}

/// Copy a case context, restoring what ../shared lost (see module docs).
fn prepare_context(case: &str, to: &Path) {
    fn walk(from: &Path, to: &Path) {
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let t = to.join(e.file_name());
            if md.is_dir() {
                fs::create_dir(&t).unwrap();
                walk(&e.path(), &t);
            } else if md.file_type().is_symlink() {
                symlink(fs::read_link(e.path()).unwrap(), &t).unwrap();
                continue;
            } else {
                fs::copy(e.path(), &t).unwrap();
            }
            fs::set_permissions(&t, fs::Permissions::from_mode((md.mode() & 0o7777) | 0o200))
                .unwrap();
        }
    }
    walk(&shared().join("cases").join(case).join("context"), to);
    if case == "links" {
        let l = to.join("dirwithlink/link.txt");
        let target = fs::read_to_string(&l).unwrap();
        fs::remove_file(&l).unwrap();
        symlink(target.trim(), &l).unwrap();
    }
}

#[derive(Debug)]
struct Step {
    add: bool,
    flags: Vec<(String, String)>,
    args: Vec<String>,
    workdir: String,
}

/// The COPY/ADD steps of a case's Dockerfile that read the context, with
/// the WORKDIR in force at each.
fn steps(case: &str, final_workdir: Option<&str>) -> Vec<Step> {
    let text = fs::read_to_string(shared().join("cases").join(case).join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut workdir = "/".to_string();
    let mut expanded = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(kw) = words.next() else { continue };
        let kw = kw.to_ascii_uppercase();
        let rest: Vec<String> = words.map(String::from).collect();
        match kw.as_str() {
            "FROM" => workdir = "/".into(),
            "WORKDIR" if expanded => {}
            "WORKDIR" => {
                let w = rest.join(" ");
                if w.contains('$') {
                    expanded = true;
                    // Variable expansion is the frontend's business; the
                    // image's final WorkingDir is what BuildKit made of it.
                    workdir = final_workdir.unwrap().to_string();
                } else if w.starts_with('/') {
                    workdir = w;
                } else {
                    workdir = format!("{}/{}", workdir.trim_end_matches('/'), w);
                }
            }
            "COPY" | "ADD" => {
                let mut flags = Vec::new();
                let mut args = Vec::new();
                for w in rest {
                    if let Some(f) = w.strip_prefix("--") {
                        let (k, v) = f.split_once('=').unwrap_or((f, ""));
                        flags.push((k.to_string(), v.to_string()));
                    } else {
                        args.push(w);
                    }
                }
                if flags.iter().any(|(k, _)| k == "from") {
                    continue;
                }
                out.push(Step {
                    add: kw == "ADD",
                    flags,
                    args,
                    workdir: workdir.clone(),
                });
            }
            _ => {}
        }
    }
    out
}

/// Run one step; returns the destination as an absolute path inside the
/// root (no trailing slash).
fn run_step(step: &Step, context: &Path, root: &Path, extra_exclude: &[String]) -> String {
    let (dest, sources) = step.args.split_last().unwrap();
    let mut spec = CopySpec::new(context, sources.to_vec(), root, dest);
    spec.workdir = step.workdir.clone();
    spec.unpack = step.add;
    spec.source_ids = SourceIds::Root;
    spec.context_exclude = extra_exclude.to_vec();
    for (k, v) in &step.flags {
        match k.as_str() {
            "chown" => spec.owner = Some(fileops::resolve_chown(v, root).unwrap()),
            "chmod" => spec.mode = Some(fileops::Chmod::parse(v).unwrap()),
            "parents" => spec.parents = true,
            "exclude" => spec.exclude.push(v.clone()),
            "link" => {}
            other => panic!("unexpected flag {other}"),
        }
    }
    fileops::copy(&spec).unwrap_or_else(|e| panic!("{:?}: {e}", step.args));
    let d = fileops::destination_path(dest, &step.workdir, sources.len() > 1);
    let t = d.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// imagefs.py's description of one path of a rootfs.
fn describe(root: &Path, p: &str) -> Option<serde_json::Value> {
    let host = root.join(p.trim_start_matches('/'));
    let md = fs::symlink_metadata(&host).ok()?;
    let mode = format!("0o{:o}", md.mode() & 0o7777);
    let ft = md.file_type();
    let (t, size, extra) = if ft.is_dir() {
        ("d", 0, String::new())
    } else if ft.is_symlink() {
        ("l", 0, fs::read_link(&host).unwrap().display().to_string())
    } else if ft.is_file() {
        let mut h = Sha256::new();
        let mut f = fs::File::open(&host).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        ("f", md.len(), hex::encode(h.finalize()))
    } else {
        ("o", 0, String::new())
    };
    Some(serde_json::json!([
        t,
        mode,
        md.uid(),
        md.gid(),
        size,
        extra
    ]))
}

fn list_under(root: &Path, p: &str, out: &mut BTreeSet<String>) {
    let host = root.join(p.trim_start_matches('/'));
    let Ok(md) = fs::symlink_metadata(&host) else {
        return;
    };
    out.insert(p.to_string());
    if md.is_dir() {
        for e in fs::read_dir(&host).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let child = if p == "/" {
                format!("/{name}")
            } else {
                format!("{p}/{name}")
            };
            list_under(root, &child, out);
        }
    }
}

/// Run a case and compare; returns (paths compared, mismatches).
fn run_case(case: &str) -> (usize, Vec<String>) {
    let dir = shared().join("cases").join(case);
    let expected: Option<serde_json::Value> = fs::read(dir.join("expected.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    let case_json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("case.json")).unwrap()).unwrap();
    let from_scratch = fs::read_to_string(dir.join("Dockerfile"))
        .unwrap()
        .contains("FROM scratch");

    let ctx = tempfile::tempdir().unwrap();
    prepare_context(case, ctx.path());
    let root = tempfile::tempdir().unwrap();
    if !from_scratch {
        busybox_rootfs(root.path());
    }
    let final_wd = expected
        .as_ref()
        .and_then(|e| e["config"]["WorkingDir"].as_str().map(String::from));
    let mut ignore = Vec::new();
    if let Ok(text) = fs::read(ctx.path().join(".dockerignore")) {
        ignore = kiln_patternmatcher::read_all(&text)
            .unwrap()
            .into_iter()
            .map(|p| p.pattern)
            .collect();
    }
    let mut dests = Vec::new();
    for step in steps(case, final_wd.as_deref()) {
        dests.push(run_step(&step, ctx.path(), root.path(), &ignore));
    }
    assert!(!dests.is_empty(), "{case}: no COPY/ADD step");

    let mut mismatches = Vec::new();
    let mut compared = 0;
    if let Some(exp) = expected {
        let fsmap: BTreeMap<String, serde_json::Value> = exp["fs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut paths = BTreeSet::new();
        for d in &dests {
            list_under(root.path(), d, &mut paths);
            let mut a = Path::new(d).parent();
            while let Some(p) = a {
                if p != Path::new("/") {
                    paths.insert(p.display().to_string());
                }
                a = p.parent();
            }
            for k in fsmap.keys() {
                if k == d || k.starts_with(&format!("{}/", d.trim_end_matches('/'))) {
                    paths.insert(k.clone());
                }
            }
        }
        for p in paths {
            compared += 1;
            let ours = describe(root.path(), &p);
            let theirs = fsmap.get(&p).cloned();
            if ours != theirs {
                mismatches.push(format!("{p}: kiln {ours:?} != buildkit {theirs:?}"));
            }
        }
    } else {
        let expect = &case_json["expect"];
        for (p, content) in expect["files"].as_object().unwrap() {
            compared += 1;
            let got = fs::read_to_string(root.path().join(p.trim_start_matches('/'))).ok();
            if got.as_deref() != content.as_str() {
                mismatches.push(format!("{p}: content {got:?} != {content}"));
            }
        }
        if let Some(modes) = expect["modes"].as_object() {
            for (p, m) in modes {
                compared += 1;
                let got = fs::symlink_metadata(root.path().join(p.trim_start_matches('/')))
                    .ok()
                    .map(|md| format!("0o{:o}", md.mode() & 0o7777));
                if got.as_deref() != m.as_str() {
                    mismatches.push(format!("{p}: mode {got:?} != {m}"));
                }
            }
        }
        for p in expect["absent"].as_array().unwrap() {
            compared += 1;
            let p = p.as_str().unwrap();
            if fs::symlink_metadata(root.path().join(p.trim_start_matches('/'))).is_ok() {
                mismatches.push(format!("{p}: present, should be absent"));
            }
        }
    }
    (compared, mismatches)
}

fn check(case: &str) {
    let (n, bad) = run_case(case);
    eprintln!("{case}: {} of {n} paths as BuildKit", n - bad.len());
    assert!(bad.is_empty(), "{case}:\n{}", bad.join("\n"));
}

#[test]
fn case_copy_basics() {
    check("copy-basics");
}

#[test]
fn case_copy_chown_chmod() {
    check("copy-chown-chmod");
}

#[test]
fn case_add_local_tar() {
    check("add-local-tar");
}

#[test]
fn case_dockerignore() {
    check("dockerignore");
}

#[test]
fn case_links_dirwithlink() {
    check("links");
}

#[test]
fn case_m_copy_parents() {
    check("m-copy-parents");
}

#[test]
fn case_m_copy_exclude() {
    check("m-copy-exclude");
}

#[test]
fn case_workdir_env_subst() {
    check("workdir-env-subst");
}

#[test]
fn case_error_missing_source() {
    let case_json: serde_json::Value = serde_json::from_slice(
        &fs::read(shared().join("cases/error-missing-source/case.json")).unwrap(),
    )
    .unwrap();
    let want = case_json["expect_error"].as_str().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    prepare_context("error-missing-source", ctx.path());
    let root = tempfile::tempdir().unwrap();
    let step = &steps("error-missing-source", None)[0];
    let (dest, sources) = step.args.split_last().unwrap();
    let spec = CopySpec::new(ctx.path(), sources.to_vec(), root.path(), dest);
    let err = fileops::copy(&spec).unwrap_err().to_string();
    assert!(err.contains(want), "{err}");
    assert_eq!(
        err,
        "failed to calculate checksum: \"/does-not-exist\": not found"
    );
    let memo = fileops::ChecksumMemo::new();
    let err = fileops::checksum_sources(ctx.path(), sources, &(&spec).into(), &memo)
        .unwrap_err()
        .to_string();
    assert!(err.contains(want), "{err}");
}
