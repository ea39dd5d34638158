//! Where a build's inputs come from, through the binary: the context on
//! stdin (a tar, plain or compressed, or a bare Dockerfile), `-f -`, the
//! lower-case `dockerfile`, buildx's errors for the conflicting forms, git
//! contexts from a `git daemon` the test starts on 127.0.0.1, and tarball
//! and Dockerfile URLs from a tiny HTTP server in the test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const COPY_A: &str = "FROM scratch\nCOPY a.txt /a.txt\n";

/// `kiln ARGS` with `input` on its stdin, no proxy from the environment.
fn run_with_stdin(k: &Kiln, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = k.cmd(args);
    for v in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"] {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    let mut sin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().expect("kiln");
    let _ = writer.join();
    out
}

/// A build to a local folder `out` (removed first); returns the output.
fn build_local(k: &Kiln, extra: &[&str], ctx: &str, input: &[u8]) -> (Output, PathBuf) {
    let out = k.path("out");
    let _ = std::fs::remove_dir_all(&out);
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(ctx);
    (run_with_stdin(k, &args, input), out)
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "build failed:\n{}", stderr(o));
}

/// A tar of `files`.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, text.as_bytes()).expect("tar");
    }
    b.into_inner().expect("tar")
}

/// `data` through a system compressor (`gzip -c`, …).
fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let mut sin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let w = std::thread::spawn(move || sin.write_all(&data));
    let out = child.wait_with_output().expect("compressor");
    w.join().expect("writer").expect("write");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn stdin_tar_in_every_compression() {
    let k = Kiln::empty(KILN);
    let tar = tar_of(&[("Dockerfile", COPY_A), ("a.txt", "from the tar\n")]);
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("plain", tar.clone()),
        ("gzip", compress("gzip", &tar)),
        ("bzip2", compress("bzip2", &tar)),
        ("xz", compress("xz", &tar)),
        ("zstd", compress("zstd", &tar)),
    ];
    for (name, bytes) in forms {
        let (o, out) = build_local(&k, &[], "-", &bytes);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(out.join("a.txt")).expect(name),
            "from the tar\n",
            "{name}"
        );
    }
    // -f names a Dockerfile inside the tar.
    let tar = tar_of(&[("sub/Build", COPY_A), ("a.txt", "x\n")]);
    let (o, out) = build_local(&k, &["-f", "sub/Build"], "-", &tar);
    assert_ok(&o);
    assert!(out.join("a.txt").is_file());
}

#[test]
fn stdin_bare_dockerfile_has_no_context() {
    let k = Kiln::empty(KILN);
    let (o, out) = build_local(
        &k,
        &[],
        "-",
        b"FROM scratch\nADD --chmod=644 Dockerfile /nope\n",
    );
    assert!(!o.status.success(), "the context is empty: {}", stderr(&o));
    let (o, _) = build_local(&k, &["--iidfile", "/dev/null"], "-", b"FROM scratch\n");
    assert_ok(&o);
    let _ = out;
}

#[test]
fn dockerfile_from_stdin_with_a_folder_context() {
    let k = Kiln::empty(KILN);
    let ctx = k.context("ctx", &[("a.txt", "from the folder\n")]);
    let (o, out) = build_local(
        &k,
        &["-f", "-"],
        &ctx.display().to_string(),
        COPY_A.as_bytes(),
    );
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).expect("a.txt"),
        "from the folder\n"
    );
}

#[test]
fn conflicting_stdin_uses_fail_as_buildx() {
    let k = Kiln::empty(KILN);
    let (o, _) = build_local(&k, &["-f", "-"], "-", COPY_A.as_bytes());
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("invalid argument: can't use stdin for both build context and dockerfile"),
        "{}",
        stderr(&o)
    );
    let (o, _) = build_local(&k, &["-f", "Other"], "-", COPY_A.as_bytes());
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles"),
        "{}",
        stderr(&o)
    );
    let (o, _) = build_local(&k, &[], &k.path("missing").display().to_string(), b"");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unable to prepare context: path"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn lower_case_dockerfile_is_found() {
    let k = Kiln::empty(KILN);
    let ctx = k.context("ctx", &[("dockerfile", COPY_A), ("a.txt", "lower\n")]);
    let (o, out) = build_local(&k, &[], &ctx.display().to_string(), b"");
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).expect("a"),
        "lower\n"
    );
}

