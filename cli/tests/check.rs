//! BuildKit's build checks through the binary: `kiln check`, `build
//! --check` / `--call check,format=json`, `# check=` directives and the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, the summary after a build, and
//! `error=true` failing a build before anything runs.

use kiln_testsupport::{events, stderr, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Triggers 20 rules; the comment column is what BuildKit reports.
const MANY: &str = "ARG IMG
ARG VERSION=1.35
FROM ${IMG} AS Base
FROM busybox:1.35${VERSON} as builder
FROM --platform=$TARGETPLATFORM busybox:${VERSION} AS base
MAINTAINER someone
ENV API_TOKEN=abc
ENV LEGACY value
WORKDIR app
COPY $NOPE ignored.txt /dst/
EXPOSE 8080/TCP 127.0.0.1:80:80
CMD echo one
CMD [\"echo\", \"two\"]
run echo \\

  hi
FROM --platform=linux/amd64 busybox:1.35 AS context
";

fn expected() -> Vec<(&'static str, u64)> {
    let mut v = vec![
        ("InvalidDefaultArgInFrom", 3),
        ("StageNameCasing", 3),
        ("UndefinedArgInFrom", 4),
        ("FromAsCasing", 4),
        ("RedundantTargetPlatform", 5),
        ("DuplicateStageName", 5),
        ("MaintainerDeprecated", 6),
        ("SecretsUsedInArgOrEnv", 7),
        ("LegacyKeyValueFormat", 8),
        ("WorkdirRelativePath", 9),
        ("UndefinedVar", 10),
        ("CopyIgnoredFile", 10),
        ("ExposeProtoCasing", 11),
        ("ExposeInvalidFormat", 11),
        ("JSONArgsRecommended", 12),
        ("MultipleInstructionsDisallowed", 12),
        ("ConsistentInstructionCasing", 14),
        ("NoEmptyContinuation", 16),
        ("ReservedStageName", 17),
        ("FromPlatformFlagConstDisallowed", 17),
    ];
    v.sort();
    v
}

fn rules_of(json: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = json["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    let line = w["location"]["ranges"][0]["start"]["line"]
                        .as_u64()
                        .unwrap_or(0);
                    (w["ruleName"].as_str().unwrap_or("").to_string(), line)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_json_reports_twenty_rules_with_buildkit_names_lines_and_messages() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            ("Dockerfile", MANY),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "x\n"),
        ],
    );
    let ctx = ctx.display().to_string();
    for args in [
        vec![
            "check",
            "--format",
            "json",
            "--build-arg",
            "IMG=busybox:1.35",
            &ctx,
        ],
        vec![
            "build",
            "--call",
            "check,format=json",
            "--build-arg",
            "IMG=busybox:1.35",
            &ctx,
        ],
    ] {
        let out = k.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        let got = rules_of(&json);
        let want: Vec<(String, u64)> = expected()
            .into_iter()
            .map(|(r, l)| (r.to_string(), l))
            .collect();
        assert_eq!(got, want, "{args:?}: {json:#}");
        let warnings = json["warnings"].as_array().expect("warnings");
        let find = |rule: &str| {
            warnings
                .iter()
                .find(|w| w["ruleName"] == rule)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let w = find("UndefinedArgInFrom");
        assert_eq!(
            w["detail"],
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
        );
        assert_eq!(
            w["url"],
            "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"
        );
        assert_eq!(w["description"], "FROM command must use declared ARGs");
        assert_eq!(
            find("CopyIgnoredFile")["detail"],
            "Attempting to Copy file \"ignored.txt\" that is excluded by .dockerignore"
        );
        assert_eq!(
            find("NoEmptyContinuation")["location"]["ranges"][0]["start"]["line"],
            16
        );
        let w = find("ConsistentInstructionCasing");
        assert_eq!(
            w["detail"],
            "Command 'run' should match the case of the command majority (uppercase)"
        );
        assert_eq!(w["location"]["ranges"][0]["end"]["line"], 16);
        assert_eq!(json["sources"][0]["filename"], "Dockerfile");
        assert_eq!(json["sources"][0]["language"], "Dockerfile");
        assert!(json.get("buildError").is_none(), "{json:#}");
    }
}

#[test]
fn check_text_is_buildx_report_and_skip_directive_silences() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nMAINTAINER me\nCMD echo hi\n",
        )],
    );
    let ctx_s = ctx.display().to_string();
    let out = k.run(&["build", "--check", &ctx_s]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("Check complete, 2 warnings have been found!\n"),
        "{text}"
    );
    assert!(
        text.contains(concat!(
            "\nWARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n",
            "Maintainer instruction is deprecated in favor of using label\n",
            "Dockerfile:2\n",
            "--------------------\n",
            "   1 |     FROM busybox:1.35\n",
            "   2 | >>> MAINTAINER me\n",
            "   3 |     CMD echo hi\n",
        )),
        "{text}"
    );

    let skipped = k.context(
        "skipped",
        &[(
            "Dockerfile",
            "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM busybox:1.35\nMAINTAINER me\nCMD echo hi\n",
        )],
    );
    let out = k.run(&["check", &skipped.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");
    let out = k.run(&["check", "--format", "json", &skipped.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert!(json["warnings"].is_null(), "{json:#}");

    // The build arg replaces the directive: skip=all.
    let out = k.run(&[
        "check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        &ctx_s,
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn a_build_lists_its_warnings_after_it_and_as_json_events() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nMAINTAINER me\nCMD echo hi\n",
        )],
    );
    let ctx_s = ctx.display().to_string();
    let out = k.run(&["build", "--progress", "plain", &ctx_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.ends_with(concat!(
            "\n 2 warnings found (use docker --debug to expand):\n",
            " - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)\n",
            " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)\n",
        )),
        "{err}"
    );
    // Reported once, as a check, not also as a planner warning.
    assert_eq!(
        err.matches("aintainer instruction is deprecated").count(),
        1,
        "{err}"
    );

    let out = k.run(&["build", "--progress", "json", &ctx_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checks: Vec<(String, u64)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "check")
        .map(|e| {
            (
                e["rule"].as_str().unwrap_or("").to_string(),
                e["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            ("MaintainerDeprecated".to_string(), 2),
            ("JSONArgsRecommended".to_string(), 3)
        ]
    );
}

#[test]
fn error_true_fails_the_build_before_solving() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "# check=error=true\nFROM busybox:1.35\nMAINTAINER me\nRUN echo ran-the-step\n",
        )],
    );
    let ctx_s = ctx.display().to_string();
    let out = k.run(&["build", "--progress", "plain", &ctx_s]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "ERROR: failed to solve: lint violation found for rules: MaintainerDeprecated"
        ),
        "{err}"
    );
    assert!(!err.contains("ran-the-step"), "a step ran: {err}");
    assert!(err.contains(" - MaintainerDeprecated: "), "{err}");

    // The build arg's options replace the directive's: no error.
    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=MaintainerDeprecated",
        &ctx_s,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A base whose config names another platform than the one asked for: an
/// index that labels busybox's amd64 manifest `linux/arm64` (mislabelled
/// images exist; BuildKit resolves by the index and then compares the
/// config). The check and the build both report InvalidBaseImagePlatform
/// on the FROM line; a matching base does not.
#[test]
fn invalid_base_image_platform_when_the_config_names_another_platform() {
    let k = Kiln::with_busybox(KILN);
    let store = k.store();
    let busybox = kiln_cache::Reference::parse("busybox:1.35").expect("ref");
    let top = store
        .images()
        .get(&busybox)
        .expect("images")
        .expect("busybox loaded");
    let top_digest: kiln_cache::Digest = top.digest().to_string().parse().expect("digest");
    let top: Value =
        serde_json::from_slice(&store.blobs().read(&top_digest).expect("index")).expect("json");
    let mut amd64 = top["manifests"]
        .as_array()
        .expect("the fixture is an index")
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .expect("an amd64 manifest")
        .clone();
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd64]
    });
    let bytes = serde_json::to_vec(&index).expect("json");
    let digest = store.blobs().put(&bytes).expect("put index");
    let desc: oci_spec::image::Descriptor = serde_json::from_value(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest.to_string(),
        "size": bytes.len(),
    }))
    .expect("descriptor");
    let mislabelled = kiln_cache::Reference::parse("mislabelled:1").expect("ref");
    store.images().set(&mislabelled, desc).expect("tag");

    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS ok\nFROM --platform=linux/arm64 mislabelled:1 AS arm64\nCOPY --from=ok /bin/busybox /bb\n",
        )],
    );
    let ctx_s = ctx.display().to_string();
    let want = "Base image mislabelled:1 was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build";
    let out = k.run(&["check", "--format", "json", &ctx_s]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    let found: Vec<(String, u64, String)> = json["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| {
            (
                w["ruleName"].as_str().unwrap_or("").to_string(),
                w["location"]["ranges"][0]["start"]["line"]
                    .as_u64()
                    .unwrap_or(0),
                w["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [("InvalidBaseImagePlatform".to_string(), 2, want.to_string())],
        "{json}"
    );
    assert_eq!(
        json["warnings"][0]["description"],
        "Base image platform does not match expected target platform"
    );

    let out = k.run(&["build", "--progress", "plain", &ctx_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(" - InvalidBaseImagePlatform: {want} (line 2)\n")),
        "{err}"
    );
}

/// `--build-context` reaches the checks as it reaches the build: an image
/// context replaces the stage of its name (its unreachable `FROM` is never
/// resolved) and a folder context serves `COPY --from=NAME`, for `kiln
/// check` and `build --check` alike; without the contexts the same file is
/// a build error ("failed to resolve").
#[test]
fn check_honours_build_contexts() {
    let k = Kiln::with_busybox(KILN);
    let files = k.context("files", &[("a.txt", "a\n")]);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM 127.0.0.1:1/nowhere/base:1 AS base\nRUN echo never\n\nFROM base\nCOPY --from=files a.txt /a.txt\n",
        )],
    );
    let ctx_s = ctx.display().to_string();
    let files_flag = format!("files={}", files.display());
    let flags = [
        "--build-context",
        "base=docker-image://busybox:1.35",
        "--build-context",
        files_flag.as_str(),
    ];

    let mut args = vec!["check", "--format", "json"];
    args.extend(flags);
    args.push(&ctx_s);
    let out = k.run(&args);
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(json.get("buildError").is_none(), "{json}\n{}", stderr(&out));
    assert!(json["warnings"].is_null(), "{json}");
    assert!(out.status.success(), "{}", stderr(&out));

    let mut args = vec!["build", "--check"];
    args.extend(flags);
    args.push(&ctx_s);
    let out = k.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");

    // Without the image context the stage's own base must be resolved.
    let out = k.run(&[
        "check",
        "--format",
        "json",
        "--build-context",
        &files_flag,
        &ctx_s,
    ]);
    assert!(!out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    let message = json["buildError"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("failed to resolve") && message.contains("127.0.0.1:1/nowhere/base:1"),
        "{json}"
    );
}

