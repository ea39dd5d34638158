//! kiln's side of an attach stream (`kiln run -t`, `kiln exec -t`,
//! `kiln attach`): the caller's terminal in raw mode while attached (put
//! back on every way out), its window size at the start and on SIGWINCH,
//! stdin through the detach-key filter, the output to stdout and stderr.
//! The helper's side and the frames are [`super::pty`].

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use std::process::{Child, Stdio};

use super::helper::{ExecSpec, EXEC_SPEC_ENV, HELPER_SUBCOMMAND};
use super::launch::{LaunchError, StartReport};
use super::pty::{kind, Frame, ATTACH_SOCKET, ATTACH_STDIN_FLAG, SIZE_FLAG};
use super::{Container, Store, EXIT_KILN};
use crate::reexec::{spawn_helper, HelperStdio};
use crate::sys;

/// The key sequence that detaches (docker's `--detach-keys`; default
/// ctrl-p,ctrl-q).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(pub Vec<u8>);

impl Default for DetachKeys {
    fn default() -> Self {
        DetachKeys(vec![0x10, 0x11])
    }
}

/// A `--detach-keys` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("Invalid detach keys ({keys}) provided: Unknown character: '{key}'")]
pub struct KeysError {
    keys: String,
    key: String,
}

impl DetachKeys {
    /// Docker's syntax: comma-separated keys, each one character or
    /// `ctrl-X` for X in `@`, `a`..`z`, `[`, `\`, `]`, `^`, `_`.
    pub fn parse(keys: &str) -> Result<DetachKeys, KeysError> {
        const CTRL: &str = "@abcdefghijklmnopqrstuvwxyz[\\]^_";
        let mut out = Vec::new();
        for key in keys.split(',') {
            if key.len() == 1 {
                out.push(key.as_bytes()[0]);
                continue;
            }
            let lower = key.to_ascii_lowercase();
            let code = lower
                .strip_prefix("ctrl-")
                .filter(|c| c.len() == 1)
                .and_then(|c| CTRL.find(c));
            match code {
                Some(i) => out.push(i as u8),
                None => {
                    return Err(KeysError {
                        keys: keys.to_string(),
                        key: key.to_string(),
                    })
                }
            }
        }
        Ok(DetachKeys(out))
    }
}

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The process ended with this code.
    Exited(i32),
    /// The user typed the detach keys: the container runs on.
    Detached,
    /// The stream closed without an exit code (the helper went away).
    Closed,
    /// kiln got this signal (SIGTERM, SIGHUP) with nowhere to pass it.
    Signalled(i32),
}

/// What to attach.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Send our stdin (`-i`; not `--no-stdin`).
    pub stdin: bool,
    /// The process has a terminal: ours goes raw (with `stdin`) and its
    /// size follows ours.
    pub tty: bool,
    pub detach_keys: DetachKeys,
    /// Pass SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to this
    /// pid (`--sig-proxy`); without it SIGTERM and SIGHUP end the session.
    pub proxy_to: Option<i32>,
}

/// True when our stdin is a terminal (docker refuses `-it` otherwise).
pub fn stdin_is_terminal() -> bool {
    sys::is_terminal(0)
}

/// Our terminal's window size (stdout's, else stdin's).
pub fn window_size() -> Option<(u16, u16)> {
    sys::window_size(1).or_else(|| sys::window_size(0))
}

/// Connects to the attach socket of the container folder `dir` (through
/// /proc/self/fd: a long store path would not fit a socket address).
pub fn connect(dir: &Path) -> io::Result<UnixStream> {
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{ATTACH_SOCKET}", d.as_raw_fd()))
}

/// An attached helper started by this kiln: the stream, and the helper
/// (our child) whose exit code is the process's.
#[derive(Debug)]
pub struct Session {
    pub sock: UnixStream,
    child: Child,
}

