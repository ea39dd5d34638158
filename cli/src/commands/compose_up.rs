//! `kiln compose up` and `down`: a project's services as containers on the
//! run backend, named and labelled as docker compose names them
//! (`<project>-<service>-<n>`, `<project>_default`, `<project>_<volume>`,
//! `com.docker.compose.*`), so a second `up` recreates only the services
//! whose configuration (the `config-hash` label) or image changed.
//!
//! A service becomes `kiln run`'s flags (parsed by the same `RunArgs`, so
//! every rule of `kiln run` applies), then the options are adjusted where
//! compose says more than flags can (exact healthcheck argv, resources,
//! secrets and configs, labels) and the container is made and started by
//! `kiln_worker::container::run`, in this process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use kiln_cache::Root;
use kiln_compose::Project;
use kiln_worker::container::run::{RunOptions, Started};
use kiln_worker::container::{self, Container, StartReport, Status, Store};
use kiln_worker::network::store::CreateRequest;
use kiln_worker::network::{attach, Networks};
use kiln_worker::sandbox::Mount;
use miette::{miette, IntoDiagnostic, Result};
use serde_json::Value as J;

use crate::commands::compose::{load_project, ComposeArgs};
use crate::commands::run::RunArgs;

/// docker compose's label keys.
pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const NUMBER: &str = "com.docker.compose.container-number";
pub const HASH: &str = "com.docker.compose.config-hash";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const VERSION: &str = "com.docker.compose.version";
/// The compose version kiln answers as (the one its goldens come from).
pub const COMPOSE_VERSION: &str = "2.40.3";

/// `compose up`'s flags.
#[derive(Debug, Default, clap::Args)]
pub struct UpArgs {
    /// Detached mode: run containers in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Build images before starting containers.
    #[arg(long)]
    pub build: bool,
    /// Don't build an image, even if it's missing.
    #[arg(long = "no-build")]
    pub no_build: bool,
    /// Recreate containers even if their configuration and image haven't
    /// changed.
    #[arg(long = "force-recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them.
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Wait for services to be running|healthy. Implies detached mode.
    #[arg(long)]
    pub wait: bool,
    /// Maximum duration in seconds to wait for the project to be
    /// running|healthy.
    #[arg(long = "wait-timeout")]
    pub wait_timeout: Option<u64>,
    /// Stops all containers if any container was stopped.
    #[arg(long = "abort-on-container-exit")]
    pub abort_on_container_exit: bool,
    /// Don't start linked services.
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Produce monochrome output.
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Scale SERVICE to NUM instances (overrides `scale`/`deploy.replicas`).
    #[arg(long = "scale", value_name = "SERVICE=NUM")]
    pub scale: Vec<String>,
    /// Services to start (and the ones they depend on).
    pub services: Vec<String>,
}

/// `compose down`'s flags.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Remove named volumes declared in the "volumes" section of the Compose
    /// file and anonymous volumes attached to containers.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Remove images used by services: "local" only those without a custom
    /// tag ("image" field), "all" every one.
    #[arg(long)]
    pub rmi: Option<String>,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Timeout in seconds for container shutdown.
    #[arg(short = 't', long)]
    pub timeout: Option<i64>,
}

/// Prints one of compose's progress lines (` Container x  Started`).
pub fn event(kind: &str, name: &str, what: &str) {
    eprintln!(" {kind} {name}  {what}");
}

// ---------------------------------------------------------------- model

