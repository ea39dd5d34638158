//! Container limits, privileges, pause/top/stats, inspect and formats
//! through the real `kiln` binary, as root, on the busybox fixture (issue
//! 13's lifecycle part, second round). Every container uses `--network
//! none`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_testsupport::containers::{err, out, Ctr as K};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// The container's cgroup dirs as its record lists them.
fn cgroups(k: &K, name: &str) -> Vec<PathBuf> {
    k.state(name)["cgroups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default()
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn memory_limit_oom_kills_and_limits_are_in_the_cgroup() {
    let k = K::new(KILN);
    // Limits land in the container's own cgroup.
    let id = k
        .ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "lim",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "20",
            BB,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let dirs = cgroups(&k, "lim");
    assert!(!dirs.is_empty(), "a cgroup of its own");
    assert!(dirs.iter().all(|d| d.ends_with(format!("kiln/{id}"))));
    let file = |name: &str| -> String {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|f| f.exists())
            .map(|f| read(&f))
            .unwrap_or_else(|| panic!("no {name} in {dirs:?}"))
    };
    let v2 = dirs[0].join("cgroup.controllers").exists();
    if v2 {
        assert_eq!(file("memory.max"), (64u64 << 20).to_string());
        assert_eq!(file("cpu.max"), "50000 100000");
    } else {
        assert_eq!(file("memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(file("cpu.cfs_quota_us"), "50000");
        assert_eq!(file("cpu.shares"), "512");
    }
    assert_eq!(file("pids.max"), "20");
    // pid 1 is in it (cgroup.procs lists host pids).
    let pid = k.state("lim")["pid"].as_i64().expect("pid");
    let procs = file("cgroup.procs");
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    // So is an exec'd process.
    let mine = k.ok(&["exec", "lim", "cat", "/proc/self/cgroup"]);
    assert!(mine.contains(&format!("/kiln/{id}")), "{mine}");
    // The pids limit holds: 30 sleeps cannot all start.
    let o = k.run(&[
        "exec",
        "lim",
        "sh",
        "-c",
        "for i in $(seq 30); do sleep 100 & done; wait",
    ]);
    assert!(
        err(&o).contains("Resource temporarily unavailable") || err(&o).contains("can't fork"),
        "{}",
        err(&o)
    );
    k.ok(&["rm", "-f", "lim"]);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }

    // Over the limit: the kernel OOM-kills it, exit 137, OOMKilled.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "oom",
        "--memory",
        "32m",
        BB,
        "sh",
        "-c",
        "x=$(head -c 100m /dev/zero | tr '\\0' a); echo survived",
    ]);
    let dirs = cgroups(&k, "oom");
    assert_eq!(k.ok(&["wait", "oom"]), "137\n");
    let s = k.state("oom");
    assert_eq!(s["exit_code"], 137);
    assert_eq!(s["oom_killed"], true);
    assert!(!k.ok(&["logs", "oom"]).contains("survived"));
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "oom"])).expect("inspect json");
    assert_eq!(inspect[0]["State"]["OOMKilled"], true);
    assert_eq!(inspect[0]["State"]["ExitCode"], 137);
    assert_eq!(inspect[0]["HostConfig"]["Memory"], 32 << 20);
    // Its cgroup went with its run.
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    // The host is fine: another container runs normally.
    assert_eq!(
        k.ok(&["run", "--rm", "--network", "none", BB, "echo", "fine"]),
        "fine\n"
    );
    k.ok(&["rm", "oom"]);

    // docker's checks of the values.
    let o = k.run(&["run", "--network", "none", "-m", "1m", BB, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains("Minimum memory limit allowed is 6MB"),
        "{}",
        err(&o)
    );
    let o = k.run(&[
        "run",
        "--network",
        "none",
        "--memory-swap",
        "1g",
        BB,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn ulimits_capabilities_privileged_and_shared_namespaces() {
    let k = K::new(KILN);
    let run = |args: &[&str]| -> String {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(args);
        k.ok(&a)
    };
    assert_eq!(
        run(&[
            "--ulimit",
            "nofile=1024:2048",
            BB,
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn"
        ]),
        "1024\n2048\n"
    );
    // --shm-size: /dev/shm's size (docker's 64 MiB without it), in inspect too.
    let shm = "grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'";
    assert_eq!(run(&[BB, "sh", "-c", shm]), "size=65536k\n");
    assert_eq!(
        run(&["--shm-size", "128m", BB, "sh", "-c", shm]),
        "size=131072k\n"
    );
    k.ok(&["create", "--name", "shm", "--shm-size", "1g", BB, "true"]);
    assert_eq!(
        k.ok(&["inspect", "-f", "{{.HostConfig.ShmSize}}", "shm"]),
        "1073741824\n"
    );
    k.ok(&["rm", "shm"]);
    // --group-add: by gid or by the image's group name, for the container
    // and its execs; an unknown name fails the start as docker's does.
    assert_eq!(
        run(&[
            "--group-add",
            "1234",
            "--group-add",
            "daemon",
            BB,
            "id",
            "-G"
        ]),
        "0 1 1234\n"
    );
    k.refuses_run(
        &["--group-add", "nosuch"],
        "Unable to find group nosuch: no matching entries in group file",
    );
    k.ok(&[
        "run",
        "-d",
        "--name",
        "ga",
        "--network",
        "none",
        "--group-add",
        "1234",
        "-u",
        "nobody",
        BB,
        "sleep",
        "100",
    ]);
    assert_eq!(k.ok(&["exec", "ga", "id", "-G"]), "65534 1234\n");
    assert_eq!(
        k.ok(&["inspect", "-f", "{{json .HostConfig.GroupAdd}}", "ga"]),
        "[\"1234\"]\n"
    );
    k.ok(&["rm", "-f", "ga"]);
    // --sysctl: namespaced parameters, set in the container's namespaces
    // only; the host's stay as they were; others refused as docker does.
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host");
    let want = if host_fwd.trim() == "1" { "0" } else { "1" };
    assert_eq!(
        run(&[
            "--sysctl",
            &format!("net.ipv4.ip_forward={want}"),
            "--sysctl",
            "kernel.shmmni=1234",
            BB,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/kernel/shmmni"
        ]),
        format!("{want}\n1234\n")
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host"),
        host_fwd,
        "the host's parameter is untouched"
    );
    k.refuses_run(
        &["--sysctl", "vm.max_map_count=262144"],
        "sysctl 'vm.max_map_count=262144' is not allowed",
    );
    k.refuses_run(
        &["--network", "host", "--sysctl", "net.core.somaxconn=1"],
        "not allowed in host network namespace",
    );
    k.refuses_run(
        &["--ipc", "host", "--sysctl", "kernel.shmmni=1"],
        "not allowed in the hosts ipc namespace",
    );
    let capeff = |extra: &[&str]| -> u64 {
        let mut a = extra.to_vec();
        a.extend_from_slice(&[BB, "grep", "CapEff", "/proc/self/status"]);
        let out = run(&a);
        u64::from_str_radix(out.split_whitespace().nth(1).expect("CapEff"), 16).expect("hex")
    };
    let default = capeff(&[]);
    assert_eq!(default, 0xa80425fb, "docker's default set");
    let net_admin = 1u64 << 12;
    let chown = 1u64 << 0;
    assert_eq!(capeff(&["--cap-add", "NET_ADMIN"]), default | net_admin);
    assert_eq!(capeff(&["--cap-drop", "chown"]), default & !chown);
    assert_eq!(
        capeff(&["--cap-drop", "ALL", "--cap-add", "CAP_KILL"]),
        1 << 5
    );
    assert!(capeff(&["--privileged"]).count_ones() >= 38);
    // NET_ADMIN really works: the loopback can be taken down.
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        BB,
        "ip",
        "link",
        "set",
        "lo",
        "down",
    ]);
    assert!(!o.status.success(), "without NET_ADMIN");
    run(&[
        "--cap-add",
        "NET_ADMIN",
        BB,
        "ip",
        "link",
        "set",
        "lo",
        "down",
    ]);
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-add",
        "BOGUS",
        BB,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    // no-new-privileges is accepted (and in force).
    assert_eq!(
        run(&[
            "--security-opt",
            "no-new-privileges",
            BB,
            "grep",
            "NoNewPrivs",
            "/proc/self/status"
        ])
        .split_whitespace()
        .nth(1),
        Some("1")
    );
    // --pid host: the host's processes are visible (pid 1 is not ours).
    let comm1 = run(&["--pid", "host", BB, "cat", "/proc/1/comm"]);
    assert_ne!(comm1, "cat\n");
    assert_eq!(run(&[BB, "cat", "/proc/1/comm"]), "cat\n");
    // --pid/--ipc container:NAME share the other's namespaces.
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "base",
        BB,
        "sleep",
        "1000",
    ]);
    let ps = run(&["--pid", "container:base", BB, "ps", "-o", "comm"]);
    assert!(ps.contains("sleep"), "{ps}");
    let pid = k.state("base")["pid"].as_i64().expect("pid");
    let ipc_base = std::fs::read_link(format!("/proc/{pid}/ns/ipc")).expect("ns");
    let ipc = run(&[
        "--ipc",
        "container:base",
        BB,
        "readlink",
        "/proc/self/ns/ipc",
    ]);
    assert_eq!(ipc.trim(), ipc_base.to_string_lossy());
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("ns");
    let ipc = run(&["--ipc", "host", BB, "readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ipc.trim(), host_ipc.to_string_lossy());
    k.ok(&["rm", "-f", "base"]);
}

#[test]
fn pause_unpause_top_and_stats() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "p",
        "--memory",
        "64m",
        BB,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; usleep 20000; done",
    ]);
    let tick = || k.ok(&["exec", "p", "cat", "/tmp/tick"]);
    k.eventually("ticking", || {
        !k.run(&["exec", "p", "cat", "/tmp/tick"]).stdout.is_empty()
    });
    assert_eq!(k.ok(&["pause", "p"]), "p\n");
    assert!(k.status("p").ends_with("(Paused)"), "{}", k.status("p"));
    // Frozen: the loop no longer writes (exec'd processes would freeze
    // too: read the file from the host through pid 1's root).
    let pid = k.state("p")["pid"].as_i64().expect("pid");
    let file = format!("/proc/{pid}/root/tmp/tick");
    let a = std::fs::read_to_string(&file).expect("tick");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&file).expect("tick"), a, "frozen");
    let o = k.run(&["pause", "p"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("is already paused"), "{}", err(&o));
    assert_eq!(k.ok(&["unpause", "p"]), "p\n");
    assert!(!k.status("p").contains("Paused"), "{}", k.status("p"));
    let b = tick();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(tick(), b, "running again");

    // top: ps -ef's columns, the container's processes only.
    let top = k.ok(&["top", "p"]);
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter().any(|l| l.starts_with("root")
            && l.contains(&format!(" {pid} "))
            && l.ends_with(
                "sh -c i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; usleep 20000; done"
            )),
        "{top}"
    );
    assert!(rows.len() <= 3, "only the container's processes: {top}");

    // stats --no-stream: docker's columns, the memory limit from the cgroup.
    let stats = k.ok(&["stats", "--no-stream", "p"]);
    let mut lines = stats.lines();
    let header = lines.next().unwrap_or("");
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{stats}");
    }
    let row = lines.next().unwrap_or("");
    assert!(row.contains(" p "), "{stats}");
    assert!(row.contains(" / 64MiB"), "{stats}");
    let f = k.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
        "p",
    ]);
    assert!(f.starts_with("p ") && f.contains("/ 64MiB"), "{f}");
    // Streaming: tables keep coming until interrupted.
    let mut child = Command::new(KILN)
        .args(["stats", "p"])
        .env("KILN_ROOT", &k.root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("stats");
    std::thread::sleep(Duration::from_millis(2800));
    let _ = child.kill();
    let o = child.wait_with_output().expect("stats out");
    let text = out(&o);
    assert!(text.matches("CONTAINER ID").count() >= 2, "{text}");
    k.ok(&["rm", "-f", "p"]);
}

