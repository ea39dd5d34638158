//! `--init`: a minimal init as the container's pid 1 (what docker-init,
//! tini, does): it runs the command as its child, passes signals on to it,
//! reaps every orphan, and exits with the command's status.
//!
//! kiln needs no second binary: pid 1 (the forked helper, set up up to the
//! sandbox's plan) forks once more right before the plan is carried out;
//! the child carries it out and execs the command, the parent stays as
//! the init. The init holds no fd of the container's root: pivot_root moves
//! it into the new root with the child.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use crate::sandbox::StartError;
use crate::sys::{self, SingleThreaded};

/// Signals the init passes on (all but those it cannot catch and SIGCHLD).
const FORWARDED: [libc::c_int; 14] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGPWR,
    libc::SIGURG,
];

/// Forks: returns `Ok(())` in the child (which goes on to carry out the
/// plan and exec); the parent never returns, it is the init. `errfd` is
/// the setup-error pipe, which the init closes so that the helper sees its
/// end when the command's exec closes the child's copy.
pub(super) fn fork_init(one_thread: &SingleThreaded, errfd: RawFd) -> Result<(), StartError> {
    let child = match sys::fork(one_thread) {
        Ok(None) => return Ok(()),
        Ok(Some(pid)) => pid,
        Err(e) => return Err(format!("fork for --init: {e}").into()),
    };
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = sys::dup2(null.as_raw_fd(), errfd);
    }
    sys::set_forward_target(child);
    sys::forward_signals(&FORWARDED);
    loop {
        match sys::wait_any() {
            Ok((pid, status)) if pid == child => sys::exit_now(exit_code(status)),
            Ok(_) => {}
            Err(_) => sys::exit_now(super::EXIT_KILN),
        }
    }
}

/// A wait status as a shell (and docker) shows it: the code, or 128 + the
/// signal that killed the process.
pub(super) fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        super::EXIT_KILN
    }
}
