//! `kiln run` on kiln's FUSE overlay (`--snapshotter fuse`), as root: a
//! foreground `--rm` run writes and reads its own root, a detached one
//! takes `exec` and `rm -f`, and neither leaves a FUSE mount or a
//! `kiln fuse-helper` process behind.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// The `kiln fuse-helper` processes serving below `dir` (their command
/// line names a mount point in it).
fn helpers_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("fuse-helper") && cmd.contains(&dir) {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// FUSE mounts (any namespace kiln's own process sees: the host's here)
/// whose mount point is below `dir`.
fn fuse_mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("fuse") && l.contains(&dir))
        .map(str::to_string)
        .collect()
}

/// Waits up to 10 s for `f` to hold (helpers exit just after kiln does).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn assert_clean(k: &Kiln) {
    let dir = k.tmp.path();
    assert!(
        eventually(|| helpers_below(dir).is_empty() && fuse_mounts_below(dir).is_empty()),
        "left behind: helpers {:?}, mounts {:?}",
        helpers_below(dir),
        fuse_mounts_below(dir)
    );
}

#[test]
fn foreground_rm_run_writes_and_reads_its_root() {
    let k = Kiln::with_busybox(KILN);
    let (out, err) = k.ok(&[
        "run",
        "--rm",
        "--snapshotter",
        "fuse",
        BB,
        "sh",
        "-c",
        "echo x > /f; cat /f; grep -q root /etc/passwd && echo ok",
    ]);
    assert_eq!(out, "x\nok\n", "{err}");
    assert_clean(&k);
}

#[test]
fn detached_run_exec_and_rm_f() {
    let k = Kiln::with_busybox(KILN);
    let (id, _) = k.ok(&[
        "run",
        "-d",
        "--snapshotter",
        "fuse",
        "--name",
        "svc",
        BB,
        "sh",
        "-c",
        "echo inside > /marker; exec sleep 1000",
    ]);
    assert!(!id.trim().is_empty());
    // The container's root is served while it runs.
    assert!(
        eventually(|| k
            .run(&["exec", "svc", "cat", "/marker"])
            .stdout
            .starts_with(b"inside")),
        "exec never saw /marker"
    );
    k.ok(&["exec", "svc", "sh", "-c", "echo e > /from-exec"]);
    assert_eq!(k.ok(&["exec", "svc", "cat", "/from-exec"]).0, "e\n");
    assert_eq!(k.ok(&["rm", "-f", "svc"]).0, "svc\n");
    let (ps, _) = k.ok(&["ps", "-a"]);
    assert!(!ps.contains("svc"), "{ps}");
    assert_clean(&k);
}
