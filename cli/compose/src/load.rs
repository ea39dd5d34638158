//! From flags and files to one resolved project, in compose-go's order:
//! find the files, read the environment (`.env`, `--env-file`), then per
//! file parse → interpolate → validate → `extends` → `include`; merge the files in
//! order; drop redefinitions; pick the project name; apply profiles;
//! normalise to the long syntax with defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};

use crate::merge::{enforce_unicity, merge};
use crate::normalize::normalize;
use crate::schema;
use crate::template::{substitute, TemplateError};
use crate::value::to_json;
use crate::yaml::{self, Node, Val};
use crate::{dotenv, Error};

/// docker compose's file names, in its lookup order.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
const OVERRIDE_FILES: &[&str] = &[
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// What the command line (and the process) says about the project.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-f`, in order (empty: look up `compose.yaml` and friends).
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`.
    pub project_directory: Option<PathBuf>,
    /// `--env-file` (empty: `<project dir>/.env` when present).
    pub env_files: Vec<PathBuf>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// false for `--no-interpolate`.
    pub interpolate: bool,
    /// The process environment.
    pub os_env: BTreeMap<String, String>,
    /// The current directory.
    pub cwd: PathBuf,
}

/// The resolved project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The normalised project name.
    pub name: String,
    /// The project directory (relative paths are resolved against it).
    pub working_dir: PathBuf,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// The model as `docker compose config` prints it.
    pub model: J,
    /// The variables interpolation saw (process over `.env`).
    pub environment: BTreeMap<String, String>,
    /// Warnings compose prints (unset variables, obsolete `version`).
    pub warnings: Vec<String>,
    /// Every profile named by any service (`config --profiles`).
    pub all_profiles: BTreeSet<String>,
}

impl Project {
    /// The names of the enabled services, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.model
            .get("services")
            .and_then(J::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    clean(&joined)
}

/// Lexical `filepath.Clean` of an absolute path.
pub fn clean(p: &Path) -> PathBuf {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    let mut b = PathBuf::from("/");
    for c in out {
        b.push(c);
    }
    b
}

/// Finds the compose file in `dir` or its parents, as docker compose does.
fn lookup(dir: &Path) -> Option<PathBuf> {
    let mut d = Some(dir);
    while let Some(cur) = d {
        for name in DEFAULT_FILES {
            let candidate = cur.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
        d = cur.parent();
    }
    None
}

/// compose's `NormalizeProjectName`: lower case, only `[a-z0-9_-]`, first
/// character a letter or digit.
pub fn normalize_name(s: &str) -> String {
    let lower = s.to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && normalize_name(s) == s
}

/// Loads and resolves a project.
pub fn load(opts: &LoadOptions) -> Result<Project, Error> {
    let cwd = &opts.cwd;
    let mut files: Vec<PathBuf> = opts.files.iter().map(|f| absolute(cwd, f)).collect();
    if files.is_empty() {
        if let Some(list) = opts.os_env.get("COMPOSE_FILE") {
            let sep = opts
                .os_env
                .get("COMPOSE_PATH_SEPARATOR")
                .map(String::as_str)
                .unwrap_or(":");
            files = list
                .split(sep)
                .filter(|s| !s.is_empty())
                .map(|f| absolute(cwd, Path::new(f)))
                .collect();
        }
    }
    if files.is_empty() {
        let start = opts
            .project_directory
            .as_deref()
            .map(|p| absolute(cwd, p))
            .unwrap_or_else(|| cwd.clone());
        let found = lookup(&start).ok_or(Error::NotFound)?;
        let dir = found.parent().map(Path::to_path_buf).unwrap_or_default();
        files.push(found);
        if let Some(o) = OVERRIDE_FILES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
        {
            files.push(o);
        }
    }
    let working_dir = match &opts.project_directory {
        Some(p) => absolute(cwd, p),
        None => files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.clone()),
    };

    // The environment: the process wins over the env files.
    let mut environment = BTreeMap::new();
    let env_files: Vec<PathBuf> = if opts.env_files.is_empty() {
        let d = working_dir.join(".env");
        if d.is_file() {
            vec![d]
        } else {
            vec![]
        }
    } else {
        opts.env_files.iter().map(|f| absolute(cwd, f)).collect()
    };
    for f in &env_files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
            path: f.clone(),
            source: e,
        })?;
        let os = &opts.os_env;
        let sofar = environment.clone();
        let look = |k: &str| os.get(k).or_else(|| sofar.get(k)).cloned();
        let entries = dotenv::parse(&text, &look).map_err(|e| Error::EnvFile {
            path: f.clone(),
            message: e.to_string(),
        })?;
        environment.extend(dotenv::to_map(entries, &look));
    }
    for (k, v) in &opts.os_env {
        environment.insert(k.clone(), v.clone());
    }

    let mut warnings = Vec::new();
    let mut merged: Option<J> = None;
    for f in &files {
        let model = load_file(f, &environment, opts.interpolate, &mut warnings)?;
        let mut model = crate::extends::apply(
            model,
            f,
            &working_dir,
            &environment,
            opts.interpolate,
            &mut warnings,
        )?;
        crate::include::apply(
            &mut model,
            &working_dir,
            &environment,
            opts.interpolate,
            &mut warnings,
            &mut vec![f.clone()],
        )?;
        merged = Some(match merged {
            None => model,
            Some(base) => merge(base, model, &mut Vec::new()).map_err(Error::Invalid)?,
        });
    }
    let mut model = merged.unwrap_or(J::Object(Map::new()));
    crate::merge::strip_tags(&mut model);
    enforce_unicity(&mut model, &mut Vec::new());
    if let Some(obj) = model.as_object_mut() {
        if obj.remove("version").is_some() {
            for f in &files {
                let _ = f;
            }
            warnings.push(format!(
                "{}: the attribute `version` is obsolete, it will be ignored, please remove it to avoid potential confusion",
                files.first().map(|f| f.display().to_string()).unwrap_or_default()
            ));
        }
    }

    // The project name.
    let name = if let Some(p) = &opts.project_name {
        if !valid_name(p) {
            return Err(Error::ProjectName(p.clone()));
        }
        p.clone()
    } else if let Some(p) = opts
        .os_env
        .get("COMPOSE_PROJECT_NAME")
        .or_else(|| environment.get("COMPOSE_PROJECT_NAME"))
        .filter(|p| !p.is_empty())
    {
        normalize_name(p)
    } else if let Some(p) = model
        .get("name")
        .and_then(J::as_str)
        .filter(|p| !p.is_empty())
    {
        if !valid_name(p) {
            return Err(Error::ProjectName(p.to_string()));
        }
        p.to_string()
    } else {
        normalize_name(
            &working_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    };
    if name.is_empty() {
        return Err(Error::ProjectName(String::new()));
    }

    // Profiles.
    let mut active: Vec<String> = opts.profiles.clone();
    if active.is_empty() {
        if let Some(p) = environment.get("COMPOSE_PROFILES") {
            active = p
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
    }
    let mut all_profiles = BTreeSet::new();
    if let Some(services) = model.get_mut("services").and_then(J::as_object_mut) {
        let mut disabled = Vec::new();
        for (sname, svc) in services.iter() {
            let profiles: Vec<String> = svc
                .get("profiles")
                .and_then(J::as_array)
                .map(|a| a.iter().filter_map(J::as_str).map(String::from).collect())
                .unwrap_or_default();
            all_profiles.extend(profiles.iter().cloned());
            let on = profiles.is_empty()
                || profiles.iter().any(|p| active.contains(p))
                || active.iter().any(|a| a == "*");
            if !on {
                disabled.push(sname.clone());
            }
        }
        for d in disabled {
            services.remove(&d);
        }
    }

    normalize(&mut model, &name, &working_dir, &environment)?;
    unique_container_names(&model)?;
    if let Some(obj) = model.as_object_mut() {
        obj.insert("name".into(), J::String(name.clone()));
    }
    Ok(Project {
        name,
        working_dir,
        files,
        model,
        environment,
        warnings,
        all_profiles,
    })
}

/// compose-go casts these paths after interpolation (plain scalars keep
/// their YAML type; interpolated strings become the type the key wants).
fn cast_path(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        [
            "services",
            _,
            "cpu_count"
                | "cpu_percent"
                | "cpu_period"
                | "cpu_quota"
                | "cpu_rt_period"
                | "cpu_rt_runtime"
                | "cpus"
                | "cpu_shares"
                | "init"
                | "oom_kill_disable"
                | "oom_score_adj"
                | "pids_limit"
                | "privileged"
                | "read_only"
                | "scale"
                | "stdin_open"
                | "tty"
        ] | ["services", _, "depends_on", _, "required" | "restart"]
            | ["services", _, "deploy", "replicas"]
            | [
                "services",
                _,
                "deploy",
                "update_config" | "rollback_config",
                "parallelism" | "max_failure_ratio"
            ]
            | ["services", _, "deploy", "restart_policy", "max_attempts"]
            | [
                "services",
                _,
                "deploy",
                "placement",
                "max_replicas_per_node"
            ]
            | ["services", _, "healthcheck", "retries" | "disable"]
            | ["services", _, "ports", _, "target"]
            | ["services", _, "ulimits", _]
            | ["services", _, "ulimits", _, "hard" | "soft"]
            | ["services", _, "volumes", _, "read_only"]
            | ["services", _, "volumes", _, "volume", "nocopy"]
            | [
                "networks",
                _,
                "external" | "internal" | "attachable" | "enable_ipv4" | "enable_ipv6"
            ]
            | ["volumes" | "secrets" | "configs", _, "external"]
    )
}

/// A service with `container_name` runs one container: more replicas
/// would need the same name twice (compose-go's consistency check).
fn unique_container_names(model: &J) -> Result<(), Error> {
    let services = model.get("services").and_then(J::as_object);
    for (name, svc) in services.into_iter().flatten() {
        if svc.get("container_name").is_none() {
            continue;
        }
        for (key, pointer) in [("scale", "/scale"), ("deploy.replicas", "/deploy/replicas")] {
            if svc
                .pointer(pointer)
                .and_then(J::as_u64)
                .is_some_and(|n| n > 1)
            {
                return Err(Error::Invalid(format!(
                    "services.{key}: can't set container_name and {name} as container name must be unique: invalid compose project"
                )));
            }
        }
    }
    Ok(())
}

/// Reads, parses, interpolates and validates one file.
pub fn load_file(
    f: &Path,
    env: &BTreeMap<String, String>,
    interpolate: bool,
    warnings: &mut Vec<String>,
) -> Result<J, Error> {
    let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
        path: f.to_path_buf(),
        source: e,
    })?;
    let mut root = yaml::parse(&text).map_err(|e| Error::Syntax {
        file: f.to_path_buf(),
        line: e.line,
        message: e.msg,
    })?;
    if !matches!(root.v, Val::Map(_)) {
        return Err(Error::Invalid(
            "Top-level object must be a mapping".to_string(),
        ));
    }
    if interpolate {
        let mut missing = Vec::new();
        interpolate_node(&mut root, env, &mut Vec::new(), &mut missing)?;
        for m in missing {
            let w = format!("The \"{m}\" variable is not set. Defaulting to a blank string.");
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    schema::validate(&root).map_err(|v| Error::Schema {
        file: f.to_path_buf(),
        path: v.path,
        message: v.message,
        line: v.pos.line,
        column: v.pos.col,
    })?;
    let mut j = to_json(&root);
    cast(&mut j, &mut Vec::new())?;
    Ok(j)
}

fn interpolate_node(
    n: &mut Node,
    env: &BTreeMap<String, String>,
    path: &mut Vec<String>,
    missing: &mut Vec<String>,
) -> Result<(), Error> {
    match &mut n.v {
        Val::Scalar { text, plain } => {
            if text.contains('$') {
                let look = |k: &str| env.get(k).cloned();
                let out = substitute(text, &look, missing).map_err(|e: TemplateError| {
                    Error::Interpolation {
                        path: path.join("."),
                        message: e.to_string(),
                    }
                })?;
                *text = out;
                *plain = cast_path(path);
            }
        }
        Val::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate_node(it, env, path, missing)?;
                path.pop();
            }
        }
        Val::Map(entries) => {
            for (k, _, v) in entries.iter_mut() {
                path.push(k.clone());
                interpolate_node(v, env, path, missing)?;
                path.pop();
            }
        }
        Val::Tagged(_, inner) => interpolate_node(inner, env, path, missing)?,
        Val::Null => {}
    }
    Ok(())
}

/// Casts strings at the typed paths (`replicas: "${N}"` → 3).
fn cast(j: &mut J, path: &mut Vec<String>) -> Result<(), Error> {
    match j {
        J::Object(m) => {
            for (k, v) in m.iter_mut() {
                path.push(k.clone());
                cast(v, path)?;
                path.pop();
            }
        }
        J::Array(a) => {
            for v in a.iter_mut() {
                path.push("[]".into());
                cast(v, path)?;
                path.pop();
            }
        }
        J::String(s) if cast_path(path) => {
            let last = path.last().map(String::as_str).unwrap_or("");
            let boolean = matches!(
                last,
                "init"
                    | "oom_kill_disable"
                    | "privileged"
                    | "read_only"
                    | "stdin_open"
                    | "tty"
                    | "required"
                    | "restart"
                    | "disable"
                    | "nocopy"
                    | "external"
                    | "internal"
                    | "attachable"
                    | "enable_ipv4"
                    | "enable_ipv6"
            );
            let shown = path
                .iter()
                .map(|p| if p == "[]" { "[0]" } else { p })
                .collect::<Vec<_>>()
                .join(".");
            if boolean {
                *j = match s.as_str() {
                    "true" | "y" | "yes" | "on" => J::Bool(true),
                    "false" | "n" | "no" | "off" => J::Bool(false),
                    _ => {
                        return Err(Error::Interpolation {
                            path: shown,
                            message: format!(
                                "failed to cast to expected type: invalid boolean: {s}"
                            ),
                        })
                    }
                };
            } else if matches!(last, "cpus" | "cpu_percent" | "max_failure_ratio") {
                let f: f64 = s.parse().map_err(|_| Error::Interpolation {
                    path: shown.clone(),
                    message: format!(
                        "failed to cast to expected type: strconv.ParseFloat: parsing {s:?}: invalid syntax"
                    ),
                })?;
                *j = serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or(J::Null);
            } else {
                let i: i64 = s.parse().map_err(|_| Error::Interpolation {
                    path: shown.clone(),
                    message: format!(
                        "failed to cast to expected type: strconv.Atoi: parsing {s:?}: invalid syntax"
                    ),
                })?;
                *j = J::from(i);
            }
        }
        _ => {}
    }
    Ok(())
}
