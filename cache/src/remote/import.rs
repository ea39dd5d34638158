//! Reading `--cache-from` sources, and fetching a record's blobs when the
//! build uses it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;

use super::manifest::Blob;
use super::{layout, object, registry, CacheFrom, Error, Event, LayerRef, Report, StepInfo};
use crate::compress::{self, Compression};
use crate::registry::{RegistryConfig, RemoteSource};
use crate::{media, Digest, Reference, Root};

/// Where an imported blob can be fetched.
enum Source {
    Registry(Box<RemoteSource>),
    Local(PathBuf),
    Object(Box<object::Client>),
}

/// A transferable blob of an imported cache.
#[derive(Debug, Clone)]
struct Transfer {
    source: usize,
    blob: Blob,
}

/// What the `--cache-from` sources offer: their records and where each
/// layer (by diff_id) can be fetched. Blobs are fetched only on a hit.
pub struct Imported {
    root: Root,
    records: HashMap<String, Vec<LayerRef>>,
    blobs: HashMap<Digest, Transfer>,
    sources: Vec<Source>,
    /// Problems met during the solve (a record whose blobs could not be
    /// fetched is a miss, the step runs); handed out after it.
    warnings: Mutex<Vec<String>>,
    /// For fetches outside the solve (export).
    rt: tokio::runtime::Handle,
    /// (blob digest, diff_id) pairs checked by [`Imported::check_diff_id`],
    /// by decompressing in [`Imported::materialize`], or by an export.
    verified: Mutex<HashSet<(Digest, Digest)>>,
}

impl Imported {
    /// The store blobs are fetched into.
    pub(crate) fn root(&self) -> &Root {
        &self.root
    }

    /// The imported record of the cache key `key_hex`.
    pub fn record(&self, key_hex: &str) -> Option<&[LayerRef]> {
        self.records.get(key_hex).map(Vec::as_slice)
    }

