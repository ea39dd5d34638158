//! docker's embedded DNS server (127.0.0.11) for containers on
//! user-defined networks: a re-executed `kiln container-helper dns`, one
//! per running container, listening on 127.0.0.11:53 (UDP and TCP) inside
//! the container's network namespace.
//!
//! It answers, from the stores (so what it says is always current),
//! the names of the running containers that share a user-defined network
//! with the asking container: their names, network aliases and short IDs,
//! also as `NAME.NETWORK`; the container's `--link` aliases; and PTR
//! queries for their addresses. AAAA and other types for those names get
//! an empty answer (no IPv6 on kiln's networks). Every other query goes to
//! the external servers (`--dns`, else the host's resolv.conf, else
//! docker's fallback 8.8.8.8 / 8.8.4.4), unless every network of the
//! container is `--internal`.
//!
//! How it lives: the container's helper starts it before it unshares its
//! namespaces (so the resolver is in the host's network and PID
//! namespaces), then, once the container's namespace is wired, says `go
//! PID` on its stdin. The resolver enters that namespace, binds its two
//! sockets there, returns to the host's namespace (where its queries to
//! external servers are sent from, as docker's are for loopback servers:
//! a host's 127.0.0.53 works) and says `ok`. When the helper goes its
//! stdin ends and the resolver exits: nothing of it outlives the
//! container's run.

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dns::{self, Query};
use super::store::Networks;
use crate::container::Store;

/// The environment variable holding the resolver's [`ResolverSpec`].
pub const RESOLVER_SPEC_ENV: &str = "KILN_DNS_SPEC";

/// The resolver's address in every container (docker's).
pub const RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// How long one external server gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Forwarded queries in flight at most (more are dropped: the client
/// retries).
const MAX_IN_FLIGHT: usize = 64;

/// What the resolver is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolverSpec {
    /// The kiln store (`$KILN_ROOT`).
    pub kiln_root: PathBuf,
    /// The container it serves.
    pub container: String,
    /// External servers, in order.
    pub upstreams: Vec<IpAddr>,
}

/// Whether a container with `net` gets an embedded resolver: it is on a
/// user-defined network (docker's default bridge has none).
pub fn wanted(net: &super::ContainerNet) -> bool {
    net.networks.iter().any(|a| a.network != "bridge")
}

/// The external servers for `net`: `--dns`, else the host's nameservers,
/// else docker's fallback; none when every user-defined network of the
/// container is internal.
pub fn upstreams(net: &super::ContainerNet, host_resolv: &str) -> Vec<IpAddr> {
    if net
        .networks
        .iter()
        .filter(|a| a.network != "bridge")
        .all(|a| a.internal)
    {
        return Vec::new();
    }
    let parse = |s: &str| s.parse::<IpAddr>().ok();
    let mut out: Vec<IpAddr> = net.dns.iter().filter_map(|s| parse(s)).collect();
    if out.is_empty() {
        out = host_resolv
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("nameserver"))
                    .then(|| f.next().and_then(parse))
                    .flatten()
            })
            .collect();
    }
    if out.is_empty() {
        out = vec![
            IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
            IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
        ];
    }
    out
}

/// The started (not yet listening) resolver, held by the helper.
#[derive(Debug)]
pub struct Resolver {
    child: Child,
}

impl Resolver {
    /// Starts the resolver process (in the caller's namespaces).
    pub fn spawn(spec: &ResolverSpec) -> Result<Resolver, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating kiln: {e}"))?;
        let text = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args([crate::container::helper::HELPER_SUBCOMMAND, "dns"])
            .env(RESOLVER_SPEC_ENV, text)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the DNS resolver: {e}"))?;
        Ok(Resolver { child })
    }

    /// From the container's (new) network namespace: makes the resolver
    /// listen there and waits until it does. Its stdin stays open for the
    /// rest of this process's life (its end ends the resolver).
    pub fn listen_in_my_namespace(mut self) -> Result<(), String> {
        let fail = |child: &mut Child, msg: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err(msg)
        };
        let Some(mut stdin) = self.child.stdin.take() else {
            return fail(&mut self.child, "the DNS resolver has no stdin".into());
        };
        if let Err(e) = writeln!(stdin, "go {}", std::process::id()) {
            return fail(&mut self.child, format!("starting the DNS resolver: {e}"));
        }
        let mut line = String::new();
        if let Some(out) = self.child.stdout.take() {
            let _ = io::BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ok" {
            let msg = match line.trim() {
                "" => "the DNS resolver failed to start".to_string(),
                l => l.to_string(),
            };
            return fail(&mut self.child, msg);
        }
        // Not waited for: it exits when this process does, and is then
        // reaped by init (as the port proxy).
        std::mem::forget(stdin);
        std::mem::forget(self.child);
        Ok(())
    }
}

