//! Build secrets and SSH agent forwarding for `RUN --mount=type=secret|ssh`.
//!
//! The client (`kiln build --secret/--ssh`) names where each secret or agent
//! lives; a step that mounts one gets a private copy of the secret (a file
//! in a 0700 scratch folder, bind-mounted read-only, removed after the
//! step) or the agent's socket. Nothing here ever reaches an op, so a
//! secret's value is never part of a cache key, a layer or the progress
//! output, as with BuildKit.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::{chown, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the value of one `--secret` comes from. Read when a step needs it
/// (as BuildKit's session does), not when the build starts.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `src=PATH`: the file's bytes.
    File(PathBuf),
    /// `env=VAR`: the client's environment variable (absent when unset).
    Env(String),
    /// The value itself (for callers that already hold it).
    Value(Vec<u8>),
}

impl std::fmt::Debug for SecretSource {
    // Never prints a value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Env(v) => write!(f, "Env({v})"),
            SecretSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

/// The secrets and agents a build may use, by id.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `--secret`: id → source.
    pub secrets: HashMap<String, SecretSource>,
    /// `--ssh`: id → the agent's socket on the host.
    pub ssh: HashMap<String, PathBuf>,
    /// The agents kiln started for `--ssh ID=KEYFILE` (their sockets are
    /// in `ssh`); held here so they serve as long as the build may ask.
    pub key_agents: Vec<Arc<crate::key_agent::KeyAgent>>,
}

/// Why a secret could not be given to a step.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Worded as BuildKit's.
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("no SSH key {0:?} forwarded from the client (kiln build --ssh {0})")]
    NoSsh(String),
    #[error("SSH agent socket {path} of id {id:?}: {source}")]
    Socket {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading secret {id:?} from {path}: {source}")]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Secrets {
    /// The value of secret `id`, `None` when the client gave no such secret
    /// (or its environment variable is unset).
    pub fn value(&self, id: &str) -> Result<Option<Vec<u8>>, SecretError> {
        match self.secrets.get(id) {
            None => Ok(None),
            Some(SecretSource::Value(v)) => Ok(Some(v.clone())),
            Some(SecretSource::Env(var)) => {
                Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes()))
            }
            Some(SecretSource::File(p)) => match fs::read(p) {
                Ok(v) => Ok(Some(v)),
                Err(source) => Err(SecretError::Read {
                    id: id.to_string(),
                    path: p.clone(),
                    source,
                }),
            },
        }
    }

    /// The agent socket of ssh id `id`, checked to be a socket.
    pub fn ssh_socket(&self, id: &str) -> Result<Option<PathBuf>, SecretError> {
        let Some(p) = self.ssh.get(id) else {
            return Ok(None);
        };
        use std::os::unix::fs::FileTypeExt;
        let meta = fs::metadata(p).map_err(|source| SecretError::Socket {
            id: id.to_string(),
            path: p.clone(),
            source,
        })?;
        if !meta.file_type().is_socket() {
            return Err(SecretError::Socket {
                id: id.to_string(),
                path: p.clone(),
                source: io::Error::other("not a unix socket (only agent sockets are supported)"),
            });
        }
        Ok(Some(p.clone()))
    }
}

/// A folder (0700) holding one step's secret files; removed with the value,
/// so a secret's copy lives only as long as the step.
#[derive(Debug)]
pub struct SecretDir {
    path: PathBuf,
    next: usize,
    /// Whether a tmpfs is mounted at `path` (unmounted on drop).
    mounted: bool,
}

