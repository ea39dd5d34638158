//! Credentials stay with the host they were issued for. A registry may
//! hand out an upload `Location` on another host, or redirect a blob GET
//! to storage elsewhere; as docker does, kiln goes there without the
//! registry's `Authorization`, and when that host refuses, the error says
//! which request (method, host, path) failed with which status.
//!
//! The two servers here are hostile peers written for the test (a real
//! registry cannot be made to point elsewhere): a registry front on
//! 127.0.0.1 that wants a login, and a second host on 127.0.0.2 (another
//! port of 127.0.0.1 where that address cannot be bound) that records
//! every request it gets. One test function, because credentials come
//! through `$DOCKER_CONFIG`, which is process-wide.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kiln_cache::registry::{self, NoProgress, PullOptions, PushOptions, RegistryError};
use kiln_cache::{Digest, Reference};
use kiln_testsupport::*;

/// A request as a server of this test saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// An answer: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

type Handler = Arc<dyn Fn(&Seen, &str) -> Answer + Send + Sync>;

/// A tiny HTTP/1.1 server on `ip`: records every request, answers with
/// `handler(request, own address)`. Runs until the process ends.
struct Host {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Host {
    fn start(ip: &str, handler: Handler) -> Option<Host> {
        let listener = TcpListener::bind((ip, 0)).ok()?;
        let addr = listener.local_addr().ok()?.to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, me) = (seen.clone(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, handler, me) = (seen2.clone(), handler.clone(), me.clone());
                std::thread::spawn(move || serve(conn, &seen, &*handler, &me));
            }
        });
        Some(Host { addr, seen })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    conn: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    handler: &(dyn Fn(&Seen, &str) -> Answer + Send + Sync),
    me: &str,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(clone) = conn.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut out = conn;
    loop {
        let Some(kiln_testsupport::Request {
            method,
            path,
            authorization,
            ..
        }) = kiln_testsupport::read_request(&mut reader)
        else {
            return;
        };
        let req = Seen {
            method,
            path,
            authorization,
        };
        seen.lock().unwrap().push(req.clone());
        let (status, headers, body) = handler(&req, me);
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if req.method != "HEAD" && out.write_all(&body).is_err() {
            return;
        }
        let _ = out.flush();
    }
}

/// The second host: 127.0.0.2, else another port of 127.0.0.1 (another
/// host:port authority all the same).
fn other_host(handler: Handler) -> Host {
    Host::start("127.0.0.2", handler.clone())
        .or_else(|| Host::start("127.0.0.1", handler))
        .expect("bind a second host")
}

const USER: &str = "kiln";
const PASSWORD: &str = "s3cret";
const TOKEN: &str = "the-bearer-token";

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

fn unauthorized(challenge: String) -> Answer {
    (
        401,
        vec![
            ("WWW-Authenticate".into(), challenge),
            ("Content-Type".into(), "application/json".into()),
        ],
        br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
    )
}

fn ok(body: &[u8], content_type: &str) -> Answer {
    (
        200,
        vec![("Content-Type".into(), content_type.into())],
        body.to_vec(),
    )
}

/// A one-layer image put straight into a store under `name`.
fn tiny_local_image(root: &kiln_cache::Root, name: &str) {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let diff = sha256(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff, "size": layer.len()}]
    }))
    .unwrap();
    for b in [&layer, &config, &manifest] {
        root.blobs().put(b).unwrap();
    }
    let d: oci_spec::image::Digest = sha256(&manifest).parse().unwrap();
    let desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageManifest,
        manifest.len() as u64,
        d,
    );
    root.images()
        .set(&Reference::parse(name).unwrap(), desc)
        .unwrap();
}

