//! Variable interpolation as compose-go's `template` package does it:
//! `$$`, `$X`, `${X}`, `${X:-d}`, `${X-d}`, `${X:?err}`, `${X?err}`,
//! `${X:+r}`, `${X+r}`, defaults that hold further `${…}`.

/// What can go wrong while substituting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${X:?why}` or `${X?why}` with X missing (or empty).
    #[error("required variable {name} is missing a value{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Required {
        /// The variable.
        name: String,
        /// The message after `?`.
        reason: String,
    },
    /// `${` followed by something that is not a variable.
    #[error("Invalid template: {0:?}")]
    Invalid(String),
}

/// The variables a substitution may read.
pub trait Lookup {
    /// The value of `name`, or None when it is not set.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn is_name(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Index of the `}` closing the `${` at the start of `s`, counting nested
/// braces as compose-go's `getFirstBraceClosingIndex` does.
fn closing_brace(s: &[u8]) -> Option<usize> {
    let mut open = 0i32;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'}' {
            open -= 1;
            if open == 0 {
                return Some(i);
            }
        }
        if s[i] == b'{' {
            open += 1;
            i += 1;
        }
        i += 1;
    }
    None
}

/// Substitutes every variable in `template`; `missing` collects the names
/// that were read unset without a default (compose warns about them).
pub fn substitute(
    template: &str,
    vars: &dyn Lookup,
    missing: &mut Vec<String>,
) -> Result<String, TemplateError> {
    let b = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    let mut lit = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&template[lit..i]);
        let next = b.get(i + 1).copied();
        match next {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(c) if is_name_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_name(b[j]) {
                    j += 1;
                }
                let name = &template[i + 1..j];
                match vars.get(name) {
                    Some(v) => out.push_str(&v),
                    None => missing.push(name.to_string()),
                }
                i = j;
            }
            Some(b'{') => {
                let Some(close) = closing_brace(&b[i + 1..]) else {
                    return Err(TemplateError::Invalid(template.to_string()));
                };
                let inner = &template[i + 2..i + 1 + close];
                out.push_str(&braced(inner, template, vars, missing)?);
                i = i + 2 + close;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
        lit = i;
    }
    out.push_str(&template[lit..]);
    Ok(out)
}

fn braced(
    inner: &str,
    template: &str,
    vars: &dyn Lookup,
    missing: &mut Vec<String>,
) -> Result<String, TemplateError> {
    let b = inner.as_bytes();
    if b.is_empty() || !is_name_start(b[0]) {
        return Err(TemplateError::Invalid(template.to_string()));
    }
    let mut j = 1;
    while j < b.len() && is_name(b[j]) {
        j += 1;
    }
    let name = &inner[..j];
    let rest = &inner[j..];
    if rest.is_empty() {
        return Ok(match vars.get(name) {
            Some(v) => v,
            None => {
                missing.push(name.to_string());
                String::new()
            }
        });
    }
    let (colon, op, arg) = if let Some(r) = rest.strip_prefix(':') {
        let mut cs = r.chars();
        match cs.next() {
            Some(c @ ('-' | '+' | '?')) => (true, c, cs.as_str()),
            _ => return Err(TemplateError::Invalid(template.to_string())),
        }
    } else {
        let mut cs = rest.chars();
        match cs.next() {
            Some(c @ ('-' | '+' | '?')) => (false, c, cs.as_str()),
            _ => return Err(TemplateError::Invalid(template.to_string())),
        }
    };
    let value = vars.get(name);
    let present = match &value {
        Some(v) => !colon || !v.is_empty(),
        None => false,
    };
    match op {
        '-' => {
            if present {
                Ok(value.unwrap_or_default())
            } else {
                substitute(arg, vars, missing)
            }
        }
        '+' => {
            if present {
                substitute(arg, vars, missing)
            } else {
                Ok(value.unwrap_or_default())
            }
        }
        _ => {
            if present {
                Ok(value.unwrap_or_default())
            } else {
                Err(TemplateError::Required {
                    name: name.to_string(),
                    reason: substitute(arg, vars, missing)?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(t: &str) -> Result<String, TemplateError> {
        substitute(t, &env, &mut Vec::new())
    }

    #[test]
    fn forms() {
        assert_eq!(sub("x$A-${A}$$A").unwrap(), "xa-a$A");
        assert_eq!(sub("${U:-d}/${E:-d}/${E-d}/${U-d}").unwrap(), "d/d//d");
        assert_eq!(sub("${A:+r}/${E:+r}/${E+r}/${U+r}").unwrap(), "r//r/");
        assert_eq!(sub("${U:-${A}x}").unwrap(), "ax");
        assert_eq!(sub("${U:-${V:-deep}}!").unwrap(), "deep!");
        assert_eq!(sub("cost $5 $").unwrap(), "cost $5 $");
        assert_eq!(
            sub("${U:?need it}").unwrap_err().to_string(),
            "required variable U is missing a value: need it"
        );
        assert!(sub("${E?x}").is_ok());
        assert!(sub("${E:?}").is_err());
        assert!(matches!(sub("${1}"), Err(TemplateError::Invalid(_))));
        let mut m = Vec::new();
        substitute("$U ${W}", &env, &mut m).unwrap();
        assert_eq!(m, vec!["U".to_string(), "W".to_string()]);
    }
}
