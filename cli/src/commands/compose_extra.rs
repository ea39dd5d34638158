//! `kiln compose ps`'s PORTS column and `kiln compose top`, as docker
//! compose 2.40 prints them.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

use kiln_cache::Root;
use kiln_worker::container::{self, Container};
use miette::{miette, Result};

use crate::commands::compose::{load_project, ComposeArgs};
use crate::commands::compose_up::{number_of, project_containers, service_of, services};

/// One port of a container as docker's API lists it: published (`ip`
/// set) or only exposed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Port {
    pub private: u16,
    pub ip: String,
    pub public: u16,
    pub proto: String,
}

/// docker/cli's `DisplayablePorts`: sorted by private port, IP, public
/// port, type; runs of consecutive ports with the same IP and type (and
/// the public port equal to the private one) grouped into ranges; other
/// mappings listed after them: `0.0.0.0:8080->80/tcp, 9000/tcp`.
pub(crate) fn displayable(ports: &[Port]) -> String {
    let mut ports = ports.to_vec();
    ports.sort();
    // Group keys in the order they first appear, each with its open run.
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut result = Vec::new();
    let mut mappings = Vec::new();
    for p in &ports {
        let key = if p.ip.is_empty() {
            p.proto.clone()
        } else {
            if p.public != p.private {
                mappings.push(format!("{}:{}->{}/{}", p.ip, p.public, p.private, p.proto));
                continue;
            }
            format!("{}/{}", p.ip, p.proto)
        };
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            None => groups.push((key, p.private, p.private)),
            Some(g) if u32::from(p.private) == u32::from(g.2) + 1 => g.2 = p.private,
            Some(g) => {
                result.push(form_group(&g.0, g.1, g.2));
                g.1 = p.private;
                g.2 = p.private;
            }
        }
    }
    for (k, first, last) in &groups {
        result.push(form_group(k, *first, *last));
    }
    result.extend(mappings);
    result.join(", ")
}

fn form_group(key: &str, first: u16, last: u16) -> String {
    let (ip, proto) = match key.rsplit_once('/') {
        Some((ip, proto)) => (ip, proto),
        None => ("", key),
    };
    let mut group = first.to_string();
    if first != last {
        group = format!("{group}-{last}");
    }
    if !ip.is_empty() {
        group = format!("{ip}:{group}->{group}");
    }
    format!("{group}/{proto}")
}

