//! The remote build cache: `kiln build --cache-to` / `--cache-from`, so CI
//! runners that start with an empty store share their work through a
//! registry (or a folder), as BuildKit's cache backends do.
//!
//! kiln's cache keys are not BuildKit's, so the format is kiln's own, but
//! shaped like BuildKit's so registries and tools accept it: an OCI image
//! manifest whose config blob ([`CONFIG_MEDIA_TYPE`]) holds the records,
//! cache key (hex) → the snapshot's layers as the worker records them
//! (diff_id, digest, size, media type, lowest first), and `layers`, the
//! diff_id of each of the manifest's layers (same order), so an import maps
//! a record's layer to the transferred blob even when the transfer is a
//! compressed variant of the stored one. Inline caches put the records in
//! the image config under [`INLINE_KEY`]; their layers are the image's.
//!
//! Import is demand-driven: before the solve only manifests and configs
//! are read; a local lookup miss whose key an imported record has
//! downloads just that record's missing blobs (verified by digest; a plain
//! layer sent compressed is decompressed to its diff_id, so the build goes
//! on with the exporter's blobs and image ID; a compressed layer's claimed
//! diff_id is checked), writes the local record and counts as a hit
//! ([`RemoteCached`]). A record that cannot be used is a miss and a warning.
//!
//! Export runs after the image is written: `mode=min` takes the records of
//! the steps the final image's layers came from (those whose layers are a
//! prefix of the result's), `mode=max` every record of the solve; a step
//! the build used without looking it up (below an imported hit) exports
//! its imported record, its blobs fetched then. A failed
//! export fails the build (exit 1) though the image is already built and
//! named, as BuildKit does; `ignore-error=true` makes it a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_cache::compress::{self, Compression, Conversion};
use kiln_cache::registry::{
    self, Outcome, PushOptions, RegistryConfig, RegistryError, RemoteManifest, RemoteSource,
};
use kiln_cache::{media, Digest, Reference, Root};
use kiln_solver::ops::BuildOp;
use kiln_solver::{Executor, Graph, Key, NodeId, Progress};
use kiln_worker::executor::{ExecutorError, SharedWorker, Snapshot};
use kiln_worker::layers::LayerRef;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::build::export::Built;
use crate::progress;

/// The media type of a kiln cache manifest's config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// The image config key of inline cache records (BuildKit's is
/// `moby.buildkit.cache.v0`).
pub const INLINE_KEY: &str = "kiln.cache.v1";

/// The format version written; imports refuse others.
const FORMAT_VERSION: u32 = 1;

/// BuildKit's local cache names its manifest so in `index.json`.
const LOCAL_TAG: &str = "latest";

/// Which records an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps the final image's layers came from.
    Min,
    /// Every step of the solve that has a record.
    Max,
}

/// Where an export goes (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Registry {
        reference: Reference,
        mode: CacheMode,
        compression: Compression,
        ignore_error: bool,
    },
    Local {
        dest: PathBuf,
        mode: CacheMode,
        compression: Compression,
        ignore_error: bool,
    },
    Inline,
}

/// Where an import comes from (`--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Registry(Reference),
    Local(PathBuf),
}

/// The build's remote cache flags, parsed.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    pub to: Vec<CacheTo>,
    pub from: Vec<CacheFrom>,
}

impl CacheOptions {
    /// Parses `--cache-to` and `--cache-from` as buildx does;
    /// `BUILDKIT_INLINE_CACHE=1` among the build args means inline.
    pub fn parse(
        to: &[String],
        from: &[String],
        build_args: &BTreeMap<String, String>,
    ) -> Result<CacheOptions> {
        let mut out = CacheOptions {
            to: to.iter().map(|s| parse_to(s)).collect::<Result<_>>()?,
            from: from.iter().map(|s| parse_from(s)).collect::<Result<_>>()?,
        };
        let inline_arg = build_args
            .get("BUILDKIT_INLINE_CACHE")
            .is_some_and(|v| matches!(v.trim(), "1" | "true"));
        if inline_arg && !out.inline() {
            out.to.push(CacheTo::Inline);
        }
        Ok(out)
    }

    /// Whether an inline cache goes into the image config.
    pub fn inline(&self) -> bool {
        self.to.iter().any(|t| matches!(t, CacheTo::Inline))
    }
}

/// `k=v,k=v` into pairs; a part without `=` is an error naming it.
fn attrs(s: &str, flag: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| miette!("{flag} {s:?}: invalid attribute {p:?}, expected key=value"))
        })
        .collect()
}

/// Refuses attributes `kind` does not know, naming them and the known ones.
fn check_known(flag: &str, kind: &str, attrs: &[(String, String)], allowed: &[&str]) -> Result<()> {
    let unknown: Vec<&str> = attrs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(miette!(
        "{flag}: unknown attribute(s) {} for type={kind} (known: {})",
        unknown.join(", "),
        allowed.join(", ")
    ))
}

