//! A plain user for rootless tests: created with `useradd`, given a
//! subordinate id range of its own in `/etc/subuid` and `/etc/subgid` (or
//! none, to test the single-id mapping), and removed with its ranges when
//! the value drops, failed test or not. Needs root (tests run as root).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::kiln::Kiln;

/// Serialises edits of /etc/subuid, /etc/subgid and the user database
/// between the tests of one binary.
static ETC: Mutex<()> = Mutex::new(());

/// How many ids each test user gets: 65536, as useradd gives by default,
/// so every id below 65536 in an image keeps its owner.
pub const RANGE: u32 = 65536;

/// A temporary user; see the module docs.
pub struct TestUser {
    /// Its name (`kilnrl` + pid + a counter).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// The start of its subordinate range, if it has one.
    pub range: Option<u32>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a user-admin tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first start, past every range in `files` and at least 1<<28, where
/// `RANGE` ids fit without overlap.
fn free_start(files: &[&str]) -> u32 {
    let mut end: u64 = 1 << 28;
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let mut p = line.split(':').skip(1);
            let (Some(s), Some(c)) = (p.next(), p.next()) else {
                continue;
            };
            if let (Ok(s), Ok(c)) = (s.trim().parse::<u64>(), c.trim().parse::<u64>()) {
                end = end.max(s + c);
            }
        }
    }
    u32::try_from(end).expect("subordinate ids exhausted")
}

fn remove_lines(file: &str, name: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| l.split(':').next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::fs::write(file, kept);
}

impl TestUser {
    /// A new user; with `with_range` a fresh subordinate range of
    /// [`RANGE`] ids for both uids and gids.
    pub fn create(with_range: bool) -> TestUser {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let _g = ETC.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!(
            "kilnrl{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        // -K keeps useradd from adding a range of its own: the test decides.
        run(Command::new("useradd")
            .args(["-M", "-U", "-s", "/usr/sbin/nologin"])
            .args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"])
            .arg(&name));
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .arg(flag)
                .arg(&name)
                .output()
                .expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let mut user = TestUser {
            name,
            uid,
            gid,
            range: None,
        };
        // Whatever happens from here, drop removes the user.
        if with_range {
            let start = free_start(&["/etc/subuid", "/etc/subgid"]);
            for f in ["/etc/subuid", "/etc/subgid"] {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(f)
                    .expect("open subid file");
                writeln!(file, "{}:{start}:{RANGE}", user.name).expect("append range");
            }
            user.range = Some(start);
        }
        user
    }

    /// A kiln run as this user (through `setpriv`), with a temporary folder
    /// and store owned by it.
    pub fn kiln(&self, bin: impl AsRef<Path>) -> Kiln {
        let mut k = Kiln::empty(bin);
        self.chown(k.tmp.path());
        k.runas = Some((self.uid, self.gid));
        k
    }

    /// Like [`TestUser::kiln`], with the busybox fixture loaded.
    pub fn kiln_with_busybox(&self, bin: impl AsRef<Path>) -> Kiln {
        let k = self.kiln(bin);
        k.load_busybox();
        k
    }

    /// Gives `path` (not recursively) to the user.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).expect("chown to test user");
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _g = ETC.lock().unwrap_or_else(|e| e.into_inner());
        remove_lines("/etc/subuid", &self.name);
        remove_lines("/etc/subgid", &self.name);
        let _ = Command::new("userdel").arg("-f").arg(&self.name).output();
    }
}

/// Ends the namespace holder kiln started for the store at `root` (its pid
/// in `userns.pid`), if it is one: called when a rootless [`Kiln`] drops.
pub fn stop_pause(root: &Path) {
    let Ok(text) = std::fs::read_to_string(root.join("userns.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.split(|b| *b == 0).any(|a| a == b"__userns-pause") {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .output();
    }
}
