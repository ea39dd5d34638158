//! A `kiln` for container tests (`run`, lifecycle, limits, inspect): a
//! store of its own with the busybox fixture loaded, and the waits and
//! lookups those tests share, so each test file does not grow its own copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::busybox_fixture;

/// kiln on a temporary store of its own, busybox loaded. Containers run
/// on the host network unless a test asks for another (`--network none`
/// is what most pass): the default bridge would make a bridge and firewall
/// rules on the machine.
pub struct Ctr {
    /// The temporary folder holding the store (tests put contexts here).
    pub tmp: tempfile::TempDir,
    /// `KILN_ROOT`.
    pub root: PathBuf,
    bin: PathBuf,
}

impl Ctr {
    /// A fresh store with the busybox fixture loaded.
    pub fn new(bin: impl AsRef<Path>) -> Ctr {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let k = Ctr {
            tmp,
            root,
            bin: bin.as_ref().to_path_buf(),
        };
        let fixture = busybox_fixture();
        k.ok(&["load", "-q", "-i", fixture.to_str().expect("utf8")]);
        k
    }

    /// kiln with `args` on this store, stdin closed, for a test to adjust
    /// and spawn (containers on the host network unless the args say).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("KILN_ROOT", &self.root)
            .env("KILN_DEFAULT_NETWORK", "host")
            .stdin(Stdio::null());
        c
    }

    /// Runs kiln with `args`, stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn kiln")
    }

    /// Runs kiln, insists on success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({:?}):\n{}\n{}",
            o.status.code(),
            out(&o),
            err(&o)
        );
        out(&o)
    }

    /// `kiln run --rm FLAGS… busybox:1.35 true` must be refused as docker
    /// refuses it: exit code 125 and `words` in its stderr.
    pub fn refuses_run(&self, flags: &[&str], words: &str) {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.extend(["busybox:1.35", "true"]);
        let o = self.run(&a);
        assert_eq!(o.status.code(), Some(125), "{a:?}: {}", err(&o));
        assert!(err(&o).contains(words), "{a:?}: {}", err(&o));
    }

    /// `$KILN_ROOT/containers`: a folder per container, named by its ID.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The container folders in the store.
    pub fn container_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.containers())
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The container record (state.json) of the container named `key`, or
    /// whose ID starts with it.
    pub fn state(&self, key: &str) -> serde_json::Value {
        let dir = self.root.join("containers");
        for e in std::fs::read_dir(&dir).expect("containers").flatten() {
            let p = e.path().join("state.json");
            if let Ok(b) = std::fs::read(&p) {
                let v: serde_json::Value = serde_json::from_slice(&b).expect("state json");
                if v["name"] == key || v["id"].as_str().is_some_and(|i| i.starts_with(key)) {
                    return v;
                }
            }
        }
        panic!("no container {key}");
    }

    /// Waits (bounded, generously) until `f` holds.
    pub fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..600 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("never happened: {what}");
    }

    /// The STATUS column of `ps -a` for the container named `name`.
    pub fn status(&self, name: &str) -> String {
        let ps = self.ok(&["ps", "-a"]);
        let header = ps.lines().next().unwrap_or("").to_string();
        let (from, to) = (
            header.find("STATUS").expect("STATUS"),
            header.find("PORTS").expect("PORTS"),
        );
        ps.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .map(|l| {
                l.get(from..to.min(l.len()))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// A command's stdout, as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
