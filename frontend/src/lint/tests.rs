//! One test per rule: the message and line BuildKit gives.

use super::*;

fn run_with(src: &str, input: &Input) -> Vec<(String, String, usize)> {
    let df = crate::parser::parse(src).expect("parse");
    let r = check(&df, input).expect("check");
    r.warnings
        .into_iter()
        .map(|w| (w.rule.name.to_string(), w.detail, w.start_line))
        .collect()
}

fn run(src: &str) -> Vec<(String, String, usize)> {
    run_with(src, &Input::default())
}

fn has(src: &str, rule: &str, detail: &str, line: usize) {
    let got = run(src);
    assert!(
        got.iter()
            .any(|(r, d, n)| r == rule && d == detail && *n == line),
        "want {rule}: {detail} (line {line}), got {got:#?}"
    );
}

fn none(src: &str, rule: &str) {
    let got = run(src);
    assert!(
        got.iter().all(|(r, ..)| r != rule),
        "unexpected {rule}: {got:#?}"
    );
}

#[test]
fn stage_name_casing() {
    has(
        "FROM busybox AS Build\n",
        "StageNameCasing",
        "Stage name 'Build' should be lowercase",
        1,
    );
    none("FROM busybox AS build\n", "StageNameCasing");
}

#[test]
fn from_as_casing() {
    has(
        "FROM busybox as build\n",
        "FromAsCasing",
        "'as' and 'FROM' keywords' casing do not match",
        1,
    );
    none("from busybox as build\n", "FromAsCasing");
}

#[test]
fn no_empty_continuation() {
    has(
        "FROM busybox\nRUN echo \\\n\n  hi\n",
        "NoEmptyContinuation",
        "Empty continuation line",
        4,
    );
}

#[test]
fn consistent_instruction_casing() {
    has(
        "FROM busybox\nRUN true\nrun true\n",
        "ConsistentInstructionCasing",
        "Command 'run' should match the case of the command majority (uppercase)",
        3,
    );
    has(
        "from busybox\nrun true\nRun true\n",
        "ConsistentInstructionCasing",
        "Command 'Run' should match the case of the command majority (lowercase)",
        3,
    );
}

#[test]
fn duplicate_and_reserved_stage_names() {
    let src = "FROM busybox AS a\nFROM busybox AS a\nFROM busybox AS scratch\n";
    has(
        src,
        "DuplicateStageName",
        "Duplicate stage name \"a\", stage names should be unique",
        2,
    );
    has(
        src,
        "ReservedStageName",
        "Stage name should not use the same name as reserved stage \"scratch\"",
        3,
    );
}

#[test]
fn json_args_recommended() {
    has(
        "FROM busybox\nCMD echo hi\n",
        "JSONArgsRecommended",
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
        2,
    );
    has("FROM busybox\nENTRYPOINT echo hi\n", "JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals", 2);
    none("FROM busybox\nCMD [\"echo\"]\n", "JSONArgsRecommended");
    none(
        "FROM busybox\nSHELL [\"/bin/sh\", \"-c\"]\nCMD echo hi\n",
        "JSONArgsRecommended",
    );
}

#[test]
fn maintainer_deprecated() {
    has(
        "FROM busybox\nMAINTAINER me\n",
        "MaintainerDeprecated",
        "Maintainer instruction is deprecated in favor of using label",
        2,
    );
}

#[test]
fn undefined_arg_in_from() {
    has(
        "ARG VERSION=1\nFROM busybox:${VERSON}\n",
        "UndefinedArgInFrom",
        "FROM argument 'VERSON' is not declared (did you mean VERSION?)",
        2,
    );
    none("ARG V\nFROM busybox:${V}\n", "UndefinedArgInFrom");
    none(
        "FROM --platform=$BUILDPLATFORM busybox\n",
        "UndefinedArgInFrom",
    );
}

#[test]
fn workdir_relative_path() {
    has(
        "FROM busybox\nWORKDIR app\nWORKDIR sub\n",
        "WorkdirRelativePath",
        "Relative workdir \"app\" can have unexpected results if the base image changes",
        2,
    );
    none(
        "FROM busybox\nWORKDIR /app\nWORKDIR sub\n",
        "WorkdirRelativePath",
    );
}

