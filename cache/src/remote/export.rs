//! Writing the build's records to `--cache-to` destinations, and inline
//! into image configs.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{json, Value};

use super::manifest::{inline_value, write_manifest, INLINE_KEY};
use super::{
    layout, object, registry, CacheMode, CacheOptions, CacheTo, Error, Event, Imported, LayerRef,
};
use super::{mounts, reuse, Records, Report, StepInfo};
use crate::compress::Compression;
use crate::registry::RegistryConfig;
use crate::{buildcache, Digest, Root};

/// The records to export: with `Min`, those whose layers are a prefix of
/// one of `results` (each a result's layer diff_ids). A key of the solve
/// without a local record (a step below an imported hit is never looked
/// up) takes the imported record, its blobs fetched, so a cache exported
/// from a build that imported one still holds every step the build used.
pub fn collect(
    root: &Root,
    keys: &[String],
    mode: CacheMode,
    results: &[Vec<Digest>],
    imported: Option<&Imported>,
) -> Records {
    let wanted = |layers: &[LayerRef]| {
        !layers.is_empty()
            && (mode == CacheMode::Max
                || results.iter().any(|r| {
                    r.len() >= layers.len()
                        && r.iter().zip(layers.iter()).all(|(a, b)| *a == b.diff_id)
                }))
    };
    let mut out = Records::new();
    for k in keys {
        if let Some(layers) = buildcache::read_complete(root, k) {
            if wanted(&layers) {
                out.insert(k.clone(), layers);
            }
            continue;
        }
        let Some(imp) = imported else { continue };
        let Some(layers) = imp.record(k).filter(|l| wanted(l)) else {
            continue;
        };
        match imp.block_on(imp.materialize(layers)) {
            Ok(layers) => {
                out.insert(k.clone(), layers);
            }
            Err(e) => imp.warn(format!("cache record {k} not exported: {e}")),
        }
    }
    out
}

/// Puts the inline cache (the records of the result whose layers are
/// `diff_ids`) into its image config `base` when asked, and in any case
/// drops one inherited from the base image: records are only in the
/// config when this build asks.
pub fn apply_inline(
    root: &Root,
    base: &mut Option<Value>,
    diff_ids: &[Digest],
    keys: &[String],
    inline: bool,
    imported: Option<&Imported>,
) {
    if let Some(Value::Object(b)) = base.as_mut() {
        b.remove(INLINE_KEY);
    }
    if !inline {
        return;
    }
    let records = collect(
        root,
        keys,
        CacheMode::Min,
        std::slice::from_ref(&diff_ids.to_vec()),
        imported,
    );
    let value = inline_value(records);
    match base.as_mut() {
        Some(Value::Object(b)) => {
            b.insert(INLINE_KEY.into(), value);
        }
        _ => {
            let mut m = serde_json::Map::new();
            m.insert(INLINE_KEY.into(), value);
            *base = Some(Value::Object(m));
        }
    }
}

/// What the export needs of the build.
pub struct Solution<'a> {
    /// The cache key (hex) of every node of the solve.
    pub keys: &'a [String],
    /// Each result's layer diff_ids.
    pub results: &'a [Vec<Digest>],
    /// The `--cache-from` records, for steps the build used without looking
    /// them up.
    pub imported: Option<&'a Imported>,
    /// The names (folders in `cachemounts/`) of the build's cache mounts,
    /// exported where `cache-mounts=true`.
    pub cache_mounts: &'a [String],
}

