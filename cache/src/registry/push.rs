//! `kiln push`: local store → registry.
//!
//! Blobs first (skipped when the registry has them, mounted when another
//! repository of the same registry does), then image manifests by digest,
//! then the index or manifest under the tag: the registry never holds a
//! manifest whose blobs are missing, so a push interrupted anywhere can
//! simply be run again.
//!
//! Layers go out compressed (gzip unless [`PushOptions::compression`] says
//! otherwise), as docker pushes them: the stored image is converted first
//! ([`crate::compress`]), and the converted manifests and blobs are what
//! travel; the config, and so the image ID, is the same.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, MediaType};
use reqwest::{header, Method, StatusCode};

use super::client::{candidates, Activity, Endpoint};
use super::config::RegistryConfig;
use super::credentials::DockerConfig;
use super::error::RegistryError;
use super::manifest::{is_index, Desc, Doc};
use super::progress::{Outcome, Progress};
use crate::compress::{self, Conversion};
use crate::{Digest, Reference, Root};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Insecure registries.
    pub config: RegistryConfig,
    /// Upload blobs larger than this in PATCH chunks of this size; `None`
    /// sends each blob in one streamed PUT, the fastest on a good link.
    pub chunk_size: Option<u64>,
    /// Blobs uploaded at once.
    pub concurrency: usize,
    /// Try cross-repository mounts from other images of the same registry
    /// in the local store.
    pub mount: bool,
    /// How layers travel: gzip by default; plain layers are compressed
    /// (once: the result is remembered), compressed ones go as they are
    /// unless forced.
    pub compression: Conversion,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            config: RegistryConfig::default(),
            chunk_size: None,
            concurrency: 4,
            mount: true,
            compression: Conversion::default(),
        }
    }
}

/// A manifest to push: its stored bytes and where it goes.
struct Item {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
}

fn read_doc(
    root: &Root,
    digest: &Digest,
    what: &Reference,
) -> Result<(Vec<u8>, Doc), RegistryError> {
    let bytes = root.blobs().read(digest)?;
    let doc = Doc::parse(&bytes).map_err(|e| RegistryError::InvalidManifest {
        registry: "local store".into(),
        reference: what.to_string(),
        detail: format!("{digest}: {e}"),
    })?;
    Ok((bytes, doc))
}

fn parse_digest(s: &str, what: &Reference) -> Result<Digest, RegistryError> {
    s.parse().map_err(|_| RegistryError::InvalidManifest {
        registry: "local store".into(),
        reference: what.to_string(),
        detail: format!("bad digest {s:?}"),
    })
}

