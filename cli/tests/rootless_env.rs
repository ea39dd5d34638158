//! Rootless kiln against the machine around it: outbound network for RUN
//! and `kiln run` (slirp4netns, as rootless BuildKit and podman use), and
//! the one clear message kiln gives when the machine will not let it in
//! (user namespaces forbidden, `newuidmap` missing).
//!
//! Nothing here touches the host's network or sysctls. The network test
//! makes a network namespace of its own (as root, `unshare -n`), puts an
//! address on a veth inside it, serves HTTP there and runs the rootless
//! kiln inside that namespace (`nsenter --net`); the "forbidden" test sets
//! `user.max_user_namespaces = 0` in a child user namespace of its own,
//! where the limit applies to the kiln it starts and nowhere else.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use kiln_testsupport::{stderr, Kiln, TestUser};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// The address the test's namespace serves HTTP on (a veth inside it).
const ADDR: &str = "10.212.0.1";
const PORT: &str = "8080";

/// Runs what `cmd` would run, prefixed by `prefix` (a program and its
/// arguments), with the same environment and working directory.
fn wrapped(prefix: &[&str], cmd: &Command) -> Command {
    let mut c = Command::new(prefix[0]);
    c.args(&prefix[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    c
}

/// Says loudly that a test could not test what it is for.
fn skipped(what: &str, why: &str) {
    eprintln!(
        "\n**********\nSKIPPED: {what}: {why}\n(run .ci/setup as root: it restores Debian's 0666)\n**********\n"
    );
}

/// A network namespace of the test's own, with lo up and `ADDR` on one
/// end of a veth pair, and busybox httpd serving `dir` on `ADDR:PORT`. The
/// namespace lives as long as the server (killed on drop).
struct NetNs {
    server: Child,
}

impl NetNs {
    fn serve(dir: &Path) -> NetNs {
        let script = format!(
            "set -e; ip link set lo up; ip link add kb0 type veth peer name kb1; \
             ip addr add {ADDR}/24 dev kb0; ip link set kb0 up; ip link set kb1 up; \
             exec busybox httpd -f -p {ADDR}:{PORT} -h {}",
            dir.display()
        );
        let server = Command::new("unshare")
            .args(["-n", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare -n (util-linux)");
        let ns = NetNs { server };
        let url = format!("http://{ADDR}:{PORT}/hello.txt");
        for _ in 0..100 {
            let out = ns
                .enter(&["busybox", "wget", "-q", "-O", "-", url.as_str()])
                .output()
                .expect("nsenter");
            if out.status.success() {
                return ns;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the test namespace's HTTP server never answered");
    }

    fn net(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.server.id())
    }

    /// `args` run inside the namespace.
    fn enter(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(self.net()).arg("--").args(args);
        c
    }

    /// `kiln ARGS` (as `k` runs it: as the test user) inside the namespace.
    fn kiln(&self, k: &Kiln, args: &[&str]) -> Output {
        let net = self.net();
        wrapped(&["nsenter", net.as_str(), "--"], &k.cmd(args))
            .output()
            .expect("running kiln in the test namespace")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// RUN's default network and `kiln run`'s reach an address outside the
/// sandbox (here: in the test's namespace) rootless; `--network none`
/// has no route there.
#[test]
fn rootless_run_and_build_reach_out_and_none_does_not() {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/net/tun")
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o006 != 0o006 {
        skipped(
            "rootless outbound network",
            &format!("/dev/net/tun is {mode:04o}: slirp4netns cannot open it as a plain user"),
        );
        return;
    }
    let user = TestUser::create(true);
    let k = user.kiln_with_busybox(KILN);
    let www = k.path("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("hello.txt"), "hello from the test namespace\n").expect("page");
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ns = NetNs::serve(&www);
    let url = format!("http://{ADDR}:{PORT}/hello.txt");

    let dockerfile = format!(
        "FROM busybox:1.35\n\
         RUN wget -q -O /got {url}\n\
         RUN --network=none ip route > /routes; \
             wget -q -T 3 -O /none {url} 2>/none.err || echo unreachable > /none\n"
    );
    let ctx = k.context("net", &[("Dockerfile", dockerfile.as_str())]);
    let out_dir = k.path("out");
    k.mkdir(&out_dir);
    let dest = format!("type=local,dest={}", out_dir.join("fs").display());
    let out = ns.kiln(
        &k,
        &[
            "build",
            "--progress",
            "plain",
            "--output",
            dest.as_str(),
            ctx.to_str().expect("utf8"),
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "rootless build failed:\n{err}");
    assert!(!err.contains("loopback only"), "{err}");
    let fs = out_dir.join("fs");
    assert_eq!(
        std::fs::read_to_string(fs.join("got")).expect("/got"),
        "hello from the test namespace\n"
    );
    assert_eq!(
        std::fs::read_to_string(fs.join("routes")).expect("/routes"),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(fs.join("none")).expect("/none"),
        "unreachable\n",
        "{}",
        std::fs::read_to_string(fs.join("none.err")).unwrap_or_default()
    );

    let out = ns.kiln(
        &k,
        &[
            "run",
            "--rm",
            "busybox:1.35",
            "wget",
            "-q",
            "-O",
            "-",
            url.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&out), "hello from the test namespace\n");
    let probe = format!("ip route; wget -q -T 3 -O - {url} || echo unreachable");
    let out = ns.kiln(
        &k,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox:1.35",
            "sh",
            "-c",
            probe.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&out), "unreachable\n", "{}", stderr(&out));
}

/// Starts a child user namespace (mapping every id, so the test user can
/// still be switched to inside), sets `user.max_user_namespaces = 0` there
/// and runs `cmd` in it: any user namespace `cmd` tries to create fails as
/// on a machine that forbids them. The host's own limit is not touched.
/// Test code has no `unsafe` (no fork/unshare of its own), so python does
/// the fork and unshare.
fn with_no_user_namespaces(k: &Kiln, cmd: &Command) -> Command {
    let script = k.path("no-userns.py");
    let mut f = std::fs::File::create(&script).expect("script");
    f.write_all(
        br#"import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r1, w1 = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        sys.stderr.write("test harness: unshare(CLONE_NEWUSER) failed\n"); os._exit(90)
    os.write(w1, b"u"); os.read(r2, 1)
    # Full capabilities in the new namespace until exec: set its limit.
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0\n")
    os.execvp(sys.argv[1], sys.argv[1:])
os.read(r1, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 4294967295\n")
os.write(w2, b"g")
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
"#,
    )
    .expect("write script");
    let script = script.to_str().expect("utf8").to_string();
    wrapped(&["python3", script.as_str()], cmd)
}

/// The one line a refused kiln prints: an `ERROR:` naming the sysctl,
/// not a stack of errors.
#[test]
fn forbidden_user_namespaces_name_the_sysctl() {
    let before = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").expect("sysctl");
    let user = TestUser::create(true);
    let k = user.kiln(KILN);
    let out = with_no_user_namespaces(&k, &k.cmd(&["images"]))
        .output()
        .expect("python3");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "kiln ran without a user namespace:\n{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("forbids them")
            && err.contains("user.max_user_namespaces")
            && err.contains("sysctl -w user.max_user_namespaces="),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line:\n{err}"
    );
    assert!(
        err.starts_with("ERROR: rootless kiln needs unprivileged user namespaces"),
        "{err}"
    );
    // The host's limit is as it was, and the user still gets in there.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").expect("sysctl"),
        before
    );
    k.ok(&["images"]);
}

/// Without `newuidmap` on PATH (Debian's `uidmap` not installed) a user
/// with a subordinate range is told which package to install.
#[test]
fn missing_newuidmap_names_the_uidmap_package() {
    let user = TestUser::create(true);
    let k = user.kiln(KILN);
    let empty = k.path("empty-path");
    std::fs::create_dir_all(&empty).expect("dir");
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv (util-linux)");
    let cmd = k.cmd(&["images"]);
    let mut c = Command::new(setpriv);
    c.args(cmd.get_args());
    for (key, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(key, v),
            None => c.env_remove(key),
        };
    }
    c.env("PATH", &empty);
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    let out = c.output().expect("setpriv");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("newuidmap")
            && err.contains("`uidmap` package")
            && err.contains("/etc/subuid"),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line:\n{err}"
    );
    // With PATH back, the same user gets in.
    k.ok(&["images"]);
}

/// No subordinate range: one warning (no error), naming what cannot be
/// kept and how to add a range; the command works.
#[test]
fn no_subuid_range_warns_once_and_works() {
    let user = TestUser::create(false);
    let k = user.kiln(KILN);
    let (out, err) = k.ok(&["images"]);
    assert!(out.starts_with("REPOSITORY"), "{out}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("has no range in /etc/subuid and /etc/subgid")
            && err.contains("usermod --add-subuids"),
        "{err}"
    );
    assert!(!err.contains("ERROR"), "{err}");
}
