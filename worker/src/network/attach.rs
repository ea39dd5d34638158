//! A container's network: what `kiln run` asked for ([`ContainerNet`],
//! kept in its state), and what its helper does with it
//! ([`HostSide::prepare`] before it unshares its network namespace,
//! [`HostSide::wire`] after): the bridge (made on first use, with its
//! masquerading rule and ip_forward), a veth pair whose host end joins the
//! bridge and whose other end becomes the container's `eth0` with its
//! address and default route. The veth pair goes when the container's
//! namespace does (its last process exits): nothing to clean up on the
//! host for a container; a network's bridge and rules go with
//! `kiln network rm`.
//!
//! `/etc/hosts` and `/etc/resolv.conf` are files in the container's folder,
//! bound in by the sandbox, written as docker writes them; on user-defined
//! networks resolv.conf names docker's embedded resolver (127.0.0.11,
//! [`super::resolver`]), which knows the other containers by name, so
//! `wget http://web/` resolves.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::netlink::Netlink;
use super::store::{NetworkRecord, Networks};

/// Where the container's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "of")]
pub enum NetMode {
    /// A namespace of its own on bridge networks ([`ContainerNet::networks`]).
    Bridge,
    /// `--network container:X`: X's namespace (X's ID).
    Container(String),
}

/// One network the container is on, with its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's ID and name.
    pub network_id: String,
    pub network: String,
    /// Its Linux bridge.
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Addr,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its interface in the container (`eth<N>`); empty for the
    /// network it was created on (`eth<position>`).
    #[serde(default)]
    pub ifname: String,
}

impl Attachment {
    /// The container's interface for this network, `n`th of its networks.
    pub fn ifname_at(&self, n: usize) -> String {
        if self.ifname.is_empty() {
            format!("eth{n}")
        } else {
            self.ifname.clone()
        }
    }
}

/// `kiln run`'s network flags, resolved: kept in the container's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNet {
    pub mode: NetMode,
    /// The networks it is on (the first gets `eth0` and the default route).
    #[serde(default)]
    pub networks: Vec<Attachment>,
    /// `--dns`, `--dns-search`, `--dns-option`.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP` (`host-gateway` already replaced).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--link NAME[:ALIAS]`: (IP, alias, name, container id) at creation
    /// (the IP empty on user-defined networks, where the embedded resolver
    /// answers the alias).
    #[serde(default)]
    pub links: Vec<(String, String, String, String)>,
    /// `-p` / `-P`: the published ports, host ports chosen.
    #[serde(default)]
    pub ports: Vec<super::ports::PortBinding>,
    /// docker's `Config.ExposedPorts` (`80/tcp`): the image's, `--expose`
    /// and the published ones.
    #[serde(default)]
    pub exposed: Vec<String>,
}

/// A failure wiring a container's network (the helper reports it).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct WireError {
    what: String,
    #[source]
    source: io::Error,
}

fn werr(what: impl Into<String>) -> impl FnOnce(io::Error) -> WireError {
    let what = what.into();
    move |source| WireError { what, source }
}

/// The index of the link `name`, which must exist (`what` names it in
/// the error: "finding {what}", ENODEV when absent).
fn must_index(nl: &mut Netlink, name: &str, what: &str) -> Result<u32, WireError> {
    nl.link_index(name)
        .map_err(werr(format!("finding {what}")))?
        .ok_or_else(|| WireError {
            what: what.to_string(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })
}

/// Runs an iptables command, returning whether it succeeded.
pub(crate) fn iptables(args: &[&str]) -> io::Result<bool> {
    // The container helper may run without a PATH holding /usr/sbin.
    let bin = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("iptables");
    Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
}

/// Adds a rule unless it is there (`-C` first, as docker does).
pub(crate) fn ensure_rule(table: &str, chain: &str, rule: &[&str]) -> io::Result<()> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check)? {
        return Ok(());
    }
    let mut add = vec!["-t", table, "-A", chain];
    add.extend_from_slice(rule);
    if iptables(&add)? {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "iptables {} failed",
            add.join(" ")
        )))
    }
}

