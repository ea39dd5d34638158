//! `kiln run`, `ps`, `logs`, `stop`, `rm`, `exec` end to end, as root:
//! real namespaces, overlay mounts and processes, on the busybox fixture.
#![allow(unsafe_code)] // the harness measures and signals its own child processes

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_testsupport::containers::{err as stderr, out as stdout, Ctr as K};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// The line of `kiln ps` output naming this container.
fn ps_line(ps: &str, name: &str) -> Option<String> {
    ps.lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .map(str::to_string)
}

#[test]
fn output_and_exit_codes_are_the_process_s() {
    let k = K::new(KILN);
    let o = k.run(&["run", "--rm", BB, "echo", "hello", "-n"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello -n\n");

    let o = k.run(&[
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    // Everything after the image is the command's, flags included.
    assert_eq!(
        k.ok(&["run", "--rm", BB, "echo", "-d", "--rm", "-e", "x"]),
        "-d --rm -e x\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "--entrypoint", "echo", BB, "-i"]),
        "-i\n"
    );
    let o = k.run(&["run", "--rm", BB, "no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );

    let o = k.run(&["run", "--rm", BB, "/etc"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    assert!(k.container_dirs().is_empty(), "--rm left containers");
}

#[test]
fn unknown_image_is_125_with_a_clear_message() {
    let k = K::new(KILN);
    // A registry port nobody listens on: the pull fails at once.
    let o = k.run(&["run", "--rm", "127.0.0.1:1/nosuch:1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("Unable to find image '127.0.0.1:1/nosuch:1' locally"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(k.container_dirs().is_empty());
}

#[test]
fn image_config_decides_and_flags_override() {
    let k = K::new(KILN);
    let ctx = k.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox:1.35
RUN echo "app:x:1234:1234::/home/app:/bin/sh" >> /etc/passwd && mkdir -p /srv/app && echo content > /srv/app/file
ENV GREETING=hi FOO=bar
WORKDIR /srv/app
USER app
ENTRYPOINT ["sh", "-c"]
CMD ["echo $GREETING $FOO; pwd; id -u; cat file"]
"#,
    )
    .unwrap();
    k.ok(&["build", "-q", "-t", "cfg:1", ctx.to_str().unwrap()]);

    assert_eq!(
        k.ok(&["run", "--rm", "cfg:1"]),
        "hi bar\n/srv/app\n1234\ncontent\n"
    );
    // Arguments replace CMD, not ENTRYPOINT.
    assert_eq!(k.ok(&["run", "--rm", "cfg:1", "echo $FOO"]), "bar\n");
    // -e (after the image's ENV), -w, -u.
    let out = k.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=baz",
        "-e",
        "NEW=1",
        "-w",
        "/tmp",
        "-u",
        "0:0",
        "cfg:1",
        "echo $GREETING $FOO $NEW; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "hi baz 1\n/tmp\n0\n0\n");
    // --env-file, then -e on top.
    let envf = k.tmp.path().join("env");
    std::fs::write(&envf, "# comment\nFOO=fromfile\nOTHER=o\n").unwrap();
    let out = k.ok(&[
        "run",
        "--rm",
        "--env-file",
        envf.to_str().unwrap(),
        "-e",
        "OTHER=e",
        "cfg:1",
        "echo $FOO $OTHER",
    ]);
    assert_eq!(out, "fromfile e\n");
    // --entrypoint replaces ENTRYPOINT and drops CMD.
    assert_eq!(
        k.ok(&["run", "--rm", "--entrypoint", "echo", "cfg:1", "a", "b"]),
        "a b\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "--entrypoint", "pwd", "cfg:1"]),
        "/srv/app\n"
    );
    // PATH comes by default when the image sets none.
    let env = k.ok(&["run", "--rm", "--entrypoint", "env", "cfg:1"]);
    assert!(
        env.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{env}"
    );
    // HOME from the user's passwd entry, HOSTNAME the short ID, as docker.
    assert!(env.lines().any(|l| l == "HOME=/home/app"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("HOSTNAME=") && l.len() == 9 + 12),
        "{env}"
    );
    let env = k.ok(&[
        "run",
        "--rm",
        "-u",
        "0",
        "--hostname",
        "h1",
        "--entrypoint",
        "env",
        "cfg:1",
    ]);
    assert!(env.lines().any(|l| l == "HOME=/root"), "{env}");
    assert!(env.lines().any(|l| l == "HOSTNAME=h1"), "{env}");
    // A user by name, with a group (which is among its groups, as runc
    // sets them).
    assert_eq!(
        k.ok(&["run", "--rm", "-u", "nobody:nogroup", BB, "id"]),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    );
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let k = K::new(KILN);
    let host = k.tmp.path().join("vol");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let out = k.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        BB,
        "sh",
        "-c",
        "cat /data/in; echo from container > /data/out",
    ]);
    assert_eq!(out, "from host\n");
    assert_eq!(
        std::fs::read_to_string(host.join("out")).unwrap(),
        "from container\n"
    );

    let ro = format!("{}:/data:ro", host.display());
    let o = k.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        BB,
        "sh",
        "-c",
        "cat /data/in; echo x > /data/ro-write",
    ]);
    assert_ne!(o.status.code(), Some(0), "a write to a :ro mount worked");
    assert_eq!(stdout(&o), "from host\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!host.join("ro-write").exists());
}

#[test]
fn changes_stay_in_the_container_s_upper_dir() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "--name",
        "writer",
        BB,
        "sh",
        "-c",
        "echo mine > /newfile; rm /bin/ls",
    ]);
    let ps = k.ok(&["ps", "-a", "--no-trunc"]);
    let line = ps_line(&ps, "writer").expect("writer listed");
    let id = line.split_whitespace().next().unwrap().to_string();
    assert_eq!(id.len(), 64);
    let upper = k.containers().join(&id).join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("newfile")).unwrap(),
        "mine\n"
    );
    // The image is untouched: a new container neither sees the file nor
    // misses ls.
    let o = k.run(&[
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "test -e /newfile || ls /bin/ls",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "/bin/ls\n");
    for layer in std::fs::read_dir(k.root.join("layers")).unwrap().flatten() {
        assert!(!layer.path().join("newfile").exists());
        // (bin/ls is a symlink to /bin/busybox: look at the link itself,
        // not at whatever the host has at that path.)
        assert!(
            layer.path().join("bin/ls").symlink_metadata().is_ok()
                || !layer.path().join("bin").exists()
        );
    }
    // rm takes the folder, upper dir included.
    assert_eq!(k.ok(&["rm", "writer"]), "writer\n");
    assert!(!k.containers().join(&id).exists());
    let o = k.run(&["rm", "writer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No such container: writer"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn host_files_and_processes_stay_out_of_sight() {
    let k = K::new(KILN);
    let secret = k.tmp.path().join("secret-host-file");
    std::fs::write(&secret, "s").unwrap();
    let script = format!(
        "test -e {0} && echo LEAK$((1+1)); ls {1} 2>/dev/null && echo LEAK$((1+1)); cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
        secret.display(),
        k.root.display()
    );
    let out = k.ok(&["run", "--rm", BB, "sh", "-c", &script]);
    assert!(!out.contains("LEAK2"), "{out}");
    let mut lines = out.lines();
    // Its own pid namespace: pid 1 is the container's command.
    assert!(
        lines.next().unwrap_or("").starts_with("sh -c test -e"),
        "{out}"
    );
    let procs: usize = lines.next().unwrap_or("0").trim().parse().unwrap();
    assert!(procs <= 4, "the container sees {procs} processes: {out}");
    // --network none: loopback only.
    let links = k.ok(&["run", "--rm", "--network", "none", BB, "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
}

#[test]
fn stdin_is_passed_with_i_only() {
    let k = K::new(KILN);
    let mut c = k.cmd(&["run", "--rm", "-i", BB, "sh", "-c", "read a; echo got $a"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut sin = child.stdin.take().unwrap();
        sin.write_all(b"line\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "got line\n");
    // Without -i, stdin is empty.
    assert_eq!(
        k.ok(&["run", "--rm", BB, "sh", "-c", "cat; echo end"]),
        "end\n"
    );
}

#[test]
fn sigterm_to_kiln_reaches_the_container() {
    let k = K::new(KILN);
    let mut child = k
        .cmd(&[
            "run",
            "--rm",
            BB,
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got TERM\n");
    assert_eq!(child.wait().unwrap().code(), Some(9));
}

#[test]
fn detached_lifecycle_ps_logs_exec_stop_rm() {
    let k = K::new(KILN);
    let script = "echo started; echo warn >&2; echo inside > /marker; \
                  trap 'echo stopping; exit 7' TERM; while true; do sleep 0.1; done";
    let id = k.ok(&["run", "-d", "--name", "svc", BB, "sh", "-c", script]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let st = k.state(&id);
    assert_eq!(st["name"], "svc");
    assert_eq!(st["status"], "running");
    assert!(st["pid"].as_i64().unwrap() > 1);
    assert!(st["start_time"].as_u64().is_some());

    // ps shows it running; -q prints the short ID.
    let ps = k.ok(&["ps"]);
    let line = ps_line(&ps, "svc").expect("running container listed");
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(line.starts_with(&id[..12]), "{line}");
    assert!(line.contains(" Up "), "{line}");
    assert!(line.contains(BB), "{line}");
    assert_eq!(k.ok(&["ps", "-q"]).trim(), &id[..12]);

    // logs, by ID prefix too, streams kept apart.
    k.eventually("the log says started", || {
        k.ok(&["logs", &id[..8]]).contains("started")
    });
    let o = k.run(&["logs", "svc"]);
    assert_eq!(stdout(&o), "started\n");
    assert_eq!(stderr(&o), "warn\n");

    // exec joins its namespaces: its files, its pid 1.
    k.eventually("/marker is there", || {
        k.run(&["exec", "svc", "test", "-e", "/marker"])
            .status
            .success()
    });
    assert_eq!(k.ok(&["exec", "svc", "cat", "/marker"]), "inside\n");
    let cmdline = k.ok(&["exec", "svc", "cat", "/proc/1/cmdline"]);
    assert!(cmdline.starts_with("sh\0-c\0echo started;"), "{cmdline:?}");
    let ps_in = k.ok(&["exec", "svc", "ps", "-o", "pid,args"]);
    assert!(
        ps_in
            .lines()
            .any(|l| l.trim_start().starts_with("1 sh -c echo started")),
        "{ps_in}"
    );
    assert_eq!(
        k.ok(&[
            "exec",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "svc",
            "sh",
            "-c",
            "pwd; echo $X"
        ]),
        "/tmp\n1\n"
    );
    assert_eq!(
        k.run(&["exec", "svc", "sh", "-c", "exit 4"]).status.code(),
        Some(4)
    );
    assert_eq!(
        k.ok(&["exec", "-u", "nobody", "svc", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(k.ok(&["exec", "svc", "echo", "-u", "-w", "x"]), "-u -w x\n");
    let env = k.ok(&["exec", "svc", "env"]);
    assert!(env.lines().any(|l| l == "HOME=/root"), "{env}");
    assert!(
        env.lines().any(|l| l == format!("HOSTNAME={}", &id[..12])),
        "{env}"
    );
    // exec'd files land in the container, not in the image.
    k.ok(&["exec", "svc", "sh", "-c", "echo e > /from-exec"]);
    assert!(k.containers().join(&id).join("upper/from-exec").exists());

    // rm refuses a running container.
    let o = k.run(&["rm", "svc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("You cannot remove a running container"),
        "{}",
        stderr(&o)
    );

    // stop: SIGTERM, which the trap answers long before the timeout.
    assert_eq!(k.ok(&["stop", "-t", "60", "svc"]), "svc\n");
    let st = k.state(&id);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["exit_code"], 7);
    assert!(k.ok(&["logs", "svc"]).ends_with("stopping\n"));
    assert!(ps_line(&k.ok(&["ps"]), "svc").is_none());
    let line = ps_line(&k.ok(&["ps", "-a"]), "svc").expect("listed with -a");
    assert!(line.contains("Exited (7)"), "{line}");
    let o = k.run(&["exec", "svc", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"));

    // rm removes its folder.
    assert_eq!(k.ok(&["rm", "svc"]), "svc\n");
    assert!(!k.containers().join(&id).exists());
    assert!(k.ok(&["ps", "-a", "-q"]).is_empty());
}

#[test]
fn stop_kills_after_the_timeout_and_rm_f_kills() {
    let k = K::new(KILN);
    // pid 1 without a handler ignores SIGTERM, as in docker.
    let a = k.ok(&["run", "-d", BB, "sleep", "1000"]).trim().to_string();
    let b = k
        .ok(&["run", "-d", "--name", "b", BB, "sleep", "1000"])
        .trim()
        .to_string();
    // Names are unique.
    let o = k.run(&["run", "-d", "--name", "b", BB, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));

    k.ok(&["stop", "-t", "1", &a[..12]]);
    assert_eq!(k.state(&a)["exit_code"], 137);
    let name = k.state(&a)["name"].as_str().unwrap().to_string();
    let line = ps_line(&k.ok(&["ps", "-a"]), &name).expect("generated name listed");
    assert!(line.contains("Exited (137)"), "{line}");
    assert!(name.contains('_'), "{name}");

    // Newest first.
    assert_eq!(
        k.ok(&["ps", "-a", "-q"]),
        format!("{}\n{}\n", &b[..12], &a[..12])
    );
    assert_eq!(k.ok(&["ps", "-q"]), format!("{}\n", &b[..12]));
    assert_eq!(k.ok(&["rm", "-f", "b"]), "b\n");
    assert!(!k.containers().join(&b).exists());
    let pid = k.state(&a)["pid"].as_i64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            // A reused pid belongs to someone else now: not the container.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !stat.starts_with("sleep\x001000")
        }
    );
}

#[test]
fn detached_rm_removes_itself_and_logs_follow_ends_with_it() {
    let k = K::new(KILN);
    let id = k
        .ok(&[
            "run",
            "-d",
            "--name",
            "short",
            BB,
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        ])
        .trim()
        .to_string();
    // -f follows to the end of the container.
    let o = k.run(&["logs", "-f", "short"]);
    assert_eq!(stdout(&o), "line1\nline2\nline3\n");
    assert_eq!(k.ok(&["logs", "--tail", "1", "short"]), "line3\n");
    assert_eq!(k.state(&id)["exit_code"], 0);

    let id = k.ok(&["run", "-d", "--rm", BB, "true"]).trim().to_string();
    k.eventually(&format!("--rm -d removes {id}"), || {
        !k.containers().join(&id).exists()
    });
}

/// A running `docker-registry` on a free port of 127.0.0.1, killed on drop.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is not installed: run .ci/setup"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let addr = format!("127.0.0.1:{port}");
            let cfg = dir.path().join("config.yml");
            std::fs::write(
                &cfg,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                    dir.path().join("data").display()
                ),
            )
            .expect("registry config");
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry");
            for _ in 0..300 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return Registry {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_absent_image_is_pulled_first() {
    let reg = Registry::start();
    let src = K::new(KILN);
    let name = format!("{}/bb:run", reg.addr);
    src.ok(&["tag", BB, &name]);
    src.ok(&["push", "-q", &name]);

    let k = K::new(KILN);
    let o = k.run(&[
        "run",
        "--rm",
        &name,
        "sh",
        "-c",
        "echo pulled; cat /proc/1/cmdline",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("pulled\n"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("Unable to find image '{name}' locally")),
        "{}",
        stderr(&o)
    );
    assert!(
        k.ok(&["images"]).contains("/bb "),
        "the pulled image is kept"
    );
    // Present now: no second pull.
    let o = k.run(&["run", "--rm", &name, "true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        !stderr(&o).contains("Unable to find image"),
        "{}",
        stderr(&o)
    );
}

/// `kiln prune --all` drops the unpacked layers, except those a running
/// container's overlay stands on: the container goes on seeing its files.
#[test]
fn prune_all_keeps_the_layers_of_a_running_container() {
    let k = K::new(KILN);
    let id = k
        .ok(&["run", "-d", "--name", "busy", BB, "sleep", "1000"])
        .trim()
        .to_string();
    let lowers: Vec<String> = k.state(&id)["lowers"]
        .as_array()
        .expect("lowers")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    assert!(!lowers.is_empty());
    k.ok(&["prune", "--all"]);
    for l in &lowers {
        assert!(Path::new(l).join("bin/busybox").exists(), "{l} was pruned");
    }
    assert!(!k.ok(&["exec", "busy", "cat", "/etc/group"]).is_empty());
    k.ok(&["rm", "-f", "busy"]);
    // Nothing runs now: everything unpacked goes.
    k.ok(&["prune", "--all"]);
    for l in &lowers {
        assert!(!Path::new(l).exists(), "{l} outlived the prune");
    }
}

/// As docker: the image a container was made from keeps its last name
/// unless forced.
#[test]
fn rmi_of_an_image_a_container_uses_needs_force() {
    let k = K::new(KILN);
    k.ok(&["run", "--name", "user", BB, "true"]);
    let o = k.run(&["rmi", BB]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(must force) - container"),
        "{}",
        stderr(&o)
    );
    assert!(k.ok(&["images"]).contains("busybox"), "the name stays");
    // Another name for the same image can go.
    k.ok(&["tag", BB, "other:1"]);
    k.ok(&["rmi", "other:1"]);
    k.ok(&["rmi", "-f", BB]);
    assert!(!k.ok(&["images"]).contains("busybox"));
    k.ok(&["rm", "user"]);
}
