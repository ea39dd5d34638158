//! The RUN sandbox for real: namespaces, pivot_root into an overlay snapshot
//! of busybox, through the `kiln sandbox-helper` re-exec (run as root).
#![allow(unsafe_code)] // the harness measures and signals its own child processes

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_worker::diff::{write_layer, Compression, DiffOptions};
use kiln_worker::sandbox::{run, ExitStatus, Mount, Network, SandboxError, SandboxSpec, Stream};
use kiln_worker::snapshot::{mount_overlay, Mounted};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A busybox snapshot: its layer dirs, an overlay over them, the upper dir.
struct Snap {
    _tmp: tempfile::TempDir,
    layers: Vec<PathBuf>,
    upper: PathBuf,
    merged: PathBuf,
    mounted: Option<Mounted>,
}

impl Snap {
    fn new() -> Snap {
        let tmp = tempfile::tempdir().unwrap();
        let layers = kiln_testsupport::busybox_layer_dirs(tmp.path());
        let (upper, work, merged) = (
            tmp.path().join("upper"),
            tmp.path().join("work"),
            tmp.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        let mounted = Some(mount_overlay(&layers, &upper, &work, &merged).unwrap());
        Snap {
            _tmp: tmp,
            layers,
            upper,
            merged,
            mounted,
        }
    }

    fn rootfs(&self) -> &Path {
        &self.merged
    }

    fn spec(&self, script: &str) -> SandboxSpec {
        SandboxSpec::new(
            self.rootfs(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }

    fn unmount(&mut self) {
        if let Some(m) = self.mounted.take() {
            m.unmount().unwrap();
        }
    }
}

/// Runs and collects stdout and stderr.
fn sh(spec: &SandboxSpec) -> (ExitStatus, String, String, Vec<PathBuf>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let o = run(spec, Path::new(KILN), &mut |s, b| match s {
        Stream::Stdout => out.extend_from_slice(b),
        Stream::Stderr => err.extend_from_slice(b),
    })
    .unwrap();
    (
        o.status,
        String::from_utf8_lossy(&out).into(),
        String::from_utf8_lossy(&err).into(),
        o.created,
    )
}

#[test]
fn echo_output_is_captured() {
    let s = Snap::new();
    let (st, out, err, _) = sh(&s.spec("echo hi; echo oops >&2"));
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "hi\n");
    assert_eq!(err, "oops\n");
}

#[test]
fn exit_code_is_propagated() {
    let s = Snap::new();
    let (st, ..) = sh(&s.spec("exit 7"));
    assert_eq!(st, ExitStatus::Exited(7));
    assert_eq!(st.to_string(), "exit code: 7");
    // pid 1 ignores signals it has no handler for, even SIGKILL from inside
    // its namespace (as in docker); a killed child is the shell's business.
    let (st, ..) = sh(&s.spec("sh -c 'kill -9 $$'; exit $?"));
    assert_eq!(st, ExitStatus::Exited(137));
}

#[test]
fn stdin_bytes_are_fed() {
    let s = Snap::new();
    let mut spec = s.spec("cat");
    spec.stdin = Some(b"from stdin".to_vec());
    let (st, out, ..) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "from stdin");
    // Without stdin bytes, stdin is /dev/null.
    let (st, out, ..) = sh(&s.spec("cat; echo end"));
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "end\n");
}

#[test]
fn missing_executable_is_a_clear_error() {
    let s = Snap::new();
    let spec = SandboxSpec::new(s.rootfs(), vec!["no-such-tool".into()]);
    let e = run(&spec, Path::new(KILN), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, SandboxError::Setup(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "exec: \"no-such-tool\": executable file not found in $PATH"
    );
}

#[test]
fn pid_hostname_env_and_cwd() {
    let s = Snap::new();
    let mut spec = s.spec(
        "echo $$; hostname; echo $PATH; echo $FOO; pwd; umask; cut -d' ' -f6 /proc/self/stat",
    );
    spec.hostname = "kilnbox".into();
    spec.env = vec!["FOO=bar".into()];
    spec.cwd = "/work/dir".into();
    let (st, out, err, _) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "1",
            "kilnbox",
            kiln_worker::sandbox::DEFAULT_PATH,
            "bar",
            "/work/dir",
            "0022",
            "1"
        ]
    );
}