/// The services of the model, by name.
pub fn services(p: &Project) -> BTreeMap<String, J> {
    p.model
        .get("services")
        .and_then(J::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The image a service runs: `image:`, else the one `build` tags.
pub fn image_of(p: &Project, name: &str, svc: &J) -> String {
    svc.get("image")
        .and_then(J::as_str)
        .map(String::from)
        .unwrap_or_else(|| format!("{}-{name}", p.name))
}

/// The name of container `number` of a service: its `container_name`, else
/// compose's `project-service-N`.
pub fn container_name(p: &Project, name: &str, svc: &J, number: u32) -> String {
    match svc.get("container_name").and_then(J::as_str) {
        Some(n) => n.to_string(),
        None => format!("{}-{name}-{number}", p.name),
    }
}

/// The container a `service:X` reference (network_mode, ipc, pid) or a
/// link or `volumes_from` names: X's first container.
fn service_container(p: &Project, other: &str) -> String {
    let svc = p
        .model
        .get("services")
        .and_then(|s| s.get(other))
        .cloned()
        .unwrap_or(J::Null);
    container_name(p, other, &svc, 1)
}

/// Service keys `kiln compose` does not carry out; `up` warns about each
/// one a service sets instead of dropping it unsaid.
const NOT_RUN: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "domainname",
    "external_links",
    "gpus",
    "isolation",
    "mac_address",
    "mem_reservation",
    "mem_swappiness",
    "models",
    "oom_kill_disable",
    "oom_score_adj",
    "platform",
    "post_start",
    "pre_stop",
    "provider",
    "runtime",
    "storage_opt",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volume_driver",
];

/// The services a service depends on, with their conditions.
fn depends_on(svc: &J) -> Vec<(String, String, bool)> {
    svc.get("depends_on")
        .and_then(J::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.get("condition")
                            .and_then(J::as_str)
                            .unwrap_or("service_started")
                            .to_string(),
                        v.get("required").and_then(J::as_bool).unwrap_or(true),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `names` and everything they depend on, in an order where dependencies
/// come first (ties by name, as the model is sorted).
pub fn start_order(
    all: &BTreeMap<String, J>,
    names: &[String],
    with_deps: bool,
) -> Result<Vec<String>> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = if names.is_empty() {
        all.keys().cloned().collect()
    } else {
        names.to_vec()
    };
    while let Some(n) = todo.pop() {
        let svc = all.get(&n).ok_or_else(|| miette!("no such service: {n}"))?;
        if wanted.insert(n.clone()) && with_deps {
            for (d, _, _) in depends_on(svc) {
                if all.contains_key(&d) {
                    todo.push(d);
                }
            }
        }
    }
    let mut order = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < wanted.len() {
        let before = done.len();
        for n in &wanted {
            if done.contains(n) {
                continue;
            }
            let ready = depends_on(&all[n])
                .iter()
                .all(|(d, _, _)| done.contains(d) || !wanted.contains(d));
            if ready {
                order.push(n.clone());
                done.insert(n.clone());
            }
        }
        if done.len() == before {
            return Err(miette!("dependency cycle detected among services"));
        }
    }
    Ok(order)
}

/// Stops `cs` as compose does: dependents before what they depend on
/// (services by dependency level, highest first), the containers of one
/// level at once (each stop may wait out its grace period).
pub fn stop_ordered(
    store: &Store,
    p: &Project,
    cs: &[Container],
    timeout: Option<i64>,
    on_stop: &(dyn Fn(&Container) + Sync),
) {
    let all = services(p);
    let mut level: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(order) = start_order(&all, &[], true) {
        for n in order {
            let l = depends_on(&all[&n])
                .iter()
                .filter_map(|(d, _, _)| level.get(d))
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            level.insert(n, l);
        }
    }
    let top = level.values().copied().max().unwrap_or(0) + 1;
    let level_of = |c: &Container| level.get(service_of(c)).copied().unwrap_or(top);
    for l in (0..=top).rev() {
        std::thread::scope(|sc| {
            for c in cs.iter().filter(|c| level_of(c) == l && c.is_alive()) {
                sc.spawn(move || {
                    on_stop(c);
                    let t = timeout.map(|t| Duration::from_secs(t.max(0) as u64));
                    let _ = container::lifecycle::stop_with(store, &c.id, t, None);
                });
            }
        });
    }
}

/// How many containers a service runs: `--scale`, `scale`,
/// `deploy.replicas`, else 1.
fn replicas(svc: &J, name: &str, overrides: &[String]) -> u32 {
    for o in overrides {
        if let Some((s, n)) = o.split_once('=') {
            if s == name {
                if let Ok(n) = n.parse() {
                    return n;
                }
            }
        }
    }
    svc.get("scale")
        .and_then(J::as_u64)
        .or_else(|| svc.pointer("/deploy/replicas").and_then(J::as_u64))
        .unwrap_or(1) as u32
}

/// compose's config hash of a service: what, when it changes, makes `up`
/// recreate the containers (the build section and the replica count do not
/// count: a rebuilt image shows as a new image ID instead).
pub fn config_hash(svc: &J) -> String {
    let mut s = svc.clone();
    if let Some(o) = s.as_object_mut() {
        for k in ["build", "scale", "pull_policy", "depends_on"] {
            o.remove(k);
        }
        if let Some(d) = o.get_mut("deploy").and_then(J::as_object_mut) {
            d.remove("replicas");
        }
    }
    kiln_cache::Digest::of(s.to_string().as_bytes())
        .hex()
        .to_string()
}

/// The project's containers (not one-off `run` ones unless `oneoff`).
pub fn project_containers(store: &Store, project: &str, oneoff: bool) -> Result<Vec<Container>> {
    let mut v: Vec<Container> = store
        .list()
        .map_err(|e| miette!("{e}"))?
        .into_iter()
        .filter(|c| c.labels.get(PROJECT).map(String::as_str) == Some(project))
        .filter(|c| oneoff || c.labels.get(ONEOFF).map(String::as_str) != Some("True"))
        .collect();
    v.sort_by(|a, b| (service_of(a), number_of(a)).cmp(&(service_of(b), number_of(b))));
    Ok(v)
}

/// A container's service label.
pub fn service_of(c: &Container) -> &str {
    c.labels.get(SERVICE).map(String::as_str).unwrap_or("")
}

/// A container's number label.
pub fn number_of(c: &Container) -> u32 {
    c.labels
        .get(NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The name compose shows for a container in logs: the name without the
/// project's prefix (`web-1`).
pub fn short_name<'a>(c: &'a Container, project: &str) -> &'a str {
    c.name
        .strip_prefix(project)
        .and_then(|n| n.strip_prefix('-'))
        .unwrap_or(&c.name)
}

/// The real name of a top-level network or volume (`name:`), else
/// `<project>_<key>`.
fn real_name(p: &Project, kind: &str, key: &str) -> String {
    p.model
        .get(kind)
        .and_then(|m| m.get(key))
        .and_then(|n| n.get("name"))
        .and_then(J::as_str)
        .map(String::from)
        .unwrap_or_else(|| format!("{}_{key}", p.name))
}

fn is_external(p: &Project, kind: &str, key: &str) -> bool {
    p.model
        .get(kind)
        .and_then(|m| m.get(key))
        .and_then(|n| n.get("external"))
        .is_some_and(|e| e.as_bool().unwrap_or(true))
}

fn duration_secs(v: Option<&J>) -> Option<i64> {
    let s = v?.as_str()?;
    kiln_compose::duration::parse(s).map(|ns| (ns / 1_000_000_000) as i64)
}

fn duration_ns(v: Option<&J>) -> i64 {
    v.and_then(J::as_str)
        .and_then(kiln_compose::duration::parse)
        .map_or(0, |ns| ns as i64)
}

fn strs(v: Option<&J>) -> Vec<String> {
    match v {
        Some(J::Array(a)) => a
            .iter()
            .map(|x| match x {
                J::String(s) => s.clone(),
                other => kiln_compose::value::display(other),
            })
            .collect(),
        Some(J::String(s)) => kiln_compose::normalize::shell_words(s).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// True when `kiln run` has this long flag (net's `--publish` arrives on
/// its own branch: compose passes ports only once `run` takes them).
fn run_has_flag(long: &str) -> bool {
    RunParser::command()
        .get_arguments()
        .any(|a| a.get_long() == Some(long))
}

#[derive(Parser)]
#[command(name = "run", disable_help_flag = true, no_binary_name = true)]
struct RunParser {
    #[command(flatten)]
    args: RunArgs,
}

fn push(a: &mut Vec<String>, k: &str, v: String) {
    a.push(k.to_string());
    a.push(v);
}

/// Everything to make one container of a service.
pub struct Plan {
    pub argv: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub health: Option<kiln_worker::container::life::HealthConfig>,
    pub no_healthcheck: bool,
    pub mounts: Vec<Mount>,
    pub resources: kiln_worker::container::life::Resources,
    /// The service's networks after the first (which `--network` names):
    /// (network, aliases, `ipv4_address`), connected before the start.
    pub more_networks: Vec<(String, Vec<String>, Option<std::net::Ipv4Addr>)>,
}

/// `kiln run`'s flags (and the rest) for container `number` of service
/// `name`.
pub fn plan(
    p: &Project,
    name: &str,
    svc: &J,
    cname: &str,
    number: u32,
    oneoff: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Plan> {
    let mut a: Vec<String> = vec!["--name".into(), cname.into()];
    if let Some(env) = svc.get("environment").and_then(J::as_object) {
        for (k, v) in env {
            if v.is_null() {
                continue;
            }
            push(
                &mut a,
                "-e",
                format!("{k}={}", kiln_compose::value::display(v)),
            );
        }
    }
    for (flag, key) in [
        ("-u", "user"),
        ("-w", "working_dir"),
        ("--hostname", "hostname"),
        ("--stop-signal", "stop_signal"),
        ("--restart", "restart"),
    ] {
        if let Some(v) = svc.get(key).and_then(J::as_str) {
            push(&mut a, flag, v.to_string());
        }
    }
    if let Some(t) = duration_secs(svc.get("stop_grace_period")) {
        push(&mut a, "--stop-timeout", t.to_string());
    }
    if svc.get("init").and_then(J::as_bool) == Some(true) {
        a.push("--init".into());
    }
    if svc.get("read_only").and_then(J::as_bool) == Some(true) {
        a.push("--read-only".into());
    }
    for h in strs(svc.get("extra_hosts")) {
        // compose writes `host=ip`; `--add-host` takes both.
        push(&mut a, "--add-host", h);
    }
    for d in strs(svc.get("dns")) {
        push(&mut a, "--dns", d);
    }
    for d in strs(svc.get("dns_search")) {
        push(&mut a, "--dns-search", d);
    }
    for d in strs(svc.get("dns_opt")) {
        push(&mut a, "--dns-option", d);
    }
    for (flag, key) in [
        ("--cap-add", "cap_add"),
        ("--cap-drop", "cap_drop"),
        ("--security-opt", "security_opt"),
        ("--expose", "expose"),
        ("--group-add", "group_add"),
        ("--tmpfs", "tmpfs"),
    ] {
        for v in strs(svc.get(key)) {
            push(&mut a, flag, v);
        }
    }
    // A one-off (`compose run`) decides its terminal and stdin itself.
    let terminal: &[(&str, &str)] = if oneoff {
        &[]
    } else {
        &[("-t", "tty"), ("-i", "stdin_open")]
    };
    for &(flag, key) in [("--privileged", "privileged")].iter().chain(terminal) {
        if svc.get(key).and_then(J::as_bool) == Some(true) {
            a.push(flag.into());
        }
    }
    for (flag, key) in [("--pid", "pid"), ("--ipc", "ipc")] {
        if let Some(v) = svc.get(key).and_then(J::as_str) {
            let mode = match v.strip_prefix("service:") {
                Some(other) => format!("container:{}", service_container(p, other)),
                None => v.to_string(),
            };
            push(&mut a, flag, mode);
        }
    }
    if let Some(sysctls) = svc.get("sysctls").and_then(J::as_object) {
        for (k, v) in sysctls {
            push(
                &mut a,
                "--sysctl",
                format!("{k}={}", kiln_compose::value::display(v)),
            );
        }
    }
    if let Some(limits) = svc.get("ulimits").and_then(J::as_object) {
        for (k, v) in limits {
            let spec = match v {
                J::Object(o) => format!(
                    "{k}={}:{}",
                    o.get("soft")
                        .map(kiln_compose::value::display)
                        .unwrap_or_default(),
                    o.get("hard")
                        .map(kiln_compose::value::display)
                        .unwrap_or_default()
                ),
                other => format!("{k}={}", kiln_compose::value::display(other)),
            };
            push(&mut a, "--ulimit", spec);
        }
    }
    for d in svc
        .get("devices")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| d.get(k).and_then(J::as_str).unwrap_or_default().to_string();
        push(
            &mut a,
            "--device",
            format!(
                "{}:{}:{}",
                field("source"),
                field("target"),
                field("permissions")
            ),
        );
    }
    for l in strs(svc.get("links")) {
        let (other, alias) = l.split_once(':').unwrap_or((&l, &l));
        push(
            &mut a,
            "--link",
            format!("{}:{alias}", service_container(p, other)),
        );
    }
    for v in strs(svc.get("volumes_from")) {
        let spec = match v.strip_prefix("container:") {
            Some(c) => c.to_string(),
            None => match v.split_once(':') {
                Some((other, mode)) => format!("{}:{mode}", service_container(p, other)),
                None => service_container(p, &v),
            },
        };
        push(&mut a, "--volumes-from", spec);
    }
    match svc.get("pull_policy").and_then(J::as_str) {
        Some(pp @ ("always" | "never" | "missing")) => push(&mut a, "--pull", pp.to_string()),
        Some("if_not_present") => push(&mut a, "--pull", "missing".to_string()),
        _ => {}
    }
    if let Some(logging) = svc.get("logging") {
        if let Some(d) = logging.get("driver").and_then(J::as_str) {
            push(&mut a, "--log-driver", d.to_string());
        }
        for (k, v) in logging
            .get("options")
            .and_then(J::as_object)
            .into_iter()
            .flatten()
        {
            push(
                &mut a,
                "--log-opt",
                format!("{k}={}", kiln_compose::value::display(v)),
            );
        }
    }
    for key in NOT_RUN {
        if svc.get(*key).is_some_and(|v| !v.is_null()) {
            warn(format!(
                "service {name}: `{key}` is not supported by kiln compose; ignored"
            ));
        }
    }
    // Networks: network_mode, else the service's networks, each with the
    // service name as an alias (compose's DNS name for the service).
    let mut more_networks = Vec::new();
    match svc.get("network_mode").and_then(J::as_str) {
        Some(m) if m.starts_with("service:") => {
            let other = &m["service:".len()..];
            push(
                &mut a,
                "--network",
                format!("container:{}", service_container(p, other)),
            );
        }
        Some(m) => push(&mut a, "--network", m.to_string()),
        None => {
            let nets = svc
                .get("networks")
                .and_then(J::as_object)
                .cloned()
                .unwrap_or_default();
            // compose's order: by priority (highest first), then by name;
            // the first is the one the container is created on, the others
            // are connected before it starts.
            let mut keys: Vec<&String> = nets.keys().collect();
            let priority = |k: &String| {
                nets.get(k)
                    .and_then(|n| n.get("priority"))
                    .and_then(J::as_i64)
                    .unwrap_or(0)
            };
            keys.sort_by(|a, b| priority(b).cmp(&priority(a)).then(a.cmp(b)));
            let default = "default".to_string();
            if keys.is_empty() {
                keys.push(&default);
            }
            for (i, key) in keys.iter().enumerate() {
                let def = nets.get(*key);
                let mut aliases = Vec::new();
                if !oneoff {
                    aliases.push(name.to_string());
                }
                if let Some(al) = def.and_then(|n| n.get("aliases")) {
                    aliases.extend(strs(Some(al)));
                }
                let ip = def
                    .and_then(|n| n.get("ipv4_address"))
                    .and_then(J::as_str)
                    .map(String::from);
                let real = real_name(p, "networks", key);
                if i == 0 {
                    push(&mut a, "--network", real);
                    for x in aliases {
                        push(&mut a, "--network-alias", x);
                    }
                    if let Some(ip) = ip {
                        push(&mut a, "--ip", ip);
                    }
                } else {
                    let ip = match ip.map(|s| s.parse::<std::net::Ipv4Addr>()) {
                        Some(Ok(ip)) => Some(ip),
                        Some(Err(_)) => {
                            return Err(miette!(
                                "service {name}: invalid ipv4_address on network {key}"
                            ))
                        }
                        None => None,
                    };
                    more_networks.push((real, aliases, ip));
                }
            }
        }
    }
    // Ports, once `kiln run` publishes them.
    if let Some(ports) = svc.get("ports").and_then(J::as_array) {
        if run_has_flag("publish") {
            for port in ports {
                let target = port.get("target").map(kiln_compose::value::display);
                let published = port.get("published").map(kiln_compose::value::display);
                let proto = port.get("protocol").and_then(J::as_str).unwrap_or("tcp");
                let ip = port.get("host_ip").and_then(J::as_str);
                let (Some(t), pubd) = (target, published) else {
                    continue;
                };
                let mut spec = String::new();
                if let Some(ip) = ip {
                    spec.push_str(ip);
                    spec.push(':');
                }
                if let Some(pp) = pubd.filter(|s| !s.is_empty()) {
                    spec.push_str(&pp);
                    spec.push(':');
                } else if ip.is_some() {
                    spec.push(':');
                }
                spec.push_str(&t);
                spec.push('/');
                spec.push_str(proto);
                push(&mut a, "-p", spec);
            }
        } else if !ports.is_empty() {
            warn(format!(
                "service {name}: ports are not published (kiln run has no --publish yet)"
            ));
        }
    }
    // Volumes: named (the project's real name), anonymous, bind, tmpfs.
    if let Some(vols) = svc.get("volumes").and_then(J::as_array) {
        for v in vols {
            let target = v.get("target").and_then(J::as_str).unwrap_or("");
            let ro = v.get("read_only").and_then(J::as_bool) == Some(true);
            let suffix = if ro { ":ro" } else { "" };
            let source = v.get("source").and_then(J::as_str);
            match (v.get("type").and_then(J::as_str), source) {
                (Some("volume"), Some(src)) => push(
                    &mut a,
                    "-v",
                    format!("{}:{target}{suffix}", real_name(p, "volumes", src)),
                ),
                (Some("volume"), None) => push(&mut a, "-v", target.to_string()),
                (Some("bind"), Some(src)) => push(&mut a, "-v", format!("{src}:{target}{suffix}")),
                (Some("tmpfs"), _) => {
                    let size = v.pointer("/tmpfs/size").map(kiln_compose::value::display);
                    match size {
                        Some(s) => push(&mut a, "--tmpfs", format!("{target}:size={s}")),
                        None => push(&mut a, "--tmpfs", target.to_string()),
                    }
                }
                (t, _) => warn(format!(
                    "service {name}: volume type {} is not supported",
                    t.unwrap_or("?")
                )),
            }
        }
    }
    // Entrypoint and command: `--entrypoint` takes one word; the rest of
    // an entrypoint list goes before the command.
    let entry = svc
        .get("entrypoint")
        .filter(|e| !e.is_null())
        .map(|e| strs(Some(e)));
    let mut cmd = strs(svc.get("command"));
    if let Some(entry) = &entry {
        push(
            &mut a,
            "--entrypoint",
            entry.first().cloned().unwrap_or_default(),
        );
        let mut rest: Vec<String> = entry.iter().skip(1).cloned().collect();
        rest.append(&mut cmd);
        cmd = rest;
    }
    a.push(image_of(p, name, svc));
    a.extend(cmd);

    let mut labels: BTreeMap<String, String> = svc
        .get("labels")
        .and_then(J::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), kiln_compose::value::display(v)))
                .collect()
        })
        .unwrap_or_default();
    labels.insert(PROJECT.into(), p.name.clone());
    labels.insert(SERVICE.into(), name.to_string());
    labels.insert(NUMBER.into(), number.to_string());
    labels.insert(HASH.into(), config_hash(svc));
    labels.insert(ONEOFF.into(), if oneoff { "True" } else { "False" }.into());
    labels.insert(VERSION.into(), COMPOSE_VERSION.into());
    labels.insert(
        "com.docker.compose.project.working_dir".into(),
        p.working_dir.display().to_string(),
    );
    labels.insert(
        "com.docker.compose.project.config_files".into(),
        p.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );

    let hc = svc.get("healthcheck");
    let no_healthcheck = hc.and_then(|h| h.get("disable")).and_then(J::as_bool) == Some(true);
    let health = hc.filter(|_| !no_healthcheck).map(|h| {
        let test = match h.get("test") {
            Some(J::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
            other => strs(other),
        };
        kiln_worker::container::life::HealthConfig {
            test,
            interval: duration_ns(h.get("interval")),
            timeout: duration_ns(h.get("timeout")),
            start_period: duration_ns(h.get("start_period")),
            start_interval: duration_ns(h.get("start_interval")),
            retries: h.get("retries").and_then(J::as_i64).unwrap_or(0),
        }
    });

    let mut resources = kiln_worker::container::life::Resources::default();
    // The service-level keys first, then `deploy.resources.limits` over
    // them (both are bytes and CPUs after normalisation).
    let number = |k: &str| svc.get(k).map(kiln_compose::value::display);
    if let Some(m) = number("mem_limit") {
        resources.memory = m.parse().unwrap_or(0);
    }
    if let Some(m) = number("memswap_limit") {
        resources.memory_swap = m.parse().unwrap_or(0);
    }
    if let Some(c) = number("cpus") {
        resources.nano_cpus = (c.parse::<f64>().unwrap_or(0.0) * 1e9) as i64;
    }
    if let Some(c) = number("cpu_shares") {
        resources.cpu_shares = c.parse().unwrap_or(0);
    }
    if let Some(n) = svc.get("pids_limit").and_then(J::as_i64) {
        resources.pids_limit = n;
    }
    if let Some(b) = number("shm_size") {
        resources.shm_size = b.parse().unwrap_or(0);
    }
    if let Some(l) = svc.pointer("/deploy/resources/limits") {
        if let Some(m) = l.get("memory") {
            resources.memory = kiln_compose::value::display(m).parse().unwrap_or(0);
        }
        if let Some(c) = l.get("cpus") {
            let cpus: f64 = kiln_compose::value::display(c).parse().unwrap_or(0.0);
            resources.nano_cpus = (cpus * 1e9) as i64;
        }
        if let Some(n) = l.get("pids").and_then(J::as_i64) {
            resources.pids_limit = n;
        }
    }

    // File-based secrets at /run/secrets/<name>, configs at /<name>.
    let mut mounts = Vec::new();
    for (kind, default_dir) in [("secrets", "/run/secrets/"), ("configs", "/")] {
        for s in svc.get(kind).and_then(J::as_array).into_iter().flatten() {
            let Some(src) = s.get("source").and_then(J::as_str) else {
                continue;
            };
            let top = p.model.get(kind).and_then(|m| m.get(src));
            let Some(file) = top.and_then(|t| t.get("file")).and_then(J::as_str) else {
                warn(format!(
                    "service {name}: {kind} {src} is not file-based; skipped"
                ));
                continue;
            };
            let target = match s.get("target").and_then(J::as_str) {
                Some(t) if t.starts_with('/') => t.to_string(),
                Some(t) => format!("{default_dir}{t}"),
                None => format!("{default_dir}{src}"),
            };
            mounts.push(Mount::Bind {
                source: PathBuf::from(file),
                target,
                readonly: true,
            });
        }
    }
    Ok(Plan {
        argv: a,
        labels,
        health,
        no_healthcheck,
        mounts,
        resources,
        more_networks,
    })
}

/// Makes the container of `plan` (not started).
pub fn create(plan: Plan, auto_remove: bool) -> Result<(Store, Container)> {
    let mut argv = plan.argv;
    if auto_remove {
        argv.insert(0, "--rm".into());
    }
    let parsed = RunParser::try_parse_from(&argv).map_err(|e| miette!("{e}"))?;
    let (root, store, mut opts): (Root, Store, RunOptions) =
        crate::commands::run::run_options(parsed.args).map_err(|e| miette!("{e}"))?;
    opts.labels.extend(plan.labels);
    if let Some(h) = plan.health {
        opts.life.health = h;
    }
    opts.life.no_healthcheck |= plan.no_healthcheck;
    if plan.resources != Default::default() {
        opts.life.resources = plan.resources;
    }
    opts.mounts.extend(plan.mounts);
    let c = container::run::create(&root, &store, opts, || {}).map_err(|e| miette!("{e}"))?;
    if plan.more_networks.is_empty() {
        return Ok((store, c));
    }
    match crate::commands::compose_extra::connect(&root, &store, &c, &plan.more_networks) {
        Ok(c) => Ok((store, c)),
        Err(e) => {
            let _ = store.remove(&c.id);
            Err(e)
        }
    }
}

/// Starts `c` in the background.
pub fn start(store: &Store, c: &Container) -> Result<()> {
    match container::run::start(store, c, true, false).map_err(|e| miette!("{e}"))? {
        Started::Detached(StartReport::Started) | Started::Exited(0) => Ok(()),
        Started::Detached(StartReport::Failed { message, .. }) => Err(miette!(
            "Error response from daemon: failed to start container {}: {message}",
            c.name
        )),
        Started::Exited(code) => Err(miette!("container {} exited with {code}", c.name)),
    }
}

/// Stops and removes `c` (and with `volumes` its anonymous volumes).
pub fn remove(root: &Root, store: &Store, c: &Container, timeout: Option<i64>, volumes: bool) {
    if c.is_alive() {
        let t = timeout.map(|t| Duration::from_secs(t.max(0) as u64));
        let _ = container::lifecycle::stop_with(store, &c.id, t, None);
    }
    let _ = store.remove(&c.id);
    if volumes {
        container::volumes::remove_anonymous(root.path(), c);
    }
}

fn health_status(c: &Container) -> Option<String> {
    c.life.health.as_ref().map(|h| h.status.clone())
}

/// Waits for `dep`'s containers to meet `condition`.
/// The container's record once it tells the truth: a process that ended
/// a moment before its helper recorded the exit is waited for (up to 3 s,
/// as `kiln wait` does), so the exit code read is the real one.
fn settled(store: &Store, id: &str) -> Result<Container> {
    let start = std::time::Instant::now();
    loop {
        let c = store.load(id).map_err(|e| miette!("{e}"))?;
        let unrecorded = c.status == Status::Running && !c.is_alive();
        if unrecorded && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return Ok(c);
    }
}

fn wait_condition(store: &Store, p: &Project, dep: &str, condition: &str) -> Result<()> {
    let cs: Vec<Container> = project_containers(store, &p.name, false)?
        .into_iter()
        .filter(|c| service_of(c) == dep)
        .collect();
    for c in cs {
        if condition == "service_started" {
            continue;
        }
        event("Container", &c.name, "Waiting");
        loop {
            let now = settled(store, &c.id)?;
            let status = now.effective_status();
            match condition {
                "service_healthy" => {
                    match health_status(&now).as_deref() {
                        Some("healthy") => {
                            event("Container", &c.name, "Healthy");
                            break;
                        }
                        Some("unhealthy") => {
                            return Err(miette!(
                                "dependency failed to start: container {} is unhealthy",
                                c.name
                            ))
                        }
                        None if status == Status::Running => {
                            return Err(miette!(
                                "dependency failed to start: container {} has no healthcheck configured",
                                c.name
                            ))
                        }
                        _ => {}
                    }
                    if status == Status::Exited {
                        return Err(miette!(
                            "dependency failed to start: container {} exited ({})",
                            c.name,
                            now.exit_code.unwrap_or(255)
                        ));
                    }
                }
                "service_completed_successfully" => {
                    if status == Status::Exited {
                        let code = now.exit_code.unwrap_or(255);
                        if code != 0 {
                            return Err(miette!(
                                "service {dep:?} didn't complete successfully: exit {code}"
                            ));
                        }
                        event("Container", &c.name, "Exited");
                        break;
                    }
                }
                _ => break,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Makes the project's networks and volumes (those the services use).
fn ensure_resources(root: &Root, p: &Project, order: &[String]) -> Result<()> {
    let all = services(p);
    let mut nets: BTreeSet<String> = BTreeSet::new();
    let mut vols: BTreeSet<String> = BTreeSet::new();
    for n in order {
        let svc = &all[n];
        if svc.get("network_mode").is_none() {
            match svc.get("networks").and_then(J::as_object) {
                Some(m) if !m.is_empty() => nets.extend(m.keys().cloned()),
                _ => {
                    nets.insert("default".into());
                }
            }
        }
        for v in svc
            .get("volumes")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            if v.get("type").and_then(J::as_str) == Some("volume") {
                if let Some(s) = v.get("source").and_then(J::as_str) {
                    vols.insert(s.to_string());
                }
            }
        }
    }
    let networks = Networks::open(root.path()).map_err(|e| miette!("{e}"))?;
    for key in nets {
        let real = real_name(p, "networks", &key);
        if networks.find(&real).is_ok() {
            continue;
        }
        if is_external(p, "networks", &key) {
            return Err(miette!(
                "network {real} declared as external, but could not be found"
            ));
        }
        let def = p.model.get("networks").and_then(|m| m.get(&key));
        let mut labels: BTreeMap<String, String> = def
            .and_then(|d| d.get("labels"))
            .and_then(J::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), kiln_compose::value::display(v)))
                    .collect()
            })
            .unwrap_or_default();
        labels.insert("com.docker.compose.network".into(), key.clone());
        labels.insert(PROJECT.into(), p.name.clone());
        labels.insert(VERSION.into(), COMPOSE_VERSION.into());
        event("Network", &real, "Creating");
        networks
            .create(CreateRequest {
                name: real.clone(),
                driver: def
                    .and_then(|d| d.get("driver"))
                    .and_then(J::as_str)
                    .map(String::from),
                subnet: def
                    .and_then(|d| d.pointer("/ipam/config/0/subnet"))
                    .and_then(J::as_str)
                    .map(String::from),
                internal: def
                    .and_then(|d| d.get("internal"))
                    .and_then(J::as_bool)
                    .unwrap_or(false),
                labels,
                ..CreateRequest::default()
            })
            .map_err(|e| miette!("{e}"))?;
        event("Network", &real, "Created");
    }
    let volumes = container::volumes::VolumeStore::open(root.path()).map_err(|e| miette!("{e}"))?;
    for key in vols {
        let real = real_name(p, "volumes", &key);
        if volumes.get(&real).is_ok() {
            continue;
        }
        if is_external(p, "volumes", &key) {
            return Err(miette!("external volume \"{real}\" not found"));
        }
        let labels = BTreeMap::from([
            ("com.docker.compose.volume".to_string(), key.clone()),
            (PROJECT.to_string(), p.name.clone()),
            (VERSION.to_string(), COMPOSE_VERSION.to_string()),
        ]);
        event("Volume", &format!("\"{real}\""), "Creating");
        volumes
            .create(Some(&real), "local", labels, BTreeMap::new())
            .map_err(|e| miette!("{e}"))?;
        event("Volume", &format!("\"{real}\""), "Created");
    }
    Ok(())
}

