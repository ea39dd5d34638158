//! A `kiln` under test with a temporary `$KILN_ROOT` of its own, and the
//! readers of what it prints (stderr, JSON progress events).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::fixtures::busybox_fixture;

/// kiln with a store of its own, removed with the value.
pub struct Kiln {
    /// The test's temporary folder (contexts, outputs), removed on drop.
    pub tmp: tempfile::TempDir,
    /// `$KILN_ROOT`, `root` inside `tmp` (created by kiln on first use).
    pub root: PathBuf,
    /// The binary under test. Only the test crate knows it
    /// (`env!("CARGO_BIN_EXE_kiln")`), so it is passed in.
    pub bin: PathBuf,
    /// Run kiln as this uid and gid (through `setpriv`) instead of as the
    /// test's own user: rootless tests ([`crate::rootless::TestUser`]).
    pub runas: Option<(u32, u32)>,
}

impl Drop for Kiln {
    fn drop(&mut self) {
        if self.runas.is_some() {
            crate::rootless::stop_pause(&self.root);
        }
    }
}

impl Kiln {
    /// A store with nothing in it, used by the kiln binary `bin`.
    pub fn empty(bin: impl AsRef<Path>) -> Kiln {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        Kiln {
            tmp,
            root,
            bin: bin.as_ref().to_path_buf(),
            runas: None,
        }
    }

    /// A store with the busybox fixture loaded, as `FROM busybox:1.35`
    /// expects.
    pub fn with_busybox(bin: impl AsRef<Path>) -> Kiln {
        let k = Kiln::empty(bin);
        k.load_busybox();
        k
    }

    /// Loads the busybox fixture into this store.
    pub fn load_busybox(&self) {
        let fixture = busybox_fixture();
        let fixture = fixture.to_str().expect("fixture path is UTF-8");
        self.ok(&["load", "-q", "-i", fixture]);
    }

    /// Creates the folder `dir` (and its parents) for kiln's use: owned by
    /// the user kiln runs as.
    pub fn mkdir(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        if let Some((uid, gid)) = self.runas {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown");
        }
    }

    /// `kiln ARGS` on this store, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match self.runas {
            None => Command::new(&self.bin),
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .args(["--init-groups", "--"])
                    .arg(&self.bin)
                    .env("HOME", self.tmp.path())
                    .env_remove("XDG_DATA_HOME")
                    .env_remove("XDG_RUNTIME_DIR")
                    .current_dir(self.tmp.path());
                c
            }
        };
        c.args(args)
            .env("KILN_ROOT", &self.root)
            .env("KILN_DEFAULT_NETWORK", "host")
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
    #[cfg(feature = "cache")]
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