#[test]
fn proc_1_root_does_not_reach_the_host() {
    let s = Snap::new();
    let marker = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(marker.path(), "host-secret").unwrap();
    let host_path = marker.path().display().to_string();
    let script = format!(
        "cat /proc/1/root{host_path}; cat {host_path}; cat /proc/1/root/proc/1/root{host_path}; ls /proc/1/root/; ls /proc/self/fd"
    );
    let (_, out, err, _) = sh(&s.spec(&script));
    assert!(
        !out.contains("host-secret") && !err.contains("host-secret"),
        "{out}{err}"
    );
    // /proc/1/root is the rootfs: busybox's tree, not the host's.
    assert!(
        out.lines().any(|l| l == "bin") && out.lines().any(|l| l == "etc"),
        "{out}"
    );
    // Only stdio (and the fd ls itself opens) is open in the process.
    let fds: Vec<&str> = out
        .lines()
        .rev()
        .take_while(|l| l.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "leaked fds: {fds:?}"
    );
}

#[test]
fn network_none_has_only_lo() {
    let s = Snap::new();
    let mut spec = s.spec("cat /proc/net/dev; ping -c1 -W2 127.0.0.1 >/dev/null && echo lo-up");
    spec.network = Network::None;
    let (st, out, err, _) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert!(out.ends_with("lo-up\n"), "{out}");
    let out = out.trim_end_matches("lo-up\n");
    let ifaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(i, _)| i.trim())
        .collect();
    assert_eq!(ifaces, ["lo"]);
    // The host network (the default) sees more than lo.
    let (_, out, ..) = sh(&s.spec("cat /proc/net/dev"));
    assert!(out.lines().filter(|l| l.contains(':')).count() > 1, "{out}");
}

#[test]
fn user_and_groups_are_switched_and_caps_dropped() {
    let s = Snap::new();
    let mut spec = s.spec(
        "id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status",
    );
    spec.uid = 65534;
    spec.gid = 65534;
    spec.additional_gids = vec![1];
    let (st, out, err, _) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534");
    assert_eq!(lines[1], "65534");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["1", "65534"]);
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");

    let (_, out, ..) = sh(&s.spec("grep -E '^Cap(Eff|Bnd|Inh|Amb)' /proc/self/status"));
    assert!(
        out.contains("CapEff:\t00000000a80425fb"),
        "root keeps docker's set: {out}"
    );
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    let (st, ..) = sh(&s.spec("mount -t tmpfs t /mnt"));
    assert_ne!(st, ExitStatus::Exited(0), "no CAP_SYS_ADMIN");
}

#[test]
fn dev_sys_and_rlimits_look_like_docker() {
    let s = Snap::new();
    let script = "ls /dev; echo x > /dev/null && head -c 4 /dev/zero | wc -c; touch /sys/x 2>/dev/null || echo sys-ro; \
                  ulimit -n; ls -d /dev/pts/ptmx /dev/shm";
    let (st, out, err, _) = sh(&s.spec(script));
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    for n in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero",
    ] {
        assert!(out.lines().any(|l| l == n), "/dev/{n} missing: {out}");
    }
    assert!(out.lines().any(|l| l.trim() == "4"), "{out}");
    assert!(out.contains("sys-ro"), "{out}");
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    // No limits in the spec: the step keeps its parent's, as BuildKit's do.
    let want = r.rlim_cur;
    assert!(
        out.lines().any(|l| l == want.to_string()),
        "nofile inherited ({want}): {out}"
    );
}