impl SecretDir {
    /// Makes `path` (an empty folder, created when missing) private; it
    /// is removed when the value is dropped.
    pub fn create(path: PathBuf) -> Result<SecretDir, SecretError> {
        let io = |what: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| SecretError::Io { what, path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &path))?;
        // In memory, where the kernel lets us: a secret never touches the
        // disk, and in a build's private mount namespace the tmpfs goes
        // with the process however it ends. Best effort: without it the
        // folder is still private and removed after the step.
        let mounted = crate::sys::mount(
            Some(std::ffi::OsStr::new("tmpfs")),
            &path,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("mode=0700"),
        )
        .is_ok();
        Ok(SecretDir {
            path,
            next: 0,
            mounted,
        })
    }

    /// Writes `value` to a new file with these owner and permission bits,
    /// for a read-only bind at the secret's target.
    pub fn write(
        &mut self,
        value: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, SecretError> {
        use std::io::Write;
        self.next += 1;
        let path = self.path.join(format!("s{}", self.next));
        let io = |what: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| SecretError::Io { what, path, source }
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create", &path))?;
        f.write_all(value).map_err(io("write", &path))?;
        drop(f);
        crate::userns::tolerate_unmapped(chown(&path, Some(uid), Some(gid)))
            .map_err(io("chown", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io("chmod", &path))?;
        Ok(path)
    }
}

impl SecretDir {
    /// A socket of this folder that forwards every connection to the agent
    /// at `agent`, with its own owner and permission bits (the mount's
    /// `uid`/`gid`/`mode`), so the agent's own socket is never changed nor
    /// shown to the step, as BuildKit's forwarding does.
    pub fn ssh_proxy(
        &mut self,
        agent: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<SshProxy, SecretError> {
        self.next += 1;
        let path = self.path.join(format!("ssh{}.sock", self.next));
        SshProxy::start(agent.to_path_buf(), path, mode, uid, gid)
    }
}

/// A listening socket forwarding to an SSH agent for one step; stops
/// accepting when dropped (connections in progress end with the step's
/// processes).
#[derive(Debug)]
pub struct SshProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SshProxy {
    fn start(
        agent: PathBuf,
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<SshProxy, SecretError> {
        let io = |what: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| SecretError::Io { what, path, source }
        };
        let listener = UnixListener::bind(&path).map_err(io("listen on", &path))?;
        crate::userns::tolerate_unmapped(chown(&path, Some(uid), Some(gid)))
            .map_err(io("chown", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io("chmod", &path))?;
        listener
            .set_nonblocking(true)
            .map_err(io("listen on", &path))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-ssh-proxy".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let agent = agent.clone();
                            let _ = std::thread::Builder::new()
                                .name("kiln-ssh-conn".into())
                                .spawn(move || forward(conn, &agent));
                        }
                        // Nothing to accept (or a failed accept): look
                        // again shortly, or stop.
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(io("start the forwarder of", &path))?;
        Ok(SshProxy {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket to bind at the mount's target.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Copies bytes both ways between a step's connection and the agent.
fn forward(conn: UnixStream, agent: &Path) {
    let _ = conn.set_nonblocking(false);
    let Ok(up) = UnixStream::connect(agent) else {
        return;
    };
    let (Ok(conn_r), Ok(up_w)) = (conn.try_clone(), up.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut &conn_r, &mut &up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut &up, &mut &conn);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = t.join();
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = crate::sys::umount(&self.path, libc::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_value() {
        let s = SecretSource::Value(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn secret_files_go_with_their_dir() {
        let t = tempfile::tempdir().unwrap();
        let dir_path = t.path().join("w/secrets-1");
        let mut d = SecretDir::create(dir_path.clone()).unwrap();
        let f = d.write(b"v", 0o440, 0, 0).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"v");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o440
        );
        assert_eq!(
            fs::metadata(&dir_path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(d);
        assert!(!dir_path.exists());
    }

    #[test]
    fn the_ssh_proxy_forwards_with_its_own_mode_and_owner() {
        use std::io::{Read, Write};
        let t = tempfile::tempdir().unwrap();
        let agent_path = t.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        // A one-connection echo "agent".
        let server = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let mut d = SecretDir::create(t.path().join("s")).unwrap();
        let proxy = d.ssh_proxy(&agent_path, 0o660, 1000, 1001).unwrap();
        let meta = fs::metadata(proxy.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o660, 1000, 1001)
        );
        let mut c = UnixStream::connect(proxy.path()).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        server.join().unwrap();
        let p = proxy.path().to_path_buf();
        drop(proxy);
        assert!(!p.exists());
    }

    #[test]
    fn env_and_missing_secrets() {
        let mut s = Secrets::default();
        s.secrets.insert(
            "a".into(),
            SecretSource::Env("KILN_TEST_UNSET_VAR_X".into()),
        );
        assert_eq!(s.value("a").unwrap(), None);
        assert_eq!(s.value("b").unwrap(), None);
    }
}
