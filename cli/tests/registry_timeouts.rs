//! `kiln pull` against registries that misbehave in time: one that
//! trickles a manifest a byte at a time, one that accepts connections and
//! never answers, and one that serves a big layer slowly but steadily.
//! The first two must fail within the configured timeouts (plus a loose
//! margin: this checks that the timeouts exist, it is no benchmark) with
//! a message naming the registry, the request and the stall; the third
//! must succeed, since a blob is only held to the stall timeout.
//!
//! The servers are hostile peers written for the test with
//! std::net::TcpListener: a real registry cannot be made to misbehave.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kiln_testsupport::*;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// How a route's body goes out.
#[derive(Clone, Copy)]
enum Pace {
    /// All at once.
    Now,
    /// `n` bytes, then a pause, and again.
    Every(usize, Duration),
}

#[derive(Clone)]
struct Route {
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    pace: Pace,
}

/// Serves `routes` (and `/v2/`) on 127.0.0.1 until the process ends.
fn serve(routes: Vec<Route>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || answer(conn, &routes));
        }
    });
    addr
}

fn answer(conn: TcpStream, routes: &[Route]) {
    let Ok(clone) = conn.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let method = line.split_whitespace().next().unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let route = if path == "/v2/" {
            Some(Route {
                path: path.clone(),
                content_type: "application/json",
                body: b"{}".to_vec(),
                pace: Pace::Now,
            })
        } else {
            routes.iter().find(|r| r.path == path).cloned()
        };
        let Some(route) = route else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            route.content_type,
            route.body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || method == "HEAD" {
            continue;
        }
        match route.pace {
            Pace::Now => {
                if out.write_all(&route.body).is_err() {
                    return;
                }
            }
            Pace::Every(n, pause) => {
                for chunk in route.body.chunks(n) {
                    if out.write_all(chunk).and_then(|_| out.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// Accepts connections on 127.0.0.1 and never answers (nor closes them).
fn silent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    addr
}

/// A one-layer image under `repo:tag`: routes for its manifest (paced
/// `manifest_pace`), config and layer (paced `layer_pace`).
fn image(
    repo: &str,
    tag: &str,
    layer: Vec<u8>,
    manifest_pace: Pace,
    layer_pace: Pace,
) -> Vec<Route> {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let (cd, ld) = (sha256(config), sha256(&layer));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .expect("json");
    vec![
        Route {
            path: format!("/v2/{repo}/manifests/{tag}"),
            content_type: "application/vnd.oci.image.manifest.v1+json",
            body: manifest,
            pace: manifest_pace,
        },
        Route {
            path: format!("/v2/{repo}/blobs/{cd}"),
            content_type: "application/octet-stream",
            body: config.to_vec(),
            pace: Pace::Now,
        },
        Route {
            path: format!("/v2/{repo}/blobs/{ld}"),
            content_type: "application/octet-stream",
            body: layer,
            pace: layer_pace,
        },
    ]
}

/// Runs `kiln pull` with `env`, returning (success, output on one line,
/// elapsed).
fn pull(k: &Kiln, reference: &str, env: &[(&str, &str)]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut cmd = k.cmd(&["pull", reference]);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("running kiln");
    let elapsed = started.elapsed();
    // The diagnostic is wrapped to a width: join it back into one line.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let flat = text
        .split_whitespace()
        .filter(|w| *w != "│" && *w != "×")
        .collect::<Vec<_>>()
        .join(" ");
    (out.status.success(), flat, elapsed)
}

#[test]
fn a_trickled_manifest_times_out() {
    // A byte a second: never a stall of 10 s, but never done in 2 s.
    let addr = serve(image(
        "slow/app",
        "v1",
        b"layer".to_vec(),
        Pace::Every(1, Duration::from_secs(1)),
        Pace::Now,
    ));
    let k = Kiln::empty(KILN);
    let (ok, msg, elapsed) = pull(
        &k,
        &format!("{addr}/slow/app:v1"),
        &[
            ("KILN_REGISTRY_TIMEOUT", "2"),
            ("KILN_REGISTRY_STALL_TIMEOUT", "10"),
        ],
    );
    assert!(!ok, "the pull succeeded: {msg}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}: {msg}");
    assert!(
        msg.contains(&format!("GET http://{addr}/v2/slow/app/manifests/v1"))
            && msg.contains("did not finish within 2.0 s"),
        "{msg}"
    );
}

#[test]
fn a_manifest_stalled_mid_body_times_out() {
    // A byte every 5 s, with the stall timeout (from config.json) at 2 s.
    let addr = serve(image(
        "slow/app",
        "v1",
        b"layer".to_vec(),
        Pace::Every(1, Duration::from_secs(5)),
        Pace::Now,
    ));
    let k = Kiln::empty(KILN);
    std::fs::create_dir_all(&k.root).expect("mkdir root");
    std::fs::write(
        k.root.join("config.json"),
        br#"{"registry-stall-timeout": 2}"#,
    )
    .expect("config.json");
    let (ok, msg, elapsed) = pull(&k, &format!("{addr}/slow/app:v1"), &[]);
    assert!(!ok, "the pull succeeded: {msg}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}: {msg}");
    assert!(
        msg.contains(&format!("GET http://{addr}/v2/slow/app/manifests/v1"))
            && msg.contains("stalled: no data for 2.0 s"),
        "{msg}"
    );
}

#[test]
fn a_silent_registry_times_out() {
    let addr = silent();
    let k = Kiln::empty(KILN);
    let (ok, msg, elapsed) = pull(
        &k,
        &format!("{addr}/quiet/app:v1"),
        &[("KILN_REGISTRY_STALL_TIMEOUT", "2")],
    );
    assert!(!ok, "the pull succeeded: {msg}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}: {msg}");
    assert!(
        msg.contains(&addr) && msg.contains("/v2/") && msg.contains("stalled"),
        "{msg}"
    );
}

#[test]
fn a_bad_timeout_setting_is_an_error() {
    let k = Kiln::empty(KILN);
    let (ok, msg, _) = pull(
        &k,
        "127.0.0.1:9/x/y:1",
        &[("KILN_REGISTRY_TIMEOUT", "soon")],
    );
    assert!(!ok, "{msg}");
    assert!(msg.contains("KILN_REGISTRY_TIMEOUT"), "{msg}");
}

#[test]
fn a_big_blob_that_keeps_moving_is_not_cut_off() {
    // 256 KiB in 16 KiB steps every 300 ms: about 5 s in all, well past
    // the 2 s small-object deadline, yet never 2 s without a byte.
    let layer: Vec<u8> = (0..256u32 * 1024)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let addr = serve(image(
        "big/app",
        "v1",
        layer,
        Pace::Now,
        Pace::Every(16 * 1024, Duration::from_millis(300)),
    ));
    let k = Kiln::empty(KILN);
    let (ok, msg, elapsed) = pull(
        &k,
        &format!("{addr}/big/app:v1"),
        &[
            ("KILN_REGISTRY_TIMEOUT", "2"),
            ("KILN_REGISTRY_STALL_TIMEOUT", "2"),
        ],
    );
    assert!(ok, "the pull failed after {elapsed:?}: {msg}");
    assert!(
        elapsed > Duration::from_secs(3),
        "the layer was not slow ({elapsed:?}): the test proves nothing"
    );
}