// ------------------------------------------------------------------- git

/// A `git daemon` serving `base` on 127.0.0.1, killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        std::fs::create_dir_all(base).expect("git base");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                "--enable=upload-pack",
            ])
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "git daemon");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_ALLOW_PROTOCOL", "git:file")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository `name` under `base` with `files`, committed on `main`.
fn repo(base: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).expect("repo");
    git(&dir, &["init", "-q", "-b", "main"]);
    for (f, text) in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, text).expect("write");
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "init"]);
    dir
}

#[test]
fn git_context_ref_subdir_submodules_and_keep_git_dir() {
    let k = Kiln::empty(KILN);
    let base = k.path("git");
    let d = GitDaemon::start(&base);
    repo(&base, "sub.git", &[("inner.txt", "from the submodule\n")]);
    let top = repo(
        &base,
        "top.git",
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /\n"),
            ("a.txt", "main\n"),
            ("dir/Dockerfile", "FROM scratch\nCOPY . /\n"),
            ("dir/b.txt", "in dir\n"),
        ],
    );
    git(&top, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(top.join("dir/b.txt"), "feature\n").expect("write");
    git(
        &top,
        &["submodule", "add", "-q", &d.url("sub.git"), "dir/mod"],
    );
    git(&top, &["commit", "-q", "-am", "feature"]);
    git(&top, &["checkout", "-q", "main"]);

    // HEAD (main), the whole repository, no .git.
    let (o, out) = build_local(&k, &[], &d.url("top.git"), b"");
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).expect("a"),
        "main\n"
    );
    assert!(!out.join(".git").exists());
    assert!(!out.join("dir/mod").exists());

    // A branch and a subdirectory; the submodule comes along.
    let (o, out) = build_local(&k, &[], &format!("{}#feature:dir", d.url("top.git")), b"");
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("b.txt")).expect("b"),
        "feature\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("mod/inner.txt")).expect("submodule"),
        "from the submodule\n"
    );
    assert!(!out.join("a.txt").exists(), "only the subdirectory");
    assert!(!out.join("mod/.git").exists());

    // BUILDKIT_CONTEXT_KEEP_GIT_DIR=1 keeps .git.
    let (o, out) = build_local(
        &k,
        &["--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1"],
        &d.url("top.git"),
        b"",
    );
    assert_ok(&o);
    assert!(out.join(".git").is_dir(), "kept .git");

    // A missing ref fails.
    let (o, _) = build_local(&k, &[], &format!("{}#nope", d.url("top.git")), b"");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("failed to load git context"),
        "{}",
        stderr(&o)
    );
}

// ------------------------------------------------------------------ http

/// A tiny HTTP server answering GETs from a map of paths to bodies.
struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let f2 = files.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let files = f2.clone();
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
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    let body = files.lock().expect("files").get(&path).cloned();
                    let _ = match body {
                        Some(body) => conn
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|_| conn.write_all(&body)),
                        None => conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        ),
                    };
                });
            }
        });
        Server { port, files }
    }

    fn serve(&self, path: &str, body: Vec<u8>) -> String {
        self.files
            .lock()
            .expect("files")
            .insert(path.to_string(), body);
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

#[test]
fn tarball_and_dockerfile_urls() {
    let k = Kiln::empty(KILN);
    let s = Server::start();
    let tar = tar_of(&[("Dockerfile", COPY_A), ("a.txt", "from the url\n")]);
    let url = s.serve("/ctx.tar.gz", compress("gzip", &tar));
    let (o, out) = build_local(&k, &[], &url, b"");
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).expect("a"),
        "from the url\n"
    );

    // A plain Dockerfile URL: no context.
    let url = s.serve("/Dockerfile", b"FROM scratch\n".to_vec());
    let (o, _) = build_local(&k, &["--iidfile", "/dev/null"], &url, b"");
    assert_ok(&o);
    let url = s.serve("/Dockerfile2", COPY_A.as_bytes().to_vec());
    let (o, _) = build_local(&k, &[], &url, b"");
    assert!(!o.status.success(), "no context to copy from");

    // -f - with a remote context is refused, as buildx does.
    let (o, _) = build_local(&k, &["-f", "-"], &url, COPY_A.as_bytes());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Dockerfile from stdin is not supported with remote contexts"),
        "{}",
        stderr(&o)
    );
    let (o, _) = build_local(
        &k,
        &[],
        &s.serve("/missing", Vec::new()).replace("missing", "gone"),
        b"",
    );
    assert!(!o.status.success());
}

