//! `ADD <http(s) url>`: the download behind [`kiln_solver::ops::BuildOp::Http`],
//! as BuildKit's http source does it. The body is streamed to a file (never
//! held in memory) while its digests are computed; `--checksum` is checked
//! against the matching one; `Last-Modified` becomes the file's mtime.
//!
//! A build downloads each URL at most once: the cache key needs the
//! content's digest before the step runs (when no checksum names it), and
//! the step then reuses that same download.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::AsyncWriteExt;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("failed to download {url}: {detail}")]
    Request { url: String, detail: String },
    #[error("failed to download {url}: invalid response status {status}")]
    Status { url: String, status: String },
    #[error(
        "digest mismatch for {url}: downloaded content is {actual}, --checksum expects {expected}"
    )]
    Mismatch {
        url: String,
        actual: String,
        expected: String,
    },
    #[error("unsupported checksum {0:?} (want sha256:, sha384: or sha512: and hex)")]
    BadChecksum(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One downloaded body, kept in the worker's scratch space for the build.
#[derive(Debug, Clone)]
pub struct Download {
    /// The file holding the body.
    pub path: PathBuf,
    /// `sha256:<hex>` of the body: the content's identity in cache keys.
    pub sha256: String,
    /// The `Last-Modified` header, when the server sent a valid one.
    pub last_modified: Option<SystemTime>,
}

/// The downloads of one build, by URL, and the client that makes them.
pub struct Downloads {
    client: Option<reqwest::Client>,
    done: Mutex<HashMap<String, Arc<Download>>>,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads::new()
    }
}

impl Downloads {
    /// No downloads yet. The client honours the usual proxy variables, as
    /// BuildKit's does.
    pub fn new() -> Downloads {
        Downloads {
            client: reqwest::Client::builder().build().ok(),
            done: Mutex::new(HashMap::new()),
        }
    }

    /// This build's download of `url`, if it made one already.
    pub fn get(&self, url: &str) -> Option<Arc<Download>> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.get(url).cloned()
    }

    /// Downloads `url` into `dir` (an empty scratch folder) unless this
    /// build did already, and verifies `checksum` when given.
    pub async fn fetch(
        &self,
        url: &str,
        checksum: Option<&str>,
        dir: impl FnOnce() -> Result<PathBuf, HttpError>,
    ) -> Result<Arc<Download>, HttpError> {
        let d = match self.get(url) {
            Some(d) => d,
            None => {
                let d = Arc::new(self.download(url, &dir()?.join("body")).await?);
                let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
                done.entry(url.to_string()).or_insert(d).clone()
            }
        };
        if let Some(c) = checksum {
            verify(url, &d.path, &d.sha256, c)?;
        }
        Ok(d)
    }

    async fn download(&self, url: &str, path: &Path) -> Result<Download, HttpError> {
        let req_err = |e: reqwest::Error| HttpError::Request {
            url: url.to_string(),
            detail: error_chain(&e),
        };
        let client = self.client.as_ref().ok_or_else(|| HttpError::Request {
            url: url.to_string(),
            detail: "no HTTP client could be set up".into(),
        })?;
        let mut resp = client.get(url).send().await.map_err(req_err)?;
        if !resp.status().is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                status: resp.status().to_string(),
            });
        }
        let last_modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let io = |what| {
            move |source| HttpError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io("create"))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(req_err)? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io("write"))?;
        }
        file.flush().await.map_err(io("write"))?;
        Ok(Download {
            path: path.to_path_buf(),
            sha256: format!("sha256:{}", hex::encode(hasher.finalize())),
            last_modified,
        })
    }
}

/// Checks the body against `--checksum` (sha256 is known already; sha384
/// and sha512 are computed from the file).
fn verify(url: &str, path: &Path, sha256: &str, expected: &str) -> Result<(), HttpError> {
    let actual = match expected.split_once(':') {
        Some(("sha256", _)) => sha256.to_string(),
        Some(("sha384", _)) => format!("sha384:{}", hex::encode(hash_file::<Sha384>(path)?)),
        Some(("sha512", _)) => format!("sha512:{}", hex::encode(hash_file::<Sha512>(path)?)),
        _ => return Err(HttpError::BadChecksum(expected.to_string())),
    };
    if actual == expected {
        Ok(())
    } else {
        Err(HttpError::Mismatch {
            url: url.to_string(),
            actual,
            expected: expected.to_string(),
        })
    }
}

fn hash_file<D: Digest + std::io::Write>(path: &Path) -> Result<Vec<u8>, HttpError> {
    let mut f = std::fs::File::open(path).map_err(|source| HttpError::Io {
        what: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = D::new();
    std::io::copy(&mut f, &mut h).map_err(|source| HttpError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(h.finalize().to_vec())
}

/// reqwest's error and its causes (the connection refusal is a cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An HTTP date in the preferred IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), as servers send `Last-Modified`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (_, rest) = s.split_once(", ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, mon, year, time, "GMT"] = f.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let t: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + (*h * 3600 + *m * 60 + *sec) as i64;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784111777);
        let t = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        assert!(parse_http_date("yesterday").is_none());
    }
}
