//! The helper's side of the attach stream of a container WITHOUT a
//! terminal (`kiln attach` to a `run -d` container, as `docker attach`):
//! the helper copies pid 1's stdout and stderr to the log (and to its own
//! stdio in the foreground) and, as frames, to every client of the attach
//! socket; with `-i` (docker's `OpenStdin`) pid 1's stdin is a pipe whose
//! write end the helper keeps, fed from the clients' STDIN frames.
//!
//! A client's stdin ending does not close the container's (docker's
//! `StdinOnce` is false for a detached container): another attach may
//! type more. The frames and the client are [`super::pty`]'s and
//! [`super::attach`]'s, the same as for a terminal, with STDOUT and
//! STDERR kept apart.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::logs::LineBuf;
use super::pty::{broadcast, kind, remove_gone, set_nonblocking, Client, Frame, ATTACH_SOCKET};
use super::Container;
use crate::sys;

/// Most bytes held for a stdin nobody reads (more from clients is dropped,
/// as a full pipe would block a docker client instead).
const MAX_PENDING_STDIN: usize = 1 << 20;

/// The attach side of one run of a container without a terminal.
#[derive(Debug, Default)]
pub struct PlainAttach {
    listener: Option<UnixListener>,
    /// The write end of pid 1's stdin (`-i`, detached).
    stdin: Option<File>,
}

impl PlainAttach {
    /// Before pid 1 starts (a container without `-t`): the attach socket
    /// in `dir` and, for a detached `-i` container, a pipe made this
    /// process's fd 0 so pid 1 inherits its read end. In the foreground
    /// the caller's stdin is pid 1's already (or /dev/null without `-i`).
    pub fn prepare(c: &Container, dir: &Path, detach: bool) -> Result<PlainAttach, String> {
        if c.tty.tty {
            return Ok(PlainAttach::default());
        }
        let listener = super::pty::listen(dir).map_err(|e| format!("attach socket: {e}"))?;
        let mut stdin = None;
        if detach && c.tty.open_stdin {
            let (r, w) = sys::pipe().map_err(|e| format!("stdin pipe: {e}"))?;
            sys::dup2(r.as_raw_fd(), 0).map_err(|e| format!("stdin pipe: {e}"))?;
            drop(r);
            set_nonblocking(&w).map_err(|e| format!("stdin pipe: {e}"))?;
            stdin = Some(File::from(w));
        }
        Ok(PlainAttach {
            listener: Some(listener),
            stdin,
        })
    }

