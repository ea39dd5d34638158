//! A tiny hand-written HTTP/1.1 server for the misbehaving registries a real
//! one cannot be made into: canned routes, optional bearer auth, slow
//! bodies.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::sha256;

/// One canned answer of a [`FakeRegistry`].
#[derive(Clone)]
pub struct Route {
    /// Exact request path (`/v2/x/manifests/1`).
    pub path: String,
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Pause after each 64 KiB of body, to make a slow server.
    pub delay_per_64k: Duration,
}

impl Route {
    /// A 200 with `body`.
    pub fn ok(path: &str, content_type: &str, body: Vec<u8>) -> Route {
        Route {
            path: path.into(),
            status: 200,
            content_type: content_type.into(),
            headers: Vec::new(),
            body,
            delay_per_64k: Duration::ZERO,
        }
    }
}

/// A minimal HTTP/1.1 server speaking just enough of the registry API to
/// serve canned routes (404 for anything else), one thread per connection.
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stop: Arc<AtomicBool>,
    /// Every request path seen, in order.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Bearer auth for a [`FakeRegistry`]: every request but `/token` needs
/// `Authorization: Bearer <token>`; `/token` hands the token out to a
/// request whose basic login is `login` (to anyone when `None`).
#[derive(Clone)]
pub struct Bearer {
    pub token: String,
    pub login: Option<(String, String)>,
}

impl FakeRegistry {
    /// Serves `routes` until dropped.
    pub fn start(routes: Vec<Route>) -> FakeRegistry {
        Self::start_with(routes, None)
    }

    /// Serves `routes` behind bearer auth.
    pub fn start_with(routes: Vec<Route>, bearer: Option<Bearer>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let routes = Arc::new(routes);
        let me = addr.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (routes, seen, stop) = (routes.clone(), seen2.clone(), stop2.clone());
                        let (bearer, me) = (bearer.clone(), me.clone());
                        std::thread::spawn(move || {
                            serve(conn, &routes, &seen, &stop, bearer.as_ref(), &me)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeRegistry { addr, stop, seen }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.1 request as the test servers read it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// Reads the next request (line, headers, a Content-Length body) from a
/// connection; None when it ends or breaks off.
pub fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        authorization,
        body,
    })
}

fn serve(
    conn: TcpStream,
    routes: &[Route],
    seen: &std::sync::Mutex<Vec<String>>,
    stop: &AtomicBool,
    bearer: Option<&Bearer>,
    me: &str,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut out = conn;
    loop {
        let Some(Request {
            method,
            path,
            authorization,
            body,
        }) = read_request(&mut reader)
        else {
            return;
        };
        let authorization = authorization.unwrap_or_default();
        if let Ok(mut s) = seen.lock() {
            s.push(format!("{method} {path}"));
        }
        let denied = Route {
            path: path.clone(),
            status: 401,
            content_type: "application/json".into(),
            headers: vec![(
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"http://{me}/token\",service=\"fake\""),
            )],
            body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_vec(),
            delay_per_64k: Duration::ZERO,
        };
        let auth_route = match bearer {
            Some(b) if path.starts_with("/token") => {
                let ok = match &b.login {
                    None => true,
                    Some((u, p)) if u == "<token>" => {
                        // An identity token arrives as an OAuth2 refresh
                        // token in a POST form.
                        method == "POST"
                            && String::from_utf8_lossy(&body)
                                .contains(&format!("refresh_token={p}"))
                            && String::from_utf8_lossy(&body).contains("grant_type=refresh_token")
                    }
                    Some((u, p)) => {
                        use base64::Engine;
                        let want =
                            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                        authorization == format!("Basic {want}")
                    }
                };
                Some(if ok {
                    Route::ok(
                        &path,
                        "application/json",
                        format!("{{\"token\":\"{}\"}}", b.token).into_bytes(),
                    )
                } else {
                    Route {
                        status: 401,
                        headers: Vec::new(),
                        ..denied.clone()
                    }
                })
            }
            Some(b) if authorization != format!("Bearer {}", b.token) => Some(denied.clone()),
            _ => None,
        };
        let route = if auth_route.is_some() {
            auth_route
        } else if path == "/v2/" || path == "/v2" {
            Some(Route::ok("/v2/", "application/json", b"{}".to_vec()))
        } else {
            routes.iter().find(|r| r.path == path).cloned()
        };
        let route = route.unwrap_or(Route {
            path: path.clone(),
            status: 404,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                .to_vec(),
            delay_per_64k: Duration::ZERO,
        });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            route.status,
            route.content_type,
            route.body.len()
        );
        for (k, v) in &route.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" {
            for chunk in route.body.chunks(64 * 1024) {
                if stop.load(Ordering::Relaxed) || out.write_all(chunk).is_err() {
                    return;
                }
                if !route.delay_per_64k.is_zero() {
                    std::thread::sleep(route.delay_per_64k);
                }
            }
        }
        let _ = out.flush();
    }
}

/// Routes serving a one-layer image `repo:tag` with `layer` as its layer;
/// with `served_layer` the blob route answers other bytes than the digest
/// the manifest names (a corrupt or hostile registry). Returns the routes
/// and the manifest's and layer's digests.
pub fn tiny_image(
    repo: &str,
    tag: &str,
    layer: &[u8],
    served_layer: Option<Vec<u8>>,
) -> (Vec<Route>, String, String) {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let (cd, ld) = (sha256(config), sha256(layer));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .expect("json");
    let md = sha256(&manifest);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let routes = vec![
        Route::ok(&format!("/v2/{repo}/manifests/{tag}"), mt, manifest.clone()),
        Route::ok(&format!("/v2/{repo}/manifests/{md}"), mt, manifest),
        Route::ok(
            &format!("/v2/{repo}/blobs/{cd}"),
            "application/octet-stream",
            config.to_vec(),
        ),
        Route::ok(
            &format!("/v2/{repo}/blobs/{ld}"),
            "application/octet-stream",
            served_layer.unwrap_or_else(|| layer.to_vec()),
        ),
    ];
    (routes, md, ld)
}