    /// Notes a problem to hand out with [`Imported::take_warnings`].
    pub fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }

    /// What went wrong since last asked.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` to completion on the runtime the import was made on (for
    /// callers outside it).
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The record's layers with every blob in the local store: what the
    /// store lacks is fetched from the source that offers its diff_id, and
    /// a compressed transfer of a plain layer is decompressed (verified
    /// against the diff_id) so the build goes on with the same blobs, and
    /// so the same image ID, as the build that exported the cache.
    pub async fn materialize(&self, layers: &[LayerRef]) -> Result<Vec<LayerRef>, Error> {
        let blobs = self.root.blobs();
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let digest = &l.digest;
            if blobs.has(digest) {
                out.push(l.clone());
                continue;
            }
            let t = self.blobs.get(&l.diff_id).ok_or_else(|| {
                Error::Format(format!("the cache has no blob for layer {}", l.diff_id))
            })?;
            self.fetch(t).await?;
            if t.blob.digest == *digest {
                out.push(l.clone());
            } else if l.digest == l.diff_id {
                let (root, from, want) = (self.root.clone(), t.blob.clone(), digest.clone());
                tokio::task::spawn_blocking(move || decompress_into(&root, &from, &want))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))??;
                // The store checked the decompressed bytes against the
                // diff_id: an export may name the compressed blob for it.
                self.mark_verified(&t.blob.digest, digest);
                out.push(l.clone());
            } else {
                out.push(LayerRef {
                    diff_id: l.diff_id.clone(),
                    digest: t.blob.digest.clone(),
                    size: t.blob.size,
                    media_type: t.blob.media_type.clone(),
                });
            }
        }
        for l in &out {
            self.check_diff_id(l).await?;
        }
        Ok(out)
    }

    /// Makes sure a compressed layer of an imported record is what its
    /// diff_id says: layer directories are unpacked and shared under the
    /// diff_id, so a wrong claim would hand other builds the wrong files.
    /// Plain blobs are their diff_id (the store verifies them); a pair
    /// kiln's own compression memo holds, or one checked before in this
    /// build, is not hashed again.
    async fn check_diff_id(&self, l: &LayerRef) -> Result<(), Error> {
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
        let (digest, claimed) = (l.digest.clone(), l.diff_id.clone());
        let memo = [Compression::Gzip, Compression::Zstd]
            .into_iter()
            .any(|c| compress::remembered(&self.root, &claimed, c).as_ref() == Some(&digest));
        if !memo {
            let (root, mt) = (self.root.clone(), l.media_type.clone());
            let actual = tokio::task::spawn_blocking(move || diff_id_of(&root, &digest, &mt))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
            if actual != claimed {
                return Err(Error::Format(format!(
                    "layer {} unpacks to {actual}, not the diff_id {claimed} the cache claims",
                    l.digest
                )));
            }
        }
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pair);
        Ok(())
    }

    /// The compressed blob this import offers for the plain layer
    /// `diff_id`, when it is compressed as `compression`: a cache export to
    /// that compression names it instead of compressing the layer again,
    /// as BuildKit keeps a layer's compressed blob with the layer.
    pub(crate) fn compressed_blob(
        &self,
        diff_id: &Digest,
        compression: Compression,
    ) -> Option<Blob> {
        if compression == Compression::None {
            return None;
        }
        let t = self.blobs.get(diff_id)?;
        (t.blob.digest != *diff_id
            && media::layer_compression(&t.blob.media_type) == Some(compression))
        .then(|| t.blob.clone())
    }

    /// The registry reference whose cache offers the layer `diff_id`, when
    /// it came from a registry: an export to another repository of the same
    /// registry can mount the blob from there.
    pub(crate) fn registry_source(&self, diff_id: &Digest) -> Option<&Reference> {
        match self.sources.get(self.blobs.get(diff_id)?.source)? {
            Source::Registry(src) => Some(src.reference()),
            _ => None,
        }
    }

    /// Whether the blob `digest` was checked in this build to decompress
    /// to `diff_id`.
    pub(crate) fn is_verified(&self, digest: &Digest, diff_id: &Digest) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(digest.clone(), diff_id.clone()))
    }

    /// Notes that the blob `digest` decompresses to `diff_id`.
    pub(crate) fn mark_verified(&self, digest: &Digest, diff_id: &Digest) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((digest.clone(), diff_id.clone()));
    }

    async fn fetch(&self, t: &Transfer) -> Result<(), Error> {
        let b = &t.blob;
        if self.root.blobs().has(&b.digest) {
            return Ok(());
        }
        match self.sources.get(t.source) {
            Some(Source::Registry(src)) => {
                src.blob(&self.root, &b.digest, b.size, &b.media_type)
                    .await?;
                Ok(())
            }
            Some(Source::Local(dir)) => {
                let (root, path, b) = (
                    self.root.clone(),
                    layout::blob_path(dir, &b.digest),
                    b.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let mut f = fs::File::open(&path).map_err(Error::io("opening", &path))?;
                    root.blobs()
                        .copy_from(&mut f, Some(&b.digest), Some(b.size))
                        .map(|_| ())
                        .map_err(|source| Error::Copy {
                            path,
                            source: Box::new(source),
                        })
                })
                .await
                .map_err(|e| Error::Task(e.to_string()))?
            }
            Some(Source::Object(c)) => c.fetch(&self.root, &b.digest, b.size).await,
            None => Err(Error::Format("no source for the blob".into())),
        }
    }
}

/// The diff_id of a stored layer blob: the sha256 of its uncompressed tar.
pub(crate) fn diff_id_of(root: &Root, digest: &Digest, media_type: &str) -> Result<Digest, Error> {
    use sha2::Digest as _;
    let f = root.blobs().open(digest)?;
    let mut reader = decompressed(std::io::BufReader::new(f), media_type)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Format(format!("reading layer {digest}: {e}"))),
        }
    }
    Ok(Digest::from_sha256(hasher))
}