/// The image ID of `name` in the store, if there.
pub fn image_id(root: &Root, name: &str) -> Option<String> {
    kiln_cache::image::find(root, name)
        .ok()
        .map(|f| f.descriptor.digest().to_string())
}

/// Builds what `up` needs built: with `--build` (or `pull_policy: build`)
/// every service with `build:` among `order`, else those whose image is
/// missing.
fn build_needed(root: &Root, p: &Project, order: &[String], u: &UpArgs) -> Result<()> {
    if u.no_build {
        return Ok(());
    }
    let all = services(p);
    let specs: Vec<_> = p
        .builds()
        .into_iter()
        .filter(|s| order.contains(&s.service))
        .filter(|s| {
            let svc = &all[&s.service];
            u.build
                || svc.get("pull_policy").and_then(J::as_str) == Some("build")
                || image_id(root, &image_of(p, &s.service, svc)).is_none()
        })
        .collect();
    let b = crate::commands::compose_build::BuildArgs {
        quiet: true,
        ..Default::default()
    };
    if !crate::commands::compose_build::build_specs(p, &specs, &b)? {
        return Err(miette!("failed to build"));
    }
    for s in &specs {
        event("Service", &s.service, "Built");
    }
    Ok(())
}

/// Brings the services of `order` to their configuration; the
/// containers of the project afterwards, by service.
pub fn converge(
    root: &Root,
    store: &Store,
    p: &Project,
    order: &[String],
    u: &UpArgs,
) -> Result<()> {
    let all = services(p);
    let mut warn = |w: String| eprintln!("WARN[0000] {w}");
    for name in order {
        let svc = &all[name];
        for (dep, cond, required) in depends_on(svc) {
            if order.contains(&dep)
                || project_containers(store, &p.name, false)?
                    .iter()
                    .any(|c| service_of(c) == dep)
            {
                if let Err(e) = wait_condition(store, p, &dep, &cond) {
                    if required {
                        return Err(e);
                    }
                    warn(e.to_string());
                }
            }
        }
        let want_hash = config_hash(svc);
        let want_image = image_id(root, &image_of(p, name, svc));
        let n = replicas(svc, name, &u.scale);
        let existing: Vec<Container> = project_containers(store, &p.name, false)?
            .into_iter()
            .filter(|c| service_of(c) == name)
            .collect();
        for c in existing
            .iter()
            .filter(|c| number_of(c) > n || number_of(c) == 0)
        {
            event("Container", &c.name, "Stopping");
            remove(root, store, c, None, false);
            event("Container", &c.name, "Removed");
        }
        for i in 1..=n {
            let cname = container_name(p, name, svc, i);
            let current = existing.iter().find(|c| number_of(c) == i);
            if let Some(c) = current {
                let same = c.labels.get(HASH) == Some(&want_hash)
                    && want_image.as_deref().is_none_or(|w| w == c.image_id);
                if u.no_recreate || (same && !u.force_recreate) {
                    if c.is_alive() {
                        event("Container", &c.name, "Running");
                    } else {
                        event("Container", &c.name, "Starting");
                        start(store, c)?;
                        event("Container", &c.name, "Started");
                    }
                    continue;
                }
                event("Container", &c.name, "Recreate");
                remove(root, store, c, None, false);
                let plan = plan(p, name, svc, &cname, i, false, &mut warn)?;
                let (_, c) = create(plan, false)?;
                event("Container", &c.name, "Recreated");
                event("Container", &c.name, "Starting");
                start(store, &c)?;
                event("Container", &c.name, "Started");
                continue;
            }
            event("Container", &cname, "Creating");
            let plan = plan(p, name, svc, &cname, i, false, &mut warn)?;
            let (_, c) = create(plan, false)?;
            event("Container", &c.name, "Created");
            event("Container", &c.name, "Starting");
            start(store, &c)?;
            event("Container", &c.name, "Started");
        }
    }
    Ok(())
}

