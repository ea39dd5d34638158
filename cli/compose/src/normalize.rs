//! Short syntax to long syntax, defaults and absolute paths: the model as
//! `docker compose config` prints it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value as J};

use crate::load::clean;
use crate::value::display;
use crate::{duration, Error};

fn s(v: &str) -> J {
    J::String(v.to_string())
}

fn is_url(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

fn abs(dir: &Path, p: &str, env: &BTreeMap<String, String>) -> String {
    if let Some(rest) = p.strip_prefix('~') {
        if let Some(home) = env.get("HOME") {
            return clean(&Path::new(home).join(rest.trim_start_matches('/')))
                .display()
                .to_string();
        }
    }
    clean(&dir.join(p)).display().to_string()
}

/// Normalises the whole merged model in place.
pub fn normalize(
    model: &mut J,
    project: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let Some(root) = model.as_object_mut() else {
        return Ok(());
    };
    if !root.contains_key("services") {
        root.insert("services".into(), J::Object(Map::new()));
    }
    let mut uses_default = false;
    if let Some(J::Object(services)) = root.get_mut("services") {
        for (name, svc) in services.iter_mut() {
            if svc.is_null() {
                *svc = J::Object(Map::new());
            }
            if let Some(m) = svc.as_object_mut() {
                service(name, m, dir, env)?;
                if m.get("networks")
                    .and_then(J::as_object)
                    .is_some_and(|n| n.contains_key("default"))
                {
                    uses_default = true;
                }
            }
        }
    }
    for kind in ["networks", "volumes", "secrets", "configs"] {
        if let Some(J::Object(items)) = root.get_mut(kind) {
            for (key, item) in items.iter_mut() {
                if item.is_null() {
                    *item = J::Object(Map::new());
                }
                if let Some(m) = item.as_object_mut() {
                    resource(kind, project, key, m, dir, env);
                }
            }
        }
    }
    if uses_default {
        let nets = root
            .entry("networks")
            .or_insert_with(|| J::Object(Map::new()));
        if let Some(n) = nets.as_object_mut() {
            let d = n.entry("default").or_insert_with(|| J::Object(Map::new()));
            if let Some(dm) = d.as_object_mut() {
                if !dm.contains_key("name") {
                    dm.insert("name".into(), s(&format!("{project}_default")));
                }
            }
        }
    }
    unused(root);
    for kind in ["networks", "volumes", "secrets", "configs"] {
        if root
            .get(kind)
            .and_then(J::as_object)
            .is_some_and(|m| m.is_empty())
        {
            root.remove(kind);
        }
    }
    Ok(())
}

/// compose-go's `WithoutUnnecessaryResources`: top-level networks, volumes,
/// secrets and configs no enabled service uses are left out.
fn unused(root: &mut Map<String, J>) {
    let mut used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if let Some(J::Object(services)) = root.get("services") {
        for svc in services.values() {
            if let Some(J::Object(n)) = svc.get("networks") {
                used.entry("networks")
                    .or_default()
                    .extend(n.keys().cloned());
            }
            if let Some(J::Array(v)) = svc.get("volumes") {
                for m in v {
                    if m.get("type").and_then(J::as_str) == Some("volume") {
                        if let Some(src) = m.get("source").and_then(J::as_str) {
                            used.entry("volumes").or_default().push(src.to_string());
                        }
                    }
                }
            }
            for k in ["secrets", "configs"] {
                if let Some(J::Array(v)) = svc.get(k) {
                    for r in v {
                        if let Some(src) = r.get("source").and_then(J::as_str) {
                            used.entry(k).or_default().push(src.to_string());
                        }
                    }
                }
            }
            if let Some(J::Array(v)) = svc.get("build").and_then(|b| b.get("secrets")) {
                for r in v {
                    if let Some(src) = r.get("source").and_then(J::as_str) {
                        used.entry("secrets").or_default().push(src.to_string());
                    }
                }
            }
        }
    }
    for kind in ["networks", "volumes", "secrets", "configs"] {
        let keep = used.get(kind).cloned().unwrap_or_default();
        if let Some(J::Object(items)) = root.get_mut(kind) {
            items.retain(|k, _| keep.contains(k));
        }
    }
}

fn resource(
    kind: &str,
    project: &str,
    key: &str,
    m: &mut Map<String, J>,
    dir: &Path,
    env: &BTreeMap<String, String>,
) {
    let external = match m.get("external") {
        Some(J::Bool(b)) => *b,
        Some(J::Object(e)) => {
            if let Some(n) = e.get("name").cloned() {
                m.insert("name".into(), n);
            }
            m.insert("external".into(), J::Bool(true));
            true
        }
        _ => false,
    };
    if !m.contains_key("name") {
        let name = if external {
            key.to_string()
        } else {
            format!("{project}_{key}")
        };
        m.insert("name".into(), s(&name));
    }
    if matches!(m.get("external"), Some(J::Bool(false))) {
        m.remove("external");
    }
    for k in ["labels"] {
        if let Some(v) = m.get(k).cloned() {
            m.insert(k.into(), J::Object(to_map(v, None, false)));
        }
    }
    if kind == "secrets" || kind == "configs" {
        if let Some(J::String(f)) = m.get("file").cloned() {
            m.insert("file".into(), s(&abs(dir, &f, env)));
        }
    }
}

/// `list_or_dict` to a map of strings (`KEY=V`, `KEY` → null or the
/// environment's value when `env` is given).
fn to_map(v: J, env: Option<&BTreeMap<String, String>>, resolve_null: bool) -> Map<String, J> {
    let mut out = Map::new();
    match v {
        J::Object(m) => {
            for (k, val) in m {
                let val = match val {
                    J::Null if resolve_null => {
                        env.and_then(|e| e.get(&k)).map(|x| s(x)).unwrap_or(J::Null)
                    }
                    J::Null => J::Null,
                    other => s(&display(&other)),
                };
                out.insert(k, val);
            }
        }
        J::Array(a) => {
            for item in a {
                let item = display(&item);
                match item.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.to_string(), s(v));
                    }
                    None => {
                        let val = if resolve_null {
                            env.and_then(|e| e.get(&item))
                                .map(|x| s(x))
                                .unwrap_or(J::Null)
                        } else {
                            J::Null
                        };
                        out.insert(item, val);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

fn str_list(v: J) -> J {
    match v {
        J::String(x) => J::Array(vec![s(&x)]),
        J::Array(a) => J::Array(a.into_iter().map(|x| s(&display(&x))).collect()),
        other => other,
    }
}

fn go_duration(v: &J) -> Option<J> {
    let text = v.as_str()?;
    let ns = duration::parse(text)?;
    Some(s(&duration::format(ns)))
}

fn service(
    name: &str,
    m: &mut Map<String, J>,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), Error> {
    if let Some(b) = m.remove("build") {
        let mut b = match b {
            J::String(c) => {
                let mut x = Map::new();
                x.insert("context".into(), s(&c));
                x
            }
            J::Object(x) => x,
            _ => Map::new(),
        };
        let ctx = b
            .get("context")
            .and_then(J::as_str)
            .unwrap_or(".")
            .to_string();
        let ctx = if is_url(&ctx) {
            ctx
        } else {
            abs(dir, &ctx, env)
        };
        b.insert("context".into(), s(&ctx));
        if !b.contains_key("dockerfile") && !b.contains_key("dockerfile_inline") {
            b.insert("dockerfile".into(), s("Dockerfile"));
        }
        for k in ["args", "labels", "additional_contexts"] {
            if let Some(v) = b.remove(k) {
                b.insert(k.into(), J::Object(to_map(v, Some(env), k == "args")));
            }
        }
        for k in [
            "cache_from",
            "cache_to",
            "tags",
            "platforms",
            "no_cache_filter",
        ] {
            if let Some(v) = b.remove(k) {
                b.insert(k.into(), str_list(v));
            }
        }
        if let Some(J::Array(sec)) = b.remove("secrets") {
            b.insert("secrets".into(), J::Array(file_refs(sec)));
        }
        if let Some(v) = b.remove("extra_hosts") {
            b.insert("extra_hosts".into(), hosts(v));
        }
        m.insert("build".into(), J::Object(b));
    }
    for k in ["command", "entrypoint"] {
        if let Some(J::String(c)) = m.get(k).cloned() {
            let words =
                shell_words(&c).map_err(|e| Error::Invalid(format!("services.{name}.{k}: {e}")))?;
            m.insert(
                k.into(),
                J::Array(words.into_iter().map(J::String).collect()),
            );
        }
    }
    // env_file then environment (environment wins).
    let mut environment = Map::new();
    if let Some(v) = m.remove("env_file") {
        let list = match v {
            J::String(x) => vec![s(&x)],
            J::Array(a) => a,
            _ => vec![],
        };
        let mut files = Vec::new();
        for e in list {
            let (path, required, format) = match e {
                J::String(p) => (p, true, None),
                J::Object(o) => (
                    o.get("path").map(display).unwrap_or_default(),
                    o.get("required").and_then(J::as_bool).unwrap_or(true),
                    o.get("format").cloned(),
                ),
                _ => continue,
            };
            let p = abs(dir, &path, env);
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let look = |k: &str| env.get(k).cloned();
                    let entries =
                        crate::dotenv::parse(&text, &look).map_err(|e| Error::EnvFile {
                            path: p.clone().into(),
                            message: e.to_string(),
                        })?;
                    for (k, v) in crate::dotenv::to_map(entries, &look) {
                        environment.insert(k, s(&v));
                    }
                }
                Err(_) if !required => {}
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "env file {p} not found: stat {p}: no such file or directory"
                    )))
                }
            }
            let mut o = Map::new();
            o.insert("path".into(), s(&p));
            o.insert("required".into(), J::Bool(required));
            if let Some(f) = format {
                o.insert("format".into(), f);
            }
            files.push(J::Object(o));
        }
        // compose resolves env files into `environment` and drops them.
        let _ = files;
    }
    if let Some(v) = m.remove("environment") {
        environment.extend(to_map(v, Some(env), true));
    }
    if !environment.is_empty() {
        m.insert("environment".into(), J::Object(environment));
    }
    for k in ["labels", "annotations", "sysctls"] {
        if let Some(v) = m.remove(k) {
            m.insert(k.into(), J::Object(to_map(v, None, false)));
        }
    }
    // Log driver options are strings (`max-file: 2` is "2").
    if let Some(J::Object(o)) = m.get_mut("logging").and_then(|l| l.get_mut("options")) {
        for v in o.values_mut() {
            if !v.is_null() && !v.is_string() {
                *v = s(&display(v));
            }
        }
    }
    for k in ["dns", "dns_search", "tmpfs"] {
        if let Some(v) = m.remove(k) {
            m.insert(k.into(), str_list(v));
        }
    }
    for k in ["expose", "group_add"] {
        if let Some(J::Array(e)) = m.remove(k) {
            m.insert(
                k.into(),
                J::Array(e.iter().map(|x| s(&display(x))).collect()),
            );
        }
    }
    if let Some(v) = m.remove("extra_hosts") {
        m.insert("extra_hosts".into(), hosts(v));
    }
    if let Some(J::Array(ports)) = m.remove("ports") {
        let mut out = Vec::new();
        for p in ports {
            match p {
                J::Object(mut o) => {
                    if !o.contains_key("mode") {
                        o.insert("mode".into(), s("ingress"));
                    }
                    if !o.contains_key("protocol") {
                        o.insert("protocol".into(), s("tcp"));
                    }
                    if let Some(t) = o.get("target").cloned() {
                        if let Ok(n) = display(&t).parse::<i64>() {
                            o.insert("target".into(), J::from(n));
                        }
                    }
                    if let Some(pb) = o.get("published").cloned() {
                        o.insert("published".into(), s(&display(&pb)));
                    }
                    out.push(J::Object(o));
                }
                other => out.extend(
                    parse_port(&display(&other))
                        .map_err(|e| Error::Invalid(format!("services.{name}.ports: {e}")))?,
                ),
            }
        }
        m.insert("ports".into(), J::Array(out));
    }
    if let Some(J::Array(vols)) = m.remove("volumes") {
        let mut out = Vec::new();
        for v in vols {
            out.push(match v {
                J::String(spec) => {
                    volume_short(&spec, dir, env).map_err(|e| Error::Invalid(e.to_string()))?
                }
                J::Object(mut o) => {
                    if let Some(J::Object(t)) = o.get_mut("tmpfs") {
                        if let Some(v) = t.get("size").and_then(bytes) {
                            t.insert("size".into(), v);
                        }
                    }
                    if o.get("type").and_then(J::as_str) == Some("bind") {
                        if let Some(J::String(src)) = o.get("source").cloned() {
                            o.insert("source".into(), s(&abs(dir, &src, env)));
                        }
                    }
                    J::Object(o)
                }
                other => other,
            });
        }
        m.insert("volumes".into(), J::Array(out));
    }
    match m.remove("depends_on") {
        Some(J::Array(a)) => {
            let mut d = Map::new();
            for x in a {
                let mut o = Map::new();
                o.insert("condition".into(), s("service_started"));
                o.insert("required".into(), J::Bool(true));
                d.insert(display(&x), J::Object(o));
            }
            m.insert("depends_on".into(), J::Object(d));
        }
        Some(J::Object(mut d)) => {
            for v in d.values_mut() {
                if let Some(o) = v.as_object_mut() {
                    if !o.contains_key("required") {
                        o.insert("required".into(), J::Bool(true));
                    }
                }
            }
            m.insert("depends_on".into(), J::Object(d));
        }
        _ => {}
    }
    implicit_dependencies(m);
    if let Some(J::Array(devs)) = m.remove("devices") {
        m.insert(
            "devices".into(),
            J::Array(devs.into_iter().map(device).collect()),
        );
    }
    // compose leaves these out when false (Go's omitempty).
    for k in [
        "privileged",
        "read_only",
        "tty",
        "stdin_open",
        "oom_kill_disable",
    ] {
        if m.get(k) == Some(&J::Bool(false)) {
            m.remove(k);
        }
    }
    match m.remove("networks") {
        Some(J::Array(a)) => {
            let n: Map<String, J> = a.iter().map(|x| (display(x), J::Null)).collect();
            m.insert("networks".into(), J::Object(n));
        }
        Some(other) => {
            m.insert("networks".into(), other);
        }
        None => {
            if !m.contains_key("network_mode") {
                let mut n = Map::new();
                n.insert("default".into(), J::Null);
                m.insert("networks".into(), J::Object(n));
            }
        }
    }
    if let Some(J::Object(h)) = m.get_mut("healthcheck") {
        if let Some(J::String(t)) = h.get("test").cloned() {
            h.insert("test".into(), J::Array(vec![s("CMD-SHELL"), s(&t)]));
        }
        for k in ["timeout", "interval", "start_period", "start_interval"] {
            if let Some(d) = h.get(k).and_then(go_duration) {
                h.insert(k.into(), d);
            }
        }
    }
    if let Some(d) = m.get("stop_grace_period").and_then(go_duration) {
        m.insert("stop_grace_period".into(), d);
    }
    for k in ["secrets", "configs"] {
        if let Some(J::Array(a)) = m.remove(k) {
            let mut refs = file_refs(a);
            for r in refs.iter_mut().filter_map(J::as_object_mut) {
                if k == "secrets" && !r.contains_key("target") {
                    let src = r.get("source").map(display).unwrap_or_default();
                    r.insert("target".into(), s(&format!("/run/secrets/{src}")));
                }
                if let Some(J::Number(n)) = r.get("mode").cloned() {
                    if let Some(i) = n.as_i64() {
                        r.insert("mode".into(), s(&format!("0{i:o}")));
                    }
                }
            }
            m.insert(k.into(), J::Array(refs));
        }
    }
    for k in ["mem_limit", "mem_reservation", "memswap_limit", "shm_size"] {
        if let Some(v) = m.get(k).and_then(bytes) {
            m.insert(k.into(), v);
        }
    }
    if let Some(J::Object(res)) = m.get_mut("deploy").and_then(|d| d.get_mut("resources")) {
        for r in res.values_mut().filter_map(J::as_object_mut) {
            if let Some(v) = r.get("memory").and_then(bytes) {
                r.insert("memory".into(), v);
            }
            if let Some(c) = r.get("cpus").cloned() {
                if let Ok(f) = display(&c).parse::<f64>() {
                    if let Some(n) = serde_json::Number::from_f64(f) {
                        r.insert("cpus".into(), J::Number(n));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The services a service needs without naming them in `depends_on`: a
/// link, `network_mode`, `ipc` or `pid` of `service:X` (restarted with
/// it), a `volumes_from` of a service; added as compose-go adds them.
fn implicit_dependencies(m: &mut Map<String, J>) {
    let mut deps: Vec<(String, bool)> = Vec::new();
    let mut add = |name: &str, restart: bool| match deps.iter_mut().find(|(n, _)| n == name) {
        Some(d) => d.1 |= restart,
        None => deps.push((name.to_string(), restart)),
    };
    for k in ["network_mode", "ipc", "pid"] {
        if let Some(other) = m
            .get(k)
            .and_then(J::as_str)
            .and_then(|v| v.strip_prefix("service:"))
        {
            add(other, true);
        }
    }
    for l in m.get("links").and_then(J::as_array).into_iter().flatten() {
        let l = display(l);
        add(l.split(':').next().unwrap_or_default(), true);
    }
    for v in m
        .get("volumes_from")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let v = display(v);
        if !v.starts_with("container:") {
            add(v.split(':').next().unwrap_or_default(), false);
        }
    }
    if deps.is_empty() {
        return;
    }
    let d = m
        .entry("depends_on")
        .or_insert_with(|| J::Object(Map::new()));
    let Some(d) = d.as_object_mut() else {
        return;
    };
    for (name, restart) in deps {
        if name.is_empty() || d.contains_key(&name) {
            continue;
        }
        let mut o = Map::new();
        o.insert("condition".into(), s("service_started"));
        if restart {
            o.insert("restart".into(), J::Bool(true));
        }
        o.insert("required".into(), J::Bool(true));
        d.insert(name, J::Object(o));
    }
}

/// A device in compose's long form: `SRC[:DST[:PERMS]]` split on colons
/// as compose-go splits it (a second field is always the target).
fn device(v: J) -> J {
    let J::String(spec) = v else {
        return v;
    };
    let mut parts = spec.splitn(3, ':');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts
        .next()
        .map(String::from)
        .unwrap_or_else(|| source.clone());
    let permissions = parts.next().unwrap_or("rwm").to_string();
    let mut o = Map::new();
    o.insert("source".into(), s(&source));
    o.insert("target".into(), s(&target));
    o.insert("permissions".into(), s(&permissions));
    J::Object(o)
}

/// docker's `units.RAMInBytes` (`256M`, `1g`, `512k`, plain bytes), printed
/// as compose prints `UnitBytes`: a decimal string.
fn bytes(v: &J) -> Option<J> {
    let t = display(v).to_lowercase();
    let t = t.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..num_end].parse().ok()?;
    let mult: f64 = match t[num_end..].trim_end_matches(['b', 'i']) {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some(s(&format!("{}", (n * mult) as i64)))
}

fn file_refs(a: Vec<J>) -> Vec<J> {
    a.into_iter()
        .map(|x| match x {
            J::String(src) => {
                let mut o = Map::new();
                o.insert("source".into(), s(&src));
                J::Object(o)
            }
            other => other,
        })
        .collect()
}

fn hosts(v: J) -> J {
    let items: Vec<J> = match v {
        J::Object(m) => m
            .into_iter()
            .flat_map(|(k, v)| match v {
                J::Array(a) => a
                    .iter()
                    .map(|i| s(&format!("{k}={}", display(i))))
                    .collect::<Vec<_>>(),
                other => vec![s(&format!("{k}={}", display(&other)))],
            })
            .collect(),
        J::Array(a) => a
            .into_iter()
            .map(|x| {
                let t = display(&x);
                match t.split_once('=') {
                    Some(_) => s(&t),
                    None => match t.split_once(':') {
                        Some((h, ip)) => s(&format!("{h}={ip}")),
                        None => s(&t),
                    },
                }
            })
            .collect(),
        _ => vec![],
    };
    let mut items = items;
    items.sort_by_key(display);
    J::Array(items)
}

/// `mattn/go-shellwords`: splits a command line on blanks, honouring quotes
/// and backslashes.
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            '\\' => {
                have = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            '\'' => {
                have = true;
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '\'' {
                        closed = true;
                        break;
                    }
                    cur.push(n);
                }
                if !closed {
                    return Err("invalid command line string".into());
                }
            }
            '"' => {
                have = true;
                let mut closed = false;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.peek() {
                            Some(&e @ ('"' | '\\' | '$' | '`')) => {
                                cur.push(e);
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        },
                        other => cur.push(other),
                    }
                }
                if !closed {
                    return Err("invalid command line string".into());
                }
            }
            other => {
                have = true;
                cur.push(other);
            }
        }
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

fn port_range(s: &str) -> Result<(u32, u32), String> {
    let parse = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("invalid containerPort: {s}"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let v = parse(s)?;
            Ok((v, v))
        }
    }
}

/// docker's `nat.ParsePortSpec`: `[ip:][host[-range]:]container[-range][/proto]`.
pub fn parse_port(spec: &str) -> Result<Vec<J>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_string()),
        None => (spec, "tcp".to_string()),
    };
    let (ip, host, container) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| format!("invalid IP address: {rest}"))?;
        let after = after.strip_prefix(':').unwrap_or(after);
        match after.rsplit_once(':') {
            Some((h, c)) => (ip.to_string(), h.to_string(), c.to_string()),
            None => (ip.to_string(), String::new(), after.to_string()),
        }
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [c] => (String::new(), String::new(), c.to_string()),
            [h, c] => (String::new(), h.to_string(), c.to_string()),
            [ip, h, c] => (ip.to_string(), h.to_string(), c.to_string()),
            _ => return Err(format!("invalid port specification: {spec:?}")),
        }
    };
    let (c0, c1) = port_range(&container)?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(port_range(&host).map_err(|_| format!("invalid hostPort: {host}"))?)
    };
    let mut out = Vec::new();
    for (i, target) in (c0..=c1).enumerate() {
        let mut o = Map::new();
        o.insert("mode".into(), s("ingress"));
        if !ip.is_empty() {
            o.insert("host_ip".into(), s(&ip));
        }
        o.insert("target".into(), J::from(target));
        if let Some((h0, h1)) = host_range {
            let published = if c0 == c1 && h0 != h1 {
                format!("{h0}-{h1}")
            } else if h0 == h1 {
                h0.to_string()
            } else {
                (h0 + i as u32).to_string()
            };
            o.insert("published".into(), s(&published));
        }
        o.insert("protocol".into(), s(&proto));
        out.push(J::Object(o));
    }
    Ok(out)
}

