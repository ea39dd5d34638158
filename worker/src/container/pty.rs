//! The helper's side of a container's pseudo-terminal (`kiln run -t`,
//! `kiln exec -t`) and of the attach stream.
//!
//! The terminal is made inside the container ([`make_terminal`], a step of
//! the sandbox's plan), so the process sees `/dev/pts/0` of its own devpts;
//! its master comes back to the helper over a socket pair and the helper
//! holds it for the container's whole life: it copies the output to the
//! log (one "stdout" stream, `\r\n` as the line discipline made it, as
//! docker keeps a TTY container's log) and to every attached client, and
//! the clients' input and window sizes to the master.
//!
//! Clients reach the helper on a unix socket in the container's folder
//! ([`ATTACH_SOCKET`]; `kiln attach`, `kiln start -a`), or as the helper's
//! stdin (`kiln run -t` in the foreground, `kiln exec -t`: no race with
//! the first output). Both directions carry frames: one kind byte, a
//! big-endian u32 length, the payload ([`Frame`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::logs::LineBuf;
use crate::sandbox::Terminal;
use crate::sys;

/// The attach socket's name in the container's folder.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// The kinds of frame on an attach stream.
pub mod kind {
    /// Client to helper: bytes for the process's stdin.
    pub const STDIN: u8 = 0;
    /// Helper to client: the process's output (all of a terminal's).
    pub const STDOUT: u8 = 1;
    /// Helper to client: the process's stderr (non-terminal streams).
    pub const STDERR: u8 = 2;
    /// Helper to client: the process ended; payload its exit code (i32).
    pub const EXIT: u8 = 3;
    /// Client to helper: the window size, rows then columns (u16 each).
    pub const RESIZE: u8 = 4;
}

/// Most bytes one frame carries (a larger one is a broken peer).
const MAX_FRAME: usize = 1 << 20;

/// One frame of an attach stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame as bytes on the wire.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + payload.len());
        v.push(kind);
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A window-size frame.
    pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        Frame::encode(kind::RESIZE, &p)
    }

    /// Takes the first whole frame off `buf`; `Err` when its length is
    /// beyond any frame kiln sends.
    pub fn take(buf: &mut Vec<u8>) -> io::Result<Option<Frame>> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "attach stream: oversized frame",
            ));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = buf[0];
        let payload = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        Ok(Some(Frame { kind, payload }))
    }
}

/// The sandbox's [`crate::sandbox::Step::Terminal`]: a new pseudo-terminal
/// of the sandbox's devpts at the asked size; the slave becomes stdin,
/// stdout, stderr and the controlling terminal of a session of its own;
/// the master goes to the helper.
pub fn make_terminal(t: &Terminal) -> Result<(), String> {
    let (master, slave) = sys::open_pty().map_err(|e| format!("opening a terminal: {e}"))?;
    if t.rows > 0 && t.cols > 0 {
        sys::set_window_size(slave.as_raw_fd(), t.rows, t.cols)
            .map_err(|e| format!("terminal size: {e}"))?;
    }
    // pid 1 leads its session already (the plan's first step); an exec'd
    // process starts one here.
    let _ = sys::setsid();
    sys::set_controlling_tty(slave.as_raw_fd())
        .map_err(|e| format!("setting the controlling terminal: {e}"))?;
    for fd in 0..3 {
        sys::dup2(slave.as_raw_fd(), fd).map_err(|e| format!("terminal stdio: {e}"))?;
    }
    sys::send_fd(t.socket, master.as_raw_fd())
        .map_err(|e| format!("handing the terminal over: {e}"))?;
    Ok(())
}

/// The listening attach socket of the container folder `dir` (bound
/// through /proc/self/fd, so a long store path does not exceed a socket
/// path's 108 bytes); a stale one is replaced.
pub fn listen(dir: &Path) -> io::Result<UnixListener> {
    let d = File::open(dir)?;
    let path = format!("/proc/self/fd/{}/{ATTACH_SOCKET}", d.as_raw_fd());
    let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
    UnixListener::bind(path)
}

/// An attach client: its socket and the start of a frame not whole yet.
pub(super) struct Client {
    pub(super) sock: UnixStream,
    inbuf: Vec<u8>,
}

impl Client {
    pub(super) fn new(sock: UnixStream) -> Client {
        Client {
            sock,
            inbuf: Vec::new(),
        }
    }