/// Builds what is missing (or everything with `--build`), makes the
/// networks and volumes, and brings the services of `order` up.
pub fn ensure_up(
    root: &Root,
    store: &Store,
    p: &Project,
    order: &[String],
    u: &UpArgs,
) -> Result<()> {
    build_needed(root, p, order, u)?;
    ensure_resources(root, p, order)?;
    converge(root, store, p, order, u)
}

/// `kiln compose up`.
pub fn up(a: &ComposeArgs, u: &UpArgs) -> Result<ExitCode> {
    let p = load_project(a, true)?;
    let root = Root::from_env().into_diagnostic()?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    let all = services(&p);
    let order = start_order(&all, &u.services, !u.no_deps)?;
    // Orphans: containers of services no longer in the model.
    for c in project_containers(&store, &p.name, false)? {
        if !all.contains_key(service_of(&c)) {
            if u.remove_orphans {
                event("Container", &c.name, "Removing");
                remove(&root, &store, &c, None, false);
                event("Container", &c.name, "Removed");
            } else {
                eprintln!("WARN[0000] Found orphan containers ([{}]) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.", c.name);
            }
        }
    }
    ensure_up(&root, &store, &p, &order, u)?;
    if u.wait {
        return wait_all(&store, &p, &order, u.wait_timeout);
    }
    if u.detach {
        return Ok(ExitCode::SUCCESS);
    }
    // Attached: every container's output, prefixed, until they end (or
    // one ends, with --abort-on-container-exit); then the rest stopped.
    let cs: Vec<Container> = project_containers(&store, &p.name, false)?
        .into_iter()
        .filter(|c| order.iter().any(|o| o == service_of(c)))
        .collect();
    let code = crate::commands::compose_ops::attach_logs(
        &store,
        &p,
        &cs,
        !u.no_color,
        u.abort_on_container_exit,
    );
    if u.abort_on_container_exit {
        for c in &cs {
            if let Ok(now) = store.load(&c.id) {
                if now.is_alive() {
                    event("Container", &c.name, "Stopping");
                    let _ = container::lifecycle::stop_with(&store, &c.id, None, None);
                    event("Container", &c.name, "Stopped");
                }
            }
        }
    }
    Ok(code)
}

