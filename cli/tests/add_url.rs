//! `ADD <http(s) url>` end to end, against a small HTTP server in the test
//! (std::net, so it can send `Last-Modified`, change what it serves and
//! count what it is asked): names, mode 0600, owner, mtime, no extraction,
//! `--checksum`, caching on content, and the errors docker/BuildKit give.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use kiln_testsupport::{imagefs, named, stderr, Kiln};
use serde_json::Value;
use sha2::{Digest, Sha256};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// What the server answers for a path: body and optional Last-Modified.
type Files = Arc<Mutex<HashMap<String, (Vec<u8>, Option<String>)>>>;

struct Server {
    port: u16,
    files: Files,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Files = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (f2, h2) = (files.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (files, hits) = (f2.clone(), h2.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let target = line.split(' ').nth(1).unwrap_or("/");
                    let path = target.split('?').next().unwrap_or("/").to_string();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let entry = files.lock().unwrap().get(&path).cloned();
                    let _ = match entry {
                        Some((body, lm)) => {
                            let mut head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                                body.len()
                            );
                            if let Some(lm) = lm {
                                head.push_str(&format!("Last-Modified: {lm}\r\n"));
                            }
                            head.push_str("\r\n");
                            conn.write_all(head.as_bytes())
                                .and_then(|_| conn.write_all(&body))
                        }
                        None => conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        ),
                    };
                });
            }
        });
        Server { port, files, hits }
    }

    fn serve(&self, path: &str, body: &[u8], last_modified: Option<&str>) {
        self.files.lock().unwrap().insert(
            path.to_string(),
            (body.to_vec(), last_modified.map(String::from)),
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A build of `dockerfile` (extra args before the context), without any
/// proxy the environment may set (the server is on loopback).
fn build(k: &Kiln, name: &str, dockerfile: &str, extra: &[&str]) -> (Vec<Value>, Output) {
    let ctx = k.context(name, &[("Dockerfile", dockerfile)]);
    let mut args = vec!["build", "--progress", "json"];
    args.extend_from_slice(extra);
    let ctx = ctx.display().to_string();
    args.push(&ctx);
    let mut cmd = k.cmd(&args);
    for v in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd.output().expect("running kiln");
    (kiln_testsupport::events(&out), out)
}

/// The image `tag` as the oracle sees it.
fn image_fs(k: &Kiln, tag: &str) -> Value {
    let tar = k.path(&format!("{tag}.tar"));
    k.ok(&["save", "-o", &tar.display().to_string(), tag]);
    imagefs(&tar, None)["fs"].clone()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn mtime(p: &Path) -> i64 {
    std::fs::metadata(p).expect("stat").mtime()
}

/// A gzip'd tar with one file, so extraction would show.
fn targz() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &b"abc"[..])
        .expect("tar");
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gz");
    gz.finish().expect("gz")
}

const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LM_SECS: i64 = 784111777;

#[test]
fn add_url_names_modes_mtime_and_no_extraction() {
    let srv = Server::start();
    srv.serve("/files/file.txt", b"hello from http\n", Some(LM));
    srv.serve("/app.tar.gz", &targz(), None);
    let k = Kiln::with_busybox(KILN);
    let df = format!(
        "FROM busybox:1.35\n\
         ADD {file} /dst/\n\
         ADD {file} /named.txt\n\
         ADD --chmod=644 --chown=1000:1000 {file} /owned/\n\
         ADD {tgz} {file}?x=1 /multi/\n\
         ADD --unpack=true {tgz} /unpacked/\n",
        file = srv.url("/files/file.txt"),
        tgz = srv.url("/app.tar.gz"),
    );
    let local = format!("type=local,dest={}", k.path("out").display());
    let (_, out) = build(
        &k,
        "ctx",
        &df,
        &["-t", "img", "-o", "type=image", "-o", &local],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let fs = image_fs(&k, "img");
    let sum = sha256_hex(b"hello from http\n");
    let file = |p: &str| fs[p].clone();
    // [type, mode, uid, gid, size, sha256]
    assert_eq!(
        file("/dst/file.txt"),
        serde_json::json!(["f", "0o600", 0, 0, 16, sum])
    );
    assert_eq!(
        file("/named.txt"),
        serde_json::json!(["f", "0o600", 0, 0, 16, sum])
    );
    assert_eq!(
        file("/owned/file.txt"),
        serde_json::json!(["f", "0o644", 1000, 1000, 16, sum])
    );
    // A URL's archive stays a file unless --unpack=true.
    let tgz = targz();
    assert_eq!(
        file("/multi/app.tar.gz"),
        serde_json::json!(["f", "0o600", 0, 0, tgz.len(), sha256_hex(&tgz)])
    );
    assert_eq!(file("/multi/file.txt")[5], sum);
    assert!(fs.get("/multi/inner.txt").is_none(), "{fs}");
    assert_eq!(file("/unpacked/inner.txt")[5], sha256_hex(b"abc"), "{fs}");
    assert!(fs.get("/unpacked/app.tar.gz").is_none());

    // The mtime is the server's Last-Modified.
    let out_dir = k.path("out");
    assert_eq!(mtime(&out_dir.join("dst/file.txt")), LM_SECS);
    assert_eq!(mtime(&out_dir.join("named.txt")), LM_SECS);
}

#[test]
fn add_url_is_cached_on_content_and_reruns_when_it_changes() {
    let srv = Server::start();
    srv.serve("/v.txt", b"one\n", Some(LM));
    let k = Kiln::with_busybox(KILN);
    let df = format!(
        "FROM busybox:1.35\nADD {} /v.txt\nRUN cat /v.txt > /copy.txt\n",
        srv.url("/v.txt")
    );
    let (_, out) = build(&k, "ctx", &df, &["-t", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = image_fs(&k, "img");
    assert_eq!(first["/copy.txt"][5], sha256_hex(b"one\n"));

    // Unchanged: downloaded again to check, but every step is cached.
    let before = srv.hits("/v.txt");
    let (ev, out) = build(&k, "ctx", &df, &["-t", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        srv.hits("/v.txt") > before,
        "the URL is checked on each build"
    );
    let ran = named(&ev, "started");
    assert!(
        !ran.iter().any(|n| n.contains("ADD") || n.contains("RUN")),
        "unchanged content is cached: {ran:?}"
    );

    // Changed: the ADD and what follows run again, the image changes.
    srv.serve("/v.txt", b"two!\n", Some(LM));
    let (ev, out) = build(&k, "ctx", &df, &["-t", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = named(&ev, "started");
    assert!(ran.iter().any(|n| n.contains("ADD")), "{ran:?}");
    assert!(ran.iter().any(|n| n.contains("RUN")), "{ran:?}");
    let second = image_fs(&k, "img");
    assert_eq!(second["/v.txt"][5], sha256_hex(b"two!\n"));
    assert_eq!(second["/copy.txt"][5], sha256_hex(b"two!\n"));
}

#[test]
fn add_url_checksum_verifies_and_keys_the_step() {
    let srv = Server::start();
    let body = b"checked content\n";
    srv.serve("/c.txt", body, None);
    let k = Kiln::with_busybox(KILN);
    let good = format!("sha256:{}", sha256_hex(body));
    let df = format!(
        "FROM busybox:1.35\nADD --checksum={good} {} /c.txt\n",
        srv.url("/c.txt")
    );
    let (_, out) = build(&k, "good", &df, &["-t", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image_fs(&k, "img")["/c.txt"][5], sha256_hex(body));

    // Cached with a checksum: no download at all.
    let before = srv.hits("/c.txt");
    let (ev, out) = build(&k, "good", &df, &["-t", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        srv.hits("/c.txt"),
        before,
        "a cached checksum step downloads nothing"
    );
    assert!(!named(&ev, "started").iter().any(|n| n.contains("ADD")));

    let wrong = format!("sha256:{}", "0".repeat(64));
    let df = format!(
        "FROM busybox:1.35\nADD --checksum={wrong} {} /c.txt\n",
        srv.url("/c.txt")
    );
    let (_, out) = build(&k, "wrong", &df, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&wrong), "names the expected digest: {err}");
    assert!(err.contains(&good), "names the actual digest: {err}");

    // A checksum with a local source is refused, as BuildKit does.
    let df = "FROM busybox:1.35\nADD --checksum=sha256:0000 Dockerfile /x\n";
    let (_, out) = build(&k, "local", df, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("checksum can't be specified for non-HTTP(S) sources"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn copy_of_a_url_and_a_missing_url_fail_clearly() {
    let srv = Server::start();
    srv.serve("/here.txt", b"x", None);
    let k = Kiln::with_busybox(KILN);
    let df = format!("FROM busybox:1.35\nCOPY {} /x\n", srv.url("/here.txt"));
    let (_, out) = build(&k, "copy", &df, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("source can't be a URL for COPY"),
        "{}",
        stderr(&out)
    );

    let missing = srv.url("/missing.txt");
    let df = format!("FROM busybox:1.35\nADD {missing} /x\n");
    let (_, out) = build(&k, "missing", &df, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&missing), "names the URL: {err}");
    assert!(err.contains("404"), "names the status: {err}");
}
