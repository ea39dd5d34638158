//! Container networks end to end (`--network bridge|NAME|host|none|
//! container:X`, `kiln network …`, `--add-host`, `--dns`, `--link`), as
//! root. Every test first makes a network namespace of its own (a file
//! bound by `unshare --net=FILE`) and runs every kiln command inside it
//! with `nsenter --net=FILE`, so the bridges, veth pairs and firewall rules
//! kiln makes live and die there; the host's interfaces and firewall are
//! never touched, and traffic goes only to addresses inside it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use kiln_testsupport::busybox_fixture;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// kiln on a store of its own, inside a network namespace of its own.
struct NetK {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    netns: PathBuf,
}

impl NetK {
    fn new() -> NetK {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let netns = PathBuf::from(format!("/run/kiln-nettest-{}-{nanos}", std::process::id()));
        std::fs::File::create(&netns).expect("netns file");
        let st = Command::new("unshare")
            .arg(format!("--net={}", netns.display()))
            .arg("true")
            .status()
            .expect("unshare");
        assert!(st.success(), "unshare --net");
        let k = NetK {
            _tmp: tmp,
            root,
            netns,
        };
        k.sh_in_ns("ip link set lo up");
        let fixture = busybox_fixture();
        k.ok(&["load", "-q", "-i", fixture.to_str().expect("utf8")]);
        k
    }

