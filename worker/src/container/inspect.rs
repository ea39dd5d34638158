//! `kiln inspect` of a container: docker's `ContainerJSON` document (the
//! fields a course or a script reads: `State` with `Health`, `Config`,
//! `HostConfig`, `NetworkSettings`, `Mounts`), built from the record.
//! Field order follows docker's (structs, not maps), so `inspect` output
//! reads as docker's does.

use serde::Serialize;
use serde_json::{json, Value};

use super::life::{rfc3339_ns, Health, HealthConfig, RestartPolicy};
use super::{Container, Status};
use crate::sandbox::{Mount, Network};

/// docker's `State`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// docker's `ContainerJSON` (the parts kiln has).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Doc {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: State,
    pub image: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: u32,
    pub driver: String,
    pub platform: String,
    pub host_config: Value,
    /// `inspect -s`: the bytes of the container's own changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    /// `inspect -s`: those and the image's (docker's `SizeRootFs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<u64>,
    pub mounts: Vec<Value>,
    pub config: Value,
    pub network_settings: Value,
}

/// docker's `State.Status` words for the record (`created`, `running`,
/// `paused`, `restarting`, `exited`).
pub fn status_word(c: &Container) -> &'static str {
    match c.effective_status() {
        Status::Created => "created",
        Status::Running if c.life.paused => "paused",
        Status::Running => "running",
        Status::Exited if c.life.restarting => "restarting",
        Status::Exited => "exited",
    }
}

fn network_mode(c: &Container) -> String {
    match (&c.net, c.network) {
        (Some(n), _) => match &n.mode {
            crate::network::NetMode::Container(id) => format!("container:{id}"),
            crate::network::NetMode::Bridge => n
                .networks
                .first()
                .map_or("bridge".to_string(), |a| a.network.clone()),
        },
        (None, Network::None) => "none".into(),
        (None, _) => "host".into(),
    }
}

