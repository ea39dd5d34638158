//! kiln as a plain user (rootless): a test user of its own, with a
//! subordinate id range (or none), runs the real binary through `setpriv`;
//! kiln enters a user namespace mapping that range and builds and runs as
//! root inside it. Images built so must be the very images root builds.
//! The harness (`kiln_testsupport::TestUser`) removes the user and its
//! ranges even when a test fails.

#[path = "support/cases.rs"]
mod support;

use kiln_testsupport::{imagefs, stderr, Kiln, TestUser};
use serde_json::Value;
use support::CaseKiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A context whose Dockerfile needs ownership kept: busybox's own files
/// (owned by bin, daemon…), a RUN that chowns to a uid other than root,
/// and a COPY with --chown.
const DOCKERFILE: &str = "FROM busybox:1.35\n\
RUN echo hi > /hello && mkdir -p /owned && chown 1000:1001 /owned && \
    touch /owned/f && chown 65534:65534 /owned/f && rm /bin/vi\n\
COPY --chown=12:34 a.txt /a.txt\n\
COPY b /b\n";

fn context(k: &Kiln) -> std::path::PathBuf {
    let dir = k.context("ctx", &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")]);
    std::fs::create_dir_all(dir.join("b/c")).expect("ctx dir");
    std::fs::write(dir.join("b/c/d"), "d\n").expect("ctx file");
    dir
}

/// Builds the context into an OCI archive; returns its imagefs description
/// and kiln's stderr.
fn build(k: &Kiln, ctx: &std::path::Path) -> (Value, String) {
    let out_dir = k.path("out");
    k.mkdir(&out_dir);
    let oci = out_dir.join("image.tar");
    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "--output",
        &format!("type=oci,dest={}", oci.display()),
        ctx.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    (imagefs(&oci, None), stderr(&out))
}

#[test]
fn build_from_busybox_run_copy_equals_root() {
    let user = TestUser::create(true);
    let k = user.kiln_with_busybox(KILN);
    let (got, err) = build(&k, &context(&k));
    assert!(!err.contains("has no range"), "{err}");
    let fs = &got["fs"];
    assert!(fs.get("/hello").is_some(), "{fs}");
    let root = Kiln::with_busybox(KILN);
    let (want, _) = build(&root, &context(&root));
    assert_eq!(got, want, "the rootless image differs from root's");
    // What root keeps, so rootless did too: owners other than root.
    let text = got.to_string();
    assert!(text.contains("1000") && text.contains("65534"), "{text}");
}

#[test]
fn the_store_and_layers_belong_to_the_user() {
    use std::os::unix::fs::MetadataExt;
    let user = TestUser::create(true);
    let k = user.kiln_with_busybox(KILN);
    let md = std::fs::metadata(&k.root).expect("store made");
    assert_eq!(md.uid(), user.uid, "the store is the user's");
    // A second kiln joins the same namespace: the pause process's pid.
    let pid = std::fs::read_to_string(k.root.join("userns.pid")).expect("pid file");
    k.ok(&["images"]);
    let again = std::fs::read_to_string(k.root.join("userns.pid")).expect("pid file");
    assert_eq!(pid, again, "one namespace per store");
}

#[test]
fn without_a_subuid_range_one_id_is_mapped_and_said() {
    let user = TestUser::create(false);
    let k = user.kiln_with_busybox(KILN);
    let ctx = k.context(
        "one",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nRUN touch /x && chown 1000 /x || true\nCOPY f /f\n",
            ),
            ("f", "f\n"),
        ],
    );
    let (got, err) = build(&k, &ctx);
    assert!(
        err.contains("has no range in /etc/subuid and /etc/subgid")
            && err.contains("become")
            && err.contains("owned by root"),
        "the single-id mapping is not announced:\n{err}"
    );
    assert!(got["fs"].get("/f").is_some(), "{}", got["fs"]);
}

#[test]
fn run_command_detached_logs_exec() {
    let user = TestUser::create(true);
    let k = user.kiln_with_busybox(KILN);
    let bb = "busybox:1.35";
    let (out, _) = k.ok(&["run", "--rm", bb, "sh", "-c", "id -u; stat -c %U /bin"]);
    assert_eq!(out, "0\nroot\n");
    let (id, _) = k.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        bb,
        "sh",
        "-c",
        "echo started; echo inside > /marker; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let mut logs = String::new();
    for _ in 0..100 {
        logs = k.ok(&["logs", "svc"]).0;
        if logs.contains("started") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(logs, "started\n");
    assert_eq!(k.ok(&["exec", "svc", "cat", "/marker"]).0, "inside\n");
    assert_eq!(
        k.ok(&["exec", "-u", "nobody", "svc", "id", "-u"]).0,
        "65534\n"
    );
    k.ok(&["rm", "-f", "svc"]);
    let (ps, _) = k.ok(&["ps", "-a"]);
    assert!(!ps.contains("svc"), "{ps}");
}

/// The whole shared suite rootless: each case passes as cases.rs checks it
/// (BuildKit's expected image, expected errors, a fully cached rebuild),
/// and each image equals the one root builds.
#[test]
fn every_case_rootless_equals_root() {
    let names = support::single_platform_cases();
    let user = TestUser::create(true);
    support::run_all(&names, "rootless", |name| {
        let k = user.kiln_with_busybox(KILN);
        k.mkdir(&k.work());
        let rootless = support::run_case(name, &k);
        let root = support::run_case(name, &Kiln::for_case(KILN));
        if let (Some(a), Some(b)) = (&rootless, &root) {
            let diffs = support::differences(a, b);
            assert!(
                diffs.is_empty(),
                "{name}: the rootless image differs from root's:\n{}",
                diffs.join("\n")
            );
        }
    });
}

/// Whether a plain user can open `dev` read-write: the mode's "other"
/// bits (the test users are in no group that owns it). `.ci/setup` makes
/// /dev/fuse and /dev/net/tun 0666 as Debian's udev rules do.
fn open_to_users(dev: &str) -> (bool, u32) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dev)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    (mode & 0o006 == 0o006, mode)
}