impl Session {
    /// The helper's pid: signals sent to it go on to its process.
    pub fn helper_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the helper: its exit code (the process's), 128 + a
    /// signal that killed it, else 125.
    pub fn wait(mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait() {
            Ok(s) => s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(EXIT_KILN),
            Err(_) => EXIT_KILN,
        }
    }
}

fn start_err(exe: &Path) -> impl FnOnce(io::Error) -> LaunchError + '_ {
    move |source| LaunchError::Start {
        exe: exe.to_path_buf(),
        source,
    }
}

/// Starts the `-t` container `c` attached (`kiln run -t` in the
/// foreground): its helper gets one end of a socket pair as its stdin
/// (the first client: no output is missed) and answers as a detached
/// helper does; `size` is the terminal's to start with.
pub fn start_attached(
    store: &Store,
    c: &Container,
    size: Option<(u16, u16)>,
) -> Result<(StartReport, Option<Session>), LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::WaitContainer)?;
    let dir = store.dir_of(&c.id);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let (ours, theirs) = UnixStream::pair().map_err(start_err(&exe))?;
    let (rows, cols) = size.unwrap_or((0, 0));
    let size = format!("{rows}x{cols}");
    let args = [
        HELPER_SUBCOMMAND.as_ref(),
        "run".as_ref(),
        dir.as_os_str(),
        "--detach".as_ref(),
        ATTACH_STDIN_FLAG.as_ref(),
        SIZE_FLAG.as_ref(),
        size.as_ref(),
    ];
    let stdio = HelperStdio {
        stdin: Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        stdout: Stdio::piped(),
        stderr: Stdio::null(),
    };
    let mut child = spawn_helper(&exe, &args, &[], stdio).map_err(start_err(&exe))?;
    let mut answer = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut answer);
    }
    let report = StartReport::parse(&answer);
    Ok(match report {
        StartReport::Started => (report, Some(Session { sock: ours, child })),
        StartReport::Failed { .. } => {
            let _ = child.wait();
            (report, None)
        }
    })
}

/// Starts `spec` (with `spec.tty` set) in its container attached (`kiln
/// exec -t`): the stream is the helper's stdin.
pub fn exec_attached(spec: &ExecSpec) -> Result<Session, LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::WaitExec)?;
    let json = serde_json::to_string(spec)?;
    let (ours, theirs) = UnixStream::pair().map_err(start_err(&exe))?;
    let stdio = HelperStdio {
        stdin: Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        stdout: Stdio::inherit(),
        stderr: Stdio::inherit(),
    };
    let child = spawn_helper(
        &exe,
        &[HELPER_SUBCOMMAND, "exec"],
        &[(EXEC_SPEC_ENV, &json)],
        stdio,
    )
    .map_err(start_err(&exe))?;
    Ok(Session { sock: ours, child })
}

/// Starts `spec` in its container in the background (`kiln exec -d`):
/// the helper runs on and is not waited for.
pub fn exec_detached(spec: &ExecSpec) -> Result<(), LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::WaitExec)?;
    let json = serde_json::to_string(spec)?;
    let stdio = HelperStdio {
        stdin: Stdio::null(),
        stdout: Stdio::null(),
        stderr: Stdio::null(),
    };
    spawn_helper(
        &exe,
        &[HELPER_SUBCOMMAND, "exec"],
        &[(EXEC_SPEC_ENV, &json)],
        stdio,
    )
    .map_err(start_err(&exe))?;
    Ok(())
}

/// Puts our terminal back when dropped.
struct RawGuard(Option<sys::TermMode>);

impl Drop for RawGuard {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            sys::restore_terminal(0, m);
        }
    }
}

/// Matches typed bytes against the detach keys: bytes that might start
/// the sequence are held until it is clear whether they do.
struct Escape<'a> {
    keys: &'a [u8],
    held: usize,
}

impl Escape<'_> {
    /// The bytes to send for `input`, and whether the sequence was typed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes through.
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