// ------------------------------------------------------------- ADD <git>

/// A build of `dockerfile` (in its own context folder) to `out`.
fn build_df(k: &Kiln, dockerfile: &str, extra: &[&str]) -> (Output, PathBuf) {
    let ctx = k.context("addctx", &[("Dockerfile", dockerfile)]);
    build_local(k, extra, &ctx.display().to_string(), b"")
}

#[test]
fn add_git_keep_git_dir_checksum_and_cache_by_commit() {
    let k = Kiln::empty(KILN);
    let base = k.path("git");
    let d = GitDaemon::start(&base);
    let r = repo(
        &base,
        "add.git",
        &[("f.txt", "one\n"), ("sub/g.txt", "g\n")],
    );
    let commit = git(&r, &["rev-parse", "HEAD"]);
    let url = d.url("add.git");

    let df = format!("FROM scratch\nADD {url}#main /src\n");
    let (o, out) = build_df(&k, &df, &[]);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("src/f.txt")).expect("f"),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("src/sub/g.txt")).expect("g"),
        "g\n"
    );
    assert!(!out.join("src/.git").exists());

    // A subdirectory of the ref.
    let (o, out) = build_df(&k, &format!("FROM scratch\nADD {url}#main:sub /s/\n"), &[]);
    assert_ok(&o);
    assert!(out.join("s/g.txt").is_file());
    assert!(!out.join("s/f.txt").exists());

    // --keep-git-dir keeps .git.
    let (o, out) = build_df(
        &k,
        &format!("FROM scratch\nADD --keep-git-dir=true {url} /src\n"),
        &[],
    );
    assert_ok(&o);
    assert!(out.join("src/.git").is_dir());

    // --checksum: the commit must match.
    let (o, _) = build_df(
        &k,
        &format!("FROM scratch\nADD --checksum={commit} {url}#main /src\n"),
        &[],
    );
    assert_ok(&o);
    let wrong = "0123456789abcdef0123456789abcdef01234567";
    let (o, _) = build_df(
        &k,
        &format!("FROM scratch\nADD --checksum={wrong} {url}#main /src\n"),
        &[],
    );
    assert!(!o.status.success(), "a wrong commit fails");

    // The key is the commit: unchanged is cached, a new commit reruns.
    let json = |k: &Kiln| {
        let ctx = k.path("addctx").display().to_string();
        let out = k.run(&["build", "--progress", "json", &ctx]);
        assert_ok(&out);
        kiln_testsupport::events(&out)
    };
    let _ = build_df(&k, &df, &[]);
    let ev = json(&k);
    let ran = kiln_testsupport::named(&ev, "started");
    assert!(!ran.iter().any(|n| n.contains("ADD")), "cached: {ran:?}");
    std::fs::write(r.join("f.txt"), "two\n").expect("write");
    git(&r, &["commit", "-q", "-am", "two"]);
    let ev = json(&k);
    let ran = kiln_testsupport::named(&ev, "started");
    assert!(
        ran.iter().any(|n| n.contains("ADD")),
        "a new commit reruns: {ran:?}"
    );
    let (o, out) = build_df(&k, &df, &[]);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("src/f.txt")).expect("f"),
        "two\n"
    );

    // COPY of a git source is refused, as BuildKit does.
    let (o, _) = build_df(&k, &format!("FROM scratch\nCOPY {url} /src\n"), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("source can't be a git ref for COPY"),
        "{}",
        stderr(&o)
    );
}