fn say(s: &str) {
    let mut o = io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

/// `kiln container-helper dns`: waits for `go PID`, listens in PID's
/// network namespace, says `ok`, answers until stdin ends.
pub fn resolver_main() -> i32 {
    let spec: ResolverSpec =
        match serde_json::from_str(&std::env::var(RESOLVER_SPEC_ENV).unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("bad resolver spec: {e}"));
                return 1;
            }
        };
    let mut stdin = io::stdin();
    let mut line = String::new();
    if stdin.read_line(&mut line).is_err() {
        return 0;
    }
    let Some(pid) = line
        .trim()
        .strip_prefix("go ")
        .and_then(|p| p.parse::<u32>().ok())
    else {
        // The helper went before the container's namespace was made.
        return 0;
    };
    let (udp, tcp) = match bind_in(pid) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("starting the DNS resolver: {e}"));
            return 1;
        }
    };
    say("ok");
    let ctx = Arc::new(Ctx {
        root: spec.kiln_root,
        id: spec.container,
        upstreams: spec
            .upstreams
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect(),
        in_flight: AtomicUsize::new(0),
    });
    // The helper's end: leave.
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    {
        let ctx = ctx.clone();
        std::thread::spawn(move || serve_tcp(tcp, ctx));
    }
    serve_udp(udp, ctx);
    0
}

/// Binds 127.0.0.11:53 (UDP and TCP) in `pid`'s network namespace, which
/// must be another than ours (never the host's), then comes back.
fn bind_in(pid: u32) -> io::Result<(UdpSocket, TcpListener)> {
    if std::os::unix::process::parent_id() != pid {
        return Err(io::Error::other("the helper is not this process's parent"));
    }
    let own = std::fs::File::open("/proc/self/ns/net")?;
    let target = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (a, b) = (own.metadata()?, target.metadata()?);
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return Err(io::Error::other(
            "the container has no network namespace of its own",
        ));
    }
    crate::sys::setns(target.as_raw_fd(), libc::CLONE_NEWNET)?;
    let at = SocketAddr::from((RESOLVER_IP, 53));
    let bound = UdpSocket::bind(at).and_then(|u| Ok((u, TcpListener::bind(at)?)));
    // Back home whatever happened: external queries leave from here.
    crate::sys::setns(own.as_raw_fd(), libc::CLONE_NEWNET)?;
    bound
}

struct Ctx {
    root: PathBuf,
    id: String,
    upstreams: Vec<SocketAddr>,
    in_flight: AtomicUsize,
}