#[test]
fn inspect_formats_filters_and_log_windows() {
    let k = K::new(KILN);
    let id = k
        .ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "web",
            "--label",
            "tier=front",
            "-e",
            "A=1",
            "--restart",
            "on-failure:3",
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
            BB,
            "sh",
            "-c",
            "echo one; sleep 1000",
        ])
        .trim()
        .to_string();
    let o = k.run(&[
        "run",
        "--network",
        "none",
        "--name",
        "done",
        BB,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    k.eventually("healthy", || k.status("web").ends_with("(healthy)"));
    // docker's document shape.
    let docs: serde_json::Value =
        serde_json::from_str(&k.ok(&["container", "inspect", "web"])).expect("json");
    let d = &docs[0];
    assert_eq!(d["Id"], id.as_str());
    assert_eq!(d["Name"], "/web");
    assert_eq!(d["Path"], "sh");
    assert_eq!(d["Args"][0], "-c");
    assert_eq!(d["State"]["Status"], "running");
    assert_eq!(d["State"]["Running"], true);
    assert_eq!(d["State"]["OOMKilled"], false);
    assert!(d["State"]["Pid"].as_i64().unwrap_or(0) > 0);
    assert_eq!(d["State"]["Health"]["Status"], "healthy");
    assert!(d["State"]["StartedAt"]
        .as_str()
        .unwrap_or("")
        .ends_with('Z'));
    assert_eq!(d["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(d["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(d["HostConfig"]["NetworkMode"], "none");
    assert_eq!(d["Config"]["Image"], BB);
    assert!(d["Config"]["Env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v == "A=1")));
    assert!(d["Mounts"].is_array());
    assert!(d["NetworkSettings"]["Networks"].is_object());
    // Field order as docker's.
    let text = k.ok(&["inspect", "web"]);
    let pos = |f: &str| text.find(&format!("\"{f}\"")).unwrap_or(usize::MAX);
    assert!(
        pos("Id") < pos("Created") && pos("Created") < pos("Path") && pos("State") < pos("Image")
    );
    // -f templates.
    assert_eq!(
        k.ok(&["inspect", "-f", "{{.State.Status}}", "web"]),
        "running\n"
    );
    assert_eq!(
        k.ok(&["inspect", "-f", "{{.State.Health.Status}}", "web"]),
        "healthy\n"
    );
    assert_eq!(
        k.ok(&["inspect", "--format", "{{.Id}}", "web"]),
        format!("{id}\n")
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "-f", "{{json .Config}}", "web"])).expect("json");
    assert_eq!(cfg["Image"], BB);
    assert_eq!(
        k.ok(&[
            "inspect",
            "-f",
            "{{index .Config.Cmd 0}} {{range .Args}}[{{.}}]{{end}}",
            "web"
        ]),
        "sh [-c][echo one; sleep 1000]\n"
    );
    assert_eq!(
        k.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.Status}}",
            "done"
        ]),
        "3 exited\n"
    );
    // An image still inspects through `kiln inspect`.
    let img: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", BB])).expect("json");
    assert!(img[0]["Id"]
        .as_str()
        .is_some_and(|i| i.starts_with("sha256:")));
    let o = k.run(&["inspect", "nothing-by-this-name"]);
    assert_eq!(o.status.code(), Some(1));

    // ps --format and --filter.
    assert_eq!(k.ok(&["ps", "--format", "{{.Names}}"]), "web\n");
    assert_eq!(
        k.ok(&["ps", "-a", "--format", "{{.ID}}", "--filter", "name=done"]),
        format!("{}\n", &k.state("done")["id"].as_str().unwrap_or("")[..12])
    );
    let t = k.ok(&["ps", "--format", "table {{.ID}}\\t{{.Status}}"]);
    let mut lines = t.lines();
    assert!(
        lines
            .next()
            .unwrap_or("")
            .starts_with("CONTAINER ID   STATUS"),
        "{t}"
    );
    assert!(lines.next().unwrap_or("").ends_with("(healthy)"), "{t}");
    let j: serde_json::Value =
        serde_json::from_str(k.ok(&["ps", "--format", "{{json .}}"]).trim()).expect("json");
    assert_eq!(j["Names"], "web");
    assert_eq!(j["State"], "running");
    let names = |f: &[&str]| -> String {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        for x in f {
            a.push("--filter");
            a.push(x);
        }
        k.ok(&a)
    };
    assert_eq!(names(&["status=exited"]), "done\n");
    assert_eq!(names(&["exited=3"]), "done\n");
    assert_eq!(names(&["exited=0"]), "");
    assert_eq!(names(&["health=healthy"]), "web\n");
    assert_eq!(names(&["ancestor=busybox:1.35", "status=running"]), "web\n");
    assert_eq!(names(&[&format!("id={}", &id[..6])]), "web\n");
    assert_eq!(names(&["label=a=b"]), "");
    assert_eq!(names(&["label=tier=front"]), "web\n");
    assert_eq!(names(&["label=tier"]), "web\n");
    assert_eq!(names(&["label=tier", "label=other"]), "");
    let o = k.run(&["ps", "--filter", "status=sleepy"]);
    assert_eq!(o.status.code(), Some(1));

    // logs -t / --since / --until.
    let t = k.ok(&["logs", "-t", "web"]);
    let (stamp, line) = t.trim_end().split_once(' ').expect("stamp");
    assert_eq!(line, "one");
    assert_eq!(
        stamp.len(),
        "2026-01-01T00:00:00.000000000Z".len(),
        "{stamp}"
    );
    assert!(stamp.ends_with('Z'));
    assert_eq!(k.ok(&["logs", "--since", "1h", "web"]), "one\n");
    assert_eq!(k.ok(&["logs", "--until", "1h", "web"]), "");
    assert_eq!(
        k.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "web"]),
        "one\n"
    );
    k.ok(&["rm", "-f", "web", "done"]);
}
