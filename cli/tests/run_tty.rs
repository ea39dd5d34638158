//! Terminals end to end, as root: `kiln run -it`, `run -dit` + `attach` +
//! detach keys, `exec -it`, window sizes, TTY logs, and docker's flag
//! errors. kiln runs on a pseudo-terminal this test opens and drives (it
//! is kiln's controlling terminal, as a user's would be).
#![allow(unsafe_code)] // the harness opens a pty and makes it kiln's terminal

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_testsupport::containers::Ctr as K;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// This file's helper on the shared test kiln.
trait PtyHelpers {
    fn on_pty(&self, args: &[&str], rows: u16, cols: u16) -> Pty;
}

impl PtyHelpers for K {
    /// kiln on a fresh pty of `rows` x `cols` (its controlling terminal).
    fn on_pty(&self, args: &[&str], rows: u16, cols: u16) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers for two fds and a valid winsize.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty");
        // SAFETY: fresh fds, owned here only.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut c = self.cmd(args);
        c.stdin(slave.try_clone().expect("dup"))
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
        let reader = std::fs::File::from(master.try_clone().expect("dup"));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Pty { master, child, out }
    }
}

struct Pty {
    master: OwnedFd,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    /// Waits (bounded) until the output holds `what`.
    fn expect(&self, what: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.text().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {what:?} in the terminal:\n{}", self.text());
    }

    fn type_(&self, bytes: &[u8]) {
        let mut f = std::fs::File::from(self.master.try_clone().expect("dup"));
        f.write_all(bytes).expect("type");
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a valid winsize.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }

