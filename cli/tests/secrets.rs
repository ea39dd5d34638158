//! `kiln build --secret/--ssh` with `RUN --mount=type=secret|ssh`, end to
//! end: the step reads the secret (file and env), the image and the store
//! hold no trace of it (neither the bytes nor the mount points), a changed
//! secret keeps the step cached, missing secrets fail or are skipped as
//! BuildKit does, and an SSH agent socket is forwarded with SSH_AUTH_SOCK.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testsupport::{events, imagefs, named, stderr, Kiln};
use sha2::{Digest, Sha256};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const FILE_SECRET: &str = "kiln-file-secret-9f3a7c";
const ENV_SECRET: &str = "kiln-env-secret-4b21de";
const ENV_VAR: &str = "KILN_TEST_SECRET_ENV";

/// `kiln build --progress json EXTRA CTX` with `env` set for kiln.
fn build(k: &Kiln, ctx: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let ctx = ctx.display().to_string();
    let mut args = vec!["build", "--progress", "json"];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let mut c = k.cmd(&args);
    for (key, v) in env {
        c.env(key, v);
    }
    c.output().expect("running kiln")
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Every regular file beneath `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// No file beneath `dir` (the store) holds the file secret's bytes.
fn assert_no_file_holds_the_secret(dir: &Path) {
    let mut all = Vec::new();
    files(dir, &mut all);
    for f in all {
        let data = std::fs::read(&f).unwrap_or_default();
        assert!(
            !contains(&data, FILE_SECRET),
            "{} holds the secret",
            f.display()
        );
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A blob as its plain bytes (gzip and zstd layers decompressed).
fn plain(data: Vec<u8>) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .expect("gunzip layer");
        out
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(&data[..])
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("unzstd layer");
        out
    } else {
        data
    }
}

/// Asserts no file under `dir` and no (decompressed) member of the OCI
/// archive `archive` holds either secret.
fn assert_no_secret_bytes(dirs: &[&Path], archive: &Path) {
    for dir in dirs {
        let mut all = Vec::new();
        files(dir, &mut all);
        assert!(!all.is_empty(), "nothing under {}", dir.display());
        for f in all {
            let data = std::fs::read(&f).unwrap_or_default();
            for s in [FILE_SECRET, ENV_SECRET] {
                assert!(!contains(&data, s), "{} holds a secret", f.display());
            }
        }
    }
    let mut ar = tar::Archive::new(std::fs::File::open(archive).expect("archive"));
    let mut members = 0;
    for entry in ar.entries().expect("entries") {
        use std::io::Read;
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read member");
        let data = plain(data);
        for s in [FILE_SECRET, ENV_SECRET] {
            assert!(!contains(&data, s), "archive member {name} holds a secret");
        }
        members += 1;
    }
    assert!(members > 3, "the archive has blobs");
}

const READER: &str = "FROM busybox:1.35\n\
RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=ENVTOK \
sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha && \
printf %s \"$ENVTOK\" | wc -c > /envtok.len && \
ls /run/secrets > /listing && \
{ test -e /run/secrets/envtok && echo envtok-file || echo no-envtok-file; } > /envtok.file\n";

#[test]
fn a_step_reads_file_and_env_secrets_that_reach_no_layer_and_no_cache_key() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context("ctx", &[("Dockerfile", READER)]);
    let tok = k.path("tok.txt");
    std::fs::write(&tok, FILE_SECRET).unwrap();
    let out_dir = k.path("out");
    let archive = k.path("img.tar");
    let local = format!("type=local,dest={}", out_dir.display());
    let oci = format!("type=oci,dest={}", archive.display());
    let file_arg = format!("id=tok,src={}", tok.display());
    let env_arg = format!("id=envtok,env={ENV_VAR}");
    let args = [
        "--secret", &file_arg, "--secret", &env_arg, "-o", &local, "-o", &oci,
    ];
    let out = build(&k, &ctx, &args, &[(ENV_VAR, ENV_SECRET)]);
    assert!(out.status.success(), "build: {}", stderr(&out));

    // The step saw both.
    let want = format!("{:x}", Sha256::digest(FILE_SECRET.as_bytes()));
    assert_eq!(read(out_dir.join("tok.sha")), want);
    assert_eq!(
        read(out_dir.join("envtok.len")),
        ENV_SECRET.len().to_string()
    );
    assert_eq!(read(out_dir.join("listing")), "tok");
    assert_eq!(
        read(out_dir.join("envtok.file")),
        "no-envtok-file",
        "env= without a target is only the variable"
    );

    // Neither the mount point nor the folders made for it are in the image
    // (busybox has no /run).
    assert!(!out_dir.join("run").exists(), "/run in the local output");
    let fs = imagefs(&archive, None);
    let paths: Vec<&String> = fs["fs"].as_object().expect("fs").keys().collect();
    assert!(paths.iter().any(|p| *p == "/tok.sha"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/run")),
        "a secret's mount point reached a layer: {paths:?}"
    );

    // No secret byte in the outputs, the store (layers, records, scratch)
    // or the progress.
    assert_no_secret_bytes(&[&out_dir, &k.root], &archive);
    for s in [FILE_SECRET, ENV_SECRET] {
        assert!(!contains(&out.stdout, s) && !contains(&out.stderr, s));
    }

    // Other values: the step stays cached, as with BuildKit.
    std::fs::write(&tok, "another value entirely").unwrap();
    let out = build(
        &k,
        &ctx,
        &["--secret", &file_arg, "--secret", &env_arg],
        &[(ENV_VAR, "changed")],
    );
    assert!(out.status.success(), "rebuild: {}", stderr(&out));
    let ev = events(&out);
    let cached = named(&ev, "cached");
    assert!(
        cached.iter().any(|n| n.contains("RUN --mount=type=secret")),
        "the RUN is cached: {ev:?}"
    );
    assert!(
        !named(&ev, "started").iter().any(|n| n.contains("RUN")),
        "the RUN did not run again: {ev:?}"
    );
}

#[test]
fn missing_secrets_fail_when_required_and_are_skipped_otherwise() {
    let k = Kiln::with_busybox(KILN);
    let required = k.context(
        "req",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN --mount=type=secret,id=nope,required cat /run/secrets/nope\n",
        )],
    );
    let out = build(&k, &required, &[], &[]);
    assert!(!out.status.success(), "a required missing secret fails");
    let err = stderr(&out);
    assert!(err.contains("secret nope not found"), "{err}");

    let optional = k.context(
        "opt",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN --mount=type=secret,id=gone \
             { test -e /run/secrets/gone && echo present || echo absent; } > /seen\n",
        )],
    );
    let dest = k.path("out");
    let local = format!("type=local,dest={}", dest.display());
    let out = build(&k, &optional, &["-o", &local], &[]);
    assert!(out.status.success(), "optional: {}", stderr(&out));
    assert_eq!(read(dest.join("seen")), "absent");
    assert!(!dest.join("run").exists());

    // A --secret whose file does not exist is refused before the build.
    let out = build(
        &k,
        &optional,
        &["--secret", "id=gone,src=/nonexistent/kiln-secret"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/kiln-secret"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_custom_target_mode_and_owner_are_honoured() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN --mount=type=secret,id=tok,target=/etc/app/conf/token,mode=0440,uid=1000,gid=1001 \
             stat -c '%a %u %g %F' /etc/app/conf/token > /stat && \
             wc -c < /etc/app/conf/token >> /stat && \
             { echo x > /etc/app/conf/token && echo writable || echo read-only; } >> /stat 2>/dev/null\n\
             USER 1000\n\
             RUN --mount=type=secret,id=tok,target=/home/t,uid=1000 cat /home/t | wc -c > /tmp/user.len\n",
        )],
    );
    let tok = k.path("tok");
    std::fs::write(&tok, FILE_SECRET).unwrap();
    let dest = k.path("out");
    let local = format!("type=local,dest={}", dest.display());
    let sec = format!("id=tok,src={}", tok.display());
    let out = build(&k, &ctx, &["--secret", &sec, "-o", &local], &[]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let stat = read(dest.join("stat"));
    let lines: Vec<&str> = stat.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "440 1000 1001 regular file",
            &FILE_SECRET.len().to_string(),
            "read-only"
        ],
        "{stat}"
    );
    assert_eq!(
        read(dest.join("tmp/user.len")),
        FILE_SECRET.len().to_string()
    );
    // /etc was there; /etc/app and /etc/app/conf were made for the mount.
    assert!(dest.join("etc").is_dir());
    assert!(
        !dest.join("etc/app").exists(),
        "folders made for a secret stay out"
    );
    assert!(!dest.join("home/t").exists());
    assert_no_file_holds_the_secret(&k.root);
}

/// `ssh-agent -D -a SOCK`, killed with the value.
struct Agent {
    child: std::process::Child,
    sock: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client)");
        // Wait for the socket (no timing assertion: the agent makes it
        // before it serves).
        use std::os::unix::fs::FileTypeExt;
        while !std::fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Agent { child, sock }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_ssh_agent_socket_is_forwarded_with_ssh_auth_sock() {
    let k = Kiln::with_busybox(KILN);
    let agent = Agent::start(k.tmp.path());
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n\
             RUN --mount=type=ssh,id=git,target=/tmp/git.sock test -S /tmp/git.sock && echo ok > /git\n\
             USER 1000\n\
             RUN --mount=type=ssh,uid=1000,mode=0600 stat -c '%a %u %F' \"$SSH_AUTH_SOCK\" > /tmp/user.stat\n",
        )],
    );
    let dest = k.path("out");
    let local = format!("type=local,dest={}", dest.display());
    let sock = agent.sock.display().to_string();
    let git = format!("git={sock}");
    let out = build(
        &k,
        &ctx,
        &["--ssh", "default", "--ssh", &git, "-o", &local],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    assert!(out.status.success(), "build: {}", stderr(&out));
    assert_eq!(read(dest.join("sock")), "/run/buildkit/ssh_agent.0");
    assert_eq!(read(dest.join("git")), "ok");
    // The step's socket is a forwarder of its own: owner and mode as asked.
    assert_eq!(read(dest.join("tmp/user.stat")), "600 1000 socket");
    assert!(
        !dest.join("run").exists(),
        "the socket's mount point stays out"
    );
    assert!(!dest.join("tmp/git.sock").exists());

    // Required and not forwarded: a clear error naming the id.
    let req = k.context(
        "req",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN --mount=type=ssh,id=deploy,required true\n",
        )],
    );
    let out = build(&k, &req, &["--ssh", "default"], &[("SSH_AUTH_SOCK", &sock)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"deploy\""), "{}", stderr(&out));

    // `--ssh default` without an agent is refused up front.
    let out = build(&k, &req, &["--ssh", "default"], &[("SSH_AUTH_SOCK", "")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SSH_AUTH_SOCK"), "{}", stderr(&out));
}

/// A build killed (SIGKILL) in the middle of a step that uses a file
/// secret leaves nothing behind on the host: no mount under the store
/// (snapshots and the secret's tmpfs live in the build's own mount
/// namespace), and the secret's bytes in no file of the store.
#[test]
fn a_killed_build_leaves_no_mount_and_no_secret() {
    let k = Kiln::with_busybox(KILN);
    let src = k.path("secret.txt");
    std::fs::write(&src, FILE_SECRET).unwrap();
    let ctx = k.context(
        "killed",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo && sleep 60\n",
        )],
    );
    let secret = format!("id=tok,src={}", src.display());
    let mut child = k
        .cmd(&[
            "build",
            "--progress",
            "plain",
            "--secret",
            &secret,
            &ctx.display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn build");
    // Wait until the step has the secret (it printed it).
    let mut err = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !contains(&seen, FILE_SECRET) {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let n = err.read(&mut buf).unwrap_or(0);
        assert!(
            n > 0 && std::time::Instant::now() < deadline,
            "the step never ran:\n{}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // While it runs, the host sees none of its mounts.
    assert_eq!(
        kiln_testsupport::mounts_below(&k.root),
        Vec::<String>::new()
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Let the sandbox (which dies with its parent) go too.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        kiln_testsupport::mounts_below(&k.root),
        Vec::<String>::new()
    );
    assert_no_file_holds_the_secret(&k.root);
}
