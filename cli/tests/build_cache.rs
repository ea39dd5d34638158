//! `kiln build` end to end, on the layer cache: a rebuild runs nothing, an
//! edited context file re-runs exactly the steps that depend on it, a
//! failing build names nothing; and the README's example builds. Each test
//! has its own `$KILN_ROOT` with the busybox fixture loaded.

use std::path::{Path, PathBuf};

use kiln_testsupport::{named, skopeo, stderr, umoci_unpack, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const DOCKERFILE: &str = "FROM busybox:1.35
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /b.txt /a.copy > /b.copy
";

/// What only this file's tests do with a kiln.
trait AppContext {
    /// The context of [`DOCKERFILE`], with its `a.txt` and `b.txt`.
    fn app_context(&self) -> PathBuf;
}

impl AppContext for Kiln {
    fn app_context(&self) -> PathBuf {
        self.context(
            "ctx",
            &[
                ("Dockerfile", DOCKERFILE),
                ("a.txt", "a\n"),
                ("b.txt", "b\n"),
            ],
        )
    }
}

#[test]
fn rebuild_is_cached_and_an_edit_reruns_only_dependent_steps() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.app_context();

    let (first, out) = k.build_json(&ctx, &["-t", "app"]);
    assert!(out.status.success(), "first build: {}", stderr(&out));
    let ran = named(&first, "started");
    assert_eq!(
        ran.iter()
            .filter(|n| n.contains("RUN") || n.contains("COPY"))
            .count(),
        4,
        "the first build runs every step: {ran:?}"
    );

    let (second, out) = k.build_json(&ctx, &["-t", "app"]);
    assert!(out.status.success(), "second build: {}", stderr(&out));
    assert!(
        second.iter().all(|e| e["event"] == "cached"),
        "a rebuild only reports cached steps: {second:?}"
    );
    assert!(!second.is_empty(), "a rebuild reports its cached result");

    std::fs::write(ctx.join("b.txt"), "B changed\n").expect("edit");
    let local = format!("type=local,dest={}", k.path("out").display());
    let (third, out) = k.build_json(&ctx, &["-t", "app", "--output", &local]);
    assert!(out.status.success(), "third build: {}", stderr(&out));
    let mut ran: Vec<&str> = named(&third, "started");
    ran.retain(|n| n.contains("RUN") || n.contains("COPY"));
    assert_eq!(ran.len(), 2, "exactly the dependent steps re-run: {ran:?}");
    assert!(
        ran.iter().any(|n| n.contains("COPY b.txt /b.txt")),
        "{ran:?}"
    );
    assert!(ran.iter().any(|n| n.contains("RUN cat /b.txt")), "{ran:?}");
}

#[test]
fn a_noop_rebuild_keeps_the_image_id_and_rewrites_nothing() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.app_context();
    let iid = |name: &str, extra: &[&str]| {
        let f = k.path(name);
        let f_arg = f.display().to_string();
        let mut args = vec!["--iidfile", f_arg.as_str(), "-t", "app"];
        args.extend_from_slice(extra);
        let (_, out) = k.build_json(&ctx, &args);
        assert!(out.status.success(), "build: {}", stderr(&out));
        std::fs::read_to_string(&f).expect("iidfile")
    };
    let names = k.root.join("images.json");
    let first = iid("iid1", &[]);
    let written = std::fs::metadata(&names)
        .and_then(|m| m.modified())
        .expect("images.json");
    // `created` has second resolution: a fresh export after this would get
    // a new image ID.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = iid("iid2", &[]);
    assert_eq!(first, second, "a fully cached rebuild keeps the image ID");
    assert_eq!(
        std::fs::metadata(&names)
            .and_then(|m| m.modified())
            .expect("images.json"),
        written,
        "naming the same image again does not rewrite the name table"
    );
    let fresh = iid("iid3", &["--no-cache"]);
    assert_ne!(first, fresh, "a build that ran its steps is a new image");
    assert_ne!(
        std::fs::metadata(&names)
            .and_then(|m| m.modified())
            .expect("images.json"),
        written,
        "the name now points at the new image"
    );
}