fn parse_bool(flag: &str, k: &str, v: &str) -> Result<bool> {
    v.parse()
        .map_err(|_| miette!("{flag}: {k}={v:?}: expected true or false"))
}

fn parse_to(s: &str) -> Result<CacheTo> {
    const FLAG: &str = "--cache-to";
    let attrs = attrs(s, FLAG)?;
    let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let kind = get("type").ok_or_else(|| miette!("{FLAG} {s:?}: type= is required"))?;
    let allowed: &[&str] = match kind {
        "registry" => &[
            "type",
            "ref",
            "mode",
            "compression",
            "ignore-error",
            "oci-mediatypes",
            "image-manifest",
        ],
        "local" => &[
            "type",
            "dest",
            "mode",
            "compression",
            "ignore-error",
            "oci-mediatypes",
            "image-manifest",
        ],
        "inline" => &["type"],
        other => {
            return Err(miette!(
                "{FLAG}: cache type {other:?} is not supported (registry, local, inline)"
            ))
        }
    };
    check_known(FLAG, kind, &attrs, allowed)?;
    let mode = match get("mode") {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(m) => return Err(miette!("{FLAG}: mode={m:?}: expected min or max")),
    };
    let compression = match get("compression") {
        None => Compression::Gzip,
        Some(c) => compress::parse_compression(c).map_err(|e| miette!("{FLAG}: {e}"))?,
    };
    let ignore_error = match get("ignore-error") {
        None => false,
        Some(v) => parse_bool(FLAG, "ignore-error", v)?,
    };
    for k in ["oci-mediatypes", "image-manifest"] {
        // kiln always writes an OCI image manifest; only the syntax is
        // checked.
        if let Some(v) = get(k) {
            parse_bool(FLAG, k, v)?;
        }
    }
    match kind {
        "registry" => {
            let r = get("ref").ok_or_else(|| miette!("{FLAG}: type=registry needs ref="))?;
            let reference =
                Reference::parse(r).map_err(|e| miette!("{FLAG}: invalid ref {r:?}: {e}"))?;
            Ok(CacheTo::Registry {
                reference,
                mode,
                compression,
                ignore_error,
            })
        }
        "local" => {
            let dest = get("dest").ok_or_else(|| miette!("{FLAG}: type=local needs dest="))?;
            Ok(CacheTo::Local {
                dest: PathBuf::from(dest),
                mode,
                compression,
                ignore_error,
            })
        }
        _ => Ok(CacheTo::Inline),
    }
}

fn parse_from(s: &str) -> Result<CacheFrom> {
    const FLAG: &str = "--cache-from";
    if !s.contains('=') {
        let reference = Reference::parse(s.trim())
            .map_err(|e| miette!("{FLAG}: invalid reference {s:?}: {e}"))?;
        return Ok(CacheFrom::Registry(reference));
    }
    let attrs = attrs(s, FLAG)?;
    let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let kind = get("type").unwrap_or("registry");
    let allowed: &[&str] = match kind {
        "registry" => &["type", "ref"],
        "local" => &["type", "src"],
        other => {
            return Err(miette!(
                "{FLAG}: cache type {other:?} is not supported (registry, local)"
            ))
        }
    };
    check_known(FLAG, kind, &attrs, allowed)?;
    if kind == "local" {
        let src = get("src").ok_or_else(|| miette!("{FLAG}: type=local needs src="))?;
        return Ok(CacheFrom::Local(PathBuf::from(src)));
    }
    let r = get("ref").ok_or_else(|| miette!("{FLAG}: type=registry needs ref="))?;
    let reference = Reference::parse(r).map_err(|e| miette!("{FLAG}: invalid ref {r:?}: {e}"))?;
    Ok(CacheFrom::Registry(reference))
}

// ------------------------------------------------------------------ format

/// The config blob of a cache manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    /// Cache key (hex) → the snapshot's layers, lowest first.
    records: BTreeMap<String, Vec<LayerRef>>,
    /// The diff_id of each of the manifest's layers, in its order.
    #[serde(default)]
    layers: Vec<String>,
}

/// The inline form, under [`INLINE_KEY`] in an image config: the layers
/// are the image's own (`rootfs.diff_ids` beside the manifest's layers).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InlineCache {
    version: u32,
    records: BTreeMap<String, Vec<LayerRef>>,
}

// ---------------------------------------------------------------- progress

/// One cache step shown as BuildKit shows its `importing cache manifest
/// from …` and `exporting cache to …` vertices: numbered lines in plain
/// and tty mode, `{"event":"cache",…}` objects in JSON.
struct Step {
    mode: progress::Mode,
    name: String,
    action: &'static str,
    target: String,
    started: Instant,
}

impl Step {
    fn start(mode: progress::Mode, action: &'static str, target: String, name: String) -> Step {
        let mode = mode.resolve();
        match mode {
            progress::Mode::Json => json_line(json!({
                "event": "cache", "action": action, "ref": target, "name": name,
                "status": "started",
            })),
            progress::Mode::Plain | progress::Mode::Tty => eprintln!("#0 {name}"),
            _ => {}
        }
        Step {
            mode,
            name,
            action,
            target,
            started: Instant::now(),
        }
    }