/// Splits a short volume spec into (source, target, mode).
pub fn parse_volume(spec: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [t] => Ok((String::new(), t.to_string(), String::new())),
        [src, t] => Ok((src.to_string(), t.to_string(), String::new())),
        [src, t, mode] => Ok((src.to_string(), t.to_string(), mode.to_string())),
        _ => Err(format!("invalid spec: {spec}: too many colons")),
    }
}

fn volume_short(spec: &str, dir: &Path, env: &BTreeMap<String, String>) -> Result<J, String> {
    let (src, target, mode) = parse_volume(spec)?;
    let mut o = Map::new();
    let bind = src.starts_with('.') || src.starts_with('/') || src.starts_with('~');
    let kind = if src.is_empty() || !bind {
        "volume"
    } else {
        "bind"
    };
    o.insert("type".into(), s(kind));
    if !src.is_empty() {
        let source = if bind {
            abs(dir, &src, env)
        } else {
            src.clone()
        };
        o.insert("source".into(), s(&source));
    }
    o.insert("target".into(), s(&target));
    let mut opts = Map::new();
    let mut bind_opts = Map::new();
    for flag in mode.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "ro" => {
                o.insert("read_only".into(), J::Bool(true));
            }
            "rw" => {}
            "nocopy" => {
                opts.insert("nocopy".into(), J::Bool(true));
            }
            "z" | "Z" => {
                bind_opts.insert("selinux".into(), s(flag));
            }
            p @ ("shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate") => {
                bind_opts.insert("propagation".into(), s(p));
            }
            other => return Err(format!("invalid spec: {spec}: unknown option {other}")),
        }
    }
    if kind == "bind" {
        bind_opts.insert("create_host_path".into(), J::Bool(true));
        o.insert("bind".into(), J::Object(bind_opts));
    } else {
        o.insert("volume".into(), J::Object(opts));
    }
    Ok(J::Object(o))
}