/// The document for `c`; `log_path` is its json-file log.
pub fn document(c: &Container, log_path: &str) -> Doc {
    let status = status_word(c);
    let running = c.is_alive();
    let l = &c.life;
    let state = State {
        status: status.to_string(),
        running: running && !l.restarting,
        paused: running && l.paused,
        restarting: l.restarting,
        oom_killed: l.oom_killed,
        dead: false,
        pid: if running { c.pid.unwrap_or(0) } else { 0 },
        exit_code: c.exit_code.unwrap_or(0),
        error: c.error.clone().unwrap_or_default(),
        started_at: rfc3339_ns(if l.started_ns > 0 {
            l.started_ns
        } else {
            c.started.unwrap_or(0) * 1_000_000_000
        }),
        finished_at: rfc3339_ns(if l.finished_ns > 0 {
            l.finished_ns
        } else {
            c.finished.unwrap_or(0) * 1_000_000_000
        }),
        health: l.health.clone(),
    };
    let created_ns = if c.created_ns > 0 {
        i64::try_from(c.created_ns).unwrap_or(0)
    } else {
        c.created * 1_000_000_000
    };
    let r = &l.resources;
    let s = &l.security;
    let binds: Vec<String> = c
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind {
                source,
                target,
                readonly,
            } => Some(format!(
                "{}:{target}{}",
                source.display(),
                if *readonly { ":ro" } else { "" }
            )),
            Mount::Tmpfs { .. } => None,
        })
        .collect();
    let tmpfs: serde_json::Map<String, Value> = c
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Tmpfs { target, .. } => Some((target.clone(), Value::String(String::new()))),
            Mount::Bind { .. } => None,
        })
        .collect();
    let ulimits: Vec<Value> = s
        .ulimit_specs
        .iter()
        .zip(&s.ulimits)
        .map(|(spec, u)| {
            let name = spec.split('=').next().unwrap_or("");
            let v = |x: u64| {
                if x == u64::MAX {
                    -1
                } else {
                    i64::try_from(x).unwrap_or(-1)
                }
            };
            json!({"Name": name, "Hard": v(u.hard), "Soft": v(u.soft)})
        })
        .collect();
    let mode = |m: &str, default: &str| {
        if m.is_empty() {
            default.to_string()
        } else {
            m.to_string()
        }
    };
    let dns = c.net.as_ref().map(|n| n.dns.clone()).unwrap_or_default();
    let extra_hosts: Vec<String> = c
        .net
        .as_ref()
        .map(|n| {
            n.extra_hosts
                .iter()
                .map(|(h, ip)| format!("{h}:{ip}"))
                .collect()
        })
        .unwrap_or_default();
    let restart: &RestartPolicy = &l.restart_policy;
    let host_config = json!({
        "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
        "NetworkMode": network_mode(c),
        "RestartPolicy": {
            "Name": if restart.name.is_empty() { "no" } else { restart.name.as_str() },
            "MaximumRetryCount": restart.maximum_retry_count,
        },
        "AutoRemove": c.auto_remove,
        "CapAdd": if s.cap_add.is_empty() { Value::Null } else { json!(s.cap_add) },
        "CapDrop": if s.cap_drop.is_empty() { Value::Null } else { json!(s.cap_drop) },
        "Dns": dns,
        "ExtraHosts": if extra_hosts.is_empty() { Value::Null } else { json!(extra_hosts) },
        "IpcMode": mode(&s.ipc_mode, "private"),
        "PidMode": s.pid_mode,
        "Privileged": s.privileged,
        "ReadonlyRootfs": c.read_only,
        "SecurityOpt": if s.security_opt.is_empty() { Value::Null } else { json!(s.security_opt) },
        "Tmpfs": if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) },
        "ShmSize": if r.shm_size > 0 { r.shm_size } else { 67108864 },
        "Sysctls": if s.sysctls.is_empty() { Value::Null } else { json!(s.sysctls) },
        "LogConfig": { "Type": c.log_config.driver_name(), "Config": c.log_config.opts },
        "GroupAdd": if s.group_add.is_empty() { Value::Null } else { json!(s.group_add) },
        "Runtime": "runc",
        "CpuShares": r.cpu_shares,
        "Memory": r.memory,
        "NanoCpus": r.nano_cpus,
        "MemorySwap": match (r.memory, r.memory_swap) {
            (0, s) => s,
            (m, 0) => 2 * m,
            (_, s) => s,
        },
        "PidsLimit": if r.pids_limit > 0 { json!(r.pids_limit) } else { Value::Null },
        "Ulimits": if ulimits.is_empty() { Value::Null } else { json!(ulimits) },
        "Init": if l.init { json!(true) } else { Value::Null },
    });
    let mut mounts: Vec<Value> = Vec::new();
    for m in &c.mounts {
        match m {
            Mount::Bind {
                source,
                target,
                readonly,
            } => mounts.push(json!({
                "Type": "bind",
                "Source": source,
                "Destination": target,
                "Mode": if *readonly { "ro" } else { "" },
                "RW": !readonly,
                "Propagation": "rprivate",
            })),
            Mount::Tmpfs { target, .. } => mounts.push(json!({
                "Type": "tmpfs",
                "Source": "",
                "Destination": target,
                "Mode": "",
                "RW": true,
                "Propagation": "",
            })),
        }
    }
    for v in &c.volumes {
        mounts.push(json!({
            "Type": "volume",
            "Name": v.name,
            "Source": "",
            "Destination": v.target,
            "Driver": "local",
            "Mode": if v.readonly { "ro" } else { "z" },
            "RW": !v.readonly,
            "Propagation": "",
        }));
    }
    let (path, args) = match c.command.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let health: Option<&HealthConfig> = l.healthcheck.as_ref();
    let mut config = json!({
        "Hostname": c.hostname,
        "Domainname": "",
        "User": c.user,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": c.tty.tty,
        "OpenStdin": c.tty.open_stdin,
        "StdinOnce": false,
        "Env": c.env,
        "Cmd": c.command,
        "Image": c.image,
        "Volumes": Value::Null,
        "WorkingDir": c.cwd,
        "Entrypoint": Value::Null,
        "OnBuild": Value::Null,
        "Labels": c.labels,
    });
    if let (Some(h), Some(obj)) = (health, config.as_object_mut()) {
        obj.insert(
            "Healthcheck".into(),
            serde_json::to_value(h).unwrap_or(Value::Null),
        );
    }
    // --- net: docker's `Config.ExposedPorts` (`{"80/tcp": {}}`).
    if let (Some(n), Some(obj)) = (&c.net, config.as_object_mut()) {
        if !n.exposed.is_empty() {
            let ports: serde_json::Map<String, Value> =
                n.exposed.iter().map(|k| (k.clone(), json!({}))).collect();
            obj.insert("ExposedPorts".into(), Value::Object(ports));
        }
    }
    if let (Some(sig), Some(obj)) = (&l.stop_signal, config.as_object_mut()) {
        obj.insert("StopSignal".into(), Value::String(sig.clone()));
    }
    if let (Some(t), Some(obj)) = (l.stop_timeout, config.as_object_mut()) {
        obj.insert("StopTimeout".into(), json!(t));
    }
    let mut networks = serde_json::Map::new();
    let mut first_ip = String::new();
    if let Some(n) = &c.net {
        for a in &n.networks {
            if first_ip.is_empty() {
                first_ip = a.ip.to_string();
            }
            networks.insert(
                a.network.clone(),
                json!({
                    "Aliases": if a.aliases.is_empty() { Value::Null } else { json!(a.aliases) },
                    "NetworkID": a.network_id,
                    "Gateway": a.gateway.to_string(),
                    "IPAddress": a.ip.to_string(),
                    "IPPrefixLen": a.prefix,
                }),
            );
        }
    } else {
        networks.insert(network_mode(c), json!({"IPAddress": "", "Gateway": ""}));
    }
    // Docker lists published ports only while the container runs.
    let mut ports = serde_json::Map::new();
    if let (Some(n), true) = (&c.net, running) {
        for b in &n.ports {
            let list = ports.entry(b.key()).or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(
                    json!({"HostIp": b.host_ip.to_string(), "HostPort": b.host_port.to_string()}),
                );
            }
        }
    }
    let network_settings = json!({
        "SandboxKey": c.pid.filter(|_| running).map(|p| format!("/proc/{p}/ns/net")).unwrap_or_default(),
        "Ports": ports,
        "IPAddress": first_ip,
        "Networks": networks,
    });
    Doc {
        id: c.id.clone(),
        created: rfc3339_ns(created_ns),
        path,
        args,
        state,
        image: c.image_id.clone(),
        log_path: log_path.to_string(),
        name: format!("/{}", c.name),
        restart_count: l.restart_count,
        driver: "overlay2".into(),
        platform: "linux".into(),
        host_config,
        size_rw: None,
        size_root_fs: None,
        mounts,
        config,
        network_settings,
    }
}
