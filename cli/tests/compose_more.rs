//! `kiln compose` beyond the issue's application, as docker compose 2.40
//! does it: `ps`'s PORTS column, `top`, `exec` and `run` on a terminal.
//! Every kiln command runs inside a network namespace of the test's own
//! (the project's bridge, veths and rules live and die there; traffic goes
//! only to loopback and addresses inside it). The terminal tests drive
//! kiln on a pseudo-terminal the test opens, as cli/tests/run_tty.rs.
#![allow(unsafe_code)] // the harness opens a pty and makes it kiln's terminal

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_testsupport::busybox_fixture;
use kiln_testsupport::netns::TestNetns;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// kiln on a store of its own, inside a network namespace of its own, with
/// a project folder.
struct NetK {
    tmp: tempfile::TempDir,
    root: PathBuf,
    ns: TestNetns,
}

impl NetK {
    fn new(prefix: &str) -> NetK {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let k = NetK {
            tmp,
            root,
            ns: TestNetns::new(prefix),
        };
        let fixture = busybox_fixture();
        k.ok(&["load", "-q", "-i", fixture.to_str().expect("utf8")]);
        k
    }

    /// The project folder, with `compose.yaml` written.
    fn project(&self, compose: &str) -> PathBuf {
        let dir = self.tmp.path().join("proj");
        std::fs::create_dir_all(&dir).expect("project dir");
        std::fs::write(dir.join("compose.yaml"), compose).expect("compose.yaml");
        dir
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("proj")
    }

    fn in_ns(&self, program: &str) -> Command {
        let mut c = self.ns.cmd(program);
        let dir = if self.dir().exists() {
            self.dir()
        } else {
            PathBuf::from("/")
        };
        c.env("KILN_ROOT", &self.root)
            .env("NO_COLOR", "1")
            .current_dir(dir);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.in_ns(KILN).args(args).output().expect("kiln")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({:?}):\n{}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A shell command inside the namespace (kiln on this store); its
    /// status and stdout.
    fn sh(&self, script: &str) -> (bool, String) {
        let o = self.in_ns("sh").args(["-c", script]).output().expect("sh");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    /// kiln on a fresh 24x80 pty (its controlling terminal).
    fn on_pty(&self, args: &[&str]) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers for two fds and a valid winsize.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty");
        // SAFETY: fresh fds, owned here only.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut c = self.in_ns(KILN);
        c.args(args)
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave.try_clone().expect("dup"));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = c.spawn().expect("spawn kiln");
        drop(slave);
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(master.try_clone().expect("dup"));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            _master: master,
            child,
            out,
        }
    }
}

impl Drop for NetK {
    fn drop(&mut self) {
        if self.dir().join("compose.yaml").exists() {
            let _ = self.run(&["compose", "down", "-v", "-t", "1"]);
        }
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", "-v", id]);
        }
    }
}

