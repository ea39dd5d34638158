//! A network namespace of the test's own, bound to a file under /run, so
//! the bridges, veths and firewall rules a network test makes live and die
//! there and the host's interfaces and firewall are never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The namespace; unmounted and its file removed on drop.
pub struct TestNetns {
    path: PathBuf,
}

impl TestNetns {
    /// A fresh namespace (loopback up), bound to `/run/<prefix>-<pid>-<ns>`.
    pub fn new(prefix: &str) -> TestNetns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = PathBuf::from(format!("/run/{prefix}-{}-{nanos}", std::process::id()));
        std::fs::File::create(&path).expect("netns file");
        let st = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .status()
            .expect("unshare");
        assert!(st.success(), "unshare --net");
        let ns = TestNetns { path };
        ns.sh("ip link set lo up");
        ns
    }

    /// The file the namespace is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `program` run inside the namespace, stdin closed.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    /// A shell command inside the namespace: whether it succeeded, and its
    /// stdout.
    pub fn sh_status(&self, script: &str) -> (bool, String) {
        let o = self.cmd("sh").args(["-c", script]).output().expect("sh");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    /// A shell command inside the namespace that must succeed; its stdout.
    pub fn sh(&self, script: &str) -> String {
        let o = self.cmd("sh").args(["-c", script]).output().expect("sh");
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Links of the namespace, by name (`ip -o link` inside it: sysfs
    /// shows the links of the namespace that mounted it, the host's).
    pub fn links(&self) -> Vec<String> {
        self.sh("ip -o link")
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// kiln on a store of its own (the busybox fixture loaded), every command
/// run inside a [`TestNetns`] of its own: the harness of the network
/// tests. Containers still there are removed on drop, before the
/// namespace goes.
pub struct NetKiln {
    _tmp: tempfile::TempDir,
    kiln: PathBuf,
    /// The store (`$KILN_ROOT`).
    pub root: PathBuf,
    /// The namespace every command runs in.
    pub ns: TestNetns,
}

impl NetKiln {
    /// A fresh store for the binary `kiln`, in a namespace named after
    /// `prefix`.
    pub fn new(kiln: &str, prefix: &str) -> NetKiln {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let k = NetKiln {
            _tmp: tmp,
            kiln: PathBuf::from(kiln),
            root,
            ns: TestNetns::new(prefix),
        };
        let fixture = crate::busybox_fixture();
        k.ok(&["load", "-q", "-i", fixture.to_str().expect("utf8")]);
        k
    }

    /// `program` inside the namespace, on this store, with the default
    /// network left to kiln (docker's bridge).
    pub fn in_ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.ns.cmd(program);
        c.env("KILN_ROOT", &self.root)
            .env_remove("KILN_DEFAULT_NETWORK")
            .env("NO_COLOR", "1");
        c
    }

    /// `kiln ARGS` inside the namespace.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.in_ns(&self.kiln).args(args).output().expect("kiln")
    }

    /// `kiln ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({:?}):\n{}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Processes whose command line or environment names this store
    /// (helpers, port proxies, DNS resolvers, FUSE servers, containers).
    pub fn procs(&self) -> Vec<String> {
        let root = self.root.to_string_lossy().into_owned();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            if cmd.contains(&root) || String::from_utf8_lossy(&env).contains(&root) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
        out
    }

    /// Waits up to 10 s for `f` to hold.
    pub fn eventually(&self, what: &str, f: impl Fn() -> bool) {
        for _ in 0..40 {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("{what}");
    }
}

impl Drop for NetKiln {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
    }
}

/// A shell loop that retries `cmd` for a few seconds (a detached server
/// needs a moment to listen).
pub fn retry(cmd: &str) -> String {
    format!("for i in $(seq 1 40); do {cmd} && exit 0; sleep 0.25; done; exit 1")
}
