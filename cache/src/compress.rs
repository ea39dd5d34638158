//! Layer compression on the way out: push and archive export.
//!
//! kiln stores the layers it builds as plain tars (blob digest == diff_id),
//! which keeps builds fast, but docker and BuildKit push and export gzip
//! layers, and registries and users expect them. [`convert`] turns a stored
//! image (manifest or index, OCI or docker schema 2) into one whose plain
//! layers are compressed blobs of the same store: the config, and so the
//! image ID, is untouched; a layer that is already compressed is left as it
//! is (never decompressed, never recompressed) unless
//! [`Conversion::force`] asks for a different compression.
//!
//! Levels: gzip [`GZIP_LEVEL`] (6, Go's `gzip.DefaultCompression`, which
//! docker's and containerd's `CompressStream` and BuildKit's exporter use)
//! and zstd [`ZSTD_LEVEL`] (3, zstd's default, BuildKit's `SpeedDefault`).
//! gzip headers carry no mtime and no file name, and gzip is written in
//! parallel blocks ([`crate::pgzip`]) whose bytes do not depend on the
//! number of threads, so a layer always compresses to the same digest.
//!
//! [`Conversion::level`] (`compression-level=`) replaces the default level
//! for the layers compressed now; layers already compressed are kept as
//! they are, as BuildKit keeps them.
//!
//! Each conversion is remembered in `$KILN_ROOT/compressed/<gzip|zstd>/
//! <diff_id hex>` (the compressed digest; `<gzip|zstd>-<level>` for a level
//! other than the default, so one level is never served another's blob),
//! so pushing or saving the image
//! again reuses the blob instead of compressing anew. Neither the converted
//! blobs nor the converted manifests are named: garbage collection may
//! delete them (and [`forget_missing`] drops the memo entries it orphaned);
//! the next conversion then simply compresses again. Callers hold a
//! [`Root::lease`] from conversion until they are done with the result, so
//! a concurrent prune cannot take the blobs from under them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use oci_spec::image::Descriptor;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::blobs::{create_locked_temp, sync_dir, BlobStore};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image;
use crate::media;
use crate::root::Root;

pub use crate::media::Compression;

/// gzip level: Go's `gzip.DefaultCompression`, as docker, containerd and
/// BuildKit compress layers.
pub const GZIP_LEVEL: u32 = 6;

/// zstd level: zstd's own default, as BuildKit's `zstd` compression.
pub const ZSTD_LEVEL: i32 = 3;

/// Indexes nest at most this deep (real ones nest once at most).
const MAX_DEPTH: usize = 8;

/// Annotation with which BuildKit's attestation manifests name the image
/// manifest they describe; kept pointing at the converted manifest.
const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// What layers should look like after [`convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    /// The target compression of plain layers.
    pub compression: Compression,
    /// Also convert layers already compressed another way (buildx's
    /// `force-compression=true`): decompress them and compress them as
    /// `compression` says (or store them plain for `uncompressed`).
    pub force: bool,
    /// The compression level (`compression-level=`); `None` is the
    /// default ([`GZIP_LEVEL`], [`ZSTD_LEVEL`]). Callers check the range
    /// (gzip 0..=9, zstd 0..=22); out-of-range values are clamped.
    pub level: Option<i32>,
}

impl Default for Conversion {
    /// gzip, not forced: what docker pushes and exports.
    fn default() -> Self {
        Conversion {
            compression: Compression::Gzip,
            force: false,
            level: None,
        }
    }
}

impl Conversion {
    /// A conversion to `compression`, not forced.
    pub fn to(compression: Compression) -> Conversion {
        Conversion {
            compression,
            force: false,
            level: None,
        }
    }

    /// The level asked for when it differs from the compression's default;
    /// `None` for the default level (and for `uncompressed`), so the
    /// default keeps its memo and its digests.
    fn custom_level(&self) -> Option<i32> {
        let default = match self.compression {
            Compression::Gzip => GZIP_LEVEL as i32,
            Compression::Zstd => ZSTD_LEVEL,
            Compression::None => return None,
        };
        self.level.filter(|l| *l != default)
    }
}

/// A compression name that is not `gzip`, `zstd` or `uncompressed`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unsupported compression {0:?} (gzip, zstd, uncompressed)")]
pub struct UnknownCompression(pub String);

/// Parses a compression as buildx and `kiln push --compression` spell it.
pub fn parse_compression(s: &str) -> std::result::Result<Compression, UnknownCompression> {
    match s.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "uncompressed" | "none" => Ok(Compression::None),
        _ => Err(UnknownCompression(s.to_string())),
    }
}

