//! The container helper's network steps, called from
//! `container::helper::start_container` around its `unshare`:
//! [`before_unshare`] (bridges, rules, hosts and resolv.conf, the port
//! proxy and the embedded DNS resolver started, or joining another
//! container's namespace) and [`Prepared::after_unshare`] (the veth pairs,
//! then the resolver listening in the new namespace).

use std::path::Path;

use super::attach::{files_of, resolv_text, HostSide, NetMode};
use super::resolver::{Resolver, ResolverSpec};
use crate::container::{Container, Store};

/// What the helper does once it has its own namespaces.
#[derive(Debug)]
pub enum Prepared {
    /// Host or none: nothing (as before the network layer).
    Nothing,
    /// A namespace of its own to wire to its bridges, and on user-defined
    /// networks the resolver to start there.
    Bridge(HostSide, Option<Resolver>),
    /// Joined another container's namespace: no namespace of its own.
    Joined,
}

impl Prepared {
    /// Whether the helper must unshare a network namespace.
    pub fn needs_own_namespace(&self) -> bool {
        matches!(self, Prepared::Bridge(..))
    }

    /// In the container's new network namespace: wire it, then make the
    /// embedded resolver listen there.
    pub fn after_unshare(self, _store: &Store, c: &Container) -> Result<(), String> {
        let Prepared::Bridge(host, resolver) = self else {
            return Ok(());
        };
        let Some(net) = &c.net else {
            return Ok(());
        };
        host.wire(net).map_err(|e| e.to_string())?;
        if let Some(r) = resolver {
            r.listen_in_my_namespace()?;
        }
        Ok(())
    }
}

/// After a container's last run. Nothing to do: its veths went with its
/// namespace, its proxy and resolver with its helper, and the resolvers
/// of the others no longer name it (they read the stores).
pub fn after_exit(_store: &Store, _c: &Container) {}

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
            let resolver = if super::resolver::wanted(net) {
                let upstreams = super::resolver::upstreams(net, &host_resolv);
                std::fs::write(
                    &resolv,
                    super::attach::resolv_text_embedded(net, &host_resolv, &upstreams),
                )
                .map_err(|e| format!("{}: {e}", resolv.display()))?;
                Some(Resolver::spawn(&ResolverSpec {
                    kiln_root: store.kiln_root(),
                    container: c.id.clone(),
                    upstreams,
                })?)
            } else {
                std::fs::write(&resolv, resolv_text(net, &host_resolv))
                    .map_err(|e| format!("{}: {e}", resolv.display()))?;
                None
            };
            // Rewritten at every start, as docker does: the addresses may
            // have changed (network connect/disconnect while stopped).
            std::fs::write(&hosts, super::attach::hosts_text(net, &c.hostname))
                .map_err(|e| format!("{}: {e}", hosts.display()))?;
            let host = HostSide::prepare(net).map_err(|e| e.to_string())?;
            if let (false, Some(a)) = (net.ports.is_empty(), net.networks.first()) {
                let proxy = super::ports::start_proxy(&super::ports::ProxySpec {
                    container_ip: a.ip,
                    bindings: net.ports.clone(),
                    bridge: a.bridge.clone(),
                })?;
                // Held for this process's life: its end ends the proxy,
                // which then deletes the port rules.
                std::mem::forget(proxy);
            }
            Ok(Prepared::Bridge(host, resolver))
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
