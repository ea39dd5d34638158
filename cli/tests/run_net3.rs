//! Container networks, third part: docker's embedded DNS (127.0.0.11) on
//! user-defined networks, `--expose`, `network connect|disconnect` of a
//! running container, hairpin to a container's own published port, and
//! nothing left behind once everything is removed. As root; every test
//! first makes a network namespace of its own and runs every kiln command
//! in it (`nsenter --net=FILE`), so the host's interfaces and firewall are
//! never touched and traffic goes only to addresses inside it.

use kiln_testsupport::netns::{retry, NetKiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// kiln on a store of its own, inside a network namespace of its own.
type NetK = NetKiln;

fn netk() -> NetK {
    NetKiln::new(KILN, "kiln-net3")
}

/// What these tests ask of the namespace and the containers besides kiln.
trait NetExt {
    /// An address of the namespace's own besides loopback (10.99.0.1).
    fn outside_address(&self);
    /// `nslookup NAME` in container `c`: its stdout (busybox's exit code
    /// says little when one of the A and AAAA queries has no answer).
    fn nslookup(&self, c: &str, name: &str) -> String;
    fn inspect(&self, c: &str) -> serde_json::Value;
}

impl NetExt for NetK {
    fn outside_address(&self) {
        self.ns.sh("ip link add d0 type veth peer name d0p && ip link set d0p up && ip addr add 10.99.0.1/24 dev d0 && ip link set d0 up");
    }

    fn nslookup(&self, c: &str, name: &str) -> String {
        let o = self.run(&["exec", c, "nslookup", name]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn inspect(&self, c: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", c])).expect("inspect json");
        v[0].clone()
    }
}

const WEB: &str = "mkdir /w && echo hello-from-web > /w/index.html && exec httpd -f -p 80 -h /w";

/// A DNS server for the test's namespace (the "external" one the embedded
/// resolver forwards to): every A query gets 10.9.8.7, others no record.
const UPSTREAM: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.99.0.1", 53))
print("ready", flush=True)
while True:
    q, a = s.recvfrom(4096)
    i = 12
    while q[i] != 0:
        i += 1 + q[i]
    end = i + 5
    is_a = q[end - 4:end - 2] == b"\x00\x01"
    r = q[:2] + b"\x81\x80" + q[4:6] + (b"\x00\x01" if is_a else b"\x00\x00") + b"\x00\x00\x00\x00" + q[12:end]
    if is_a:
        r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 9, 8, 7])
    s.sendto(r, a)
"#;

/// docker's embedded DNS: a container started before `web` existed finds
/// it by name, alias, `NAME.NETWORK` and short ID through 127.0.0.11
/// (not /etc/hosts); `--link` aliases on a user network; other names go
/// to the external servers; the default bridge keeps its plain
/// resolv.conf; the resolvers go with their containers.
#[test]
fn embedded_dns_on_user_networks() {
    let k = netk();
    k.outside_address();
    let mut upstream = k
        .in_ns("python3")
        .args(["-c", UPSTREAM])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    if let Some(out) = upstream.stdout.take() {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        assert_eq!(line.trim(), "ready", "the test's upstream DNS server");
    }
    k.ok(&["network", "create", "appnet"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "appnet",
        "--dns",
        "10.99.0.1",
        BB,
        "sleep",
        "300",
    ]);
    let web_id = k.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "--network-alias",
        "www",
        BB,
        "sh",
        "-c",
        WEB,
    ]);
    let short = &web_id.trim()[..12];
    let resolv = k.ok(&["exec", "client", "cat", "/etc/resolv.conf"]);
    assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
    assert!(resolv.contains("options ndots:0\n"), "{resolv}");
    assert!(resolv.contains("ExtServers: [10.99.0.1]"), "{resolv}");
    // Not in the hosts file: only the resolver knows web.
    let hosts = k.ok(&["exec", "client", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("172.18.0.3"), "{hosts}");
    let web_ip = "172.18.0.3";
    for name in ["web", "www", "web.appnet", short] {
        let out = k.nslookup("client", name);
        assert!(out.contains("127.0.0.11"), "asked the resolver: {out}");
        assert!(
            out.contains(&format!("Address: {web_ip}")),
            "{name} resolves to web: {out}"
        );
    }
    let out = k.ok(&[
        "exec",
        "client",
        "sh",
        "-c",
        &retry("wget -qO- http://web/"),
    ]);
    assert_eq!(out.trim(), "hello-from-web");
    // A name it does not own goes to the external server (--dns).
    let out = k.nslookup("client", "outside.example");
    assert!(out.contains("Address: 10.9.8.7"), "forwarded: {out}");
    // Reverse lookups of a container's address.
    let out = k.nslookup("client", web_ip);
    assert!(out.contains("web.appnet"), "PTR: {out}");
    // --link on a user network: an alias only the linking container sees.
    let out = k.ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "--link",
        "web:backend",
        BB,
        "nslookup",
        "backend",
    ]);
    assert!(out.contains(&format!("Address: {web_ip}")), "{out}");
    let out = k.nslookup("client", "backend");
    assert!(
        !out.contains(web_ip),
        "the link alias is the linking container's only"
    );
    // A stopped container is no longer named.
    k.ok(&["stop", "-t", "1", "web"]);
    let out = k.nslookup("client", "web");
    assert!(!out.contains(web_ip), "{out}");
    // The default bridge has no embedded resolver, as docker's.
    let out = k.ok(&[
        "run",
        "--rm",
        "--dns",
        "10.99.0.1",
        BB,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(out, "nameserver 10.99.0.1\n");
    let _ = upstream.kill();
    let _ = upstream.wait();
    k.ok(&["rm", "-f", "client", "web"]);
    k.eventually("no resolver or helper left", || k.procs().is_empty());
    k.ok(&["network", "rm", "appnet"]);
}

/// `network connect` / `disconnect` of running containers (a new
/// interface with its address, names resolvable on the new network, gone
/// on disconnect), `--expose` (with `-P`, and inspect's
/// `Config.ExposedPorts`), and hairpin: a container reaches its own
/// published port through the namespace's address and the gateway.
#[test]
fn connect_running_expose_and_hairpin() {
    let k = netk();
    k.outside_address();
    k.ok(&["network", "create", "front"]);
    k.ok(&["network", "create", "back"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "back",
        BB,
        "sh",
        "-c",
        WEB,
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "front",
        BB,
        "sleep",
        "300",
    ]);
    let before = k.ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    assert!(!before.contains("eth1"), "{before}");
    // Not on back yet: web is not its to resolve, nor to reach (docker's
    // isolation between networks).
    let out = k.nslookup("app", "web");
    assert!(!out.contains("172.19.0.2"));
    let o = k.run(&["exec", "app", "ping", "-c", "1", "-W", "2", "172.19.0.2"]);
    assert_ne!(o.status.code(), Some(0), "networks are isolated");
    let out = k.ok(&["exec", "web", "ping", "-c", "1", "-W", "2", "172.19.0.1"]);
    assert!(out.contains("1 packets received"), "{out}");
    k.ok(&[
        "network",
        "connect",
        "--alias",
        "api",
        "--ip",
        "172.19.0.50",
        "back",
        "app",
    ]);
    let after = k.ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    assert!(
        after.contains("eth1") && after.contains("172.19.0.50/16"),
        "{after}"
    );
    let out = k.ok(&["exec", "app", "sh", "-c", &retry("wget -qO- http://web/")]);
    assert_eq!(
        out.trim(),
        "hello-from-web",
        "web reached on the new network"
    );
    let out = k.nslookup("web", "api");
    assert!(out.contains("Address: 172.19.0.50"), "alias on back: {out}");
    let doc = k.inspect("app");
    let nets = doc["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks");
    assert!(
        nets.contains_key("front") && nets.contains_key("back"),
        "{nets:?}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["network", "inspect", "back"])).expect("json");
    assert_eq!(
        inspect[0]["Containers"].as_object().map(|c| c.len()),
        Some(2)
    );
    k.ok(&["network", "disconnect", "back", "app"]);
    let gone = k.ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    assert!(
        !gone.contains("eth1") && !gone.contains("172.19."),
        "{gone}"
    );
    let out = k.nslookup("web", "api");
    assert!(!out.contains("172.19.0.50"));
    let o = k.run(&["network", "disconnect", "back", "app"]);
    assert_eq!(o.status.code(), Some(1), "not connected any more");
    // --expose: in inspect's Config.ExposedPorts, and published by -P.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--expose",
        "80",
        "--expose",
        "7000-7001/udp",
        "-P",
        BB,
        "sh",
        "-c",
        WEB,
    ]);
    let doc = k.inspect("pub");
    let exposed = doc["Config"]["ExposedPorts"].as_object().expect("exposed");
    let mut keys: Vec<&str> = exposed.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["7000/udp", "7001/udp", "80/tcp"]);
    let ports = k.ok(&["port", "pub"]);
    assert_eq!(ports.lines().count(), 3, "{ports}");
    let hp = k.ok(&["port", "pub", "80"]);
    let port = hp.trim().strip_prefix("0.0.0.0:").expect("0.0.0.0:PORT");
    // Hairpin: pub reaches its own published port through the
    // namespace's address and through its gateway.
    for host in ["10.99.0.1", "172.17.0.1"] {
        let out = k.ok(&[
            "exec",
            "pub",
            "sh",
            "-c",
            &retry(&format!("wget -qO- http://{host}:{port}/")),
        ]);
        assert_eq!(out.trim(), "hello-from-web", "hairpin via {host}");
    }
    // An IPv6 host address (the proxy alone carries it, as docker-proxy).
    k.ok(&[
        "run",
        "-d",
        "--name",
        "six",
        "-p",
        "[::1]:18085:80",
        BB,
        "sh",
        "-c",
        WEB,
    ]);
    assert_eq!(k.ok(&["port", "six"]).trim(), "80/tcp -> [::1]:18085");
    let out = k.ns.sh(&retry("busybox wget -qO- http://[::1]:18085/"));
    assert_eq!(out.trim(), "hello-from-web", "over IPv6 loopback");
    k.ok(&["rm", "-f", "web", "app", "pub", "six"]);
    k.eventually("no process left", || k.procs().is_empty());
    k.ok(&["network", "rm", "front", "back"]);
}

