//! One authenticated HTTP conversation with one repository on one registry.
//!
//! Built on reqwest (rustls, streaming bodies) over tokio rather than a
//! registry client crate: kiln needs to stream blobs straight into its own
//! verifying `BlobWriter`, push from files with chunked uploads and
//! cross-repository mounts, and keep every byte of a manifest as the
//! registry sent it (its digest is its identity) — oci-client re-serialises
//! manifests and buffers blobs through its own types, so the thin layer
//! here is both smaller and faster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderValue;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use tokio::sync::Mutex;

use super::auth::{parse_challenges, Challenge, TokenReply};
use super::config::{api_host, RegistryConfig, Timeouts, Transport};
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
    /// `base` parsed: its origin (scheme, host, port) is the only one that
    /// is sent the registry credentials.
    base_url: Url,
    /// How long requests may take.
    timeouts: Timeouts,
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

/// `METHOD host:port/path` for messages: enough to tell which of the
/// hosts a transfer touches (registry, token server, blob storage)
/// answered what, without the query, which for blob storage often holds
/// a signed access token.
pub fn describe(method: &Method, url: &Url) -> String {
    format!("{method} {}", location(url))
}

/// `host:port/path` of a URL (no scheme, no query).
fn location(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

/// When bytes last moved on one request. The stall timeout is measured
/// from it; an upload body touches it each time the connection takes a
/// chunk, so a long upload that keeps moving is not a stall while the
/// response has not begun.
#[derive(Clone, Debug)]
pub struct Activity(Arc<std::sync::Mutex<Instant>>);

impl Activity {
    /// Activity starting now.
    pub fn new() -> Activity {
        Activity(Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    /// Bytes moved just now.
    pub fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Instant::now();
        }
    }

    /// How long since bytes last moved.
    fn idle(&self) -> Duration {
        self.0.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// Redirects followed for one request, as many as reqwest's default.
const MAX_REDIRECTS: usize = 10;

fn http_client(insecure_tls: bool, timeouts: &Timeouts) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(insecure_tls)
        .connect_timeout(timeouts.connect)
        // Redirects are followed by `Endpoint::follow`, which decides per
        // hop whether the credentials go along (only to their own origin)
        // whatever reqwest's version does; and no reqwest read timeout:
        // its wait for the response is not reset while a long upload is
        // still moving, so the stall timeout is kept by kiln itself.
        .redirect(reqwest::redirect::Policy::none())
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
        Self::connect_with(
            registry,
            repository,
            bases,
            creds,
            scopes,
            Timeouts::default(),
        )
        .await
    }

    /// [`Endpoint::connect`] with the timeouts of the configuration.
    pub async fn connect_with(
        registry: &str,
        repository: &str,
        bases: &[(String, bool)],
        creds: Option<Credentials>,
        scopes: Vec<String>,
        timeouts: Timeouts,
    ) -> Result<Endpoint, RegistryError> {
        let mut last = None;
        for (base, insecure_tls) in bases {
            let http = http_client(*insecure_tls, &timeouts)?;
            let base_url = Url::parse(base).map_err(|e| RegistryError::Connect {
                registry: registry.to_string(),
                url: base.clone(),
                detail: e.to_string(),
            })?;
            let ep = Endpoint {
                http,
                base: base.clone(),
                base_url,
                timeouts,
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

    /// The timeouts this endpoint keeps.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn connect_error(&self, url: &Url, e: &reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            registry: self.registry.clone(),
            url: format!("{}://{}", url.scheme(), location(url)),
            detail: root_cause(e),
        }
    }

    fn parse_url(&self, url: &str) -> Result<Url, RegistryError> {
        Url::parse(url).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: format!("request to {url:?}"),
            detail: e.to_string(),
        })
    }

    /// Whether `url` is on the registry's own origin (scheme, host, port),
    /// the only one its credentials are for.
    fn is_own(&self, url: &Url) -> bool {
        url.origin() == self.base_url.origin()
    }

    /// Runs `fut`, failing with [`RegistryError::Stalled`] once `activity`
    /// has been idle for the stall timeout.
    async fn watch<T>(
        &self,
        request: impl Fn() -> String,
        activity: &Activity,
        fut: impl Future<Output = T>,
    ) -> Result<T, RegistryError> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let idle = activity.idle();
            if idle >= self.timeouts.stall {
                return Err(self.stalled(request()));
            }
            if let Ok(out) = tokio::time::timeout(self.timeouts.stall - idle, &mut fut).await {
                return Ok(out);
            }
        }
    }

    fn stalled(&self, request: String) -> RegistryError {
        RegistryError::Stalled {
            registry: self.registry.clone(),
            request,
            after: self.timeouts.stall,
        }
    }

    /// Runs a small request — `fut` sends it and reads its whole answer —
    /// within the small-object deadline: a manifest or a token has no
    /// reason to take long, so one that trickles in is as broken as one
    /// that never comes.
    pub async fn deadline<T>(
        &self,
        request: impl Fn() -> String,
        fut: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.timeouts.small, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out(request())),
        }
    }

    /// The error of a small request past its deadline.
    pub fn timed_out(&self, request: String) -> RegistryError {
        RegistryError::TimedOut {
            registry: self.registry.clone(),
            request,
            after: self.timeouts.small,
        }
    }

    /// The next chunk of a response body, or [`RegistryError::Stalled`]
    /// if none comes within the stall timeout; `request` names it.
    pub async fn next_chunk<S, B>(
        &self,
        stream: &mut S,
        request: impl Fn() -> String,
    ) -> Result<Option<Result<B, reqwest::Error>>, RegistryError>
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Unpin,
    {
        tokio::time::timeout(self.timeouts.stall, stream.next())
            .await
            .map_err(|_| self.stalled(request()))
    }

    /// Sends what `make` builds to `start`, following redirects by hand:
    /// `auth`, an `Authorization` value with the URL whose origin it was
    /// issued for, goes only to that origin — an upload `Location` or a
    /// blob redirect to other storage gets none, as with docker. GET and
    /// HEAD follow every redirect; other methods only a 307 or 308 within
    /// the same origin, which keeps the method and (rebuilt by `make`) the
    /// body. Returns the final answer and its URL.
    async fn follow<F>(
        &self,
        method: &Method,
        start: Url,
        activity: &Activity,
        make: &F,
        auth: Option<(&Url, &HeaderValue)>,
    ) -> Result<(Response, Url), RegistryError>
    where
        F: Fn(RequestBuilder) -> RequestBuilder,
    {
        let mut url = start;
        let mut hops = 0;
        loop {
            let mut req = make(self.http.request(method.clone(), url.clone()));
            if let Some((owner, value)) = auth {
                if url.origin() == owner.origin() {
                    req = req.header(header::AUTHORIZATION, value.clone());
                }
            }
            activity.touch();
            let resp = self
                .watch(|| describe(method, &url), activity, req.send())
                .await?
                .map_err(|e| self.connect_error(&url, &e))?;
            activity.touch();
            let status = resp.status();
            let next = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            // A body may itself hold a secret (an identity token's form):
            // it is re-sent to its own origin only.
            let followed = |next: &Url| {
                status.is_redirection()
                    && (*method == Method::GET
                        || *method == Method::HEAD
                        || ((status == StatusCode::TEMPORARY_REDIRECT
                            || status == StatusCode::PERMANENT_REDIRECT)
                            && next.origin() == url.origin()))
            };
            match next {
                Some(next) if followed(&next) => {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(RegistryError::Protocol {
                            registry: self.registry.clone(),
                            what: describe(method, &url),
                            detail: format!("more than {MAX_REDIRECTS} redirects"),
                        });
                    }
                    url = next;
                }
                _ => return Ok((resp, url)),
            }
        }
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.parse_url(&format!("{}/v2/", self.base))?;
        let request = || describe(&Method::GET, &url);
        let resp = self
            .deadline(request, async {
                let (resp, _) = self
                    .follow(&Method::GET, url.clone(), &Activity::new(), &|r| r, None)
                    .await?;
                Ok(resp)
            })
            .await?;
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
                what: request(),
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
        let realm_url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: "authentication".into(),
            detail: format!("bearer realm {realm:?}: {e}"),
        })?;
        let scope = scopes.join(" ");
        // An identity token (docker's `<token>` user, from `identitytoken`
        // or a helper) is an OAuth2 refresh token: it goes to the realm in
        // a POST form, never as a password.
        let identity = self.creds.as_ref().filter(|c| c.username == "<token>");
        let mut form: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = identity {
            form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", c.password.expose()),
                ("client_id", "kiln"),
                ("scope", &scope),
            ];
            if let Some(service) = ch.param("service") {
                form.push(("service", service));
            }
        }
        let method = if identity.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let make = |r: RequestBuilder| {
            if identity.is_some() {
                r.form(&form)
            } else {
                r.query(&query)
            }
        };
        // A login goes to the token server the registry named (its realm,
        // as docker does), and to no host a redirect of it leads to.
        let basic = match &self.creds {
            Some(c) if identity.is_none() => Some(basic_header(c)?),
            _ => None,
        };
        let request = || describe(&method, &realm_url);
        let what = || format!("token request to {}", location(&realm_url));
        self.deadline(request, async {
            let (resp, _) = self
                .follow(
                    &method,
                    realm_url.clone(),
                    &Activity::new(),
                    &make,
                    basic.as_ref().map(|b| (&realm_url, b)),
                )
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(self.unauthorized(
                    &format!("{} (token server {})", self.subject(), location(&realm_url)),
                    "",
                ));
            }
            if !status.is_success() {
                return Err(RegistryError::Protocol {
                    registry: self.registry.clone(),
                    what: what(),
                    detail: format!("status {status}"),
                });
            }
            let reply: TokenReply = resp.json().await.map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                what: what(),
                detail: root_cause(&e),
            })?;
            reply
                .into_token()
                .map(Secret::new)
                .ok_or_else(|| RegistryError::Protocol {
                    registry: self.registry.clone(),
                    what: what(),
                    detail: "the answer holds no token".into(),
                })
        })
        .await
    }

    /// The `Authorization` value for the registry's own origin, if any.
    async fn auth_header(&self) -> Result<Option<HeaderValue>, RegistryError> {
        let (auth, _) = &*self.auth.lock().await;
        match auth {
            Auth::Anonymous => Ok(None),
            Auth::Basic => match &self.creds {
                Some(c) => basic_header(c).map(Some),
                None => Ok(None),
            },
            Auth::Bearer(t) => secret_header(&format!("Bearer {}", t.expose())).map(Some),
        }
    }

    /// Sends the request that `make` builds, authenticating; on a 401 (an
    /// expired token, a wider scope needed) it re-authenticates once and
    /// sends a fresh request from `make`, which is why bodies are built by
    /// a closure rather than passed in. Credentials go to the registry's
    /// own origin only (see [`Endpoint::follow`]); a 401 from another host
    /// is returned as it is, for the caller to report.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        self.send_with(method, url, &Activity::new(), make).await
    }

    /// [`Endpoint::send`] for an upload whose body touches `activity` as
    /// the connection takes its bytes, so that only a stalled upload times
    /// out, however long a moving one takes.
    pub async fn send_with(
        &self,
        method: Method,
        url: &str,
        activity: &Activity,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let start = self.parse_url(url)?;
        let mut retried = false;
        loop {
            let auth = self.auth_header().await?;
            let (resp, at) = self
                .follow(
                    &method,
                    start.clone(),
                    activity,
                    &make,
                    auth.as_ref().map(|a| (&self.base_url, a)),
                )
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && self.is_own(&at) {
                if !retried {
                    retried = true;
                    let ch = self.challenge_of(&resp);
                    self.authenticate(ch).await?;
                    continue;
                }
                return Err(self.unauthorized(
                    &format!("{} ({})", self.subject(), describe(&method, &at)),
                    "",
                ));
            }
            return Ok(resp);
        }
    }

    /// Turns an unexpected answer into the error a user can act on, reading
    /// the registry's `{"errors":[{"code","message"}]}` body for detail.
    /// `method` is the request's; the answer's URL (after redirects) says
    /// which host answered, so the error names the request that failed —
    /// method, host, path — and its status, not only the image.
    pub async fn fail(
        &self,
        method: &Method,
        resp: Response,
        what: &str,
        reference: &str,
    ) -> RegistryError {
        let status = resp.status();
        let at = resp.url().clone();
        let request = describe(method, &at);
        // The body is only detail: a registry that trickles it is not
        // waited for beyond the stall timeout.
        let body = tokio::time::timeout(self.timeouts.stall, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let (code, message) = registry_error_of(&body);
        let detail = match (&code, &message) {
            (Some(c), Some(m)) => format!("{request}: {c}: {m} (HTTP {status})"),
            (Some(c), None) => format!("{request}: {c} (HTTP {status})"),
            (None, Some(m)) => format!("{request}: {m} (HTTP {status})"),
            (None, None) => format!("{request}: HTTP {status}"),
        };
        if !self.is_own(&at) {
            // Upload locations and blob redirects may lead elsewhere; what
            // that host refuses is not the registry's verdict on the image.
            return RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("{what} of {reference}"),
                detail: format!(
                    "{detail}; {} is not the registry, so it was sent no credentials",
                    location_host(&at)
                ),
            };
        }
        let code = code.unwrap_or_default();
        let lookup = *method == Method::GET || *method == Method::HEAD;
        match status {
            StatusCode::NOT_FOUND
                if lookup && code.is_empty()
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
            StatusCode::UNAUTHORIZED => {
                self.unauthorized(&format!("{what} of {reference} ({request})"), "")
            }
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.registry.clone(),
                what: format!("{what} of {reference}"),
                detail,
            },
            _ => RegistryError::Protocol {
                registry: self.registry.clone(),
                what: format!("{what} of {reference}"),
                detail,
            },
        }
    }
}

/// `host:port` of a URL.
fn location_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A header value that hyper keeps out of its debug output.
fn secret_header(value: &str) -> Result<HeaderValue, RegistryError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| RegistryError::Protocol {
        registry: String::new(),
        what: "authentication".into(),
        detail: "credentials that cannot be sent in an HTTP header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// `Basic base64(user:password)`.
fn basic_header(c: &Credentials) -> Result<HeaderValue, RegistryError> {
    let raw = format!("{}:{}", c.username, c.password.expose());
    secret_header(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
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
    let ep = Endpoint::connect_with(
        registry,
        "",
        &bases,
        Some(creds.clone()),
        Vec::new(),
        config.timeouts()?,
    )
    .await?;
    let url = format!("{}/v2/", ep.base);
    let resp = ep
        .deadline(|| format!("GET {url}"), ep.send(Method::GET, &url, |r| r))
        .await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(ep.fail(&Method::GET, resp, "login", registry).await)
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