/// The name of a compression, as the memo folders and messages spell it.
pub fn name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// One layer [`convert`] replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChange {
    /// The stored blob the manifest named.
    pub from: Digest,
    /// The blob that replaces it.
    pub to: Digest,
    /// Its compression.
    pub compression: Compression,
    /// True when a remembered (or already present) blob was used and
    /// nothing was compressed.
    pub reused: bool,
}

/// What [`convert`] made.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The converted manifest or index (the input itself when nothing
    /// needed converting), with the input descriptor's platform and
    /// annotations.
    pub descriptor: Descriptor,
    /// Every layer replaced, in manifest order (each blob once).
    pub layers: Vec<LayerChange>,
}

/// Converts the image `d` (manifest or index) of the store so that its
/// layers are compressed as `conv` says; see the module documentation.
/// Hold a [`Root::lease`] until done with the result.
pub fn convert(root: &Root, d: &Descriptor, conv: &Conversion) -> Result<Converted> {
    let mut changes = Vec::new();
    let mut seen = HashMap::new();
    let out = convert_node(root, d, conv, 0, &mut changes, &mut seen)?;
    Ok(Converted {
        descriptor: out.unwrap_or_else(|| d.clone()),
        layers: changes,
    })
}

/// The compressed blob remembered for the layer `diff_id`, if the memo has
/// one and the blob is still in the store.
pub fn remembered(root: &Root, diff_id: &Digest, compression: Compression) -> Option<Digest> {
    remembered_at(root, diff_id, compression, None)
}

/// [`remembered`] at a level other than the default (`None`: default).
fn remembered_at(
    root: &Root,
    diff_id: &Digest,
    compression: Compression,
    level: Option<i32>,
) -> Option<Digest> {
    if compression == Compression::None {
        return root.blobs().has(diff_id).then(|| diff_id.clone());
    }
    let text = fs::read_to_string(memo_path(root, compression, level, diff_id)).ok()?;
    let d: Digest = text.trim().parse().ok()?;
    root.blobs().has(&d).then_some(d)
}

/// Every compressed form of the plain layer `diff_id` the memo knows and the
/// store holds: a push may mount those from another repository that
/// received them earlier.
pub fn variants(root: &Root, diff_id: &Digest) -> Vec<Digest> {
    [Compression::Gzip, Compression::Zstd]
        .into_iter()
        .filter_map(|c| remembered(root, diff_id, c))
        .collect()
}

