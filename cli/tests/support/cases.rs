#![allow(dead_code)] // each test file uses its own part of it
//! The differential build cases of `../shared/cases`, shared by the test
//! files that run them (cases.rs as root, rootless.rs as a plain user):
//! build a case, compare its image with BuildKit's, rebuild from cache.
//! See cases.rs for what ../shared changed in the contexts.

use std::path::{Path, PathBuf};

use kiln_testsupport::{events, imagefs, shared, stderr, Kiln};
use serde_json::Value;

/// What only the case tests do with a kiln.
pub trait CaseKiln {
    /// A store with the busybox fixture loaded and an empty `work/` folder
    /// for the case's Dockerfile, context and outputs.
    fn for_case(bin: &str) -> Kiln;

    /// The case's own folder, beside the store.
    fn work(&self) -> PathBuf;
}

impl CaseKiln for Kiln {
    fn for_case(bin: &str) -> Kiln {
        let k = Kiln::with_busybox(bin);
        k.mkdir(&k.work());
        k
    }

    fn work(&self) -> PathBuf {
        self.path("work")
    }
}

pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The differences between two imagefs descriptions, readably.
pub fn differences(got: &Value, want: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["platform", "config", "layers", "hardlinks"] {
        if got.get(key) != want.get(key) {
            out.push(format!(
                "{key}: got {}, want {}",
                got.get(key).cloned().unwrap_or(Value::Null),
                want.get(key).cloned().unwrap_or(Value::Null)
            ));
        }
    }
    let empty = serde_json::Map::new();
    let gfs = got["fs"].as_object().unwrap_or(&empty);
    let wfs = want["fs"].as_object().unwrap_or(&empty);
    for (p, w) in wfs {
        match gfs.get(p) {
            None => out.push(format!("missing {p}: want {w}")),
            Some(g) if g != w => out.push(format!("{p}: got {g}, want {w}")),
            _ => {}
        }
    }
    for (p, g) in gfs {
        if !wfs.contains_key(p) {
            out.push(format!("extra {p}: {g}"));
        }
    }
    out
}

/// Checks a hand-written `expect` against the exported root filesystem.
pub fn check_expect(case: &str, rootfs: &Path, expect: &Value) {
    for (path, content) in expect["files"].as_object().into_iter().flatten() {
        let p = rootfs.join(path.trim_start_matches('/'));
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{case}: reading {path}: {e}"));
        // Expected contents are written with whitespace squeezed out when
        // they came from shell output; compare as the README's cases do.
        let want = content.as_str().unwrap_or_default();
        let got = String::from_utf8_lossy(&got);
        assert!(
            got == want || normalize(&got) == normalize(want),
            "{case}: {path}: got {got:?}, want {want:?}"
        );
    }
    for (path, mode) in expect["modes"].as_object().into_iter().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let p = rootfs.join(path.trim_start_matches('/'));
        let m = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{case}: {path}: {e}"))
            .permissions()
            .mode()
            & 0o7777;
        let want = mode.as_str().unwrap_or_default().trim_start_matches("0o");
        assert_eq!(
            format!("{m:o}"),
            want.trim_start_matches('0'),
            "{case}: mode of {path}"
        );
    }
    for path in expect["absent"].as_array().into_iter().flatten() {
        let path = path.as_str().unwrap_or_default();
        let p = rootfs.join(path.trim_start_matches('/'));
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "{case}: {path} should be absent"
        );
    }
}

/// Copies a case's context, restoring what ../shared lost (see above).
pub fn prepare_context(case: &str, from: &Path, to: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    fn walk(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("context dir");
        for e in std::fs::read_dir(from).expect("read context").flatten() {
            let md = std::fs::symlink_metadata(e.path()).expect("stat");
            let t = to.join(e.file_name());
            if md.is_dir() {
                walk(&e.path(), &t);
            } else if md.file_type().is_symlink() {
                symlink(std::fs::read_link(e.path()).expect("readlink"), &t).expect("symlink");
                continue;
            } else {
                std::fs::copy(e.path(), &t).expect("copy");
            }
            let mode = md.permissions().mode() & 0o7777;
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode | 0o200))
                .expect("chmod");
        }
    }
    walk(from, to);
    if case == "links" {
        let l = to.join("dirwithlink/link.txt");
        let target = std::fs::read_to_string(&l).expect("link.txt");
        std::fs::remove_file(&l).expect("rm link.txt");
        symlink(target.trim(), &l).expect("symlink link.txt");
    }
}

