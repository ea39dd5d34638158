//! `--build-context NAME=VALUE` through the binary: a folder read by
//! `FROM`, `COPY --from` and `RUN --mount=from=` (with its own
//! `.dockerignore`), `docker-image://` standing in for a base image,
//! `oci-layout://` loading a layout made by `kiln build -o type=oci`, and
//! buildx's errors for bad values.

use std::path::Path;
use std::process::Output;

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds `ctx` into the local folder `out` with `extra` flags.
fn build_local(k: &Kiln, ctx: &Path, out: &Path, extra: &[&str]) -> Output {
    let dest = format!("type=local,dest={}", out.display());
    let ctx = ctx.display().to_string();
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(&ctx);
    k.run(&args)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn dir_context_by_from_copy_and_mount() {
    let k = Kiln::with_busybox(KILN);
    let extra = k.context(
        "extra",
        &[
            ("x.txt", "from extra\n"),
            ("secret.txt", "ignored\n"),
            (".dockerignore", "secret.txt\n"),
        ],
    );
    let ctx = k.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35 AS b\n\
                 COPY --from=extra x.txt /copied.txt\n\
                 RUN --mount=from=extra,target=/m cat /m/x.txt > /mounted.txt && \
                     (test -e /m/secret.txt && echo yes || echo no) > /mount-secret.txt\n\
                 FROM extra AS fromdir\n\
                 FROM scratch\n\
                 COPY --from=b /copied.txt /mounted.txt /mount-secret.txt /\n\
                 COPY --from=fromdir / /dir/\n\
                 COPY x.txt /main.txt\n",
            ),
            ("x.txt", "from main\n"),
        ],
    );
    let out = k.path("out");
    let spec = format!("extra={}", extra.display());
    let o = build_local(&k, &ctx, &out, &["--build-context", &spec]);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("copied.txt")), "from extra\n");
    assert_eq!(read(&out.join("mounted.txt")), "from extra\n");
    assert_eq!(read(&out.join("dir/x.txt")), "from extra\n");
    assert_eq!(read(&out.join("main.txt")), "from main\n");
    // The named context's own .dockerignore applies, everywhere.
    assert!(!out.join("dir/secret.txt").exists());
    assert_eq!(read(&out.join("mount-secret.txt")), "no\n");
}

#[test]
fn docker_image_context_replaces_the_base() {
    let k = Kiln::with_busybox(KILN);
    k.ok(&["tag", "busybox:1.35", "mybox:v1"]);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            // Nothing named alpine is in the store and no registry is in
            // reach: only the context can resolve it.
            "FROM alpine:3.19 AS a\n\
             RUN echo ran > /ran.txt\n\
             FROM scratch\n\
             COPY --from=a /ran.txt /\n\
             COPY --from=docker.io/library/alpine:3.19 /bin/busybox /bb\n",
        )],
    );
    let out = k.path("out");
    let o = build_local(
        &k,
        &ctx,
        &out,
        &["--build-context", "alpine:3.19=docker-image://mybox:v1"],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("ran.txt")), "ran\n");
    assert!(out.join("bb").is_file());
}

#[test]
fn oci_layout_context_is_loaded_and_used() {
    // The layout: an image made by kiln from the fixture.
    let maker = Kiln::with_busybox(KILN);
    let src = maker.context(
        "src",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN echo layout > /marker\n",
        )],
    );
    let tarball = maker.path("img.tar");
    let o = maker.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=oci,dest={}", tarball.display()),
        &src.display().to_string(),
    ]);
    assert!(o.status.success(), "oci build failed:\n{}", stderr(&o));
    let layout = maker.path("layout");
    std::fs::create_dir_all(&layout).expect("layout dir");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&layout)
        .status()
        .expect("tar");
    assert!(st.success());
    assert!(layout.join("index.json").is_file());

    // A store without busybox: the base can only come from the layout.
    let k = Kiln::empty(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM base\nRUN cat /marker > /seen\nFROM scratch\nCOPY --from=0 /seen /\n",
        )],
    );
    let out = k.path("out");
    let spec = format!("base=oci-layout://{}", layout.display());
    let o = build_local(&k, &ctx, &out, &["--build-context", &spec]);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("seen")), "layout\n");

    // A digest the layout does not hold is an error naming it.
    let bad = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let spec = format!("base=oci-layout://{}@{bad}", layout.display());
    let o = build_local(&k, &ctx, &k.path("out2"), &["--build-context", &spec]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(bad), "{}", stderr(&o));
}