    fn note(&self, line: &str) {
        if matches!(self.mode, progress::Mode::Plain | progress::Mode::Tty) {
            eprintln!("#0 {line}");
        }
    }

    fn done(self, detail: Value) {
        let secs = self.started.elapsed().as_secs_f64();
        match self.mode {
            progress::Mode::Json => json_line(json!({
                "event": "cache", "action": self.action, "ref": self.target,
                "name": self.name, "status": "done", "elapsed": secs, "detail": detail,
            })),
            progress::Mode::Plain | progress::Mode::Tty => eprintln!("#0 DONE {secs:.1}s\n"),
            _ => {}
        }
    }

    fn failed(self, message: &str) {
        match self.mode {
            progress::Mode::Json => json_line(json!({
                "event": "cache", "action": self.action, "ref": self.target,
                "name": self.name, "status": "error", "message": message,
            })),
            progress::Mode::Plain | progress::Mode::Tty => eprintln!("#0 ERROR: {message}\n"),
            _ => {}
        }
    }
}

fn json_line(v: Value) {
    let mut out = std::io::stdout().lock();
    // Progress is best effort, as the solver's events.
    let _ = writeln!(out, "{v}");
}

fn warn(mode: progress::Mode, message: &str) {
    match mode.resolve() {
        progress::Mode::Json => json_line(json!({"event": "warning", "message": message})),
        _ => eprintln!("WARNING: {message}"),
    }
}

// ------------------------------------------------------------------ import

/// Where an imported blob can be fetched.
enum Source {
    Registry(Box<RemoteSource>),
    Local(PathBuf),
}

/// A transferable blob of an imported cache.
#[derive(Debug, Clone)]
struct Transfer {
    source: usize,
    digest: Digest,
    size: u64,
    media_type: String,
}

/// What the `--cache-from` sources offer: their records and where each
/// layer (by diff_id) can be fetched. Blobs are fetched only on a hit.
pub struct Imported {
    root: Root,
    records: HashMap<Key, Vec<LayerRef>>,
    blobs: HashMap<String, Transfer>,
    sources: Vec<Source>,
    /// Problems met during the solve (a record whose blobs could not be
    /// fetched is a miss, the step runs); printed after it.
    warnings: Mutex<Vec<String>>,
    /// For fetches outside the solve (export).
    rt: tokio::runtime::Handle,
    /// (blob digest, diff_id) pairs checked by [`Imported::check_diff_id`].
    verified: Mutex<HashSet<(String, String)>>,
}