#[test]
fn undefined_var() {
    has(
        "FROM busybox\nENV PATH=$PAHT:/x\n",
        "UndefinedVar",
        "Usage of undefined variable '$PAHT' (did you mean $PATH?)",
        2,
    );
    has(
        "FROM busybox\nCOPY $NOPE /x\n",
        "UndefinedVar",
        "Usage of undefined variable '$NOPE'",
        2,
    );
    none("FROM busybox\nARG A\nCOPY $A /x\n", "UndefinedVar");
    none("FROM busybox\nENV A=1\nWORKDIR /$A\n", "UndefinedVar");
    none("FROM busybox\nRUN echo $NOPE\n", "UndefinedVar");
}

#[test]
fn multiple_instructions_disallowed() {
    has("FROM busybox\nCMD [\"a\"]\nCMD [\"b\"]\n", "MultipleInstructionsDisallowed", "Multiple CMD instructions should not be used in the same stage because only the last one will be used", 2);
    has("FROM busybox\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n", "MultipleInstructionsDisallowed", "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used", 2);
}

#[test]
fn legacy_key_value_format() {
    has(
        "FROM busybox\nENV A b\n",
        "LegacyKeyValueFormat",
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
        2,
    );
    has(
        "FROM busybox\nLABEL a b\n",
        "LegacyKeyValueFormat",
        "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format",
        2,
    );
    none("FROM busybox\nENV A=b\n", "LegacyKeyValueFormat");
}