/// `up --wait`: every container running, and healthy when it has a check.
fn wait_all(
    store: &Store,
    p: &Project,
    order: &[String],
    timeout: Option<u64>,
) -> Result<ExitCode> {
    let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs(t));
    let cs: Vec<Container> = project_containers(store, &p.name, false)?
        .into_iter()
        .filter(|c| order.iter().any(|o| o == service_of(c)))
        .collect();
    for c in cs {
        event("Container", &c.name, "Waiting");
        loop {
            let now = settled(store, &c.id)?;
            let ok = match health_status(&now).as_deref() {
                Some("healthy") => true,
                Some("unhealthy") => {
                    return Err(miette!("container {} is unhealthy", c.name));
                }
                Some(_) => false,
                None => now.is_alive(),
            };
            if ok {
                event("Container", &c.name, "Healthy");
                break;
            }
            if now.effective_status() == Status::Exited {
                return Err(miette!(
                    "container {} exited ({})",
                    c.name,
                    now.exit_code.unwrap_or(255)
                ));
            }
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(miette!("timeout waiting for {}", c.name));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln compose down`.
pub fn down(a: &ComposeArgs, d: &DownArgs) -> Result<ExitCode> {
    let p = load_project(a, true)?;
    let root = Root::from_env().into_diagnostic()?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    let all = services(&p);
    let cs: Vec<Container> = project_containers(&store, &p.name, true)?
        .into_iter()
        .filter(|c| {
            all.contains_key(service_of(c))
                || d.remove_orphans
                || c.labels.get(ONEOFF).map(String::as_str) == Some("True")
        })
        .collect();
    stop_ordered(&store, &p, &cs, d.timeout, &|c| {
        event("Container", &c.name, "Stopping")
    });
    for c in &cs {
        if let Ok(c) = store.load(&c.id) {
            remove(&root, &store, &c, d.timeout, d.volumes);
            event("Container", &c.name, "Removed");
        }
    }
    // The project's networks (made by compose: labelled with the project).
    let networks = Networks::open(root.path()).map_err(|e| miette!("{e}"))?;
    let exists = |id: &str| store.dir_of(id).join("state.json").exists();
    for r in networks.list().map_err(|e| miette!("{e}"))? {
        if r.labels.get(PROJECT) != Some(&p.name) {
            continue;
        }
        event("Network", &r.name, "Removing");
        match networks.remove(&r.id, &exists) {
            Ok(r) => {
                if let Err(e) = attach::remove_bridge(&r) {
                    eprintln!("WARN[0000] removing bridge {}: {e}", r.bridge);
                }
                event("Network", &r.name, "Removed");
            }
            Err(e) => eprintln!("WARN[0000] network {}: {e}", r.name),
        }
    }
    if d.volumes {
        let volumes =
            container::volumes::VolumeStore::open(root.path()).map_err(|e| miette!("{e}"))?;
        let containers = store.list().unwrap_or_default();
        for v in volumes.list().map_err(|e| miette!("{e}"))? {
            let ours = v
                .labels
                .as_ref()
                .is_some_and(|l| l.get(PROJECT) == Some(&p.name));
            if !ours {
                continue;
            }
            event("Volume", &v.name, "Removing");
            match volumes.remove(&containers, &v.name) {
                Ok(()) => event("Volume", &v.name, "Removed"),
                Err(e) => eprintln!("WARN[0000] volume {}: {e}", v.name),
            }
        }
    }
    if let Some(mode) = &d.rmi {
        if mode != "local" && mode != "all" {
            return Err(miette!("invalid value for --rmi: {mode:?}"));
        }
        let mut images: BTreeSet<String> = BTreeSet::new();
        for (name, svc) in &all {
            let custom = svc.get("image").is_some();
            if mode == "all" || !custom {
                images.insert(image_of(&p, name, svc));
            }
        }
        for img in images {
            if kiln_cache::image::find(&root, &img).is_err() {
                continue;
            }
            match kiln_cache::catalog::remove(&root, &img, false, |_| None) {
                Ok(_) => event("Image", &img, "Removed"),
                Err(e) => eprintln!("WARN[0000] image {img}: {e}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
