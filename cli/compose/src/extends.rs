//! `extends`: a service starts from another one (in the same file or in
//! `file:`, relative to the extending file) and merges its own keys over
//! it with the file-merge rules. Relative paths of a service taken from
//! another folder are made absolute against that folder, as compose-go does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as J;

use crate::load::{clean, load_file};
use crate::merge::merge;
use crate::Error;

/// Resolves every `extends` of the services of one file.
pub fn apply(
    mut model: J,
    file: &Path,
    working_dir: &Path,
    env: &BTreeMap<String, String>,
    interpolate: bool,
    warnings: &mut Vec<String>,
) -> Result<J, Error> {
    let names: Vec<String> = model
        .get("services")
        .and_then(J::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let mut chain = Vec::new();
        let resolved = resolve(
            &model,
            &name,
            file,
            working_dir,
            env,
            interpolate,
            warnings,
            &mut chain,
        )?;
        if let Some(s) = model.get_mut("services").and_then(J::as_object_mut) {
            s.insert(name, resolved);
        }
    }
    Ok(model)
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    model: &J,
    name: &str,
    file: &Path,
    working_dir: &Path,
    env: &BTreeMap<String, String>,
    interpolate: bool,
    warnings: &mut Vec<String>,
    chain: &mut Vec<String>,
) -> Result<J, Error> {
    let key = format!("{}:{name}", file.display());
    if chain.contains(&key) {
        return Err(Error::Invalid(format!(
            "Circular reference with extends: {}",
            chain.join(" -> ")
        )));
    }
    chain.push(key);
    let svc = model
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "cannot extend service {name:?} in {}: service not found",
                file.display()
            ))
        })?;
    let Some(ext) = svc.get("extends").cloned() else {
        return Ok(svc);
    };
    let (base_name, base_file) = match &ext {
        J::String(s) => (s.clone(), None),
        J::Object(m) => (
            m.get("service")
                .and_then(J::as_str)
                .unwrap_or_default()
                .to_string(),
            m.get("file").and_then(J::as_str).map(String::from),
        ),
        _ => return Ok(svc),
    };
    let base = match base_file {
        None => resolve(
            model,
            &base_name,
            file,
            working_dir,
            env,
            interpolate,
            warnings,
            chain,
        )?,
        Some(f) => {
            let dir = file.parent().unwrap_or(Path::new("/"));
            let other = clean(&dir.join(&f));
            let other_model = load_file(&other, env, interpolate, warnings)?;
            let mut b = resolve(
                &other_model,
                &base_name,
                &other,
                working_dir,
                env,
                interpolate,
                warnings,
                chain,
            )?;
            let odir = other.parent().unwrap_or(Path::new("/"));
            if odir != working_dir {
                rebase(&mut b, odir);
            }
            b
        }
    };
    let mut own = svc;
    if let Some(m) = own.as_object_mut() {
        m.remove("extends");
    }
    let mut path = vec!["services".to_string(), name.to_string()];
    merge(base, own, &mut path).map_err(Error::Invalid)
}

fn relative(s: &str) -> bool {
    s.starts_with('.') || !(s.starts_with('/') || s.starts_with('~') || s.contains("://"))
}

/// Makes a service's relative paths absolute against `dir`.
pub(crate) fn rebase(svc: &mut J, dir: &Path) {
    let abs = |s: &str| clean(&dir.join(s)).display().to_string();
    match svc.get_mut("build") {
        Some(J::String(s)) if relative(s) => *s = abs(s),
        Some(J::Object(b)) => {
            let ctx = b
                .get("context")
                .and_then(J::as_str)
                .unwrap_or(".")
                .to_string();
            if relative(&ctx) {
                b.insert("context".into(), J::String(abs(&ctx)));
            }
        }
        _ => {}
    }
    match svc.get_mut("env_file") {
        Some(J::String(s)) if relative(s) => *s = abs(s),
        Some(J::Array(a)) => {
            for e in a {
                match e {
                    J::String(s) if relative(s) => *s = abs(s),
                    J::Object(m) => {
                        if let Some(J::String(p)) = m.get_mut("path") {
                            if relative(p) {
                                *p = abs(p);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(J::Array(vols)) = svc.get_mut("volumes") {
        for v in vols {
            match v {
                J::String(s) if s.starts_with('.') => {
                    if let Some((src, rest)) = s.split_once(':') {
                        *s = format!("{}:{rest}", abs(src));
                    }
                }
                J::Object(m) if m.get("type").and_then(J::as_str) == Some("bind") => {
                    if let Some(J::String(src)) = m.get_mut("source") {
                        if relative(src) {
                            *src = abs(src);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