fn serve_udp(sock: UdpSocket, ctx: Arc<Ctx>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let msg = buf[..n].to_vec();
        match local_answer(&ctx, &msg) {
            Answer::Local(a) => {
                let _ = sock.send_to(&a, from);
            }
            Answer::Drop => {}
            Answer::Forward(q) => {
                if ctx.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                    ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (sock, ctx) = (sock.clone(), ctx.clone());
                std::thread::spawn(move || {
                    let a = forward(&ctx.upstreams, &msg)
                        .unwrap_or_else(|| q.answer(dns::RCODE_SERVFAIL, &[]));
                    let _ = sock.send_to(&a, from);
                    ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
}

fn serve_tcp(l: TcpListener, ctx: Arc<Ctx>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        if ctx.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let _ = tcp_conn(conn, &ctx);
            ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Queries on one TCP connection (each with its 2-byte length), until the
/// client closes it or is idle for 10 s.
fn tcp_conn(mut c: TcpStream, ctx: &Ctx) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let mut len = [0u8; 2];
        c.read_exact(&mut len)?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut msg)?;
        let a = match local_answer(ctx, &msg) {
            Answer::Local(a) => a,
            Answer::Drop => return Ok(()),
            Answer::Forward(q) => {
                forward(&ctx.upstreams, &msg).unwrap_or_else(|| q.answer(dns::RCODE_SERVFAIL, &[]))
            }
        };
        let Ok(n) = u16::try_from(a.len()) else {
            return Ok(());
        };
        c.write_all(&n.to_be_bytes())?;
        c.write_all(&a)?;
    }
}

enum Answer {
    Local(Vec<u8>),
    Forward(Query),
    Drop,
}

/// The resolver's own answer to `msg`, or what to do with it.
fn local_answer(ctx: &Ctx, msg: &[u8]) -> Answer {
    let Some(q) = Query::parse(msg) else {
        return Answer::Drop;
    };
    if q.qtype == dns::TYPE_PTR {
        if let Some(ip) = reverse_ip(&q.name) {
            let names = names_of(ctx, ip);
            if !names.is_empty() {
                return Answer::Local(q.answer_ptr(&names));
            }
        }
    } else {
        let ips = lookup(ctx, &q.name);
        if !ips.is_empty() {
            let ips = if q.qtype == dns::TYPE_A {
                ips
            } else {
                Vec::new()
            };
            return Answer::Local(q.answer(dns::RCODE_OK, &ips));
        }
    }
    if ctx.upstreams.is_empty() {
        // An internal network: nothing beyond its containers.
        return Answer::Local(q.answer(dns::RCODE_NXDOMAIN, &[]));
    }
    Answer::Forward(q)
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [d, c, b, a] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

/// One running container on a network shared with the asking one.
struct Peer {
    id: String,
    name: String,
    ip: Ipv4Addr,
    aliases: Vec<String>,
    network: String,
}

/// The running containers on the asking container's user-defined
/// networks (itself included), and its `--link`s (alias, target ID).
fn peers(ctx: &Ctx) -> (Vec<Peer>, Vec<(String, String, String)>) {
    let (Ok(store), Ok(nets)) = (Store::open(&ctx.root), Networks::open(&ctx.root)) else {
        return (Vec::new(), Vec::new());
    };
    let Some(net) = store.load(&ctx.id).ok().and_then(|c| c.net) else {
        return (Vec::new(), Vec::new());
    };
    let all = nets.list().unwrap_or_default();
    let mut out = Vec::new();
    let mut alive: std::collections::HashMap<String, Option<String>> = Default::default();
    for a in net.networks.iter().filter(|a| a.network != "bridge") {
        let Some(r) = all.iter().find(|r| r.id == a.network_id) else {
            continue;
        };
        for (cid, e) in &r.endpoints {
            // The current name (a rename is seen), when it runs.
            let name = alive
                .entry(cid.clone())
                .or_insert_with(|| {
                    store
                        .load(cid)
                        .ok()
                        .filter(|c| c.is_alive())
                        .map(|c| c.name)
                })
                .clone();
            let Some(name) = name else { continue };
            out.push(Peer {
                id: cid.clone(),
                name,
                ip: e.ip,
                aliases: e.aliases.clone(),
                network: r.name.clone(),
            });
        }
    }
    let links = net
        .links
        .iter()
        .map(|(_, alias, name, id)| (alias.clone(), name.clone(), id.clone()))
        .collect();
    (out, links)
}

/// The addresses `name` has for the asking container.
fn lookup(ctx: &Ctx, name: &str) -> Vec<Ipv4Addr> {
    let (peers, links) = peers(ctx);
    let mut ips = Vec::new();
    for p in &peers {
        // `web` or `web.appnet`.
        let q = name
            .strip_suffix(p.network.to_ascii_lowercase().as_str())
            .and_then(|s| s.strip_suffix('.'))
            .unwrap_or(name);
        let hit = p.name.eq_ignore_ascii_case(q)
            || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(q))
            || p.id.get(..12) == Some(q)
            || links.iter().any(|(alias, lname, lid)| {
                *lid == p.id && (alias.eq_ignore_ascii_case(q) || lname.eq_ignore_ascii_case(q))
            });
        if hit && !ips.contains(&p.ip) {
            ips.push(p.ip);
        }
    }
    ips
}

/// The names (`NAME.NETWORK`) of the container at `ip`, for PTR.
fn names_of(ctx: &Ctx, ip: Ipv4Addr) -> Vec<String> {
    let (peers, _) = peers(ctx);
    peers
        .iter()
        .filter(|p| p.ip == ip)
        .map(|p| format!("{}.{}", p.name, p.network))
        .take(1)
        .collect()
}

/// Asks the external servers in turn; the first answer to this query.
fn forward(upstreams: &[SocketAddr], msg: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    for up in upstreams {
        let any: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(any) else {
            continue;
        };
        if sock.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
            || sock.connect(up).is_err()
            || sock.send(msg).is_err()
        {
            continue;
        }
        while let Ok(n) = sock.recv(&mut buf) {
            if n >= 2 && buf[..2] == msg[..2] {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_ip("3.0.18.172.in-addr.arpa"),
            Some(Ipv4Addr::new(172, 18, 0, 3))
        );
        assert_eq!(reverse_ip("x.0.18.172.in-addr.arpa"), None);
        assert_eq!(reverse_ip("example.com"), None);
    }
}