    /// Copies pid 1's `out` and `err` to the log (and to our fd 1 and 2
    /// when `tee`) and to the attach clients, and the clients' input to
    /// its stdin, until both streams close (pid 1's pid namespace is
    /// gone). `tick` runs whenever poll wakes and says how long (ms, -1
    /// forever) the next poll may wait (the health check's schedule).
    /// Returns the clients still connected, to be told the exit code.
    pub fn pump(
        &mut self,
        out: OwnedFd,
        err: OwnedFd,
        mut log: Option<super::logs::LogFile>,
        tee: bool,
        tick: &mut dyn FnMut() -> i32,
    ) -> Vec<UnixStream> {
        let mut streams = vec![
            (File::from(out), 1, kind::STDOUT, line_buf("stdout")),
            (File::from(err), 2, kind::STDERR, line_buf("stderr")),
        ];
        let mut clients: Vec<Client> = Vec::new();
        let mut pending_in: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !streams.is_empty() {
            let mut pfds: Vec<libc::pollfd> = streams
                .iter()
                .map(|(fd, ..)| pollfd(fd.as_raw_fd(), libc::POLLIN))
                .collect();
            let at_listener = pfds.len();
            if let Some(l) = &self.listener {
                pfds.push(pollfd(l.as_raw_fd(), libc::POLLIN));
            }
            if let (Some(s), false) = (&self.stdin, pending_in.is_empty()) {
                pfds.push(pollfd(s.as_raw_fd(), libc::POLLOUT));
            }
            let at_clients = pfds.len();
            for c in &clients {
                pfds.push(pollfd(c.sock.as_raw_fd(), libc::POLLIN));
            }
            if let Err(e) = sys::poll(&mut pfds, tick()) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            // Output first: to the log, our stdio and every client.
            let mut done = Vec::new();
            let mut gone = Vec::new();
            for (i, p) in pfds[..at_listener].iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                let (fd, target, frame_kind, lines) = &mut streams[i];
                let k = match fd.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(0) | Err(_) => {
                        done.push(i);
                        continue;
                    }
                    Ok(k) => k,
                };
                let chunk = &buf[..k];
                if tee {
                    sys::write_all_fd(*target, chunk);
                }
                if let Some(l) = log.as_mut() {
                    lines.push(chunk, l);
                }
                if !clients.is_empty() {
                    let frame = Frame::encode(*frame_kind, chunk);
                    broadcast(&mut clients, &frame, &mut gone);
                }
            }
            for i in done.into_iter().rev() {
                let (_, _, _, mut lines) = streams.remove(i);
                if let Some(l) = log.as_mut() {
                    lines.flush(l);
                }
            }
            // A new client goes after those polled (polled from the next
            // round on).
            if let Some(l) = &self.listener {
                if pfds[at_listener].revents != 0 {
                    if let Ok((s, _)) = l.accept() {
                        clients.push(Client::new(s));
                    }
                }
            }
            // Clients' input.
            for (i, p) in pfds[at_clients..].iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                let Some(frames) = clients[i].read_frames(&mut buf) else {
                    gone.push(i);
                    continue;
                };
                for f in frames.into_iter().filter(|f| f.kind == kind::STDIN) {
                    if self.stdin.is_some()
                        && pending_in.len() + f.payload.len() <= MAX_PENDING_STDIN
                    {
                        pending_in.extend_from_slice(&f.payload);
                    }
                }
            }
            remove_gone(&mut clients, gone);
            self.feed_stdin(&mut pending_in);
        }
        if let Some(l) = log.as_mut() {
            for (_, _, _, mut lines) in streams {
                lines.flush(l);
            }
        }
        clients.into_iter().map(|c| c.sock).collect()
    }

    /// Writes what pid 1's stdin takes now; a closed one drops the rest.
    fn feed_stdin(&mut self, pending: &mut Vec<u8>) {
        let Some(s) = self.stdin.as_mut() else {
            pending.clear();
            return;
        };
        while !pending.is_empty() {
            match s.write(pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
    }

    /// The run ended: its attach socket goes.
    pub fn finish(&mut self, dir: &Path) {
        self.stdin = None;
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
        }
    }
}

fn line_buf(stream: &'static str) -> LineBuf {
    LineBuf {
        stream,
        pending: Vec::new(),
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output goes to the log and, as frames of its own stream, to an
    /// attached client; the client's input reaches the stdin pipe.
    #[test]
    fn pump_frames_output_and_feeds_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let listener = super::super::pty::listen(dir.path()).unwrap();
        let (in_r, in_w) = sys::pipe().unwrap();
        set_nonblocking(&in_w).unwrap();
        let mut pa = PlainAttach {
            listener: Some(listener),
            stdin: Some(File::from(in_w)),
        };
        let (out_r, out_w) = sys::pipe().unwrap();
        let (err_r, err_w) = sys::pipe().unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(dir.path().join(ATTACH_SOCKET))
            .expect("connect");
        client
            .write_all(&Frame::encode(kind::STDIN, b"typed\n"))
            .unwrap();
        let log_path = dir.path().join("log");
        let log = crate::container::logs::LogFile::open(&log_path, None).unwrap();
        let (mut out_w, mut err_w) = (File::from(out_w), File::from(err_w));
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            out_w.write_all(b"to out\n").unwrap();
            err_w.write_all(b"to err\n").unwrap();
        });
        let clients = pa.pump(out_r, err_r, Some(log), false, &mut || 100);
        t.join().unwrap();
        assert_eq!(clients.len(), 1);
        let mut got = Vec::new();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 4096];
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let n = client.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
            while let Some(f) = Frame::take(&mut got).unwrap() {
                frames.push(f);
            }
        }
        assert!(frames.contains(&Frame {
            kind: kind::STDOUT,
            payload: b"to out\n".to_vec()
        }));
        assert!(frames.contains(&Frame {
            kind: kind::STDERR,
            payload: b"to err\n".to_vec()
        }));
        let mut typed = vec![0u8; 6];
        File::from(in_r).read_exact(&mut typed).unwrap();
        assert_eq!(typed, b"typed\n");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(log.contains("\"stream\":\"stdout\"") && log.contains("to err"));
    }
}
