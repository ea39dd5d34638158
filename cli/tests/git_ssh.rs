//! Git over SSH through `kiln build --ssh`, end to end: the test starts its
//! own `sshd` on 127.0.0.1 (a host key, an `authorized_keys` and a config
//! of its own, in a private mount namespace so that its privilege
//! separation folder `/run/sshd` never appears on the host), a user key
//! loaded into an `ssh-agent` the test starts, and a bare repository in a
//! temporary folder. A git context, a named context and `ADD` of an
//! `ssh://` URL fetch through the agent forwarded as `default`, as
//! BuildKit does; without `--ssh` the build fails with BuildKit's error;
//! `--ssh default=KEYFILE` serves a key file through an agent of kiln's.
//! The host's `~/.ssh` and `/etc/ssh` are never read or written: every
//! path is passed explicitly.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Runs `prog args`, asserting success; returns stdout.
fn sh(prog: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn keygen(path: &Path) {
    let p = path.display().to_string();
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f", &p],
        &[],
    );
}

/// A child process killed with the value.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An sshd on 127.0.0.1 that lets root in with the keys in
/// `authorized_keys`, and an agent holding the one key it accepts.
struct SshServer {
    _sshd: Killed,
    _agent: Killed,
    port: u16,
    agent_sock: PathBuf,
    user_key: PathBuf,
}

impl SshServer {
    fn start(dir: &Path) -> SshServer {
        std::fs::create_dir_all(dir).expect("ssh dir");
        let host_key = dir.join("host_ed25519");
        let user_key = dir.join("user_ed25519");
        keygen(&host_key);
        keygen(&user_key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 PidFile none\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .expect("sshd_config");
        // sshd wants its privilege separation folder, /run/sshd: a tmpfs
        // on /run in a mount namespace of its own gives it one without
        // touching the host's /run.
        let sshd = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o mode=755 kiln-test-sshd /run && mkdir -m 755 /run/sshd \
                 && exec /usr/sbin/sshd -D -e -f \"$0\"",
            )
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server)");
        let sshd = Killed(sshd);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sshd never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let agent_sock = dir.join("agent.sock");
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let agent = Killed(agent);
        use std::os::unix::fs::FileTypeExt;
        while !std::fs::metadata(&agent_sock).is_ok_and(|m| m.file_type().is_socket()) {
            assert!(start.elapsed() < Duration::from_secs(20), "ssh-agent");
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = user_key.display().to_string();
        sh("ssh-add", &["-q", &key], &[("SSH_AUTH_SOCK", &agent_sock)]);
        SshServer {
            _sshd: sshd,
            _agent: agent,
            port,
            agent_sock,
            user_key,
        }
    }

    fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }
}

/// A bare repository at `dir` whose `main` holds `files`.
fn bare_repo(dir: &Path, files: &[(&str, &str)]) {
    let work = dir.with_extension("work");
    std::fs::create_dir_all(&work).expect("work");
    let w = work.display().to_string();
    let env: &[(&str, &Path)] = &[];
    sh("git", &["init", "-q", "-b", "main", &w], env);
    for (f, text) in files {
        std::fs::write(work.join(f), text).expect("write");
    }
    sh("git", &["-C", &w, "add", "-A"], env);
    sh(
        "git",
        &[
            "-C",
            &w,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-q",
            "-m",
            "init",
        ],
        env,
    );
    let d = dir.display().to_string();
    sh("git", &["clone", "-q", "--bare", &w, &d], env);
}