/// `git http-backend` behind a tiny HTTP server that wants
/// `Authorization: <auth>` (any or none when `auth` is `None`); returns
/// the port and every `Authorization` value it was sent.
fn git_http_server(project_root: PathBuf, auth: Option<String>) -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_server = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (root, auth) = (project_root.clone(), auth.clone());
            let seen = Arc::clone(&seen_by_server);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                if let Some(a) = headers.get("authorization") {
                    seen.lock().expect("seen").push(a.clone());
                }
                if auth.is_some() && headers.get("authorization") != auth.as_ref() {
                    let _ = conn.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let mut parts = line.split(' ');
                let method = parts.next().unwrap_or("GET").to_string();
                let target = parts.next().unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let mut cmd = Command::new("git");
                cmd.arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("REQUEST_METHOD", &method)
                    .env("PATH_INFO", path)
                    .env("QUERY_STRING", query)
                    .env("CONTENT_LENGTH", len.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                for (h, v) in [
                    ("content-type", "CONTENT_TYPE"),
                    ("content-encoding", "HTTP_CONTENT_ENCODING"),
                    ("git-protocol", "GIT_PROTOCOL"),
                ] {
                    if let Some(x) = headers.get(h) {
                        cmd.env(v, x);
                    }
                }
                let Ok(mut child) = cmd.spawn() else { return };
                let mut sin = child.stdin.take().expect("stdin");
                let w = std::thread::spawn(move || sin.write_all(&body));
                let Ok(out) = child.wait_with_output() else {
                    return;
                };
                let _ = w.join();
                let text = out.stdout;
                let split = text
                    .windows(4)
                    .position(|x| x == b"\r\n\r\n")
                    .map(|i| (i, 4))
                    .or_else(|| text.windows(2).position(|x| x == b"\n\n").map(|i| (i, 2)));
                let Some((i, n)) = split else { return };
                let head = String::from_utf8_lossy(&text[..i]).to_string();
                let payload = &text[i + n..];
                let mut status = "200 OK".to_string();
                let mut resp = String::new();
                for h in head.lines() {
                    if let Some(s) = h.strip_prefix("Status:") {
                        status = s.trim().to_string();
                    } else {
                        resp.push_str(h);
                        resp.push_str("\r\n");
                    }
                }
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        payload.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(payload);
            });
        }
    });
    (port, seen)
}

