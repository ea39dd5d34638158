//! `--ssh ID=KEYFILE[,KEYFILE…]`: buildx serves key files through an agent
//! of its own (an in-process keyring); kiln starts OpenSSH's `ssh-agent`
//! on a socket in a private folder and loads the keys with `ssh-add`, so
//! the rest of kiln (RUN `--mount=type=ssh`, git over SSH) only ever sees
//! agent sockets. The agent lives as long as the build's [`Secrets`]
//! (killed on drop) and only holds the keys given.
//!
//! [`Secrets`]: crate::secrets::Secrets

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why the keys of an `--ssh` id could not be served.
#[derive(Debug, thiserror::Error)]
pub enum KeyAgentError {
    /// `ssh-agent` or `ssh-add` could not be run (openssh-client missing?).
    #[error("failed to run {what} for --ssh key files: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The agent never made its socket.
    #[error("ssh-agent did not start: no socket {}", .0.display())]
    NoSocket(PathBuf),
    /// `ssh-add` refused a key (unreadable, not a private key, or
    /// protected by a passphrase: nothing is ever prompted).
    #[error("failed to load SSH key {}: {stderr}", path.display())]
    Key { path: PathBuf, stderr: String },
}

/// A running `ssh-agent` holding the keys of one `--ssh` id; killed (and
/// its folder removed) on drop.
#[derive(Debug)]
pub struct KeyAgent {
    child: Mutex<Child>,
    sock: PathBuf,
    dir: PathBuf,
}

impl KeyAgent {
    /// Starts an agent and loads `keys` into it.
    pub fn start(keys: &[PathBuf]) -> Result<KeyAgent, KeyAgentError> {
        let dir = private_dir().map_err(|source| KeyAgentError::Spawn {
            what: "a private folder",
            source,
        })?;
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(KeyAgentError::Spawn {
                    what: "ssh-agent",
                    source,
                });
            }
        };
        let agent = KeyAgent {
            child: Mutex::new(child),
            sock,
            dir,
        };
        let start = Instant::now();
        while !is_socket(&agent.sock) {
            if start.elapsed() > Duration::from_secs(10) || agent.exited() {
                return Err(KeyAgentError::NoSocket(agent.sock.clone()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for key in keys {
            let out = Command::new("ssh-add")
                .arg("-q")
                .arg("--")
                .arg(key)
                .env("SSH_AUTH_SOCK", &agent.sock)
                .env("SSH_ASKPASS_REQUIRE", "never")
                .env_remove("DISPLAY")
                .stdin(Stdio::null())
                .output()
                .map_err(|source| KeyAgentError::Spawn {
                    what: "ssh-add",
                    source,
                })?;
            if !out.status.success() {
                return Err(KeyAgentError::Key {
                    path: key.clone(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Ok(agent)
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    fn exited(&self) -> bool {
        match self.child.lock() {
            Ok(mut c) => !matches!(c.try_wait(), Ok(None)),
            Err(_) => true,
        }
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new 0700 folder in the temporary directory, for the agent's socket.
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(io::Error::other)?;
    let name = format!("kiln-ssh-keys-{}", hex::encode(b));
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}