#[test]
fn bad_values_error_clearly() {
    let k = Kiln::empty(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", "FROM scratch\n")]);
    let out = k.path("out");
    let cases: &[(&str, &str)] = &[
        (
            "novalue",
            "invalid context value: novalue, expected key=value",
        ),
        ("x=target:foo", "only supported by bake"),
        ("x=/no/such/dir", "failed to get build context x"),
        ("x=docker-image://UPPER:case", "invalid image reference"),
    ];
    for (spec, want) in cases {
        let o = build_local(&k, &ctx, &out, &["--build-context", spec]);
        assert!(!o.status.success(), "{spec} was accepted");
        let err = stderr(&o);
        assert!(err.contains(want), "{spec}: {err}");
    }
}

#[test]
fn context_named_as_a_stage_replaces_it() {
    let k = Kiln::with_busybox(KILN);
    let dir = k.context("dir", &[("x.txt", "from the context\n")]);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS base\n\
             RUN echo stage > /from-stage\n\
             FROM scratch\n\
             COPY --from=base / /all/\n",
        )],
    );
    let spec = format!("base={}", dir.display());
    let out = k.path("out");
    let o = build_local(&k, &ctx, &out, &["--build-context", &spec]);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("all/x.txt")), "from the context\n");
    // The stage's own base and instructions were not used.
    assert!(!out.join("all/from-stage").exists());
    assert!(!out.join("all/bin").exists());

    // `--target` naming the replaced stage builds the context.
    let out = k.path("out-target");
    let o = build_local(
        &k,
        &ctx,
        &out,
        &["--build-context", &spec, "--target", "base"],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("x.txt")), "from the context\n");
    assert!(!out.join("from-stage").exists());

    // An image context: the stage's base (not in the store) is never
    // resolved and its failing RUN never runs.
    let ctx = k.context(
        "ctx-img",
        &[(
            "Dockerfile",
            "FROM alpine:3.19 AS base\n\
             RUN false\n\
             FROM base\n\
             RUN echo ok > /ok\n\
             FROM scratch\n\
             COPY --from=1 /ok /\n",
        )],
    );
    let out = k.path("out-img");
    let o = build_local(
        &k,
        &ctx,
        &out,
        &["--build-context", "base=docker-image://busybox:1.35"],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("ok")), "ok\n");
}

#[test]
fn platform_keyed_context_is_chosen_per_platform() {
    let k = Kiln::empty(KILN);
    let arm = k.context("arm", &[("which.txt", "arm64\n")]);
    let any = k.context("any", &[("which.txt", "any\n")]);
    let ctx = k.context(
        "ctx",
        &[("Dockerfile", "FROM scratch\nCOPY --from=src which.txt /\n")],
    );
    let out = k.path("out");
    let arm_spec = format!("src::linux/arm64={}", arm.display());
    let any_spec = format!("src={}", any.display());
    let o = build_local(
        &k,
        &ctx,
        &out,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--build-context",
            &arm_spec,
            "--build-context",
            &any_spec,
        ],
    );
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    assert_eq!(read(&out.join("linux_arm64/which.txt")), "arm64\n");
    assert_eq!(read(&out.join("linux_amd64/which.txt")), "any\n");

    // A bad platform in the key is an error.
    let bad = format!("src::nope/x/y/z={}", any.display());
    let o = build_local(&k, &ctx, &k.path("out-bad"), &["--build-context", &bad]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid context name"),
        "{}",
        stderr(&o)
    );
}