#[test]
fn extra_mounts_bind_and_tmpfs() {
    let s = Snap::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "bound").unwrap();
    let mut spec =
        s.spec("cat /mnt/ro/in; touch /mnt/ro/new 2>/dev/null || echo ro-ok; echo t > /scratch/f && cat /scratch/f");
    spec.mounts = vec![
        Mount::Bind {
            source: host.path().into(),
            target: "/mnt/ro".into(),
            readonly: true,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
            mode: None,
        },
    ];
    let (st, out, err, created) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "boundro-ok\nt\n");
    assert!(!host.path().join("new").exists());
    // As with BuildKit (RemoveMountStubsRecursive), a RUN --mount's mount
    // points and the folders made for them go again: none reaches the layer.
    for p in ["mnt/ro", "mnt", "scratch"] {
        assert!(created.contains(&PathBuf::from(p)), "{p}: {created:?}");
        assert!(!s.rootfs().join(p).exists(), "{p} left in the rootfs");
    }
}

#[test]
fn a_file_mount_point_and_its_new_parent_are_removed() {
    let s = Snap::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data.txt"), "data").unwrap();
    let mut spec = s.spec("cat /newdir/data.txt");
    spec.mounts = vec![Mount::Bind {
        source: host.path().join("data.txt"),
        target: "/newdir/data.txt".into(),
        readonly: true,
    }];
    let (st, out, err, created) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "data");
    assert!(
        created.contains(&PathBuf::from("newdir/data.txt")),
        "{created:?}"
    );
    assert!(created.contains(&PathBuf::from("newdir")), "{created:?}");
    assert!(!s.rootfs().join("newdir").exists());
}

/// A folder made for a mount point that the step also writes into, beside
/// the mount, is the step's: it stays with what was written, only the
/// mount point itself goes.
#[test]
fn a_new_parent_the_step_writes_into_stays() {
    let s = Snap::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data.txt"), "data").unwrap();
    let mut spec = s.spec("cat /newdir/sub/data.txt > /newdir/copy");
    spec.mounts = vec![Mount::Bind {
        source: host.path().join("data.txt"),
        target: "/newdir/sub/data.txt".into(),
        readonly: true,
    }];
    let (st, _, err, created) = sh(&spec);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert!(
        created.contains(&PathBuf::from("newdir/sub/data.txt"))
            && created.contains(&PathBuf::from("newdir/sub"))
            && !created.contains(&PathBuf::from("newdir")),
        "only what the step left empty goes: {created:?}"
    );
    assert_eq!(
        std::fs::read_to_string(s.rootfs().join("newdir/copy")).unwrap(),
        "data"
    );
    assert!(!s.rootfs().join("newdir/sub").exists());
}

#[test]
fn run_diff_has_whiteouts_and_no_mount_stubs() {
    let mut s = Snap::new();
    let (st, _, err, created) = sh(&s.spec("rm /bin/ls && mkdir -p /x && touch /x/y"));
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert!(created.contains(&PathBuf::from("etc/hosts")), "{created:?}");
    s.unmount();
    let opts = DiffOptions {
        exclude: created,
        lowers: s.layers.clone(),
    };
    let (d, tar) = write_layer(&s.upper, &opts, Compression::Gzip, Vec::new()).unwrap();
    let list = kiln_testsupport::tar_listing(&gunzip(&tar));
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bin/", "bin/.wh.ls", "x/", "x/y"], "{list:?}");
    assert!(d.digest.starts_with("sha256:") && d.diff_id != d.digest);
}