impl Imported {
    fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }

    /// Prints what went wrong during the solve.
    pub fn report(&self, mode: progress::Mode) {
        let warnings =
            std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()));
        for w in warnings {
            warn(mode, &w);
        }
    }

    /// The record's snapshot with every blob in the local store: what the
    /// store lacks is fetched from the source that offers its diff_id, and
    /// a compressed transfer of a plain layer is decompressed (verified
    /// against the diff_id) so the build goes on with the same blobs, and
    /// so the same image ID, as the build that exported the cache.
    async fn materialize(&self, layers: &[LayerRef]) -> Result<Snapshot, String> {
        let blobs = self.root.blobs();
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let digest: Digest = l
                .digest
                .parse()
                .map_err(|_| format!("bad digest {:?} in the cache", l.digest))?;
            if blobs.has(&digest) {
                out.push(l.clone());
                continue;
            }
            let t = self
                .blobs
                .get(&l.diff_id)
                .ok_or_else(|| format!("the cache has no blob for layer {}", l.diff_id))?;
            self.fetch(t).await?;
            if t.digest == digest {
                out.push(l.clone());
            } else if l.digest == l.diff_id {
                let (root, from, want) = (self.root.clone(), t.clone(), digest.clone());
                tokio::task::spawn_blocking(move || decompress_into(&root, &from, &want))
                    .await
                    .map_err(|e| e.to_string())??;
                out.push(l.clone());
            } else {
                out.push(LayerRef {
                    diff_id: l.diff_id.clone(),
                    digest: t.digest.to_string(),
                    size: t.size,
                    media_type: t.media_type.clone(),
                });
            }
        }
        for l in &out {
            self.check_diff_id(l).await?;
        }
        Ok(Snapshot {
            layers: out,
            context: None,
        })
    }

    /// Makes sure a compressed layer of an imported record is what its
    /// diff_id says: layer directories are unpacked and shared under the
    /// diff_id, so a wrong claim would hand other builds the wrong files.
    /// Plain blobs are their diff_id (the store verifies them); a pair
    /// kiln's own compression memo holds, or one checked before in this
    /// build, is not hashed again.
    async fn check_diff_id(&self, l: &LayerRef) -> Result<(), String> {
        if l.digest == l.diff_id {
            return Ok(());
        }
        let pair = (l.digest.clone(), l.diff_id.clone());
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pair)
        {
            return Ok(());
        }
        let digest: Digest = l
            .digest
            .parse()
            .map_err(|_| format!("bad digest {:?}", l.digest))?;
        let claimed: Digest = l
            .diff_id
            .parse()
            .map_err(|_| format!("bad diff_id {:?}", l.diff_id))?;
        let memo = [Compression::Gzip, Compression::Zstd]
            .into_iter()
            .any(|c| compress::remembered(&self.root, &claimed, c).as_ref() == Some(&digest));
        if !memo {
            let (root, mt) = (self.root.clone(), l.media_type.clone());
            let actual = tokio::task::spawn_blocking(move || diff_id_of(&root, &digest, &mt))
                .await
                .map_err(|e| e.to_string())??;
            if actual != claimed {
                return Err(format!(
                    "layer {} unpacks to {actual}, not the diff_id {claimed} the cache claims",
                    l.digest
                ));
            }
        }
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pair);
        Ok(())
    }

    async fn fetch(&self, t: &Transfer) -> Result<(), String> {
        if self.root.blobs().has(&t.digest) {
            return Ok(());
        }
        match self.sources.get(t.source) {
            Some(Source::Registry(src)) => src
                .blob(&self.root, &t.digest, t.size, &t.media_type)
                .await
                .map_err(|e| e.to_string()),
            Some(Source::Local(dir)) => {
                let (root, path, t2) = (self.root.clone(), layout_blob(dir, &t.digest), t.clone());
                tokio::task::spawn_blocking(move || {
                    let mut f = fs::File::open(&path)
                        .map_err(|e| format!("opening {}: {e}", path.display()))?;
                    root.blobs()
                        .copy_from(&mut f, Some(&t2.digest), Some(t2.size))
                        .map(|_| ())
                        .map_err(|e| format!("{}: {e}", path.display()))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            None => Err("no source for the blob".into()),
        }
    }
}

/// The diff_id of a stored layer blob: the sha256 of its uncompressed tar.
fn diff_id_of(root: &Root, digest: &Digest, media_type: &str) -> Result<Digest, String> {
    use sha2::Digest as _;
    let f = root.blobs().open(digest).map_err(|e| e.to_string())?;
    let mut reader = decompressed(std::io::BufReader::new(f), media_type)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading layer {digest}: {e}")),
        }
    }
    Ok(Digest::from_sha256(hasher))
}

/// A reader of a layer blob's tar, by its media type (or its magic bytes
/// when the type names no compression).
fn decompressed<'a, R: std::io::BufRead + 'a>(
    mut r: R,
    media_type: &str,
) -> Result<Box<dyn Read + 'a>, String> {
    let c = match media::layer_compression(media_type) {
        Some(Compression::None) | None => {
            media::sniff_compression(r.fill_buf().map_err(|e| e.to_string())?)
        }
        Some(c) => c,
    };
    Ok(match c {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| e.to_string())?)
        }
        Compression::None => Box::new(r),
    })
}

/// Decompresses the stored blob `from` into the plain blob `want` (its
/// diff_id), which the store verifies.
fn decompress_into(root: &Root, from: &Transfer, want: &Digest) -> Result<(), String> {
    let f = root.blobs().open(&from.digest).map_err(|e| e.to_string())?;
    let mut reader = decompressed(std::io::BufReader::new(f), &from.media_type)?;
    root.blobs()
        .copy_from(&mut reader, Some(want), None)
        .map(|_| ())
        .map_err(|e| format!("layer {want} from {}: {e}", from.digest))
}

