//! `kiln parse` as users run it: the real binary on BuildKit's parser corpus
//! (byte-identical dumps), on bad input (exit 1, a located diagnostic), and
//! with `--format json` and `--plan`.

use std::process::Command;

use kiln_testsupport::shared;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

#[test]
fn dump_matches_buildkit_for_every_conformance_case() {
    let dir = shared().join("conformance/buildkit-parser");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 33);
    let mut failures = Vec::new();
    for case in &cases {
        let out = kiln(&["parse", case.join("Dockerfile").to_str().unwrap()]);
        let expected = std::fs::read(case.join("result")).unwrap();
        if !out.status.success() || out.stdout != expected {
            failures.push(format!(
                "{}: status {:?}\n--- got\n{}\n--- want\n{}\n--- stderr\n{}",
                case.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 33 differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail_with_buildkit_messages() {
    let dir = shared().join("conformance/buildkit-parser-negative");
    for (case, msg) in [
        ("empty_dockerfile", "file with no instructions"),
        ("only_comments", "file with no instructions"),
        ("env_no_value", "ENV must have two arguments"),
        (
            "shykes-nested-json",
            "arrays must be comprised of strings only",
        ),
    ] {
        let out = kiln(&["parse", dir.join(case).join("Dockerfile").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{case}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(msg), "{case}: {stderr}");
    }
}

#[test]
fn bad_file_exits_1_with_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("Dockerfile");
    std::fs::write(&f, "FROM busybox\nRUN true\nCOPY --nope=1 a b\n").unwrap();
    let out = kiln(&["parse", "--format", "json", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown flag: --nope"), "{stderr}");
    assert!(stderr.contains("line 3, column 6"), "{stderr}");
    assert!(
        stderr.contains("COPY --nope=1 a b"),
        "shows the line: {stderr}"
    );

    let case = shared().join("cases/error-unknown-instruction/Dockerfile");
    let out = kiln(&["parse", "--plan", case.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown instruction: FROBNICATE"),
        "{stderr}"
    );
    assert!(stderr.contains("line 2, column 1"), "{stderr}");

    let out = kiln(&["parse", tmp.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn json_and_plan_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("Dockerfile");
    std::fs::write(
        &f,
        "ARG BASE=busybox\nFROM $BASE AS build\nARG V=1\nRUN echo $V\nFROM scratch AS unused\nFROM build\nMAINTAINER me\nCOPY --from=build /a /a\n",
    )
    .unwrap();
    let out = kiln(&["parse", "--format", "json", f.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instructions"].as_array().unwrap().len(), 8);
    assert_eq!(v["instructions"][1]["command"]["name"], "build");

    let out = kiln(&[
        "parse",
        "--plan",
        "--build-arg",
        "V=2",
        "--build-arg",
        "NOBODY=x",
        "--platform",
        "linux/arm64",
        f.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOBODY"),
        "unused build arg warned: {stderr}"
    );
    assert!(stderr.contains("MAINTAINER"), "{stderr}");
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = p["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "the unused stage is pruned");
    assert_eq!(stages[0]["base"]["reference"], "busybox");
    assert_eq!(p["target_platform"]["architecture"], "arm64");
    let run = &stages[0]["steps"][1];
    assert!(run["run_env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("V=2")));

    let out = kiln(&["parse", "--plan", "--target", "nope", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target stage \"nope\" could not be found")
    );
}