/// The ports of a running container: those it publishes, and those its
/// image exposes without a publication (as docker lists them); none for a
/// container that is not running.
pub(crate) fn ports_of(root: &Root, c: &Container) -> Vec<Port> {
    if !c.is_alive() {
        return Vec::new();
    }
    let published: Vec<Port> = c
        .net
        .as_ref()
        .map(|n| {
            n.ports
                .iter()
                .map(|b| Port {
                    private: b.container_port,
                    ip: b.host_ip.to_string(),
                    public: b.host_port,
                    proto: b.proto.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let taken: BTreeSet<(u16, String)> = published
        .iter()
        .map(|p| (p.private, p.proto.clone()))
        .collect();
    let mut all = published;
    for key in exposed(root, c) {
        let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if !taken.contains(&(port, proto.to_string())) {
            all.push(Port {
                private: port,
                ip: String::new(),
                public: 0,
                proto: proto.to_string(),
            });
        }
    }
    all
}

/// The image's `ExposedPorts` (`80/tcp`), read from its config.
fn exposed(root: &Root, c: &Container) -> Vec<String> {
    let Ok(digest) = c.image_id.parse::<kiln_cache::Digest>() else {
        return Vec::new();
    };
    let Ok(bytes) = root.blobs().read(&digest) else {
        return Vec::new();
    };
    let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    cfg.pointer("/config/ExposedPorts")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `compose top`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Services.
    pub names: Vec<String>,
}

/// `kiln compose top [SERVICE…]`: one table of every running container's
/// processes, `SERVICE` and `#` (the replica) first, as compose 2.40.
pub fn top(a: &ComposeArgs, x: &TopArgs) -> Result<ExitCode> {
    let p = load_project(a, true)?;
    let all = services(&p);
    for n in &x.names {
        if !all.contains_key(n) {
            return Err(miette!("no such service: {n}"));
        }
    }
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = container::Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    let mut cs: Vec<Container> = project_containers(&store, &p.name, false)?
        .into_iter()
        .filter(|c| c.is_alive())
        .filter(|c| x.names.is_empty() || x.names.iter().any(|n| n == service_of(c)))
        .collect();
    cs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for c in &cs {
        let mut pids = container::pause::processes(c);
        pids.sort_unstable();
        for r in crate::commands::container_top::ps_ef(&pids) {
            let mut row = vec![service_of(c).to_string(), number_of(c).to_string()];
            row.extend(r);
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD",
    ];
    let _ = std::io::stdout()
        .lock()
        .write_all(tabwriter(&header, &rows).as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// Go's `tabwriter.NewWriter(out, 4, 1, 2, ' ', 0)`, compose top's: each
/// column as wide as its widest cell plus 2, at least 4; the last column
/// unpadded.
fn tabwriter(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let widths: Vec<usize> = widths.iter().map(|w| (w + 2).max(4)).collect();
    let mut s = String::new();
    let lines = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for cells in lines {
        let n = cells.len();
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i + 1 < n {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.push_str(&" ".repeat(pad));
            }
        }
        s.push('\n');
    }
    s
}

/// Connects the new (not started) container `c` to more networks, as
/// compose connects a service's networks after the first before starting
/// it: addresses allocated (`ipv4_address` when given) with the aliases,
/// recorded in its state; the helper wires one interface per network.
pub(crate) fn connect(
    root: &Root,
    store: &container::Store,
    c: &Container,
    more: &[(String, Vec<String>, Option<std::net::Ipv4Addr>)],
) -> Result<Container> {
    let nets = kiln_worker::network::Networks::open(root.path()).map_err(|e| miette!("{e}"))?;
    let Some(mut net) = c.net.clone() else {
        return Err(miette!(
            "container {} is not on a bridge network: cannot connect it to {}",
            c.name,
            more.first().map_or("", |m| m.0.as_str())
        ));
    };
    let exists = |id: &str| store.dir_of(id).join("state.json").exists();
    let got = kiln_worker::network::attach::allocate(&nets, &c.id, &c.name, more, &exists)
        .map_err(|e| miette!("Error response from daemon: {e}"))?;
    net.networks.extend(got);
    store
        .update(&c.id, |c| c.net = Some(net))
        .map_err(|e| miette!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(private: u16, ip: &str, public: u16, proto: &str) -> Port {
        Port {
            private,
            ip: ip.into(),
            public,
            proto: proto.into(),
        }
    }

    /// docker/cli's own cases (formatter/container_test.go).
    #[test]
    fn ports_display_as_docker_ps() {
        assert_eq!(
            displayable(&[port(80, "0.0.0.0", 8080, "tcp")]),
            "0.0.0.0:8080->80/tcp"
        );
        assert_eq!(displayable(&[port(9988, "", 0, "tcp")]), "9988/tcp");
        assert_eq!(
            displayable(&[
                port(80, "", 0, "tcp"),
                port(81, "", 0, "tcp"),
                port(82, "", 0, "tcp")
            ]),
            "80-82/tcp"
        );
        assert_eq!(
            displayable(&[
                port(9998, "0.0.0.0", 9998, "udp"),
                port(9999, "0.0.0.0", 9999, "udp"),
            ]),
            "0.0.0.0:9998-9999->9998-9999/udp"
        );
        assert_eq!(
            displayable(&[port(80, "0.0.0.0", 8080, "tcp"), port(8443, "", 0, "tcp")]),
            "8443/tcp, 0.0.0.0:8080->80/tcp"
        );
        assert_eq!(
            displayable(&[port(6677, "", 0, "tcp"), port(6678, "", 0, "udp")]),
            "6677/tcp, 6678/udp"
        );
    }

    #[test]
    fn top_columns_are_padded_as_go_tabwriter() {
        let t = tabwriter(
            &["SERVICE", "#", "CMD"],
            &[vec!["web".into(), "1".into(), "httpd -f".into()]],
        );
        assert_eq!(t, "SERVICE  #   CMD\nweb      1   httpd -f\n");
    }
}
