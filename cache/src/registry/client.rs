//! One authenticated HTTP conversation with one repository on one registry.
//!
//! Built on reqwest (rustls, streaming bodies) over tokio rather than a
//! registry client crate: kiln needs to stream blobs straight into its own
//! verifying `BlobWriter`, push from files with chunked uploads and
//! cross-repository mounts, and keep every byte of a manifest as the
//! registry sent it (its digest is its identity) — oci-client re-serialises
//! manifests and buffers blobs through its own types, so the thin layer
//! here is both smaller and faster.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use super::auth::{parse_challenges, Challenge, TokenReply};
use super::config::{api_host, RegistryConfig, Transport};
use super::credentials::{Credentials, Secret};
use super::error::RegistryError;

/// How a request proves who it is, once the registry has said what it wants.
#[derive(Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(Secret),
}

/// A connection to one repository of a registry (or a mirror standing in
/// for it), with the auth state its requests share.
pub struct Endpoint {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// The registry as the user named it, for messages.
    registry: String,
    /// The repository path (`library/busybox`).
    repository: String,
    creds: Option<Credentials>,
    /// Token scopes (`repository:x:pull,push`) asked for up front.
    scopes: Vec<String>,
    auth: Mutex<(Auth, Option<Challenge>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .field("user", &self.creds.as_ref().map(|c| c.username.as_str()))
            .finish()
    }
}

/// The innermost cause of an error chain, which for a failed connection is
/// the useful part ("Connection refused (os error 111)").
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn http_client(insecure_tls: bool) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(insecure_tls)
        .connect_timeout(Duration::from_secs(30))
        // A server that stops sending mid-blob must not hang a pull forever;
        // the retry starts the blob over.
        .read_timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(16)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| RegistryError::Protocol {
            registry: String::new(),
            what: "setting up HTTP".into(),
            detail: root_cause(&e),
        })
}

/// The base URLs to try for `registry`, mirrors first.
pub(crate) fn candidates(
    config: &RegistryConfig,
    registry: &str,
    use_mirrors: bool,
) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if use_mirrors {
        for m in config.mirrors_for(registry) {
            let host = m.split("://").nth(1).unwrap_or(&m).to_string();
            if m.starts_with("http://") {
                out.push((m.clone(), false));
            } else if m.starts_with("https://") {
                out.push((m.clone(), config.transport(&host) != Transport::Https));
            } else {
                match config.transport(&host) {
                    Transport::Http => out.push((format!("http://{m}"), false)),
                    Transport::Insecure => {
                        out.push((format!("https://{m}"), true));
                        out.push((format!("http://{m}"), false));
                    }
                    Transport::Https => out.push((format!("https://{m}"), false)),
                }
            }
        }
    }
    let host = api_host(registry);
    match config.transport(host) {
        Transport::Http => out.push((format!("http://{host}"), false)),
        Transport::Insecure => {
            out.push((format!("https://{host}"), true));
            out.push((format!("http://{host}"), false));
        }
        Transport::Https => out.push((format!("https://{host}"), false)),
    }
    out
}

impl Endpoint {
    /// Connects to the first of `bases` that answers `/v2/`, learning its
    /// auth challenge and, for bearer auth, fetching a token for `scopes`.
    pub async fn connect(
        registry: &str,
        repository: &str,
        bases: &[(String, bool)],
        creds: Option<Credentials>,
        scopes: Vec<String>,
    ) -> Result<Endpoint, RegistryError> {
        let mut last = None;
        for (base, insecure_tls) in bases {
            let http = http_client(*insecure_tls)?;
            let ep = Endpoint {
                http,
                base: base.clone(),
                registry: registry.to_string(),
                repository: repository.to_string(),
                creds: creds.clone(),
                scopes: scopes.clone(),
                auth: Mutex::new((Auth::Anonymous, None)),
            };
            match ep.ping().await {
                Ok(()) => return Ok(ep),
                Err(e @ RegistryError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Connect {
            registry: registry.to_string(),
            url: String::new(),
            detail: "no address to try".into(),
        }))
    }

    /// The registry as named by the user.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository this endpoint serves.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The base URL actually used (a mirror's, or the registry's).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base/v2/<repository>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.repository, rest)
    }

