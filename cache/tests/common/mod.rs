//! Test harness for the registry tests: a real `docker-registry` (Debian's
//! build of distribution) on 127.0.0.1, plain or behind htpasswd basic
//! auth, and a tiny hand-written HTTP server for the misbehaving registries
//! a real one cannot be made into.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `../shared` beside the checkout.
pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
}

/// The multi-platform busybox fixture.
pub fn busybox_fixture() -> PathBuf {
    shared().join("fixtures/busybox-1.35-oci.tar")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `docker-registry`, killed on drop.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its storage and config.
    pub dir: tempfile::TempDir,
    /// The htpasswd login, if auth is on.
    pub login: Option<(String, String)>,
}

impl TestRegistry {
    /// A registry without auth.
    pub fn plain() -> TestRegistry {
        Self::start(None)
    }

    /// A registry that wants `user`/`password` (htpasswd, bcrypt).
    pub fn with_htpasswd(user: &str, password: &str) -> TestRegistry {
        Self::start(Some((user.to_string(), password.to_string())))
    }

    fn start(login: Option<(String, String)>) -> TestRegistry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is not installed: run .ci/setup (apt-get install docker-registry)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth = String::new();
        if let Some((u, p)) = &login {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        // A port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            );
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config).expect("write config");
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_status(&addr, "/v2/").is_some() {
                    return TestRegistry {
                        child,
                        addr,
                        dir,
                        login,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    /// `127.0.0.1:PORT/<repo:tag>`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{}", self.addr, name)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a plain GET, or `None` if nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

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

/// sha256 of `bytes` as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Imports an OCI archive into `root` under `name` through the blob store
/// (the test's own importer, so the registry tests do not depend on the
/// archive code); returns the descriptor of its top index or manifest.
pub fn import_oci_archive(
    root: &kiln_cache::Root,
    archive: &Path,
    name: &str,
) -> oci_spec::image::Descriptor {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = std::fs::File::open(archive).expect("open archive");
    tar::Archive::new(f)
        .unpack(dir.path())
        .expect("unpack archive");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("index.json"))
            .expect("json");
    for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let digest: kiln_cache::Digest = format!("sha256:{}", entry.file_name().to_string_lossy())
            .parse()
            .expect("digest");
        let bytes = std::fs::read(entry.path()).expect("read blob");
        let mut w = root
            .blobs()
            .writer(Some(&digest), Some(bytes.len() as u64))
            .expect("writer");
        w.write_all(&bytes).expect("write");
        w.commit().expect("commit");
    }
    let top: oci_spec::image::Descriptor =
        serde_json::from_value(index["manifests"][0].clone()).expect("descriptor");
    let reference = kiln_cache::Reference::parse(name).expect("reference");
    root.images()
        .set(&reference, top.clone())
        .expect("set name");
    top
}

/// Every blob reachable from `digest` (manifests, indexes, configs, layers).
pub fn reachable(root: &kiln_cache::Root, digest: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![digest.to_string()];
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let dg: kiln_cache::Digest = d.parse().expect("digest");
        let bytes = root.blobs().read(&dg).expect("blob in store");
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("schemaVersion").is_none() {
            continue; // a config
        }
        for key in ["manifests", "layers"] {
            if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
                for e in list {
                    if let Some(d) = e.get("digest").and_then(|d| d.as_str()) {
                        todo.push(d.to_string());
                    }
                }
            }
        }
        if let Some(d) = v
            .get("config")
            .and_then(|c| c.get("digest"))
            .and_then(|d| d.as_str())
        {
            todo.push(d.to_string());
        }
    }
    out
}

/// Writes the image `desc` of `root` as an OCI layout folder, so tools that
/// read layouts (imagefs.py, umoci) can look at what a pull stored.
pub fn export_layout(root: &kiln_cache::Root, desc: &oci_spec::image::Descriptor, dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    for d in reachable(root, desc.digest().as_ref()) {
        let dg: kiln_cache::Digest = d.parse().expect("digest");
        std::fs::copy(
            root.blobs().path(&dg),
            dir.join("blobs/sha256").join(dg.hex()),
        )
        .expect("copy blob");
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [serde_json::to_value(desc).expect("desc")]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
}

/// `imagefs.py IMAGE --platform P` as parsed JSON.
pub fn imagefs(image: &Path, platform: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(shared().join("oracle/imagefs.py"))
        .arg(image)
        .args(["--platform", platform])
        .output()
        .expect("run imagefs.py");
    assert!(
        out.status.success(),
        "imagefs.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("imagefs JSON")
}

/// A fresh store in its own temp dir (kept alive by the returned guard).
pub fn temp_root() -> (tempfile::TempDir, kiln_cache::Root) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = kiln_cache::Root::open(dir.path()).expect("open root");
    (dir, root)
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
