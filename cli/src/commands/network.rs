//! `kiln network create|ls|inspect|rm|connect|disconnect|prune`, with
//! docker's flags and output shapes (see `kiln_worker::network` for the
//! state and the bridges).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use kiln_cache::Root;
use kiln_worker::container::Store;
use kiln_worker::network::store::CreateRequest;
use kiln_worker::network::{attach, NetworkRecord, Networks};
use miette::{miette, Result};
use serde_json::{json, Value};

use crate::table::table;

/// The `network` group.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// List port mappings or a specific mapping for the container.
    Port {
        container: String,
        /// PRIVATE_PORT[/PROTO].
        port: Option<String>,
    },
}

/// docker's `network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// Driver (only `bridge`).
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (e.g. 172.30.0.0/16).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway for the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Restrict external access to the network.
        #[arg(long)]
        internal: bool,
        /// Driver options (KEY=VALUE).
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// Metadata (KEY=VALUE).
        #[arg(long)]
        label: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output.
        #[arg(long)]
        no_trunc: bool,
        /// Filter (name=, id=, driver=, type=custom|builtin, label=,
        /// scope=local, dangling=true|false).
        #[arg(short, long)]
        filter: Vec<String>,
        /// Format the output using a Go template (`table …`, `json`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on networks.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Do not error if the network does not exist.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a container to a network (a running one at once).
    Connect {
        /// Network-scoped aliases.
        #[arg(long)]
        alias: Vec<String>,
        /// IPv4 address.
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network (a running one at once).
    Disconnect {
        /// Force (accepted).
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// Remove all unused user-defined networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

fn open() -> Result<(Networks, Store)> {
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    let nets = Networks::open(root.path()).map_err(|e| miette!("{e}"))?;
    Ok((nets, store))
}

/// `kiln port C [PORT[/PROTO]]`, as docker prints it.
fn port_cmd(key: &str, port: Option<&str>) -> Result<ExitCode> {
    let (_, store) = open()?;
    let c = match store.find(key) {
        Ok(c) => c,
        Err(e) => return Ok(daemon_error(e)),
    };
    let ports = c.net.map(|n| n.ports).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match port {
        None => {
            for b in &ports {
                let _ = writeln!(out, "{} -> {}", b.key(), b.host_text());
            }
        }
        Some(p) => {
            let want = if p.contains('/') {
                p.to_string()
            } else {
                format!("{p}/tcp")
            };
            let found: Vec<_> = ports.iter().filter(|b| b.key() == want).collect();
            if found.is_empty() {
                return Ok(daemon_error(format!(
                    "No public port '{want}' published for {key}"
                )));
            }
            for b in found {
                let _ = writeln!(out, "{}", b.host_text());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn kv(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            if k.is_empty() {
                Err(miette!("invalid key/value pair: {s:?}"))
            } else {
                Ok((k.to_string(), v.to_string()))
            }
        })
        .collect()
}

fn daemon_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("Error response from daemon: {e}");
    ExitCode::from(1)
}

/// Runs one `network` subcommand.
pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let cmd = match cmd {
        Cmd::Network(cmd) => cmd,
        Cmd::Port { container, port } => return port_cmd(&container, port.as_deref()),
    };
    let (nets, store) = open()?;
    let live = |id: &str| store.load(id).is_ok_and(|c| c.is_alive());
    let exists = |id: &str| store.dir_of(id).join("state.json").exists();
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            internal,
            opt,
            label,
            name,
        } => {
            let req = CreateRequest {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                internal,
                options: kv(&opt)?,
                labels: kv(&label)?,
            };
            match nets.create(req) {
                Ok(r) => {
                    println!("{}", r.id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(daemon_error(e)),
            }
        }
        NetworkCmd::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let fmt =
                crate::template::Format::parse(format.as_deref()).map_err(|e| miette!("{e}"))?;
            let mut items = Vec::new();
            let all = nets.list().map_err(|e| miette!("{e}"))?;
            // docker's filter rules: values of one key are alternatives,
            // except `label`, where every one must hold; keys must all hold.
            let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in filter
                .iter()
                .map(|s| s.split_once('=').unwrap_or((s.as_str(), "")))
            {
                filters
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_string());
            }
            let known = ["name", "id", "driver", "type", "scope", "label", "dangling"];
            if let Some(k) = filters.keys().find(|k| !known.contains(&k.as_str())) {
                return Ok(daemon_error(format!("invalid filter '{k}'")));
            }
            let matches = |r: &NetworkRecord, k: &str, v: &str| match k {
                "name" => r.name.contains(v),
                "id" => r.id.starts_with(v),
                "driver" => r.driver == v,
                "type" => (v == "builtin") == r.is_predefined(),
                "scope" => v == "local",
                // `label=KEY` or `label=KEY=VALUE`.
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => r.labels.get(lk).is_some_and(|x| x == lv),
                    None => r.labels.contains_key(v),
                },
                // Unused user-defined networks (what prune removes).
                "dangling" => {
                    let dangling = !r.is_predefined() && !r.endpoints.keys().any(|c| exists(c));
                    (v == "true" || v == "1") == dangling
                }
                _ => true,
            };
            let keep = |r: &NetworkRecord| {
                filters.iter().all(|(k, vs)| {
                    if k == "label" {
                        vs.iter().all(|v| matches(r, k, v))
                    } else {
                        vs.iter().any(|v| matches(r, k, v))
                    }
                })
            };
            let mut rows = Vec::new();
            let mut out = std::io::stdout().lock();
            let mut list: Vec<&NetworkRecord> = all.iter().filter(|r| keep(r)).collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            for r in list {
                let id = if no_trunc {
                    r.id.clone()
                } else {
                    r.short_id().to_string()
                };
                if quiet {
                    let _ = writeln!(out, "{id}");
                    continue;
                }
                items.push(serde_json::json!({
                    "ID": id,
                    "Name": r.name,
                    "Driver": r.driver,
                    "Scope": "local",
                    "Internal": r.internal,
                }));
                rows.push(vec![id, r.name.clone(), r.driver.clone(), "local".into()]);
            }
            let headers = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
            ];
            if !quiet {
                if let Some(text) = fmt.render(&items, &headers).map_err(|e| miette!("{e}"))? {
                    let _ = out.write_all(text.as_bytes());
                    return Ok(ExitCode::SUCCESS);
                }
                let header = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
                let _ = out.write_all(table(&header, &rows, 0).as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = Vec::new();
            let mut failed = false;
            for key in &networks {
                match nets.find(key) {
                    Ok(r) => out.push(inspect_json(&r)),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Array(out)).unwrap_or_default()
            );
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        NetworkCmd::Rm { force, networks } => {
            let mut failed = false;
            for key in &networks {
                match nets.remove(key, &live) {
                    Ok(r) => {
                        if let Err(e) = attach::remove_bridge(&r) {
                            eprintln!("warning: removing bridge {}: {e}", r.bridge);
                        }
                        println!("{key}");
                    }
                    Err(kiln_worker::network::NetworkError::NotFound(_)) if force => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        NetworkCmd::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            let c = match store.find(&container) {
                Ok(c) => c,
                Err(e) => return Ok(daemon_error(e)),
            };
            let running = c.pid.filter(|_| c.is_alive());
            let ip = match ip.map(|s| s.parse()) {
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => return Ok(daemon_error("invalid IPv4 address")),
                None => None,
            };
            let Some(mut net) = c.net.clone() else {
                return Ok(daemon_error(
                    "container cannot be disconnected from host network or connected to host network",
                ));
            };
            if net.mode != kiln_worker::network::NetMode::Bridge {
                return Ok(daemon_error(
                    "container sharing network namespace with another container or host cannot be connected to any other network",
                ));
            }
            if net.networks.iter().any(|a| a.network == network) {
                return Ok(daemon_error(format!(
                    "endpoint with name {} already exists in network {network}",
                    c.name
                )));
            }
            let mut got =
                match attach::allocate(&nets, &c.id, &c.name, &[(network, alias, ip)], &exists) {
                    Ok(g) => g,
                    Err(e) => return Ok(daemon_error(e)),
                };
            if let (Some(pid), Some(a)) = (running, got.first_mut()) {
                // Running: a veth into its namespace now, on a free ethN.
                let used: Vec<String> = net
                    .networks
                    .iter()
                    .enumerate()
                    .map(|(i, a)| a.ifname_at(i))
                    .collect();
                a.ifname = (0..4096)
                    .map(|k| format!("eth{k}"))
                    .find(|n| !used.contains(n))
                    .unwrap_or_else(|| "eth4096".into());
                if let Err(e) = attach::connect_running(pid, a) {
                    let _ = nets.detach(&a.network_id, &c.id);
                    return Ok(daemon_error(e));
                }
            }
            net.networks.extend(got);
            store
                .update(&c.id, |c| c.net = Some(net))
                .map_err(|e| miette!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        NetworkCmd::Disconnect {
            force: _,
            network,
            container,
        } => {
            let c = match store.find(&container) {
                Ok(c) => c,
                Err(e) => return Ok(daemon_error(e)),
            };
            let running = c.pid.filter(|_| c.is_alive());
            let r = match nets.find(&network) {
                Ok(r) => r,
                Err(e) => return Ok(daemon_error(e)),
            };
            let Some(mut net) = c.net.clone() else {
                return Ok(daemon_error(format!(
                    "container {} is not connected to network {network}",
                    c.id
                )));
            };
            let Some(pos) = net.networks.iter().position(|a| a.network_id == r.id) else {
                return Ok(daemon_error(format!(
                    "container {} is not connected to network {network}",
                    c.id
                )));
            };
            if let Some(pid) = running {
                let ifname = net.networks[pos].ifname_at(pos);
                if let Err(e) = attach::disconnect_running(pid, &ifname) {
                    return Ok(daemon_error(e));
                }
            }
            net.networks.retain(|a| a.network_id != r.id);
            nets.detach(&r.id, &c.id).map_err(|e| miette!("{e}"))?;
            store
                .update(&c.id, |c| c.net = Some(net))
                .map_err(|e| miette!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        NetworkCmd::Prune { force } => {
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let mut deleted = Vec::new();
            for r in nets.list().map_err(|e| miette!("{e}"))? {
                if r.is_predefined() || r.endpoints.keys().any(|c| exists(c)) {
                    continue;
                }
                if let Ok(r) = nets.remove(&r.id, &exists) {
                    let _ = attach::remove_bridge(&r);
                    deleted.push(r.name);
                }
            }
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for n in deleted {
                    println!("{n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// docker's `network inspect` object for one network.
fn inspect_json(r: &NetworkRecord) -> Value {
    let config: Vec<Value> = match (r.subnet, r.gateway) {
        (Some((a, p)), Some(g)) => {
            vec![json!({"Subnet": format!("{a}/{p}"), "Gateway": g.to_string()})]
        }
        _ => Vec::new(),
    };
    let prefix = r.subnet.map_or(0, |(_, p)| p);
    let containers: serde_json::Map<String, Value> = r
        .endpoints
        .iter()
        .map(|(id, e)| {
            (
                id.clone(),
                json!({
                    "Name": e.name,
                    "EndpointID": "",
                    "MacAddress": "",
                    "IPv4Address": format!("{}/{prefix}", e.ip),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Scope": "local",
        "Driver": r.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": r.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": r.options,
        "Labels": r.labels,
    })
}