    /// Resolves a `Location` header, which may be relative, against the base.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{}", self.base, location)
        } else {
            format!("{}/{}", self.base, location)
        }
    }

    fn connect_error(&self, url: &str, e: &reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            registry: self.registry.clone(),
            url: url.to_string(),
            detail: root_cause(e),
        }
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.connect_error(&url, &e))?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => {
                let challenge = self.challenge_of(&resp);
                self.authenticate(challenge).await
            }
            s if s.is_success() => Ok(()),
            // Some registries answer 404 on /v2/ yet serve the API: go on
            // anonymously and let the real requests say what they think.
            StatusCode::NOT_FOUND => Ok(()),
            s => Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("GET {url}"),
                detail: format!("status {s}"),
            }),
        }
    }

    fn challenge_of(&self, resp: &Response) -> Option<Challenge> {
        let mut all = Vec::new();
        for v in resp.headers().get_all(header::WWW_AUTHENTICATE) {
            if let Ok(s) = v.to_str() {
                all.extend(parse_challenges(s));
            }
        }
        // Prefer bearer: it works anonymously and keeps the password at
        // the token server.
        all.iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| all.iter().find(|c| c.scheme == "basic"))
            .cloned()
    }

    /// Acts on a challenge: basic needs credentials, bearer a token.
    async fn authenticate(&self, challenge: Option<Challenge>) -> Result<(), RegistryError> {
        let Some(ch) = challenge else {
            return Err(self.unauthorized("the registry API", ""));
        };
        let auth = match ch.scheme.as_str() {
            "basic" => {
                if self.creds.is_none() {
                    return Err(self.unauthorized(
                        &self.subject(),
                        &format!(" (it wants a login: run `kiln login {}`)", self.registry),
                    ));
                }
                Auth::Basic
            }
            "bearer" => Auth::Bearer(self.fetch_token(&ch).await?),
            other => {
                return Err(RegistryError::Protocol {
                    registry: self.registry.clone(),
                    what: "authentication".into(),
                    detail: format!("unsupported auth scheme {other:?}"),
                })
            }
        };
        *self.auth.lock().await = (auth, Some(ch));
        Ok(())
    }

    /// What a refusal is about: the repository, or the login itself.
    fn subject(&self) -> String {
        if self.repository.is_empty() {
            "the login".to_string()
        } else {
            format!("repository {}", self.repository)
        }
    }

    fn unauthorized(&self, what: &str, hint: &str) -> RegistryError {
        let hint = if hint.is_empty() && self.creds.is_none() {
            format!(
                " (no credentials for it: run `kiln login {}`)",
                self.registry
            )
        } else if hint.is_empty() {
            format!(
                " (as user {:?})",
                self.creds
                    .as_ref()
                    .map(|c| c.username.as_str())
                    .unwrap_or("")
            )
        } else {
            hint.to_string()
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            what: what.to_string(),
            hint,
        }
    }

    async fn fetch_token(&self, ch: &Challenge) -> Result<Secret, RegistryError> {
        let realm = ch.param("realm").ok_or_else(|| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: "authentication".into(),
            detail: "bearer challenge without a realm".into(),
        })?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = ch.param("service") {
            query.push(("service", service));
        }
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        if let Some(s) = ch.param("scope") {
            for part in s.split(' ') {
                if !scopes.contains(&part) {
                    scopes.push(part);
                }
            }
        }
        for s in &scopes {
            query.push(("scope", s));
        }
        let req = match &self.creds {
            // An identity token (docker's `<token>` user, from
            // `identitytoken` or a helper) is an OAuth2 refresh token: it
            // goes to the realm in a POST form, never as a password.
            Some(c) if c.username == "<token>" => {
                let scope = scopes.join(" ");
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", c.password.expose()),
                    ("client_id", "kiln"),
                    ("scope", &scope),
                ];
                if let Some(service) = ch.param("service") {
                    form.push(("service", service));
                }
                self.http.post(realm).form(&form)
            }
            Some(c) => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(&c.username, Some(c.password.expose())),
            None => self.http.get(realm).query(&query),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.connect_error(realm, &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(
                self.unauthorized(&format!("{} (token server {realm})", self.subject()), "")
            );
        }
        if !status.is_success() {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("token request to {realm}"),
                detail: format!("status {status}"),
            });
        }
        let reply: TokenReply = resp.json().await.map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: format!("token request to {realm}"),
            detail: root_cause(&e),
        })?;
        reply
            .into_token()
            .map(Secret::new)
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("token request to {realm}"),
                detail: "the answer holds no token".into(),
            })
    }

    async fn apply_auth(&self, req: RequestBuilder) -> RequestBuilder {
        let (auth, _) = &*self.auth.lock().await;
        match auth {
            Auth::Anonymous => req,
            Auth::Basic => match &self.creds {
                Some(c) => req.basic_auth(&c.username, Some(c.password.expose())),
                None => req,
            },
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }

    /// Sends the request that `make` builds, authenticating; on a 401 (an
    /// expired token, a wider scope needed) it re-authenticates once and
    /// sends a fresh request from `make`, which is why bodies are built by
    /// a closure rather than passed in.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut retried = false;
        loop {
            let req = make(self.http.request(method.clone(), url));
            let req = self.apply_auth(req).await;
            let resp = req.send().await.map_err(|e| self.connect_error(url, &e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                let ch = self.challenge_of(&resp);
                self.authenticate(ch).await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(self.unauthorized(&format!("{} ({method} {url})", self.subject()), ""));
            }
            return Ok(resp);
        }
    }

    /// Turns an unexpected answer into the error a user can act on, reading
    /// the registry's `{"errors":[{"code","message"}]}` body for detail.
    pub async fn fail(&self, resp: Response, what: &str, reference: &str) -> RegistryError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let (code, message) = registry_error_of(&body);
        let detail = match (&code, &message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => format!("status {status}"),
        };
        let code = code.unwrap_or_default();
        match status {
            StatusCode::NOT_FOUND
                if code.is_empty()
                    || code == "MANIFEST_UNKNOWN"
                    || code == "NAME_UNKNOWN"
                    || code == "BLOB_UNKNOWN" =>
            {
                RegistryError::NotFound {
                    reference: reference.to_string(),
                    registry: self.registry.clone(),
                    detail,
                }
            }
            StatusCode::UNAUTHORIZED => self.unauthorized(&format!("{what} of {reference}"), ""),
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.registry.clone(),
                what: format!("{what} of {reference}"),
                detail,
            },
            _ => RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("{what} of {reference}"),
                detail: format!("{detail} (HTTP {status})"),
            },
        }
    }
}

