//! Every case of testdata/compose against the goldens `docker compose`
//! v2.40 printed for it (see testdata/compose/regen-goldens.sh): the
//! library's output must be the oracle's, byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_compose::{emit, load, LoadOptions};

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/compose")
}

fn options(dir: &Path) -> LoadOptions {
    let mut o = LoadOptions {
        interpolate: true,
        cwd: dir.to_path_buf(),
        os_env: BTreeMap::from([("HOME".into(), "/root".into())]),
        ..Default::default()
    };
    if let Ok(args) = std::fs::read_to_string(dir.join("args")) {
        let words: Vec<&str> = args.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let v = words.get(i + 1).map(|s| s.to_string()).unwrap_or_default();
            match words[i] {
                "-f" => o.files.push(v.into()),
                "-p" => o.project_name = Some(v),
                "--profile" => o.profiles.push(v),
                "--env-file" => o.env_files.push(v.into()),
                "--project-directory" => o.project_directory = Some(v.into()),
                other => panic!("unknown flag {other} in {}", dir.display()),
            }
            i += 2;
        }
    }
    if let Ok(env) = std::fs::read_to_string(dir.join("env")) {
        for l in env.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = l.split_once('=') {
                o.os_env.insert(k.into(), v.into());
            }
        }
    }
    o
}

/// Runs one case; returns a description of the first mismatch.
fn check(dir: &Path) -> Result<(), String> {
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let shown = dir.display().to_string();
    let fix = |s: &str| s.replace("@DIR@", &shown);
    let result = load(&options(&dir));
    if let Ok(err) = std::fs::read_to_string(dir.join("expected.err")) {
        let got = match result {
            Ok(_) => return Err("loaded, but the oracle failed".into()),
            Err(e) => e.to_string(),
        };
        let want = fix(err.trim_end());
        // kiln says what docker says (one line or several), then where
        // (file:line).
        let first = got
            .lines()
            .take(want.lines().count().max(1))
            .collect::<Vec<_>>()
            .join("\n");
        // yaml-rust2 words YAML syntax errors its own way (known
        // difference): only the `yaml: line` form is compared.
        let syntax = want.starts_with("yaml: line ") && first.starts_with("yaml: line ");
        if first != want && !syntax {
            return Err(format!("error\n  want: {want}\n  got:  {got}"));
        }
        return Ok(());
    }
    let mut p = result.map_err(|e| format!("failed: {e}"))?;
    emit::escape_dollars(&mut p.model);
    for (fmt, text) in [
        ("yaml", emit::yaml(&p.model)),
        ("json", emit::json(&p.model)),
    ] {
        let want = fix(
            &std::fs::read_to_string(dir.join(format!("expected.{fmt}")))
                .map_err(|e| e.to_string())?,
        );
        if want != text {
            let wl: Vec<&str> = want.lines().collect();
            let gl: Vec<&str> = text.lines().collect();
            let i = wl
                .iter()
                .zip(&gl)
                .position(|(a, b)| a != b)
                .unwrap_or(wl.len().min(gl.len()));
            return Err(format!(
                "{fmt} differs at line {}\n  want: {:?}\n  got:  {:?}\n--- got ---\n{text}",
                i + 1,
                wl.get(i),
                gl.get(i)
            ));
        }
    }
    Ok(())
}

#[test]
fn config_matches_docker_compose() {
    let mut failures = Vec::new();
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(cases())
        .expect("testdata/compose")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if !e.path().is_dir() {
            continue;
        }
        n += 1;
        if let Err(why) = check(&e.path()) {
            failures.push(format!("{}: {why}", e.file_name().to_string_lossy()));
        }
    }
    assert!(n >= 12, "only {n} cases");
    assert!(
        failures.is_empty(),
        "{} of {n} cases differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