/// Runs the case `name` with the store of `k` (busybox loaded, `work/`
/// made, see [`CaseKiln`]) and checks it; returns the imagefs description
/// of the image it built (none for cases that must fail).
pub fn run_case(name: &str, k: &Kiln) -> Option<Value> {
    let dir = shared().join("cases").join(name);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("case.json")).expect("case.json"))
            .expect("case.json is JSON");
    let oci = k.work().join("image.tar");
    let local = k.work().join("rootfs");
    let oci_out = format!("type=oci,dest={}", oci.display());
    let local_out = format!("type=local,dest={}", local.display());
    let original = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
    let df_path = k.work().join("Dockerfile");
    std::fs::write(&df_path, &original).expect("writing the Dockerfile");
    let df = df_path.display().to_string();
    let ctx_dir = k.work().join("context");
    prepare_context(name, &dir.join("context"), &ctx_dir);
    let ctx = ctx_dir.display().to_string();
    let mut args: Vec<String> = vec![
        "build".into(),
        "--progress".into(),
        "plain".into(),
        "-f".into(),
        df,
        "--output".into(),
        oci_out,
        "--output".into(),
        local_out,
    ];
    for (k, v) in meta["args"].as_object().into_iter().flatten() {
        args.push("--build-arg".into());
        args.push(format!("{k}={}", v.as_str().unwrap_or_default()));
    }
    if let Some(t) = meta["target"].as_str() {
        args.push("--target".into());
        args.push(t.into());
    }
    if let Some(ps) = meta["platforms"].as_array() {
        let ps: Vec<&str> = ps.iter().filter_map(Value::as_str).collect();
        args.push("--platform".into());
        args.push(ps.join(","));
    }
    args.push(ctx);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = k.run(&argv);

    if let Some(want) = meta["expect_error"].as_str() {
        assert!(
            !out.status.success(),
            "{name}: the build should fail with {want:?}"
        );
        let err = stderr(&out);
        assert!(
            normalize(&err).contains(&normalize(want)),
            "{name}: error should contain {want:?}:\n{err}"
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{name}: build failed:\n{}",
        stderr(&out)
    );

    let got = imagefs(&oci, None);
    if let Ok(bytes) = std::fs::read(dir.join("expected.json")) {
        let want: Value = serde_json::from_slice(&bytes).expect("expected.json is JSON");
        let diffs = differences(&got, &want);
        assert!(
            diffs.is_empty(),
            "{name}: kiln's image differs from BuildKit's:\n{}",
            diffs.into_iter().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    if meta["expect"].is_object() {
        check_expect(name, &local, &meta["expect"]);
    }

    // A second build of the same case runs nothing: JSON progress reports
    // cached results, and at most the source ops that only read the store
    // (an image's manifest, when the target is the base image itself),
    // which the worker never records.
    let mut again: Vec<&str> = argv
        .iter()
        .copied()
        .filter(|a| !a.starts_with("type="))
        .filter(|a| *a != "--output" && *a != "plain")
        .collect();
    again[1] = "--progress";
    again.insert(2, "json");
    let out = k.run(&again);
    assert!(
        out.status.success(),
        "{name}: rebuild failed:\n{}",
        stderr(&out)
    );
    let events = events(&out);
    let is_source = |e: &Value| {
        let n = e["name"].as_str().unwrap_or_default();
        n.starts_with("FROM ") || n.starts_with("load build context") || n == "scratch"
    };
    assert!(
        !events.is_empty()
            && events
                .iter()
                // Build-check warnings are events too; they run anew.
                .all(|e| e["event"] == "cached" || e["event"] == "check" || is_source(e)),
        "{name}: the rebuild is not fully cached: {events:?}"
    );
    Some(got)
}

/// Cases that need QEMU and several platforms; cli/tests/emulation.rs.
pub const MULTI_PLATFORM: [&str; 1] = ["m-multi-platform"];

/// The names of the single-platform cases in `../shared/cases`, sorted.
pub fn single_platform_cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(shared().join("cases"))
        .expect("cases")
        .flatten()
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !MULTI_PLATFORM.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// Runs `each` for every case on two threads. A failing case (a panic) is
/// collected, not fatal, so one run names every case that fails; the
/// function panics at the end listing them, `how` saying in what setting.
pub fn run_all(names: &[String], how: &str, each: impl Fn(&str) + Sync) {
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(name) = names.get(i) else { break };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(name)));
                if let Err(e) = result {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{name}: {msg}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed {how}:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}