/// Removes memo entries whose compressed blob is no longer in the store
/// (garbage collection deleted it); returns how many. Harmless at any time:
/// a missing entry only means compressing again.
pub fn forget_missing(root: &Root) -> Result<usize> {
    let mut removed = 0;
    let top = root.compressed_dir();
    // Every memo directory: each compression, at each level used.
    let dirs: Vec<PathBuf> = match fs::read_dir(&top) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&top, e)),
    };
    for dir in dirs {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let live = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<Digest>().ok())
                .is_some_and(|d| root.blobs().has(&d));
            if !live && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The memo of compression `c` at `level` (`None`: the default level,
/// whose directory predates levels and stays as it was).
fn memo_dir(root: &Root, c: Compression, level: Option<i32>) -> PathBuf {
    match level {
        None => root.compressed_dir().join(name(c)),
        Some(l) => root.compressed_dir().join(format!("{}-{l}", name(c))),
    }
}

fn memo_path(root: &Root, c: Compression, level: Option<i32>, diff_id: &Digest) -> PathBuf {
    memo_dir(root, c, level).join(diff_id.hex())
}

/// Writes a memo entry atomically (temp file, fsync, rename).
fn remember(
    root: &Root,
    c: Compression,
    level: Option<i32>,
    diff_id: &Digest,
    digest: &Digest,
) -> Result<()> {
    let dir = memo_dir(root, c, level);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let dest = memo_path(root, c, level, diff_id);
    let (mut file, tmp) = create_locked_temp(&root.tmp_dir())?;
    let result = (|| {
        file.write_all(format!("{digest}\n").as_bytes())
            .map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The media type a document is filed under: its descriptor's when that
/// is a manifest or index type, else its own field, else its shape.
fn doc_type(d: &Descriptor, doc: &Value) -> String {
    let mt = image::media_type(d);
    if media::is_index(&mt) || media::is_manifest(&mt) {
        return mt;
    }
    if let Some(own) = doc.get("mediaType").and_then(Value::as_str) {
        if media::is_index(own) || media::is_manifest(own) {
            return own.to_string();
        }
    }
    if doc.get("manifests").is_some() {
        media::OCI_INDEX.to_string()
    } else {
        media::OCI_MANIFEST.to_string()
    }
}

fn read_doc(blobs: &BlobStore, digest: &Digest, what: &str) -> Result<Value> {
    image::read_json(blobs, digest, what)
}

fn invalid(what: &Digest, detail: impl Into<String>) -> Error {
    Error::InvalidImage {
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// Converts the node behind `d`; `None` when it needs no change.
fn convert_node(
    root: &Root,
    d: &Descriptor,
    conv: &Conversion,
    depth: usize,
    changes: &mut Vec<LayerChange>,
    seen: &mut HashMap<Digest, Option<Descriptor>>,
) -> Result<Option<Descriptor>> {
    let digest = image::digest_of(d)?;
    if let Some(done) = seen.get(&digest) {
        return Ok(done.clone());
    }
    if depth > MAX_DEPTH {
        return Err(invalid(&digest, "indexes nested too deep"));
    }
    let doc = read_doc(root.blobs(), &digest, "manifest")?;
    let mt = doc_type(d, &doc);
    let new = if media::is_index(&mt) {
        convert_index(root, doc, conv, depth, changes, seen)?
    } else {
        convert_manifest(root, &digest, doc, &mt, conv, changes)?
    };
    let out = match new {
        None => None,
        Some((bytes, new_mt)) => {
            let new_digest = root.blobs().put(&bytes)?;
            let mut v = serde_json::to_value(d).map_err(|e| Error::json("descriptor", e))?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("mediaType".into(), Value::from(new_mt));
                obj.insert("digest".into(), Value::from(new_digest.to_string()));
                obj.insert("size".into(), Value::from(bytes.len() as u64));
            }
            Some(serde_json::from_value(v).map_err(|e| Error::json("descriptor", e))?)
        }
    };
    seen.insert(digest, out.clone());
    Ok(out)
}

fn convert_index(
    root: &Root,
    mut doc: Value,
    conv: &Conversion,
    depth: usize,
    changes: &mut Vec<LayerChange>,
    seen: &mut HashMap<Digest, Option<Descriptor>>,
) -> Result<Option<(Vec<u8>, String)>> {
    let own_type = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(media::OCI_INDEX)
        .to_string();
    let entries = doc
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(entries.len());
    let mut any_oci_child = false;
    for entry in entries {
        let child: Descriptor =
            serde_json::from_value(entry.clone()).map_err(|e| Error::json("index entry", e))?;
        let child_digest = image::digest_of(&child)?;
        let child_mt = image::media_type(&child);
        // Platforms never pulled (absent) stay as they are; so does
        // anything that is neither a manifest nor an index.
        let convertible = (media::is_index(&child_mt) || media::is_manifest(&child_mt))
            && root.blobs().has(&child_digest);
        let new = if convertible {
            convert_node(root, &child, conv, depth + 1, changes, seen)?
        } else {
            None
        };
        match new {
            Some(n) => {
                let nmt = image::media_type(&n);
                any_oci_child |= nmt == media::OCI_MANIFEST || nmt == media::OCI_INDEX;
                renamed.insert(child_digest.to_string(), n.digest().to_string());
                out.push(serde_json::to_value(&n).map_err(|e| Error::json("descriptor", e))?);
            }
            None => out.push(entry),
        }
    }
    if renamed.is_empty() {
        return Ok(None);
    }
    // Attestations name the manifest they describe: follow the rename.
    for entry in &mut out {
        if let Some(ann) = entry.get_mut("annotations").and_then(Value::as_object_mut) {
            if let Some(new) = ann
                .get(ANNOTATION_REFERENCE_DIGEST)
                .and_then(Value::as_str)
                .and_then(|old| renamed.get(old))
                .cloned()
            {
                ann.insert(ANNOTATION_REFERENCE_DIGEST.into(), Value::from(new));
            }
        }
    }
    let mut new_type = own_type;
    if new_type == media::DOCKER_MANIFEST_LIST && any_oci_child {
        // A manifest became OCI (zstd layers): so does the list.
        new_type = media::OCI_INDEX.to_string();
    }
    if let Some(obj) = doc.as_object_mut() {
        if obj.contains_key("mediaType") || new_type != media::OCI_INDEX {
            obj.insert("mediaType".into(), Value::from(new_type.clone()));
        }
        obj.insert("manifests".into(), Value::Array(out));
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::json("index", e))?;
    Ok(Some((bytes, new_type)))
}

/// A layer to rewrite.
#[derive(Debug, Clone)]
struct Job {
    source: Digest,
    from: Compression,
    diff_id: Digest,
}

/// True for layers that must travel as they are (foreign / non-
/// distributable layers: registries do not even hold them).
fn is_foreign(mt: &str) -> bool {
    mt.contains("foreign") || mt.contains("nondistributable")
}

fn layer_type(docker: bool, c: Compression) -> &'static str {
    match (docker, c) {
        (true, Compression::None) => media::DOCKER_LAYER,
        (true, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
        (_, Compression::None) => media::OCI_LAYER,
        (_, Compression::Gzip) => media::OCI_LAYER_GZIP,
        (_, Compression::Zstd) => media::OCI_LAYER_ZSTD,
    }
}

/// The OCI spelling of a docker media type (for a docker manifest that
/// becomes OCI because it gains zstd layers).
fn oci_type(mt: &str) -> &str {
    match mt {
        media::DOCKER_CONFIG => media::OCI_CONFIG,
        media::DOCKER_LAYER => media::OCI_LAYER,
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_FOREIGN_LAYER_GZIP => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => media::OCI_LAYER_ZSTD,
        other => other,
    }
}

fn convert_manifest(
    root: &Root,
    digest: &Digest,
    mut doc: Value,
    mt: &str,
    conv: &Conversion,
    changes: &mut Vec<LayerChange>,
) -> Result<Option<(Vec<u8>, String)>> {
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let target = conv.compression;
    // Which layers change; the config's diff_ids are needed only to
    // recompress already-compressed layers.
    let mut diff_ids: Option<Vec<Digest>> = None;
    let mut jobs: Vec<Job> = Vec::new();
    let mut job_of: Vec<Option<usize>> = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let lmt = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
        let from = match media::layer_compression(lmt) {
            Some(c) if !is_foreign(lmt) => c,
            _ => {
                job_of.push(None);
                continue;
            }
        };
        if from == target || (from != Compression::None && !conv.force) {
            job_of.push(None);
            continue;
        }
        let source: Digest = l
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(digest, format!("layer {i} has no digest")))?
            .parse()?;
        let diff_id = if from == Compression::None {
            source.clone()
        } else {
            if diff_ids.is_none() {
                diff_ids = Some(config_diff_ids(root, digest, &doc)?);
            }
            diff_ids
                .as_ref()
                .and_then(|ids| ids.get(i))
                .cloned()
                .ok_or_else(|| {
                    invalid(digest, format!("the config has no diff_id for layer {i}"))
                })?
        };
        let k = match jobs.iter().position(|j| j.source == source) {
            Some(k) => k,
            None => {
                jobs.push(Job {
                    source,
                    from,
                    diff_id,
                });
                jobs.len() - 1
            }
        };
        job_of.push(Some(k));
    }
    if jobs.is_empty() {
        return Ok(None);
    }

    let level = conv.custom_level();
    let results = run_parallel(&jobs, |job| rewrite_layer(root, job, target, level))?;

    let docker = mt == media::DOCKER_MANIFEST;
    // zstd has no docker schema 2 type: such a manifest becomes OCI, as
    // BuildKit does (config and other layers renamed, bytes unchanged).
    let to_oci = docker && target == Compression::Zstd;
    let new_mt = if to_oci { media::OCI_MANIFEST } else { mt };
    let mut new_layers = Vec::with_capacity(layers.len());
    for (l, job) in layers.into_iter().zip(job_of) {
        let mut l = l;
        if let Some(obj) = l.as_object_mut() {
            match job {
                Some(k) => {
                    let (to, size, _) = &results[k];
                    obj.insert(
                        "mediaType".into(),
                        Value::from(layer_type(docker && !to_oci, target)),
                    );
                    obj.insert("digest".into(), Value::from(to.to_string()));
                    obj.insert("size".into(), Value::from(*size));
                }
                None if to_oci => {
                    let lmt = obj
                        .get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    obj.insert("mediaType".into(), Value::from(oci_type(&lmt)));
                }
                None => {}
            }
        }
        new_layers.push(l);
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("layers".into(), Value::Array(new_layers));
        if to_oci {
            obj.insert("mediaType".into(), Value::from(media::OCI_MANIFEST));
            if let Some(cfg) = obj.get_mut("config").and_then(Value::as_object_mut) {
                let cmt = cfg
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                cfg.insert("mediaType".into(), Value::from(oci_type(&cmt)));
            }
        }
    }
    for (job, (to, _, reused)) in jobs.iter().zip(&results) {
        changes.push(LayerChange {
            from: job.source.clone(),
            to: to.clone(),
            compression: target,
            reused: *reused,
        });
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::json("manifest", e))?;
    Ok(Some((bytes, new_mt.to_string())))
}

fn config_diff_ids(root: &Root, manifest: &Digest, doc: &Value) -> Result<Vec<Digest>> {
    let cfg: Digest = doc
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(manifest, "no config"))?
        .parse()?;
    let config = read_doc(root.blobs(), &cfg, "config")?;
    config
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(&cfg, "config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| invalid(&cfg, "a diff_id is not a string"))?
                .parse()
        })
        .collect()
}

/// Runs `f` over `items` on up to as many threads as there are cores,
/// stopping early after a failure; results in input order.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(items.len()).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    break;
                };
                let r = f(item);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(items.len());
    let mut first_err = None;
    for slot in slots {
        match slot {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.len() == items.len() => Ok(out),
        None => Err(Error::io(
            "<compression>",
            io::Error::other("a compression worker stopped early"),
        )),
    }
}