#[test]
fn private_git_over_http_with_auth_token_secret() {
    use base64::Engine as _;
    let k = Kiln::empty(KILN);
    let base = k.path("githttp");
    std::fs::create_dir_all(&base).expect("base");
    let r = repo(&base, "priv.git", &[("secret.txt", "private\n")]);
    git(&r, &["config", "http.receivepack", "false"]);
    let token = "s3cr3t-token";
    let expected = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let (port, _) = git_http_server(base.clone(), Some(expected.clone()));
    let url = format!("http://127.0.0.1:{port}/priv.git");
    let token_file = k.path("token");
    std::fs::write(&token_file, token).expect("token");
    let secret = format!("id=GIT_AUTH_TOKEN,src={}", token_file.display());

    // Without the token the server refuses.
    let (o, _) = build_local(&k, &[], &url, b"");
    assert!(!o.status.success(), "no token, no access");

    // A git context with the token.
    std::fs::write(r.join("Dockerfile"), "FROM scratch\nCOPY secret.txt /\n").expect("df");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "df"]);
    let (o, out) = build_local(&k, &["--secret", &secret], &url, b"");
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("secret.txt")).expect("s"),
        "private\n"
    );

    // ADD with a host-scoped token.
    // BuildKit's host is the URL's, port included.
    let secret = format!(
        "id=GIT_AUTH_TOKEN.127.0.0.1:{port},src={}",
        token_file.display()
    );
    let (o, out) = build_df(
        &k,
        &format!("FROM scratch\nADD {url} /p\n"),
        &["--secret", &secret],
    );
    assert_ok(&o);
    assert!(out.join("p/secret.txt").is_file());

    // GIT_AUTH_HEADER: the header as it is.
    let header_file = k.path("header");
    std::fs::write(&header_file, &expected).expect("header");
    let secret = format!("id=GIT_AUTH_HEADER,src={}", header_file.display());
    let (o, out) = build_local(&k, &["--secret", &secret], &url, b"");
    assert_ok(&o);
    assert!(out.join("secret.txt").is_file());

    // The token goes to the remote only: a submodule on another server
    // (which wants no auth) never sees it (BuildKit's tokenScope).
    let other = k.path("githttp-other");
    std::fs::create_dir_all(&other).expect("other");
    repo(&other, "pub.git", &[("pub.txt", "public\n")]);
    let (other_port, seen) = git_http_server(other.clone(), None);
    git(
        &r,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &other.join("pub.git").display().to_string(),
            "pub",
        ],
    );
    git(
        &r,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.pub.url",
            &format!("http://127.0.0.1:{other_port}/pub.git"),
        ],
    );
    git(&r, &["commit", "-q", "-am", "submodule"]);
    let secret = format!("id=GIT_AUTH_TOKEN,src={}", token_file.display());
    let (o, out) = build_df(
        &k,
        &format!("FROM scratch\nADD {url} /p\n"),
        &["--secret", &secret],
    );
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("p/pub/pub.txt")).expect("submodule"),
        "public\n"
    );
    assert!(
        seen.lock().expect("seen").is_empty(),
        "the submodule's server was sent {:?}",
        seen.lock().expect("seen")
    );
}

// ------------------------------------------------------- named contexts

#[test]
fn named_contexts_from_git_and_a_url() {
    let k = Kiln::empty(KILN);
    let base = k.path("git");
    let d = GitDaemon::start(&base);
    let top = repo(
        &base,
        "named.git",
        &[("a.txt", "main\n"), ("dir/b.txt", "in dir\n")],
    );
    git(&top, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(top.join("dir/b.txt"), "feature\n").expect("write");
    git(&top, &["commit", "-q", "-am", "feature"]);
    git(&top, &["checkout", "-q", "main"]);
    let s = Server::start();
    let tgz = compress("gzip", &tar_of(&[("t.txt", "from the tarball\n")]));
    let url = s.serve("/x.tar.gz", tgz.clone());

    let whole = format!("src={}", d.url("named.git"));
    let sub = format!("sub={}#feature:dir", d.url("named.git"));
    let web = format!("web={url}");
    let (o, out) = build_df(
        &k,
        "FROM scratch\n\
         COPY --from=src a.txt /git-a.txt\n\
         COPY --from=sub b.txt /git-b.txt\n\
         COPY --from=web / /web/\n",
        &[
            "--build-context",
            &whole,
            "--build-context",
            &sub,
            "--build-context",
            &web,
        ],
    );
    assert_ok(&o);
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("git-a.txt"), "main\n");
    assert_eq!(read("git-b.txt"), "feature\n");
    // BuildKit's HTTP named context: the body as the file `context`, not
    // unpacked (llb.HTTP with Filename("context")).
    assert_eq!(
        std::fs::read(out.join("web/context")).expect("context"),
        tgz
    );
    assert!(!out.join("web/t.txt").exists());

    // A missing ref fails the build.
    let bad = format!("src={}#nope", d.url("named.git"));
    let (o, _) = build_df(
        &k,
        "FROM scratch\nCOPY --from=src a.txt /\n",
        &["--build-context", &bad],
    );
    assert!(!o.status.success(), "a missing ref was accepted");
}