/// A reader of a layer blob's tar, by its media type (or its magic bytes
/// when the type names no compression).
fn decompressed<'a, R: std::io::BufRead + 'a>(
    mut r: R,
    media_type: &str,
) -> Result<Box<dyn Read + 'a>, Error> {
    let c = match media::layer_compression(media_type) {
        Some(Compression::None) | None => {
            media::sniff_compression(r.fill_buf().map_err(|e| Error::Format(e.to_string()))?)
        }
        Some(c) => c,
    };
    Ok(match c {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(r)
                .map_err(|e| Error::Format(e.to_string()))?,
        ),
        Compression::None => Box::new(r),
    })
}

/// Decompresses the stored blob `from` into the plain blob `want` (its
/// diff_id), which the store verifies.
fn decompress_into(root: &Root, from: &Blob, want: &Digest) -> Result<(), Error> {
    let f = root.blobs().open(&from.digest)?;
    let mut reader = decompressed(std::io::BufReader::new(f), &from.media_type)?;
    root.blobs()
        .copy_from(&mut reader, Some(want), None)
        .map(|_| ())
        .map_err(|source| Error::Decompress {
            want: want.to_string(),
            from: from.digest.to_string(),
            source: Box::new(source),
        })
}

/// Reads every `--cache-from` source's records (manifests and configs
/// only) on `rt`. A source that cannot be read is a warning, as in
/// BuildKit; the build goes on without it. `None` when nothing was
/// imported.
pub fn import(
    root: &Root,
    rt: &tokio::runtime::Handle,
    config: &RegistryConfig,
    from: &[CacheFrom],
    report: &dyn Report,
) -> Option<Imported> {
    if from.is_empty() {
        return None;
    }
    let mut imported = Imported {
        root: root.clone(),
        records: HashMap::new(),
        blobs: HashMap::new(),
        sources: Vec::new(),
        warnings: Mutex::new(Vec::new()),
        rt: rt.clone(),
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
            CacheFrom::Object(c) => (
                c.display(),
                format!("importing cache manifest from {}", c.display()),
                c.kind.name(),
            ),
        };
        let step = StepInfo {
            action: "import",
            target,
            name,
        };
        report.event(Event::Started(step.clone()));
        let started = Instant::now();
        let read = match f {
            CacheFrom::Registry(r) => rt
                .block_on(registry::read(root, config, r))
                .map(|(recs, blobs, src)| (recs, blobs, Source::Registry(Box::new(src)))),
            CacheFrom::Local(d) => {
                layout::read(d).map(|(recs, blobs)| (recs, blobs, Source::Local(d.clone())))
            }
            CacheFrom::Object(c) => object::Client::new(c).and_then(|client| {
                match rt.block_on(client.read(root))? {
                    Some((recs, blobs)) => Ok((recs, blobs, Source::Object(Box::new(client)))),
                    None => {
                        // As BuildKit: no manifest yet is an empty cache.
                        report.event(Event::Note(
                            step.clone(),
                            format!(
                                "no cache manifest {}",
                                client.cache.manifest_key(
                                    client.cache.names.first().map_or("", String::as_str)
                                )
                            ),
                        ));
                        Ok((
                            Default::default(),
                            Vec::new(),
                            Source::Object(Box::new(client)),
                        ))
                    }
                }
            }),
        };
        match read {
            Ok((records, layers, source)) => {
                let ix = imported.sources.len();
                let n = records.len();
                imported.sources.push(source);
                for (diff_id, blob) in layers {
                    imported
                        .blobs
                        .entry(diff_id)
                        .or_insert(Transfer { source: ix, blob });
                }
                for (k, v) in records {
                    imported.records.entry(k).or_insert(v);
                }
                report.event(Event::Note(step.clone(), format!("{n} cache records")));
                report.event(Event::Done {
                    step,
                    elapsed: started.elapsed(),
                    detail: json!({ "records": n }),
                });
            }
            Err(e) => {
                report.event(Event::Failed(step, e.to_string()));
                report.event(Event::Warning(format!(
                    "failed to configure {what} cache importer: {e}"
                )));
            }
        }
    }
    (!imported.sources.is_empty()).then_some(imported)
}
