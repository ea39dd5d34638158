//! Scoping and config accumulation, as BuildKit's dockerfile2llb does them.

use kiln_frontend::plan::{
    plan, plan_with_resolver, Base, ImageConfig, Plan, PlanOptions, Platform, Source, Stage, Step,
    StepOp,
};
use kiln_frontend::ErrorKind;
use kiln_testsupport::shared;

fn plan_src(src: &str, args: &[(&str, &str)], target: Option<&str>) -> kiln_frontend::Result<Plan> {
    let df = kiln_frontend::parser::parse(src)?;
    plan(
        &df,
        &PlanOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: target.map(str::to_string),
            target_platform: Some(Platform::parse("linux/amd64").unwrap()),
            build_platform: Some(Platform::parse("linux/amd64").unwrap()),
            ..PlanOptions::default()
        },
    )
}

fn ok(src: &str) -> Plan {
    plan_src(src, &[], None).unwrap_or_else(|e| panic!("{e:?}"))
}

fn target(p: &Plan) -> &Stage {
    p.target_stage().unwrap()
}

fn runs(st: &Stage) -> Vec<&Step> {
    st.steps
        .iter()
        .filter(|s| matches!(s.op, StepOp::Run { .. }))
        .collect()
}

fn env_of(step: &Step, key: &str) -> Option<String> {
    step.run_env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn global_args_serve_only_from_unless_redeclared() {
    let p = ok("ARG IMG=alpine\nARG V=3\nFROM ${IMG}:${V}\nRUN echo $V\nARG V\nRUN echo $V\n");
    let st = target(&p);
    assert_eq!(
        st.base,
        Base::Image {
            reference: "alpine:3".into()
        }
    );
    let r = runs(st);
    assert_eq!(
        env_of(r[0], "V"),
        None,
        "a global ARG is not visible before redeclaration"
    );
    assert_eq!(
        env_of(r[1], "V").as_deref(),
        Some("3"),
        "redeclared without default takes the global value"
    );
    assert_eq!(env_of(r[1], "IMG"), None);
}

#[test]
fn build_args_override_defaults_everywhere() {
    let p = plan_src(
        "ARG V=1\nFROM busybox:$V\nARG V=2\nARG W=x\nRUN true\n",
        &[("V", "9"), ("W", "y")],
        None,
    )
    .unwrap();
    let st = target(&p);
    assert_eq!(
        st.base,
        Base::Image {
            reference: "busybox:9".into()
        }
    );
    let r = runs(st)[0];
    assert_eq!(env_of(r, "V").as_deref(), Some("9"));
    assert_eq!(env_of(r, "W").as_deref(), Some("y"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn arg_after_env_of_same_name_wins_in_the_build_state() {
    // BuildKit's dispatchArg adds the ARG to the build state over the ENV:
    // RUN and later words see the ARG, the image config keeps the ENV.
    let p = plan_src(
        "FROM scratch\nENV A=from-env\nARG A=from-arg\nRUN x\nWORKDIR /$A\n",
        &[("A", "cli")],
        None,
    )
    .unwrap();
    let st = target(&p);
    assert_eq!(env_of(runs(st)[0], "A").as_deref(), Some("cli"));
    assert_eq!(st.config.working_dir.as_deref(), Some("/cli"));
    let p = plan_src(
        "FROM scratch\nENV A=from-env\nARG A=from-arg\nRUN x\nENV B=$A\n",
        &[],
        None,
    )
    .unwrap();
    let st = target(&p);
    assert_eq!(env_of(runs(st)[0], "A").as_deref(), Some("from-arg"));
    // ARG values never reach the image config, but an ENV that names one
    // keeps its value.
    assert_eq!(
        st.config.env.as_ref().unwrap(),
        &vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "A=from-env".into(),
            "B=from-arg".into()
        ]
    );
}

#[test]
fn sbom_scan_args_stay_out_of_the_environment() {
    let p = ok("FROM scratch\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG X=1\nRUN x\n");
    let r = runs(target(&p))[0];
    assert_eq!(env_of(r, "BUILDKIT_SBOM_SCAN_STAGE"), None);
    assert_eq!(env_of(r, "X").as_deref(), Some("1"));
}

#[test]
fn env_values_see_only_earlier_instructions() {
    let p = ok("FROM scratch\nENV A=1\nENV A=2 B=$A C=${A}x\nENV D=$B$C\n");
    let env = target(&p).config.env.clone().unwrap();
    assert!(env.contains(&"A=2".to_string()));
    assert!(env.contains(&"B=1".to_string()));
    assert!(env.contains(&"C=1x".to_string()));
    assert!(env.contains(&"D=11x".to_string()));
}

#[test]
fn arg_in_run_env_but_not_config_and_in_history() {
    let p = ok("FROM scratch\nARG X=1\nARG Y\nRUN echo hi\n");
    let st = target(&p);
    let r = runs(st)[0];
    assert_eq!(env_of(r, "X").as_deref(), Some("1"));
    assert_eq!(env_of(r, "Y"), None);
    assert_eq!(
        r.history.as_ref().unwrap().created_by,
        "RUN |2 X=1 Y= /bin/sh -c echo hi # buildkit"
    );
    assert!(!st
        .config
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("X=")));
}

#[test]
fn predefined_args_exist_globally_and_on_redeclaration() {
    let src = "FROM --platform=$BUILDPLATFORM busybox AS b\nARG TARGETARCH\nARG BUILDOS\nRUN echo $TARGETARCH $TARGETPLATFORM\n";
    let df = kiln_frontend::parser::parse(src).unwrap();
    let p = plan(
        &df,
        &PlanOptions {
            target_platform: Some(Platform::parse("linux/arm64").unwrap()),
            build_platform: Some(Platform::parse("linux/amd64").unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let st = target(&p);
    assert_eq!(st.platform, Some(Platform::parse("linux/amd64").unwrap()));
    let r = runs(st)[0];
    assert_eq!(env_of(r, "TARGETARCH").as_deref(), Some("arm64"));
    assert_eq!(env_of(r, "BUILDOS").as_deref(), Some("linux"));
    assert_eq!(env_of(r, "TARGETPLATFORM"), None, "not redeclared");
    assert!(p
        .global_args
        .contains(&("TARGETPLATFORM".into(), "linux/arm64".into())));
}

#[test]
fn unused_build_args_warn_proxies_do_not() {
    let p = plan_src(
        "FROM scratch\nARG USED\n",
        &[("USED", "1"), ("UNUSED", "2"), ("HTTP_PROXY", "http://p")],
        None,
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].message.contains("[UNUSED]"));
    let p = plan_src(
        "FROM scratch\nRUN true\n",
        &[("http_proxy", "http://p")],
        None,
    )
    .unwrap();
    assert_eq!(
        env_of(runs(target(&p))[0], "http_proxy").as_deref(),
        Some("http://p")
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn stage_bases_by_name_and_copy_from_by_name_index_image() {
    let p = ok("FROM busybox AS one\nRUN a\nFROM one\nCOPY --from=one /a /a\nCOPY --from=0 /b /b\nCOPY --from=alpine:3 /c /c\nRUN --mount=type=bind,from=one,target=/m true\n");
    let st = target(&p);
    assert_eq!(st.base, Base::Stage { index: 0 });
    let sources: Vec<_> = st
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            StepOp::Copy { from_source, .. } => from_source.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            Source::Stage { index: 0 },
            Source::Stage { index: 0 },
            Source::Image {
                reference: "alpine:3".into()
            }
        ]
    );
    match &runs(st)[0].op {
        StepOp::Run { mounts, .. } => {
            assert_eq!(mounts[0].from, Some(Source::Stage { index: 0 }));
            assert!(mounts[0].mount.readonly);
            assert_eq!(mounts[0].mount.target.as_deref(), Some("/m"));
        }
        _ => unreachable!(),
    }
}

#[test]
fn stage_inherits_config_env_and_args_of_its_base_stage() {
    let p = ok("FROM scratch AS a\nENV E=1\nARG A=2\nWORKDIR /w\nUSER u\nCMD [\"c\"]\nFROM a\nRUN x\nENTRYPOINT [\"e\"]\n");
    let st = target(&p);
    let r = runs(st)[0];
    assert_eq!(env_of(r, "E").as_deref(), Some("1"));
    assert_eq!(env_of(r, "A").as_deref(), Some("2"));
    assert_eq!(r.workdir, "/w");
    assert_eq!(r.user, "u");
    assert_eq!(st.config.entrypoint, Some(vec!["e".into()]));
    assert_eq!(
        st.config.cmd, None,
        "ENTRYPOINT resets a CMD inherited from the base"
    );
}

#[test]
fn entrypoint_keeps_cmd_set_earlier_in_same_stage() {
    let p = ok("FROM scratch\nCMD [\"c\"]\nENTRYPOINT e\n");
    let st = target(&p);
    assert_eq!(st.config.cmd, Some(vec!["c".into()]));
    assert_eq!(
        st.config.entrypoint,
        Some(vec!["/bin/sh".into(), "-c".into(), "e".into()])
    );
    assert_eq!(
        st.history[1].created_by,
        "ENTRYPOINT [\"/bin/sh\" \"-c\" \"e\"]"
    );
}

#[test]
fn shell_changes_later_shell_forms() {
    let p = ok("FROM scratch\nRUN a\nSHELL [\"/bin/bash\", \"-xc\"]\nRUN b\nCMD c\nRUN [\"d\"]\n");
    let st = target(&p);
    let argvs: Vec<Vec<String>> = runs(st)
        .iter()
        .map(|s| match &s.op {
            StepOp::Run { argv, .. } => argv.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(argvs[0], ["/bin/sh", "-c", "a"]);
    assert_eq!(argvs[1], ["/bin/bash", "-xc", "b"]);
    assert_eq!(argvs[2], ["d"]);
    assert_eq!(
        st.config.cmd,
        Some(vec!["/bin/bash".into(), "-xc".into(), "c".into()])
    );
}

#[test]
fn workdir_relative_resolves_against_previous() {
    let p = ok("FROM scratch\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR ./d\nWORKDIR /\n");
    let st = target(&p);
    let dirs: Vec<_> = st.steps.iter().map(|s| &s.op).collect();
    assert_eq!(dirs[0], &StepOp::Workdir { path: "/a".into() });
    assert_eq!(
        dirs[1],
        &StepOp::Workdir {
            path: "/a/c".into()
        }
    );
    assert_eq!(
        dirs[2],
        &StepOp::Workdir {
            path: "/a/c/d".into()
        }
    );
    assert_eq!(dirs[3], &StepOp::Config, "WORKDIR / makes no layer");
    assert_eq!(st.config.working_dir.as_deref(), Some("/"));
    assert!(st.history[3].empty_layer && !st.history[0].empty_layer);
}

#[test]
fn expose_volume_label_healthcheck_stopsignal_onbuild() {
    let p = ok("FROM scratch\nARG P=8080\nEXPOSE 80 $P/udp 9000-9001\nVOLUME [\"/data\"]\nVOLUME /a /b\nLABEL \"k 1\"=\"v 1\" x=$P\nHEALTHCHECK --interval=1m30s --retries=2 CMD [\"check\"]\nSTOPSIGNAL SIGTERM\nONBUILD RUN echo $P\nMAINTAINER me\n");
    let st = target(&p);
    let c = &st.config;
    let ports: Vec<_> = c.exposed_ports.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(ports, ["80/tcp", "8080/udp", "9000/tcp", "9001/tcp"]);
    let vols: Vec<_> = c.volumes.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(vols, ["/a", "/b", "/data"]);
    let labels = c.labels.as_ref().unwrap();
    assert_eq!(labels["k 1"], "v 1");
    assert_eq!(labels["x"], "8080");
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD", "check"]);
    assert_eq!(hc.interval, 90_000_000_000);
    assert_eq!(hc.retries, 2);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(
        c.on_build,
        Some(vec!["RUN echo $P".to_string()]),
        "ONBUILD text is stored unexpanded"
    );
    assert_eq!(st.author.as_deref(), Some("me"));
    let created: Vec<_> = st.history.iter().map(|h| h.created_by.as_str()).collect();
    assert!(
        created.contains(&"EXPOSE [8080/udp 80/tcp 9000/tcp 9001/tcp]"),
        "{created:?}"
    );
    assert!(created.contains(&"HEALTHCHECK {Test:[CMD check] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:2}"), "{created:?}");
    assert!(p.warnings.iter().any(|w| w.message.contains("MAINTAINER")));
}

#[test]
fn target_pruning_and_errors() {
    let src = "FROM scratch AS a\nRUN a\nFROM scratch AS b\nRUN b\nFROM a AS c\nCOPY --from=b /x /x\nFROM scratch AS d\n";
    let p = plan_src(src, &[], Some("c")).unwrap();
    let names: Vec<_> = p.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let p = plan_src(src, &[], None).unwrap();
    assert_eq!(p.stages.len(), 1, "d needs nothing");
    let e = plan_src(src, &[], Some("zz")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Plan);
    let e = plan_src(
        "FROM scratch\nCOPY --from=later /a /a\nFROM scratch AS later\n",
        &[],
        Some("later"),
    )
    .map(|_| ());
    assert!(e.is_ok(), "the first stage is pruned");
    let e = plan_src(
        "FROM scratch\nCOPY --from=later /a /a\nFROM scratch AS later\n",
        &[],
        None,
    );
    assert!(e.is_ok());
    let e = plan_src(
        "FROM scratch AS x\nCOPY --from=later /a /a\nFROM scratch AS later\n",
        &[],
        Some("x"),
    )
    .unwrap_err();
    assert!(
        e.message.contains("needs to be defined before"),
        "{}",
        e.message
    );
    // Stages that read each other are a cycle, as BuildKit reports it.
    let e = plan_src(
        "FROM scratch AS x\nCOPY --from=later /a /a\nFROM scratch AS later\nCOPY --from=x / /\n",
        &[],
        None,
    )
    .unwrap_err();
    assert_eq!(e.message, "circular dependency detected on stage: x");
    assert_eq!(e.location.map(|l| l.line), Some(2));
}

#[test]
fn expansion_errors_carry_locations() {
    let e = plan_src("FROM scratch\n\nWORKDIR ${X:?must be set}\n", &[], None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expansion);
    assert_eq!(e.location.unwrap().line, 3);
    assert!(e.message.contains("must be set"));
    let e = plan_src("ARG B\nFROM $B\n", &[], None).unwrap_err();
    assert!(e.message.contains("should not be blank"));
}

#[test]
fn copy_words_expand_but_run_does_not() {
    let p = ok("FROM scratch\nENV D=/dst U=1000\nCOPY --chown=$U:$U --chmod=0755 src-$U \"$D/\"\nRUN echo $D\n");
    let st = target(&p);
    match &st.steps[1].op {
        StepOp::Copy { copy, add, .. } => {
            assert!(!add);
            assert_eq!(copy.chown.as_deref(), Some("1000:1000"));
            assert_eq!(copy.sources, ["src-1000"]);
            assert_eq!(copy.dest, "/dst/");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        st.history[1].created_by,
        "COPY --chown=1000:1000 --chmod=0755 src-1000 /dst/ # buildkit"
    );
    match &st.steps[2].op {
        StepOp::Run { argv, .. } => assert_eq!(argv, &["/bin/sh", "-c", "echo $D"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_heredocs_fold_as_buildkit_does() {
    let p = ok("FROM scratch\nRUN <<EOF\necho one\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat <<A > /a\nbody\nA\n");
    let st = target(&p);
    let ops: Vec<_> = runs(st).iter().map(|s| s.op.clone()).collect();
    match &ops[0] {
        StepOp::Run { argv, script, .. } => {
            assert_eq!(argv, &["/bin/sh", "-c", "echo one\n"]);
            assert!(script.is_none());
        }
        _ => unreachable!(),
    }
    match &ops[1] {
        StepOp::Run { argv, script, .. } => {
            assert_eq!(argv, &["/dev/pipes/EOF"]);
            assert_eq!(
                script.as_ref().unwrap().data,
                "#!/usr/bin/env python3\nprint(1)\n"
            );
        }
        _ => unreachable!(),
    }
    match &ops[2] {
        StepOp::Run { argv, .. } => assert_eq!(argv, &["/bin/sh", "-c", "cat <<A > /a\nbody\nA"]),
        _ => unreachable!(),
    }
}

#[test]
fn mounts_expand_and_validate() {
    let p = ok("FROM scratch\nARG ID=c1\nRUN --mount=type=cache,id=$ID,target=/c,sharing=locked,uid=1,mode=0700 --mount=type=tmpfs,target=/t,size=64m --network=none true\n");
    match &runs(target(&p))[0].op {
        StepOp::Run {
            mounts, network, ..
        } => {
            let c = &mounts[0].mount;
            assert_eq!(c.id.as_deref(), Some("c1"));
            assert!(!c.readonly);
            assert_eq!(c.mode, Some(0o700));
            assert_eq!(mounts[1].mount.size, Some(64 << 20));
            assert_eq!(*network, kiln_frontend::instructions::NetworkMode::None);
        }
        _ => unreachable!(),
    }
    let e = plan_src(
        "FROM scratch\nRUN --mount=type=bind,uid=1 true\n",
        &[],
        None,
    )
    .unwrap_err();
    assert!(e.message.contains("uid not allowed"), "{}", e.message);
    let e = plan_src("FROM scratch\nRUN --mount=type=nope true\n", &[], None).unwrap_err();
    assert!(
        e.message.contains("unsupported mount type"),
        "{}",
        e.message
    );
}

#[test]
fn resolver_supplies_base_env_workdir_and_onbuild_triggers() {
    let src = "FROM base:1\nWORKDIR $HOME/x\nRUN echo\n";
    let df = kiln_frontend::parser::parse(src).unwrap();
    let resolver = |r: &str, _: &Platform| -> kiln_frontend::Result<Option<ImageConfig>> {
        assert_eq!(r, "base:1");
        Ok(Some(ImageConfig {
            env: Some(vec!["HOME=/home/app".into()]),
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
            cmd: Some(vec!["run".into()]),
            on_build: Some(vec![
                "ENV TRIGGERED=yes".into(),
                "COPY --from=alpine /a /b".into(),
            ]),
            ..Default::default()
        }))
    };
    let p = plan_with_resolver(&df, &PlanOptions::default(), &resolver).unwrap();
    let st = target(&p);
    assert!(st.base_config_known);
    assert!(st.steps[0].onbuild && st.steps[1].onbuild && !st.steps[2].onbuild);
    assert_eq!(st.config.working_dir.as_deref(), Some("/home/app/x"));
    let env = st.config.env.clone().unwrap();
    assert_eq!(env[0], "HOME=/home/app");
    assert!(env.contains(
        &"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
    ));
    assert!(env.contains(&"TRIGGERED=yes".to_string()));
    assert_eq!(st.config.cmd, Some(vec!["run".into()]));
    assert_eq!(st.config.on_build, None, "triggers do not carry over");
    assert_eq!(runs(st)[0].user, "app");
}

#[test]
fn platform_args_case_matches_expected_output() {
    let src = std::fs::read_to_string(shared().join("cases/m-platform-args/Dockerfile")).unwrap();
    let p = ok(&src);
    let r = runs(target(&p))[0];
    let vals: Vec<String> = ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "BUILDPLATFORM"]
        .iter()
        .map(|k| env_of(r, k).unwrap_or_default())
        .collect();
    assert_eq!(vals.join(" "), "linux/amd64 linux amd64 linux/amd64");
}

#[test]
fn platforms_parse_and_normalise() {
    let p = Platform::parse("linux/arm64/v8").unwrap();
    assert_eq!(p.to_string(), "linux/arm64");
    assert_eq!(
        Platform::parse("linux/x86_64").unwrap().to_string(),
        "linux/amd64"
    );
    assert_eq!(
        Platform::parse("linux/arm").unwrap().to_string(),
        "linux/arm/v7"
    );
    assert_eq!(
        Platform::parse("linux/arm/6").unwrap().to_string(),
        "linux/arm/v6"
    );
    assert!(Platform::parse("linux//x").is_err());
    assert!(Platform::parse("a/b/c/d").is_err());
    let e = plan_src("FROM --platform=no/such/thing/x scratch\n", &[], None).unwrap_err();
    assert!(
        e.message.contains("failed to parse platform"),
        "{}",
        e.message
    );
}

#[test]
fn resolver_errors_and_bad_triggers_point_at_from() {
    let df = kiln_frontend::parser::parse("FROM scratch AS s\n\nFROM img\nRUN x\n").unwrap();
    let failing = |_: &str, _: &Platform| -> kiln_frontend::Result<Option<ImageConfig>> {
        Err(kiln_frontend::Error::new(
            ErrorKind::Plan,
            "pull access denied",
        ))
    };
    let e = plan_with_resolver(&df, &PlanOptions::default(), &failing).unwrap_err();
    assert_eq!(e.message, "pull access denied");
    assert_eq!(e.location.unwrap().line, 3);
    let bad_trigger = |_: &str, _: &Platform| -> kiln_frontend::Result<Option<ImageConfig>> {
        Ok(Some(ImageConfig {
            on_build: Some(vec!["FROM x".into()]),
            ..Default::default()
        }))
    };
    let e = plan_with_resolver(&df, &PlanOptions::default(), &bad_trigger).unwrap_err();
    assert!(
        e.message.contains("isn't allowed as an ONBUILD trigger"),
        "{}",
        e.message
    );
    assert_eq!(e.location.unwrap().line, 3);
}

#[test]
fn onbuild_of_a_stage_base_runs_in_the_child_stage() {
    let p = ok("FROM scratch AS base\nONBUILD ENV FROM_TRIGGER=1\nFROM base\nRUN x\n");
    let st = target(&p);
    assert!(st.steps[0].onbuild);
    assert_eq!(env_of(runs(st)[0], "FROM_TRIGGER").as_deref(), Some("1"));
    assert_eq!(st.config.on_build, None);
    assert_eq!(
        p.stages[0].config.on_build,
        Some(vec!["ENV FROM_TRIGGER=1".to_string()])
    );
}

#[test]
fn base_image_triggers_can_need_more_stages() {
    let src = "FROM scratch AS helper\nRUN make\nFROM scratch AS unrelated\nFROM base:1\nRUN x\n";
    let df = kiln_frontend::parser::parse(src).unwrap();
    let resolver = |r: &str, _: &Platform| -> kiln_frontend::Result<Option<ImageConfig>> {
        Ok((r == "base:1").then(|| ImageConfig {
            on_build: Some(vec![
                "COPY --from=helper /out /out".into(),
                "ARG FROM_TRIGGER".into(),
            ]),
            ..Default::default()
        }))
    };
    let opts = PlanOptions {
        build_args: [("FROM_TRIGGER".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let p = plan_with_resolver(&df, &opts, &resolver).unwrap();
    let names: Vec<_> = p.stages.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        [Some("helper".to_string()), None],
        "helper is needed through the trigger"
    );
    match &target(&p).steps[0].op {
        StepOp::Copy { from_source, .. } => {
            assert_eq!(from_source, &Some(Source::Stage { index: 0 }))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        p.warnings.is_empty(),
        "a trigger's ARG consumes the build arg: {:?}",
        p.warnings
    );
}

/// An expansion bomb stops at the first word over 1 MiB, at its line; a
/// build arg may be no bigger; words under the limit copied into many steps
/// stop at the plan's limit instead of taking gigabytes.
#[test]
fn expansion_is_bounded_per_word_and_per_plan() {
    let mut src = String::from("FROM scratch\nENV A0=aaaaaaaa\n");
    for i in 1..=30 {
        let p = format!("${{A{}}}", i - 1);
        src.push_str(&format!("ENV A{i}={p}{p}{p}{p}\n"));
    }
    let e = plan_src(&src, &[], None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expansion);
    assert!(
        e.message.contains("exceeds the limit of 1048576 bytes"),
        "{e}"
    );
    assert_eq!(e.location.map(|l| l.line), Some(11));

    let big = "x".repeat((1 << 20) + 1);
    let e = plan_src("FROM scratch\nARG X\n", &[("X", &big)], None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("build-arg X"), "{e}");

    let mut src: String = src.lines().take(10).map(|l| format!("{l}\n")).collect();
    for i in 0..200 {
        src.push_str(&format!("RUN echo {i}\n"));
    }
    let e = plan_src(&src, &[], None).unwrap_err();
    assert!(e.message.contains("exceeds the limit of 64 MiB"), "{e}");
    assert!(e.location.is_some_and(|l| l.line > 10));
}