    /// Reads what the client sent (its socket is ready; `buf` is scratch
    /// space): the frames now whole, `None` once it is gone (closed, or a
    /// frame no kiln sends).
    pub(super) fn read_frames(&mut self, buf: &mut [u8]) -> Option<Vec<Frame>> {
        let n = match self.sock.read(buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        self.inbuf.extend_from_slice(&buf[..n]);
        let mut frames = Vec::new();
        loop {
            match Frame::take(&mut self.inbuf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return Some(frames),
                Err(_) => return None,
            }
        }
    }
}

/// Sends `frame` to every client; those it cannot reach are added to
/// `gone` (removed after the round, so indexes stay those polled).
pub(super) fn broadcast(clients: &mut [Client], frame: &[u8], gone: &mut Vec<usize>) {
    for (i, c) in clients.iter_mut().enumerate() {
        if c.sock.write_all(frame).is_err() {
            gone.push(i);
        }
    }
}

/// Removes the clients at `gone` (in any order, repeats allowed).
pub(super) fn remove_gone(clients: &mut Vec<Client>, mut gone: Vec<usize>) {
    gone.sort_unstable();
    gone.dedup();
    for i in gone.into_iter().rev() {
        clients.remove(i);
    }
}

/// Serves the terminal's master until the process side is gone (every
/// slave closed): output to `log` and to the clients, clients' input and
/// window sizes to the master. Returns the clients still connected, to be
/// told the exit code ([`tell_exit`]).
pub fn serve(
    master: OwnedFd,
    listener: Option<&UnixListener>,
    first: Option<UnixStream>,
    mut log: Option<super::logs::LogFile>,
) -> Vec<UnixStream> {
    let _ = set_nonblocking(&master);
    let mut master = File::from(master);
    let mut clients: Vec<Client> = first.into_iter().map(Client::new).collect();
    let mut lines = LineBuf {
        stream: "stdout",
        pending: Vec::new(),
    };
    // Input the master could not take yet (the process is not reading).
    let mut pending_in: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pfds = vec![libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN
                | if pending_in.is_empty() {
                    0
                } else {
                    libc::POLLOUT
                },
            revents: 0,
        }];
        if let Some(l) = listener {
            pfds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let first_client = pfds.len();
        for c in &clients {
            pfds.push(libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Err(e) = sys::poll(&mut pfds, -1) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        // Clients to drop after this round (indexes as polled).
        let mut gone = Vec::new();
        let m = pfds[0].revents;
        if m & libc::POLLOUT != 0 && !pending_in.is_empty() {
            match master.write(&pending_in) {
                Ok(n) => {
                    pending_in.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => pending_in.clear(),
            }
        }
        if m & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    if let Some(l) = log.as_mut() {
                        lines.push(chunk, l);
                    }
                    let frame = Frame::encode(kind::STDOUT, chunk);
                    broadcast(&mut clients, &frame, &mut gone);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                // EIO: no slave is open any more, the process side ended.
                Err(_) => break,
            }
        }
        if let Some(l) = listener {
            if pfds[1].revents & libc::POLLIN != 0 {
                if let Ok((s, _)) = l.accept() {
                    clients.push(Client::new(s));
                }
            }
        }
        for (i, p) in pfds[first_client..].iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let Some(frames) = clients[i].read_frames(&mut buf) else {
                gone.push(i);
                continue;
            };
            for f in frames {
                if f.kind == kind::STDIN {
                    pending_in.extend_from_slice(&f.payload);
                } else if f.kind == kind::RESIZE && f.payload.len() == 4 {
                    let rows = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let cols = u16::from_be_bytes([f.payload[2], f.payload[3]]);
                    let _ = sys::set_window_size(master.as_raw_fd(), rows, cols);
                }
            }
        }
        remove_gone(&mut clients, gone);
        if !pending_in.is_empty() {
            match master.write(&pending_in) {
                Ok(n) => {
                    pending_in.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => pending_in.clear(),
            }
        }
    }
    if let Some(l) = log.as_mut() {
        lines.flush(l);
    }
    clients.into_iter().map(|c| c.sock).collect()
}

/// Tells the clients the process's exit code and closes their streams.
pub fn tell_exit(clients: Vec<UnixStream>, code: i32) {
    let frame = Frame::encode(kind::EXIT, &code.to_be_bytes());
    for mut c in clients {
        let _ = c.write_all(&frame);
    }
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_in_pieces() {
        let mut wire = Frame::encode(kind::STDIN, b"hi");
        wire.extend(Frame::resize(24, 80));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = Frame::take(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].payload, b"hi");
        assert_eq!(got[1].kind, kind::RESIZE);
        assert_eq!(got[1].payload, [0, 24, 0, 80]);
        let mut huge = vec![kind::STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(Frame::take(&mut huge).is_err());
    }
}

/// The helper's terminal state for one container or exec: the console
/// socket pair the master comes back on, the attach listener, the master.
#[derive(Debug, Default)]
pub struct HelperTty {
    /// A terminal is wanted (`-t`).
    want: bool,
    size: (u16, u16),
    /// The helper's stdin is the first client (`run -t` in the
    /// foreground, `exec -t`).
    attach_stdin: bool,
    listener: Option<UnixListener>,
    ours: Option<UnixStream>,
    theirs: Option<UnixStream>,
    master: Option<OwnedFd>,
}

/// The run helper's flag: its stdin is the first attach client.
pub const ATTACH_STDIN_FLAG: &str = "--attach-stdin";
/// The run helper's flag: the terminal's size, `ROWSxCOLS`.
pub const SIZE_FLAG: &str = "--size";

fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (r, c) = s.split_once('x')?;
    Some((r.parse().ok()?, c.parse().ok()?))
}

