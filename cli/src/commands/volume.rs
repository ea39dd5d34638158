//! `kiln volume create|ls|inspect|rm|prune` and the volume flags of `kiln
//! run` (`-v`, `--mount`, `--tmpfs`), with docker's output, errors and exit
//! codes. The volumes themselves live in `kiln_worker::container::volumes`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;
use kiln_cache::Root;
use kiln_worker::container::volumes::{parse_size, Volume, VolumeError, VolumeSpec, VolumeStore};
use kiln_worker::container::{self, Store};
use kiln_worker::sandbox::Mount;
use miette::{miette, Result};

use crate::table::table;
use crate::units;

/// `kiln volume …`.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
}

/// The volume commands, as `docker volume` has them.
#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume (a random name when none is given).
    Create {
        /// Volume name.
        #[arg(long = "name")]
        name_flag: Option<String>,
        /// Volume name.
        name: Option<String>,
        /// Volume driver (only `local`).
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set metadata on the volume (KEY[=VALUE]).
        #[arg(short, long = "label")]
        label: Vec<String>,
        /// Driver options: `type=tmpfs`, `o=size=64m`, `o=bind,device=/path`.
        #[arg(short, long = "opt")]
        opt: Vec<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short, long)]
        quiet: bool,
        /// Filter: dangling=true|false, name=, label=KEY[=VALUE], driver=.
        #[arg(short, long)]
        filter: Vec<String>,
        /// `{{.Name}}`-style template (fields Name, Driver, Mountpoint,
        /// Scope), or `json`.
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on volumes (JSON).
    Inspect {
        /// Go-template subset: `{{.Name}}`, `{{.Mountpoint}}`, `{{json .}}`.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one).
    #[command(visible_alias = "remove")]
    Rm {
        /// Do not fail on volumes that do not exist.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with --all).
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Filter: label=KEY[=VALUE], label!=KEY.
        #[arg(long)]
        filter: Vec<String>,
    },
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let Cmd::Volume(cmd) = cmd;
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let vs = VolumeStore::open(root.path()).map_err(|e| miette!("{e}"))?;
    let containers = || -> Result<Vec<container::Container>> {
        Store::open(root.path())
            .and_then(|s| s.list())
            .map_err(|e| miette!("{e}"))
    };
    match cmd {
        VolumeCmd::Create {
            name_flag,
            name,
            driver,
            label,
            opt,
        } => {
            let name = match (name_flag, name) {
                (Some(a), Some(b)) if a != b => {
                    eprintln!("Conflicting options: either specify --name or provide positional arg, not both");
                    return Ok(ExitCode::from(1));
                }
                (a, b) => a.or(b),
            };
            let kv = |v: &[String]| -> BTreeMap<String, String> {
                v.iter()
                    .map(|s| match s.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (s.clone(), String::new()),
                    })
                    .collect()
            };
            match vs.create(name.as_deref(), &driver, kv(&label), kv(&opt)) {
                Ok(v) => {
                    println!("{}", v.name);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => daemon_error(e),
            }
        }
        VolumeCmd::Ls {
            quiet,
            filter,
            format,
        } => {
            let all = containers()?;
            let mut list = vs.list().map_err(|e| miette!("{e}"))?;
            // docker's filter rules: values of one key are alternatives,
            // except `label`, where every one must hold; keys must all hold.
            let mut filters: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for f in &filter {
                let Some((k, v)) = f.split_once('=') else {
                    eprintln!("bad format of filter (expected name=value)");
                    return Ok(ExitCode::from(1));
                };
                let valid = match k {
                    "dangling" => matches!(v, "true" | "1" | "false" | "0"),
                    "name" | "driver" | "label" => true,
                    _ => false,
                };
                if !valid {
                    eprintln!("Error response from daemon: invalid filter '{f}'");
                    return Ok(ExitCode::from(1));
                }
                filters.entry(k).or_default().push(v);
            }
            let holds = |x: &Volume, k: &str, v: &str| match k {
                "dangling" => vs.users(&all, &x.name).is_empty() == matches!(v, "true" | "1"),
                "name" => x.name.contains(v),
                "driver" => x.driver == v,
                _ => has_label(x, v),
            };
            list.retain(|x| {
                filters.iter().all(|(k, vs)| {
                    if *k == "label" {
                        vs.iter().all(|v| holds(x, k, v))
                    } else {
                        vs.iter().any(|v| holds(x, k, v))
                    }
                })
            });
            let mut out = std::io::stdout().lock();
            if quiet {
                for v in &list {
                    let _ = writeln!(out, "{}", v.name);
                }
            } else if let Some(fmt) = format.filter(|f| f != "table") {
                for v in &list {
                    let _ = writeln!(out, "{}", render(&fmt, v));
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| vec![v.driver.clone(), v.name.clone()])
                    .collect();
                let _ = out.write_all(table(&["DRIVER", "VOLUME NAME"], &rows, 0).as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Inspect { format, volumes } => {
            let mut found = Vec::new();
            let mut failed = false;
            for n in &volumes {
                match vs.get(n) {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            if let Some(fmt) = format {
                for v in &found {
                    println!("{}", render(&fmt, v));
                }
            } else {
                println!(
                    "{}",
                    go_json(&serde_json::to_value(&found).unwrap_or_default())
                );
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        VolumeCmd::Rm { force, volumes } => {
            let all = containers()?;
            let mut failed = false;
            for n in &volumes {
                match vs.remove(&all, n) {
                    Ok(()) => println!("{n}"),
                    Err(VolumeError::NotFound(_)) if force => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        VolumeCmd::Prune { all, force, filter } => {
            if !force {
                let warning = if all {
                    "WARNING! This will remove all local volumes not used by at least one container."
                } else {
                    "WARNING! This will remove anonymous local volumes not used by at least one container."
                };
                print!("{warning}\nAre you sure you want to continue? [y/N] ");
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let used = containers()?;
            let mut deleted = Vec::new();
            let mut reclaimed = 0u64;
            for v in vs.list().map_err(|e| miette!("{e}"))? {
                if !all && !v.is_anonymous() {
                    continue;
                }
                let keep = filter.iter().any(|f| match f.split_once("!=") {
                    Some(("label", l)) => has_label(&v, l),
                    _ => match f.split_once('=') {
                        Some(("label", l)) => !has_label(&v, l),
                        _ => false,
                    },
                });
                if keep || !vs.users(&used, &v.name).is_empty() {
                    continue;
                }
                let size = vs.size(&v.name);
                if vs.remove(&used, &v.name).is_ok() {
                    reclaimed += size;
                    deleted.push(v.name);
                }
            }
            let mut out = std::io::stdout().lock();
            if !deleted.is_empty() {
                let _ = writeln!(out, "Deleted Volumes:");
                for d in &deleted {
                    let _ = writeln!(out, "{d}");
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(
                out,
                "Total reclaimed space: {}",
                units::human_size(reclaimed)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn daemon_error(e: VolumeError) -> Result<ExitCode> {
    eprintln!("Error response from daemon: {e}");
    Ok(ExitCode::from(1))
}

fn has_label(v: &Volume, spec: &str) -> bool {
    let labels = v.labels.clone().unwrap_or_default();
    match spec.split_once('=') {
        Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
        None => labels.contains_key(spec),
    }
}

/// JSON as docker's CLI indents it (4 spaces).
pub fn go_json(v: &serde_json::Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

/// A small Go-template subset over a volume: `{{.Field}}`, `{{json .}}`,
/// `{{json .Field}}`, `json` alone; other text is kept.
fn render(fmt: &str, v: &Volume) -> String {
    let val = serde_json::to_value(v).unwrap_or_default();
    if fmt == "json" {
        return serde_json::to_string(&val).unwrap_or_default();
    }
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let expr = rest[i + 2..i + j].trim();
        rest = &rest[i + j + 2..];
        let (json, path) = match expr.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, expr),
        };
        let field = if path == "." {
            Some(&val)
        } else {
            path.strip_prefix('.')
                .and_then(|f| f.split('.').try_fold(&val, |acc, k| acc.get(k)))
        };
        let field = field.cloned().unwrap_or(serde_json::Value::Null);
        match (&field, json) {
            (serde_json::Value::String(s), false) => out.push_str(s),
            (serde_json::Value::Null, false) => out.push_str("<no value>"),
            (serde_json::Value::Object(m), false) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                    .collect();
                out.push_str(&format!("map[{}]", parts.join(" ")));
            }
            (f, _) => out.push_str(&serde_json::to_string(f).unwrap_or_default()),
        }
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------- kiln run's flags

/// A `-v`, `--mount` or `--tmpfs` that does not parse (docker's words).
#[derive(Debug, thiserror::Error)]
pub enum MountFlagError {
    #[error("invalid volume specification: '{0}'")]
    Spec(String),
    #[error("invalid volume specification: '{spec}': invalid mount config for type \"volume\": invalid mount path: '{path}' mount path must be absolute")]
    Relative { spec: String, path: String },
    #[error("invalid argument \"{value}\" for \"--mount\" flag: {detail}")]
    Mount { value: String, detail: String },
    #[error("invalid mount config for type \"{kind}\": {detail}")]
    Config { kind: String, detail: String },
    #[error("invalid argument \"{value}\" for \"--tmpfs\" flag: {detail}")]
    Tmpfs { value: String, detail: String },
    #[error("{0}")]
    Bind(String),
}

/// What `-v`/`--mount`/`--tmpfs` add to a container: host binds and tmpfs
/// mounts, and volumes for the worker to make.
#[derive(Debug, Default)]
pub struct RunMounts {
    pub mounts: Vec<Mount>,
    pub volumes: Vec<VolumeSpec>,
}

/// Parses `kiln run`'s `-v`, `--mount` and `--tmpfs`; `bind` parses a
/// host-path `-v` (run.rs's own rules: the folder is made when missing).
pub fn run_mounts<E: std::fmt::Display>(
    vs: &[String],
    mounts: &[String],
    tmpfs: &[String],
    bind: impl Fn(&str) -> Result<Mount, E>,
) -> Result<RunMounts, MountFlagError> {
    let mut out = RunMounts::default();
    for v in vs {
        let parts: Vec<&str> = v.split(':').collect();
        let is_mode = |m: &str| {
            m.split(',').all(|x| {
                matches!(
                    x,
                    "ro" | "rw"
                        | "z"
                        | "Z"
                        | "nocopy"
                        | "rprivate"
                        | "private"
                        | "rshared"
                        | "shared"
                        | "rslave"
                        | "slave"
                )
            })
        };
        let (src, dst, mode) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [d, m] if d.starts_with('/') && is_mode(m) && !m.starts_with('/') => ("", *d, *m),
            [s, d] => (*s, *d, ""),
            [s, d, m] if is_mode(m) => (*s, *d, *m),
            _ => return Err(MountFlagError::Spec(v.clone())),
        };
        if src.starts_with('/') || src.starts_with('.') {
            out.mounts
                .push(bind(v).map_err(|e| MountFlagError::Bind(e.to_string()))?);
            continue;
        }
        if !container::valid_target(dst) {
            return Err(MountFlagError::Relative {
                spec: v.clone(),
                path: dst.to_string(),
            });
        }
        let flags: Vec<&str> = mode.split(',').collect();
        out.volumes.push(VolumeSpec::Volume {
            name: (!src.is_empty()).then(|| src.to_string()),
            target: dst.to_string(),
            readonly: flags.contains(&"ro"),
            nocopy: flags.contains(&"nocopy"),
            options: BTreeMap::new(),
        });
    }
    for m in mounts {
        parse_mount(m, &mut out)?;
    }
    for t in tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !container::valid_target(target) {
            return Err(MountFlagError::Tmpfs {
                value: t.clone(),
                detail: format!("invalid mount path: '{target}' mount path must be absolute"),
            });
        }
        let (mut size, mut mode) = (None, None);
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            if let Some(s) = o.strip_prefix("size=") {
                size = Some(parse_size(s).ok_or_else(|| MountFlagError::Tmpfs {
                    value: t.clone(),
                    detail: format!("invalid size: '{s}'"),
                })?);
            } else if let Some(m) = o.strip_prefix("mode=") {
                mode = Some(
                    u32::from_str_radix(m, 8).map_err(|_| MountFlagError::Tmpfs {
                        value: t.clone(),
                        detail: format!("invalid mode: '{m}'"),
                    })?,
                );
            }
        }
        out.mounts.push(Mount::Tmpfs {
            target: target.to_string(),
            size,
            mode,
        });
    }
    Ok(out)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "True" | "TRUE" | "t" | "T" => Some(true),
        "0" | "false" | "False" | "FALSE" | "f" | "F" => Some(false),
        _ => None,
    }
}

/// `--mount type=…,source=…,target=…,…` as docker/cli's `MountOpt.Set`
/// reads it, then the daemon's checks.
fn parse_mount(value: &str, out: &mut RunMounts) -> Result<(), MountFlagError> {
    let bad = |detail: String| MountFlagError::Mount {
        value: value.to_string(),
        detail,
    };
    let mut kind = "volume".to_string();
    let (mut source, mut target) = (String::new(), String::new());
    let (mut readonly, mut nocopy) = (false, false);
    let mut vol_opts = BTreeMap::new();
    let (mut size, mut mode) = (None, None);
    for field in value.split(',') {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |val: Option<&str>| -> Result<bool, MountFlagError> {
            match val {
                None => Ok(true),
                Some(v) => {
                    parse_bool(v).ok_or_else(|| bad(format!("invalid value for '{key}': {v}")))
                }
            }
        };
        match key.as_str() {
            "readonly" | "ro" => readonly = flag(val)?,
            "volume-nocopy" => nocopy = flag(val)?,
            "bind-nonrecursive" | "bind-recursive" => {}
            _ if val.is_none() => {
                return Err(bad(format!(
                    "invalid field '{field}' must be a key=value pair"
                )))
            }
            "type" => kind = val.unwrap_or_default().to_ascii_lowercase(),
            "source" | "src" => source = val.unwrap_or_default().to_string(),
            "target" | "dst" | "destination" => target = val.unwrap_or_default().to_string(),
            "bind-propagation" => {
                let p = val.unwrap_or_default();
                if !matches!(
                    p,
                    "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave"
                ) {
                    return Err(bad(format!("invalid value for {key}: {p}")));
                }
            }
            "consistency" | "volume-driver" | "volume-label" => {}
            "volume-opt" => {
                let o = val.unwrap_or_default();
                match o.split_once('=') {
                    Some((k, v)) => vol_opts.insert(k.to_string(), v.to_string()),
                    None => vol_opts.insert(o.to_string(), String::new()),
                };
            }
            "tmpfs-size" => {
                let s = val.unwrap_or_default();
                size = Some(
                    parse_size(s).ok_or_else(|| bad(format!("invalid value for {key}: {s}")))?,
                );
            }
            "tmpfs-mode" => {
                let m = val.unwrap_or_default();
                mode = Some(
                    u32::from_str_radix(m, 8)
                        .map_err(|_| bad(format!("invalid value for {key}: {m}")))?,
                );
            }
            _ => return Err(bad(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if !matches!(kind.as_str(), "bind" | "volume" | "tmpfs") {
        return Err(bad(format!("invalid mount type '{kind}'")));
    }
    if target.is_empty() {
        return Err(bad("target is required".into()));
    }
    let config = |detail: String| MountFlagError::Config {
        kind: kind.clone(),
        detail,
    };
    if !container::valid_target(&target) {
        return Err(config(format!(
            "invalid mount path: '{target}' mount path must be absolute"
        )));
    }
    match kind.as_str() {
        "bind" => {
            if source.is_empty() {
                return Err(config("field Source must not be empty".into()));
            }
            let path = std::path::Path::new(&source);
            if !path.is_absolute() {
                return Err(config(format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            let canon = std::fs::canonicalize(path)
                .map_err(|_| config(format!("bind source path does not exist: {source}")))?;
            out.mounts.push(Mount::Bind {
                source: canon,
                target,
                readonly,
            });
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(config("field Source must not be specified".into()));
            }
            out.mounts.push(Mount::Tmpfs { target, size, mode });
        }
        _ => out.volumes.push(VolumeSpec::Volume {
            name: (!source.is_empty()).then_some(source),
            target,
            readonly,
            nocopy,
            options: vol_opts,
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bind(v: &str) -> Result<Mount, String> {
        Err(format!("bind {v}"))
    }

    #[test]
    fn volume_flags_parse() {
        let r = run_mounts(
            &["data:/d:ro".into(), "/anon".into()],
            &[
                "type=tmpfs,target=/t,tmpfs-size=1m".into(),
                "src=v2,dst=/v2,readonly".into(),
            ],
            &["/run:size=64k,mode=755".into()],
            no_bind,
        )
        .unwrap();
        assert_eq!(r.volumes.len(), 3);
        assert!(
            matches!(&r.volumes[0], VolumeSpec::Volume { name: Some(n), readonly: true, .. } if n == "data")
        );
        assert!(matches!(
            &r.volumes[1],
            VolumeSpec::Volume { name: None, .. }
        ));
        assert!(matches!(
            &r.mounts[0],
            Mount::Tmpfs {
                size: Some(1048576),
                ..
            }
        ));
        assert!(matches!(
            &r.mounts[1],
            Mount::Tmpfs {
                mode: Some(0o755),
                ..
            }
        ));
        let err = |m: &str| {
            run_mounts(&[], &[m.into()], &[], no_bind)
                .unwrap_err()
                .to_string()
        };
        assert!(err("type=bind,target=/x").contains("field Source must not be empty"));
        assert!(err("type=bind,src=/nonexistent-kiln,target=/x")
            .contains("bind source path does not exist"));
        assert!(err("src=a").contains("target is required"));
        assert!(err("foo=bar,target=/x").contains("unexpected key 'foo'"));
        assert!(err("type=tmpfs,src=a,target=/x").contains("must not be specified"));
        assert!(run_mounts(&["rel".into()], &[], &[], no_bind).is_err());
    }
}
