//! Foreign-platform RUN steps through QEMU user emulation, for real: the
//! arm64 busybox of the shared fixture runs in the sandbox (through the
//! `kiln sandbox-helper` re-exec, as root) with a private binfmt_misc, and
//! the host's binfmt_misc is left exactly as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_solver::ops::Platform;
use kiln_testsupport::{busybox_fixture, imagefs, shared, Kiln};
use kiln_worker::emulation::{emulator_for, host_architecture};
use kiln_worker::sandbox::{run, ExitStatus, SandboxSpec, Stream};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn arm64() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: None,
    }
}

/// What the host's binfmt_misc looks like: its mount lines and, when
/// mounted, its entries with their contents.
fn host_binfmt_state() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("binfmt"))
        .map(str::to_string)
        .collect();
    if let Ok(rd) = std::fs::read_dir("/proc/sys/fs/binfmt_misc") {
        let mut names: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
        names.sort();
        for n in names {
            let body = if n.ends_with("register") {
                String::new()
            } else {
                std::fs::read_to_string(&n).unwrap_or_default()
            };
            out.push(format!("{}: {body}", n.display()));
        }
    }
    out
}

/// The arm64 busybox root filesystem, unpacked from the fixture's OCI
/// archive with the system tar (the manifest picked by its platform).
fn arm64_busybox(dir: &Path) -> PathBuf {
    let oci = dir.join("oci");
    std::fs::create_dir(&oci).unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(busybox_fixture())
        .arg("-C")
        .arg(&oci)
        .status()
        .unwrap();
    assert!(st.success());
    let blob = |d: &str| {
        oci.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = json(oci.join("index.json"));
    let mut top = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let list = top["manifests"].take();
    let m = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .expect("the fixture has linux/arm64")
        .clone();
    let manifest = json(blob(m["digest"].as_str().unwrap()));
    let root = dir.join("rootfs");
    std::fs::create_dir(&root).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let st = Command::new("tar")
            .arg("xzf")
            .arg(blob(l["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
    }
    root
}

fn run_script(spec: &SandboxSpec) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(spec, Path::new(KILN), &mut |s, d: &[u8]| match s {
        Stream::Stdout => out.extend_from_slice(d),
        Stream::Stderr => err.extend_from_slice(d),
    })
    .unwrap();
    (
        outcome.status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[test]
fn arm64_run_under_qemu_leaves_host_binfmt_alone() {
    if host_architecture() == "arm64" {
        return; // nothing foreign to emulate
    }
    let emu = emulator_for(&arm64())
        .expect("qemu-user-static is installed (.ci/setup)")
        .expect("arm64 is foreign here");
    let before = host_binfmt_state();
    let tmp = tempfile::tempdir().unwrap();
    let root = arm64_busybox(tmp.path());

    // Without emulation the kernel cannot run it: the test's premise.
    let native = SandboxSpec::new(&root, vec!["/bin/uname".into(), "-m".into()]);
    let err = run(&native, Path::new(KILN), &mut |_, _| {}).map(|o| o.status);
    assert!(
        !matches!(err, Ok(ExitStatus::Exited(0))),
        "arm64 busybox ran natively: {err:?}"
    );

    let mut spec = SandboxSpec::new(
        &root,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            // A child process too: every exec goes through binfmt_misc.
            "uname -m > /arch && cat /arch && id -u && ls -ln /etc/passwd".into(),
        ],
    );
    spec.emulator = Some(emu.clone());
    let (status, out, err) = run_script(&spec);
    assert_eq!(status, ExitStatus::Exited(0), "stdout {out} stderr {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "aarch64");
    assert_eq!(lines[1], "0", "root stays root in the user namespace");
    // Owners map to themselves (not nobody/65534).
    assert!(
        lines[2].contains(" 0 ") && !lines[2].contains("65534"),
        "{}",
        lines[2]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("arch")).unwrap(),
        "aarch64\n"
    );

    // A USER step's uid maps through too.
    let mut user = SandboxSpec::new(
        &root,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "id -u; touch /tmp/u; stat -c %u /tmp/u".into(),
        ],
    );
    user.uid = 1000;
    user.gid = 1000;
    user.emulator = Some(emu);
    let (status, out, err) = run_script(&user);
    assert_eq!(status, ExitStatus::Exited(0), "stdout {out} stderr {err}");
    assert_eq!(out, "1000\n1000\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(root.join("tmp/u")).unwrap().uid(), 1000);

    assert_eq!(host_binfmt_state(), before, "host binfmt_misc changed");
}

/// The shared m-multi-platform case through the CLI: one build for
/// linux/amd64 and linux/arm64 makes an index whose every platform ran its
/// RUN on its own architecture (checked by the oracle's imagefs.py against
/// the case's expected files); the host's binfmt_misc is unchanged.
#[test]
fn multi_platform_case_builds_each_platform() {
    let before = host_binfmt_state();
    let case = shared().join("cases/m-multi-platform");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
    let platforms: Vec<&str> = meta["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let k = Kiln::with_busybox(KILN);
    let oci = k.path("image.tar");
    k.ok(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        &platforms.join(","),
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        "-f",
        &case.join("Dockerfile").display().to_string(),
        &case.join("context").display().to_string(),
    ]);
    for p in &platforms {
        let got = imagefs(&oci, Some(p));
        assert_eq!(got["platform"], *p);
        let files = meta["expect"]["platforms"][p]["files"].as_object().unwrap();
        assert!(!files.is_empty());
        for (path, want) in files {
            let entry = &got["fs"][path];
            assert_eq!(entry[0], "f", "{p} {path}: {entry}");
            let want = want.as_str().unwrap();
            let sha = Command::new("sha256sum")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(want.as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            let sha = String::from_utf8_lossy(&sha.stdout);
            assert_eq!(
                entry[5].as_str().unwrap(),
                sha.split_whitespace().next().unwrap(),
                "{p} {path}: expected content {want:?}"
            );
        }
    }

    // type=local and type=tar split the platforms into folders named as
    // BuildKit names them (the steps are cached by now).
    let local = k.path("local");
    let tar = k.path("rootfs.tar");
    for out in [
        format!("type=local,dest={}", local.display()),
        format!("type=tar,dest={}", tar.display()),
    ] {
        k.ok(&[
            "build",
            "--progress",
            "plain",
            "--platform",
            &platforms.join(","),
            "-o",
            &out,
            "-f",
            &case.join("Dockerfile").display().to_string(),
            &case.join("context").display().to_string(),
        ]);
    }
    let unpacked = k.path("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    for p in &platforms {
        let dir = p.replace('/', "_");
        let files = meta["expect"]["platforms"][p]["files"].as_object().unwrap();
        for (path, want) in files {
            for top in [&local, &unpacked] {
                let file = top.join(&dir).join(path.trim_start_matches('/'));
                assert_eq!(
                    std::fs::read_to_string(&file).unwrap(),
                    want.as_str().unwrap(),
                    "{}",
                    file.display()
                );
            }
        }
        assert!(local.join(&dir).join("bin/busybox").is_file());
    }
    assert_eq!(host_binfmt_state(), before, "host binfmt_misc changed");
}
