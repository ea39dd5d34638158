//! Merging compose files (`-f a -f b`, overrides, `extends`) with
//! compose-go's rules: mappings merge key by key, sequences append, some
//! keys are converted first (`build`, `depends_on`, `networks`,
//! environment-like lists), `command`/`entrypoint`/`healthcheck.test`
//! replace; then redefinitions in sequences are dropped by their key
//! (ports, volumes by target, `KEY=` in environment lists…).

use serde_json::{Map, Value as J};

use crate::value::display;

fn matches(path: &[String], pattern: &str) -> bool {
    let pat: Vec<&str> = pattern.split('.').collect();
    pat.len() == path.len() && pat.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

fn to_sequence(v: J) -> Vec<J> {
    match v {
        J::Object(m) => {
            let mut seq: Vec<String> = Vec::new();
            for (k, val) in m {
                match val {
                    J::Null => seq.push(k),
                    J::Array(items) => {
                        for i in items {
                            seq.push(format!("{k}={}", display(&i)));
                        }
                    }
                    other => seq.push(format!("{k}={}", display(&other))),
                }
            }
            seq.sort();
            seq.into_iter().map(J::String).collect()
        }
        J::Array(a) => a,
        J::String(s) => vec![J::String(s)],
        _ => Vec::new(),
    }
}

fn to_mapping(v: J, default: Option<&J>) -> Map<String, J> {
    match v {
        J::Object(m) => m,
        J::Array(a) => a
            .into_iter()
            .filter_map(|s| s.as_str().map(String::from))
            .map(|s| (s, default.cloned().unwrap_or(J::Null)))
            .collect(),
        _ => Map::new(),
    }
}

fn tagged<'a>(v: &'a J, tag: &str) -> Option<&'a J> {
    match v {
        J::Object(m) if m.len() == 1 => m.get(tag),
        _ => None,
    }
}

/// Drops what is left of `!reset` (the key goes) and `!override` (the
/// value stays) once every file is merged.
pub fn strip_tags(v: &mut J) {
    match v {
        J::Object(m) => {
            m.retain(|_, x| tagged(x, "!reset").is_none());
            for x in m.values_mut() {
                if let Some(inner) = tagged(x, "!override").cloned() {
                    *x = inner;
                }
                strip_tags(x);
            }
        }
        J::Array(a) => a.iter_mut().for_each(strip_tags),
        _ => {}
    }
}

/// Merges `over` into `base` at `path` (compose-go's `MergeYaml`).
pub fn merge(base: J, over: J, path: &mut Vec<String>) -> Result<J, String> {
    if tagged(&over, "!reset").is_some() {
        return Ok(over);
    }
    if let Some(inner) = tagged(&over, "!override") {
        return Ok(inner.clone());
    }
    const TO_SEQ: &[&str] = &[
        "networks.*.labels",
        "volumes.*.labels",
        "services.*.annotations",
        "services.*.build.args",
        "services.*.build.additional_contexts",
        "services.*.build.labels",
        "services.*.deploy.labels",
        "services.*.dns",
        "services.*.dns_opt",
        "services.*.dns_search",
        "services.*.env_file",
        "services.*.label_file",
        "services.*.environment",
        "services.*.labels",
        "services.*.volumes.*.volume.labels",
        "services.*.sysctls",
        "services.*.tmpfs",
    ];
    if TO_SEQ.iter().any(|p| matches(path, p)) {
        let mut a = to_sequence(base);
        a.extend(to_sequence(over));
        return Ok(J::Array(a));
    }
    if [
        "services.*.command",
        "services.*.entrypoint",
        "services.*.healthcheck.test",
    ]
    .iter()
    .any(|p| matches(path, p))
    {
        return Ok(over);
    }
    if matches(path, "services.*.build") {
        let as_map = |v: J| match v {
            J::String(s) => {
                let mut m = Map::new();
                m.insert("context".into(), J::String(s));
                J::Object(m)
            }
            other => other,
        };
        return merge_maps(as_map(base), as_map(over), path);
    }
    if matches(path, "services.*.depends_on") {
        let mut d = Map::new();
        d.insert("condition".into(), J::String("service_started".into()));
        d.insert("required".into(), J::Bool(true));
        let d = J::Object(d);
        return merge_maps(
            J::Object(to_mapping(base, Some(&d))),
            J::Object(to_mapping(over, Some(&d))),
            path,
        );
    }
    if matches(path, "services.*.networks") {
        return merge_maps(
            J::Object(to_mapping(base, None)),
            J::Object(to_mapping(over, None)),
            path,
        );
    }
    if matches(path, "services.*.extra_hosts") || matches(path, "services.*.build.extra_hosts") {
        let mut a = hosts_seq(base);
        for h in hosts_seq(over) {
            if !a.contains(&h) {
                a.push(h);
            }
        }
        return Ok(J::Array(a));
    }
    if matches(path, "services.*.logging") {
        let same = base.get("driver") == over.get("driver")
            || base.get("driver").is_none()
            || over.get("driver").is_none();
        return if same {
            merge_maps(base, over, path)
        } else {
            Ok(over)
        };
    }
    if over.is_null() {
        return Ok(base);
    }
    match (base, over) {
        (b @ J::Object(_), o @ J::Object(_)) => merge_maps(b, o, path),
        (J::Object(_), _) | (J::Array(_), _) if false => unreachable!(),
        (J::Array(mut b), J::Array(o)) => {
            b.extend(o);
            Ok(J::Array(b))
        }
        (J::Object(_), _) | (J::Array(_), _) => Err(format!("cannot override {}", path.join("."))),
        (_, o) => Ok(o),
    }
}