#[test]
fn rm_rf_and_recreate_makes_an_opaque_dir() {
    let mut s = Snap::new();
    let (st, _, err, created) =
        sh(&s.spec("rm -rf /usr/bin && mkdir /usr/bin && echo n > /usr/bin/new"));
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    s.unmount();
    let opts = DiffOptions {
        exclude: created,
        lowers: s.layers.clone(),
    };
    let (_, tar) = write_layer(&s.upper, &opts, Compression::None, Vec::new()).unwrap();
    let list = kiln_testsupport::tar_listing(&tar);
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["usr/", "usr/bin/", "usr/bin/.wh..wh..opq", "usr/bin/new"],
        "{list:?}"
    );
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn kernel_interfaces_are_masked_or_read_only() {
    let s = Snap::new();
    let script = "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo wrote-proc-sys; \
                  echo h > /proc/sysrq-trigger 2>/dev/null && echo wrote-sysrq; \
                  cat /proc/kcore 2>/dev/null | wc -c; ls /sys/firmware | wc -l; cat /proc/sys/kernel/hostname";
    let mut spec = s.spec(script);
    spec.hostname = "masked".into();
    let (_, out, err, _) = sh(&spec);
    assert!(!out.contains("wrote-"), "{out}{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["0", "0", "masked"], "{out}{err}");
}

#[test]
fn a_cancelled_run_stops_and_kills_its_processes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = Snap::new();
    let spec = s.spec("sleep 1000 & echo started; sleep 1000");
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let t = Instant::now();
    let r = kiln_worker::sandbox::run_cancellable(
        &spec,
        Path::new(KILN),
        &mut |_, b| {
            if b.starts_with(b"started") {
                flag.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    assert!(matches!(r, Err(SandboxError::Cancelled)), "{r:?}");
    assert!(t.elapsed().as_secs() < 10);
    // No `sleep 1000` survives on the host.
    let ps = std::process::Command::new("sh")
        .args(["-c", "ps -eo args | grep -c '^sleep 1000$' || true"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "0");
}

/// `WORKDIR /proc/self/fd/N` must not lead out of the rootfs through an fd
/// inherited from kiln (runc's CVE-2024-21626).
#[test]
fn workdir_through_proc_self_fd_cannot_escape() {
    let s = Snap::new();
    let marker = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(marker.path(), "host-secret").unwrap();
    let name = marker
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for fd in 0..12 {
        let mut spec = s.spec(&format!(
            "pwd; ls -a; cat ../{name} ../../{name} 2>/dev/null"
        ));
        spec.cwd = format!("/proc/self/fd/{fd}");
        let mut out = Vec::new();
        match run(&spec, Path::new(KILN), &mut |_, b| out.extend_from_slice(b)) {
            Ok(_) => {
                let out = String::from_utf8_lossy(&out);
                assert!(!out.contains("host-secret"), "fd {fd}: {out}");
                let pwd = out.lines().next().unwrap_or("");
                assert!(
                    !pwd.contains("unreachable"),
                    "fd {fd}: cwd outside the root: {out}"
                );
            }
            Err(SandboxError::Setup(msg)) => assert!(msg.contains("workdir"), "{msg}"),
            Err(e) => panic!("fd {fd}: {e}"),
        }
    }
}

/// A step that writes next to a mount stub keeps its change and its time;
/// the stubs themselves never appear.
#[test]
fn writes_beside_stubs_are_kept_and_stubs_are_not() {
    let mut s = Snap::new();
    let (st, _, err, created) = sh(&s.spec("echo x > /etc/foo"));
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    s.unmount();
    let opts = DiffOptions {
        exclude: created,
        lowers: s.layers.clone(),
    };
    let (_, tar) = write_layer(&s.upper, &opts, Compression::None, Vec::new()).unwrap();
    let names: Vec<String> = kiln_testsupport::tar_listing(&tar)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["etc/", "etc/foo"]);
    let mut a = tar::Archive::new(&tar[..]);
    let etc = a.entries().unwrap().next().unwrap().unwrap();
    let lower_mtime = std::fs::metadata(s.layers[0].join("etc")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        etc.header().mtime().unwrap() as i64 > lower_mtime.mtime(),
        "etc/ keeps the step's time"
    );
}
