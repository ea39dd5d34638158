//! `kiln run`'s network flags (`--network`, `--network-alias`, `--ip`,
//! `--add-host`, `--dns*`, `--link`) parsed into the worker's request.

use kiln_worker::network::NetRequest;
use kiln_worker::sandbox::Network;

/// The sandbox's network mode and, for bridge networks and `container:X`,
/// the network layer's request. Errors are docker's words.
#[allow(clippy::too_many_arguments)]
pub fn request(
    network: Option<&str>,
    aliases: &[String],
    ip: Option<&str>,
    add_host: &[String],
    dns: &[String],
    dns_search: &[String],
    dns_option: &[String],
    link: &[String],
    (publish, publish_all): (&[String], bool),
    expose: &[String],
) -> Result<(Network, Option<NetRequest>), String> {
    let mut exposed: Vec<String> = Vec::new();
    for e in expose {
        for k in kiln_worker::network::ports::parse_expose(e).map_err(|e| e.to_string())? {
            if !exposed.contains(&k) {
                exposed.push(k);
            }
        }
    }
    let publish = publish
        .iter()
        .map(|p| kiln_worker::network::ports::parse_publish(p).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // docker's default is `bridge` (kiln's `kiln0`, 172.17.0.0/16).
    // Rootless kiln cannot make bridges (they need root in the host's
    // network namespace): it keeps the host's network as its default.
    // `KILN_DEFAULT_NETWORK` replaces that default, as dockerd's
    // `--bridge none` does for docker (kiln's own tests set `host`, so
    // that only the network tests, inside namespaces of their own, ever
    // make a bridge).
    let configured = std::env::var("KILN_DEFAULT_NETWORK")
        .ok()
        .filter(|v| !v.is_empty());
    let default = match configured {
        Some(v) => v,
        None if kiln_worker::userns::in_user_namespace() => "host".to_string(),
        None => "bridge".to_string(),
    };
    let network = network.unwrap_or(&default);
    let mut add_hosts = Vec::new();
    for h in add_host {
        // NAME:IP or NAME=IP; an IPv6 address holds colons itself.
        let (n, a) = h
            .split_once('=')
            .or_else(|| h.split_once(':'))
            .ok_or_else(|| format!("bad format for add-host: {h:?}"))?;
        if n.is_empty() || (a != "host-gateway" && a.parse::<std::net::IpAddr>().is_err()) {
            return Err(format!("invalid IP address in add-host: {a:?}"));
        }
        add_hosts.push((n.to_string(), a.to_string()));
    }
    for d in dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{d} is not an ip address"));
        }
    }
    // docker's checks of `--network container:X` against flags that would
    // need a network of the container's own.
    if network.starts_with("container:") {
        if !expose.is_empty() {
            return Err(
                "conflicting options: port exposing and the container type network mode".into(),
            );
        }
        if !link.is_empty() {
            return Err("conflicting options: container type network can't be used with links. This would result in undefined behavior".into());
        }
    }
    let mode = match network {
        "host" => Some(Network::Host),
        "none" => Some(Network::None),
        _ => None,
    };
    if let Some(mode) = mode {
        if !aliases.is_empty() {
            return Err(
                "network-scoped aliases are only supported for user-defined networks".into(),
            );
        }
        if !link.is_empty() {
            return Err("conflicting options: host type networking can't be used with links. This would result in undefined behavior".into());
        }
        if mode == Network::Host && (!publish.is_empty() || publish_all) {
            eprintln!("WARNING: Published ports are discarded when using host network mode");
        }
        // host and none keep the host's /etc/hosts and resolv.conf, as
        // before (no file of the network layer's).
        return Ok((mode, None));
    }
    let ip = match ip {
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("invalid IPv4 address: {s}"))?,
        ),
        None => None,
    };
    let links = link
        .iter()
        .map(|l| {
            let (n, a) = l.split_once(':').unwrap_or((l, l));
            (n.trim_start_matches('/').to_string(), a.to_string())
        })
        .collect();
    let network = if network == "default" {
        "bridge"
    } else {
        network
    };
    Ok((
        Network::Private,
        Some(NetRequest {
            network: network.to_string(),
            aliases: aliases.to_vec(),
            ip,
            dns: dns.to_vec(),
            dns_search: dns_search.to_vec(),
            dns_options: dns_option.to_vec(),
            add_hosts,
            links,
            publish,
            publish_all,
            exposed,
        }),
    ))
}
