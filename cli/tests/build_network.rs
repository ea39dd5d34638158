//! A build's RUN steps get a network namespace of their own (outbound
//! through slirp4netns, as BuildKit gives each step its own), so a step
//! cannot reach a service on the host's 127.0.0.1; the host's network is
//! behind `--allow network.host`. The namespaces are the build's alone:
//! none of them, and no slirp4netns, outlives it. No host interface or
//! firewall rule is touched (slirp4netns is a user-mode stack).

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A service on the host's loopback that counts its connections.
fn host_service() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            if c.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, hits)
}

/// A step that tries the service and notes its network.
fn dockerfile(port: u16, flag: &str) -> String {
    format!(
        "FROM busybox:1.35\n\
         RUN {flag} (nc 127.0.0.1 {port} </dev/null && echo reached || echo unreachable) > /r; \
         (grep -q '^tap0\t00000000' /proc/net/route && echo own-route || echo no-route) > /route\n"
    )
}

fn build(
    k: &Kiln,
    name: &str,
    df: &str,
    extra: &[&str],
) -> (std::process::Output, std::path::PathBuf) {
    let ctx = k.context(name, &[("Dockerfile", df)]);
    let out = k.path(&format!("{name}-out"));
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    let ctx = ctx.display().to_string();
    args.push(&ctx);
    (k.run(&args), out)
}

fn read(dir: &std::path::Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f))
        .unwrap_or_else(|e| panic!("{f}: {e}"))
        .trim()
        .to_string()
}

/// slirp4netns processes serving this store's namespaces.
fn slirps_of(k: &Kiln) -> usize {
    let root = k.root.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("slirp4netns") && c.contains(&root))
        .count()
}

#[test]
fn a_step_has_a_network_of_its_own_without_the_hosts_loopback() {
    let k = Kiln::with_busybox(KILN);
    let (port, hits) = host_service();
    let (o, out) = build(&k, "own", &dockerfile(port, ""), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "r"), "unreachable");
    assert_eq!(
        read(&out, "route"),
        "own-route",
        "outbound goes through tap0"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(slirps_of(&k), 0, "slirp4netns outlived the build");

    // --network none: no way out at all.
    let (o, out) = build(
        &k,
        "none",
        &dockerfile(port, ""),
        &["--no-cache", "--network", "none"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "r"), "unreachable");
    assert_eq!(read(&out, "route"), "no-route");
}

#[test]
fn the_hosts_network_needs_allow_network_host() {
    let k = Kiln::with_busybox(KILN);
    let (port, hits) = host_service();
    let df = dockerfile(port, "");
    let (o, _) = build(&k, "flag", &df, &["--network", "host"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("network.host is not allowed"),
        "{}",
        stderr(&o)
    );

    let df_run = dockerfile(port, "--network=host");
    let (o, _) = build(&k, "run-flag", &df_run, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("network.host is not allowed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing ran");

    let (o, out) = build(
        &k,
        "allowed",
        &df,
        &["--network", "host", "--allow", "network.host"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "r"), "reached");
    let (o, out) = build(&k, "allowed-run", &df_run, &["--allow", "network.host"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "r"), "reached");
    assert!(hits.load(Ordering::SeqCst) >= 2);
}

/// A host whose resolver is on its own loopback (systemd-resolved's
/// 127.0.0.53): a step in its own namespace asks slirp4netns's forwarder
/// instead. The host's resolv.conf is replaced only inside a mount
/// namespace of the test's own.
#[test]
fn a_loopback_nameserver_is_replaced_by_the_forwarder() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "dns",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN cat /etc/resolv.conf > /resolv\n",
        )],
    );
    let fake = k.path("resolv.conf");
    std::fs::write(&fake, "search lan\nnameserver 127.0.0.53\noptions edns0\n").unwrap();
    let out = k.path("dns-out");
    let script = format!(
        "set -e\nmount --bind {fake} /etc/resolv.conf\n\
         KILN_ROOT={root} {kiln} build --progress plain -o type=local,dest={out} {ctx}\n",
        fake = fake.display(),
        root = k.root.display(),
        kiln = KILN,
        out = out.display(),
        ctx = ctx.display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("resolv")).unwrap(),
        "search lan\nnameserver 10.0.2.3\noptions edns0\n"
    );
}