fn hosts_seq(v: J) -> Vec<J> {
    match v {
        J::Object(m) => m
            .into_iter()
            .flat_map(|(k, v)| match v {
                J::Array(a) => a
                    .into_iter()
                    .map(|i| J::String(format!("{k}={}", display(&i))))
                    .collect::<Vec<_>>(),
                other => vec![J::String(format!("{k}={}", display(&other)))],
            })
            .collect(),
        J::Array(a) => a,
        _ => Vec::new(),
    }
}

fn merge_maps(base: J, over: J, path: &mut Vec<String>) -> Result<J, String> {
    let (J::Object(mut b), J::Object(o)) = (base, over) else {
        return Err(format!("cannot override {}", path.join(".")));
    };
    for (k, v) in o {
        match b.remove(&k) {
            None => {
                b.insert(k, v);
            }
            Some(e) => {
                path.push(k.clone());
                let m = merge(e, v, path)?;
                path.pop();
                b.insert(k, m);
            }
        }
    }
    Ok(J::Object(b))
}

/// The key a sequence entry is unique by, for the sequences that have one.
fn index(path: &[String], v: &J) -> Option<String> {
    let key_value = [
        "networks.*.labels",
        "networks.*.ipam.options",
        "services.*.annotations",
        "services.*.build.args",
        "services.*.build.additional_contexts",
        "services.*.build.platforms",
        "services.*.build.tags",
        "services.*.build.labels",
        "services.*.cap_add",
        "services.*.cap_drop",
        "services.*.deploy.labels",
        "services.*.dns",
        "services.*.dns_opt",
        "services.*.dns_search",
        "services.*.environment",
        "services.*.labels",
        "services.*.links",
        "services.*.networks.*.aliases",
        "services.*.networks.*.link_local_ips",
        "services.*.profiles",
        "services.*.sysctls",
        "services.*.tmpfs",
    ];
    if key_value.iter().any(|p| matches(path, p)) {
        let s = v.as_str()?;
        return Some(s.split_once('=').map(|(k, _)| k).unwrap_or(s).to_string());
    }
    if matches(path, "services.*.volumes") {
        return match v {
            J::Object(m) => m.get("target").and_then(J::as_str).map(String::from),
            J::String(s) => Some(crate::normalize::parse_volume(s).ok()?.1),
            _ => None,
        };
    }
    if matches(path, "services.*.expose") || matches(path, "services.*.env_file") {
        return match v {
            J::Object(m) => m.get("path").map(display),
            other => Some(display(other)),
        };
    }
    if matches(path, "services.*.secrets") || matches(path, "services.*.configs") {
        let def = if path.get(2).map(String::as_str) == Some("secrets") {
            "/run/secrets"
        } else {
            ""
        };
        return match v {
            J::String(s) => Some(format!("{def}/{s}")),
            J::Object(m) => Some(match m.get("target") {
                Some(t) => display(t),
                None => format!("{def}/{}", m.get("source").map(display).unwrap_or_default()),
            }),
            _ => None,
        };
    }
    if matches(path, "services.*.ports") {
        return match v {
            J::Object(m) => Some(format!(
                "{}:{}:{}/{}",
                m.get("host_ip")
                    .map(display)
                    .unwrap_or_else(|| "0.0.0.0".into()),
                m.get("published").map(display).unwrap_or_default(),
                m.get("target").map(display).unwrap_or_default(),
                m.get("protocol")
                    .map(display)
                    .unwrap_or_else(|| "tcp".into()),
            )),
            other => Some(display(other)),
        };
    }
    None
}

/// compose-go's `EnforceUnicity`: a later entry with the same key replaces
/// the earlier one in its place.
pub fn enforce_unicity(v: &mut J, path: &mut Vec<String>) {
    match v {
        J::Object(m) => {
            for (k, e) in m.iter_mut() {
                path.push(k.clone());
                enforce_unicity(e, path);
                path.pop();
            }
        }
        J::Array(a) if a.first().is_some_and(|f| index(path, f).is_some()) => {
            let mut seq: Vec<J> = Vec::new();
            let mut keys: Vec<String> = Vec::new();
            for e in a.drain(..) {
                let key = index(path, &e).unwrap_or_default();
                if let Some(j) = keys.iter().position(|k| *k == key) {
                    seq[j] = e;
                } else {
                    keys.push(key);
                    seq.push(e);
                }
            }
            *a = seq;
        }
        _ => {}
    }
}