/// The firewall rules of a bridge network: masquerading out of its subnet
/// and forwarding to and from its bridge (none for `--internal`).
fn bridge_rules(a: &Attachment) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let subnet = format!("{}/{}", a.subnet, a.prefix);
    if a.internal {
        return Vec::new();
    }
    vec![
        (
            "nat",
            "POSTROUTING",
            vec![
                "-s".into(),
                subnet,
                "!".into(),
                "-o".into(),
                a.bridge.clone(),
                "-j".into(),
                "MASQUERADE".into(),
            ],
        ),
        (
            "filter",
            "FORWARD",
            vec!["-i".into(), a.bridge.clone(), "-j".into(), "ACCEPT".into()],
        ),
        (
            "filter",
            "FORWARD",
            vec!["-o".into(), a.bridge.clone(), "-j".into(), "ACCEPT".into()],
        ),
    ]
}

/// docker's DOCKER-ISOLATION chains, kiln's names: traffic from one
/// kiln bridge to another is dropped, so containers on different networks
/// do not reach each other (published ports still do, through the host).
const ISOLATION_1: &str = "KILN-ISOLATION-STAGE-1";
const ISOLATION_2: &str = "KILN-ISOLATION-STAGE-2";

/// A bridge's two isolation rules (stage 1: leaving it for another
/// interface goes to stage 2; stage 2: entering it is dropped).
fn isolation_rules(bridge: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "filter",
            ISOLATION_1,
            v(&["-i", bridge, "!", "-o", bridge, "-j", ISOLATION_2]),
        ),
        ("filter", ISOLATION_2, v(&["-o", bridge, "-j", "DROP"])),
    ]
}

/// The isolation chains and FORWARD's jump to them (first, before the
/// bridges' ACCEPT rules); idempotent.
fn ensure_isolation_chains() -> io::Result<()> {
    for chain in [ISOLATION_1, ISOLATION_2] {
        // Fails when it exists: fine.
        let _ = iptables(&["-t", "filter", "-N", chain]);
    }
    let jump = ["-t", "filter", "-C", "FORWARD", "-j", ISOLATION_1];
    if !iptables(&jump)? && !iptables(&["-t", "filter", "-I", "FORWARD", "1", "-j", ISOLATION_1])? {
        return Err(io::Error::other("iptables -I FORWARD failed"));
    }
    Ok(())
}

fn attachment_of(r: &NetworkRecord) -> Option<Attachment> {
    let (subnet, prefix) = r.subnet?;
    Some(Attachment {
        network_id: r.id.clone(),
        network: r.name.clone(),
        bridge: r.bridge.clone(),
        ip: Ipv4Addr::UNSPECIFIED,
        prefix,
        gateway: r.gateway?,
        subnet,
        internal: r.internal,
        aliases: Vec::new(),
        ifname: String::new(),
    })
}

/// Makes a network's bridge (address, up) and its rules when missing;
/// idempotent. Runs in the host's (or the test's) network namespace.
pub fn ensure_bridge(nl: &mut Netlink, a: &Attachment) -> Result<u32, WireError> {
    nl.add_bridge(&a.bridge)
        .map_err(werr(format!("creating bridge {}", a.bridge)))?;
    let index = must_index(nl, &a.bridge, &format!("bridge {}", a.bridge))?;
    nl.add_address(index, a.gateway, a.prefix)
        .map_err(werr(format!("address of bridge {}", a.bridge)))?;
    nl.set_up(index, None)
        .map_err(werr(format!("bringing up bridge {}", a.bridge)))?;
    if !a.internal {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(werr("enabling ip_forward"))?;
    }
    ensure_isolation_chains().map_err(werr("adding the isolation chains"))?;
    for (table, chain, rule) in bridge_rules(a)
        .into_iter()
        .chain(isolation_rules(&a.bridge))
    {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure_rule(table, chain, &rule).map_err(werr("adding a firewall rule"))?;
    }
    Ok(index)
}

