//! Issue 13's lifecycle part, third round, through the real `kiln` binary
//! as root on the busybox fixture: `--sig-proxy` (run, run -t, attach),
//! `kiln attach` to a container without a terminal, `logs -f --until`,
//! `commit --pause`, `kiln import URL` and `cp` between containers.
//! Every container uses `--network none`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_testsupport::containers::{err, out, Ctr as K};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// A spawned kiln whose stdout and stderr are collected as they come.
struct Live {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = r.read(&mut b) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&b[..n]);
        }
    });
    buf
}

impl Live {
    /// Spawns kiln with `args`; `input` (if any) is written to its stdin,
    /// which is then closed; without it stdin is /dev/null.
    fn spawn(k: &K, args: &[&str], input: Option<&[u8]>) -> Live {
        let mut c = k.cmd(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("spawn kiln");
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(bytes).expect("write stdin");
        }
        let out = collect(child.stdout.take().expect("stdout"));
        let err = collect(child.stderr.take().expect("stderr"));
        Live { child, out, err }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("lock")).into_owned()
    }

    /// Waits (bounded) until stdout holds `what`.
    fn expect_out(&self, what: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.stdout().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "never saw {what:?} on stdout: {:?} / {:?}",
            self.stdout(),
            self.stderr()
        );
    }

    /// Sends `sig` (a `kill -s` name) to kiln itself.
    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -s {sig}");
    }

    /// Waits (bounded) for kiln to end.
    fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the readers take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!(
            "kiln did not end: {:?} / {:?}",
            self.stdout(),
            self.stderr()
        );
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kiln run -d --network none --name NAME FLAGS… busybox sh -c SCRIPT`:
/// the container's ID.
fn detached_sh(k: &K, name: &str, flags: &[&str], script: &str) -> String {
    let head = ["run", "-d", "--network", "none", "--name", name];
    let args = [&head[..], flags, &[BB, "sh", "-c", script][..]].concat();
    k.ok(&args).trim().to_string()
}

/// Once `live` printed `ready`: `sig` to kiln reaches the container,
/// whose trap says `got-SIG` and exits with `code`, kiln's exit code.
fn proxied(live: &mut Live, ready: &str, sig: &str, code: i32) {
    live.expect_out(ready);
    live.signal(sig);
    let st = live.wait();
    assert_eq!(
        st.code(),
        Some(code),
        "{:?} {:?}",
        live.stdout(),
        live.stderr()
    );
    assert!(
        live.stdout().contains(&format!("got-{sig}")),
        "{}",
        live.stdout()
    );
}

/// A shell script for pid 1 that prints `ready`, then exits with `code`
/// (printing `got-SIG`) when it gets `sig`.
fn trapping(sig: &str, code: i32) -> String {
    format!("trap 'echo got-{sig}; exit {code}' {sig}; echo ready; while true; do sleep 0.1; done")
}

#[test]
fn sig_proxy_forwards_signals_to_the_container_unless_turned_off() {
    use std::os::unix::process::ExitStatusExt;
    let k = K::new(KILN);
    // run in the foreground (no terminal): SIGTERM to kiln reaches pid 1,
    // whose exit code is kiln's.
    let script = trapping("TERM", 9);
    let mut run = Live::spawn(
        &k,
        &[
            "run",
            "--network",
            "none",
            "--name",
            "fg",
            BB,
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    proxied(&mut run, "ready", "TERM", 9);
    assert!(
        k.status("fg").starts_with("Exited (9)"),
        "{}",
        k.status("fg")
    );

    // --sig-proxy=false: kiln itself is ended by the signal; the container
    // runs on.
    let mut run = Live::spawn(
        &k,
        &[
            "run",
            "--sig-proxy=false",
            "--network",
            "none",
            "--name",
            "noproxy",
            BB,
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    run.expect_out("ready");
    run.signal("TERM");
    let st = run.wait();
    assert_eq!(st.signal(), Some(15), "kiln ended by SIGTERM: {st:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        k.status("noproxy").starts_with("Up"),
        "{}",
        k.status("noproxy")
    );
    assert!(!run.stdout().contains("got-TERM"));

    // run -t: the signals are proxied too (docker's `run` proxies with a
    // terminal as well).
    let script = trapping("USR1", 5);
    let mut run = Live::spawn(
        &k,
        &[
            "run",
            "-t",
            "--network",
            "none",
            "--name",
            "tty",
            BB,
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    proxied(&mut run, "ready", "USR1", 5);
    k.ok(&["rm", "-f", "fg", "noproxy", "tty"]);
}

#[test]
fn attach_to_a_container_without_a_terminal() {
    let k = K::new(KILN);
    // Output live, stdout and stderr apart; signals proxied; the exit code.
    let script = "trap 'echo got-USR1; exit 7' USR1; \
                  while true; do echo tick; echo tock >&2; sleep 0.2; done";
    detached_sh(&k, "plain", &[], script);
    let mut a = Live::spawn(&k, &["attach", "plain"], None);
    a.expect_out("tick");
    let end = Instant::now() + Duration::from_secs(10);
    while !a.stderr().contains("tock") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        a.stderr().contains("tock"),
        "stderr apart: {:?}",
        a.stderr()
    );
    assert!(!a.stdout().contains("tock"), "{:?}", a.stdout());
    proxied(&mut a, "tick", "USR1", 7);
    assert_eq!(k.state("plain")["exit_code"], 7);

    // --sig-proxy=false: the signal ends kiln, not the container.
    detached_sh(&k, "plain2", &[], script);
    let mut a = Live::spawn(&k, &["attach", "--sig-proxy=false", "plain2"], None);
    a.expect_out("tick");
    a.signal("USR1");
    let st = a.wait();
    assert_ne!(st.code(), Some(7));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        k.status("plain2").starts_with("Up"),
        "{}",
        k.status("plain2")
    );

    // -i: the attached stdin reaches the container's; its end does not
    // close the container's (another attach could type more).
    detached_sh(
        &k,
        "inp",
        &["-i"],
        "read a; echo got:$a; read b; echo second:$b >&2; exit 3",
    );
    let mut a = Live::spawn(&k, &["attach", "inp"], Some(b"hello\nworld\n"));
    let st = a.wait();
    assert_eq!(st.code(), Some(3), "{:?} {:?}", a.stdout(), a.stderr());
    assert_eq!(a.stdout(), "got:hello\n");
    assert_eq!(a.stderr(), "second:world\n");
    assert_eq!(k.ok(&["logs", "inp"]), "got:hello\n");

    // --no-stdin: nothing typed goes in; a later attach's input does.
    detached_sh(&k, "ns", &["-i"], "read a; echo got:$a; exit 4");
    let mut quiet = Live::spawn(&k, &["attach", "--no-stdin", "ns"], Some(b"nope\n"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(quiet.child.try_wait().expect("try_wait").is_none());
    let mut typed = Live::spawn(&k, &["attach", "ns"], Some(b"yes\n"));
    assert_eq!(typed.wait().code(), Some(4), "{}", typed.stderr());
    assert_eq!(quiet.wait().code(), Some(4), "{}", quiet.stderr());
    assert_eq!(quiet.stdout(), "got:yes\n");
    assert_eq!(typed.stdout(), "got:yes\n");

    // A stopped container: docker's refusal.
    let o = k.run(&["attach", "inp"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "You cannot attach to a stopped container, start it first\n"
    );
    k.ok(&["rm", "-f", "plain", "plain2", "inp", "ns"]);
}

#[test]
fn logs_follow_stops_at_until() {
    let k = K::new(KILN);
    detached_sh(
        &k,
        "chatty",
        &[],
        "while true; do echo line; sleep 0.2; done",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let until = now + 3;
    let began = Instant::now();
    let mut f = Live::spawn(
        &k,
        &["logs", "-f", "-t", "--until", &until.to_string(), "chatty"],
        None,
    );
    let st = f.wait();
    assert!(st.success(), "{}", f.stderr());
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "stopped at --until"
    );
    let text = f.stdout();
    assert!(text.lines().count() >= 3, "{text}");
    let limit = jiff::Timestamp::from_second(until as i64).expect("ts");
    for l in text.lines() {
        let (ts, rest) = l.split_once(' ').expect("timestamped");
        assert_eq!(rest, "line");
        let t: jiff::Timestamp = ts.parse().expect("rfc3339");
        assert!(t <= limit, "{t} after {limit}");
    }
    assert!(
        k.status("chatty").starts_with("Up"),
        "the container runs on"
    );
    // An --until in the past: what there is, then the end.
    let o = k.run(&["logs", "-f", "--until", "1s", "chatty"]);
    assert!(o.status.success());
    assert!(out(&o).starts_with("line\n"));
    k.ok(&["rm", "-f", "chatty"]);
}

/// The freezer state of the container's cgroup (v1 `freezer.state`, v2
/// `cgroup.freeze`), if it has one.
fn frozen(k: &K, name: &str) -> Option<bool> {
    let dirs = k.state(name)["cgroups"].as_array().cloned()?;
    for d in dirs.iter().filter_map(|d| d.as_str()) {
        let d = std::path::Path::new(d);
        if let Ok(s) = std::fs::read_to_string(d.join("freezer.state")) {
            return Some(s.trim() != "THAWED");
        }
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.freeze")) {
            return Some(s.trim() == "1");
        }
    }
    None
}

/// Runs `kiln commit ARGS` while watching the container `name`: whether
/// it was ever seen paused (recorded, or its cgroup frozen) meanwhile.
fn commit_watching(k: &K, name: &str, args: &[&str]) -> (bool, String) {
    let mut c = Live::spawn(k, args, None);
    let mut seen = false;
    loop {
        let done = c.child.try_wait().expect("try_wait").is_some();
        let st = k.state(name);
        seen |= st["paused"] == true || frozen(k, name) == Some(true);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let st = c.wait();
    assert!(st.success(), "{}", c.stderr());
    (seen, c.stdout())
}

#[test]
fn commit_pauses_the_container_while_reading_its_changes() {
    let k = K::new(KILN);
    detached_sh(
        &k,
        "busy",
        &[],
        "dd if=/dev/urandom of=/big bs=1M count=48 2>/dev/null; echo ready; \
         while true; do date > /tmp/now; sleep 0.05; done",
    );
    k.eventually("the big file is written", || {
        k.ok(&["logs", "busy"]).contains("ready")
    });
    let (seen, id) = commit_watching(&k, "busy", &["commit", "busy", "snap:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(seen, "frozen while committing");
    assert_eq!(k.state("busy")["paused"], false);
    assert_ne!(frozen(&k, "busy"), Some(true), "thawed after");
    assert!(k.status("busy").starts_with("Up"), "{}", k.status("busy"));
    assert!(!k.status("busy").contains("Paused"));

    let (seen, _) = commit_watching(&k, "busy", &["commit", "--pause=false", "busy", "snap:2"]);
    assert!(!seen, "--pause=false leaves it running");

    // A container the user paused stays paused.
    k.ok(&["pause", "busy"]);
    k.ok(&["commit", "busy", "snap:3"]);
    assert!(
        k.status("busy").contains("(Paused)"),
        "{}",
        k.status("busy")
    );
    assert!(frozen(&k, "busy").unwrap_or(true), "still frozen");
    k.ok(&["unpause", "busy"]);

    let size = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "snap:1",
        "sh",
        "-c",
        "wc -c < /big",
    ]);
    assert_eq!(size.trim(), (48 << 20).to_string());
    k.ok(&["rm", "-f", "busy"]);
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, ended on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let s = Server { child, port };
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "http.server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn import_from_a_url_and_cp_between_containers() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "src",
        BB,
        "sh",
        "-c",
        "echo from-the-web > /marker",
    ]);
    let served = k.tmp.path().join("www");
    std::fs::create_dir_all(&served).expect("mkdir");
    let tar = served.join("rootfs.tar");
    k.ok(&["export", "-o", tar.to_str().expect("utf8"), "src"]);
    let server = Server::start(&served);
    let url = format!("http://127.0.0.1:{}/rootfs.tar", server.port);
    let id = k.ok(&["import", "-c", "CMD [\"cat\", \"/marker\"]", &url, "web:1"]);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    assert_eq!(
        k.ok(&["run", "--rm", "--network", "none", "web:1"]),
        "from-the-web\n"
    );
    // A missing file: docker's words, exit 1.
    let missing = format!("http://127.0.0.1:{}/nope.tar", server.port);
    let o = k.run(&["import", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).starts_with(&format!(
            "Error response from daemon: failed to GET {missing} with status 404 Not Found"
        )),
        "{}",
        err(&o)
    );
    drop(server);

    // cp between two containers: docker refuses, word for word.
    k.ok(&["create", "--network", "none", "--name", "other", BB]);
    let o = k.run(&["cp", "src:/marker", "other:/tmp/"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err(&o), "copying between containers is not supported\n");
    assert_eq!(out(&o), "");
    k.ok(&["rm", "-f", "src", "other"]);
}

/// The CapEff line of a process's status, as hex.
fn cap_eff(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no CapEff in {text}"))
}

#[test]
fn flags_audited_against_docker() {
    let k = K::new(KILN);
    detached_sh(&k, "a", &[], "sleep 1000");
    detached_sh(
        &k,
        "b",
        &["--cap-add", "NET_ADMIN"],
        "echo data > /written; sleep 1000",
    );
    // exec --privileged: every capability for the process; an exec gets
    // the container's set otherwise (--cap-add included).
    let status = ["sh", "-c", "cat /proc/self/status"];
    let plain = k.ok(&[&["exec", "a"][..], &status[..]].concat());
    assert_eq!(cap_eff(&plain), "00000000a80425fb", "docker's default set");
    let all = k.ok(&[&["exec", "--privileged", "a"][..], &status[..]].concat());
    // Every capability this machine lets kiln have (its bounding set).
    let mine = std::fs::read_to_string("/proc/self/status").expect("status");
    let bounding = mine
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| v.trim().to_string())
        .expect("CapBnd");
    assert_eq!(cap_eff(&all), bounding);
    let added = k.ok(&[&["exec", "b"][..], &status[..]].concat());
    assert_eq!(cap_eff(&added), "00000000a80435fb", "NET_ADMIN added");

    // exec --env-file, then -e over it.
    let env_file = k.tmp.path().join("env");
    std::fs::write(&env_file, "A=1\n# a comment\n\nB=2\n").expect("write");
    let env = env_file.to_str().expect("utf8");
    assert_eq!(
        k.ok(&[
            "exec",
            "--env-file",
            env,
            "-e",
            "B=3",
            "a",
            "sh",
            "-c",
            "echo $A$B"
        ]),
        "13\n"
    );

    // ps -l, -n, -s.
    k.ok(&["create", "--network", "none", "--name", "c", BB]);
    assert_eq!(k.ok(&["ps", "-l", "--format", "{{.Names}}"]), "c\n");
    assert_eq!(k.ok(&["ps", "-n", "2", "--format", "{{.Names}}"]), "c\nb\n");
    let sized = k.ok(&["ps", "-s", "--filter", "name=b"]);
    let header = sized.lines().next().unwrap_or("");
    assert!(header.ends_with("SIZE"), "{sized}");
    assert!(sized.contains("B (virtual "), "{sized}");

    // inspect -s: SizeRw (its own changes) and SizeRootFs (with the
    // image's); absent without -s.
    let doc: serde_json::Value =
        serde_json::from_str(&k.ok(&["container", "inspect", "-s", "b"])).expect("json");
    let rw = doc[0]["SizeRw"].as_u64().expect("SizeRw");
    let rootfs = doc[0]["SizeRootFs"].as_u64().expect("SizeRootFs");
    assert!(rw >= 5 && rootfs > rw + 500_000, "{rw} {rootfs}");
    let doc: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "b"])).expect("json");
    assert!(doc[0].get("SizeRw").is_none());

    // logs --details: the (empty) attributes and a space.
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "said",
        BB,
        "echo",
        "hi",
    ]);
    assert_eq!(k.ok(&["logs", "--details", "said"]), " hi\n");
    let t = k.ok(&["logs", "--details", "-t", "said"]);
    assert!(t.ends_with("Z  hi\n"), "{t:?}");

    // start --detach-keys is checked as docker's.
    let o = k.run(&["start", "--detach-keys", "ctrl-1", "c"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains("Invalid detach keys (ctrl-1)"),
        "{}",
        err(&o)
    );

    // run/create --pull, --cidfile, --label-file.
    let o = k.run(&["run", "--pull", "never", "--network", "none", "nope:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(err(&o), "kiln: No such image: nope:1\n");
    let o = k.run(&["run", "--pull", "sometimes", "--network", "none", BB]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains(
            "invalid pull option: 'sometimes': must be one of \"always\", \"missing\" or \"never\""
        ),
        "{}",
        err(&o)
    );
    let cid = k.tmp.path().join("cid");
    let cidp = cid.to_str().expect("utf8");
    let labels = k.tmp.path().join("labels");
    std::fs::write(&labels, "one=1\n# no\ntwo\n").expect("write");
    let id = k.ok(&[
        "create",
        "--pull",
        "never",
        "--cidfile",
        cidp,
        "--label-file",
        labels.to_str().expect("utf8"),
        "--label",
        "one=uno",
        "--network",
        "none",
        "--name",
        "labelled",
        BB,
    ]);
    assert_eq!(std::fs::read_to_string(&cid).expect("cidfile"), id.trim());
    let got = k.ok(&["inspect", "-f", "{{json .Config.Labels}}", "labelled"]);
    assert_eq!(got.trim(), r#"{"one":"uno","two":""}"#);
    let o = k.run(&["create", "--cidfile", cidp, "--network", "none", BB]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains(
            "container ID file found, make sure the other container isn't running or delete"
        ),
        "{}",
        err(&o)
    );
    k.ok(&["rm", "-f", "a", "b", "c", "said", "labelled"]);
}

/// `--log-opt max-size/max-file`: the log turns over into `log.1`, `log.2`
/// and keeps that many files under the size; `logs -f` started at once
/// reads every line across the turnovers, in order; plain `logs` gives
/// what the kept files hold, ending with the last line. `--log-driver
/// none` keeps nothing and `logs` says so; bad drivers and options are
/// refused with docker's words.
#[test]
fn log_options_rotate_and_follow_across_files() {
    let k = K::new(KILN);
    let id = detached_sh(
        &k,
        "rot",
        &["--log-opt", "max-size=1k", "--log-opt", "max-file=3"],
        "i=0; while [ $i -lt 150 ]; do echo line $i; i=$((i+1)); usleep 20000; done",
    );
    let mut f = Live::spawn(&k, &["logs", "-f", "rot"], None);
    let st = f.wait();
    assert!(st.success(), "{}", f.stderr());
    let want: Vec<String> = (0..150).map(|i| format!("line {i}")).collect();
    let followed: Vec<String> = f.stdout().lines().map(str::to_string).collect();
    assert_eq!(followed, want, "logs -f across the turnovers");

    let dir = k.root.join("containers").join(&id);
    for name in ["log", "log.1", "log.2"] {
        let len = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        assert!(len > 0 && len <= 1024, "{name}: {len} bytes");
    }
    assert!(!dir.join("log.3").exists(), "three files in all");
    let kept: Vec<String> = k.ok(&["logs", "rot"]).lines().map(str::to_string).collect();
    assert!(kept.len() < 150 && !kept.is_empty(), "{kept:?}");
    assert_eq!(
        kept[..],
        want[150 - kept.len()..],
        "the newest lines, in order"
    );
    assert_eq!(
        k.ok(&["logs", "--tail", "2", "rot"]),
        "line 148\nline 149\n"
    );
    assert_eq!(
        k.ok(&["inspect", "-f", "{{json .HostConfig.LogConfig}}", "rot"]),
        "{\"Config\":{\"max-file\":\"3\",\"max-size\":\"1k\"},\"Type\":\"json-file\"}\n"
    );

    detached_sh(&k, "quiet", &["--log-driver", "none"], "echo hidden");
    let o = k.run(&["logs", "quiet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("configured logging driver does not support reading"),
        "{}",
        err(&o)
    );
    k.refuses_run(
        &["--log-driver", "syslog"],
        "no log driver named 'syslog' is registered",
    );
    k.refuses_run(
        &["--log-opt", "colour=red"],
        "unknown log opt 'colour' for json-file log driver",
    );
    k.ok(&["rm", "-f", "rot", "quiet"]);
}
