//! The differential build cases of `../shared/cases`, one test each: kiln
//! builds the case and its image, described by `../shared/oracle/imagefs.py`,
//! must be what BuildKit made (`expected.json`), or meet the hand-written
//! `expect`, or the build must fail with the expected text. Each test has
//! its own `$KILN_ROOT` with the busybox fixture loaded, as the cases'
//! `FROM busybox:1.35` expects.
//!
//! ../shared stores the contexts read-only and flattened: every entry lost
//! its owner-write bit (files 0444, dirs 0555, where BuildKit saw
//! 0644/0755), and `links`'s `dirwithlink/link.txt` is a regular file
//! holding its symlink target. Each test builds from a copy of the context
//! with both restored, so the comparison is with what BuildKit was given.

#[path = "support/cases.rs"]
mod support;

use kiln_testsupport::{shared, stderr, Kiln};
use support::CaseKiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

macro_rules! cases {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                support::run_case($name, &Kiln::for_case(KILN));
            }
        )*

        /// Every folder of the shared cases has a test here.
        #[test]
        fn every_case_has_a_test() {
            let listed = [$($name),*];
            let mut missing = Vec::new();
            for e in std::fs::read_dir(shared().join("cases")).expect("cases").flatten() {
                if e.path().join("case.json").is_file() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if !listed.contains(&n.as_str()) && !support::MULTI_PLATFORM.contains(&n.as_str()) {
                        missing.push(n);
                    }
                }
            }
            assert!(missing.is_empty(), "cases without a test: {missing:?}");
        }
    };
}

cases! {
    add_local_tar => "add-local-tar",
    arg_scoping => "arg-scoping",
    cmd_entrypoint => "cmd-entrypoint",
    continuation_comments => "continuation-comments",
    copy_basics => "copy-basics",
    copy_chown_chmod => "copy-chown-chmod",
    copy_from_image => "copy-from-image",
    dockerignore => "dockerignore",
    entrypoint_exec_cmd_shell => "entrypoint-exec-cmd-shell",
    error_missing_source => "error-missing-source",
    error_run_fails => "error-run-fails",
    error_unknown_instruction => "error-unknown-instruction",
    escape_directive => "escape-directive",
    links => "links",
    m_copy_exclude => "m-copy-exclude",
    m_copy_link => "m-copy-link",
    m_copy_parents => "m-copy-parents",
    m_heredoc_copy => "m-heredoc-copy",
    m_heredoc_run => "m-heredoc-run",
    m_platform_args => "m-platform-args",
    metadata => "metadata",
    multistage_named => "multistage-named",
    onbuild_recorded => "onbuild-recorded",
    run_exec_form => "run-exec-form",
    run_mount_bind => "run-mount-bind",
    run_mount_cache => "run-mount-cache",
    scratch_only => "scratch-only",
    shell_instruction => "shell-instruction",
    special_modes => "special-modes",
    target_stage => "target-stage",
    user_run => "user-run",
    whiteouts => "whiteouts",
    workdir_env_subst => "workdir-env-subst",
}

/// The multi-platform case itself builds (QEMU emulation), tested in
/// cli/tests/emulation.rs; a platform kiln cannot emulate is refused clearly
/// before any work rather than built wrong.
#[test]
fn multi_platform_is_refused_clearly() {
    let dir = shared()
        .join("cases/m-multi-platform")
        .display()
        .to_string();
    let k = Kiln::for_case(KILN);
    let out = k.run(&[
        "build",
        "--platform",
        "linux/amd64,linux/mips64le",
        "-f",
        &format!("{dir}/Dockerfile"),
        &format!("{dir}/context"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("linux/mips64le"), "{}", stderr(&out));
}

/// The whole suite again with RUN steps on kiln's FUSE overlay
/// (`"snapshotter": "fuse"` in each store's config.json, as
/// `--snapshotter fuse` would): every case must pass exactly as with the
/// kernel overlay, and no FUSE mount may outlive its build.
#[test]
fn every_case_with_the_fuse_snapshotter() {
    let names = support::single_platform_cases();
    support::run_all(&names, "with --snapshotter fuse", |name| {
        let k = Kiln::for_case(KILN);
        std::fs::write(k.root.join("config.json"), r#"{"snapshotter":"fuse"}"#)
            .expect("config.json");
        let (info, _) = k.ok(&["info"]);
        assert!(info.contains("Snapshotter: fuse"), "{info}");
        support::run_case(name, &k);
        let left = kiln_testsupport::mounts_below(k.tmp.path());
        assert!(left.is_empty(), "{name}: mounts left: {left:?}");
    });
}