    /// kiln's exit code (bounded wait).
    fn wait(mut self) -> (i32, String) {
        let end = Instant::now() + Duration::from_secs(30);
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

fn running(k: &K, name: &str) -> bool {
    k.ok(&["ps"]).lines().any(|l| l.ends_with(name))
}

#[test]
fn run_it_shell_has_a_terminal_of_the_callers_size() {
    let k = K::new(KILN);
    let p = k.on_pty(
        &["run", "-it", "--rm", "--network", "none", BB, "sh"],
        40,
        120,
    );
    p.expect("/ # ");
    p.type_(b"echo hi$((1+1)); tty; stty size; echo TERM=$TERM\n");
    p.expect("hi2");
    p.expect("/dev/pts/0");
    p.expect("40 120");
    p.expect("TERM=xterm");
    // Resized while attached: SIGWINCH reaches kiln, which passes the size.
    p.resize(50, 132);
    std::thread::sleep(Duration::from_millis(500));
    p.type_(b"stty size\n");
    p.expect("50 132");
    // Raw mode: a Ctrl-C is a byte for the container's terminal, which
    // interrupts the foreground command, not kiln.
    p.type_(b"sleep 30\n");
    std::thread::sleep(Duration::from_millis(500));
    p.type_(b"\x03");
    p.type_(b"echo after-int\n");
    p.expect("after-int");
    p.type_(b"exit 3\n");
    let (code, out) = p.wait();
    assert_eq!(code, 3, "exit code of the shell:\n{out}");
    // --rm: nothing left.
    assert_eq!(k.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn dit_attach_detach_exec_and_logs() {
    let k = K::new(KILN);
    let id = k.ok(&["run", "-dit", "--name", "c1", "--network", "none", BB, "sh"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the ID: {id}");
    // Detached with -it: the shell waits on its terminal, alive.
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(&k, "c1"), "{}", k.ok(&["ps", "-a"]));

    let p = k.on_pty(&["attach", "c1"], 24, 80);
    std::thread::sleep(Duration::from_millis(500));
    p.type_(b"echo one$((2+3))\n");
    p.expect("one5");
    p.type_(b"\x10\x11");
    let (code, out) = p.wait();
    assert_eq!(code, 1, "docker attach's detach: exit 1:\n{out}");
    assert!(out.contains("read escape sequence"), "{out}");
    assert!(running(&k, "c1"), "detaching leaves it running");

    // exec -it: a terminal of its own in the container's devpts.
    let p = k.on_pty(&["exec", "-it", "c1", "sh"], 30, 90);
    p.expect("# ");
    p.type_(b"tty; stty size; exit 5\n");
    p.expect("/dev/pts/1");
    p.expect("30 90");
    let (code, out) = p.wait();
    assert_eq!(code, 5, "{out}");

    // exec -d: in the background.
    k.ok(&["exec", "-d", "c1", "touch", "/tmp/from-d"]);
    let mut seen = false;
    for _ in 0..50 {
        if k.run(&["exec", "c1", "test", "-e", "/tmp/from-d"])
            .status
            .success()
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "exec -d ran");

    // Other detach keys; then attach again and end the shell.
    let p = k.on_pty(&["attach", "--detach-keys", "ctrl-a,x", "c1"], 24, 80);
    std::thread::sleep(Duration::from_millis(500));
    p.type_(b"\x01x");
    let (code, _) = p.wait();
    assert_eq!(code, 1);
    assert!(running(&k, "c1"));
    let p = k.on_pty(&["attach", "c1"], 24, 80);
    std::thread::sleep(Duration::from_millis(500));
    p.type_(b"exit 7\n");
    let (code, out) = p.wait();
    assert_eq!(code, 7, "attach ends with the container's code:\n{out}");

    // The log as docker keeps a TTY container's: all "stdout", with the
    // terminal's \r\n.
    let log = std::fs::read_to_string(k.root.join("containers").join(id).join("log")).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(entries.iter().all(|e| e["stream"] == "stdout"), "{log}");
    assert!(
        entries.iter().any(|e| e["log"] == "one5\r\n"),
        "echo's line with \\r\\n: {log}"
    );
    let logs = k.ok(&["logs", "c1"]);
    assert!(logs.contains("one5\r\n"), "{logs:?}");
    // Attaching to a stopped container is refused as docker does.
    let o = k.run(&["attach", "c1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot attach to a stopped container"));
}

#[test]
fn run_it_detach_keys_leave_it_running() {
    let k = K::new(KILN);
    let p = k.on_pty(
        &["run", "-it", "--name", "d1", "--network", "none", BB, "sh"],
        24,
        80,
    );
    p.expect("/ # ");
    p.type_(b"\x10\x11");
    let (code, out) = p.wait();
    assert_eq!(code, 0, "docker run -it: detaching is no error:\n{out}");
    assert!(running(&k, "d1"));
    k.ok(&["rm", "-f", "d1"]);
}

#[test]
fn flags_parse_as_docker() {
    let k = K::new(KILN);
    for args in [
        &["run", "--bogus", BB, "true"][..],
        &["exec", "--bogus", "c", "true"][..],
    ] {
        let o = k.run(args);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("unknown flag: --bogus\n"), "{err}");
        assert!(
            err.contains(&format!("See 'kiln {} --help'.", args[0])),
            "{err}"
        );
    }
    let o = k.run(&["run", "-itz", BB, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown shorthand flag: 'z' in -itz"));
    // -h is the hostname; flags after the image are the command's; -d/-t/-i
    // combine; --help still helps.
    let out = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-h",
        "box",
        BB,
        "hostname",
    ]);
    assert_eq!(out.trim(), "box");
    let out = k.ok(&["run", "--rm", "--network", "none", BB, "ls", "-d", "/etc"]);
    assert_eq!(out.trim(), "/etc");
    let id = k.ok(&["run", "-dit", "--network", "none", BB, "sh"]);
    let id = id.trim().to_string();
    let out = k.ok(&[
        "exec",
        "-e",
        "A=b",
        "-w",
        "/etc",
        "-u",
        "nobody",
        &id,
        "sh",
        "-c",
        "echo $A $(pwd) $(id -un)",
    ]);
    assert_eq!(out.trim(), "b /etc nobody");
    // -it without a terminal is refused, as docker.
    let o = k.run(&["exec", "-it", &id, "sh"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the input device is not a TTY"));
    k.ok(&["rm", "-f", &id]);
    let help = k.ok(&["run", "--help"]);
    assert!(help.contains("-h, --hostname"), "{help}");
    assert!(help.contains("-t, --tty"), "{help}");
}