fn layout_blob(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Reads every `--cache-from` source's records (manifests and configs
/// only). A source that cannot be read is a warning, as in BuildKit; the
/// build goes on without it. `None` when nothing was imported.
pub fn import(
    root: &Root,
    rt: &tokio::runtime::Runtime,
    config: &RegistryConfig,
    from: &[CacheFrom],
    mode: progress::Mode,
) -> Option<Arc<Imported>> {
    if from.is_empty() {
        return None;
    }
    let mut imported = Imported {
        root: root.clone(),
        records: HashMap::new(),
        blobs: HashMap::new(),
        sources: Vec::new(),
        warnings: Mutex::new(Vec::new()),
        rt: rt.handle().clone(),
        verified: Mutex::new(HashSet::new()),
    };
    for f in from {
        let (target, name, what) = match f {
            CacheFrom::Registry(r) => (
                r.to_string(),
                format!("importing cache manifest from {r}"),
                "registry",
            ),
            CacheFrom::Local(d) => (
                d.display().to_string(),
                format!("importing cache manifest from {}", d.display()),
                "local",
            ),
        };
        let step = Step::start(mode, "import", target.clone(), name);
        let read = match f {
            CacheFrom::Registry(r) => rt.block_on(read_registry(root, config, r)),
            CacheFrom::Local(d) => {
                read_local(d).map(|(recs, blobs)| (recs, blobs, Source::Local(d.clone())))
            }
        };
        match read {
            Ok((records, layers, source)) => {
                let ix = imported.sources.len();
                let n = records.len();
                imported.sources.push(source);
                for (diff_id, (digest, size, media_type)) in layers {
                    imported.blobs.entry(diff_id).or_insert(Transfer {
                        source: ix,
                        digest,
                        size,
                        media_type,
                    });
                }
                for (k, v) in records {
                    imported.records.entry(k).or_insert(v);
                }
                step.note(&format!("{n} cache records"));
                step.done(json!({ "records": n }));
            }
            Err(e) => {
                step.failed(&e);
                warn(
                    mode,
                    &format!("failed to configure {what} cache importer: {e}"),
                );
            }
        }
    }
    (!imported.sources.is_empty()).then(|| Arc::new(imported))
}

type Records = HashMap<Key, Vec<LayerRef>>;
/// diff_id → (blob digest, size, media type) of the source.
type Layers = Vec<(String, (Digest, u64, String))>;

/// Records and layers out of a manifest and its config: a kiln cache
/// config, or an image config with inline records.
fn read_records(
    manifest: &Value,
    config_mt: &str,
    config: &[u8],
) -> Result<(Records, Layers), String> {
    let descs: Vec<(Digest, u64, String)> = manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let d: Digest = l["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "a layer of the manifest has no valid digest".to_string())?;
            Ok((
                d,
                l["size"].as_u64().unwrap_or(0),
                l["mediaType"]
                    .as_str()
                    .unwrap_or(media::OCI_LAYER)
                    .to_string(),
            ))
        })
        .collect::<Result<_, String>>()?;
    let (records, diff_ids) = if config_mt == CONFIG_MEDIA_TYPE {
        let c: CacheConfig =
            serde_json::from_slice(config).map_err(|e| format!("invalid cache config: {e}"))?;
        if c.version != FORMAT_VERSION {
            return Err(format!(
                "cache format version {} is not supported",
                c.version
            ));
        }
        (c.records, c.layers)
    } else {
        let v: Value =
            serde_json::from_slice(config).map_err(|e| format!("invalid image config: {e}"))?;
        let Some(inline) = v.get(INLINE_KEY) else {
            return Err(
                "neither a kiln cache manifest nor an image with an inline kiln cache".into(),
            );
        };
        let c: InlineCache = serde_json::from_value(inline.clone())
            .map_err(|e| format!("invalid inline cache: {e}"))?;
        if c.version != FORMAT_VERSION {
            return Err(format!(
                "cache format version {} is not supported",
                c.version
            ));
        }
        let ids = v["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (c.records, ids)
    };
    if diff_ids.len() != descs.len() {
        return Err(format!(
            "{} layers but {} diff_ids in the cache",
            descs.len(),
            diff_ids.len()
        ));
    }
    let records = records
        .into_iter()
        .filter_map(|(k, v)| Key::from_hex(&k).map(|k| (k, v)))
        .collect();
    Ok((records, diff_ids.into_iter().zip(descs).collect()))
}

async fn read_registry(
    root: &Root,
    config: &RegistryConfig,
    r: &Reference,
) -> Result<(Records, Layers, Source), String> {
    let src = RemoteSource::connect(config, r)
        .await
        .map_err(|e| e.to_string())?;
    let top = src.manifest().await.map_err(|e| e.to_string())?;
    let m = if media::is_index(&top.media_type) {
        let entry = host_entry(&top)?;
        src.manifest_by_digest(&entry)
            .await
            .map_err(|e| e.to_string())?
    } else {
        top
    };
    let doc: Value = serde_json::from_slice(&m.bytes).map_err(|e| e.to_string())?;
    let (cd, size, mt) = config_desc(&doc)?;
    src.blob(root, &cd, size, &mt)
        .await
        .map_err(|e: RegistryError| e.to_string())?;
    let bytes = root.blobs().read(&cd).map_err(|e| e.to_string())?;
    let (records, layers) = read_records(&doc, &mt, &bytes)?;
    Ok((records, layers, Source::Registry(Box::new(src))))
}

/// This machine's entry of an index (an inline cache on a multi-platform
/// image).
fn host_entry(index: &RemoteManifest) -> Result<Digest, String> {
    let doc: Value = serde_json::from_slice(&index.bytes).map_err(|e| e.to_string())?;
    let host = kiln_cache::image::Platform::host();
    doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["platform"]["os"].as_str() == Some(host.os.as_str())
                && m["platform"]["architecture"].as_str() == Some(host.architecture.as_str())
        })
        .and_then(|m| m["digest"].as_str())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "the index has no manifest for this platform".to_string())
}

