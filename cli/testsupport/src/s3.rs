//! A real S3-compatible server for the object-store cache tests:
//! `s3s-fs` (the s3s crate's file-system server, `cargo install
//! s3s-fs@0.14.1 --features binary` in `.ci/setup`) on 127.0.0.1, a free
//! port, a temporary folder (one sub-folder per bucket) and credentials.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::http_status;

/// The access key the server accepts.
pub const S3_ACCESS_KEY: &str = "kiln-test-access";
/// The secret the server accepts (tests check it is never printed).
pub const S3_SECRET_KEY: &str = "kiln-test-Secret-0123456789abcdef";
/// The bucket made at start.
pub const S3_BUCKET: &str = "kiln-cache";

/// Where `s3s-fs` is: on `PATH`, else cargo's bin folder.
pub fn s3s_fs_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("s3s-fs"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let f = cargo_home.join("bin").join("s3s-fs");
        f.is_file().then_some(f)
    })
}

/// A running `s3s-fs`, killed on drop.
pub struct TestS3 {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data: `dir/<bucket>/<key>` is an object.
    pub dir: tempfile::TempDir,
}

impl TestS3 {
    /// Starts the server with bucket [`S3_BUCKET`] and the test
    /// credentials.
    pub fn start() -> TestS3 {
        let bin = s3s_fs_binary().expect(
            "s3s-fs is not installed: run .ci/setup (cargo install s3s-fs --features binary)",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(S3_BUCKET)).expect("bucket folder");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let addr = format!("127.0.0.1:{port}");
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_status(&addr, "/").is_some() {
                    return TestS3 { child, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `--cache-to`/`--cache-from` value for this server with the test
    /// credentials, `extra` appended (`name=x,prefix=y/`).
    pub fn cache_spec(&self, extra: &str) -> String {
        let mut s = format!(
            "type=s3,bucket={S3_BUCKET},region=us-east-1,endpoint_url={},use_path_style=true,\
             access_key_id={S3_ACCESS_KEY},secret_access_key={S3_SECRET_KEY}",
            self.endpoint()
        );
        if !extra.is_empty() {
            s.push(',');
            s.push_str(extra);
        }
        s
    }

    /// The keys of the bucket's objects, sorted (`manifests/buildkit`,
    /// `blobs/sha256:…`), read from the server's folder.
    pub fn keys(&self) -> Vec<String> {
        let root = self.dir.path().join(S3_BUCKET);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&root) {
                    let k = rel.to_string_lossy().to_string();
                    // s3s-fs keeps its metadata and uploads beside.
                    if !k.starts_with(".") && !k.contains("/.") {
                        out.push(k);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