const PROXIED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs an attached session on `sock` until the process ends, the detach
/// keys are typed, or the stream closes.
pub fn run_client(mut sock: UnixStream, opts: &ClientOptions) -> io::Result<AttachEnd> {
    let mut signals = vec![libc::SIGWINCH, libc::SIGTERM, libc::SIGHUP];
    if opts.proxy_to.is_some() {
        signals.extend(PROXIED);
    }
    let sigs = std::fs::File::from(sys::signal_pipe(&signals)?);
    let raw = opts.tty && opts.stdin && sys::is_terminal(0);
    let _guard = RawGuard(if raw { sys::make_raw(0).ok() } else { None });
    if opts.tty {
        if let Some((rows, cols)) = window_size() {
            sock.write_all(&Frame::resize(rows, cols))?;
        }
    }
    let mut escape = Escape {
        keys: &opts.detach_keys.0,
        held: 0,
    };
    let mut stdin_open = opts.stdin;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin = io::stdin().lock();
    loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigs.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if stdin_open {
            pfds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        match sys::poll(&mut pfds, -1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        if pfds[1].revents != 0 {
            let mut got = [0u8; 16];
            let n = (&sigs).read(&mut got).unwrap_or(0);
            for &s in &got[..n] {
                let s = libc::c_int::from(s);
                if s == libc::SIGWINCH {
                    if let Some((rows, cols)) = window_size() {
                        sock.write_all(&Frame::resize(rows, cols))?;
                    }
                } else if let Some(pid) = opts.proxy_to {
                    let _ = sys::kill(pid, s);
                } else {
                    return Ok(AttachEnd::Signalled(s));
                }
            }
        }
        if pfds[0].revents != 0 {
            let n = match sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                return Ok(AttachEnd::Closed);
            }
            inbuf.extend_from_slice(&buf[..n]);
            while let Some(f) = Frame::take(&mut inbuf)? {
                match f.kind {
                    kind::STDOUT => sys::write_all_fd(1, &f.payload),
                    kind::STDERR => sys::write_all_fd(2, &f.payload),
                    kind::EXIT if f.payload.len() == 4 => {
                        let p = &f.payload;
                        return Ok(AttachEnd::Exited(i32::from_be_bytes([
                            p[0], p[1], p[2], p[3],
                        ])));
                    }
                    _ => {}
                }
            }
        }
        if stdin_open && pfds.get(2).is_some_and(|p| p.revents != 0) {
            let n = match stdin.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                // With a terminal, stdin's end means nothing to the
                // process (docker keeps the terminal open): stop reading.
                stdin_open = false;
                continue;
            }
            let (send, detach) = escape.feed(&buf[..n]);
            if !send.is_empty() {
                sock.write_all(&Frame::encode(kind::STDIN, &send))?;
            }
            if detach {
                return Ok(AttachEnd::Detached);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker() {
        assert_eq!(DetachKeys::default().0, vec![16, 17]);
        assert_eq!(
            DetachKeys::parse("ctrl-p,ctrl-q").unwrap(),
            DetachKeys::default()
        );
        assert_eq!(
            DetachKeys::parse("ctrl-@,a,ctrl-_").unwrap().0,
            vec![0, b'a', 31]
        );
        assert_eq!(DetachKeys::parse("CTRL-A").unwrap().0, vec![1]);
        let e = DetachKeys::parse("ctrl-1").unwrap_err().to_string();
        assert_eq!(
            e,
            "Invalid detach keys (ctrl-1) provided: Unknown character: 'ctrl-1'"
        );
        assert!(DetachKeys::parse("ab").is_err());
    }

    #[test]
    fn escape_holds_a_prefix_and_lets_it_go() {
        let keys = [16u8, 17];
        let mut e = Escape {
            keys: &keys,
            held: 0,
        };
        assert_eq!(e.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(e.feed(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(e.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(e.feed(b"\x11rest"), (Vec::new(), true));
    }
}
