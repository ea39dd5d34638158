//! Printing the resolved model as `docker compose config` prints it:
//! go-yaml v3 with an indent of 2 (or `encoding/json` with two spaces),
//! struct fields in compose-go's declaration order, map keys sorted,
//! `x-` extensions after the fields.

use serde_json::Value as J;

use crate::value::display;

/// compose-go's field order for the struct at `path` (`*` a map key, `[]`
/// a list item); None when the value there is a plain map (sorted keys).
fn order(path: &[&str]) -> Option<&'static [&'static str]> {
    const PROJECT: &[&str] = &[
        "name", "services", "networks", "volumes", "secrets", "configs", "models",
    ];
    const SERVICE: &[&str] = &[
        "name",
        "profiles",
        "annotations",
        "attach",
        "build",
        "develop",
        "blkio_config",
        "cap_add",
        "cap_drop",
        "cgroup_parent",
        "cgroup",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpus",
        "cpuset",
        "cpu_shares",
        "command",
        "configs",
        "container_name",
        "credential_spec",
        "depends_on",
        "deploy",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "dockerfile",
        "domainname",
        "entrypoint",
        "provider",
        "environment",
        "env_file",
        "expose",
        "extends",
        "external_links",
        "extra_hosts",
        "group_add",
        "gpus",
        "hostname",
        "healthcheck",
        "image",
        "init",
        "ipc",
        "isolation",
        "labels",
        "label_file",
        "links",
        "logging",
        "log_driver",
        "log_opt",
        "mem_limit",
        "mem_reservation",
        "memswap_limit",
        "mem_swappiness",
        "mac_address",
        "models",
        "net",
        "network_mode",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "privileged",
        "pull_policy",
        "read_only",
        "restart",
        "runtime",
        "scale",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "storage_opt",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "use_api_socket",
        "user",
        "userns_mode",
        "uts",
        "volume_driver",
        "volumes",
        "volumes_from",
        "working_dir",
        "pre_start",
        "post_start",
        "pre_stop",
    ];
    const BUILD: &[&str] = &[
        "context",
        "dockerfile",
        "dockerfile_inline",
        "entitlements",
        "args",
        "provenance",
        "sbom",
        "ssh",
        "labels",
        "cache_from",
        "cache_to",
        "no_cache",
        "no_cache_filter",
        "additional_contexts",
        "pull",
        "extra_hosts",
        "isolation",
        "network",
        "target",
        "secrets",
        "shm_size",
        "tags",
        "ulimits",
        "platforms",
        "privileged",
    ];
    const HEALTH: &[&str] = &[
        "test",
        "timeout",
        "interval",
        "retries",
        "start_period",
        "start_interval",
        "disable",
    ];
    const PORT: &[&str] = &[
        "name",
        "mode",
        "host_ip",
        "target",
        "published",
        "protocol",
        "app_protocol",
    ];
    const VOLUME_MOUNT: &[&str] = &[
        "type",
        "source",
        "target",
        "read_only",
        "consistency",
        "bind",
        "volume",
        "tmpfs",
        "image",
    ];
    const BIND: &[&str] = &["selinux", "propagation", "create_host_path", "recursive"];
    const VOLUME_OPTS: &[&str] = &["labels", "nocopy", "subpath"];
    const TMPFS: &[&str] = &["size", "mode"];
    const FILE_REF: &[&str] = &["source", "target", "uid", "gid", "mode"];
    const DEPENDS: &[&str] = &["condition", "restart", "required"];
    const DEVICE: &[&str] = &["source", "target", "permissions"];
    const SVC_NET: &[&str] = &[
        "aliases",
        "driver_opts",
        "gw_priority",
        "interface_name",
        "ipv4_address",
        "ipv6_address",
        "link_local_ips",
        "mac_address",
        "priority",
    ];
    const NETWORK: &[&str] = &[
        "name",
        "driver",
        "driver_opts",
        "ipam",
        "external",
        "internal",
        "attachable",
        "labels",
        "enable_ipv4",
        "enable_ipv6",
    ];
    const IPAM: &[&str] = &["driver", "config", "options"];
    const POOL: &[&str] = &["subnet", "gateway", "ip_range", "aux_addresses"];
    const VOLUME: &[&str] = &["name", "driver", "driver_opts", "external", "labels"];
    const FILE_OBJ: &[&str] = &[
        "name",
        "file",
        "environment",
        "content",
        "external",
        "labels",
        "driver",
        "driver_opts",
        "template_driver",
    ];
    const DEPLOY: &[&str] = &[
        "mode",
        "replicas",
        "labels",
        "update_config",
        "rollback_config",
        "resources",
        "restart_policy",
        "placement",
        "endpoint_mode",
    ];
    const RESOURCES: &[&str] = &["limits", "reservations"];
    const RESOURCE: &[&str] = &["cpus", "memory", "pids", "devices", "generic_resources"];
    const RESTART: &[&str] = &["condition", "delay", "max_attempts", "window"];
    const LOGGING: &[&str] = &["driver", "options"];
    const ULIMIT: &[&str] = &["single", "soft", "hard"];
    const EXTENDS: &[&str] = &["file", "service"];
    const ENV_FILE: &[&str] = &["path", "required", "format"];
    const UPDATE: &[&str] = &[
        "parallelism",
        "delay",
        "failure_action",
        "monitor",
        "max_failure_ratio",
        "order",
    ];
    Some(match path {
        [] => PROJECT,
        ["services", _] => SERVICE,
        ["services", _, "build"] => BUILD,
        ["services", _, "build", "secrets", _] => FILE_REF,
        ["services", _, "build", "ulimits", _] => ULIMIT,
        ["services", _, "healthcheck"] => HEALTH,
        ["services", _, "ports", _] => PORT,
        ["services", _, "volumes", _] => VOLUME_MOUNT,
        ["services", _, "volumes", _, "bind"] => BIND,
        ["services", _, "volumes", _, "volume"] => VOLUME_OPTS,
        ["services", _, "volumes", _, "tmpfs"] => TMPFS,
        ["services", _, "secrets" | "configs", _] => FILE_REF,
        ["services", _, "depends_on", _] => DEPENDS,
        ["services", _, "devices", _] => DEVICE,
        ["services", _, "networks", _] => SVC_NET,
        ["services", _, "deploy"] => DEPLOY,
        ["services", _, "deploy", "resources"] => RESOURCES,
        ["services", _, "deploy", "resources", _] => RESOURCE,
        ["services", _, "deploy", "restart_policy"] => RESTART,
        ["services", _, "deploy", "update_config" | "rollback_config"] => UPDATE,
        ["services", _, "logging"] => LOGGING,
        ["services", _, "ulimits", _] => ULIMIT,
        ["services", _, "extends"] => EXTENDS,
        ["services", _, "env_file", _] => ENV_FILE,
        ["networks", _] => NETWORK,
        ["networks", _, "ipam"] => IPAM,
        ["networks", _, "ipam", "config", _] => POOL,
        ["volumes", _] => VOLUME,
        ["secrets" | "configs", _] => FILE_OBJ,
        _ => return None,
    })
}

