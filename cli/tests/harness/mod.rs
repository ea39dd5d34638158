//! What the CLI's end-to-end tests share: a `kiln` with its own temporary
//! `$KILN_ROOT`, the busybox fixture, JSON progress events, and the
//! independent readers that judge kiln's output (the oracle's imagefs.py,
//! skopeo, umoci). Each test file includes it with `mod harness;` and uses
//! what it needs; what only one file needs stays in that file (an inherent
//! `impl Kiln` there is fine).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `../shared` beside the checkout.
pub const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");
/// The kiln binary under test.
pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The busybox:1.35 fixture every case builds on (an OCI archive).
pub fn fixture() -> String {
    format!("{SHARED}/fixtures/busybox-1.35-oci.tar")
}

/// The fixture's index digest: the image ID `kiln load` gives it.
pub const BUSYBOX_INDEX: &str =
    "sha256:92113fb732fa5ce2fbd395951f3008d3c03ae3bb722f1be8c712e6e4e1acb4f6";

/// kiln with a store of its own, removed with the value.
pub struct Kiln {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Kiln {
    /// A store with nothing in it.
    pub fn empty() -> Kiln {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        Kiln { tmp, root }
    }

    /// A store with the busybox fixture loaded, as `FROM busybox:1.35`
    /// expects.
    pub fn with_busybox() -> Kiln {
        let k = Kiln::empty();
        k.ok(&["load", "-q", "-i", &fixture()]);
        k
    }

    /// `kiln ARGS` on this store, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KILN);
        c.args(args)
            .env("KILN_ROOT", &self.root)
            .env("NO_COLOR", "1");
        c
    }

    /// Runs kiln to the end, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running kiln")
    }

    /// Runs kiln, asserts success, returns (stdout, stderr).
    pub fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "kiln {args:?} failed:\n{o}\n{e}");
        (o, e)
    }

    /// A path in the test's temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A context folder `name` with these files (a `Dockerfile` among
    /// them, usually).
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).expect("ctx");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write context file");
        }
        dir
    }

    /// Builds with JSON progress; returns the events and the output.
    pub fn build_json(&self, ctx: &Path, extra: &[&str]) -> (Vec<Value>, Output) {
        let ctx = ctx.display().to_string();
        let mut args = vec!["build", "--progress", "json"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let out = self.run(&args);
        (events(&out), out)
    }

    /// How many blobs the store holds.
    pub fn blobs(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256")).map_or(0, |rd| rd.count())
    }

    /// The store itself, for looking at what a command left in it.
    pub fn store(&self) -> kiln_cache::Root {
        kiln_cache::Root::open(&self.root).expect("open store")
    }
}

/// A command's stderr as text, for assertion messages and matching.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON progress events a `--progress json` run printed on stdout
/// (lines that are not JSON are skipped).
pub fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The names of the JSON progress events of one kind (`started`, `cached`).
pub fn named<'a>(events: &'a [Value], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .filter_map(|e| e["name"].as_str())
        .collect()
}

/// The oracle's description of an image (archive or layout), one platform.
pub fn imagefs(image: &Path, platform: Option<&str>) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{SHARED}/oracle/imagefs.py")).arg(image);
    if let Some(p) = platform {
        cmd.args(["--platform", p]);
    }
    let out = cmd.output().expect("running imagefs.py");
    assert!(out.status.success(), "imagefs.py: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("imagefs.py prints JSON")
}

/// Runs `skopeo ARGS` (it verifies every digest it copies), asserts
/// success, returns its stdout.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (run .ci/setup)");
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    out.stdout
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE`: an independent reader of an
/// OCI layout; asserts success. The root filesystem is `BUNDLE/rootfs`,
/// the runtime config `BUNDLE/config.json`.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("umoci (run .ci/setup)");
    assert!(out.status.success(), "umoci: {}", stderr(&out));
}

/// The mount points beneath `dir` in this process's (the host's) mount
/// namespace, e.g. what a killed build left mounted.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(&dir))
        .collect()
}
