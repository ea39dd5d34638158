//! `kiln pull`: registry → local store.
//!
//! Order matters for crash safety: every blob of a manifest is committed
//! (verified, fsynced, renamed) before the manifest, every manifest before
//! its index, and the name last. A pull killed at any point leaves only
//! complete, verified blobs that the next pull reuses, and no name pointing
//! at anything missing.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use oci_spec::image::{Descriptor, MediaType};
use reqwest::{header, Method};

use super::client::{candidates, Endpoint};
use super::config::RegistryConfig;
use super::credentials::DockerConfig;
use super::error::RegistryError;
use super::manifest::{is_index, is_manifest, Desc, Doc, Platform, ACCEPT, MAX_MANIFEST};
use super::progress::{Outcome, Progress};
use super::unpack::{LayerSink, LayerUnpacker, PendingLayer};
use crate::layer::LayerRef;
use crate::{BlobWriter, Digest, PendingBlob, Reference, Root};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Keep only this platform of a multi-platform image; `None` keeps the
    /// whole index, so the image round-trips with every platform.
    pub platform: Option<Platform>,
    /// Insecure registries and mirrors.
    pub config: RegistryConfig,
    /// Blobs fetched at once.
    pub concurrency: usize,
    /// Unpack the layers (of the platforms it wants) while they download,
    /// as `docker pull` leaves them; `None` stores blobs only (a build's
    /// base, whose layers a fully cached build never needs).
    pub unpack: Option<Unpacker>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            config: RegistryConfig::default(),
            concurrency: 4,
            unpack: None,
        }
    }
}

/// The layer unpacker of a pull (a newtype, so options stay `Debug`).
#[derive(Clone)]
pub struct Unpacker(pub Arc<dyn LayerUnpacker>);

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unpacker")
    }
}

/// One blob to fetch; a layer to unpack on the way carries its
/// [`LayerRef`] (diff_id and media type from the image).
struct Job {
    desc: Desc,
    kind: &'static str,
    unpack: Option<LayerRef>,
}

/// What one fetched blob left: the blob (unless the store had it) and,
/// when unpacked on the way, the layer; both invisible until committed.
type Got = Option<(PendingBlob, Option<Box<dyn PendingLayer>>)>;

/// A manifest as fetched: its exact bytes and what they are.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) doc: Doc,
}