#[test]
fn redundant_target_platform() {
    has("FROM --platform=$TARGETPLATFORM busybox\n", "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", 1);
    none(
        "FROM --platform=$BUILDPLATFORM busybox\n",
        "RedundantTargetPlatform",
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    has(
        "FROM busybox\nARG API_KEY\n",
        "SecretsUsedInArgOrEnv",
        "Do not use ARG or ENV instructions for sensitive data (ARG \"API_KEY\")",
        2,
    );
    has(
        "FROM busybox\nENV password=x\n",
        "SecretsUsedInArgOrEnv",
        "Do not use ARG or ENV instructions for sensitive data (ENV \"password\")",
        2,
    );
    none("FROM busybox\nARG PUBLIC_KEY\n", "SecretsUsedInArgOrEnv");
    none("FROM busybox\nARG KEYBOARD\n", "SecretsUsedInArgOrEnv");
}

#[test]
fn invalid_default_arg_in_from() {
    has(
        "ARG IMG\nFROM ${IMG}\n",
        "InvalidDefaultArgInFrom",
        "Default value for ARG ${IMG} results in empty or invalid base image name",
        2,
    );
    none("ARG IMG=busybox\nFROM ${IMG}\n", "InvalidDefaultArgInFrom");
}

#[test]
fn from_platform_flag_const_disallowed() {
    has(
        "FROM --platform=linux/amd64 busybox\n",
        "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use constant value \"linux/amd64\"",
        1,
    );
    none(
        "FROM --platform=linux/amd64 busybox AS build-amd64\n",
        "FromPlatformFlagConstDisallowed",
    );
}

#[test]
fn copy_ignored_file() {
    let m = kiln_patternmatcher::PatternMatcher::new(["secret.txt"]).expect("matcher");
    let input = Input {
        ignore: Some(&m),
        ..Input::default()
    };
    let got = run_with(
        "FROM busybox\nCOPY secret.txt /x\nADD ./secret.txt /y\nCOPY other /z\n",
        &input,
    );
    let want = [
        (
            "CopyIgnoredFile".to_string(),
            "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore".to_string(),
            2,
        ),
        (
            "CopyIgnoredFile".to_string(),
            "Attempting to Add file \"secret.txt\" that is excluded by .dockerignore".to_string(),
            3,
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn expose_rules() {
    has(
        "FROM busybox\nEXPOSE 80/TCP\n",
        "ExposeProtoCasing",
        "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
        2,
    );
    has("FROM busybox\nEXPOSE 127.0.0.1:80:80\n", "ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'", 2);
    none("FROM busybox\nEXPOSE 80/tcp 443\n", "ExposeInvalidFormat");
}

#[test]
fn skip_and_error_directives() {
    let df = crate::parser::parse(
        "# check=skip=JSONArgsRecommended;error=true\nFROM busybox\nCMD echo\nMAINTAINER x\n",
    )
    .expect("parse");
    let r = check(&df, &Input::default()).expect("check");
    let names: Vec<_> = r.warnings.iter().map(|w| w.rule.name).collect();
    assert_eq!(names, ["MaintainerDeprecated"]);
    assert_eq!(
        r.error().as_deref(),
        Some("lint violation found for rules: MaintainerDeprecated")
    );
    // The build arg replaces the directive.
    let input = Input {
        build_args: [(CHECK_BUILD_ARG.to_string(), "skip=all".to_string())].into(),
        ..Input::default()
    };
    let r = check(&df, &input).expect("check");
    assert!(r.warnings.is_empty());
    assert_eq!(r.error(), None);
}

#[test]
fn only_dispatched_stages_in_build_mode() {
    let src = "FROM busybox AS a\nCMD echo a\nFROM busybox\nCMD [\"b\"]\n";
    let input = Input {
        stages: Some([1].into()),
        ..Input::default()
    };
    assert!(run_with(src, &input).is_empty());
    assert_eq!(run(src).len(), 1);
}

#[test]
fn short_form() {
    let w = Warning {
        rule: rules::MAINTAINER_DEPRECATED,
        detail: "Maintainer instruction is deprecated in favor of using label".into(),
        start_line: 3,
        end_line: 3,
    };
    assert_eq!(w.short(), "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 3)");
}

#[test]
fn invalid_definition_description_is_experimental() {
    let src = "# check=experimental=InvalidDefinitionDescription\n# the base image\nFROM busybox AS base\n# version to use\nARG VERSION=1\n# VERSION is fine\nARG VERSION=2\n";
    let input = Input {
        source: Some(src),
        ..Input::default()
    };
    let got: Vec<_> = run_with(src, &input)
        .into_iter()
        .filter(|(r, ..)| r == "InvalidDefinitionDescription")
        .collect();
    assert_eq!(
        got,
        [
            (
                "InvalidDefinitionDescription".to_string(),
                "Comment for FROM should follow the format: `# base <description>`".to_string(),
                3
            ),
            (
                "InvalidDefinitionDescription".to_string(),
                "Comment for ARG should follow the format: `# VERSION <description>`".to_string(),
                5
            ),
        ]
    );
    // Off unless named.
    let plain = "# the base image\nFROM busybox AS base\n";
    let input = Input {
        source: Some(plain),
        ..Input::default()
    };
    assert!(run_with(plain, &input).is_empty());
}

#[test]
fn invalid_base_image_platform_compares_os_and_architecture_only() {
    let plat = |s: &str| Platform::parse(s).expect("platform");
    let base = |expected: &str, actual: &str| BasePlatform {
        image: "busybox".into(),
        expected: plat(expected),
        actual: plat(actual),
    };
    let src = "FROM busybox AS a\nRUN true\nFROM --platform=linux/arm64 busybox\nRUN true\n";
    let input = Input {
        base_platforms: [
            (0, base("linux/arm/v7", "linux/arm/v6")),
            (1, base("linux/arm64", "linux/amd64")),
        ]
        .into(),
        ..Input::default()
    };
    let got: Vec<_> = run_with(src, &input)
        .into_iter()
        .filter(|(r, _, _)| r == "InvalidBaseImagePlatform")
        .collect();
    assert_eq!(
        got,
        [(
            "InvalidBaseImagePlatform".to_string(),
            "Base image busybox was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build".to_string(),
            3
        )]
    );
    // Stages without a resolved base (scratch, other stages) are not checked.
    assert!(run(src)
        .iter()
        .all(|(r, _, _)| r != "InvalidBaseImagePlatform"));
}