/// Takes a removed network's bridge and rules down (`kiln network rm`).
pub fn remove_bridge(r: &NetworkRecord) -> io::Result<()> {
    let Some(a) = attachment_of(r) else {
        return Ok(());
    };
    for (table, chain, rule) in bridge_rules(&a)
        .into_iter()
        .chain(isolation_rules(&a.bridge))
    {
        let mut del = vec!["-t", table, "-D", chain];
        del.extend(rule.iter().map(String::as_str));
        // Already gone (never used, or removed by hand) is fine.
        let _ = iptables(&del);
    }
    let mut nl = Netlink::open()?;
    if let Some(index) = nl.link_index(&r.bridge)? {
        nl.del_link(index)?;
    }
    Ok(())
}

/// The host side of a container's wiring, opened before the helper
/// unshares its network namespace.
#[derive(Debug)]
pub struct HostSide {
    nl: Netlink,
    bridges: Vec<u32>,
}

impl HostSide {
    /// Opens a netlink socket in the current (host's) namespace and makes
    /// the container's bridges if they are missing.
    pub fn prepare(net: &ContainerNet) -> Result<HostSide, WireError> {
        let mut nl = Netlink::open().map_err(werr("opening netlink"))?;
        let mut bridges = Vec::new();
        for a in &net.networks {
            bridges.push(ensure_bridge(&mut nl, a)?);
        }
        Ok(HostSide { nl, bridges })
    }

    /// In the container's fresh network namespace: `lo` up, and for each
    /// network a veth pair (host end `veth<7 hex>` on the bridge, the other
    /// `eth<N>` here) with its address; the default route through the
    /// first network's gateway (none on an `--internal` one).
    pub fn wire(mut self, net: &ContainerNet) -> Result<(), WireError> {
        let mut inner = Netlink::open().map_err(werr("opening netlink in the container"))?;
        if let Some(lo) = inner.link_index("lo").map_err(werr("finding lo"))? {
            inner.set_up(lo, None).map_err(werr("bringing up lo"))?;
        }
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(werr("opening the container's network namespace"))?;
        for (n, (a, bridge)) in net.networks.iter().zip(&self.bridges).enumerate() {
            let host = veth_name();
            let eth = a.ifname_at(n);
            self.nl
                .add_veth(&host, &eth, own.as_raw_fd())
                .map_err(werr(format!("creating veth pair {host}")))?;
            let hidx = must_index(&mut self.nl, &host, &format!("veth {host}"))?;
            self.nl
                .set_up(hidx, Some(*bridge))
                .map_err(werr(format!("attaching {host} to {}", a.bridge)))?;
            let idx = must_index(&mut inner, &eth, &format!("{eth} in the container"))?;
            inner
                .add_address(idx, a.ip, a.prefix)
                .map_err(werr(format!("address of {eth}")))?;
            inner
                .set_up(idx, None)
                .map_err(werr(format!("bringing up {eth}")))?;
            if n == 0 && !a.internal {
                inner
                    .add_default_route(a.gateway)
                    .map_err(werr("adding the default route"))?;
            }
        }
        Ok(())
    }
}

/// A netlink socket in the network namespace of process `pid` (opened by
/// a short-lived thread that enters it: a socket stays in the namespace
/// it was made in, and the rest of this process stays where it is).
fn netlink_in(pid: i32) -> io::Result<Netlink> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNET)?;
            Netlink::open()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the netlink thread failed")))
    })
}