/// Walks a stored image: manifests in push order (children before the
/// index that lists them) and the blobs they need.
#[allow(clippy::too_many_arguments)]
fn walk(
    root: &Root,
    what: &Reference,
    digest: &Digest,
    media_type: &str,
    items: &mut Vec<Item>,
    blobs: &mut Vec<(Desc, &'static str)>,
    seen: &mut HashSet<String>,
    depth: usize,
) -> Result<(), RegistryError> {
    let (bytes, doc) = read_doc(root, digest, what)?;
    let mt = doc.media_type_with(Some(media_type));
    if is_index(&mt) {
        if depth > 4 {
            return Err(RegistryError::InvalidManifest {
                registry: "local store".into(),
                reference: what.to_string(),
                detail: "indexes nested too deep".into(),
            });
        }
        for child in &doc.manifests {
            let d = parse_digest(&child.digest, what)?;
            if !root.blobs().has(&d) {
                // An index whose other platforms were never pulled: push
                // what there is only if the registry already has the rest.
                return Err(RegistryError::InvalidManifest {
                    registry: "local store".into(),
                    reference: what.to_string(),
                    detail: format!("manifest {d} of the index is not in the local store"),
                });
            }
            walk(
                root,
                what,
                &d,
                &child.media_type,
                items,
                blobs,
                seen,
                depth + 1,
            )?;
        }
    } else {
        for (i, b) in doc.blobs().into_iter().enumerate() {
            if seen.insert(b.digest.clone()) {
                blobs.push((b, if i == 0 { "config" } else { "layer" }));
            }
        }
    }
    items.push(Item {
        digest: digest.clone(),
        media_type: mt,
        bytes,
    });
    Ok(())
}

/// For cross-repository mounts: which other repository of `registry` (as
/// known from the local store's names) holds each blob.
fn mount_sources(root: &Root, registry: &str, repository: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(list) = root.images().list() else {
        return out;
    };
    for (r, desc) in list {
        if r.registry() != registry || r.repository() == repository {
            continue;
        }
        let Ok(d) = desc.digest().to_string().parse::<Digest>() else {
            continue;
        };
        let (mut items, mut blobs, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
        if walk(
            root,
            &r,
            &d,
            desc.media_type().as_ref(),
            &mut items,
            &mut blobs,
            &mut seen,
            0,
        )
        .is_ok()
        {
            for (b, _) in blobs {
                // The compressed forms a push of that image sent too.
                if let Ok(d) = b.digest.parse::<Digest>() {
                    for v in compress::variants(root, &d) {
                        out.entry(v.to_string())
                            .or_insert_with(|| r.repository().to_string());
                    }
                }
                out.entry(b.digest)
                    .or_insert_with(|| r.repository().to_string());
            }
        }
    }
    out
}

/// Pushes the local image `local` to `remote`; returns the descriptor of
/// what the tag now names on the registry.
pub async fn push(
    root: &Root,
    local: &Reference,
    remote: &Reference,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<Descriptor, RegistryError> {
    let top = root
        .images()
        .get(local)?
        .ok_or_else(|| RegistryError::NoLocalImage(local.to_string()))?;
    push_descriptor(root, &top, local, remote, opts, progress).await
}

/// [`push`] of a stored manifest or index that has no name in the store
/// (the build's remote cache manifest); `local` only labels errors.
pub async fn push_descriptor(
    root: &Root,
    top: &Descriptor,
    local: &Reference,
    remote: &Reference,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<Descriptor, RegistryError> {
    // Keeps garbage collection from deleting the converted blobs, which no
    // name holds, until they are uploaded.
    let _lease = root.lease()?;
    let top = convert(root, top, &opts.compression, &progress).await?;
    let top_digest = parse_digest(top.digest().as_ref(), local)?;
    let (mut items, mut blobs, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    walk(
        root,
        local,
        &top_digest,
        top.media_type().as_ref(),
        &mut items,
        &mut blobs,
        &mut seen,
        0,
    )?;

    let registry = remote.registry().to_string();
    let repository = remote.repository().to_string();
    let sources = if opts.mount {
        mount_sources(root, &registry, &repository)
    } else {
        HashMap::new()
    };
    let mut scopes = vec![format!("repository:{repository}:pull,push")];
    let mut src_repos: Vec<&String> = sources
        .values()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    src_repos.sort();
    scopes.extend(src_repos.iter().map(|r| format!("repository:{r}:pull")));

    let creds = DockerConfig::load_default()?.credentials(&registry)?;
    let bases = candidates(&opts.config, &registry, false);
    let timeouts = opts.config.timeouts()?;
    let ep =
        Endpoint::connect_with(&registry, &repository, &bases, creds, scopes, timeouts).await?;

    let concurrency = opts.concurrency.max(1);
    futures::stream::iter(blobs.iter().map(|(b, kind)| {
        let (ep, sources, progress) = (&ep, &sources, &progress);
        async move {
            push_blob(
                root,
                ep,
                remote,
                b,
                kind,
                sources.get(&b.digest),
                opts,
                progress,
            )
            .await
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<()>>()
    .await?;

    let n = items.len();
    for (i, item) in items.iter().enumerate() {
        let target = if i + 1 == n {
            remote
                .tag()
                .map(str::to_string)
                .unwrap_or_else(|| item.digest.to_string())
        } else {
            item.digest.to_string()
        };
        put_manifest(&ep, remote, item, &target).await?;
        progress.message(&format!(
            "{remote}: manifest {} pushed as {target}",
            item.digest
        ));
    }
    let last = items
        .last()
        .ok_or_else(|| RegistryError::NoLocalImage(local.to_string()))?;
    let d: oci_spec::image::Digest =
        last.digest
            .to_string()
            .parse()
            .map_err(|e: oci_spec::OciSpecError| RegistryError::Protocol {
                registry: registry.clone(),
                what: "descriptor".into(),
                detail: e.to_string(),
            })?;
    Ok(Descriptor::new(
        MediaType::from(last.media_type.as_str()),
        last.bytes.len() as u64,
        d,
    ))
}

/// Which of `blobs` the repository of `reference` holds (a HEAD each) or
/// could mount from the repository named beside it (the same registry's
/// repository of an imported cache), so a cache export can name a
/// compressed blob it knows of but does not have locally: the push then
/// finds it there and sends nothing. A blob the registry does not confirm
/// (absent, not mountable, or any error) is left out; the caller then
/// makes the blob itself.
pub async fn blobs_present(
    config: &RegistryConfig,
    reference: &Reference,
    blobs: &[(Digest, Option<String>)],
) -> HashSet<Digest> {
    let mut out = HashSet::new();
    if blobs.is_empty() {
        return out;
    }
    let registry = reference.registry().to_string();
    let repository = reference.repository().to_string();
    let Ok(creds) = DockerConfig::load_default().and_then(|c| c.credentials(&registry)) else {
        return out;
    };
    let Ok(timeouts) = config.timeouts() else {
        return out;
    };
    let bases = candidates(config, &registry, false);
    // The push's own scope, so one token serves both, and the mount
    // sources'.
    let mut scopes = vec![format!("repository:{repository}:pull,push")];
    let mut froms: Vec<&String> = blobs.iter().filter_map(|(_, f)| f.as_ref()).collect();
    froms.sort();
    froms.dedup();
    scopes.extend(froms.iter().map(|r| format!("repository:{r}:pull")));
    let Ok(ep) =
        Endpoint::connect_with(&registry, &repository, &bases, creds, scopes, timeouts).await
    else {
        return out;
    };
    for (d, from) in blobs {
        let url = ep.url(&format!("blobs/{d}"));
        let head = ep
            .deadline(|| format!("HEAD {url}"), ep.send(Method::HEAD, &url, |r| r))
            .await;
        if head.is_ok_and(|h| h.status().is_success()) {
            out.insert(d.clone());
            continue;
        }
        let Some(from) = from else { continue };
        let mount = format!("{}?mount={d}&from={from}", ep.url("blobs/uploads/"));
        let resp = ep
            .deadline(
                || format!("POST {mount}"),
                ep.send(Method::POST, &mount, |r| {
                    r.header(header::CONTENT_LENGTH, "0")
                }),
            )
            .await;
        match resp {
            Ok(r) if r.status() == StatusCode::CREATED => {
                out.insert(d.clone());
            }
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                // Not mounted: the registry opened an upload instead; close
                // it (best effort: registries expire them anyway).
                if let Ok(loc) = location_of(&ep, &r, "upload start") {
                    let _ = ep
                        .deadline(
                            || format!("DELETE {loc}"),
                            ep.send(Method::DELETE, &loc, |r| r),
                        )
                        .await;
                }
            }
            _ => {}
        }
    }
    out
}

/// Converts the image's layers for the push, off the async threads
/// (compression is CPU work), and reports what was compressed or reused.
async fn convert(
    root: &Root,
    top: &Descriptor,
    conv: &Conversion,
    progress: &Arc<dyn Progress>,
) -> Result<Descriptor, RegistryError> {
    let (root2, top2, conv2) = (root.clone(), top.clone(), *conv);
    let converted = tokio::task::spawn_blocking(move || compress::convert(&root2, &top2, &conv2))
        .await
        .map_err(|e| RegistryError::Protocol {
            registry: "local store".into(),
            what: "layer compression".into(),
            detail: e.to_string(),
        })??;
    for l in &converted.layers {
        let how = if l.reused { "reused" } else { "compressed" };
        progress.message(&format!(
            "layer {} {how} ({}): {}",
            l.from,
            compress::name(l.compression),
            l.to
        ));
    }
    Ok(converted.descriptor)
}

async fn put_manifest(
    ep: &Endpoint,
    remote: &Reference,
    item: &Item,
    target: &str,
) -> Result<(), RegistryError> {
    let url = ep.url(&format!("manifests/{target}"));
    let resp = ep
        .deadline(
            || format!("PUT {url}"),
            ep.send(Method::PUT, &url, |r| {
                r.header(header::CONTENT_TYPE, item.media_type.as_str())
                    .body(item.bytes.clone())
            }),
        )
        .await?;
    if !resp.status().is_success() {
        return Err(ep
            .fail(
                &Method::PUT,
                resp,
                &format!("manifest PUT {target}"),
                &remote.to_string(),
            )
            .await);
    }
    if let Some(claimed) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if claimed != item.digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                registry: ep.registry().to_string(),
                reference: format!("{remote} (manifest PUT)"),
                expected: item.digest.to_string(),
                actual: claimed.to_string(),
            });
        }
    }
    Ok(())
}

/// Appends `digest=` to an upload URL, which may already carry a query.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn location_of(
    ep: &Endpoint,
    resp: &reqwest::Response,
    what: &str,
) -> Result<String, RegistryError> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| ep.absolute(l))
        .ok_or_else(|| RegistryError::Protocol {
            registry: ep.registry().to_string(),
            what: what.to_string(),
            detail: "no Location in the answer".into(),
        })
}

/// Bytes read from a blob file per piece of an upload body.
const UPLOAD_PIECE: u64 = 256 << 10;

/// A body that streams `len` bytes of a file from `offset`, reporting
/// progress as it goes; opened lazily so a retried request (after a token
/// expired) reads from the start again.
fn file_body(
    path: PathBuf,
    offset: u64,
    len: u64,
    digest: String,
    progress: Arc<dyn Progress>,
    activity: Activity,
) -> reqwest::Body {
    struct State {
        path: PathBuf,
        offset: u64,
        left: u64,
        file: Option<std::fs::File>,
    }
    let state = State {
        path,
        offset,
        left: len,
        file: None,
    };
    let stream = futures::stream::unfold(state, move |mut st| {
        let (digest, progress) = (digest.clone(), progress.clone());
        // Asked for the next chunk: the connection took the last one.
        activity.touch();
        async move {
            if st.left == 0 {
                return None;
            }
            if st.file.is_none() {
                let opened = std::fs::File::open(&st.path).and_then(|mut f| {
                    use std::io::Seek;
                    f.seek(std::io::SeekFrom::Start(st.offset))?;
                    Ok(f)
                });
                match opened {
                    Ok(f) => st.file = Some(f),
                    Err(e) => {
                        st.left = 0;
                        return Some((Err(e), st));
                    }
                }
            }
            // The stall timeout sees progress when the connection asks for
            // the next piece, so a piece must drain well within it even on
            // a slow link (256 KiB in 30 s is under 9 KB/s).
            let want = st.left.min(UPLOAD_PIECE) as usize;
            let mut buf = vec![0u8; want];
            let read = match st.file.as_mut() {
                Some(f) => f.read(&mut buf),
                None => Ok(0),
            };
            match read {
                Ok(0) => {
                    st.left = 0;
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "blob file shorter than its size",
                        )),
                        st,
                    ))
                }
                Ok(n) => {
                    buf.truncate(n);
                    st.offset += n as u64;
                    st.left -= n as u64;
                    progress.advance(&digest, n as u64);
                    Some((Ok(buf), st))
                }
                Err(e) => {
                    st.left = 0;
                    Some((Err(e), st))
                }
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

#[allow(clippy::too_many_arguments)]
async fn push_blob(
    root: &Root,
    ep: &Endpoint,
    remote: &Reference,
    desc: &Desc,
    kind: &str,
    mount_from: Option<&String>,
    opts: &PushOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(), RegistryError> {
    let rs = remote.to_string();
    let digest = parse_digest(&desc.digest, remote)?;
    let head_url = ep.url(&format!("blobs/{}", desc.digest));
    let head = ep
        .deadline(
            || format!("HEAD {head_url}"),
            ep.send(Method::HEAD, &head_url, |r| r),
        )
        .await?;
    if head.status().is_success() {
        // A blob the registry has need not be local (a cache export names
        // compressed blobs it found there, see [`blobs_present`]).
        progress.done(&desc.digest, Outcome::Exists);
        return Ok(());
    }
    if !root.blobs().has(&digest) {
        return Err(RegistryError::InvalidManifest {
            registry: "local store".into(),
            reference: rs,
            detail: format!("blob {digest} is not in the local store"),
        });
    }
    let size = root.blobs().size(&digest)?;

    // Start an upload, asking for a mount when another repository has it.
    let uploads = ep.url("blobs/uploads/");
    let start = match mount_from {
        Some(from) => format!("{uploads}?mount={}&from={from}", desc.digest),
        None => uploads.clone(),
    };
    let resp = ep
        .deadline(
            || format!("POST {start}"),
            ep.send(Method::POST, &start, |r| {
                r.header(header::CONTENT_LENGTH, "0")
            }),
        )
        .await?;
    if resp.status() == StatusCode::CREATED && mount_from.is_some() {
        progress.done(&desc.digest, Outcome::Mounted);
        return Ok(());
    }
    if resp.status() != StatusCode::ACCEPTED {
        return Err(ep
            .fail(
                &Method::POST,
                resp,
                &format!("upload start for blob {}", desc.digest),
                &rs,
            )
            .await);
    }
    let mut location = location_of(ep, &resp, "upload start")?;
    progress.start(&desc.digest, kind, size);
    let path = root.blobs().path(&digest);

    match opts.chunk_size {
        Some(chunk) if chunk > 0 && size > chunk => {
            let mut offset = 0u64;
            while offset < size {
                let len = chunk.min(size - offset);
                let end = offset + len - 1;
                let url = location.clone();
                let activity = Activity::new();
                let resp = ep
                    .send_with(Method::PATCH, &url, &activity, |r| {
                        r.header(header::CONTENT_TYPE, "application/octet-stream")
                            .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                            .header(header::CONTENT_LENGTH, len.to_string())
                            .body(file_body(
                                path.clone(),
                                offset,
                                len,
                                desc.digest.clone(),
                                progress.clone(),
                                activity.clone(),
                            ))
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(ep
                        .fail(
                            &Method::PATCH,
                            resp,
                            &format!("chunk upload of blob {}", desc.digest),
                            &rs,
                        )
                        .await);
                }
                location = location_of(ep, &resp, "chunk upload")?;
                offset += len;
            }
            let url = with_digest(&location, &desc.digest);
            let resp = ep
                .deadline(
                    || format!("PUT {location}"),
                    ep.send(Method::PUT, &url, |r| r.header(header::CONTENT_LENGTH, "0")),
                )
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(ep
                    .fail(
                        &Method::PUT,
                        resp,
                        &format!("upload end of blob {}", desc.digest),
                        &rs,
                    )
                    .await);
            }
        }
        _ => {
            let url = with_digest(&location, &desc.digest);
            let activity = Activity::new();
            let resp = ep
                .send_with(Method::PUT, &url, &activity, |r| {
                    r.header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, size.to_string())
                        .body(file_body(
                            path.clone(),
                            0,
                            size,
                            desc.digest.clone(),
                            progress.clone(),
                            activity.clone(),
                        ))
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(ep
                    .fail(
                        &Method::PUT,
                        resp,
                        &format!("upload of blob {}", desc.digest),
                        &rs,
                    )
                    .await);
            }
        }
    }
    progress.done(&desc.digest, Outcome::Transferred);
    Ok(())
}