struct Pty {
    _master: OwnedFd,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    /// kiln's exit code and what the terminal showed (bounded wait).
    fn wait(mut self) -> (i32, String) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(200));
                return (s.code().unwrap_or(-1), self.text());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("kiln did not end:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A shell loop retrying `cmd` for up to 20 s.
fn retry(cmd: &str) -> String {
    format!("for i in $(seq 1 80); do {cmd} && exit 0; sleep 0.25; done; exit 1")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ps_ports_top_and_terminals() {
    let k = NetK::new("kiln-compose-tty");
    k.project(
        r#"name: tt
services:
  web:
    image: busybox:1.35
    command: ["sh", "-c", "echo ok > /tmp/index.html; exec httpd -f -p 80 -h /tmp"]
    tty: true
    stdin_open: true
    ports:
      - "18081:80"
      - "127.0.0.1:18082:81"
"#,
    );
    k.ok(&["compose", "up", "-d"]);
    // tty and stdin_open reach the service's container; a one-off below
    // decides its own terminal (-T: none) without clashing with them.
    assert_eq!(
        k.ok(&[
            "inspect",
            "-f",
            "{{.Config.Tty}} {{.Config.OpenStdin}}",
            "tt-web-1"
        ]),
        "true true\n"
    );

    // ps: PORTS as docker compose prints them.
    let ps = k.ok(&["compose", "ps"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert!(
        lines[0].starts_with("NAME ") && lines[0].ends_with("PORTS"),
        "{ps}"
    );
    let web = lines
        .iter()
        .find(|l| l.starts_with("tt-web-1 "))
        .expect("tt-web-1 in ps");
    assert!(
        web.ends_with("0.0.0.0:18081->80/tcp, 127.0.0.1:18082->81/tcp"),
        "{ps}"
    );
    let (ok, body) = k.sh(&retry("wget -q -O- http://127.0.0.1:18081/index.html"));
    assert!(
        ok && body.trim() == "ok",
        "the published port answers: {body:?}"
    );

    // top: one table, SERVICE and # first.
    let top = k.ok(&["compose", "top"]);
    let tl: Vec<&str> = top.lines().collect();
    let head: Vec<&str> = tl[0].split_whitespace().collect();
    assert_eq!(
        head,
        ["SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{top}"
    );
    let row = tl
        .iter()
        .find(|l| l.ends_with("httpd -f -p 80 -h /tmp"))
        .unwrap_or_else(|| panic!("{top}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["web", "1", "root"], "{top}");
    let top_web = k.ok(&["compose", "top", "web"]);
    assert!(top_web.contains("httpd -f -p 80 -h /tmp"), "{top_web}");
    let o = k.run(&["compose", "top", "nosuch"]);
    assert!(!o.status.success());

    // exec: no terminal when stdout is not one (compose's default -T);
    // stdin goes to the command (compose's -i, the default).
    let o = k.run(&["compose", "exec", "web", "tty"]);
    assert_eq!(stdout(&o).trim(), "not a tty", "{o:?}");
    assert_eq!(o.status.code(), Some(1));
    let (ok, echoed) = k.sh(&format!(
        "echo hello-stdin | {KILN} compose exec -T web cat"
    ));
    assert!(ok && echoed.trim() == "hello-stdin", "{echoed:?}");

    // On a terminal: exec and run get one (-T: none).
    let (code, out) = k.on_pty(&["compose", "exec", "web", "tty"]).wait();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/dev/pts/"), "exec on a terminal: {out}");
    let (code, out) = k.on_pty(&["compose", "exec", "-T", "web", "tty"]).wait();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a tty"), "exec -T: {out}");
    let (code, out) = k
        .on_pty(&[
            "compose",
            "run",
            "--rm",
            "web",
            "sh",
            "-c",
            "tty; stty size; exit 3",
        ])
        .wait();
    assert_eq!(code, 3, "the one-off's exit code: {out}");
    assert!(
        out.contains("/dev/pts/0") && out.contains("24 80"),
        "run on a terminal: {out}"
    );
    let (code, out) = k
        .on_pty(&["compose", "run", "--rm", "-T", "web", "tty"])
        .wait();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a tty"), "run -T: {out}");
    // --rm: the one-offs are gone.
    let all = k.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.trim(), "tt-web-1", "{all}");

    k.ok(&["compose", "down", "-t", "1"]);
}

/// A service serving its own name on port 80.
fn server(name: &str, networks: &str) -> String {
    format!(
        "  {name}:\n    image: busybox:1.35\n    \
         command: [\"sh\", \"-c\", \"echo {name} > /tmp/index.html; exec httpd -f -p 80 -h /tmp\"]\n    \
         networks:{networks}\n"
    )
}

#[test]
fn services_on_several_networks_and_external_ones() {
    let k = NetK::new("kiln-compose-nets");
    let mut yaml = String::from("name: mn\nservices:\n");
    yaml.push_str(&server(
        "api",
        "\n      front:\n        aliases: [api-front]\n      \
         back:\n        ipv4_address: 10.77.1.50\n        aliases: [api-back]",
    ));
    yaml.push_str(&server("web", " [front]"));
    yaml.push_str(&server("db", " [back]"));
    yaml.push_str(&server("ext", " [shared]"));
    yaml.push_str(&server("ext2", " [shared]"));
    yaml.push_str(
        "networks:\n  front: {}\n  back:\n    ipam:\n      config:\n        \
         - subnet: 10.77.1.0/24\n  shared:\n    external: true\n    name: preexisting\n",
    );
    k.project(&yaml);

    // An external network must exist: docker compose's error, nothing made.
    let o = k.run(&["compose", "up", "-d"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("network preexisting declared as external, but could not be found"),
        "{err}"
    );
    assert_eq!(k.ok(&["ps", "-aq"]).trim(), "", "no container made");
    k.ok(&["network", "create", "preexisting"]);
    k.ok(&["compose", "up", "-d"]);

    let get = |from: &str, url: &str| -> (bool, String) {
        k.sh(&retry(&format!(
            "{KILN} compose exec -T {from} wget -q -O- http://{url}/index.html"
        )))
    };
    // api is on both networks: reachable by name and alias on each, with
    // its fixed address on back.
    for (from, url) in [
        ("web", "api"),
        ("web", "api-front"),
        ("db", "api"),
        ("db", "api-back"),
        ("db", "10.77.1.50"),
        ("api", "web"),
        ("api", "db"),
    ] {
        let (ok, body) = get(from, url);
        let want = if url.starts_with("10.") {
            "api"
        } else {
            url.split('-').next().unwrap_or(url)
        };
        assert!(ok && body.trim() == want, "{from} → {url}: {body:?}");
    }
    let addrs = k.ok(&["compose", "exec", "-T", "api", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains("10.77.1.50/24"), "{addrs}");
    assert_eq!(
        addrs.lines().filter(|l| l.contains(" eth")).count(),
        2,
        "{addrs}"
    );
    // web and db share no network.
    let o = k.run(&[
        "compose",
        "exec",
        "-T",
        "web",
        "wget",
        "-q",
        "-O-",
        "http://db/index.html",
    ]);
    assert!(!o.status.success(), "web must not reach db: {o:?}");
    // The external network is used as it is, and kept by down.
    let (ok, body) = get("ext2", "ext");
    assert!(ok && body.trim() == "ext", "{body:?}");
    k.ok(&["compose", "down", "-t", "1"]);
    let nets = k.ok(&["network", "ls"]);
    assert!(nets.contains(" preexisting "), "{nets}");
    assert!(!nets.contains("mn_"), "{nets}");

    // External volumes too.
    let dir = k.dir();
    std::fs::write(
        dir.join("vol.yaml"),
        "name: mv\nservices:\n  v:\n    image: busybox:1.35\n    command: [\"sleep\", \"300\"]\n    \
         network_mode: none\n    volumes: [\"data:/data\"]\n\
         volumes:\n  data:\n    external: true\n    name: kept-data\n",
    )
    .expect("vol.yaml");
    let o = k.run(&["compose", "-f", "vol.yaml", "up", "-d"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("external volume \"kept-data\" not found"),
        "{err}"
    );
    k.ok(&["volume", "create", "kept-data"]);
    k.ok(&["compose", "-f", "vol.yaml", "up", "-d"]);
    k.ok(&["compose", "-f", "vol.yaml", "down", "-v", "-t", "1"]);
    let vols = k.ok(&["volume", "ls", "-q"]);
    assert!(
        vols.lines().any(|l| l == "kept-data"),
        "down -v keeps an external volume: {vols}"
    );
}

#[test]
fn up_edge_cases_as_docker_compose() {
    let k = NetK::new("kiln-compose-up");
    let base = r#"name: ue
services:
  init:
    image: busybox:1.35
    network_mode: none
    command: ["sh", "-c", "sleep 1; echo ready > /shared/flag"]
    volumes: ["shared:/shared"]
  web:
    image: busybox:1.35
    network_mode: none
    command: ["sh", "-c", "cat /shared/flag && exec sleep 300"]
    volumes: ["shared:/shared"]
    deploy:
      replicas: 2
    depends_on:
      init:
        condition: service_completed_successfully
"#;
    k.project(&format!(
        "{base}  old:\n    image: busybox:1.35\n    network_mode: none\n    command: [\"sleep\", \"300\"]\n\
         volumes:\n  shared: {{}}\n"
    ));
    // deploy.replicas 2: web-1 and web-2, started once init completed.
    let o = k.run(&["compose", "up", "-d"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let pos = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{err}"))
    };
    assert!(
        pos(" Container ue-init-1  Exited") < pos(" Container ue-web-1  Started"),
        "{err}"
    );
    let ps = k.ok(&["compose", "ps", "--services"]);
    assert_eq!(ps.lines().filter(|l| *l == "web").count(), 2, "{ps}");
    let all = k.ok(&["ps", "-a"]);
    for n in ["ue-web-1", "ue-web-2", "ue-init-1", "ue-old-1"] {
        assert!(all.contains(n), "{n} in {all}");
    }
    for n in ["ue-web-1", "ue-web-2"] {
        let logs = k.ok(&["logs", n]);
        assert_eq!(logs.trim(), "ready", "{n} started after init completed");
    }

    // A service gone from the file: its container is an orphan, kept with
    // compose's warning, removed with --remove-orphans.
    k.project(&format!("{base}volumes:\n  shared: {{}}\n"));
    let o = k.run(&["compose", "up", "-d"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("Found orphan containers ([ue-old-1]) for this project"),
        "{err}"
    );
    assert!(k.ok(&["ps", "-a"]).contains("ue-old-1"));
    let o = k.run(&["compose", "up", "-d", "--remove-orphans"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        !k.ok(&["ps", "-a"]).contains("ue-old-1"),
        "the orphan is gone"
    );
    k.ok(&["compose", "down", "-v", "-t", "1"]);

    // A dependency that fails: up fails as docker compose does.
    k.project(
        r#"name: uf
services:
  init:
    image: busybox:1.35
    network_mode: none
    command: ["sh", "-c", "exit 4"]
  web:
    image: busybox:1.35
    network_mode: none
    command: ["sleep", "300"]
    depends_on:
      init:
        condition: service_completed_successfully
"#,
    );
    let o = k.run(&["compose", "up", "-d"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("service \"init\" didn't complete successfully: exit 4"),
        "{err}"
    );
    assert!(!k.ok(&["ps", "-a"]).contains("uf-web-1"), "web never made");
    k.ok(&["compose", "down", "-t", "1"]);

    // --abort-on-container-exit: the first container to end stops the
    // others; up's exit code is its.
    k.project(
        r#"name: ua
services:
  quick:
    image: busybox:1.35
    network_mode: none
    command: ["sh", "-c", "sleep 1; echo bye; exit 7"]
  slow:
    image: busybox:1.35
    network_mode: none
    command: ["sleep", "300"]
"#,
    );
    let started = Instant::now();
    let o = k.run(&["compose", "up", "--abort-on-container-exit"]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "slow was stopped"
    );
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("quick-1 ") && l.ends_with("| bye")),
        "{o:?}"
    );
    let ps = k.ok(&["compose", "ps"]);
    assert_eq!(ps.lines().count(), 1, "nothing runs on: {ps}");
    k.ok(&["compose", "down", "-t", "1"]);

    // --wait: an unhealthy service fails it.
    k.project(
        r#"name: uw
services:
  sick:
    image: busybox:1.35
    network_mode: none
    command: ["sleep", "300"]
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      timeout: 1s
      retries: 1
"#,
    );
    let o = k.run(&["compose", "up", "-d", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("uw-sick-1 is unhealthy"), "{err}");
    k.ok(&["compose", "down", "-t", "1"]);

    // down --rmi local: the images compose built for services without
    // `image:` go; named ones stay.
    let dir = k.dir();
    std::fs::create_dir_all(dir.join("b")).expect("b");
    std::fs::write(
        dir.join("b/Dockerfile"),
        "FROM busybox:1.35\nRUN echo built > /b\n",
    )
    .expect("df");
    k.project(
        r#"name: ur
services:
  local:
    build: ./b
    network_mode: none
    command: ["sleep", "300"]
  named:
    build: ./b
    image: ur-named:v1
    network_mode: none
    command: ["sleep", "300"]
"#,
    );
    k.ok(&["compose", "up", "-d", "--build"]);
    let images = k.ok(&["images"]);
    assert!(
        images.contains("ur-local") && images.contains("ur-named"),
        "{images}"
    );
    let o = k.run(&["compose", "down", "--rmi", "local", "-t", "1"]);
    assert!(o.status.success(), "{o:?}");
    let images = k.ok(&["images"]);
    assert!(!images.contains("ur-local"), "{images}");
    assert!(images.contains("ur-named"), "{images}");
    assert_eq!(k.ok(&["ps", "-aq"]).trim(), "");
}

/// Service keys beyond the issue's list reach the containers as `kiln run`
/// flags: container_name, network_mode/ipc `service:`, volumes_from,
/// capabilities, ulimits, tmpfs, mem_limit, pids_limit, expose; the
/// dependencies they imply order the start; a key kiln does not carry out
/// is named in a warning, not dropped unsaid.
#[test]
fn service_runtime_keys_reach_the_containers() {
    let k = NetK::new("kiln-compose-keys");
    k.project(
        r#"name: rk
services:
  web:
    image: busybox:1.35
    stop_grace_period: 1s
    network_mode: "service:db"
    ipc: "service:db"
    volumes_from: ["db:ro"]
    cap_drop: [CHOWN]
    ulimits:
      nofile: {soft: 1234, hard: 2345}
    tmpfs: /scratch
    mem_limit: 64m
    pids_limit: 50
    shm_size: 96m
    sysctls: {kernel.shmmni: 2345}
    group_add: [daemon, "4321"]
    oom_score_adj: 100
    command: ["sh", "-c", "cat /data/f; ulimit -n; ulimit -Hn; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; chown 1 /scratch || echo no-chown; grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'; cat /proc/sys/kernel/shmmni; id -G; exec sleep 300"]
  db:
    image: busybox:1.35
    container_name: rk-database
    stop_grace_period: 1s
    network_mode: none
    volumes: ["/data"]
    command: ["sh", "-c", "echo from-db > /data/f; exec sleep 300"]
  api:
    image: busybox:1.35
    expose: ["8080"]
    stop_grace_period: 1s
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: 2}
    command: ["sleep", "300"]
"#,
    );
    let o = k.run(&["compose", "up", "-d"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("service web: `oom_score_adj` is not supported by kiln compose; ignored"),
        "{err}"
    );
    // db (named by container_name) starts before web, which needs it.
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{err}"))
    };
    assert!(
        at(" Container rk-database  Started") < at(" Container rk-web-1  Creat"),
        "{err}"
    );
    let mut logs = String::new();
    for _ in 0..50 {
        logs = k.ok(&["logs", "rk-web-1"]);
        if logs.lines().count() >= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        logs, "from-db\n1234\n2345\ntmpfs\nno-chown\nsize=98304k\n2345\n0 1 4321\n",
        "{logs}"
    );
    // volumes_from db:ro: web sees db's volume read-only.
    let o = k.run(&["exec", "rk-web-1", "touch", "/data/x"]);
    assert!(!o.status.success(), "/data is read-only in web");
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "rk-web-1"])).expect("inspect json");
    let hc = &inspect[0]["HostConfig"];
    assert_eq!(hc["Memory"], 67108864, "{hc}");
    assert_eq!(hc["PidsLimit"], 50, "{hc}");
    // As docker, the container named is kept by its ID.
    let db = k.ok(&["inspect", "-f", "{{.Id}}", "rk-database"]);
    let db = format!("container:{}", db.trim());
    assert_eq!(hc["NetworkMode"], db.as_str(), "{hc}");
    assert_eq!(hc["IpcMode"], db.as_str(), "{hc}");
    assert_eq!(hc["CapDrop"], serde_json::json!(["CAP_CHOWN"]), "{hc}");
    let api: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "rk-api-1"])).expect("inspect json");
    assert_eq!(
        api[0]["HostConfig"]["LogConfig"],
        serde_json::json!({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}})
    );
    assert!(
        api[0]["Config"]["ExposedPorts"].get("8080/tcp").is_some(),
        "{}",
        api[0]["Config"]
    );
    // docker refuses --expose (and links) with another container's network.
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "container:rk-database",
        "--expose",
        "80",
        "busybox:1.35",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("conflicting options: port exposing and the container type network mode"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    k.ok(&["compose", "down", "-v"]);
    let left = k.ok(&["ps", "-a", "-q"]);
    assert_eq!(left, "", "nothing left after down");
}