fn config_desc(doc: &Value) -> Result<(Digest, u64, String), String> {
    let c = &doc["config"];
    let d: Digest = c["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "the manifest has no config".to_string())?;
    Ok((
        d,
        c["size"].as_u64().unwrap_or(0),
        c["mediaType"].as_str().unwrap_or("").to_string(),
    ))
}

/// Reads a verified blob of an OCI layout.
fn read_layout_blob(dir: &Path, d: &Digest) -> Result<Vec<u8>, String> {
    let path = layout_blob(dir, d);
    let bytes = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if Digest::of(&bytes) != *d {
        return Err(format!("{} does not match its digest", path.display()));
    }
    Ok(bytes)
}

fn read_local(dir: &Path) -> Result<(Records, Layers), String> {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path).map_err(|e| format!("reading {}: {e}", index_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", index_path.display()))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][media::ANNOTATION_REF_NAME].as_str() == Some(LOCAL_TAG))
        .or(entries.first())
        .ok_or_else(|| format!("{} lists no manifest", index_path.display()))?;
    let md: Digest = entry["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{}: bad manifest digest", index_path.display()))?;
    let doc: Value = serde_json::from_slice(&read_layout_blob(dir, &md)?)
        .map_err(|e| format!("manifest {md}: {e}"))?;
    let (cd, _, mt) = config_desc(&doc)?;
    let config = read_layout_blob(dir, &cd)?;
    read_records(&doc, &mt, &config)
}

// ---------------------------------------------------------------- executor

/// The worker, with the imported records behind its own: a local miss
/// whose key the cache has becomes a hit once that record's blobs are in
/// the store.
pub struct RemoteCached {
    pub inner: SharedWorker,
    pub imported: Arc<Imported>,
}

impl Executor for RemoteCached {
    type Op = BuildOp;
    type Output = Snapshot;
    type Error = ExecutorError;

    async fn content_key(
        &self,
        graph: &Graph<BuildOp>,
        node: NodeId,
    ) -> Result<Option<Key>, ExecutorError> {
        self.inner.content_key(graph, node).await
    }

    async fn lookup(&self, op: &BuildOp, key: Key) -> Result<Option<Snapshot>, ExecutorError> {
        if let Some(hit) = self.inner.lookup(op, key).await? {
            return Ok(Some(hit));
        }
        let Some(layers) = self.imported.records.get(&key) else {
            return Ok(None);
        };
        match self.imported.materialize(layers).await {
            Ok(snap) => {
                self.inner.0.write_record(key, &snap)?;
                Ok(Some(snap))
            }
            Err(e) => {
                self.imported
                    .warn(format!("cache record {key} not usable, step runs: {e}"));
                Ok(None)
            }
        }
    }

    async fn execute(
        &self,
        op: &BuildOp,
        key: Key,
        inputs: Vec<Snapshot>,
        progress: Progress,
    ) -> Result<Snapshot, ExecutorError> {
        self.inner.execute(op, key, inputs, progress).await
    }
}

// ------------------------------------------------------------------ export

/// The local record of `key`, if every blob it names is in the store.
fn local_record(root: &Root, key: &Key) -> Option<Vec<LayerRef>> {
    let path = crate::commands::build::buildcache_dir(root).join(format!("{}.json", key.to_hex()));
    let snap: Snapshot = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if snap.layers.is_empty() || snap.context.is_some() {
        return None;
    }
    let complete = snap.layers.iter().all(|l| {
        l.digest
            .parse::<Digest>()
            .is_ok_and(|d| root.blobs().has(&d))
    });
    complete.then_some(snap.layers)
}

/// The records to export: with `Min`, those whose layers are a prefix of
/// one of `results` (each a result's layer diff_ids). A key of the solve
/// without a local record (a step below an imported hit is never looked
/// up) takes the imported record, its blobs fetched, so a cache exported
/// from a build that imported one still holds every step the build used.
fn collect(
    root: &Root,
    keys: &[Key],
    mode: CacheMode,
    results: &[Vec<String>],
    imported: Option<&Imported>,
) -> BTreeMap<String, Vec<LayerRef>> {
    let wanted = |layers: &[LayerRef]| {
        !layers.is_empty()
            && (mode == CacheMode::Max
                || results.iter().any(|r| {
                    r.len() >= layers.len()
                        && r.iter().zip(layers.iter()).all(|(a, b)| *a == b.diff_id)
                }))
    };
    let mut out = BTreeMap::new();
    for k in keys {
        if let Some(layers) = local_record(root, k) {
            if wanted(&layers) {
                out.insert(k.to_hex(), layers);
            }
            continue;
        }
        let Some(imp) = imported else { continue };
        let Some(layers) = imp.records.get(k).filter(|l| wanted(l)) else {
            continue;
        };
        match imp.rt.block_on(imp.materialize(layers)) {
            Ok(snap) => {
                out.insert(k.to_hex(), snap.layers);
            }
            Err(e) => imp.warn(format!("cache record {k} not exported: {e}")),
        }
    }
    out
}

fn result_diff_ids(built: &[Built]) -> Vec<Vec<String>> {
    built
        .iter()
        .map(|b| b.layers.iter().map(|l| l.diff_id.clone()).collect())
        .collect()
}

/// Puts the inline cache (the records of each result's own chain) into
/// its image config when asked, and in any case drops one inherited from
/// the base image: records are only in the config when this build asks.
pub fn apply_inline(
    root: &Root,
    built: &mut [Built],
    keys: &[Key],
    inline: bool,
    imported: Option<&Imported>,
) {
    for b in built.iter_mut() {
        if let Some(Value::Object(base)) = b.meta.base.as_mut() {
            base.remove(INLINE_KEY);
        }
        if !inline {
            continue;
        }
        let records = collect(
            root,
            keys,
            CacheMode::Min,
            &result_diff_ids(std::slice::from_ref(b)),
            imported,
        );
        let value = json!(InlineCache {
            version: FORMAT_VERSION,
            records,
        });
        match b.meta.base.as_mut() {
            Some(Value::Object(base)) => {
                base.insert(INLINE_KEY.into(), value);
            }
            _ => {
                let mut m = serde_json::Map::new();
                m.insert(INLINE_KEY.into(), value);
                b.meta.base = Some(Value::Object(m));
            }
        }
    }
}

/// Writes the cache manifest for `records` into the store: config, then
/// manifest (layers: each distinct blob once, as stored). Returns its
/// descriptor and how many layers it names.
fn write_manifest(
    root: &Root,
    records: BTreeMap<String, Vec<LayerRef>>,
) -> Result<(oci_spec::image::Descriptor, usize)> {
    let mut seen = HashSet::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in records.values().flatten() {
        if seen.insert(l.diff_id.clone()) {
            diff_ids.push(l.diff_id.clone());
            let mt = match l.media_type.as_str() {
                media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
                media::DOCKER_LAYER => media::OCI_LAYER,
                other => other,
            };
            layers.push(json!({"mediaType": mt, "digest": l.digest, "size": l.size}));
        }
    }
    let config = CacheConfig {
        version: FORMAT_VERSION,
        records,
        layers: diff_ids,
    };
    let config_bytes = serde_json::to_vec(&config).into_diagnostic()?;
    let config_digest = root.blobs().put(&config_bytes).into_diagnostic()?;
    let n = layers.len();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).into_diagnostic()?;
    let digest = root.blobs().put(&bytes).into_diagnostic()?;
    let desc: oci_spec::image::Descriptor = serde_json::from_value(json!({
        "mediaType": media::OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": bytes.len(),
    }))
    .into_diagnostic()?;
    Ok((desc, n))
}

