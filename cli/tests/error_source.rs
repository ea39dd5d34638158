//! A step that fails while the build runs is shown where it was written, as
//! BuildKit prints it: `NAME:LINE`, the lines around it with `>>>` on the
//! step's own, and the error below. The locations live beside the graph, so
//! moving a line keeps the cache.

use kiln_testsupport::{named, stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds `ctx` with plain progress and returns the output.
fn build(k: &Kiln, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    k.run(&all)
}

#[test]
fn a_failing_run_on_line_three_is_shown_at_line_three() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nRUN echo ok\nRUN false\nCOPY a /b\n",
            ),
            ("a", "a\n"),
        ],
    );
    let out = build(&k, &[&ctx.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(concat!(
            "------\n > [3/4] RUN false:\n------\n",
            "Dockerfile:3\n",
            "--------------------\n",
            "   1 |     FROM busybox:1.35\n",
            "   2 |     RUN echo ok\n",
            "   3 | >>> RUN false\n",
            "   4 |     COPY a /b\n",
            "   5 |     \n",
            "--------------------\n",
            "ERROR: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n",
        )),
        "{err}"
    );
}

#[test]
fn a_missing_copy_source_is_shown_at_its_line() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN echo ok\nCOPY missing /b\nRUN true\n",
        )],
    );
    let out = build(&k, &[&ctx.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3\n"), "{err}");
    assert!(err.contains("   3 | >>> COPY missing /b\n"), "{err}");
    assert!(err.contains("\"/missing\": not found"), "{err}");
}

#[test]
fn a_continued_run_is_marked_on_every_line() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN echo ok\n# comment\nRUN echo a && \\\n    echo b && \\\n    false\nRUN true\n",
        )],
    );
    let out = build(&k, &[&ctx.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(concat!(
            "a\nb\n------\n",
            "Dockerfile:4\n",
            "--------------------\n",
            "   3 |     # comment\n",
            "   4 | >>> RUN echo a && \\\n",
            "   5 | >>>     echo b && \\\n",
            "   6 | >>>     false\n",
            "   7 |     RUN true\n",
            "--------------------\n",
        )),
        "{err}"
    );
}

#[test]
fn a_failure_in_a_second_stage_points_at_its_line() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS base\nRUN echo ok\n\nFROM base AS second\nRUN echo hi\nRUN exit 3\n\nFROM busybox:1.35\nCOPY --from=second / /\n",
        )],
    );
    let out = build(&k, &[&ctx.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(concat!(
            "Dockerfile:6\n",
            "--------------------\n",
            "   4 |     FROM base AS second\n",
            "   5 |     RUN echo hi\n",
            "   6 | >>> RUN exit 3\n",
            "   7 |     \n",
            "   8 |     FROM busybox:1.35\n",
            "--------------------\n",
        )),
        "{err}"
    );
    assert!(err.contains("exit code: 3"), "{err}");
}

#[test]
fn another_dockerfile_is_named_by_its_file_name() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[("other.Dockerfile", "FROM busybox:1.35\nRUN false\n")],
    );
    let file = ctx.join("other.Dockerfile").display().to_string();
    let out = build(&k, &["-f", &file, &ctx.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("other.Dockerfile:2\n"), "{err}");
    assert!(err.contains("   2 | >>> RUN false\n"), "{err}");
}

#[test]
fn moving_a_line_keeps_the_step_cached() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[("Dockerfile", "FROM busybox:1.35\nRUN echo one > /one\n")],
    );
    let (_, out) = k.build_json(&ctx, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:1.35\n\n# a comment moves the step down\nRUN echo one > /one\nRUN false\n",
    )
    .expect("write");
    let (events, out) = k.build_json(&ctx, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cached = named(&events, "cached");
    assert!(
        cached.iter().any(|n| n.contains("RUN echo one > /one")),
        "the moved step is cached: {cached:?}"
    );
    // And the failure after it is shown at its new line.
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:5\n"), "{err}");
    assert!(err.contains("   4 |     RUN echo one > /one\n"), "{err}");
}

#[test]
fn no_cache_filter_names_a_stage_even_when_it_is_the_only_one() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS only\nRUN echo one > /one\n",
        )],
    );
    let (_, out) = k.build_json(&ctx, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (events, out) = k.build_json(&ctx, &["--no-cache-filter", "only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = named(&events, "started");
    assert!(
        ran.iter().any(|n| n.contains("RUN echo one > /one")),
        "the stage's step runs again: {ran:?}"
    );
    let (events, out) = k.build_json(&ctx, &["--no-cache-filter", "other"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        named(&events, "started").is_empty(),
        "another stage's name changes nothing"
    );
}
