//! A cache in an object store (`type=s3`, `azblob`, `gcs`), laid out as
//! BuildKit's s3 cache: `<prefix><manifests_prefix><name>` holds the cache
//! manifest, `<prefix><blobs_prefix><digest>` each blob (the manifest's
//! config and layers), so lifecycle rules and tools written for
//! BuildKit's buckets apply.
//!
//! The manifest object is kiln's cache manifest (an OCI image manifest
//! whose config blob holds the records), since kiln's cache keys are not
//! BuildKit's. Credentials come from the attributes, then `AWS_*`
//! variables, then the shared credentials file; every message that leaves
//! this module passes through [`Client::redact`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, RetryConfig};
use oci_spec::image::Descriptor;
use serde_json::Value;

use super::manifest::{config_desc, read_records, Layers};
use super::object_options::{ObjectCache, ObjectKind, Secret};
use super::{Error, Records};
use crate::{Digest, Root};

/// A connection to an object-store cache, with the credentials it must
/// keep out of messages.
pub(crate) struct Client {
    pub cache: ObjectCache,
    store: Arc<dyn ObjectStore>,
    secrets: Vec<String>,
}

/// `$AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
/// `$AWS_PROFILE` or `default`: (access key id, secret, session token).
fn shared_credentials() -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile = name == profile || name == format!("profile {profile}");
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// An endpoint with the bucket in its host name (virtual-hosted style).
fn virtual_host(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}

impl Client {
    /// Connects (lazily: no request is made) to the store `cache` names.
    pub(crate) fn new(cache: &ObjectCache) -> Result<Client, Error> {
        let mut cache = cache.clone();
        let what = format!("{} cache", cache.kind.name());
        let conf = |m: String| Error::Object {
            what: what.clone(),
            message: m,
        };
        if cache.kind == ObjectKind::S3 {
            if cache.bucket.is_none() {
                cache.bucket = env("AWS_BUCKET");
            }
            if cache.region.is_none() {
                cache.region = env("AWS_REGION");
            }
            if cache.endpoint_url.is_none() {
                cache.endpoint_url = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
            }
            if cache.access_key_id.is_none() || cache.secret_access_key.is_none() {
                let from_env = env("AWS_ACCESS_KEY_ID")
                    .zip(env("AWS_SECRET_ACCESS_KEY"))
                    .map(|(i, s)| (i, s, env("AWS_SESSION_TOKEN")));
                if let Some((i, s, t)) = from_env.or_else(shared_credentials) {
                    cache.access_key_id = Some(Secret::new(i));
                    cache.secret_access_key = Some(Secret::new(s));
                    cache.session_token = t.map(Secret::new);
                }
            }
        }
        let bucket = cache
            .bucket
            .clone()
            .ok_or_else(|| conf("bucket ($AWS_BUCKET) not set for s3 cache".into()))?;
        let retry = RetryConfig {
            max_retries: cache.max_retries,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        };
        let secrets: Vec<String> = [
            &cache.access_key_id,
            &cache.secret_access_key,
            &cache.session_token,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .filter(|s| !s.is_empty())
        .collect();
        let store: Result<Arc<dyn ObjectStore>, object_store::Error> = match cache.kind {
            ObjectKind::S3 => {
                let region = cache
                    .region
                    .clone()
                    .ok_or_else(|| conf("region ($AWS_REGION) not set for s3 cache".into()))?;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(region)
                    .with_retry(retry);
                match &cache.endpoint_url {
                    Some(e) => {
                        b = b
                            .with_allow_http(e.starts_with("http://"))
                            .with_virtual_hosted_style_request(!cache.use_path_style);
                        b = b.with_endpoint(if cache.use_path_style {
                            e.clone()
                        } else {
                            virtual_host(e, &bucket)
                        });
                    }
                    None => b = b.with_virtual_hosted_style_request(!cache.use_path_style),
                }
                if let (Some(i), Some(s)) = (&cache.access_key_id, &cache.secret_access_key) {
                    b = b
                        .with_access_key_id(i.expose())
                        .with_secret_access_key(s.expose());
                    if let Some(t) = &cache.session_token {
                        b = b.with_token(t.expose());
                    }
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            ObjectKind::Azblob => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry);
                if let Some(u) = &cache.endpoint_url {
                    // `https://<account>.blob.core.windows.net`
                    let account = u
                        .split_once("://")
                        .map_or(u.as_str(), |(_, r)| r)
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    b = b
                        .with_account(account)
                        .with_endpoint(u.clone())
                        .with_allow_http(u.starts_with("http://"));
                }
                if let Some(s) = &cache.secret_access_key {
                    b = b.with_access_key(s.expose());
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            ObjectKind::Gcs => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry);
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
        };
        let mut c = Client {
            cache,
            store: Arc::new(object_store::memory::InMemory::new()),
            secrets,
        };
        c.store = store.map_err(|e| c.err("configuring the client", e))?;
        Ok(c)
    }

    /// `s` with every credential replaced by `***`.
    pub(crate) fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Object {
            what: format!("{} {what}", self.cache.display()),
            message: self.redact(&e.to_string()),
        }
    }

    /// Reads the manifest named first (as BuildKit), its config, and the
    /// records and layers they list. A missing manifest is an empty cache.
    pub(crate) async fn read(&self, root: &Root) -> Result<Option<(Records, Layers)>, Error> {
        let name = self.cache.names.first().cloned().unwrap_or_default();
        let key = self.cache.manifest_key(&name);
        let bytes = match self.store.get(&ObjPath::from(key.as_str())).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.err(&format!("reading {key}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(&format!("reading {key}"), e)),
        };
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("cache manifest {key}: {e}")))?;
        let (cd, size, mt) = config_desc(&doc)?;
        self.fetch(root, &cd, size).await?;
        let config = root.blobs().read(&cd)?;
        read_records(&doc, &mt, &config).map(Some)
    }

