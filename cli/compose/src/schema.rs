//! Validation against the Compose Specification's JSON schema.
//!
//! docker compose validates each file with `compose-spec.json` (shipped by
//! compose-go, Apache-2.0) and reports the most specific failure in its own
//! words (`services.web additional properties 'foo' not allowed`,
//! `services.web.ports must be a array`). kiln embeds the same schema and
//! implements the keywords it uses (type, properties, patternProperties,
//! additionalProperties, items, oneOf, $ref, required, enum, pattern,
//! minimum, maximum, uniqueItems), on the positioned YAML tree so the error
//! also carries the line.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value as J;

use crate::value::scalar_json;
use crate::yaml::{Node, Pos, Val};

const SPEC: &str = include_str!("schema/compose-spec.json");

/// The first (most specific) schema violation of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the offending value (`services.web.ports`).
    pub path: String,
    /// docker compose's words after the path.
    pub message: String,
    /// Where the offending value (or key) is.
    pub pos: Pos,
    depth: usize,
}

fn spec() -> &'static J {
    static S: OnceLock<J> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(SPEC).unwrap_or(J::Null))
}

fn regex(p: &str) -> Option<Regex> {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Option<Regex>>>> =
        OnceLock::new();
    let m = CACHE.get_or_init(Default::default);
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.entry(p.to_string())
        .or_insert_with(|| Regex::new(p).ok())
        .clone()
}

/// Validates a whole compose file.
pub fn validate(root: &Node) -> Result<(), Violation> {
    let mut path = Vec::new();
    match check(spec(), root, &mut path) {
        None => Ok(()),
        Some(v) => Err(v),
    }
}

fn resolve(s: &J) -> &J {
    if let Some(r) = s.get("$ref").and_then(J::as_str) {
        if let Some(name) = r.strip_prefix("#/$defs/") {
            if let Some(d) = spec().get("$defs").and_then(|d| d.get(name)) {
                return resolve(d);
            }
        }
    }
    s
}

/// JSON-schema type names of a YAML node, as go-yaml would decode it.
fn type_of(n: &Node) -> &'static str {
    match &n.v {
        Val::Tagged(_, inner) => type_of(inner),
        Val::Null => "null",
        Val::Seq(_) => "array",
        Val::Map(_) => "object",
        Val::Scalar { .. } => match scalar_json(n) {
            J::Bool(_) => "boolean",
            J::Number(num) if num.is_i64() || num.is_u64() => "integer",
            J::Number(_) => "number",
            _ => "string",
        },
    }
}

fn type_matches(want: &str, have: &str) -> bool {
    want == have || (want == "number" && have == "integer")
}

fn human(want: &[&str]) -> String {
    let mut w: Vec<String> = want
        .iter()
        .map(|t| if *t == "object" { "mapping" } else { t }.to_string())
        .collect();
    if w.len() == 1 {
        return w.remove(0);
    }
    w.sort();
    let last = w.pop().unwrap_or_default();
    format!("{} or {}", w.join(", "), last)
}

fn violation(path: &[String], message: String, pos: Pos, extra: usize) -> Violation {
    Violation {
        path: path.join("."),
        message,
        pos,
        depth: path.len() + extra,
    }
}

fn more_specific(a: Option<Violation>, b: Violation) -> Option<Violation> {
    match a {
        Some(a) if a.depth >= b.depth => Some(a),
        _ => Some(b),
    }
}