#[test]
fn credentials_go_only_to_their_own_host() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfgdir = tempfile::tempdir().unwrap();
    std::env::set_var("DOCKER_CONFIG", cfgdir.path());

    // --- push: the upload Location is on another host, which accepts.
    let storage_accepts: Handler = Arc::new(|req: &Seen, _me: &str| match req.method.as_str() {
        "PUT" => (201, Vec::new(), Vec::new()),
        _ => (404, Vec::new(), Vec::new()),
    });
    let storage = other_host(storage_accepts);
    let front = registry_front(storage.addr.clone(), None);
    std::fs::write(
        cfgdir.path().join("config.json"),
        serde_json::to_vec(&serde_json::json!({
            "auths": {
                front.addr.clone(): {"auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))}
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let (_a, root) = temp_root();
    tiny_local_image(&root, "tiny:1");
    let local = Reference::parse("tiny:1").unwrap();
    let remote = Reference::parse(&format!("{}/team/tiny:1", front.addr)).unwrap();
    rt.block_on(registry::push(
        &root,
        &local,
        &remote,
        &PushOptions::default(),
        Arc::new(NoProgress),
    ))
    .expect("push through an upload location on another host");
    let got = storage.seen();
    assert!(
        got.iter().filter(|r| r.method == "PUT").count() >= 2,
        "the blobs were not uploaded to the other host: {got:?}"
    );
    for r in &got {
        assert!(
            r.authorization.is_none(),
            "{} {} on the other host {} carried Authorization",
            r.method,
            r.path,
            storage.addr
        );
    }
    // The registry itself was spoken to with the login (the test's front
    // refuses anything else), and the manifest arrived.
    assert!(
        front
            .seen()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/manifests/1")),
        "{:?}",
        front.seen()
    );

    // --- push: the other host wants credentials of its own, and refuses.
    let storage_refuses: Handler =
        Arc::new(|_req: &Seen, me: &str| unauthorized(format!("Basic realm=\"storage {me}\"")));
    let storage = other_host(storage_refuses);
    let front2 = registry_front(storage.addr.clone(), None);
    std::fs::write(
        cfgdir.path().join("config.json"),
        serde_json::to_vec(&serde_json::json!({
            "auths": {
                front2.addr.clone(): {"auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))}
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let remote = Reference::parse(&format!("{}/team/tiny:1", front2.addr)).unwrap();
    let err = rt
        .block_on(registry::push(
            &root,
            &local,
            &remote,
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("not found"), "{msg}");
    assert!(
        msg.contains(&format!("PUT {}/upload/", storage.addr)) && msg.contains("401"),
        "the error does not name the failed request and its status: {msg}"
    );
    assert!(matches!(err, RegistryError::Protocol { .. }), "{msg}");
    let got = storage.seen();
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|r| r.authorization.is_none()),
        "credentials went to the other host: {got:?}"
    );

    // --- pull with bearer auth: blob GETs are redirected to storage on
    // the other host, which gets no token.
    let layer = b"a layer that lives in blob storage".to_vec();
    let (routes, md, ld) = tiny_image("team/app", "v1", &layer, None);
    let blobs: Vec<(String, Vec<u8>)> = routes
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| (r.path.clone(), r.body.clone()))
        .collect();
    let storage_serves: Handler = Arc::new(move |req: &Seen, _me: &str| {
        let path = req.path.split('?').next().unwrap_or("");
        match blobs
            .iter()
            .find(|(p, _)| p.ends_with(path.trim_start_matches("/storage")))
        {
            Some((_, body)) => ok(body, "application/octet-stream"),
            None => (404, Vec::new(), Vec::new()),
        }
    });
    let storage = other_host(storage_serves);
    let manifests: Vec<(String, Vec<u8>, String)> = routes
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .map(|r| (r.path.clone(), r.body.clone(), r.content_type.clone()))
        .collect();
    let front3 = registry_front(storage.addr.clone(), Some(manifests));
    std::fs::write(
        cfgdir.path().join("config.json"),
        serde_json::to_vec(&serde_json::json!({
            "auths": {
                front3.addr.clone(): {"auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))}
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let (_b, root2) = temp_root();
    let r = Reference::parse(&format!("{}/team/app:v1", front3.addr)).unwrap();
    let got = rt
        .block_on(registry::pull(
            &root2,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .expect("pull through blob redirects");
    assert_eq!(got.digest().to_string(), md);
    let ld: Digest = ld.parse().unwrap();
    assert_eq!(root2.blobs().read(&ld).unwrap(), layer);
    let seen = storage.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.authorization.is_none()),
        "a token went to blob storage: {seen:?}"
    );
    // The registry itself did get the token (it refuses requests without).
    assert!(front3
        .seen()
        .iter()
        .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))));
}

/// A registry front on 127.0.0.1 that wants a login on every request:
/// basic auth for pushes, or (when it serves `manifests` for pulls) a
/// bearer token from its `/token`, which wants the basic login. Upload
/// starts answer 202 with a `Location` on `other`; blob GETs redirect
/// there (307, as registries backed by S3 do).
fn registry_front(other: String, manifests: Option<Vec<(String, Vec<u8>, String)>>) -> Host {
    let bearer = manifests.is_some();
    let manifests = manifests.unwrap_or_default();
    let handler: Handler = Arc::new(move |req: &Seen, me: &str| {
        let auth = req.authorization.as_deref().unwrap_or("");
        if bearer && req.path.starts_with("/token") {
            return if auth == basic() {
                ok(
                    format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
                    "application/json",
                )
            } else {
                (401, Vec::new(), Vec::new())
            };
        }
        let authorised = if bearer {
            auth == format!("Bearer {TOKEN}")
        } else {
            auth == basic()
        };
        if !authorised {
            return unauthorized(if bearer {
                format!("Bearer realm=\"http://{me}/token\",service=\"front\"")
            } else {
                "Basic realm=\"front\"".to_string()
            });
        }
        let path = req.path.split('?').next().unwrap_or("");
        match (req.method.as_str(), path) {
            (_, "/v2/") => ok(b"{}", "application/json"),
            ("HEAD", p) if p.contains("/blobs/") => (404, Vec::new(), Vec::new()),
            ("POST", p) if p.ends_with("/blobs/uploads/") => (
                202,
                vec![(
                    "Location".into(),
                    format!("http://{other}/upload/{}?state=opaque", req.path.len()),
                )],
                Vec::new(),
            ),
            ("PUT", p) if p.contains("/manifests/") => (201, Vec::new(), Vec::new()),
            ("GET", p) if p.contains("/blobs/") => (
                307,
                vec![(
                    "Location".into(),
                    format!("http://{other}/storage{p}?X-Signature=abc"),
                )],
                Vec::new(),
            ),
            ("GET", p) => match manifests.iter().find(|(mp, _, _)| mp == p) {
                Some((_, body, ct)) => ok(body, ct),
                None => (404, Vec::new(), Vec::new()),
            },
            _ => (404, Vec::new(), Vec::new()),
        }
    });
    Host::start("127.0.0.1", handler).expect("bind the registry front")
}

/// An upload to a host that takes the connection and then neither reads
/// nor answers is a stall: the push fails after the stall timeout with
/// the request named, rather than hanging.
#[test]
fn a_stalled_upload_times_out() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in sink.incoming().flatten() {
            held.push(conn);
        }
    });
    let front = Host::start(
        "127.0.0.1",
        Arc::new(move |req: &Seen, _me: &str| {
            let path = req.path.split('?').next().unwrap_or("");
            match (req.method.as_str(), path) {
                (_, "/v2/") => ok(b"{}", "application/json"),
                ("POST", p) if p.ends_with("/blobs/uploads/") => (
                    202,
                    vec![("Location".into(), format!("http://{sink_addr}/upload/1"))],
                    Vec::new(),
                ),
                _ => (404, Vec::new(), Vec::new()),
            }
        }),
    )
    .unwrap();
    let (_a, root) = temp_root();
    tiny_local_image(&root, "tiny:2");
    let mut opts = PushOptions::default();
    opts.config.registry_stall_timeout = Some(1.0);
    let started = std::time::Instant::now();
    let err = rt
        .block_on(registry::push(
            &root,
            &Reference::parse("tiny:2").unwrap(),
            &Reference::parse(&format!("{}/team/tiny:2", front.addr)).unwrap(),
            &opts,
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Stalled { .. }), "{msg}");
    assert!(msg.contains("PUT") && msg.contains("/upload/1"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(15), "{msg}");
}