/// Builds `dockerfile` with `kiln build -o type=oci` (extra flags
/// `extra`) and unpacks the layout into `dir`; returns its index.json.
fn oci_layout_of(k: &Kiln, name: &str, dockerfile: &str, extra: &[&str]) -> serde_json::Value {
    let src = k.context(&format!("{name}-src"), &[("Dockerfile", dockerfile)]);
    let tarball = k.path(&format!("{name}.tar"));
    let dest = format!("type=oci,dest={}", tarball.display());
    let src_s = src.display().to_string();
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(&src_s);
    let o = k.run(&args);
    assert!(o.status.success(), "oci build failed:\n{}", stderr(&o));
    let dir = k.path(name);
    std::fs::create_dir_all(&dir).expect("layout dir");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(st.success());
    serde_json::from_str(&read(&dir.join("index.json"))).expect("index.json")
}

#[test]
fn oci_layout_with_several_images_by_tag_digest_and_platform() {
    let k = Kiln::empty(KILN);
    // One image, and one index of two platforms, in one layout.
    let one = oci_layout_of(&k, "one", "FROM scratch\nWORKDIR /one\n", &[]);
    let two = oci_layout_of(
        &k,
        "two",
        "FROM scratch\nARG TARGETARCH\nWORKDIR /arch-$TARGETARCH\n",
        &["--platform", "linux/amd64,linux/arm64"],
    );
    let layout = k.path("layout");
    std::fs::create_dir_all(&layout).expect("layout");
    for part in ["one", "two"] {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(k.path(part).join("blobs"))
            .arg(&layout)
            .status()
            .expect("cp");
        assert!(st.success());
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut desc_one = one["manifests"][0].clone();
    let mut desc_two = two["manifests"][0].clone();
    desc_one["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "one"});
    desc_two["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "two"});
    assert_eq!(
        desc_two["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{desc_two}"
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc_one, desc_two],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    let digest_one = desc_one["digest"].as_str().expect("digest").to_string();
    // The arm64 manifest inside the index: not listed in index.json.
    let two_hex = desc_two["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .expect("sha256");
    let inner: serde_json::Value =
        serde_json::from_str(&read(&layout.join("blobs/sha256").join(two_hex))).expect("index");
    let arm_digest = inner["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .and_then(|m| m["digest"].as_str())
        .expect("arm64 manifest")
        .to_string();

    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM base AS b\nFROM scratch\nCOPY --from=b / /got/\n",
        )],
    );
    let l = layout.display().to_string();
    let cases: &[(String, &[&str], &str)] = &[
        (format!("{l}:one"), &[], "got/one"),
        (format!("{l}@{digest_one}"), &[], "got/one"),
        (format!("{l}:two"), &[], "got/arch-amd64"),
        (
            format!("{l}:two"),
            &["--platform", "linux/arm64"],
            "got/arch-arm64",
        ),
        (
            format!("{l}@{arm_digest}"),
            &["--platform", "linux/arm64"],
            "got/arch-arm64",
        ),
    ];
    for (i, (spec, extra, want)) in cases.iter().enumerate() {
        let out = k.path(&format!("out{i}"));
        let flag = format!("base=oci-layout://{spec}");
        let mut args = vec!["--build-context", flag.as_str()];
        args.extend_from_slice(extra);
        let o = build_local(&k, &ctx, &out, &args);
        assert!(o.status.success(), "{spec}: build failed:\n{}", stderr(&o));
        assert!(out.join(want).is_dir(), "{spec}: no {want}");
        let entries = std::fs::read_dir(out.join("got")).expect("got").count();
        assert_eq!(entries, 1, "{spec}: one image's files only");
    }

    // No tag and no `latest`, or an unknown tag: ambiguous, as buildx.
    for spec in [l.clone(), format!("{l}:nope")] {
        let flag = format!("base=oci-layout://{spec}");
        let o = build_local(&k, &ctx, &k.path("out-bad"), &["--build-context", &flag]);
        assert!(!o.status.success(), "{spec} was accepted");
        // miette wraps long lines: compare words.
        let err = stderr(&o)
            .split_whitespace()
            .filter(|w| *w != "│")
            .collect::<Vec<_>>()
            .join(" ");
        assert!(err.contains("could not be resolved"), "{spec}: {err}");
        assert!(err.contains("2 images"), "{spec}: {err}");
    }
}
