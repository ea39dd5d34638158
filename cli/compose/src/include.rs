//! `include:`: a compose file brings in other compose applications, each
//! loaded as a project of its own (its own folder for relative paths, its
//! own `.env`), whose services, networks, volumes, secrets and configs are
//! then added to the including file, as compose-go's loader does. A
//! resource defined on both sides must be identical, else it is an error;
//! an include that reaches a file already being included is a cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as J;

use crate::load::{clean, load_file};
use crate::merge::merge;
use crate::{dotenv, Error};

/// The top-level sections an included application contributes.
const SECTIONS: &[&str] = &["services", "networks", "volumes", "secrets", "configs"];

/// One entry of `include:` after its short form is expanded.
struct Entry {
    paths: Vec<PathBuf>,
    project_directory: PathBuf,
    env_files: Vec<PathBuf>,
}

/// Replaces `model`'s `include:` by the resources of the files it names.
/// `working_dir` is the folder `model`'s relative paths are resolved
/// against; `chain` holds the files being loaded, outermost first.
pub fn apply(
    model: &mut J,
    working_dir: &Path,
    env: &BTreeMap<String, String>,
    interpolate: bool,
    warnings: &mut Vec<String>,
    chain: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    let Some(list) = model.as_object_mut().and_then(|m| m.remove("include")) else {
        return Ok(());
    };
    for raw in list.as_array().cloned().unwrap_or_default() {
        let entry = entry(&raw, working_dir)?;
        let Some(main) = entry.paths.first() else {
            continue;
        };
        if chain.contains(main) {
            let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
            names.push(main.display().to_string());
            return Err(Error::Invalid(format!(
                "include cycle detected:\n{}",
                names.join("\n include ")
            )));
        }
        let env = environment(env, &entry)?;
        chain.push(main.clone());
        let imported = load_all(&entry, &env, interpolate, warnings, chain);
        chain.pop();
        import(imported?, model)?;
    }
    Ok(())
}

/// Reads one entry: a path, or `{path, project_directory, env_file}` with
/// `path` and `env_file` a string or a list; paths relative to
/// `working_dir`.
fn entry(raw: &J, working_dir: &Path) -> Result<Entry, Error> {
    let strings = |v: Option<&J>| -> Vec<String> {
        match v {
            Some(J::String(s)) => vec![s.clone()],
            Some(J::Array(a)) => a.iter().filter_map(J::as_str).map(String::from).collect(),
            _ => Vec::new(),
        }
    };
    let abs = |s: &str| clean(&working_dir.join(s));
    let (paths, dir, env_files) = match raw {
        J::String(s) => (vec![s.clone()], None, Vec::new()),
        J::Object(m) => (
            strings(m.get("path")),
            m.get("project_directory")
                .and_then(J::as_str)
                .map(String::from),
            strings(m.get("env_file")),
        ),
        other => {
            return Err(Error::Invalid(format!(
                "include: an entry must be a path or a mapping, not {other}"
            )))
        }
    };
    if paths.is_empty() {
        return Err(Error::Invalid("include: an entry has no path".to_string()));
    }
    let paths: Vec<PathBuf> = paths.iter().map(|p| abs(p)).collect();
    let project_directory = match dir {
        Some(d) => abs(&d),
        None => paths[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| working_dir.to_path_buf()),
    };
    let mut env_files: Vec<PathBuf> = env_files.iter().map(|p| abs(p)).collect();
    if env_files.is_empty() {
        let d = project_directory.join(".env");
        if d.is_file() {
            env_files.push(d);
        }
    }
    Ok(Entry {
        paths,
        project_directory,
        env_files,
    })
}

/// The including project's environment, plus what the entry's env files
/// define that it does not (the including side wins, as in compose-go).
fn environment(
    base: &BTreeMap<String, String>,
    entry: &Entry,
) -> Result<BTreeMap<String, String>, Error> {
    let mut env = base.clone();
    for f in &entry.env_files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
            path: f.clone(),
            source: e,
        })?;
        let sofar = env.clone();
        let look = |k: &str| sofar.get(k).cloned();
        let entries = dotenv::parse(&text, &look).map_err(|e| Error::EnvFile {
            path: f.clone(),
            message: e.to_string(),
        })?;
        for (k, v) in dotenv::to_map(entries, &look) {
            env.entry(k).or_insert(v);
        }
    }
    Ok(env)
}

/// Loads an entry's files as a project of their own: each parsed,
/// `extends` resolved, its own includes applied, merged in order, and
/// every relative path made absolute against the entry's folder.
fn load_all(
    entry: &Entry,
    env: &BTreeMap<String, String>,
    interpolate: bool,
    warnings: &mut Vec<String>,
    chain: &mut Vec<PathBuf>,
) -> Result<J, Error> {
    let dir = &entry.project_directory;
    let mut merged: Option<J> = None;
    for f in &entry.paths {
        let model = load_file(f, env, interpolate, warnings)?;
        let mut model = crate::extends::apply(model, f, dir, env, interpolate, warnings)?;
        apply(&mut model, dir, env, interpolate, warnings, chain)?;
        merged = Some(match merged {
            None => model,
            Some(base) => merge(base, model, &mut Vec::new()).map_err(Error::Invalid)?,
        });
    }
    let mut model = merged.unwrap_or(J::Null);
    crate::merge::strip_tags(&mut model);
    if let Some(services) = model.get_mut("services").and_then(J::as_object_mut) {
        for svc in services.values_mut() {
            crate::extends::rebase(svc, dir);
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(items) = model.get_mut(section).and_then(J::as_object_mut) {
            for item in items.values_mut() {
                if let Some(J::String(file)) = item.get_mut("file") {
                    if !Path::new(file.as_str()).is_absolute() {
                        *file = clean(&dir.join(&*file)).display().to_string();
                    }
                }
            }
        }
    }
    Ok(model)
}

/// Adds the imported resources to `target`, refusing a name both define
/// differently.
fn import(source: J, target: &mut J) -> Result<(), Error> {
    let Some(target) = target.as_object_mut() else {
        return Ok(());
    };
    for &section in SECTIONS {
        let Some(items) = source.get(section).and_then(J::as_object) else {
            continue;
        };
        let into = target
            .entry(section)
            .or_insert_with(|| J::Object(Default::default()));
        if into.is_null() {
            *into = J::Object(Default::default());
        }
        let Some(into) = into.as_object_mut() else {
            continue;
        };
        for (name, value) in items {
            match into.get(name) {
                Some(existing) if existing != value => {
                    return Err(Error::Invalid(format!(
                        "{section}.{name} conflicts with imported resource"
                    )))
                }
                _ => {
                    into.insert(name.clone(), value.clone());
                }
            }
        }
    }
    Ok(())
}