/// A base that is a single manifest (no index) of another platform than
/// the one asked for, present only in the store (no registry reachable):
/// BuildKit uses it and reports InvalidBaseImagePlatform; so do the build
/// and the check, instead of failing to pull.
#[test]
fn single_platform_base_of_another_platform_is_used_with_a_warning() {
    let k = Kiln::with_busybox(KILN);
    let store = k.store();
    let busybox = kiln_cache::Reference::parse("busybox:1.35").expect("ref");
    let top = store
        .images()
        .get(&busybox)
        .expect("images")
        .expect("busybox loaded");
    let top_digest: kiln_cache::Digest = top.digest().to_string().parse().expect("digest");
    let top: Value =
        serde_json::from_slice(&store.blobs().read(&top_digest).expect("index")).expect("json");
    let mut arm64 = top["manifests"]
        .as_array()
        .expect("the fixture is an index")
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .expect("an arm64 manifest")
        .clone();
    // The manifest alone, as `docker save` of a one-platform image names it.
    arm64.as_object_mut().expect("object").remove("platform");
    let desc: oci_spec::image::Descriptor = serde_json::from_value(arm64).expect("descriptor");
    // A registry that refuses connections: the pull fails at once.
    let name = "127.0.0.1:1/bb-arm64:1";
    let single = kiln_cache::Reference::parse(name).expect("ref");
    store.images().set(&single, desc).expect("tag");

    let ctx = k.context(
        "ctx",
        &[
            ("Dockerfile", &format!("FROM {name}\nCOPY a.txt /a.txt\n")),
            ("a.txt", "a\n"),
        ],
    );
    let ctx_s = ctx.display().to_string();
    let want = format!(
        "Base image {name} was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"
    );
    let out = k.run(&[
        "check",
        "--platform",
        "linux/amd64",
        "--format",
        "json",
        &ctx_s,
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(json.get("buildError").is_none(), "{json}");
    assert_eq!(
        json["warnings"][0]["ruleName"], "InvalidBaseImagePlatform",
        "{json}"
    );
    assert_eq!(json["warnings"][0]["detail"], want.as_str(), "{json}");
    assert_eq!(
        json["warnings"][0]["location"]["ranges"][0]["start"]["line"],
        1
    );

    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64",
        "-t",
        "out:1",
        &ctx_s,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(" - InvalidBaseImagePlatform: {want} (line 1)\n")),
        "{err}"
    );
    assert!(!err.contains("failed to resolve"), "{err}");
}