#[test]
fn named_context_from_git_over_http() {
    use base64::Engine as _;
    let k = Kiln::empty(KILN);
    let base = k.path("githttp");
    std::fs::create_dir_all(&base).expect("base");
    repo(&base, "n.git", &[("n.txt", "over http\n")]);
    let token = "tok";
    let expected = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let (port, _) = git_http_server(base.clone(), Some(expected));
    let token_file = k.path("token");
    std::fs::write(&token_file, token).expect("token");
    let secret = format!("id=GIT_AUTH_TOKEN,src={}", token_file.display());
    let named = format!("src=http://127.0.0.1:{port}/n.git#main");
    let (o, out) = build_df(
        &k,
        "FROM scratch\nCOPY --from=src n.txt /\n",
        &["--secret", &secret, "--build-context", &named],
    );
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(out.join("n.txt")).expect("n"),
        "over http\n"
    );
}

// ------------------------------------------------------ git URL queries

#[test]
fn git_url_query_form_for_contexts_named_contexts_and_add() {
    let k = Kiln::empty(KILN);
    let base = k.path("gitq");
    let d = GitDaemon::start(&base);
    let r = repo(
        &base,
        "q.git",
        &[
            ("a.txt", "main\n"),
            ("dir/b.txt", "in dir\n"),
            ("dir/Dockerfile", "FROM scratch\nCOPY . /\n"),
        ],
    );
    git(&r, &["tag", "v1"]);
    let main_commit = git(&r, &["rev-parse", "HEAD"]);
    git(&r, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(r.join("dir/b.txt"), "feature\n").expect("write");
    git(&r, &["commit", "-q", "-am", "feature"]);
    git(&r, &["checkout", "-q", "main"]);
    let url = d.url("q.git");
    let read = |out: &Path, p: &str| {
        std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    };

    // The main context: ref and subdir as query keys.
    let (o, out) = build_local(&k, &[], &format!("{url}?ref=feature&subdir=dir"), b"");
    assert_ok(&o);
    assert_eq!(read(&out, "b.txt"), "feature\n");
    assert!(!out.join("a.txt").exists(), "only the subdirectory");

    // A named context: branch= and subdir=.
    let named = format!("src={url}?branch=feature&subdir=dir");
    let (o, out) = build_df(
        &k,
        "FROM scratch\nCOPY --from=src b.txt /\n",
        &["--build-context", &named],
    );
    assert_ok(&o);
    assert_eq!(read(&out, "b.txt"), "feature\n");

    // ADD: tag=, and checksum= that matches.
    let (o, out) = build_df(
        &k,
        &format!(
            "FROM scratch\nADD {url}?tag=v1 /t\nADD {url}?ref=main&checksum={main_commit} /c\n"
        ),
        &[],
    );
    assert_ok(&o);
    assert_eq!(read(&out, "t/a.txt"), "main\n");
    assert_eq!(read(&out, "c/dir/b.txt"), "in dir\n");

    // A checksum= that does not match fails.
    let (o, _) = build_df(
        &k,
        &format!("FROM scratch\nADD {url}?ref=feature&checksum={main_commit} /c\n"),
        &[],
    );
    assert!(!o.status.success(), "a wrong checksum was accepted");
    assert!(
        stderr(&o).contains("expected checksum to match"),
        "{}",
        stderr(&o)
    );

    // Unknown keys and conflicts are errors, in BuildKit's words.
    let (o, _) = build_local(&k, &[], &format!("{url}?foo=bar"), b"");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unexpected query \"foo\""),
        "{}",
        stderr(&o)
    );
    let (o, _) = build_df(&k, &format!("FROM scratch\nADD {url}?foo=bar /x\n"), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unexpected query \"foo\""),
        "{}",
        stderr(&o)
    );
    let bad = format!("src={url}?ref=main#feature");
    let (o, _) = build_df(
        &k,
        "FROM scratch\nCOPY --from=src a.txt /\n",
        &["--build-context", &bad],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ref conflicts"), "{}", stderr(&o));
}
