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
        c.env("KILN_ROOT", &self.root)
            .env("NO_COLOR", "1")
            .current_dir(
                self.dir()
                    .exists()
                    .then(|| self.dir())
                    .unwrap_or("/".into()),
            );
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
    ports:
      - "18081:80"
      - "127.0.0.1:18082:81"
"#,
    );
    k.ok(&["compose", "up", "-d"]);

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