    /// A command run inside the test's network namespace.
    fn in_ns(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(program)
            .env("KILN_ROOT", &self.root)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// A shell command inside the namespace (test scaffolding: addresses,
    /// listing links and rules); its stdout.
    fn sh_in_ns(&self, script: &str) -> String {
        let o = self.in_ns("sh").args(["-c", script]).output().expect("sh");
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
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

    /// Links of the namespace, by name.
    fn links(&self) -> Vec<String> {
        self.sh_in_ns("ls /sys/class/net")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for NetK {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        let _ = Command::new("umount").arg(&self.netns).status();
        let _ = std::fs::remove_file(&self.netns);
    }
}

/// A shell loop that retries `cmd` for a few seconds (a detached server
/// needs a moment to listen).
fn retry(cmd: &str) -> String {
    format!("for i in $(seq 1 40); do {cmd} && exit 0; sleep 0.25; done; exit 1")
}

#[test]
#[ignore = "bridge networks are unfinished (issue 13): no bridge is made yet; run with --ignored"]
fn user_network_names_aliases_and_cleanup() {
    let k = NetK::new();
    let id = k.ok(&["network", "create", "appnet"]);
    assert_eq!(id.trim().len(), 64, "network create prints the ID: {id}");
    let ls = k.ok(&["network", "ls"]);
    let header = ls.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NETWORK ID") && header.contains("NAME") && header.contains("DRIVER"),
        "{ls}"
    );
    for n in ["appnet", "bridge", "host", "none"] {
        assert!(ls.lines().any(|l| l.contains(n)), "{n} listed:\n{ls}");
    }
    k.ok(&[
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
        "mkdir /w && echo hello-from-web > /w/index.html && exec httpd -f -p 80 -h /w",
    ]);
    for host in ["web", "www"] {
        let out = k.ok(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            BB,
            "sh",
            "-c",
            &retry(&format!("wget -qO- http://{host}/")),
        ]);
        assert_eq!(out.trim(), "hello-from-web", "by {host}");
    }
    // The address came from docker's first user pool.
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["network", "inspect", "appnet"])).expect("json");
    let net = &inspect[0];
    assert_eq!(net["Name"], "appnet");
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    let containers = net["Containers"].as_object().expect("containers");
    assert_eq!(containers.len(), 1, "{net}");
    let web = containers.values().next().expect("web");
    assert_eq!(web["Name"], "web");
    assert_eq!(web["IPv4Address"], "172.18.0.2/16");
    // The bridge and a veth exist while web runs; its rules are in place.
    let bridge = format!("br-{}", &id.trim()[..12]);
    let links = k.links();
    assert!(links.contains(&bridge), "{links:?}");
    assert!(links.iter().any(|l| l.starts_with("veth")), "{links:?}");
    let nat = k.sh_in_ns("iptables -t nat -S POSTROUTING");
    assert!(
        nat.contains("172.18.0.0/16") && nat.contains("MASQUERADE"),
        "{nat}"
    );
    // In use: not removable.
    let o = k.run(&["network", "rm", "appnet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has active endpoints"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    k.ok(&["rm", "-f", "web"]);
    // Nothing left of web: no veth, no address held.
    let mut gone = false;
    for _ in 0..40 {
        if !k.links().iter().any(|l| l.starts_with("veth")) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(gone, "veth left after rm: {:?}", k.links());
    assert_eq!(k.ok(&["network", "rm", "appnet"]).trim(), "appnet");
    assert!(!k.links().contains(&bridge), "bridge removed");
    let nat = k.sh_in_ns("iptables -t nat -S POSTROUTING");
    assert!(!nat.contains("172.18.0.0/16"), "rule removed: {nat}");
    let o = k.run(&["network", "inspect", "appnet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("network appnet not found"));
}

#[test]
#[ignore = "bridge networks are unfinished (issue 13): no bridge is made yet; run with --ignored"]
fn default_bridge_addresses_hosts_dns_and_outbound() {
    let k = NetK::new();
    // A server inside the test namespace, on an address of its own.
    k.sh_in_ns("ip link add d0 type veth peer name d0p && ip link set d0p up && ip addr add 10.99.0.1/24 dev d0 && ip link set d0 up");
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::write(www.path().join("f"), "outside\n").expect("write");
    let mut server = k
        .in_ns("busybox")
        .args(["httpd", "-f", "-p", "10.99.0.1:8099", "-h"])
        .arg(www.path())
        .spawn()
        .expect("httpd");
    let out = k.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "--dns",
        "10.0.0.53",
        "--dns-search",
        "example.com",
        BB,
        "sh",
        "-c",
        &format!(
            "ip -4 addr show eth0; ip route; cat /etc/hosts; cat /etc/resolv.conf; {}",
            retry("wget -qO- http://10.99.0.1:8099/f")
        ),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.contains("inet 172.17.0.2/16"), "{out}");
    assert!(out.contains("default via 172.17.0.1"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost\n"), "{out}");
    assert!(out.contains("10.1.2.3\tdb\n"), "{out}");
    assert!(out.contains("172.17.0.1\tgw\n"), "{out}");
    assert!(out.contains("172.17.0.2\tbox\n"), "{out}");
    assert!(out.contains("nameserver 10.0.0.53\n"), "{out}");
    assert!(out.contains("search example.com\n"), "{out}");
    assert!(out.contains("outside\n"), "reached the server: {out}");
    assert!(k.links().contains(&"kiln0".to_string()));
}

#[test]
#[ignore = "bridge networks are unfinished (issue 13): no bridge is made yet; run with --ignored"]
fn none_host_container_and_link() {
    let k = NetK::new();
    k.sh_in_ns("ip link add d1 type veth peer name d1p");
    let none = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        BB,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(none.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let host = k.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        BB,
        "ls",
        "/sys/class/net",
    ]);
    assert!(host.split_whitespace().any(|l| l == "d1"), "{host}");
    k.ok(&["run", "-d", "--name", "db", BB, "sleep", "300"]);
    let shared = k.ok(&[
        "run",
        "--rm",
        "--network",
        "container:db",
        BB,
        "ip",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(shared.contains("inet 172.17.0.2/16"), "{shared}");
    let linked = k.ok(&[
        "run",
        "--rm",
        "--link",
        "db:dbalias",
        BB,
        "sh",
        "-c",
        "cat /etc/hosts; ping -c 1 -W 5 dbalias",
    ]);
    assert!(linked.contains("172.17.0.2\tdbalias"), "{linked}");
    assert!(linked.contains("1 packets received"), "{linked}");
    let o = k.run(&["run", "--rm", "--network", "nosuch", BB, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("network nosuch not found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