fn check(schema: &J, n: &Node, path: &mut Vec<String>) -> Option<Violation> {
    if let Val::Tagged(_, inner) = &n.v {
        return check(schema, inner, path);
    }
    let s = resolve(schema);
    let have = type_of(n);
    if let Some(t) = s.get("type") {
        let want: Vec<&str> = match t {
            J::String(one) => vec![one.as_str()],
            J::Array(many) => many.iter().filter_map(J::as_str).collect(),
            _ => Vec::new(),
        };
        if !want.iter().any(|w| type_matches(w, have)) {
            return Some(violation(
                path,
                format!("must be a {}", human(&want)),
                n.pos,
                0,
            ));
        }
    }
    if let Some(opts) = s.get("oneOf").and_then(J::as_array) {
        let mut best: Option<Violation> = None;
        let mut ok = false;
        for o in opts {
            match check(o, n, path) {
                None => {
                    ok = true;
                    break;
                }
                Some(v) => best = more_specific(best, v),
            }
        }
        if !ok {
            return best;
        }
    }
    if let Some(e) = s.get("enum").and_then(J::as_array) {
        let v = crate::value::to_json(n);
        if !e.contains(&v) {
            let list: Vec<String> = e.iter().map(quote_json).collect();
            return Some(violation(
                path,
                format!("value must be one of {}", list.join(", ")),
                n.pos,
                0,
            ));
        }
    }
    match &n.v {
        Val::Scalar { .. } => {
            let v = scalar_json(n);
            if let (Some(p), Some(text)) = (s.get("pattern").and_then(J::as_str), v.as_str()) {
                if let Some(re) = regex(p) {
                    if !re.is_match(text) {
                        return Some(violation(
                            path,
                            format!("'{text}' does not match pattern '{p}'"),
                            n.pos,
                            0,
                        ));
                    }
                }
            }
            if let Some(x) = v.as_f64() {
                if let Some(min) = s.get("minimum").and_then(J::as_f64) {
                    if x < min {
                        return Some(violation(
                            path,
                            format!("must be greater than or equal to {min}"),
                            n.pos,
                            0,
                        ));
                    }
                }
                if let Some(max) = s.get("maximum").and_then(J::as_f64) {
                    if x > max {
                        return Some(violation(
                            path,
                            format!("must be less than or equal to {max}"),
                            n.pos,
                            0,
                        ));
                    }
                }
            }
            None
        }
        Val::Seq(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    path.push(i.to_string());
                    let r = check(is, it, path);
                    path.pop();
                    if r.is_some() {
                        return r;
                    }
                }
            }
            if s.get("uniqueItems").and_then(J::as_bool) == Some(true) {
                let vals: Vec<J> = items.iter().map(crate::value::to_json).collect();
                for i in 0..vals.len() {
                    for j in 0..i {
                        if vals[i] == vals[j] {
                            return Some(violation(
                                path,
                                format!("items at {j} and {i} are equal"),
                                n.pos,
                                0,
                            ));
                        }
                    }
                }
            }
            None
        }
        Val::Map(entries) => {
            let props = s.get("properties").and_then(J::as_object);
            let pats = s.get("patternProperties").and_then(J::as_object);
            let additional = s.get("additionalProperties");
            let mut extra: Vec<(&str, Pos)> = Vec::new();
            for (k, kpos, v) in entries {
                let mut matched = false;
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    matched = true;
                    path.push(k.clone());
                    let r = check(p, v, path);
                    path.pop();
                    if r.is_some() {
                        return r;
                    }
                }
                if let Some(pats) = pats {
                    for (pat, sub) in pats {
                        if regex(pat).is_some_and(|re| re.is_match(k)) {
                            matched = true;
                            path.push(k.clone());
                            let r = check(sub, v, path);
                            path.pop();
                            if r.is_some() {
                                return r;
                            }
                        }
                    }
                }
                if !matched {
                    match additional {
                        Some(J::Bool(false)) => extra.push((k, *kpos)),
                        Some(sub @ J::Object(_)) => {
                            path.push(k.clone());
                            let r = check(sub, v, path);
                            path.pop();
                            if r.is_some() {
                                return r;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !extra.is_empty() {
                let names: Vec<String> = extra.iter().map(|(k, _)| format!("'{k}'")).collect();
                return Some(violation(
                    path,
                    format!("additional properties {} not allowed", names.join(", ")),
                    extra[0].1,
                    1,
                ));
            }
            if let Some(req) = s.get("required").and_then(J::as_array) {
                let missing: Vec<String> = req
                    .iter()
                    .filter_map(J::as_str)
                    .filter(|r| !entries.iter().any(|(k, _, _)| k == r))
                    .map(|r| format!("'{r}'"))
                    .collect();
                if !missing.is_empty() {
                    let word = if missing.len() == 1 {
                        "property"
                    } else {
                        "properties"
                    };
                    return Some(violation(
                        path,
                        format!("missing {word} {}", missing.join(", ")),
                        n.pos,
                        0,
                    ));
                }
            }
            None
        }
        Val::Null | Val::Tagged(..) => None,
    }
}

fn quote_json(v: &J) -> String {
    match v {
        J::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}
