//! Published ports (`-p`, `-P`), as docker publishes them: for each
//! binding a DNAT rule (traffic to one of the host's own addresses on the
//! host port goes to the container's address and port) and a userland
//! proxy listening on the host port, which carries what the kernel cannot
//! DNAT: connections to 127.0.0.1 (as docker-proxy does).
//!
//! The proxy is a re-executed `kiln container-helper proxy`, started by
//! the container's helper before it unshares its network namespace (so it
//! listens in the caller's), with its stdin the read end of a pipe the
//! helper holds: when the helper goes (the container stopped, was removed,
//! or the helper was killed), the proxy sees EOF, deletes its rules and
//! exits. Nothing of a container's ports outlives its helper.

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The environment variable holding the proxy's [`ProxySpec`] (JSON).
pub const PROXY_SPEC_ENV: &str = "KILN_PROXY_SPEC";

/// One `-p` flag, parsed: `[IP:][HOST[-END]:]CONTAINER[-END][/PROTO]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The host address to listen on (all of them when None).
    pub host_ip: Option<IpAddr>,
    /// The host port range (a random free port when None).
    pub host: Option<(u16, u16)>,
    /// The container port range.
    pub container: (u16, u16),
    /// `tcp` or `udp`.
    pub proto: String,
}

/// One published port, as kept in the container's state and shown by
/// `kiln port`, `ps` and `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// IPv4, or IPv6 (served by the proxy alone: no ip6tables rules).
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

impl PortBinding {
    /// docker's `80/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }

    /// docker's `0.0.0.0:18080`.
    pub fn host_text(&self) -> String {
        match self.host_ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.host_port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.host_port),
        }
    }

    /// docker ps's `0.0.0.0:18080->80/tcp`.
    pub fn ps_text(&self) -> String {
        format!("{}->{}", self.host_text(), self.key())
    }
}

/// Why ports cannot be published (docker's words where it has them).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port specification: {0:?}")]
    Bad(String),
    #[error("invalid proto: {0}")]
    Proto(String),
    #[error("invalid ranges specified for container and host Ports: {0}")]
    Ranges(String),
    #[error("Bind for {0} failed: port is already allocated")]
    Allocated(String),
    #[error("published ports need a bridge network (the container's own addresses)")]
    NoBridge,
}

fn parse_range(s: &str, whole: &str) -> Result<(u16, u16), PortError> {
    let bad = || PortError::Bad(whole.to_string());
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses one `-p` value as docker does.
pub fn parse_publish(s: &str) -> Result<PortSpec, PortError> {
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(PortError::Proto(proto));
    }
    // An IPv6 address is bracketed: `[::1]:8080:80`.
    let (v6, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (ip, after) = r
                .split_once("]:")
                .ok_or_else(|| PortError::Bad(s.to_string()))?;
            (Some(ip), after)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match (v6, parts.as_slice()) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(*ip), Some(*h), *c),
        (Some(ip), [h, c]) => (Some(ip), Some(*h), *c),
        _ => return Err(PortError::Bad(s.to_string())),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(
            ip.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| PortError::Bad(s.to_string()))?,
        ),
    };
    let container = parse_range(ctr, s)?;
    let host = match host {
        None | Some("") => None,
        Some(h) => Some(parse_range(h, s)?),
    };
    if let Some((a, b)) = host {
        let (ca, cb) = container;
        // A host range for one container port picks one of them; else
        // the two ranges pair up one to one.
        if ca != cb && b - a != cb - ca {
            return Err(PortError::Ranges(s.to_string()));
        }
    }
    Ok(PortSpec {
        host_ip,
        host,
        container,
        proto,
    })
}

