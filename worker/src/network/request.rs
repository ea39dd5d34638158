//! From `kiln run`'s network flags to a container's [`ContainerNet`]:
//! addresses allocated on its networks, `--link` and `container:X`
//! resolved to container IDs, `host-gateway` to the bridge's gateway.

use std::net::Ipv4Addr;

use super::attach::{allocate, ContainerNet, NetMode};
use super::store::Networks;
use crate::container::{Container, Store};

/// What `kiln run` asked for, before the container exists.
#[derive(Debug, Clone, Default)]
pub struct NetRequest {
    /// `--network`: a network name or ID (`bridge` by default), or
    /// `container:X`.
    pub network: String,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP` (IP may be `host-gateway`).
    pub add_hosts: Vec<(String, String)>,
    /// `--link NAME[:ALIAS]`.
    pub links: Vec<(String, String)>,
    /// `-p`, parsed.
    pub publish: Vec<super::ports::PortSpec>,
    /// `-P`: every port of `exposed` on a random host port.
    pub publish_all: bool,
    /// `--expose` (`80/tcp`, ranges expanded), then the image's
    /// `ExposedPorts` added by `create`.
    pub exposed: Vec<String>,
}

/// Why the network flags cannot be honoured (docker's words where it has
/// them).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Network(#[from] super::NetworkError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error("cannot join network namespace of a non running container: {0}")]
    NotRunning(String),
    #[error("could not get container for {0}")]
    LinkTarget(String),
    #[error("conflicting options: custom DNS and --network container:X")]
    DnsWithContainer,
    #[error("network-scoped aliases are only supported for user-defined networks")]
    AliasOnDefault,
    #[error("conflicting options: port publishing and the container type network mode")]
    PortsWithContainer,
    #[error(transparent)]
    Ports(#[from] super::ports::PortError),
    #[error("bridge networks need root in the host's network namespace; rootless kiln runs containers with --network host or none")]
    Rootless,
}

/// Resolves `req` for the new container `c` (already in `store`, so it has
/// its ID and name) and records its addresses in the network state.
pub fn resolve(
    store: &Store,
    c: &Container,
    req: &NetRequest,
) -> Result<ContainerNet, RequestError> {
    if let Some(other) = req.network.strip_prefix("container:") {
        if !req.dns.is_empty() || !req.add_hosts.is_empty() {
            return Err(RequestError::DnsWithContainer);
        }
        if !req.publish.is_empty() || req.publish_all {
            return Err(RequestError::PortsWithContainer);
        }
        let o = store.find(other)?;
        return Ok(ContainerNet {
            mode: NetMode::Container(o.id),
            networks: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            extra_hosts: Vec::new(),
            links: Vec::new(),
            ports: Vec::new(),
            exposed: Vec::new(),
        });
    }
    if crate::userns::in_user_namespace() {
        return Err(RequestError::Rootless);
    }
    let kiln_root = store.kiln_root();
    let networks = Networks::open(&kiln_root)?;
    let target = networks.find(&req.network)?;
    if target.name == "bridge" && !req.aliases.is_empty() {
        return Err(RequestError::AliasOnDefault);
    }
    let mut links = Vec::new();
    for (name, alias) in &req.links {
        let o = store
            .find(name)
            .map_err(|_| RequestError::LinkTarget(name.clone()))?;
        let ip = o
            .net
            .as_ref()
            .and_then(|n| n.networks.iter().find(|a| a.network == "bridge"))
            .map(|a| a.ip.to_string());
        let ip = if target.name == "bridge" {
            ip.ok_or_else(|| RequestError::LinkTarget(name.clone()))?
        } else {
            // On a user-defined network a link is an alias the embedded
            // resolver answers (with the target's current address), as
            // docker's: no hosts line.
            String::new()
        };
        links.push((ip, alias.clone(), o.name.clone(), o.id.clone()));
    }
    let ports = super::ports::bind(&req.publish, req.publish_all, &req.exposed)?;
    let exists = |id: &str| store.dir_of(id).join("state.json").exists();
    let attachments = allocate(
        &networks,
        &c.id,
        &c.name,
        &[(target.id.clone(), req.aliases.clone(), req.ip)],
        &exists,
    )?;
    let gateway = attachments
        .first()
        .map(|a| a.gateway.to_string())
        .unwrap_or_default();
    let extra_hosts = req
        .add_hosts
        .iter()
        .map(|(n, ip)| {
            let ip = if ip == "host-gateway" {
                gateway.clone()
            } else {
                ip.clone()
            };
            (n.clone(), ip)
        })
        .collect();
    let mut exposed = req.exposed.clone();
    for b in &ports {
        if !exposed.contains(&b.key()) {
            exposed.push(b.key());
        }
    }
    Ok(ContainerNet {
        exposed,
        mode: NetMode::Bridge,
        networks: attachments,
        dns: req.dns.clone(),
        dns_search: req.dns_search.clone(),
        dns_options: req.dns_options.clone(),
        extra_hosts,
        links,
        ports,
    })
}

/// `req` with the image config's `ExposedPorts` added to `--expose`'s
/// (for `-P`).
pub fn with_exposed(req: &NetRequest, cfg: &serde_json::Value) -> NetRequest {
    let mut req = req.clone();
    if let Some(ports) = cfg
        .get("ExposedPorts")
        .and_then(serde_json::Value::as_object)
    {
        for k in ports.keys() {
            if !req.exposed.contains(k) {
                req.exposed.push(k.clone());
            }
        }
    }
    req
}

/// Releases a removed container's addresses (called by [`Store::remove`]).
pub fn release(kiln_root: &std::path::Path, cid: &str) {
    let dir = kiln_cache::Root::networks_dir_of(kiln_root);
    if dir.exists() {
        if let Ok(n) = Networks::open(kiln_root) {
            let _ = n.detach_all(cid);
        }
    }
}
