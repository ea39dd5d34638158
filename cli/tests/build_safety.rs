//! The bad paths of `kiln build`, end to end as root: nothing in a context,
//! an image or a RUN reaches the host; a build killed with SIGKILL leaves a
//! store the next build uses; a failing build names nothing.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use kiln_testsupport::{mounts_below, stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// What only this file's tests do with a kiln.
trait BuildLocal {
    /// Builds `ctx` and exports its rootfs to a fresh folder.
    fn build_local(&self, ctx: &Path, tag: &str) -> (Output, PathBuf);
}

impl BuildLocal for Kiln {
    fn build_local(&self, ctx: &Path, tag: &str) -> (Output, PathBuf) {
        let dest = self.path(&format!("out-{tag}"));
        let out = self.run(&[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            "--output",
            &format!("type=local,dest={}", dest.display()),
            &ctx.display().to_string(),
        ]);
        (out, dest)
    }
}

#[test]
fn a_context_symlink_to_a_host_file_never_copies_the_host_file() {
    let k = Kiln::with_busybox(KILN);
    // A top-level source symlink is followed, as BuildKit does, but inside
    // the context: /etc/shadow is not in it, so the copy fails.
    let ctx = k.context(
        "top",
        &[("Dockerfile", "FROM scratch\nCOPY shadow /shadow\n")],
    );
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("shadow")).unwrap();
    let (out, dest) = k.build_local(&ctx, "top");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert!(!dest.join("shadow").exists());

    // Inside a copied folder, links are copied as links.
    let ctx = k.context(
        "nested",
        &[("Dockerfile", "FROM scratch\nCOPY dir/ /dir/\n")],
    );
    std::fs::create_dir(ctx.join("dir")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("dir/shadow")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", ctx.join("dir/up")).unwrap();
    let (out, dest) = k.build_local(&ctx, "nested");
    assert!(out.status.success(), "{}", stderr(&out));
    let shadow = dest.join("dir/shadow");
    assert!(std::fs::symlink_metadata(&shadow)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&shadow).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(std::fs::symlink_metadata(dest.join("dir/up"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_run_cannot_read_the_host_through_proc_1_root() {
    let k = Kiln::with_busybox(KILN);
    let marker = k.path("host-secret");
    std::fs::write(&marker, "secret").unwrap();
    let m = marker.display().to_string();
    let df = format!(
        "FROM busybox:1.35\n\
         RUN (cat /proc/1/root{m} 2>/dev/null || echo unreadable) > /via-proc1\n\
         RUN (cat /proc/self/root{m} 2>/dev/null || echo unreadable) > /via-self\n\
         RUN (ls /proc/1/root/ > /root-listing)\n"
    );
    let ctx = k.context("ctx", &[("Dockerfile", df.as_str())]);
    let (out, dest) = k.build_local(&ctx, "proc");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("via-proc1")).unwrap(),
        "unreadable\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("via-self")).unwrap(),
        "unreadable\n"
    );
    // pid 1 is the step itself: its root is the image's, with busybox's bin.
    let listing = std::fs::read_to_string(dest.join("root-listing")).unwrap();
    assert!(listing.lines().any(|l| l == "bin"), "{listing}");
    assert!(
        !listing.lines().any(|l| l == "work" || l == "proc-host"),
        "{listing}"
    );
}

#[test]
fn a_failing_build_names_nothing_and_says_which_step_failed() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN echo before\nRUN exit 3\n",
        )],
    );
    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "broken",
        &ctx.display().to_string(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("RUN exit 3"), "names the step: {err}");
    let images = k.run(&["images"]);
    assert!(!String::from_utf8_lossy(&images.stdout).contains("broken"));
}

/// Whether any mount below `dir` is still there.
#[test]
fn a_build_killed_mid_step_leaves_a_store_the_next_build_uses() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "slow",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nCOPY a.txt /a.txt\nRUN echo step-started && sleep 60\n",
            ),
            ("a.txt", "a"),
        ],
    );
    let mut child = k
        .cmd(&[
            "build",
            "--progress",
            "plain",
            "-t",
            "slow",
            &ctx.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN is under way (it printed its line). Its overlay
    // is mounted in the build's own mount namespace: the host sees none.
    let work = k.root.join("work");
    let mut progress = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("step-started") {
        use std::io::BufRead;
        let mut line = String::new();
        let n = progress.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "the build never reached its RUN:\n{seen}");
        seen.push_str(&line);
    }
    assert!(mounts_below(&work).is_empty(), "{:?}", mounts_below(&work));
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let ctx2 = k.context(
        "after",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nCOPY a.txt /a.txt\nRUN echo ok > /ok\n",
            ),
            ("a.txt", "a"),
        ],
    );
    let (out, dest) = k.build_local(&ctx2, "after");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dest.join("ok")).unwrap(), "ok\n");
    assert!(
        mounts_below(&work).is_empty(),
        "the dead build's mounts were cleaned"
    );
    assert!(!k.run(&["images"]).stdout.windows(4).any(|w| w == b"slow"));
}