/// Parses one `--expose` value (`PORT[-END][/PROTO]`) into docker's keys
/// (`80/tcp`), one per port of the range.
pub fn parse_expose(s: &str) -> Result<Vec<String>, PortError> {
    let (range, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(PortError::Proto(proto));
    }
    // docker refuses an address here ("80:80" is no port to expose).
    if range.contains(':') {
        return Err(PortError::Bad(s.to_string()));
    }
    let (a, b) = parse_range(range, s)?;
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// Whether `ip:port` can be bound for `proto` right now.
fn free(ip: IpAddr, port: u16, proto: &str) -> Option<u16> {
    let addr = SocketAddr::from((ip, port));
    if proto == "udp" {
        UdpSocket::bind(addr)
            .ok()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
    } else {
        TcpListener::bind(addr)
            .ok()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
    }
}

/// The bindings of `specs` plus, for `-P`, every `exposed` port (`80/tcp`)
/// on a random host port; host ports left open are chosen here (free
/// ones, in the caller's network namespace, where the proxy will listen).
pub fn bind(
    specs: &[PortSpec],
    publish_all: bool,
    exposed: &[String],
) -> Result<Vec<PortBinding>, PortError> {
    let mut all: Vec<PortSpec> = specs.to_vec();
    if publish_all {
        for e in exposed {
            let spec = parse_publish(e)?;
            if !all
                .iter()
                .any(|s| s.container == spec.container && s.proto == spec.proto)
            {
                all.push(spec);
            }
        }
    }
    let mut out: Vec<PortBinding> = Vec::new();
    for s in &all {
        let ip = s.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let taken = |out: &[PortBinding], p: u16| {
            out.iter()
                .any(|b| b.host_port == p && b.proto == s.proto && b.host_ip == ip)
        };
        for (i, cport) in (s.container.0..=s.container.1).enumerate() {
            let host_port = match s.host {
                Some((a, _)) if s.container.0 != s.container.1 => a + i as u16,
                Some((a, b_)) if a == b_ => a,
                Some((a, b)) => (a..=b)
                    .find(|p| !taken(&out, *p) && free(ip, *p, &s.proto).is_some())
                    .ok_or_else(|| PortError::Allocated(format!("{ip}:{a}-{b}")))?,
                None => {
                    let mut port = None;
                    for _ in 0..16 {
                        if let Some(p) = free(ip, 0, &s.proto).filter(|p| !taken(&out, *p)) {
                            port = Some(p);
                            break;
                        }
                    }
                    port.ok_or_else(|| PortError::Allocated(format!("{ip}:0")))?
                }
            };
            out.push(PortBinding {
                host_ip: ip,
                host_port,
                container_port: cport,
                proto: s.proto.clone(),
            });
        }
    }
    Ok(out)
}

/// What the proxy process is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxySpec {
    pub container_ip: Ipv4Addr,
    pub bindings: Vec<PortBinding>,
    /// The container's bridge: traffic coming from it is left to the
    /// proxy (docker's `! -i docker0`), so a container reaches its own
    /// published port through the host's address (hairpin).
    #[serde(default)]
    pub bridge: String,
}

/// The DNAT rules of one binding (table, chain, rule): traffic to one of
/// the host's own addresses (from outside, and from the host's processes
/// unless to loopback, which the proxy carries) goes to the container.
fn rules(
    ip: Ipv4Addr,
    bridge: &str,
    b: &PortBinding,
) -> Vec<(&'static str, &'static str, Vec<String>)> {
    if b.host_ip.is_loopback() || b.host_ip.is_ipv6() {
        return Vec::new();
    }
    let to = format!("{ip}:{}", b.container_port);
    let port = b.host_port.to_string();
    let dst: Vec<String> = if b.host_ip.is_unspecified() {
        Vec::new()
    } else {
        vec!["-d".into(), b.host_ip.to_string()]
    };
    let tail = |extra: Vec<String>| {
        let mut r = extra;
        r.extend(dst.iter().cloned());
        r.extend(
            [
                "-p",
                &b.proto,
                "-m",
                &b.proto,
                "--dport",
                &port,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        r
    };
    let output_extra = if b.host_ip.is_unspecified() {
        vec!["!".into(), "-d".into(), "127.0.0.0/8".into()]
    } else {
        Vec::new()
    };
    let prerouting_extra = if bridge.is_empty() {
        Vec::new()
    } else {
        vec!["!".into(), "-i".into(), bridge.to_string()]
    };
    vec![
        ("nat", "PREROUTING", tail(prerouting_extra)),
        ("nat", "OUTPUT", tail(output_extra)),
    ]
}

fn apply(spec: &ProxySpec, add: bool) -> io::Result<()> {
    for b in &spec.bindings {
        for (table, chain, rule) in rules(spec.container_ip, &spec.bridge, b) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            if add {
                super::attach::ensure_rule(table, chain, &rule)?;
            } else {
                let mut del = vec!["-t", table, "-D", chain];
                del.extend_from_slice(&rule);
                let _ = super::attach::iptables(&del);
            }
        }
    }
    Ok(())
}

/// The proxy's handle kept by the container's helper: dropping it (or the
/// helper's death) ends the proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    _stdin: std::process::ChildStdin,
}

/// Starts the proxy for `spec` (in the current network namespace) and
/// waits until it listens; its error (a port taken) is returned.
pub fn start_proxy(spec: &ProxySpec) -> Result<ProxyHandle, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating kiln: {e}"))?;
    let text = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([crate::container::helper::HELPER_SUBCOMMAND, "proxy"])
        .env(PROXY_SPEC_ENV, text)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the port proxy: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = io::BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if line != "ok" {
        let _ = child.wait();
        return Err(if line.is_empty() {
            "the port proxy failed to start".to_string()
        } else {
            line.to_string()
        });
    }
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| "the port proxy has no stdin".to_string())?;
    // Not waited for: it exits when the helper does, and is reaped by init.
    std::mem::forget(child);
    Ok(ProxyHandle { _stdin: stdin })
}

