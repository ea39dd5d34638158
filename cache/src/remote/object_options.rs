//! The attributes of an object-store cache (`type=s3`, `type=azblob`,
//! `type=gcs`), parsed as BuildKit's `cache/remotecache/s3` reads them.
//!
//! Credentials are held as [`Secret`]s, whose `Debug` hides them, so no
//! `{:?}` of an option, error or progress line can print one.

use std::time::Duration;

use super::Error;

/// A credential: compared and cloned, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The credential itself, for the client that signs with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Which object store holds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Amazon S3 or an S3-compatible server (MinIO, Ceph, R2, s3s-fs).
    S3,
    /// Azure Blob Storage (untested: no server in the test suite).
    Azblob,
    /// Google Cloud Storage (untested: no server in the test suite).
    Gcs,
}

impl ObjectKind {
    /// The `type=` spelling.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::S3 => "s3",
            ObjectKind::Azblob => "azblob",
            ObjectKind::Gcs => "gcs",
        }
    }
}

/// Where an object-store cache lives and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCache {
    pub kind: ObjectKind,
    /// Bucket (s3, gcs) or container (azblob: `container`, default
    /// `buildkit-cache` as BuildKit's). `None` for s3: `$AWS_BUCKET`.
    pub bucket: Option<String>,
    /// `None`: `$AWS_REGION`.
    pub region: Option<String>,
    /// A non-AWS server (`http://127.0.0.1:9000`); `None`:
    /// `$AWS_ENDPOINT_URL` or AWS itself. For azblob, `account_url`.
    pub endpoint_url: Option<String>,
    /// Put before both the manifests' and the blobs' prefixes.
    pub prefix: String,
    /// Default `manifests/`.
    pub manifests_prefix: String,
    /// Default `blobs/`.
    pub blobs_prefix: String,
    /// Manifest names: an export writes each, an import reads the first
    /// (as BuildKit). Default `buildkit`.
    pub names: Vec<String>,
    /// `bucket` in the path rather than the host name (needed by most
    /// S3-compatible servers reached by IP address).
    pub use_path_style: bool,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Blobs uploaded at once (default 4).
    pub upload_parallelism: usize,
    /// A blob already in the store but older than this is rewritten, so
    /// the bucket's expiry rules keep what is used (default 24h).
    pub touch_refresh: Duration,
    /// Request attempts beyond the first (`retry_max_attempts` - 1).
    pub max_retries: usize,
}

/// The attributes each object-store type accepts (beside the generic
/// `type`, `mode`, `ignore-error`, … the caller adds).
pub(crate) const S3_ATTRS: &[&str] = &[
    "bucket",
    "region",
    "endpoint_url",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "use_path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "upload_parallelism",
    "touch_refresh",
    "disable_accept_encoding",
    "retry_mode",
    "retry_max_attempts",
];

/// BuildKit's azblob attributes.
pub(crate) const AZBLOB_ATTRS: &[&str] = &[
    "account_url",
    "secret_access_key",
    "container",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "upload_parallelism",
];

/// kiln's gcs attributes (BuildKit has no gcs cache; these mirror s3's).
pub(crate) const GCS_ATTRS: &[&str] = &[
    "bucket",
    "endpoint_url",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "upload_parallelism",
    "touch_refresh",
];

/// Whether a `type=` is an object store, and which.
pub(crate) fn kind_of(t: &str) -> Option<ObjectKind> {
    match t {
        "s3" => Some(ObjectKind::S3),
        "azblob" => Some(ObjectKind::Azblob),
        "gcs" => Some(ObjectKind::Gcs),
        _ => None,
    }
}

/// The attributes `kind` knows.
pub(crate) fn allowed(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::S3 => S3_ATTRS,
        ObjectKind::Azblob => AZBLOB_ATTRS,
        ObjectKind::Gcs => GCS_ATTRS,
    }
}

/// Attribute names whose values are credentials: never echoed.
pub(crate) const SECRET_ATTRS: &[&str] = &["access_key_id", "secret_access_key", "session_token"];

/// A Go `time.ParseDuration` spelling (`24h`, `1h30m`, `90s`, `500ms`).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n_end);
        let n: f64 = num.parse().ok()?;
        let u_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