/// The issue's must-show: after `rm -f` of containers on the default
/// bridge (with published ports), on a user network (two, one resolving
/// the other) and with `--network none`, and `network rm`: no veth, no
/// bridge but the default one, no firewall rule kiln added besides the
/// default bridge's own, no process, no mount, no cgroup.
#[test]
fn nothing_left_behind() {
    let k = netk();
    let rules = || k.ns.sh("iptables-save -t nat; iptables-save -t filter");
    k.ok(&["network", "create", "appnet"]);
    let runs: [&[&str]; 5] = [
        &[
            "-p",
            "18080:80",
            "-p",
            "127.0.0.1:18081:81/udp",
            BB,
            "sh",
            "-c",
            WEB,
        ],
        &[
            "--name",
            "web",
            "--network",
            "appnet",
            "-p",
            "18082:80",
            BB,
            "sh",
            "-c",
            WEB,
        ],
        &[
            "--name",
            "client",
            "--network",
            "appnet",
            BB,
            "sleep",
            "300",
        ],
        &["--network", "none", BB, "sleep", "300"],
        &["--memory", "64m", "--network", "appnet", BB, "sleep", "300"],
    ];
    let ids: Vec<String> = runs
        .iter()
        .map(|args| k.ok(&[&["run", "-d"], *args].concat()))
        .collect();
    let out = k.ok(&[
        "exec",
        "client",
        "sh",
        "-c",
        &retry("wget -qO- http://web/"),
    ]);
    assert_eq!(out.trim(), "hello-from-web");
    let busy = rules();
    assert!(busy.contains("DNAT"), "{busy}");
    assert!(!k.procs().is_empty());
    for id in &ids {
        k.ok(&["rm", "-f", id.trim()]);
    }
    k.ok(&["network", "rm", "appnet"]);
    k.eventually("no process left", || k.procs().is_empty());
    k.eventually("no veth left", || {
        !k.ns.links().iter().any(|l| l.starts_with("veth"))
    });
    let links = k.ns.links();
    assert!(
        links.iter().all(|l| ["lo", "kiln0"].contains(&l.as_str())),
        "only the default bridge is left: {links:?}"
    );
    // Only the default bridge's rules (as docker0's stay with dockerd)
    // and the jump to the (then kiln0-only) isolation chains.
    let left = rules();
    for line in left.lines().filter(|l| l.starts_with("-A")) {
        let kept = line.contains("kiln0") || line == "-A FORWARD -j KILN-ISOLATION-STAGE-1";
        assert!(kept, "a rule left behind: {line}\n{left}");
    }
    assert!(!left.contains("br-"), "{left}");
    assert!(
        kiln_testsupport::mounts::mounts_below(&k.root).is_empty(),
        "{:?}",
        kiln_testsupport::mounts::mounts_below(&k.root)
    );
    for id in &ids {
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .expect("cgroup")
            .flatten()
        {
            let dir = h.path().join("kiln").join(id.trim());
            assert!(!dir.exists(), "cgroup left: {}", dir.display());
        }
    }
    let ps = k.ok(&["ps", "-aq"]);
    assert!(ps.trim().is_empty(), "{ps}");
}