/// Pulls `reference` into `root` and names it there; returns the descriptor
/// the name now points at (the index, or with `--platform` the manifest).
pub async fn pull(
    root: &Root,
    reference: &Reference,
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<Descriptor, RegistryError> {
    let progress: &dyn Progress = &*progress;
    let registry = reference.registry().to_string();
    let repository = reference.repository().to_string();
    let wanted = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let creds = DockerConfig::load_default()?.credentials(&registry)?;
    let scopes = vec![format!("repository:{repository}:pull")];
    let timeouts = opts.config.timeouts()?;

    // Mirrors first; a mirror that is down or lacks the image is skipped,
    // as docker does, and the registry itself is the last word.
    let bases = candidates(&opts.config, &registry, true);
    let mut last_err = None;
    let mut found = None;
    for (i, base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let attempt = async {
            let ep = Endpoint::connect_with(
                &registry,
                &repository,
                std::slice::from_ref(base),
                creds.clone(),
                scopes.clone(),
                timeouts,
            )
            .await?;
            let top = fetch_manifest(&ep, reference, &wanted, reference.digest(), None).await?;
            Ok::<_, RegistryError>((ep, top))
        };
        match attempt.await {
            Ok(v) => {
                found = Some(v);
                break;
            }
            Err(e)
                if !is_last
                    && matches!(
                        e,
                        RegistryError::Connect { .. }
                            | RegistryError::NotFound { .. }
                            | RegistryError::Stalled { .. }
                            | RegistryError::TimedOut { .. }
                    ) =>
            {
                progress.message(&format!("mirror {} skipped: {e}", base.0));
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let Some((ep, top)) = found else {
        return Err(last_err.unwrap_or_else(|| RegistryError::Connect {
            registry: registry.clone(),
            url: String::new(),
            detail: "no address to try".into(),
        }));
    };
    progress.message(&format!(
        "{reference}: resolved to {} ({})",
        top.digest, top.media_type
    ));

    // Decide which manifests to keep.
    let mut manifests: Vec<Fetched> = Vec::new();
    let mut indexes: Vec<Fetched> = Vec::new();
    let result: Descriptor;
    if is_index(&top.media_type) {
        if let Some(platform) = &opts.platform {
            let entry = top
                .doc
                .manifests
                .iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| platform.matches(p))
                        && is_manifest(&m.media_type)
                })
                .or_else(|| {
                    top.doc
                        .manifests
                        .iter()
                        .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
                })
                .ok_or_else(|| RegistryError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: platform.to_string(),
                    available: top
                        .doc
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
                .clone();
            let m = fetch_child(&ep, reference, &entry).await?;
            if !is_manifest(&m.media_type) {
                return Err(invalid(
                    &ep,
                    reference,
                    format!("{} for {platform} is not an image manifest", entry.digest),
                ));
            }
            result = descriptor(&m.media_type, m.bytes.len() as u64, &m.digest)?;
            manifests.push(m);
        } else {
            result = descriptor(&top.media_type, top.bytes.len() as u64, &top.digest)?;
            collect_index(&ep, reference, top, &mut manifests, &mut indexes).await?;
        }
    } else if is_manifest(&top.media_type) {
        result = descriptor(&top.media_type, top.bytes.len() as u64, &top.digest)?;
        manifests.push(top);
    } else {
        return Err(invalid(
            &ep,
            reference,
            format!("unsupported media type {}", top.media_type),
        ));
    }

    // Every blob of every kept manifest, once. With an unpacker the
    // configs come first: they name the layers' diff_ids (which the
    // unpacked layers are checked against and named by) and platforms.
    let mut seen = HashSet::new();
    let mut configs: Vec<Job> = Vec::new();
    let mut layers: Vec<Job> = Vec::new();
    for m in &manifests {
        for (i, b) in m.doc.blobs().into_iter().enumerate() {
            if seen.insert(b.digest.clone()) {
                let job = Job {
                    desc: b,
                    kind: if i == 0 { "config" } else { "layer" },
                    unpack: None,
                };
                if i == 0 {
                    configs.push(job);
                } else {
                    layers.push(job);
                }
            }
        }
    }
    // Keep garbage collection away from blobs not yet named.
    let _lease = root.lease()?;
    let unpacker = opts.unpack.as_ref().map(|u| &*u.0);
    let mut got: Vec<(PendingBlob, Option<Box<dyn PendingLayer>>)> = Vec::new();
    if let Some(unpacker) = unpacker {
        got.extend(fetch_all(root, &ep, reference, configs, opts, progress, None).await?);
        let config_of = |digest: &str| -> Option<Vec<u8>> {
            let d: Digest = digest.parse().ok()?;
            if let Some((p, _)) = got.iter().find(|(p, _)| *p.digest() == d) {
                return std::fs::read(p.path()).ok();
            }
            root.blobs().read(&d).ok()
        };
        let mut wanted: std::collections::HashMap<String, LayerRef> = Default::default();
        for m in &manifests {
            let Some(config) = m.doc.config.as_ref().and_then(|c| config_of(&c.digest)) else {
                continue;
            };
            wanted.extend(layers_to_unpack(&m.doc, &config, unpacker));
        }
        for job in &mut layers {
            job.unpack = wanted.remove(&job.desc.digest);
        }
        got.extend(fetch_all(root, &ep, reference, layers, opts, progress, Some(unpacker)).await?);
    } else {
        configs.append(&mut layers);
        got.extend(fetch_all(root, &ep, reference, configs, opts, progress, None).await?);
    }

    // Every blob arrived and verified: only now does any become visible,
    // so a pull that fails on one bad blob leaves the store as it was.
    // Manifests follow their blobs, indexes (innermost first) their
    // manifests, and the name comes last.
    let mut unpacked = Vec::new();
    for (p, layer) in got {
        let digest = p.digest().to_string();
        p.commit()?;
        unpacked.extend(layer.map(|l| (digest, l)));
    }
    // Unpacked layers are derived from their blobs: in place only after
    // those are.
    for (digest, layer) in unpacked {
        layer
            .commit()
            .map_err(|source| RegistryError::Unpack { digest, source })?;
    }
    for m in manifests.iter().chain(indexes.iter()) {
        put_manifest(root, m)?;
    }
    root.images().set(reference, result.clone())?;
    Ok(result)
}

/// Fetches `jobs`, `opts.concurrency` at once. On the first failure the
/// others stop at their next chunk, and every transfer is awaited to its
/// end, so that no writer or unpacker thread still holds a temp file or
/// folder when the error is returned.
async fn fetch_all(
    root: &Root,
    ep: &Endpoint,
    reference: &Reference,
    jobs: Vec<Job>,
    opts: &PullOptions,
    progress: &dyn Progress,
    unpacker: Option<&dyn LayerUnpacker>,
) -> Result<Vec<(PendingBlob, Option<Box<dyn PendingLayer>>)>, RegistryError> {
    let cancel = AtomicBool::new(false);
    let results: Vec<Result<Got, RegistryError>> =
        futures::stream::iter(jobs.into_iter().map(|job| {
            let cancel = &cancel;
            async move {
                if cancel.load(Ordering::Relaxed) {
                    return Err(RegistryError::Cancelled);
                }
                let unpack = match (unpacker, &job.unpack) {
                    (Some(u), Some(l)) => Some((u, l)),
                    _ => None,
                };
                let r = fetch_blob_unpacking(
                    root, ep, reference, &job.desc, job.kind, progress, cancel, unpack,
                )
                .await;
                if r.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                r
            }
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut got = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(p) => got.extend(p),
            Err(RegistryError::Cancelled) => {}
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(got),
    }
}

/// The layers of manifest `doc` to unpack, by blob digest: none unless
/// `unpacker` wants the platform its `config` names, and none when the
/// config's diff_ids do not pair up with the layers (the image is then
/// left to the unpacking of the first build, which reports it).
fn layers_to_unpack(
    doc: &Doc,
    config: &[u8],
    unpacker: &dyn LayerUnpacker,
) -> Vec<(String, LayerRef)> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
        rootfs: Option<RootFs>,
    }
    let Ok(c) = serde_json::from_slice::<Config>(config) else {
        return Vec::new();
    };
    let platform = Platform {
        os: c.os,
        architecture: c.architecture,
        variant: c.variant,
    };
    let diff_ids = c.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if !unpacker.wants(&platform) || diff_ids.len() != doc.layers.len() {
        return Vec::new();
    }
    doc.layers
        .iter()
        .zip(diff_ids)
        .filter_map(|(l, id)| {
            Some((
                l.digest.clone(),
                LayerRef {
                    diff_id: id.parse().ok()?,
                    digest: l.digest.parse().ok()?,
                    size: l.size,
                    media_type: l.media_type.clone(),
                },
            ))
        })
        .collect()
}

/// Fetches every entry of an index (and of nested indexes, breadth
/// first) so the whole multi-platform image is kept; indexes come out
/// innermost first, the order they must be stored in.
async fn collect_index(
    ep: &Endpoint,
    reference: &Reference,
    index: Fetched,
    manifests: &mut Vec<Fetched>,
    indexes: &mut Vec<Fetched>,
) -> Result<(), RegistryError> {
    let mut level = vec![index];
    let mut found_indexes: Vec<Fetched> = Vec::new();
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        if depth > 4 {
            return Err(invalid(ep, reference, "indexes nested too deep".into()));
        }
        let entries: Vec<Desc> = level
            .iter()
            .flat_map(|i| i.doc.manifests.iter().cloned())
            .collect();
        found_indexes.append(&mut level);
        let mut fetches = Vec::new();
        for e in &entries {
            fetches.push(fetch_child(ep, reference, e));
        }
        for child in futures::future::try_join_all(fetches).await? {
            if is_index(&child.media_type) {
                level.push(child);
            } else {
                manifests.push(child);
            }
        }
    }
    found_indexes.reverse();
    indexes.extend(found_indexes);
    Ok(())
}

fn invalid(ep: &Endpoint, reference: &Reference, detail: String) -> RegistryError {
    RegistryError::InvalidManifest {
        registry: ep.registry().to_string(),
        reference: reference.to_string(),
        detail,
    }
}

/// An OCI descriptor for a stored manifest or index.
fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Result<Descriptor, RegistryError> {
    let d: oci_spec::image::Digest =
        digest
            .to_string()
            .parse()
            .map_err(|e: oci_spec::OciSpecError| RegistryError::Protocol {
                registry: String::new(),
                what: "descriptor".into(),
                detail: e.to_string(),
            })?;
    Ok(Descriptor::new(MediaType::from(media_type), size, d))
}

async fn fetch_child(
    ep: &Endpoint,
    reference: &Reference,
    entry: &Desc,
) -> Result<Fetched, RegistryError> {
    let digest: Digest = entry.digest.parse().map_err(|_| {
        invalid(
            ep,
            reference,
            format!("bad digest {:?} in index", entry.digest),
        )
    })?;
    fetch_manifest(
        ep,
        reference,
        &entry.digest,
        Some(&digest),
        Some(entry.size),
    )
    .await
}

/// GETs a manifest by tag or digest, verifying it against the digest asked
/// for (or the `Docker-Content-Digest` the registry claims for a tag).
pub(crate) async fn fetch_manifest(
    ep: &Endpoint,
    reference: &Reference,
    wanted: &str,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
) -> Result<Fetched, RegistryError> {
    let url = ep.url(&format!("manifests/{wanted}"));
    let request = || format!("GET {url}");
    let (bytes, content_type, claimed) = ep
        .deadline(request, async {
            let resp = ep
                .send(Method::GET, &url, |r| r.header(header::ACCEPT, ACCEPT))
                .await?;
            if !resp.status().is_success() {
                return Err(ep
                    .fail(&Method::GET, resp, "manifest GET", &reference.to_string())
                    .await);
            }
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let claimed = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<Digest>().ok());
            let mut bytes = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = ep.next_chunk(&mut stream, request).await? {
                let chunk = chunk.map_err(|e| RegistryError::Protocol {
                    registry: ep.registry().to_string(),
                    what: format!("reading manifest {wanted} of {reference}"),
                    detail: super::client::root_cause(&e),
                })?;
                if bytes.len() + chunk.len() > MAX_MANIFEST {
                    return Err(invalid(
                        ep,
                        reference,
                        format!("manifest {wanted} is larger than {MAX_MANIFEST} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((bytes, content_type, claimed))
        })
        .await?;
    let digest = Digest::of(&bytes);
    if let Some(exp) = expected.or(claimed.as_ref()) {
        if exp.to_string() != digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                registry: ep.registry().to_string(),
                reference: format!("{reference} (manifest {wanted})"),
                expected: exp.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    if let Some(size) = expected_size {
        if size != bytes.len() as u64 {
            return Err(RegistryError::SizeMismatch {
                registry: ep.registry().to_string(),
                reference: reference.to_string(),
                digest: digest.to_string(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
    }
    let doc = Doc::parse(&bytes)
        .map_err(|e| invalid(ep, reference, format!("manifest {wanted}: {e}")))?;
    let media_type = doc.media_type_with(content_type.as_deref());
    Ok(Fetched {
        bytes,
        digest,
        media_type,
        doc,
    })
}

fn put_manifest(root: &Root, m: &Fetched) -> Result<(), RegistryError> {
    if !root.blobs().has(&m.digest) {
        let got = root.blobs().put(&m.bytes)?;
        debug_assert_eq!(got.to_string(), m.digest.to_string());
    }
    Ok(())
}

/// Configs up to this size are small objects (see [`fetch_blob`]).
const SMALL_BLOB: u64 = 1 << 20;

/// Streams one blob into a pending (verified, invisible) blob of the store;
/// `None` when the store already has it. A transfer that breaks off is
/// retried, a wrong digest is not.
pub(crate) async fn fetch_blob(
    root: &Root,
    ep: &Endpoint,
    reference: &Reference,
    desc: &Desc,
    kind: &str,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Option<PendingBlob>, RegistryError> {
    let got = fetch_blob_unpacking(root, ep, reference, desc, kind, progress, cancel, None).await?;
    Ok(got.map(|(blob, _)| blob))
}

/// [`fetch_blob`], unpacking the layer on the way when `unpack` says how.
#[allow(clippy::too_many_arguments)]
async fn fetch_blob_unpacking(
    root: &Root,
    ep: &Endpoint,
    reference: &Reference,
    desc: &Desc,
    kind: &str,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    unpack: Option<(&dyn LayerUnpacker, &LayerRef)>,
) -> Result<Got, RegistryError> {
    let digest: Digest = desc
        .digest
        .parse()
        .map_err(|_| invalid(ep, reference, format!("bad blob digest {:?}", desc.digest)))?;
    if root.blobs().has(&digest) {
        progress.done(&desc.digest, Outcome::Exists);
        return Ok(None);
    }
    progress.start(&desc.digest, kind, desc.size);
    // A config is a small object, with a small object's deadline; a big
    // one (an inline cache can make it so) and every layer are only held
    // to the stall timeout, so they go on as long as bytes flow.
    let small = kind == "config" && desc.size <= SMALL_BLOB;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let deadline = small.then(|| tokio::time::Instant::now() + ep.timeouts().small);
        // A fresh sink each attempt: a failed one removed what it had.
        let sink = match unpack {
            Some((u, layer)) => u.start(layer).map_err(|source| RegistryError::Unpack {
                digest: desc.digest.clone(),
                source,
            })?,
            None => None,
        };
        match fetch_blob_once(
            root, ep, reference, desc, &digest, progress, cancel, deadline, sink,
        )
        .await
        {
            Ok(p) => {
                progress.done(&desc.digest, Outcome::Transferred);
                return Ok(Some(p));
            }
            Err(
                e @ (RegistryError::Protocol { .. }
                | RegistryError::Connect { .. }
                | RegistryError::Stalled { .. }
                | RegistryError::TimedOut { .. }),
            ) if attempt < 3 => {
                progress.message(&format!("{}: retrying after: {e}", desc.digest));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt at a blob; `deadline` is a small object's. The deadline is
/// checked between chunks rather than by dropping this future, so that the
/// writer thread is always awaited and its temp file gone on return.
#[allow(clippy::too_many_arguments)]
async fn fetch_blob_once(
    root: &Root,
    ep: &Endpoint,
    reference: &Reference,
    desc: &Desc,
    digest: &Digest,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    deadline: Option<tokio::time::Instant>,
    sink: Option<Box<dyn LayerSink>>,
) -> Result<(PendingBlob, Option<Box<dyn PendingLayer>>), RegistryError> {
    let url = ep.url(&format!("blobs/{}", desc.digest));
    let request = || format!("GET {url}");
    let sent = ep.send(Method::GET, &url, |r| r);
    let resp = match deadline {
        Some(d) => tokio::time::timeout_at(d, sent)
            .await
            .map_err(|_| ep.timed_out(request()))??,
        None => sent.await?,
    };
    if !resp.status().is_success() {
        return Err(ep
            .fail(
                &Method::GET,
                resp,
                &format!("blob GET {}", desc.digest),
                &reference.to_string(),
            )
            .await);
    }
    let writer = root.blobs().writer(Some(digest), Some(desc.size))?;
    // The store's writer hashes as it writes and refuses a wrong digest
    // when finished; it runs on a blocking thread of its own so that the
    // hashing and disk writes of parallel blobs use every core while this
    // task only moves bytes. The size is watched here, to stop a server
    // that sends more than it announced.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let disk = spawn_writer(writer, rx, sink);
    let io_err = |e: std::io::Error| RegistryError::Io {
        path: root.path().to_path_buf(),
        source: e,
    };
    let received = async {
        let mut got: u64 = 0;
        let mut stream = resp.bytes_stream();
        loop {
            let next = ep.next_chunk(&mut stream, request);
            let next = match deadline {
                Some(d) => tokio::time::timeout_at(d, next)
                    .await
                    .map_err(|_| ep.timed_out(request()))??,
                None => next.await?,
            };
            let Some(chunk) = next else { break };
            if cancel.load(Ordering::Relaxed) {
                return Err(RegistryError::Cancelled);
            }
            let chunk = chunk.map_err(|e| RegistryError::Protocol {
                registry: ep.registry().to_string(),
                what: format!("download of blob {} of {reference}", desc.digest),
                detail: super::client::root_cause(&e),
            })?;
            let n = chunk.len() as u64;
            got += n;
            if got > desc.size {
                return Err(RegistryError::SizeMismatch {
                    registry: ep.registry().to_string(),
                    reference: reference.to_string(),
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: got,
                });
            }
            if tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is read below
            }
            progress.advance(&desc.digest, n);
        }
        Ok(got)
    }
    .await;
    drop(tx);
    // Wait for the writer even on failure, so its temp file is gone when
    // the error is returned (and the sink, dropped with it, has removed
    // what it unpacked).
    let written = disk.await.map_err(|e| RegistryError::Io {
        path: root.path().to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let got = received?;
    let (writer, sink) = written.map_err(io_err)?;
    if got != desc.size {
        return Err(RegistryError::Protocol {
            registry: ep.registry().to_string(),
            what: format!("download of blob {} of {reference}", desc.digest),
            detail: format!("connection closed after {got} of {} bytes", desc.size),
        });
    }
    // The digest first: a blob that is not what was asked for is reported
    // as such, whatever its unpacking made of it. The sink is finished
    // (and waited for) only for a verified blob, and dropped otherwise.
    let finished = tokio::task::spawn_blocking(move || {
        let blob = writer.finish()?;
        let layer = sink.map(|s| s.finish());
        Ok::<_, crate::Error>((blob, layer))
    })
    .await
    .map_err(|e| RegistryError::Io {
        path: root.path().to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    match finished {
        Ok((blob, None)) => Ok((blob, None)),
        Ok((blob, Some(Ok(layer)))) => Ok((blob, Some(layer))),
        Ok((_, Some(Err(source)))) => Err(RegistryError::Unpack {
            digest: desc.digest.clone(),
            source,
        }),
        Err(crate::Error::DigestMismatch { expected, actual }) => {
            Err(RegistryError::DigestMismatch {
                registry: ep.registry().to_string(),
                reference: format!("{reference} (blob)"),
                expected,
                actual,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The blob writer and the layer sink of one transfer, handed back by
/// [`spawn_writer`].
type Written = (BlobWriter, Option<Box<dyn LayerSink>>);

/// Feeds received chunks into a blob writer (and a layer sink, which
/// unpacks them on threads of its own) on a blocking thread; hands both
/// back once the channel closes, so the caller decides whether the blob is
/// complete (finish) or not (drop, deleting the temp file and what the
/// sink unpacked).
fn spawn_writer<T: AsRef<[u8]> + Send + 'static>(
    mut writer: BlobWriter,
    mut rx: tokio::sync::mpsc::Receiver<T>,
    mut sink: Option<Box<dyn LayerSink>>,
) -> tokio::task::JoinHandle<std::io::Result<Written>> {
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if let Some(s) = sink.as_mut() {
                s.write(chunk.as_ref());
            }
            writer.write_all(chunk.as_ref())?;
        }
        Ok((writer, sink))
    })
}
