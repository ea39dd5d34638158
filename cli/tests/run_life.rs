//! Container lifecycle through the real `kiln` binary, as root, on the
//! busybox fixture: `create`/`start`/`restart`/`kill`/`wait`/`rename`,
//! `rm -f`, `container prune` and the `container` group; stop signals,
//! `--init`; restart policies; health checks; `inspect`; pause, `top`,
//! `stats`. Every container uses `--network none`.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_testsupport::containers::{err, out, Ctr as K};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

#[test]
fn create_start_wait_restart_kill_rename_rm() {
    let k = K::new(KILN);
    // create: prints the full ID, status Created, nothing runs.
    let id = k.ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "c1",
        BB,
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(k.status("c1"), "Created");
    assert_eq!(k.state("c1")["status"], "created");

    // start -a: the output, and the exit code.
    let o = k.run(&["start", "-a", "c1"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert_eq!(out(&o), "hi\n");
    // start (detached) again; wait prints the exit code.
    assert_eq!(k.ok(&["start", "c1"]), "c1\n");
    assert_eq!(k.ok(&["wait", "c1"]), "3\n");
    assert_eq!(k.ok(&["logs", "c1"]), "hi\nhi\n");

    // A long runner: kill -s, restart, wait.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "sleeper",
        BB,
        "sleep",
        "1000",
    ]);
    let pid1 = k.state("sleeper")["pid"].as_i64().expect("pid");
    assert_eq!(k.ok(&["restart", "-t", "0", "sleeper"]), "sleeper\n");
    let pid2 = k.state("sleeper")["pid"].as_i64().expect("pid");
    assert_ne!(pid1, pid2, "restart runs a new process");
    assert!(
        k.status("sleeper").starts_with("Up"),
        "{}",
        k.status("sleeper")
    );
    assert_eq!(k.ok(&["kill", "-s", "SIGKILL", "sleeper"]), "sleeper\n");
    assert_eq!(k.ok(&["wait", "sleeper"]), "137\n");
    let o = k.run(&["kill", "sleeper"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("is not running"), "{}", err(&o));
    let o = k.run(&["kill", "-s", "NOPE", "sleeper"]);
    assert_eq!(o.status.code(), Some(1));

    // rename: the new name finds it, the old does not; a taken name is refused.
    k.ok(&["rename", "sleeper", "dozer"]);
    assert_eq!(k.state("dozer")["name"], "dozer");
    let o = k.run(&["rename", "dozer", "c1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Conflict. The container name \"/c1\" is already in use"),
        "{}",
        err(&o)
    );
    let o = k.run(&["start", "sleeper"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("No such container: sleeper"),
        "{}",
        err(&o)
    );
    assert!(
        err(&o).contains("failed to start containers: sleeper"),
        "{}",
        err(&o)
    );

    // The `container` group has every verb, with docker's aliases.
    k.ok(&["container", "start", "dozer"]);
    let ls = k.ok(&["container", "ls"]);
    assert!(ls.contains("dozer"), "{ls}");
    assert_eq!(k.ok(&["container", "ps", "-q"]).lines().count(), 1);
    k.ok(&["container", "list", "-a"]);

    // rm -f of several, a missing one reported but not failing (docker's -f).
    let o = k.run(&["rm", "-f", "dozer", "nosuch", "c1"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "dozer\nc1\n");
    assert!(
        err(&o).contains("Error response from daemon: No such container: nosuch"),
        "{}",
        err(&o)
    );
    let o = k.run(&["rm", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(k.ok(&["ps", "-aq"]), "");
}

#[test]
fn container_prune_removes_stopped_only() {
    let k = K::new(KILN);
    k.ok(&["run", "--network", "none", "--name", "done1", BB, "true"]);
    k.ok(&["create", "--network", "none", "--name", "new1", BB, "true"]);
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "live",
        BB,
        "sleep",
        "1000",
    ]);
    let keep = k.state("live")["id"].as_str().unwrap().to_string();
    // until= in the past keeps everything.
    let o = k.ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert_eq!(o, "Total reclaimed space: 0B\n");
    let o = k.ok(&["container", "prune", "-f"]);
    assert!(o.starts_with("Deleted Containers:\n"), "{o}");
    assert_eq!(o.lines().filter(|l| l.len() == 64).count(), 2, "{o}");
    assert!(o.contains("Total reclaimed space:"), "{o}");
    assert_eq!(k.ok(&["ps", "-aq", "--no-trunc"]).trim(), keep);
    k.ok(&["rm", "-f", "live"]);
}

#[test]
fn stop_sends_the_stop_signal_and_records_the_code() {
    let k = K::new(KILN);
    let ctx = k.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:1.35\nSTOPSIGNAL SIGUSR1\n",
    )
    .unwrap();
    k.ok(&["build", "-q", "-t", "stopsig:1", ctx.to_str().unwrap()]);
    // The image's STOPSIGNAL reaches the process (a trap as pid 1 handles it).
    let script = "trap 'echo got USR1; exit 7' USR1; trap 'echo got TERM; exit 8' TERM; echo ready; while true; do sleep 0.1; done";
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "s1",
        "stopsig:1",
        "sh",
        "-c",
        script,
    ]);
    k.eventually("ready", || k.ok(&["logs", "s1"]).contains("ready"));
    assert_eq!(k.ok(&["stop", "s1"]), "s1\n");
    assert_eq!(k.ok(&["logs", "s1"]), "ready\ngot USR1\n");
    assert_eq!(k.state("s1")["exit_code"], 7);

    // --stop-signal overrides the image's; stop -s overrides both.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "s2",
        "--stop-signal",
        "TERM",
        "stopsig:1",
        "sh",
        "-c",
        script,
    ]);
    k.eventually("ready", || k.ok(&["logs", "s2"]).contains("ready"));
    k.ok(&["stop", "s2"]);
    assert!(k.ok(&["logs", "s2"]).contains("got TERM"));
    k.ok(&["start", "s2"]);
    k.eventually("ready again", || {
        k.ok(&["logs", "s2"]).matches("ready").count() == 2
    });
    k.ok(&["stop", "-s", "USR1", "s2"]);
    assert!(k.ok(&["logs", "s2"]).ends_with("got USR1\n"));

    // A pid 1 that ignores SIGTERM is killed after the timeout: 137.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "s3",
        "--stop-timeout",
        "1",
        BB,
        "sleep",
        "1000",
    ]);
    let t = std::time::Instant::now();
    k.ok(&["stop", "s3"]);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(k.state("s3")["exit_code"], 137);
    assert!(
        k.status("s3").starts_with("Exited (137)"),
        "{}",
        k.status("s3")
    );

    // --init: pid 1 is the init, which passes SIGTERM on: 143, at once.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--init",
        "--name",
        "s4",
        BB,
        "sleep",
        "1000",
    ]);
    let ps = k.ok(&["exec", "s4", "ps", "-o", "pid,comm"]);
    let pid1 = ps
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or("");
    assert!(!pid1.contains("sleep"), "init is pid 1:\n{ps}");
    assert!(ps.contains("sleep"), "{ps}");
    let t = std::time::Instant::now();
    k.ok(&["stop", "s4"]);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "SIGTERM was forwarded"
    );
    assert_eq!(k.state("s4")["exit_code"], 143);
    // --init reaps orphans and exits with the command's code.
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--init",
        BB,
        "sh",
        "-c",
        "(sleep 0.2 &); exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    k.ok(&["rm", "-f", "s1", "s2", "s3", "s4"]);
}

