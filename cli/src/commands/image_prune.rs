//! `kiln image prune [-a] [-f] [--filter until=…|label=…|label!=…]`, as
//! docker's: removes dangling (`<none>`) images, with `-a` every image no
//! container uses; asks first unless `-f`; prints docker's "Deleted
//! Images:" list and "Total reclaimed space:". Unlike `kiln prune`, it
//! touches only images (their names and the blobs no other image uses),
//! never the build cache.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use kiln_cache::image;
use kiln_cache::{gc, untagged, Reference, Root};
use miette::{miette, Result};
use serde_json::Value;

use crate::units;

/// `kiln image …`: docker's management command; only `prune` so far (the
/// other image commands are kiln's top-level ones).
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Remove unused images.
    Prune(PruneArgs),
}

/// `kiln image prune`'s flags, docker's.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. "until=<timestamp>", "label=k=v").
    #[arg(long)]
    filter: Vec<String>,
}

const ALL_WARNING: &str = "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?";
const DANGLING_WARNING: &str =
    "WARNING! This will remove all dangling images.\nAre you sure you want to continue?";

/// Runs `kiln image SUBCOMMAND`.
pub fn run(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Prune(a) => prune(a),
    }
}

/// The `--filter` values docker's image prune accepts.
#[derive(Debug, Default)]
struct Filters {
    /// `until`: images created before this time (unix seconds).
    until: Option<i64>,
    /// `label`: every one must match (`key` or `key=value`).
    labels: Vec<String>,
    /// `label!`: none may match.
    not_labels: Vec<String>,
}

fn parse_filters(values: &[String], now: i64) -> Result<Filters> {
    let mut f = Filters::default();
    for v in values {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| miette!("bad format of filter (expected name=value)"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "until" => {
                let t = parse_until(val, now)
                    .ok_or_else(|| miette!("failed to parse value {val:?} of filter until"))?;
                f.until = Some(f.until.map_or(t, |u: i64| u.min(t)));
            }
            "label" => f.labels.push(val.to_string()),
            "label!" => f.not_labels.push(val.to_string()),
            // docker adds it itself from -a; accept it as docker's API does.
            "dangling" => {}
            other => return Err(miette!("invalid filter '{other}'")),
        }
    }
    Ok(f)
}

/// docker's `until`: [`units::docker_time_ns`] in whole seconds.
fn parse_until(v: &str, now: i64) -> Option<i64> {
    units::docker_time_ns(v, i128::from(now) * 1_000_000_000)
        .map(|ns| ns.div_euclid(1_000_000_000) as i64)
}

/// Whether the image's config labels pass the label filters.
fn labels_match(f: &Filters, config: &Value) -> bool {
    let labels = config.pointer("/config/Labels").and_then(Value::as_object);
    let has = |want: &str| -> bool {
        let Some(labels) = labels else { return false };
        match want.split_once('=') {
            Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
            None => labels.contains_key(want),
        }
    };
    f.labels.iter().all(|l| has(l)) && !f.not_labels.iter().any(|l| has(l))
}

