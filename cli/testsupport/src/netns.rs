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