/// Counts what a push did with each blob.
#[derive(Default)]
struct Counts {
    uploaded: AtomicUsize,
    existed: AtomicUsize,
    mounted: AtomicUsize,
}

impl registry::Progress for Counts {
    fn start(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str, outcome: Outcome) {
        let c = match outcome {
            Outcome::Transferred => &self.uploaded,
            Outcome::Exists => &self.existed,
            Outcome::Mounted => &self.mounted,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn message(&self, _: &str) {}
}

/// What the export needs of the build.
pub struct Solution<'a> {
    /// The cache key of every node of the solve.
    pub keys: &'a [Key],
    /// The results.
    pub built: &'a [Built],
    /// The `--cache-from` records, for steps the build used without looking
    /// them up.
    pub imported: Option<&'a Imported>,
}

/// Exports the cache to every `--cache-to` destination but inline (which
/// [`apply_inline`] already put in the image). `keys` are the solve's.
pub fn export(
    root: &Root,
    rt: &tokio::runtime::Runtime,
    config: &RegistryConfig,
    opts: &CacheOptions,
    solved: &Solution<'_>,
    mode: progress::Mode,
) -> Result<()> {
    let results = result_diff_ids(solved.built);
    let keys = solved.keys;
    for to in &opts.to {
        let (cache_mode, ignore_error, target, name) = match to {
            CacheTo::Inline => continue,
            CacheTo::Registry {
                reference,
                mode,
                ignore_error,
                ..
            } => (
                *mode,
                *ignore_error,
                reference.to_string(),
                format!("exporting cache to registry {reference}"),
            ),
            CacheTo::Local {
                dest,
                mode,
                ignore_error,
                ..
            } => (
                *mode,
                *ignore_error,
                dest.display().to_string(),
                format!("exporting cache to client directory {}", dest.display()),
            ),
        };
        let step = Step::start(mode, "export", target.clone(), name);
        let _lease = root.lease().into_diagnostic()?;
        let records = collect(root, keys, cache_mode, &results, solved.imported);
        if let Some(imp) = solved.imported {
            imp.report(mode);
        }
        let n_records = records.len();
        let done = write_manifest(root, records).and_then(|(desc, n_layers)| match to {
            CacheTo::Registry {
                reference,
                compression,
                ..
            } => {
                let counts = Arc::new(Counts::default());
                let push = PushOptions {
                    config: config.clone(),
                    compression: Conversion::to(*compression),
                    ..PushOptions::default()
                };
                rt.block_on(registry::push_descriptor(
                    root,
                    &desc,
                    reference,
                    reference,
                    &push,
                    counts.clone(),
                ))
                .map_err(|e| miette!("{e}"))?;
                let (u, e, m) = (
                    counts.uploaded.load(Ordering::Relaxed),
                    counts.existed.load(Ordering::Relaxed),
                    counts.mounted.load(Ordering::Relaxed),
                );
                step.note(&format!(
                    "{n_records} records, {n_layers} layers: {u} blobs uploaded, {e} already there, {m} mounted"
                ));
                Ok(json!({"records": n_records, "layers": n_layers,
                          "uploaded": u, "existing": e, "mounted": m}))
            }
            CacheTo::Local {
                dest, compression, ..
            } => {
                let written = write_layout(root, &desc, dest, *compression)?;
                step.note(&format!(
                    "{n_records} records, {n_layers} layers: {written} blobs written"
                ));
                Ok(json!({"records": n_records, "layers": n_layers, "written": written}))
            }
            CacheTo::Inline => Ok(Value::Null),
        });
        match done {
            Ok(detail) => step.done(detail),
            Err(e) => {
                let msg = format!("failed to export cache to {target}: {e}");
                step.failed(&msg);
                if ignore_error {
                    warn(mode, &msg);
                } else {
                    return Err(miette!("{msg}"));
                }
            }
        }
    }
    Ok(())
}

/// Writes the cache as an OCI layout in `dest`: blobs first (each renamed
/// into place when complete), then `index.json` replaced atomically, so a
/// crash leaves either the old index or the new one, never half of one.
/// Returns how many blobs were written (those already there are kept).
fn write_layout(
    root: &Root,
    desc: &oci_spec::image::Descriptor,
    dest: &Path,
    compression: Compression,
) -> Result<usize> {
    let converted = compress::convert(root, desc, &Conversion::to(compression))
        .into_diagnostic()
        .wrap_err("compressing the cache's layers")?;
    let top = converted.descriptor;
    let md: Digest = top.digest().to_string().parse().into_diagnostic()?;
    let manifest_bytes = root.blobs().read(&md).into_diagnostic()?;
    let doc: Value = serde_json::from_slice(&manifest_bytes).into_diagnostic()?;
    let mut wanted: Vec<Digest> = Vec::new();
    for d in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten()) {
        let d: Digest = d["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| miette!("cache manifest {md}: bad blob digest"))?;
        wanted.push(d);
    }
    wanted.push(md.clone());
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", blob_dir.display()))?;
    let mut written = 0;
    for d in &wanted {
        let path = layout_blob(dest, d);
        let size = root.blobs().size(d).into_diagnostic()?;
        if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            continue;
        }
        let mut src = root.blobs().open(d).into_diagnostic()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&blob_dir).into_diagnostic()?;
        std::io::copy(&mut src, &mut tmp)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing blob {d} to {}", blob_dir.display()))?;
        tmp.as_file().sync_all().into_diagnostic()?;
        tmp.persist(&path)
            .map_err(|e| miette!("writing {}: {}", path.display(), e.error))?;
        written += 1;
    }
    write_atomic(
        dest,
        "oci-layout",
        json!({"imageLayoutVersion": media::OCI_LAYOUT_VERSION})
            .to_string()
            .as_bytes(),
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": md.to_string(),
            "size": manifest_bytes.len(),
            "annotations": {media::ANNOTATION_REF_NAME: LOCAL_TAG},
        }],
    });
    write_atomic(dest, "index.json", index.to_string().as_bytes())?;
    Ok(written)
}

