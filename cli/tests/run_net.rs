//! Container networks end to end (`--network bridge|NAME|host|none|
//! container:X`, `kiln network …`, `--add-host`, `--dns`, `--link`), as
//! root. Every test first makes a network namespace of its own (a file
//! bound by `unshare --net=FILE`) and runs every kiln command inside it
//! with `nsenter --net=FILE`, so the bridges, veth pairs and firewall rules
//! kiln makes live and die there; the host's interfaces and firewall are
//! never touched, and traffic goes only to addresses inside it.

use kiln_testsupport::netns::{retry, NetKiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// kiln on a store of its own, inside a network namespace of its own.
type NetK = NetKiln;

fn netk() -> NetK {
    NetKiln::new(KILN, "kiln-nettest")
}

/// What these tests ask of the namespace besides kiln.
trait NetExt {
    /// A shell command inside the namespace (test scaffolding: addresses,
    /// listing links and rules); its stdout.
    fn sh_in_ns(&self, script: &str) -> String;
    /// Links of the namespace, by name.
    fn links(&self) -> Vec<String>;
    /// The NAT rules of the namespace.
    fn nat(&self) -> String;
}

impl NetExt for NetK {
    fn sh_in_ns(&self, script: &str) -> String {
        self.ns.sh(script)
    }

    fn links(&self) -> Vec<String> {
        self.ns.links()
    }

    fn nat(&self) -> String {
        self.sh_in_ns("iptables -t nat -S")
    }
}

#[test]
fn user_network_names_aliases_and_cleanup() {
    let k = netk();
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
    assert_eq!(
        k.ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}}",
            "--filter",
            "name=app"
        ]),
        "appnet bridge\n"
    );
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
    // The clients are gone: web's /etc/hosts names only itself again
    // (kiln's stand-in for docker's embedded DNS is every member's hosts
    // file, rewritten as containers come and go).
    k.eventually("web's hosts file drops the clients", || {
        let hosts = k.ok(&["exec", "web", "cat", "/etc/hosts"]);
        hosts.lines().filter(|l| l.starts_with("172.18.")).count() == 1
    });
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
    k.eventually("no process left", || k.procs().is_empty());
    assert_eq!(k.ok(&["network", "rm", "appnet"]).trim(), "appnet");
    assert!(!k.links().contains(&bridge), "bridge removed");
    let nat = k.sh_in_ns("iptables -t nat -S POSTROUTING");
    assert!(!nat.contains("172.18.0.0/16"), "rule removed: {nat}");
    let o = k.run(&["network", "inspect", "appnet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("network appnet not found"));
}

#[test]
fn default_bridge_addresses_hosts_dns_and_outbound() {
    let k = netk();
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
fn none_host_container_and_link() {
    let k = netk();
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

/// `-p` (to all addresses, to 127.0.0.1, a range), `-P` with EXPOSE,
/// `kiln port`, `ps`'s PORTS, and nothing left after `rm -f`.
#[test]
fn published_ports_reachable_and_cleaned_up() {
    let k = netk();
    // An address of the namespace's own besides loopback (the DNAT path).
    k.sh_in_ns("ip link add d0 type veth peer name d0p && ip link set d0p up && ip addr add 10.99.0.1/24 dev d0 && ip link set d0 up");
    let web = "mkdir /w && echo hello-published > /w/index.html && exec httpd -f -p 80 -h /w";
    k.ok(&[
        "run", "-d", "--name", "web", "-p", "18080:80", BB, "sh", "-c", web,
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "lo",
        "-p",
        "127.0.0.1:18081:80",
        "-p",
        "18090-18091:90-91/udp",
        BB,
        "sh",
        "-c",
        web,
    ]);
    for url in [
        "http://127.0.0.1:18080/",
        "http://10.99.0.1:18080/",
        "http://127.0.0.1:18081/",
    ] {
        let out = k.sh_in_ns(&retry(&format!("busybox wget -qO- {url}")));
        assert_eq!(out.trim(), "hello-published", "{url}");
    }
    // Bound to 127.0.0.1 only: not on the other address.
    let o = k
        .in_ns("sh")
        .args(["-c", "busybox wget -T 2 -qO- http://10.99.0.1:18081/"])
        .output()
        .expect("wget");
    assert!(!o.status.success(), "18081 is on 127.0.0.1 only");
    assert_eq!(k.ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:18080");
    assert_eq!(k.ok(&["port", "web", "80"]).trim(), "0.0.0.0:18080");
    assert_eq!(
        k.ok(&["port", "lo"]).lines().collect::<Vec<_>>(),
        [
            "80/tcp -> 127.0.0.1:18081",
            "90/udp -> 0.0.0.0:18090",
            "91/udp -> 0.0.0.0:18091"
        ]
    );
    let o = k.run(&["port", "web", "81"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No public port '81/tcp' published for web")
    );
    let ps = k.ok(&["ps"]);
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    let nat = k.nat();
    assert!(nat.contains("--to-destination 172.17.0.2:80"), "{nat}");
    // A port taken: the second container fails as docker's does.
    let o = k.run(&["run", "-d", "-p", "18080:80", BB, "sleep", "30"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("port is already allocated"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // -P publishes the image's EXPOSEd ports on random host ports.
    let ctx = tempfile::tempdir().expect("ctx");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:1.35\nEXPOSE 80\n",
    )
    .expect("df");
    k.ok(&[
        "build",
        "-q",
        "-t",
        "exposed:1",
        ctx.path().to_str().expect("utf8"),
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "-P",
        "exposed:1",
        "sh",
        "-c",
        web,
    ]);
    let hp = k.ok(&["port", "pub", "80/tcp"]);
    let port = hp.trim().strip_prefix("0.0.0.0:").expect("0.0.0.0:PORT");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 1024), "{hp}");
    let out = k.sh_in_ns(&retry(&format!(
        "busybox wget -qO- http://127.0.0.1:{port}/"
    )));
    assert_eq!(out.trim(), "hello-published");
    // rm -f of everything: no veth, no DNAT rule, no listener, no process.
    for c in ["web", "lo", "pub"] {
        k.ok(&["rm", "-f", c]);
    }
    k.eventually("port rules removed", || !k.nat().contains("DNAT"));
    k.eventually("veths removed", || {
        !k.links().iter().any(|l| l.starts_with("veth"))
    });
    k.eventually("no process left", || k.procs().is_empty());
    let o = k
        .in_ns("sh")
        .args(["-c", "busybox wget -T 2 -qO- http://127.0.0.1:18080/"])
        .output()
        .expect("wget");
    assert!(!o.status.success(), "nothing listens on 18080 any more");
}

/// `network ls --filter` as docker's: keys must all hold, values of one key
/// are alternatives except `label`'s, which must all hold; `dangling` is a
/// user network no container uses; an unknown key is the daemon's error.
#[test]
fn network_ls_filters_as_docker() {
    let k = netk();
    k.ok(&[
        "network", "create", "--label", "team=a", "--label", "tier=web", "appnet",
    ]);
    k.ok(&["network", "create", "--label", "team=b", "other"]);
    k.ok(&["network", "create", "spare"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--network",
        "appnet",
        BB,
        "sleep",
        "600",
    ]);
    let names = |filters: &[&str]| {
        let mut args = vec!["network", "ls", "--format", "{{.Name}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        k.ok(&args)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(names(&["name=app", "name=oth"]), "appnet other");
    assert_eq!(names(&["label=team"]), "appnet other");
    assert_eq!(names(&["label=team=a", "label=tier=web"]), "appnet");
    assert_eq!(names(&["label=team=b", "label=tier=web"]), "");
    assert_eq!(names(&["label=team", "name=oth"]), "other");
    assert_eq!(names(&["type=builtin"]), "bridge host none");
    assert_eq!(names(&["type=custom"]), "appnet other spare");
    assert_eq!(names(&["dangling=true"]), "other spare");
    assert_eq!(names(&["driver=null"]), "none");
    let o = k.run(&["network", "ls", "--filter", "colour=red"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Error response from daemon: invalid filter 'colour'"
    );
    k.ok(&["rm", "-f", "user"]);
    assert_eq!(names(&["dangling=true"]), "appnet other spare");
}