/// `kiln build` to a local folder; returns the output and the folder.
fn build(k: &Kiln, args: &[&str], env_sock: Option<&Path>) -> (Output, PathBuf) {
    let out = k.path("out");
    let _ = std::fs::remove_dir_all(&out);
    let dest = format!("type=local,dest={}", out.display());
    let mut all = vec!["build", "--progress", "plain", "-o", &dest];
    all.extend_from_slice(args);
    let mut c = k.cmd(&all);
    // Neither the test's environment nor the host's agent may help.
    c.env_remove("SSH_AUTH_SOCK").env_remove("GIT_SSH_COMMAND");
    if let Some(s) = env_sock {
        c.env("SSH_AUTH_SOCK", s);
    }
    (c.output().expect("kiln"), out)
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "build failed:\n{}", stderr(o));
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn git_over_ssh_goes_through_the_forwarded_agent() {
    let k = Kiln::empty(KILN);
    let ssh = SshServer::start(&k.path("ssh"));
    let repo = k.path("srv/repo.git");
    bare_repo(
        &repo,
        &[
            ("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"),
            ("hello.txt", "over ssh\n"),
        ],
    );
    let url = format!("{}#main", ssh.url(&repo));
    let home_ssh =
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".ssh");
    let had_home_ssh = home_ssh.exists();
    let sock = ssh.agent_sock.display().to_string();
    let ssh_default = format!("default={sock}");

    // A git context, the agent named explicitly.
    let (o, out) = build(&k, &["--ssh", &ssh_default, &url], None);
    assert_ok(&o);
    assert_eq!(read(out.join("hello.txt")), "over ssh\n");

    // `--ssh default` takes $SSH_AUTH_SOCK.
    let (o, out) = build(&k, &["--ssh", "default", &url], Some(&ssh.agent_sock));
    assert_ok(&o);
    assert_eq!(read(out.join("hello.txt")), "over ssh\n");

    // ADD of an ssh:// URL and a named context from one.
    let ctx = k.context(
        "addctx",
        &[(
            "Dockerfile",
            &format!("FROM scratch\nADD {url} /added/\nCOPY --from=named hello.txt /named.txt\n"),
        )],
    );
    let ctx = ctx.display().to_string();
    let named = format!("named={url}");
    let (o, out) = build(
        &k,
        &["--ssh", &ssh_default, "--build-context", &named, &ctx],
        None,
    );
    assert_ok(&o);
    assert_eq!(read(out.join("added/hello.txt")), "over ssh\n");
    assert_eq!(read(out.join("named.txt")), "over ssh\n");

    // Without --ssh: BuildKit's error, even with an agent in kiln's own
    // environment (the daemon never sees the client's).
    for env in [None, Some(ssh.agent_sock.as_path())] {
        let (o, _) = build(&k, &[&url], env);
        assert!(!o.status.success(), "no --ssh, no fetch");
        let err = stderr(&o);
        assert!(
            err.contains("no SSH key \"default\" forwarded from the client"),
            "{err}"
        );
        let (o, _) = build(&k, &["--build-context", &named, &ctx], env);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("no SSH key \"default\" forwarded from the client"),
            "{}",
            stderr(&o)
        );
    }

    // An agent without the key: ssh's refusal reaches the user.
    let other = k.path("other");
    std::fs::create_dir_all(&other).expect("other");
    let other_sock = other.join("agent.sock");
    let empty_agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&other_sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let _empty_agent = Killed(empty_agent);
    use std::os::unix::fs::FileTypeExt;
    while !std::fs::metadata(&other_sock).is_ok_and(|m| m.file_type().is_socket()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrong = format!("default={}", other_sock.display());
    let (o, _) = build(&k, &["--ssh", &wrong, &url], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));

    // `--ssh default=KEYFILE`: kiln serves the key through an agent of its
    // own, as buildx does.
    let keyfile = format!("default={}", ssh.user_key.display());
    let (o, out) = build(&k, &["--ssh", &keyfile, &url], None);
    assert_ok(&o);
    assert_eq!(read(out.join("hello.txt")), "over ssh\n");
    // A file that is no key: ssh-add's refusal, before anything runs.
    let not_key = k.path("not-a-key");
    std::fs::write(&not_key, "nope\n").expect("write");
    let (o, _) = build(
        &k,
        &["--ssh", &format!("default={}", not_key.display()), &url],
        None,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("failed to load SSH key"),
        "{}",
        stderr(&o)
    );

    // No known_hosts was written for the user.
    if !had_home_ssh {
        assert!(!home_ssh.exists(), "{} was created", home_ssh.display());
    }
}