/// Keys of an object in output order.
fn keys<'a>(m: &'a serde_json::Map<String, J>, path: &[&str]) -> Vec<&'a String> {
    match order(path) {
        None => m.keys().collect(),
        Some(fields) => {
            let mut out: Vec<&String> = Vec::new();
            for f in fields {
                if let Some((k, _)) = m.get_key_value(*f) {
                    out.push(k);
                }
            }
            for k in m.keys() {
                if !fields.contains(&k.as_str()) {
                    out.push(k);
                }
            }
            out
        }
    }
}

/// The model as YAML.
pub fn yaml(model: &J) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    match model {
        J::Object(m) if !m.is_empty() => block_map(&mut out, m, &mut path, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn block_map<'a>(
    out: &mut String,
    m: &'a serde_json::Map<String, J>,
    path: &mut Vec<&'a str>,
    indent: usize,
) {
    for k in keys(m, path) {
        let v = &m[k];
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_str(k));
        out.push(':');
        path.push(k);
        value_after_key(out, v, path, indent);
        path.pop();
    }
}

fn value_after_key<'a>(out: &mut String, v: &'a J, path: &mut Vec<&'a str>, indent: usize) {
    match v {
        J::Object(m) if !m.is_empty() => {
            out.push('\n');
            block_map(out, m, path, indent + 2);
        }
        J::Array(a) if !a.is_empty() => {
            out.push('\n');
            block_seq(out, a, path, indent + 2);
        }
        J::String(s) if s.contains('\n') => {
            out.push(' ');
            literal(out, s, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn block_seq<'a>(out: &mut String, a: &'a [J], path: &mut Vec<&'a str>, indent: usize) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        path.push("[]");
        match item {
            J::Object(m) if !m.is_empty() => {
                // The first key shares the dash's line.
                let mut first = true;
                for k in keys(m, path) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&scalar_str(k));
                    out.push(':');
                    path.push(k);
                    value_after_key(out, &m[k], path, indent + 2);
                    path.pop();
                }
            }
            J::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                block_seq(out, inner, path, indent + 2);
            }
            J::String(s) if s.contains('\n') => {
                out.push(' ');
                literal(out, s, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
        path.pop();
    }
}

fn literal(out: &mut String, s: &str, indent: usize) {
    let body = s.strip_suffix('\n');
    let header = match body {
        Some(b) if b.ends_with('\n') => "|+",
        Some(_) => "|",
        None => "|-",
    };
    out.push_str(header);
    out.push('\n');
    let text = body.unwrap_or(s);
    for line in text.split('\n') {
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn inline(v: &J) -> String {
    match v {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Number(_) => display(v),
        J::String(s) => scalar_str(s),
        J::Array(_) => "[]".into(),
        J::Object(_) => "{}".into(),
    }
}

/// go-yaml's YAML 1.1 booleans it still quotes.
fn old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

fn base60(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = t.split(':');
    let Some(first) = parts.next() else {
        return false;
    };
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return false;
    }
    for (i, p) in rest.iter().enumerate() {
        let p = if i == rest.len() - 1 {
            p.split('.').next().unwrap_or(p)
        } else {
            p
        };
        let b = p.as_bytes();
        let ok = match b {
            [d] => d.is_ascii_digit(),
            [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Would go-yaml read this plain scalar back as something other than a
/// string?
fn resolves_non_string(s: &str) -> bool {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL" | "<<") || old_bool(s) || base60(s) {
        return true;
    }
    let n = crate::yaml::Node {
        v: crate::yaml::Val::Scalar {
            text: s.to_string(),
            plain: true,
        },
        pos: Default::default(),
    };
    if !matches!(crate::value::scalar_json(&n), J::String(_)) {
        return true;
    }
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
        || t.starts_with("0b") && t.len() > 2 && t[2..].bytes().all(|b| b == b'0' || b == b'1')
        || timestamp(s)
}

fn timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

fn plain_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if s.starts_with(' ') || s.ends_with(' ') || s.starts_with('\t') || s.ends_with('\t') {
        return false;
    }
    if b"#,[]{}&*!|>'\"%@`".contains(&first) {
        return false;
    }
    if matches!(first, b'-' | b'?' | b':') && (b.len() == 1 || b[1] == b' ') {
        return false;
    }
    if s.ends_with(':') || s.contains(": ") || s.contains(" #") || s.contains(":\t") {
        return false;
    }
    if s == "---" || s == "..." {
        return false;
    }
    !s.chars().any(|c| c.is_control())
}

/// A string as go-yaml v3 writes it: plain, 'single' or "double" quoted.
fn scalar_str(s: &str) -> String {
    if resolves_non_string(s) {
        return double(s);
    }
    if plain_ok(s) {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        return double(s);
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => o.push_str(&format!("\\x{:02X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The model as JSON, as `docker compose config --format json` writes it:
/// top-level keys sorted, struct fields in declaration order, `command` and
/// `entrypoint` always present on services, `ipam` on networks.
pub fn json(model: &J) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    json_value(&mut out, model, &mut path, 0);
    out
}

fn json_value<'a>(out: &mut String, v: &'a J, path: &mut Vec<&'a str>, indent: usize) {
    match v {
        J::Object(m) => {
            // Extensions are `json:"-"` in compose-go's structs; only the
            // project's own are written.
            let mut ks: Vec<&String> = if path.is_empty() {
                m.keys().collect()
            } else if order(path).is_some() {
                keys(m, path)
                    .into_iter()
                    .filter(|k| !k.starts_with("x-"))
                    .collect()
            } else {
                keys(m, path)
            };
            let extra = match path.as_slice() {
                ["services", _] => vec![("command", 0usize), ("entrypoint", 0)],
                ["networks", _] => vec![("ipam", 0)],
                ["services", _, "deploy"] => vec![("resources", 0), ("placement", 0)],
                _ => vec![],
            };
            let owned: Vec<String>;
            let mut synth: Vec<(String, J)> = Vec::new();
            if !extra.is_empty() {
                for (k, _) in &extra {
                    if !m.contains_key(*k) {
                        synth.push((
                            k.to_string(),
                            if matches!(*k, "ipam" | "resources" | "placement") {
                                J::Object(Default::default())
                            } else {
                                J::Null
                            },
                        ));
                    }
                }
                owned = synth.iter().map(|(k, _)| k.clone()).collect();
                let fields = order(path).unwrap_or(&[]);
                let pos = |k: &str| fields.iter().position(|f| *f == k).unwrap_or(usize::MAX);
                ks.extend(owned.iter());
                ks.sort_by_key(|k| pos(k));
            }
            if ks.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{\n");
            for (i, k) in ks.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(&J::String((*k).clone()).to_string());
                out.push_str(": ");
                let val: &J = match m.get(*k) {
                    Some(v) => v,
                    None => match synth.iter().find(|(s, _)| s == *k) {
                        Some((_, v)) => v,
                        None => &J::Null,
                    },
                };
                // SAFETY-free lifetime juggling: synthesized values are
                // leaf values; recurse with an owned clone.
                let cloned = val.clone();
                let mut p: Vec<&str> = path.to_vec();
                p.push(k.as_str());
                json_owned(out, &cloned, &p, indent + 2);
                if i + 1 < ks.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        J::Array(a) => json_array(out, a, path, indent),
        other => out.push_str(&json_scalar(other)),
    }
}

fn json_owned(out: &mut String, v: &J, path: &[&str], indent: usize) {
    let mut p: Vec<&str> = path.to_vec();
    json_value(out, v, &mut p, indent);
}

fn json_array<'a>(out: &mut String, a: &'a [J], path: &mut Vec<&'a str>, indent: usize) {
    if a.is_empty() {
        out.push_str("[]");
        return;
    }
    out.push_str("[\n");
    for (i, item) in a.iter().enumerate() {
        out.push_str(&" ".repeat(indent + 2));
        path.push("[]");
        json_value(out, item, path, indent + 2);
        path.pop();
        if i + 1 < a.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str(&" ".repeat(indent));
    out.push(']');
}

fn json_scalar(v: &J) -> String {
    match v {
        J::Number(_) => display(v),
        J::String(s) => {
            // Go's encoding/json escapes <, > and & as \u003c etc.
            let s = J::String(s.clone()).to_string();
            s.replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
        }
        other => other.to_string(),
    }
}

/// `$` → `$$` in every string value, as `docker compose config` writes an
/// interpolated model (so that reading it back gives the same values).
pub fn escape_dollars(v: &mut J) {
    match v {
        J::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        J::Object(m) => m.values_mut().for_each(escape_dollars),
        J::Array(a) => a.iter_mut().for_each(escape_dollars),
        _ => {}
    }
}