impl ObjectCache {
    /// Reads the attributes of `kind` (already checked against
    /// [`allowed`]); `flag` names the option in errors, which never
    /// quote a credential.
    pub(crate) fn from_attrs(
        flag: &str,
        kind: ObjectKind,
        attrs: &[(String, String)],
    ) -> Result<ObjectCache, Error> {
        let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let spec = |m: String| Error::Spec(format!("{flag}: {m}"));
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let names = match get("name") {
            Some(n) if !n.is_empty() => n.split(';').map(str::to_string).collect(),
            _ => vec!["buildkit".to_string()],
        };
        let use_path_style = match get("use_path_style") {
            None => false,
            Some(v) => v
                .parse()
                .map_err(|_| spec(format!("use_path_style={v:?}: expected true or false")))?,
        };
        let upload_parallelism = match get("upload_parallelism") {
            None => 4,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| spec("upload_parallelism must be a positive integer".into()))?,
        };
        let touch_refresh = match get("touch_refresh") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_duration(v).ok_or_else(|| {
                spec(format!(
                    "touch_refresh={v:?}: expected a duration such as 24h or 30m"
                ))
            })?,
        };
        if let Some(m) = get("retry_mode") {
            if !matches!(m, "standard" | "adaptive") {
                return Err(spec(
                    "retry_mode must be \"standard\" or \"adaptive\"".into(),
                ));
            }
        }
        let max_retries =
            match get("retry_max_attempts") {
                None => 3,
                Some(v) => {
                    v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        spec("retry_max_attempts must be a positive integer".into())
                    })? - 1
                }
            };
        let (bucket, endpoint_url) = match kind {
            ObjectKind::Azblob => (
                Some(nonempty("container").unwrap_or_else(|| "buildkit-cache".into())),
                nonempty("account_url"),
            ),
            _ => (nonempty("bucket"), nonempty("endpoint_url")),
        };
        Ok(ObjectCache {
            kind,
            bucket,
            region: nonempty("region"),
            endpoint_url,
            prefix: get("prefix").unwrap_or("").to_string(),
            manifests_prefix: get("manifests_prefix").unwrap_or("manifests/").to_string(),
            blobs_prefix: get("blobs_prefix").unwrap_or("blobs/").to_string(),
            names,
            use_path_style,
            access_key_id: nonempty("access_key_id").map(Secret),
            secret_access_key: nonempty("secret_access_key").map(Secret),
            session_token: nonempty("session_token").map(Secret),
            upload_parallelism,
            touch_refresh,
            max_retries,
        })
    }

    /// The key of the manifest `name`, as BuildKit's
    /// `prefix + manifests_prefix + name`.
    pub fn manifest_key(&self, name: &str) -> String {
        format!("{}{}{name}", self.prefix, self.manifests_prefix)
    }

    /// The key of a blob, as BuildKit's `prefix + blobs_prefix + digest`
    /// (`sha256:…`).
    pub fn blob_key(&self, digest: &crate::Digest) -> String {
        format!("{}{}{digest}", self.prefix, self.blobs_prefix)
    }

    /// How the cache is named in progress and errors: the store, bucket
    /// and prefix, never a credential.
    pub fn display(&self) -> String {
        let scheme = match self.kind {
            ObjectKind::S3 => "s3",
            ObjectKind::Azblob => "azblob",
            ObjectKind::Gcs => "gs",
        };
        format!(
            "{scheme}://{}/{}",
            self.bucket.as_deref().unwrap_or("$AWS_BUCKET"),
            self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(s: &str) -> Vec<(String, String)> {
        s.split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_keys_are_buildkits() {
        let c = ObjectCache::from_attrs("--cache-to", ObjectKind::S3, &attrs("bucket=b")).unwrap();
        assert_eq!(c.names, vec!["buildkit"]);
        assert_eq!(c.manifest_key("buildkit"), "manifests/buildkit");
        let d: crate::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(c.blob_key(&d), format!("blobs/sha256:{}", "a".repeat(64)));
        assert_eq!(c.touch_refresh, Duration::from_secs(86400));
        let c = ObjectCache::from_attrs(
            "--cache-to",
            ObjectKind::S3,
            &attrs("bucket=b,prefix=p/,name=x;y,touch_refresh=1h30m,secret_access_key=TOPSECRET"),
        )
        .unwrap();
        assert_eq!(c.names, vec!["x", "y"]);
        assert_eq!(c.manifest_key("y"), "p/manifests/y");
        assert_eq!(c.touch_refresh, Duration::from_secs(5400));
        assert!(!format!("{c:?}").contains("TOPSECRET"));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1x"), None);
    }
}
