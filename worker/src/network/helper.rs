//! The container helper's network steps, called from
//! `container::helper::start_container` around its `unshare`:
//! [`before_unshare`] (bridges, rules, resolv.conf, or joining another
//! container's namespace) and [`Prepared::after_unshare`] (the veth pair,
//! then every member's /etc/hosts).

use std::path::Path;

use super::attach::{files_of, refresh_hosts, resolv_text, HostSide, Member, NetMode};
use crate::container::{Container, Store};

/// What the helper does once it has its own namespaces.
#[derive(Debug)]
pub enum Prepared {
    /// Host or none: nothing (as before the network layer).
    Nothing,
    /// A namespace of its own to wire to its bridges.
    Bridge(HostSide),
    /// Joined another container's namespace: no namespace of its own.
    Joined,
}

impl Prepared {
    /// Whether the helper must unshare a network namespace.
    pub fn needs_own_namespace(&self) -> bool {
        matches!(self, Prepared::Bridge(_))
    }

    /// In the container's new network namespace: wire it, then write the
    /// hosts files of every running container sharing a network with it.
    pub fn after_unshare(self, store: &Store, c: &Container) -> Result<(), String> {
        let Prepared::Bridge(host) = self else {
            return Ok(());
        };
        let Some(net) = &c.net else {
            return Ok(());
        };
        host.wire(net).map_err(|e| e.to_string())?;
        let mut members = Vec::new();
        for o in store.list().map_err(|e| e.to_string())? {
            let Some(onet) = &o.net else { continue };
            if onet.mode != NetMode::Bridge || (o.id != c.id && !o.is_alive()) {
                continue;
            }
            members.push(Member {
                id: o.id.clone(),
                name: o.name.clone(),
                hostname: o.hostname.clone(),
                dir: store.dir_of(&o.id),
                net: onet.clone(),
            });
        }
        refresh_hosts(&members).map_err(|e| format!("writing /etc/hosts: {e}"))
    }
}

/// After a container's last run: the hosts files of the running
/// containers that shared a network with it no longer name it.
pub fn after_exit(store: &Store, c: &Container) {
    if !matches!(&c.net, Some(n) if n.mode == NetMode::Bridge) {
        return;
    }
    let Ok(all) = store.list() else { return };
    let members: Vec<Member> = all
        .into_iter()
        .filter(|o| o.id != c.id && o.is_alive())
        .filter_map(|o| {
            let net = o.net.clone().filter(|n| n.mode == NetMode::Bridge)?;
            Some(Member {
                dir: store.dir_of(&o.id),
                id: o.id,
                name: o.name,
                hostname: o.hostname,
                net,
            })
        })
        .collect();
    let _ = refresh_hosts(&members);
}

/// Before the helper unshares: the bridge side (or joining `container:X`),
/// and the container's resolv.conf.
pub fn before_unshare(store: &Store, c: &Container, dir: &Path) -> Result<Prepared, String> {
    let Some(net) = &c.net else {
        return Ok(Prepared::Nothing);
    };
    let (hosts, resolv) = files_of(dir);
    match &net.mode {
        NetMode::Container(other) => {
            let o = store.load(other).map_err(|e| e.to_string())?;
            let pid = match (o.is_alive(), o.pid) {
                (true, Some(pid)) => pid,
                _ => {
                    return Err(format!(
                        "cannot join network namespace of a non running container: {}",
                        o.id
                    ))
                }
            };
            // Its hosts and resolv.conf, as docker shares them.
            let (oh, or) = files_of(&store.dir_of(&o.id));
            for (from, to) in [(oh, &hosts), (or, &resolv)] {
                if from.exists() {
                    std::fs::copy(&from, to).map_err(|e| format!("{}: {e}", to.display()))?;
                }
            }
            crate::sys::join_netns(Path::new(&format!("/proc/{pid}/ns/net")))
                .map_err(|e| format!("joining the network namespace of {}: {e}", o.name))?;
            Ok(Prepared::Joined)
        }
        NetMode::Bridge => {
            let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            std::fs::write(&resolv, resolv_text(net, &host_resolv))
                .map_err(|e| format!("{}: {e}", resolv.display()))?;
            if !hosts.exists() {
                std::fs::write(&hosts, super::attach::hosts_text(net, &c.hostname, &[]))
                    .map_err(|e| format!("{}: {e}", hosts.display()))?;
            }
            let host = HostSide::prepare(net).map_err(|e| e.to_string())?;
            if let (false, Some(a)) = (net.ports.is_empty(), net.networks.first()) {
                let proxy = super::ports::start_proxy(&super::ports::ProxySpec {
                    container_ip: a.ip,
                    bindings: net.ports.clone(),
                })?;
                // Held for this process's life: its end ends the proxy,
                // which then deletes the port rules.
                std::mem::forget(proxy);
            }
            Ok(Prepared::Bridge(host))
        }
    }
}

/// The hosts and resolv.conf files the sandbox binds for `c`, if the
/// network layer wrote them.
pub fn sandbox_files(
    c: &Container,
    dir: &Path,
) -> (Option<std::path::PathBuf>, Option<std::path::PathBuf>) {
    if c.net.is_none() {
        return (None, None);
    }
    let (h, r) = files_of(dir);
    (h.exists().then_some(h), r.exists().then_some(r))
}
