//! A build's RUN steps get a network namespace of their own with outbound
//! access, as BuildKit gives them, never the host's (a step must not reach
//! a service on the host's 127.0.0.1): each namespace is made with
//! `unshare --net=FILE` and wired to the outside by slirp4netns, a
//! user-mode stack (no bridge, veth or firewall rule on the host; host
//! loopback disabled). Making one takes milliseconds, so, as BuildKit keeps
//! a pool, namespaces are made on first use and handed from step to step;
//! a step joins one with setns in the sandbox helper.
//!
//! Nothing outlives the build: the namespace files are bind mounts in the
//! build's private mount namespace (see
//! [`crate::snapshot::enter_private_mount_namespace`]) under its scratch
//! folder, and slirp4netns exits when the build's end of its exit pipe
//! closes, which a SIGKILL closes too.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Why a namespace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("making a network namespace for RUN ({what}): {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "making a network namespace for RUN: {0} (RUN steps get a network of their own \
         through slirp4netns; install it, or build with --network none, or --network host \
         --allow network.host)"
    )]
    Setup(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Io { what, source }
}

/// One prepared namespace: its file and the slirp4netns serving it.
#[derive(Debug)]
struct NetNs {
    path: PathBuf,
    /// None for a loopback-only namespace (rootless, no usable tun device).
    slirp: Option<Child>,
    /// slirp4netns exits when this closes (`--exit-fd`).
    _exit: Option<OwnedFd>,
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(slirp) = self.slirp.as_mut() {
            let _ = slirp.kill();
            let _ = slirp.wait();
        }
        let _ = crate::sys::umount(&self.path, libc::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The build's namespaces: free ones wait here for the next step.
#[derive(Debug)]
pub struct NetPool {
    dir: PathBuf,
    free: Mutex<Vec<NetNs>>,
    made: std::sync::atomic::AtomicUsize,
    resolv: std::sync::OnceLock<Option<PathBuf>>,
}

/// slirp4netns's DNS forwarder, as seen from the namespace.
const SLIRP_DNS: &str = "10.0.2.3";

/// The host's resolv.conf as a step in a namespace of its own needs it: a
/// nameserver on the host's loopback (systemd-resolved's 127.0.0.53, a
/// local dnsmasq) cannot be reached from there, so it becomes slirp4netns's
/// forwarder, which asks the host's resolver for the step. None when the
/// host's file serves as it is.
fn resolv_for_namespace(host: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::new();
    for line in host.lines() {
        let mut f = line.split_whitespace();
        let loopback = f.next() == Some("nameserver")
            && f.next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback());
        if loopback {
            if !changed {
                out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
            }
            changed = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    changed.then_some(out)
}

/// A namespace lent to one step; back to the pool when dropped.
#[derive(Debug)]
pub struct NetLease<'a> {
    pool: &'a NetPool,
    ns: Option<NetNs>,
}

impl NetLease<'_> {
    /// The namespace's file, for the sandbox to join.
    pub fn path(&self) -> &Path {
        self.ns.as_ref().map_or(Path::new(""), |n| n.path.as_path())
    }
}

impl Drop for NetLease<'_> {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            // A step's processes are gone with its pid namespace; the
            // namespace itself is as it was made (lo, tap0, the route).
            self.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ns);
        }
    }
}

impl NetPool {
    /// A pool making its namespace files in `dir` (the build's scratch).
    pub fn new(dir: PathBuf) -> NetPool {
        NetPool {
            dir,
            free: Mutex::new(Vec::new()),
            made: std::sync::atomic::AtomicUsize::new(0),
            resolv: std::sync::OnceLock::new(),
        }
    }

    /// The resolv.conf steps in these namespaces get, when the host's
    /// will not do ([`resolv_for_namespace`]); written once per build.
    pub fn resolv_conf(&self) -> Option<PathBuf> {
        self.resolv
            .get_or_init(|| {
                let host = std::fs::read_to_string("/etc/resolv.conf").ok()?;
                let text = resolv_for_namespace(&host)?;
                std::fs::create_dir_all(&self.dir).ok()?;
                let path = self.dir.join("resolv.conf");
                std::fs::write(&path, text).ok()?;
                Some(path)
            })
            .clone()
    }

    /// A namespace for one step: a free one, else a new one.
    pub fn acquire(&self) -> Result<NetLease<'_>, NetError> {
        let ns = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let ns = match ns {
            Some(ns) => ns,
            None => self.make()?,
        };
        Ok(NetLease {
            pool: self,
            ns: Some(ns),
        })
    }

    fn make(&self) -> Result<NetNs, NetError> {
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        std::fs::create_dir_all(&self.dir).map_err(io("create its folder"))?;
        let path = self.dir.join(format!("net{n}"));
        std::fs::File::create(&path).map_err(io("create its file"))?;
        let out = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .map_err(io("run unshare"))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&path);
            return Err(NetError::Setup(format!(
                "unshare --net: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let (ready_r, ready_w) = crate::sys::pipe_for_child(false).map_err(io("pipe"))?;
        let (exit_r, exit_w) = crate::sys::pipe_for_child(true).map_err(io("pipe"))?;
        let log_path = self.dir.join(format!("net{n}.log"));
        let log = std::fs::File::create(&log_path).map_err(io("create its log"))?;
        let slirp = Command::new("slirp4netns")
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .args(["--netns-type=path"])
            .arg(&path)
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        drop(ready_w);
        drop(exit_r);
        let fail = |path: &Path, msg: String| {
            let _ = crate::sys::umount(path, libc::MNT_DETACH);
            let _ = std::fs::remove_file(path);
            NetError::Setup(msg)
        };
        let mut slirp = match slirp {
            Ok(c) => c,
            Err(e) => return Err(fail(&path, format!("starting slirp4netns: {e}"))),
        };
        let mut byte = [0u8; 1];
        let ready = std::fs::File::from(ready_r).read(&mut byte);
        if !matches!(ready, Ok(1)) {
            let _ = slirp.kill();
            let _ = slirp.wait();
            let err = std::fs::read_to_string(&log_path).unwrap_or_default();
            if crate::userns::in_user_namespace() && err.contains("/dev/net/tun") {
                // Rootless on a machine whose tun device only root may
                // open: no user-mode stack can run. The step keeps a
                // namespace of its own (never the host's), loopback only.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "warning: rootless: /dev/net/tun cannot be opened by this user ({}), so \
                         slirp4netns cannot give RUN steps outbound access; they get a network \
                         namespace with loopback only. Make the device usable (mode 0666, the \
                         usual default: `chmod 0666 /dev/net/tun` as root) for outbound access.",
                        err.trim()
                    );
                });
                return Ok(NetNs {
                    path,
                    slirp: None,
                    _exit: None,
                });
            }
            return Err(fail(
                &path,
                format!("slirp4netns did not start: {}", err.trim()),
            ));
        }
        Ok(NetNs {
            path,
            slirp: Some(slirp),
            _exit: Some(exit_w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_nameserver_becomes_slirps_forwarder() {
        assert_eq!(resolv_for_namespace("nameserver 10.255.255.53\n"), None);
        assert_eq!(
            resolv_for_namespace(
                "search lan\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"
            )
            .as_deref(),
            Some("search lan\nnameserver 10.0.2.3\noptions edns0\n")
        );
        assert_eq!(
            resolv_for_namespace("nameserver 127.0.0.1\nnameserver 1.1.1.1\n").as_deref(),
            Some("nameserver 10.0.2.3\nnameserver 1.1.1.1\n")
        );
    }
}