/// Passes reads through while hashing them, to check the decompressed
/// content against its diff_id.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Copies in large chunks (compressors work best on big writes).
fn pump(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

/// Produces (or finds) the `target` form of one layer: its digest, size,
/// and whether it was reused rather than compressed now. `level` is a
/// non-default level (`None`: the default).
fn rewrite_layer(
    root: &Root,
    job: &Job,
    target: Compression,
    level: Option<i32>,
) -> Result<(Digest, u64, bool)> {
    let blobs = root.blobs();
    if let Some(d) = remembered_at(root, &job.diff_id, target, level) {
        let size = blobs.size(&d)?;
        return Ok((d, size, true));
    }
    let src_path = blobs.path(&job.source);
    let ioe = |e: io::Error| Error::io(&src_path, e);
    let file = BufReader::with_capacity(256 * 1024, blobs.open(&job.source)?);
    let decoded: Box<dyn Read> = match job.from {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(file).map_err(ioe)?),
    };
    let mut input = Hashing {
        inner: decoded,
        hasher: Sha256::new(),
    };
    // Uncompressed output is the diff itself: the store checks it.
    let expected = (target == Compression::None).then_some(&job.diff_id);
    let mut w = blobs.writer(expected, None)?;
    let gzip_level = level.map_or(GZIP_LEVEL, |l| {
        u32::try_from(l.clamp(0, 9)).unwrap_or(GZIP_LEVEL)
    });
    let zstd_level = level.map_or(ZSTD_LEVEL, |l| l.clamp(0, 22));
    match target {
        Compression::None => pump(&mut input, &mut w).map_err(ioe)?,
        Compression::Gzip => {
            // Parallel blocks (pigz's format): deterministic, one member.
            let mut enc = crate::pgzip::ParGzEncoder::new(w, gzip_level);
            pump(&mut input, &mut enc).map_err(ioe)?;
            w = enc.finish().map_err(ioe)?;
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(w, zstd_level).map_err(ioe)?;
            pump(&mut input, &mut enc).map_err(ioe)?;
            w = enc.finish().map_err(ioe)?;
        }
    }
    let got = Digest::from_sha256(input.hasher);
    if got != job.diff_id {
        return Err(Error::DigestMismatch {
            expected: format!("diff_id {} of layer {}", job.diff_id, job.source),
            actual: got.to_string(),
        });
    }
    let (digest, size) = w.commit()?;
    if target != Compression::None {
        remember(root, target, level, &job.diff_id, &digest)?;
    }
    Ok((digest, size, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(parse_compression(name(c)).ok(), Some(c));
        }
        assert!(parse_compression("estargz").is_err());
        assert_eq!(Conversion::default().compression, Compression::Gzip);
    }

    #[test]
    fn layer_types() {
        assert_eq!(
            layer_type(true, Compression::Gzip),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(layer_type(false, Compression::Gzip), media::OCI_LAYER_GZIP);
        assert_eq!(layer_type(false, Compression::Zstd), media::OCI_LAYER_ZSTD);
        assert_eq!(layer_type(false, Compression::None), media::OCI_LAYER);
    }
}