fn prune(a: PruneArgs) -> Result<ExitCode> {
    let fail = |e: kiln_cache::Error| miette!("{e}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let filters = parse_filters(&a.filter, now)?;
    let mut out = std::io::stdout().lock();
    if !a.force {
        let warning = if a.all { ALL_WARNING } else { DANGLING_WARNING };
        write!(out, "{warning} [y/N] ").map_err(|e| miette!("writing output: {e}"))?;
        out.flush().map_err(|e| miette!("writing output: {e}"))?;
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y") {
            writeln!(out).map_err(|e| miette!("writing output: {e}"))?;
            eprintln!("image prune has been cancelled");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let root = Root::from_env().map_err(fail)?;
    // Each image once, with every name it has.
    let list = root.images().list().map_err(fail)?;
    let mut by_digest: BTreeMap<String, (usize, Vec<Reference>)> = BTreeMap::new();
    for (i, (name, d)) in list.iter().enumerate() {
        by_digest
            .entry(d.digest().to_string())
            .or_insert_with(|| (i, Vec::new()))
            .1
            .push(name.clone());
    }
    let mut lines = String::new();
    let mut reclaimed = 0u64;
    for (digest, (first, names)) in by_digest {
        let descriptor = &list[first].1;
        let content = || {
            gc::remove_image_content(&root, descriptor, &[])
                .map(|r| r.freed)
                .map_err(fail)
        };
        let dangling = names.iter().all(untagged::is_dangling);
        if !a.all && !dangling {
            continue;
        }
        let shown = names
            .iter()
            .find(|n| !untagged::is_dangling(n))
            .map_or_else(|| digest.clone(), |n| n.familiar());
        let Ok(resolved) = image::resolve(root.blobs(), descriptor, None, &shown) else {
            // Not for this machine, or incomplete: no config to filter on;
            // docker keeps what its filters cannot judge.
            if filters.until.is_some() || !filters.labels.is_empty() {
                continue;
            }
            // Still prunable when no filter needs its config.
            reclaimed += remove(&root, &names, &digest, &digest, content, &mut lines)?;
            continue;
        };
        if let Some(until) = filters.until {
            let created = resolved
                .config
                .get("created")
                .and_then(Value::as_str)
                .and_then(units::parse_rfc3339);
            // No creation time: kept, as docker keeps it.
            if created.is_none_or(|c| c >= until) {
                continue;
            }
        }
        if !labels_match(&filters, &resolved.config) {
            continue;
        }
        // An image a container was made from stays (docker: "without at
        // least one container associated").
        let manifest = resolved.descriptor.digest().to_string();
        let used = [digest.as_str(), manifest.as_str()]
            .iter()
            .any(|id| kiln_worker::container::run::image_user(root.path(), id).is_some());
        if used {
            continue;
        }
        let id = untagged::image_id(&root, descriptor)
            .map_or_else(|_| digest.clone(), |i| i.to_string());
        reclaimed += remove(&root, &names, &digest, &id, content, &mut lines)?;
    }
    let w = |out: &mut dyn Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| miette!("writing output: {e}"))
    };
    if !lines.is_empty() {
        w(&mut out, &format!("Deleted Images:\n{lines}\n"))?;
    }
    w(
        &mut out,
        &format!("Total reclaimed space: {}\n", units::human_size(reclaimed)),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Drops every name of the image `digest` ("untagged: …" for the user's),
/// then, once no name is left, its content no other image uses
/// (`content`, "deleted: ID"); returns the bytes freed.
fn remove(
    root: &Root,
    names: &[Reference],
    digest: &str,
    id: &str,
    content: impl FnOnce() -> Result<u64>,
    lines: &mut String,
) -> Result<u64> {
    let fail = |e: kiln_cache::Error| miette!("{e}");
    for n in names {
        if root.images().remove(n).map_err(fail)? && !untagged::is_dangling(n) {
            lines.push_str(&format!("untagged: {}\n", n.familiar()));
        }
    }
    let still_named = root
        .images()
        .list()
        .map_err(fail)?
        .iter()
        .any(|(_, d)| d.digest().to_string() == digest);
    if still_named {
        return Ok(0);
    }
    let freed = content()?;
    lines.push_str(&format!("deleted: {id}\n"));
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_forms() {
        let now = 1_000_000;
        assert_eq!(parse_until("24h", now), Some(now - 86_400));
        assert_eq!(parse_until("1h30m", now), Some(now - 5_400));
        assert_eq!(parse_until("10m", now), Some(now - 600));
        assert_eq!(parse_until("1700000000", now), Some(1_700_000_000));
        assert_eq!(parse_until("1700000000.5", now), Some(1_700_000_000));
        assert_eq!(
            parse_until("2001-09-09T01:46:40Z", now),
            Some(1_000_000_000)
        );
        assert_eq!(parse_until("2001-09-09", now), Some(999_993_600));
        assert_eq!(parse_until("soon", now), None);
        assert!(parse_filters(&["dangling=true".into()], now).is_ok());
        assert!(parse_filters(&["reference=x".into()], now).is_err());
    }

    #[test]
    fn label_filters() {
        let cfg = serde_json::json!({"config": {"Labels": {"a": "1", "b": "2"}}});
        let f = |l: &[&str], n: &[&str]| Filters {
            until: None,
            labels: l.iter().map(|s| s.to_string()).collect(),
            not_labels: n.iter().map(|s| s.to_string()).collect(),
        };
        assert!(labels_match(&f(&["a"], &[]), &cfg));
        assert!(labels_match(&f(&["a=1", "b=2"], &[]), &cfg));
        assert!(!labels_match(&f(&["a=2"], &[]), &cfg));
        assert!(!labels_match(&f(&[], &["b"]), &cfg));
        assert!(labels_match(&f(&[], &["c"]), &cfg));
    }
}