/// Says loudly that a test could not test what it is for.
fn skipped(what: &str, why: &str) {
    eprintln!(
        "\n**********\nSKIPPED: {what}: {why}\n(run .ci/setup as root: it restores Debian's 0666)\n**********\n"
    );
}

/// A rootless kiln whose store is pinned to the FUSE snapshotter.
fn fuse_kiln(user: &TestUser) -> Kiln {
    let k = user.kiln_with_busybox(KILN);
    std::fs::write(k.root.join("config.json"), r#"{"snapshotter":"fuse"}"#).expect("config");
    user.chown(&k.root.join("config.json"));
    k
}

/// Rootless with the FUSE snapshotter: the whole shared suite, each image
/// equal to the one root builds (with kernel overlay). The kernel lets
/// kiln mount FUSE in its user namespace only when `/dev/fuse` opens for
/// the real user; this test never changes the device. Where it is not open
/// (0600 root), `kiln info` and a build must say why, and the suite is
/// skipped loudly.
#[test]
fn fuse_rootless_runs_the_suite_or_says_why() {
    let (usable, mode) = open_to_users("/dev/fuse");
    let user = TestUser::create(true);
    let k = fuse_kiln(&user);
    let (info, _) = k.ok(&["info"]);
    if !usable {
        assert!(
            info.contains("Snapshotter: fuse")
                && info.contains("not open to the user kiln runs as")
                && info.contains(&format!("mode {mode:04o}")),
            "{info}"
        );
        let ctx = k.context("fz", &[("Dockerfile", "FROM busybox:1.35\nRUN true\n")]);
        let out = k.run(&["build", "--progress", "plain", ctx.to_str().expect("utf8")]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("FUSE without root needs /dev/fuse"),
            "{}",
            stderr(&out)
        );
        skipped(
            "the cases suite rootless on FUSE",
            &format!("/dev/fuse is {mode:04o}; {info}"),
        );
        return;
    }
    assert!(info.contains("/dev/fuse is usable"), "{info}");
    let names = support::single_platform_cases();
    support::run_all(&names, "rootless fuse", |name| {
        let k = fuse_kiln(&user);
        k.mkdir(&k.work());
        let rootless = support::run_case(name, &k);
        let root = support::run_case(name, &Kiln::for_case(KILN));
        if let (Some(a), Some(b)) = (&rootless, &root) {
            let diffs = support::differences(a, b);
            assert!(
                diffs.is_empty(),
                "{name}: rootless fuse differs from root:\n{}",
                diffs.join("\n")
            );
        }
    });
}

/// The FUSE `kiln fuse-helper` processes serving mounts below `dir`.
fn fuse_helpers_below(dir: &std::path::Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains("fuse-helper") && cmd.contains(&dir)
        })
        .count()
}

/// `kiln run` rootless on FUSE: a foreground `--rm` run writes its root and
/// keeps owners, a detached one takes `exec` and `rm -f`, and no helper
/// stays behind.
#[test]
fn run_rootless_on_fuse() {
    let (usable, mode) = open_to_users("/dev/fuse");
    if !usable {
        skipped(
            "kiln run rootless on FUSE",
            &format!("/dev/fuse is {mode:04o}"),
        );
        return;
    }
    let user = TestUser::create(true);
    let k = fuse_kiln(&user);
    let bb = "busybox:1.35";
    let (out, err) = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--snapshotter",
        "fuse",
        bb,
        "sh",
        "-c",
        "echo x > /f; cat /f; stat -c %U /bin; id -u; chown 1000 /f && stat -c %u /f; \
         grep ' / ' /proc/mounts | cut -d' ' -f3 | tail -n1 | cut -d. -f1",
    ]);
    // The root is a FUSE mount ("fuse" rootless, "fuse.kiln" as root).
    assert_eq!(out, "x\nroot\n0\n1000\nfuse\n", "{err}");
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--snapshotter",
        "fuse",
        "--name",
        "svc",
        bb,
        "sh",
        "-c",
        "echo inside > /marker; exec sleep 1000",
    ]);
    let mut seen = String::new();
    for _ in 0..100 {
        seen = String::from_utf8_lossy(&k.run(&["exec", "svc", "cat", "/marker"]).stdout).into();
        if seen == "inside\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen, "inside\n");
    k.ok(&["exec", "svc", "sh", "-c", "echo e > /from-exec"]);
    assert_eq!(k.ok(&["exec", "svc", "cat", "/from-exec"]).0, "e\n");
    k.ok(&["rm", "-f", "svc"]);
    let (ps, _) = k.ok(&["ps", "-a"]);
    assert!(!ps.contains("svc"), "{ps}");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = fuse_helpers_below(k.tmp.path());
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(left, 0, "fuse helpers left behind");
}