/// `kiln container-helper proxy`: adds the rules, listens, says `ok` on
/// stdout, carries connections until stdin ends, then deletes the rules.
pub fn proxy_main() -> i32 {
    let spec: ProxySpec =
        match serde_json::from_str(&std::env::var(PROXY_SPEC_ENV).unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                println!("bad proxy spec: {e}");
                return 1;
            }
        };
    let say = |s: &str| {
        let mut o = io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    if let Err(e) = apply(&spec, true) {
        let _ = apply(&spec, false);
        say(&format!("adding the port rules: {e}"));
        return 1;
    }
    let mut started = Vec::new();
    for b in &spec.bindings {
        let target = SocketAddr::from((spec.container_ip, b.container_port));
        let at = SocketAddr::from((b.host_ip, b.host_port));
        let r = if b.proto == "udp" {
            UdpSocket::bind(at).map(|s| Listener::Udp(s, target))
        } else {
            TcpListener::bind(at).map(|l| Listener::Tcp(l, target))
        };
        match r {
            Ok(l) => started.push(l),
            Err(_) => {
                let _ = apply(&spec, false);
                say(&PortError::Allocated(b.host_text()).to_string());
                return 1;
            }
        }
    }
    for l in started {
        std::thread::spawn(move || l.serve());
    }
    say("ok");
    // Until the helper goes.
    let mut sink = [0u8; 64];
    let mut stdin = io::stdin().lock();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    let _ = apply(&spec, false);
    0
}

enum Listener {
    Tcp(TcpListener, SocketAddr),
    Udp(UdpSocket, SocketAddr),
}

impl Listener {
    fn serve(self) {
        match self {
            Listener::Tcp(l, target) => {
                for conn in l.incoming() {
                    let Ok(client) = conn else { continue };
                    std::thread::spawn(move || tcp_pair(client, target));
                }
            }
            Listener::Udp(s, target) => udp_serve(s, target),
        }
    }
}

fn tcp_pair(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&target, std::time::Duration::from_secs(10)) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy_half(client, server));
    copy_half(s2, c2);
    let _ = up.join();
}

/// Copies one direction, then passes the end of it on (half close).
fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// UDP: one socket towards the container per client, its replies sent
/// back from the listening socket.
fn udp_serve(s: UdpSocket, target: SocketAddr) {
    let s = Arc::new(s);
    let peers: Arc<Mutex<std::collections::HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        let existing = peers.lock().ok().and_then(|p| p.get(&from).cloned());
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                    continue;
                };
                if u.connect(target).is_err() {
                    continue;
                }
                let u = Arc::new(u);
                if let Ok(mut p) = peers.lock() {
                    p.insert(from, u.clone());
                }
                let (back, u2, peers2) = (s.clone(), u.clone(), peers.clone());
                let _ = u2.set_read_timeout(Some(std::time::Duration::from_secs(90)));
                std::thread::spawn(move || {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = u2.recv(&mut b) {
                        let _ = back.send_to(&b[..n], from);
                    }
                    if let Ok(mut p) = peers2.lock() {
                        p.remove(&from);
                    }
                });
                u
            }
        };
        let _ = up.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_docker() {
        let p = parse_publish("18080:80").expect("p");
        assert_eq!(
            (p.host, p.container, p.proto.as_str()),
            (Some((18080, 18080)), (80, 80), "tcp")
        );
        let p = parse_publish("127.0.0.1:5353:53/udp").expect("p");
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(p.proto, "udp");
        let p = parse_publish("[::1]:8080:80").expect("p");
        assert_eq!(p.host_ip, Some(std::net::Ipv6Addr::LOCALHOST.into()));
        assert_eq!((p.host, p.container), (Some((8080, 8080)), (80, 80)));
        assert!(parse_publish("[::1]:80").is_err());
        let p = parse_publish("127.0.0.1::80").expect("p");
        assert_eq!(p.host, None);
        let p = parse_publish("8000-8002:80-82").expect("p");
        assert_eq!((p.host, p.container), (Some((8000, 8002)), (80, 82)));
        assert!(parse_publish("8000-8001:80-82").is_err());
        assert!(parse_publish("80/sctp").is_err());
        assert!(parse_publish("x:80").is_err());
        assert_eq!(parse_expose("80").expect("e"), ["80/tcp"]);
        assert_eq!(
            parse_expose("7000-7001/udp").expect("e"),
            ["7000/udp", "7001/udp"]
        );
        assert!(parse_expose("80:80").is_err());
    }

    #[test]
    fn binding_texts() {
        let b = PortBinding {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 18080,
            container_port: 80,
            proto: "tcp".into(),
        };
        assert_eq!(b.ps_text(), "0.0.0.0:18080->80/tcp");
    }
}