impl HelperTty {
    /// From the run helper's arguments after the folder (whether a
    /// terminal is wanted comes from the record, in [`HelperTty::prepare`]).
    pub fn from_args(rest: &[String]) -> HelperTty {
        let size = rest
            .iter()
            .position(|a| a == SIZE_FLAG)
            .and_then(|i| rest.get(i + 1))
            .and_then(|s| parse_size(s))
            .unwrap_or((0, 0));
        HelperTty {
            size,
            attach_stdin: rest.iter().any(|a| a == ATTACH_STDIN_FLAG),
            ..HelperTty::default()
        }
    }

    /// For an exec: with `tty` (its size) the helper's stdin is the stream.
    pub fn for_exec(tty: Option<(u16, u16)>) -> HelperTty {
        HelperTty {
            want: tty.is_some(),
            size: tty.unwrap_or((0, 0)),
            attach_stdin: tty.is_some(),
            ..HelperTty::default()
        }
    }

    /// Before the container starts: with `-t`, the attach socket and the
    /// console socket pair.
    pub fn prepare(&mut self, c: &super::Container, dir: &Path) -> Result<(), String> {
        if !c.tty.tty {
            return Ok(());
        }
        self.want = true;
        self.listener = Some(listen(dir).map_err(|e| format!("attach socket: {e}"))?);
        self.prepare_exec()
    }

    /// Before an exec starts: the console socket pair when wanted.
    pub fn prepare_exec(&mut self) -> Result<(), String> {
        if self.want {
            let (a, b) = UnixStream::pair().map_err(|e| format!("console socket: {e}"))?;
            self.ours = Some(a);
            self.theirs = Some(b);
        }
        Ok(())
    }

    /// The sandbox's terminal request, for the forked child.
    pub fn terminal(&self) -> Option<Terminal> {
        self.theirs.as_ref().map(|t| Terminal {
            rows: self.size.0,
            cols: self.size.1,
            socket: t.as_raw_fd(),
        })
    }

    /// After the fork: the master from the child (none if it failed
    /// first).
    pub fn receive_master(&mut self) {
        self.theirs = None;
        if let Some(o) = self.ours.take() {
            self.master = sys::recv_fd(o.as_raw_fd()).ok().flatten();
        }
    }

    /// A master is held: [`HelperTty::serve`] runs the streams.
    pub fn active(&self) -> bool {
        self.master.is_some()
    }

    /// Serves the terminal until the process side ends ([`serve`]).
    pub fn serve(&mut self, log: Option<super::logs::LogFile>) -> Vec<UnixStream> {
        let Some(master) = self.master.take() else {
            return Vec::new();
        };
        let first = self
            .attach_stdin
            .then(|| UnixStream::from(sys::take_stdin()));
        serve(master, self.listener.as_ref(), first, log)
    }

    /// The container ended: its attach socket goes.
    pub fn finish(&mut self, dir: &Path) {
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
        }
    }
}

/// Asks `spec` for `terminal`, with TERM=xterm unless set (as docker).
pub fn with_terminal(spec: &mut crate::sandbox::SandboxSpec, terminal: Option<Terminal>) {
    if terminal.is_some() && !spec.env.iter().any(|e| e.starts_with("TERM=")) {
        spec.env.push("TERM=xterm".into());
    }
    spec.terminal = terminal;
}
