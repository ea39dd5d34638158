//! `.env` files as compose-go's dotenv parser reads them: `KEY=VALUE`,
//! `export KEY=VALUE`, `#` comments, single quotes (literal), double quotes
//! (escapes and `${…}`), unquoted values with ` #` comments, `${…}`
//! expanded against what is already known.

use std::collections::BTreeMap;

use crate::template::{substitute, TemplateError};

/// A line that is not `KEY=VALUE`.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    /// A line compose cannot parse.
    #[error("line {line}: unexpected character {found:?} in variable name {name:?}")]
    BadLine {
        /// 1-based line.
        line: usize,
        /// The offending character.
        found: char,
        /// What was read of the name.
        name: String,
    },
    /// A `${X:?}` in a value.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Parses `text`; `lookup` gives the values of variables the file does not
/// set itself (the process environment comes first in compose).
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, DotenvError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let name_end = line
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']')))
        {
            return Err(DotenvError::BadLine {
                line: idx + 1,
                found: bad,
                name: name.to_string(),
            });
        }
        let rest = line[name_end..].trim_start();
        let Some(value) = rest.strip_prefix('=') else {
            // A bare name: the variable is taken from the environment.
            out.push((name.to_string(), None));
            continue;
        };
        let value = value.trim_start();
        let known = |k: &str| -> Option<String> {
            out.iter()
                .rev()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
                .or_else(|| lookup(k))
        };
        let parsed = if let Some(q) = value.strip_prefix('\'') {
            let mut body = q.to_string();
            while !body.contains('\'') {
                match lines.next() {
                    Some((_, l)) => {
                        body.push('\n');
                        body.push_str(l);
                    }
                    None => break,
                }
            }
            body.split('\'').next().unwrap_or("").to_string()
        } else if let Some(q) = value.strip_prefix('"') {
            let mut body = q.to_string();
            while closing_quote(&body).is_none() {
                match lines.next() {
                    Some((_, l)) => {
                        body.push('\n');
                        body.push_str(l);
                    }
                    None => break,
                }
            }
            let end = closing_quote(&body).unwrap_or(body.len());
            let unescaped = unescape(&body[..end]);
            substitute(&unescaped, &known, &mut Vec::new())?
        } else {
            let v = match value.find(" #") {
                Some(i) => &value[..i],
                None => value,
            };
            substitute(v.trim_end(), &known, &mut Vec::new())?
        };
        out.push((name.to_string(), Some(parsed)));
    }
    Ok(out)
}

fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut o = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        match it.next() {
            Some('n') => o.push('\n'),
            Some('t') => o.push('\t'),
            Some('r') => o.push('\r'),
            Some('"') => o.push('"'),
            Some('\\') => o.push('\\'),
            Some('$') => o.push_str("$$"),
            Some(other) => {
                o.push('\\');
                o.push(other);
            }
            None => o.push('\\'),
        }
    }
    o
}

/// The variables of a file as a map, bare names looked up in `lookup`.
pub fn to_map(
    entries: Vec<(String, Option<String>)>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in entries {
        match v {
            Some(v) => {
                m.insert(k, v);
            }
            None => {
                if let Some(v) = lookup(&k) {
                    m.insert(k, v);
                }
            }
        }
    }
    m
}
