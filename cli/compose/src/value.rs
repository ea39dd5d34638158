//! From the positioned YAML tree to plain JSON values, resolving plain
//! scalars as go-yaml v3 does (what compose-go decodes into `any`).

use serde_json::{Map, Number, Value as J};

use crate::yaml::{Node, Val};

/// The value of a scalar node: quoted scalars are strings; plain ones are
/// booleans (`true`/`false` in any case go-yaml accepts), integers
/// (decimal, `0x`, `0o`), floats, or strings.
pub fn scalar_json(n: &Node) -> J {
    match &n.v {
        Val::Scalar { text, plain: true } => resolve_plain(text),
        Val::Scalar { text, .. } => J::String(text.clone()),
        Val::Null => J::Null,
        _ => to_json(n),
    }
}

fn resolve_plain(t: &str) -> J {
    match t {
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => {
            return J::String(t.to_string())
        }
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let neg = t.starts_with('-');
    let int = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(&h.replace('_', ""), 16).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        // go-yaml v3 reads ints with base 0: a leading 0 is octal.
        i64::from_str_radix(&digits[1..], 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return J::Number(Number::from(if neg { -i } else { i }));
    }
    let looks_float = !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float {
        if let Ok(f) = t.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return J::Number(n);
            }
        }
    }
    J::String(t.to_string())
}

/// The whole subtree as JSON.
pub fn to_json(n: &Node) -> J {
    match &n.v {
        Val::Null => J::Null,
        Val::Scalar { .. } => scalar_json(n),
        Val::Tagged(t, inner) => {
            let mut m = Map::new();
            m.insert(format!("!{t}"), to_json(inner));
            J::Object(m)
        }
        Val::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Val::Map(entries) => {
            let mut m = Map::new();
            for (k, _, v) in entries {
                m.insert(k.clone(), to_json(v));
            }
            J::Object(m)
        }
    }
}

/// A value as compose-go prints it with `%v` (numbers without `.0`).
pub fn display(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => String::new(),
        J::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| !n.is_i64() && !n.is_u64()) {
                format_float(f)
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (`1.5`, `1e+06`).
pub fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if f.abs() >= 1e21 {
            return format!("{f:e}");
        }
        return format!("{}", f as i64);
    }
    format!("{f}")
}