/// A step failing while an independent stage still runs ends the build:
/// the other stage's sandbox is stopped and kiln exits, never waiting on
/// work that was cancelled.
#[test]
fn a_failure_cancels_a_parallel_stage_and_kiln_exits() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS slow\nRUN sleep 30 && echo done > /s\n\
             FROM busybox:1.35 AS bad\nRUN sleep 1; exit 5\n\
             FROM busybox:1.35\nCOPY --from=slow /s /s\nCOPY --from=bad /etc/passwd /p\n",
        )],
    );
    let mut child = k
        .cmd(&["build", "--progress", "plain", &ctx.display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln build");
    // Not a timing test: a generous bound that only a hang exceeds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln did not exit after the failure (the slow stage sleeps 30 s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("exit code: 5"), "{err}");
}

#[test]
fn a_failing_build_names_nothing() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[("Dockerfile", "FROM busybox:1.35\nRUN echo ok > /ok\n")],
    );
    let ctx_s = ctx.display().to_string();
    let out = k.run(&["build", "-q", "-t", "app:1", &ctx_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:"),
        "quiet prints the image ID: {id:?}"
    );
    // That ID names the image for every other command, in full or short.
    for name in [id.as_str(), &id[7..19]] {
        let out = k.run(&["inspect", name]);
        assert!(out.status.success(), "inspect {name}: {}", stderr(&out));
    }
    let before = k.run(&["images", "-q", "--no-trunc"]);

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:1.35\nRUN echo partial > /p\nRUN echo failing; exit 3\n",
    )
    .expect("write");
    let out = k.run(&["build", "-q", "-t", "app:1", "-t", "other", &ctx_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exit code: 3"), "{err}");
    // Even without a progress display, the step and its last output lines
    // come with the error, as BuildKit prints them.
    assert!(
        err.contains("------\n > [3/3] RUN echo failing; exit 3:\nfailing\n------\n"),
        "the failing step is named with its output: {err}"
    );
    let after = k.run(&["images", "-q", "--no-trunc"]);
    assert_eq!(before.stdout, after.stdout, "no name was added or moved");
    let other = k.run(&["inspect", "other"]);
    assert!(
        !other.status.success(),
        "the failed build's tag does not exist"
    );
}

#[test]
fn readme_example_builds_and_runs_nothing_from_scratch() {
    let k = Kiln::with_busybox(KILN);
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/hello");
    let dest = k.path("hello-out");
    let out_arg = format!("type=local,dest={}", dest.display());
    let out = k.run(&[
        "build",
        "-q",
        "-t",
        "hello",
        "-o",
        "type=image",
        "-o",
        &out_arg,
        hello,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shout = std::fs::read_to_string(dest.join("shout.txt")).expect("shout.txt");
    let greeting = std::fs::read_to_string(format!("{hello}/greeting.txt")).expect("greeting.txt");
    assert_eq!(shout, greeting.to_uppercase());
    // FROM scratch: only what was copied is there.
    let entries: Vec<_> = std::fs::read_dir(&dest).expect("dest").flatten().collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let inspect = k.run(&["inspect", "hello"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let v: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(
        v[0]["Config"]["Cmd"],
        serde_json::json!(["/shout.txt"]),
        "{v}"
    );
}

#[test]
fn no_cache_filter_reruns_that_stage_and_what_uses_it() {
    let k = Kiln::with_busybox(KILN);
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/hello");
    let hello = Path::new(hello);
    let (_, out) = k.build_json(hello, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (events, out) = k.build_json(hello, &["--no-cache-filter", "build"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = named(&events, "started");
    for step in [
        "[build 2/4] WORKDIR /src",
        "[build 3/4] COPY greeting.txt .",
        "[stage-1 2/2] COPY --from=build",
    ] {
        assert!(
            ran.iter().any(|n| n.starts_with(step)),
            "{step} re-runs: {ran:?}"
        );
    }
}

#[test]
fn prune_keeps_build_cache_unless_all_and_du_reports_it() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.app_context();
    let (_, out) = k.build_json(&ctx, &["-t", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let du = k.run(&["du"]);
    let du = String::from_utf8_lossy(&du.stdout).into_owned();
    assert!(du.contains("Records:\t4"), "four steps are recorded: {du}");

    let out = k.run(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (events, _) = k.build_json(&ctx, &["-t", "app"]);
    assert!(
        events.iter().all(|e| e["event"] == "cached"),
        "plain prune keeps the build cache: {events:?}"
    );

    let out = k.run(&["prune", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let du = k.run(&["du"]);
    assert!(String::from_utf8_lossy(&du.stdout).contains("Records:\t0"));
    let tar = k.path("app.tar");
    let saved = k.run(&["save", "-o", &tar.display().to_string(), "app"]);
    assert!(
        saved.status.success(),
        "the tagged image survives: {}",
        stderr(&saved)
    );
    let (events, out) = k.build_json(&ctx, &["-t", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = named(&events, "started");
    assert!(ran.iter().any(|n| n.contains("RUN cat /b.txt")), "{ran:?}");
}

/// Other tools read what kiln exports: skopeo verifies every digest while
/// copying the OCI archive into a layout, umoci unpacks that layout.
#[test]
fn oci_output_is_read_by_skopeo_and_umoci() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
        "Dockerfile",
        "FROM busybox:1.35\nWORKDIR /app\nRUN echo built-by-kiln > msg\nCMD [\"cat\", \"/app/msg\"]\n",
    )]);
    let archive = k.path("img.tar");
    let out_arg = format!("type=oci,dest={}", archive.display());
    let out = k.run(&["build", "-q", "-o", &out_arg, &ctx.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let layout = k.path("layout");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:app", layout.display()),
    ]);
    let bundle = k.path("bundle");
    umoci_unpack(&layout, "app", &bundle);
    let msg = std::fs::read_to_string(bundle.join("rootfs/app/msg")).expect("msg");
    assert_eq!(msg, "built-by-kiln\n");
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config"))
            .expect("runtime config");
    assert_eq!(config["process"]["cwd"], "/app");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["cat", "/app/msg"])
    );
}