#[test]
fn restart_policies_are_kept_by_the_helper() {
    let k = K::new(KILN);
    // on-failure:2 restarts a failing container twice, then leaves it.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "f",
        "--restart",
        "on-failure:2",
        BB,
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    k.eventually("two restarts", || {
        let s = k.state("f");
        s["restart_count"] == 2 && s["status"] == "exited" && s["restarting"] == false
    });
    std::thread::sleep(Duration::from_millis(800));
    let s = k.state("f");
    assert_eq!(s["restart_count"], 2);
    assert_eq!(s["exit_code"], 3);
    assert_eq!(k.ok(&["logs", "f"]), "run\nrun\nrun\n");
    // on-failure does not restart a success.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        BB,
        "true",
    ]);
    assert_eq!(k.ok(&["wait", "ok"]), "0\n");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(k.state("ok")["restart_count"], 0);

    // always: restarts after the process ends; stop ends that.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "a",
        "--restart",
        "always",
        BB,
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    k.eventually("restarted", || {
        k.state("a")["restart_count"].as_u64().unwrap_or(0) >= 2
    });
    k.ok(&["stop", "-t", "1", "a"]);
    let n = k.state("a")["restart_count"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let s = k.state("a");
    assert_eq!(s["restart_count"], n, "stop disables restarting");
    assert_eq!(s["status"], "exited");

    // A bad policy is refused before anything is made.
    let o = k.run(&[
        "run",
        "--network",
        "none",
        "--restart",
        "always:3",
        BB,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("maximum retry count"), "{}", err(&o));

    // After a "reboot" (helper and process killed, state left as running),
    // `kiln start` with no names brings back the ones whose policy says so.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "boot",
        "--restart",
        "unless-stopped",
        BB,
        "sleep",
        "1000",
    ]);
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "plain",
        BB,
        "sleep",
        "1000",
    ]);
    for name in ["boot", "plain"] {
        let pid = k.state(name)["pid"].as_i64().expect("pid") as i32;
        // The helper first (it would record the end), then pid 1.
        let helper = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(str::to_string))
            .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
            .and_then(|p| p.parse::<i32>().ok())
            .expect("ppid");
        let grand = std::fs::read_to_string(format!("/proc/{helper}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(str::to_string))
            .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
            .and_then(|p| p.parse::<i32>().ok())
            .expect("ppid");
        for p in [grand, helper, pid] {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        k.eventually("dead", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
    assert_eq!(k.state("boot")["status"], "running", "left as running");
    assert_eq!(k.ok(&["start"]), "boot\n");
    assert!(k.status("boot").starts_with("Up"), "{}", k.status("boot"));
    assert!(
        k.status("plain").starts_with("Exited"),
        "{}",
        k.status("plain")
    );
    k.ok(&["rm", "-f", "f", "ok", "a", "boot", "plain"]);
}

#[test]
fn health_checks_turn_healthy_then_unhealthy() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "h",
        "--health-cmd",
        "test -f /tmp/ok && echo fine",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        BB,
        "sh",
        "-c",
        "touch /tmp/ok; sleep 1000",
    ]);
    assert!(
        k.status("h").ends_with("(health: starting)"),
        "{}",
        k.status("h")
    );
    k.eventually("healthy", || k.status("h").ends_with("(healthy)"));
    let s = k.state("h");
    assert_eq!(s["health"]["Status"], "healthy");
    assert_eq!(s["health"]["Log"][0]["Output"], "fine\n");
    assert_eq!(s["health"]["Log"][0]["ExitCode"], 0);
    k.ok(&["exec", "h", "rm", "/tmp/ok"]);
    k.eventually("unhealthy", || k.status("h").ends_with("(unhealthy)"));
    let s = k.state("h");
    assert!(s["health"]["FailingStreak"].as_i64().unwrap() >= 2);
    k.eventually("five results kept", || {
        k.state("h")["health"]["Log"].as_array().map(Vec::len) == Some(5)
    });
    // --no-healthcheck: no check, no health.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "n",
        "--no-healthcheck",
        BB,
        "sleep",
        "1000",
    ]);
    assert!(k.status("n").starts_with("Up"), "{}", k.status("n"));
    assert!(!k.status("n").contains('('), "{}", k.status("n"));
    k.ok(&["rm", "-f", "h", "n"]);
}

/// `start -a` of a container made with `-t` goes through its terminal, as
/// `run -t` does (docker's `start -a` on a tty container): the process sees
/// a pty and its exit code comes back. `script` gives kiln a terminal.
#[test]
fn start_attach_of_a_tty_container_uses_its_terminal() {
    let k = K::new(KILN);
    k.ok(&[
        "create",
        "-t",
        "--network",
        "none",
        "--name",
        "t",
        BB,
        "sh",
        "-c",
        "tty; echo hi; exit 4",
    ]);
    let o = Command::new("script")
        .args(["-qec", &format!("{KILN} start -a t"), "/dev/null"])
        .env("KILN_ROOT", &k.root)
        .env("KILN_DEFAULT_NETWORK", "host")
        .stdin(Stdio::null())
        .output()
        .expect("spawn script (util-linux)");
    let text = out(&o);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("hi"), "{text}");
    assert_eq!(o.status.code(), Some(4), "{text}\n{}", err(&o));
    assert_eq!(k.state("t")["exit_code"], 4);
}