/// Replaces `dir/name` with `bytes` by rename of a synced temp file.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).into_diagnostic()?;
    tmp.write_all(bytes).into_diagnostic()?;
    tmp.as_file().sync_all().into_diagnostic()?;
    let path = dir.join(name);
    tmp.persist(&path)
        .map_err(|e| miette!("writing {}: {}", path.display(), e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        // Best effort: the rename is atomic either way.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_buildx() {
        let args = BTreeMap::new();
        let o = CacheOptions::parse(
            &["type=registry,ref=reg.lan/c:1,mode=max,compression=zstd".into()],
            &["reg.lan/c:1".into(), "type=local,src=/tmp/c".into()],
            &args,
        )
        .unwrap();
        assert!(matches!(
            &o.to[0],
            CacheTo::Registry {
                mode: CacheMode::Max,
                compression: Compression::Zstd,
                ..
            }
        ));
        assert_eq!(o.from[1], CacheFrom::Local(PathBuf::from("/tmp/c")));
        assert!(matches!(&o.from[0], CacheFrom::Registry(_)));
        let e = parse_to("type=gha,url=x").unwrap_err().to_string();
        assert!(e.contains("\"gha\""), "{e}");
        let e = parse_to("type=local,dest=/x,colour=red")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = parse_from("type=local,dest=/x").unwrap_err().to_string();
        assert!(e.contains("dest"), "{e}");
        let mut args = BTreeMap::new();
        args.insert("BUILDKIT_INLINE_CACHE".to_string(), "1".to_string());
        assert!(CacheOptions::parse(&[], &[], &args).unwrap().inline());
    }
}
