//! Every build case in ../shared/cases parses and plans with its own build
//! args, target and platforms; the unknown-instruction case fails with
//! BuildKit's words and a location.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_frontend::plan::{plan, Base, PlanOptions, Platform, StepOp};
use kiln_testsupport::shared;

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(shared().join("cases"))
        .expect("shared/cases exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn options(case: &serde_json::Value) -> Vec<PlanOptions> {
    let build_args: BTreeMap<String, String> = case["args"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let target = case["target"].as_str().map(str::to_string);
    let platforms: Vec<Option<Platform>> = match case["platforms"].as_array() {
        Some(list) => list
            .iter()
            .map(|p| Some(Platform::parse(p.as_str().unwrap()).unwrap()))
            .collect(),
        None => vec![None],
    };
    platforms
        .into_iter()
        .map(|p| PlanOptions {
            build_args: build_args.clone(),
            target: target.clone(),
            target_platform: p,
            build_platform: None,
            ..PlanOptions::default()
        })
        .collect()
}

#[test]
fn every_case_parses_and_plans() {
    let dirs = cases();
    assert!(
        dirs.len() >= 30,
        "expected the shared cases, found {}",
        dirs.len()
    );
    let mut planned = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        for opts in options(&case) {
            let result = kiln_frontend::parser::parse(&src).and_then(|df| plan(&df, &opts));
            if name == "error-unknown-instruction" {
                let err = result.expect_err("FROBNICATE must be rejected");
                assert!(
                    err.message.contains("unknown instruction"),
                    "{name}: {}",
                    err.message
                );
                assert_eq!(err.message, "unknown instruction: FROBNICATE");
                let loc = err.location.expect("a location");
                assert_eq!((loc.line, loc.column), (2, 1));
                continue;
            }
            let p = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let target = p
                .target_stage()
                .unwrap_or_else(|| panic!("{name}: no target stage"));
            if let Some(t) = case["target"].as_str() {
                assert_eq!(target.name.as_deref(), Some(t), "{name}");
            }
            // Every stage's base is either scratch, busybox, or an earlier stage.
            for st in &p.stages {
                match &st.base {
                    Base::Scratch => {}
                    Base::Image { reference } => {
                        assert!(reference.starts_with("busybox"), "{name}: {reference}")
                    }
                    Base::Stage { index } => assert!(*index < st.index, "{name}"),
                    Base::Context { name: c } => panic!("{name}: no named context given: {c}"),
                }
                assert!(
                    st.config
                        .env
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|e| e.starts_with("PATH=")),
                    "{name}"
                );
            }
            planned += 1;
        }
    }
    assert!(planned >= dirs.len() - 1);
}

fn plan_case(name: &str, args: &[(&str, &str)], target: Option<&str>) -> kiln_frontend::plan::Plan {
    let src =
        std::fs::read_to_string(shared().join("cases").join(name).join("Dockerfile")).unwrap();
    let df = kiln_frontend::parser::parse(&src).unwrap();
    let opts = PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        ..Default::default()
    };
    plan(&df, &opts).unwrap()
}

/// The plan's config for cases whose expected.json holds BuildKit's config
/// (the base busybox config adds `Cmd: ["sh"]`, which a plan without a
/// resolver cannot know, so those fields are compared where they are set by
/// the Dockerfile).
#[test]
fn configs_match_buildkit_for_oracle_cases() {
    for name in [
        "metadata",
        "workdir-env-subst",
        "cmd-entrypoint",
        "entrypoint-exec-cmd-shell",
        "onbuild-recorded",
        "shell-instruction",
        "arg-scoping",
        "user-run",
    ] {
        let dir = shared().join("cases").join(name);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let args: Vec<(String, String)> = case["args"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = plan_case(name, &args, case["target"].as_str());
        let got = serde_json::to_value(&p.target_stage().unwrap().config).unwrap();
        let want = &expected["config"];
        for (k, v) in want.as_object().unwrap() {
            if k == "Cmd" && v == &serde_json::json!(["sh"]) {
                continue; // inherited from busybox
            }
            assert_eq!(&got[k], v, "{name}: config field {k}");
        }
    }
}

#[test]
fn arg_scoping_case_values() {
    let p = plan_case("arg-scoping", &[("OVERRIDDEN", "overridden")], None);
    let st = p.target_stage().unwrap();
    assert_eq!(
        st.base,
        Base::Image {
            reference: "busybox:1.35".into()
        }
    );
    let run = st
        .steps
        .iter()
        .find(|s| matches!(s.op, StepOp::Run { .. }))
        .unwrap();
    // TAG is global only: not redeclared, so not visible in the stage.
    assert!(run.run_env.contains(&"GLOBAL=global-default".to_string()));
    assert!(run.run_env.contains(&"LOCAL=local-default".to_string()));
    assert!(run.run_env.contains(&"OVERRIDDEN=overridden".to_string()));
    assert!(!run.run_env.iter().any(|e| e.starts_with("TAG=")));
    let created = &run.history.as_ref().unwrap().created_by;
    assert_eq!(
        created,
        "RUN |3 GLOBAL=global-default LOCAL=local-default OVERRIDDEN=overridden /bin/sh -c echo \"$GLOBAL|$LOCAL|$OVERRIDDEN|$TAG\" > /args.txt # buildkit"
    );
}

#[test]
fn target_stage_prunes_unneeded_stages() {
    let dir = shared().join("cases/target-stage");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let target = case["target"].as_str().unwrap();
    let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let df = kiln_frontend::parser::parse(&src).unwrap();
    let all = plan(&df, &PlanOptions::default()).unwrap();
    let p = plan(
        &df,
        &PlanOptions {
            target: Some(target.into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.target_stage().unwrap().name.as_deref(), Some(target));
    assert_eq!(all.stages.len(), 3);
    let names: Vec<_> = p.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["base", "mid"]);
    let err = plan(
        &df,
        &PlanOptions {
            target: Some("nope".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.message, "target stage \"nope\" could not be found");
}