    /// Downloads a blob into the store, verified by digest and size.
    pub(crate) async fn fetch(&self, root: &Root, digest: &Digest, size: u64) -> Result<(), Error> {
        if root.blobs().has(digest) {
            return Ok(());
        }
        let key = self.cache.blob_key(digest);
        let what = format!("reading {key}");
        let got = self
            .store
            .get(&ObjPath::from(key.as_str()))
            .await
            .map_err(|e| self.err(&what, e))?;
        let mut w = root
            .blobs()
            .writer(Some(digest), (size > 0).then_some(size))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.err(&what, e))? {
            std::io::Write::write_all(&mut w, &chunk).map_err(|e| self.err(&what, e))?;
        }
        w.commit().map_err(|e| Error::Copy {
            path: PathBuf::from(&key),
            source: Box::new(e),
        })?;
        Ok(())
    }

    /// Whether the bucket holds the blob `d` of `size` bytes, fresh enough
    /// that a push would not write it again (see [`Client::push`]): a cache
    /// export may then name it without having it locally.
    pub(crate) async fn has_fresh(&self, d: &Digest, size: u64) -> bool {
        let key = self.cache.blob_key(d);
        match self.store.head(&ObjPath::from(key.as_str())).await {
            Ok(meta) => meta.size == size && self.fresh(&meta),
            Err(_) => false,
        }
    }

    /// Whether an object is younger than `touch_refresh`.
    fn fresh(&self, meta: &object_store::ObjectMeta) -> bool {
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|n| n.as_secs() as i64)
            .unwrap_or(0)
            - meta.last_modified.timestamp();
        age < 0 || (age as u64) < self.cache.touch_refresh.as_secs()
    }

    /// Uploads the cache manifest `desc` (its layers compressed as they
    /// travel): each blob the bucket lacks (HEAD first; one older than
    /// `touch_refresh` is written again so expiry rules keep it), then the
    /// manifest under every name. A blob the bucket has need not be local.
    pub(crate) async fn push(&self, root: &Root, desc: &Descriptor) -> Result<Pushed, Error> {
        let md: Digest = desc.digest().to_string().parse()?;
        let manifest_bytes = root.blobs().read(&md)?;
        let doc: Value =
            serde_json::from_slice(&manifest_bytes).map_err(|e| Error::Format(e.to_string()))?;
        let mut wanted: Vec<Digest> = Vec::new();
        for d in
            std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten())
        {
            let d: Digest = d["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Format(format!("cache manifest {md}: bad blob digest")))?;
            if !wanted.contains(&d) {
                wanted.push(d);
            }
        }
        let uploaded = AtomicUsize::new(0);
        let existed = AtomicUsize::new(0);
        let touched = AtomicUsize::new(0);
        futures::stream::iter(wanted.iter().map(Ok::<_, Error>))
            .try_for_each_concurrent(self.cache.upload_parallelism, |d| {
                let (uploaded, existed, touched) = (&uploaded, &existed, &touched);
                async move {
                    let key = self.cache.blob_key(d);
                    let path = ObjPath::from(key.as_str());
                    let head = self.store.head(&path).await;
                    if !root.blobs().has(d) {
                        // Named because the bucket has it (see `reuse`).
                        return match head {
                            Ok(_) => {
                                existed.fetch_add(1, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(e) => Err(self.err(&format!("checking {key}"), e)),
                        };
                    }
                    let size = root.blobs().size(d)?;
                    match head {
                        Ok(meta) if meta.size == size => {
                            if self.fresh(&meta) {
                                existed.fetch_add(1, Ordering::Relaxed);
                                return Ok(());
                            }
                            self.upload(root, d, &key).await?;
                            touched.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                            self.upload(root, d, &key).await?;
                            uploaded.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Err(e) => Err(self.err(&format!("checking {key}"), e)),
                    }
                }
            })
            .await?;
        for name in &self.cache.names {
            let key = self.cache.manifest_key(name);
            self.store
                .put(&ObjPath::from(key.as_str()), manifest_bytes.clone().into())
                .await
                .map_err(|e| self.err(&format!("writing manifest {key}"), e))?;
        }
        Ok(Pushed {
            uploaded: uploaded.into_inner(),
            existed: existed.into_inner(),
            touched: touched.into_inner(),
        })
    }

    /// Streams the stored blob `d` to `key` (multipart when large).
    async fn upload(&self, root: &Root, d: &Digest, key: &str) -> Result<(), Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let what = format!("writing {key}");
        let path = root.blobs().path(d);
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(Error::io("opening", &path))?;
        let mut w = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            ObjPath::from(key),
            8 * 1024 * 1024,
        );
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(Error::io("reading", &path))?;
            if n == 0 {
                break;
            }
            if let Err(e) = w.write_all(buf.get(..n).unwrap_or_default()).await {
                let _ = w.abort().await;
                return Err(self.err(&what, e));
            }
        }
        w.shutdown().await.map_err(|e| self.err(&what, e))?;
        Ok(())
    }
}

/// What a push did.
pub(crate) struct Pushed {
    pub uploaded: usize,
    pub existed: usize,
    pub touched: usize,
}