/// The first `{code, message}` of a registry error body.
fn registry_error_of(body: &str) -> (Option<String>, Option<String>) {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => {
            let t = body.trim();
            return (
                None,
                (!t.is_empty() && t.len() < 200).then(|| t.to_string()),
            );
        }
    };
    let first = v.get("errors").and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .map(str::to_string);
    let message = first
        .and_then(|e| e.get("message"))
        .and_then(|c| c.as_str())
        .map(str::to_string);
    (code, message)
}

/// Checks a login against a registry the way `docker login` does: `/v2/`
/// must accept the credentials (for bearer auth: the token server must).
pub async fn verify_login(
    config: &RegistryConfig,
    registry: &str,
    creds: &Credentials,
) -> Result<(), RegistryError> {
    let bases = candidates(config, registry, false);
    let ep = Endpoint::connect(registry, "", &bases, Some(creds.clone()), Vec::new()).await?;
    let url = format!("{}/v2/", ep.base);
    let resp = ep.send(Method::GET, &url, |r| r).await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(ep.fail(resp, "login", registry).await)
    }
}

/// Shared handle so parallel transfers reuse one endpoint and its token.
pub type SharedEndpoint = Arc<Endpoint>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_to_try() {
        let cfg: RegistryConfig = serde_json::from_str(
            r#"{"insecure-registries":["reg.lan:5000"],"registry-mirrors":["mirror.lan","http://127.0.0.1:5000/"]}"#,
        )
        .unwrap();
        let urls = |r: &str, m: bool| -> Vec<(String, bool)> { candidates(&cfg, r, m) };
        assert_eq!(
            urls("reg.lan:5000", true),
            vec![
                ("https://reg.lan:5000".to_string(), true),
                ("http://reg.lan:5000".to_string(), false)
            ]
        );
        assert_eq!(
            urls("127.0.0.1:5000", true),
            vec![("http://127.0.0.1:5000".to_string(), false)]
        );
        assert_eq!(
            urls("docker.io", true),
            vec![
                ("https://mirror.lan".to_string(), false),
                ("http://127.0.0.1:5000".to_string(), false),
                ("https://registry-1.docker.io".to_string(), false)
            ]
        );
        assert_eq!(
            urls("docker.io", false),
            vec![("https://registry-1.docker.io".to_string(), false)]
        );
    }

    #[test]
    fn registry_error_bodies() {
        let (c, m) = registry_error_of(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(
            (c.as_deref(), m.as_deref()),
            (Some("MANIFEST_UNKNOWN"), Some("manifest unknown"))
        );
        assert_eq!(
            registry_error_of("404 page not found\n"),
            (None, Some("404 page not found".into()))
        );
        assert_eq!(registry_error_of(""), (None, None));
    }
}