/// `kiln network connect` of a running container (pid 1 `pid`): the
/// network's bridge (made if missing), a veth pair whose other end becomes
/// `a.ifname` in the container with `a`'s address (no route change, as
/// docker's: the default route stays on the first network).
pub fn connect_running(pid: i32, a: &Attachment) -> Result<(), WireError> {
    let mut nl = Netlink::open().map_err(werr("opening netlink"))?;
    let bridge = ensure_bridge(&mut nl, a)?;
    let mut inner = netlink_in(pid).map_err(werr("entering the container's network namespace"))?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(werr("opening the container's network namespace"))?;
    let host = veth_name();
    nl.add_veth(&host, &a.ifname, ns.as_raw_fd())
        .map_err(werr(format!("creating veth pair {host}")))?;
    let hidx = must_index(&mut nl, &host, &format!("veth {host}"))?;
    nl.set_up(hidx, Some(bridge))
        .map_err(werr(format!("attaching {host} to {}", a.bridge)))?;
    let idx = must_index(
        &mut inner,
        &a.ifname,
        &format!("{} in the container", a.ifname),
    )?;
    inner
        .add_address(idx, a.ip, a.prefix)
        .map_err(werr(format!("address of {}", a.ifname)))?;
    inner
        .set_up(idx, None)
        .map_err(werr(format!("bringing up {}", a.ifname)))
}

/// `kiln network disconnect` of a running container: its interface
/// `ifname` goes (and the veth's host end with it).
pub fn disconnect_running(pid: i32, ifname: &str) -> Result<(), WireError> {
    let mut inner = netlink_in(pid).map_err(werr("entering the container's network namespace"))?;
    if let Some(idx) = inner.link_index(ifname).map_err(werr("finding eth"))? {
        inner
            .del_link(idx)
            .map_err(werr(format!("removing {ifname}")))?;
    }
    Ok(())
}

/// A fresh name for a veth's host end (`veth` and 7 hex digits, docker's
/// shape).
fn veth_name() -> String {
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    format!("veth{}", &hex::encode(rnd)[..7])
}