/// Exports the cache to every `--cache-to` destination but inline (which
/// [`apply_inline`] already put in the image), blocking on `rt`. A failed
/// destination fails the export (BuildKit fails the build though the image
/// is written) unless it says `ignore-error=true`, which makes it a
/// warning.
pub fn export(
    root: &Root,
    rt: &tokio::runtime::Handle,
    config: &RegistryConfig,
    opts: &CacheOptions,
    solved: &Solution<'_>,
    report: &dyn Report,
) -> Result<(), Error> {
    for to in &opts.to {
        let (cache_mode, ignore_error, with_mounts, target, name) = match to {
            CacheTo::Inline => continue,
            CacheTo::Registry {
                reference,
                mode,
                ignore_error,
                cache_mounts,
                ..
            } => (
                *mode,
                *ignore_error,
                *cache_mounts,
                reference.to_string(),
                format!("exporting cache to registry {reference}"),
            ),
            CacheTo::Local {
                dest,
                mode,
                ignore_error,
                cache_mounts,
                ..
            } => (
                *mode,
                *ignore_error,
                *cache_mounts,
                dest.display().to_string(),
                format!("exporting cache to client directory {}", dest.display()),
            ),
            CacheTo::Object {
                cache,
                mode,
                ignore_error,
                cache_mounts,
                ..
            } => (
                *mode,
                *ignore_error,
                *cache_mounts,
                cache.display(),
                format!("exporting cache to {}", cache.display()),
            ),
        };
        let step = StepInfo {
            action: "export",
            target: target.clone(),
            name,
        };
        report.event(Event::Started(step.clone()));
        let started = Instant::now();
        let _lease = root.lease()?;
        let mut records = collect(
            root,
            solved.keys,
            cache_mode,
            solved.results,
            solved.imported,
        );
        if let Some(imp) = solved.imported {
            for w in imp.take_warnings() {
                report.event(Event::Warning(w));
            }
        }
        let n_records = records.len();
        let packed = if with_mounts {
            mounts::pack(root, solved.cache_mounts)
                .map_err(|e| e.context("packing the cache mounts"))
        } else {
            Ok(Records::new())
        };
        let n_mounts = packed.as_ref().map_or(0, |m| m.len());
        let compression = match to {
            CacheTo::Registry { compression, .. }
            | CacheTo::Local { compression, .. }
            | CacheTo::Object { compression, .. } => *compression,
            CacheTo::Inline => Compression::None,
        };
        let object = match to {
            CacheTo::Object { cache, .. } => Some(object::Client::new(cache)),
            _ => None,
        };
        let done = packed.and_then(|m| {
            records.extend(m);
            // Compressed blobs kiln knows for the plain layers: named as
            // they are, so nothing is compressed again (see `reuse`).
            let candidates = reuse::candidates(root, &records, compression, solved.imported);
            let elsewhere: Vec<(Digest, u64)> = candidates
                .iter()
                .filter(|c| !c.local)
                .map(|c| (c.blob.digest.clone(), c.blob.size))
                .collect();
            let present: HashSet<Digest> = if elsewhere.is_empty() {
                HashSet::new()
            } else {
                match (to, &object) {
                    (CacheTo::Registry { reference, .. }, _) => {
                        // Found there, or mounted from the imported cache's
                        // repository of the same registry.
                        let wanted: Vec<(Digest, Option<String>)> = candidates
                            .iter()
                            .filter(|c| !c.local)
                            .map(|c| {
                                let from = c.source.as_ref().filter(|s| {
                                    s.registry() == reference.registry()
                                        && s.repository() != reference.repository()
                                });
                                (
                                    c.blob.digest.clone(),
                                    from.map(|s| s.repository().to_string()),
                                )
                            })
                            .collect();
                        rt.block_on(crate::registry::blobs_present(config, reference, &wanted))
                    }
                    (CacheTo::Local { dest, .. }, _) => elsewhere
                        .into_iter()
                        .filter(|(d, size)| layout::has_blob(dest, d, *size))
                        .map(|(d, _)| d)
                        .collect(),
                    (CacheTo::Object { .. }, Some(Ok(client))) => rt.block_on(async {
                        let mut out = HashSet::new();
                        for (d, size) in elsewhere {
                            if client.has_fresh(&d, size).await {
                                out.insert(d);
                            }
                        }
                        out
                    }),
                    _ => HashSet::new(),
                }
            };
            let reuse = reuse::choose(candidates, &present);
            let known = reuse.len();
            let (desc, n_layers) = write_manifest(root, records, &reuse)?;
            let converted = reuse::convert(root, &desc, compression)?;
            Ok((converted, known, n_layers))
        });
        let done = done.and_then(|(converted, known, n_layers)| {
            let desc = &converted.descriptor;
            let (c, r) = (converted.compressed, converted.reused + known);
            let layers = format!("{n_layers} layers ({c} compressed, {r} reused)");
            match to {
                CacheTo::Registry {
                    reference,
                    compression,
                    ..
                } => {
                    let p =
                        rt.block_on(registry::push(root, config, desc, reference, *compression))?;
                    let (u, e, m) = (p.uploaded, p.existed, p.mounted);
                    report.event(Event::Note(
                        step.clone(),
                        format!(
                            "{n_records} records, {layers}: {u} blobs uploaded, {e} already there, {m} mounted"
                        ),
                    ));
                    Ok(json!({"records": n_records, "layers": n_layers, "mounts": n_mounts,
                              "compressed": c, "reused": r,
                              "uploaded": u, "existing": e, "mounted": m}))
                }
                CacheTo::Local { dest, .. } => {
                    let written = layout::write(root, desc, dest)?;
                    report.event(Event::Note(
                        step.clone(),
                        format!("{n_records} records, {layers}: {written} blobs written"),
                    ));
                    Ok(json!({"records": n_records, "layers": n_layers, "mounts": n_mounts,
                              "compressed": c, "reused": r, "written": written}))
                }
                CacheTo::Object { .. } => {
                    let client = match object {
                        Some(Ok(client)) => client,
                        Some(Err(e)) => return Err(e),
                        None => return Err(Error::Format("no object store client".into())),
                    };
                    let p = rt.block_on(client.push(root, desc))?;
                    let (u, e, t) = (p.uploaded, p.existed, p.touched);
                    report.event(Event::Note(
                        step.clone(),
                        format!(
                            "{n_records} records, {layers}: {u} blobs uploaded, {e} already there, {t} refreshed"
                        ),
                    ));
                    Ok(json!({"records": n_records, "layers": n_layers, "mounts": n_mounts,
                              "compressed": c, "reused": r,
                              "uploaded": u, "existing": e, "touched": t}))
                }
                CacheTo::Inline => Ok(Value::Null),
            }
        });
        if let Some(imp) = solved.imported {
            // A compressed blob that was not reused (see `reuse`).
            for w in imp.take_warnings() {
                report.event(Event::Warning(w));
            }
        }
        match done {
            Ok(detail) => report.event(Event::Done {
                step,
                elapsed: started.elapsed(),
                detail,
            }),
            Err(e) => {
                let err = Error::Export {
                    target,
                    source: Box::new(e),
                };
                report.event(Event::Failed(step, err.to_string()));
                if ignore_error {
                    report.event(Event::Warning(err.to_string()));
                } else {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}