/// The lines docker starts every container's /etc/hosts with.
const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// A container's /etc/hosts as docker writes it: docker's head,
/// `--add-host` lines, `--link` lines, its own address and hostname (the
/// other containers of its networks are the embedded resolver's,
/// [`super::resolver`]).
pub fn hosts_text(net: &ContainerNet, hostname: &str) -> String {
    let mut s = String::from(HOSTS_HEAD);
    for (name, ip) in &net.extra_hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    for (ip, alias, name, id) in net.links.iter().filter(|l| !l.0.is_empty()) {
        let short = id.get(..12).unwrap_or(id);
        let mut names = vec![alias.as_str()];
        for n in [short, name.as_str()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if let Some(a) = net.networks.first() {
        s.push_str(&format!("{}\t{hostname}\n", a.ip));
    }
    s
}

/// A container's /etc/resolv.conf as docker writes it: `--dns*` over the
/// host's file; nameservers on the host's loopback cannot be reached from
/// a bridge and are dropped, and with none left docker's fallback (Google's
/// public resolvers) is used.
pub fn resolv_text(net: &ContainerNet, host: &str) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => {
                if let Some(a) = f.next() {
                    let loopback = a
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                    if !loopback {
                        servers.push(a.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => search = f.map(str::to_string).collect(),
            Some("options") => options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    if !net.dns.is_empty() {
        servers = net.dns.clone();
    }
    if !net.dns_search.is_empty() {
        search = net
            .dns_search
            .iter()
            .filter(|s| *s != ".")
            .cloned()
            .collect();
    }
    if !net.dns_options.is_empty() {
        options = net.dns_options.clone();
    }
    if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    let mut s = String::new();
    for a in &servers {
        s.push_str(&format!("nameserver {a}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// A container's /etc/resolv.conf on user-defined networks, as docker
/// writes it: the embedded resolver (127.0.0.11) as the only nameserver,
/// the host's (or `--dns-search`) search domains, its options (or
/// `--dns-option`) with `ndots:0` unless the user set ndots, and the
/// external servers the resolver forwards to in a comment.
pub fn resolv_text_embedded(
    net: &ContainerNet,
    host: &str,
    upstreams: &[std::net::IpAddr],
) -> String {
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("search") | Some("domain") => search = f.map(str::to_string).collect(),
            // The host's ndots is for its own resolver, not the embedded one.
            Some("options") => {
                options.extend(f.filter(|o| !o.starts_with("ndots:")).map(str::to_string))
            }
            _ => {}
        }
    }
    if !net.dns_search.is_empty() {
        search = net
            .dns_search
            .iter()
            .filter(|s| *s != ".")
            .cloned()
            .collect();
    }
    let mut ndots_from = "internal";
    if !net.dns_options.is_empty() {
        options = net.dns_options.clone();
    }
    if options.iter().any(|o| o.starts_with("ndots:")) {
        ndots_from = "user";
    } else {
        options.insert(0, "ndots:0".into());
    }
    let mut s = format!("nameserver {}\n", super::resolver::RESOLVER_IP);
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    s.push_str(&format!("options {}\n", options.join(" ")));
    let ext: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
    s.push_str(&format!(
        "\n# Based on host file: '/etc/resolv.conf' (internal resolver)\n# ExtServers: [{}]\n# Option ndots from: {ndots_from}\n",
        ext.join(" ")
    ));
    s
}

/// The hosts and resolv.conf files of a container's folder.
pub fn files_of(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("hosts"), dir.join("resolv.conf"))
}

/// Gives a new container its addresses on `requested` networks (by name
/// or ID, with its aliases and `--ip`), recorded in the network state.
pub fn allocate(
    networks: &Networks,
    cid: &str,
    name: &str,
    requested: &[(String, Vec<String>, Option<Ipv4Addr>)],
    exists: &dyn Fn(&str) -> bool,
) -> Result<Vec<Attachment>, super::NetworkError> {
    let mut out = Vec::new();
    for (key, aliases, ip) in requested {
        let (r, e) = networks.attach(key, cid, name, aliases, *ip, exists)?;
        let Some(mut a) = attachment_of(&r) else {
            return Err(super::NetworkError::NotFound(key.clone()));
        };
        a.ip = e.ip;
        a.aliases = e.aliases;
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> ContainerNet {
        ContainerNet {
            mode: NetMode::Bridge,
            networks: vec![Attachment {
                network_id: "n".into(),
                network: "appnet".into(),
                bridge: "br-x".into(),
                ip: Ipv4Addr::new(172, 18, 0, 2),
                prefix: 16,
                gateway: Ipv4Addr::new(172, 18, 0, 1),
                subnet: Ipv4Addr::new(172, 18, 0, 0),
                internal: false,
                aliases: vec![],
                ifname: String::new(),
            }],
            dns: vec![],
            dns_search: vec![],
            dns_options: vec![],
            extra_hosts: vec![("db".into(), "10.0.0.5".into())],
            links: vec![],
            ports: vec![],
            exposed: vec![],
        }
    }

    #[test]
    fn hosts_as_docker() {
        let t = hosts_text(&net(), "abc");
        assert!(t.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(t.contains("10.0.0.5\tdb\n"));
        assert!(t.ends_with("172.18.0.2\tabc\n"));
    }

    #[test]
    fn resolv_drops_loopback() {
        let n = net();
        assert_eq!(
            resolv_text(&n, "nameserver 127.0.0.53\nsearch lan\noptions edns0\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\noptions edns0\n"
        );
        let mut n = net();
        n.dns = vec!["10.1.1.1".into()];
        n.dns_search = vec!["example.com".into()];
        assert_eq!(
            resolv_text(&n, "nameserver 1.1.1.1\n"),
            "nameserver 10.1.1.1\nsearch example.com\n"
        );
    }
}
