//! `--restart`: the helper's supervision loop. Each run of the container
//! (an "attempt") is a forked child of the helper, because a pid namespace
//! whose init died takes no new process and a process can unshare a pid
//! namespace for its children only once: every attempt gets fresh
//! namespaces. After an attempt the helper asks the policy, with docker's
//! backoff (100 ms doubling to a minute, reset after 10 s of running).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::life::LifeState;
use super::{Store, EXIT_KILN};
use crate::sys::{self, SingleThreaded};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Docker's restart manager: whether to restart after an attempt that
/// ended with `code` after running `ran`, and after what delay; `delay` is
/// the backoff state between calls.
pub fn decide(
    life: &LifeState,
    code: i32,
    ran: Duration,
    delay: &mut Duration,
) -> Option<Duration> {
    if ran >= Duration::from_secs(10) {
        *delay = Duration::ZERO;
    }
    *delay = if delay.is_zero() {
        FIRST_DELAY
    } else {
        (*delay * 2).min(MAX_DELAY)
    };
    if life.manually_stopped {
        return None;
    }
    let p = &life.restart_policy;
    let restart = match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            (p.maximum_retry_count == 0 || life.restart_count < p.maximum_retry_count) && code != 0
        }
        _ => false,
    };
    restart.then_some(*delay)
}

/// Runs `attempt(first)` in a forked child until the policy says stop;
/// returns the last exit code. With `detach`, our stdout (kiln's pipe for
/// the start report) is handed to the first attempt alone.
pub(super) fn supervise(
    one_thread: &SingleThreaded,
    store: &Store,
    id: &str,
    detach: bool,
    mut attempt: impl FnMut(bool) -> i32,
) -> i32 {
    let mut first = true;
    let mut delay = Duration::ZERO;
    loop {
        let began = Instant::now();
        let pid = match sys::fork(one_thread) {
            Ok(None) => {
                let code = attempt(first);
                sys::exit_now(code)
            }
            Ok(Some(pid)) => pid,
            Err(e) => {
                let msg = format!("fork: {e}");
                if detach && first {
                    let r = super::StartReport::Failed {
                        code: EXIT_KILN,
                        message: msg,
                    };
                    sys::write_all_fd(1, r.to_line().as_bytes());
                }
                return EXIT_KILN;
            }
        };
        if detach && first {
            if let Ok(null) = File::options().write(true).open("/dev/null") {
                let _ = sys::dup2(null.as_raw_fd(), 1);
            }
        }
        first = false;
        sys::set_forward_target(pid);
        let code = super::helper::wait_child(pid).unwrap_or(EXIT_KILN);
        sys::set_forward_target(0);
        let Some(c) = load_settled(store, id) else {
            return code;
        };
        // A process that could not start is not restarted (docker
        // reports the error instead).
        if c.error.is_some() {
            return code;
        }
        let Some(wait) = decide(&c.life, code, began.elapsed(), &mut delay) else {
            return code;
        };
        if store.update(id, |c| c.life.restarting = true).is_err() {
            return code;
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
            match load_settled(store, id) {
                Some(c) if !c.life.manually_stopped => {}
                _ => return code,
            }
        }
        let mut go = false;
        let updated = store.update(id, |c| {
            c.life.restarting = false;
            if !c.life.manually_stopped {
                c.life.restart_count += 1;
                go = true;
            }
        });
        if updated.is_err() || !go {
            return code;
        }
    }
}

/// The container's record; a read that fails while the container's folder
/// is still there (a record being replaced, a busy lock) is tried again
/// for a while rather than taken as the container's removal, which would
/// end the supervision for good.
fn load_settled(store: &Store, id: &str) -> Option<super::Container> {
    for _ in 0..40 {
        match store.load(id) {
            Ok(c) => return Some(c),
            Err(_) if !store.dir_of(id).exists() => return None,
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::life::RestartPolicy;

    #[test]
    fn on_failure_counts_and_backs_off() {
        let mut life = LifeState {
            restart_policy: RestartPolicy::parse("on-failure:2").unwrap(),
            ..LifeState::default()
        };
        let mut d = Duration::ZERO;
        let short = Duration::from_secs(1);
        assert_eq!(decide(&life, 1, short, &mut d), Some(FIRST_DELAY));
        life.restart_count = 1;
        assert_eq!(decide(&life, 1, short, &mut d), Some(FIRST_DELAY * 2));
        life.restart_count = 2;
        assert_eq!(decide(&life, 1, short, &mut d), None);
        life.restart_count = 0;
        assert_eq!(decide(&life, 0, short, &mut d), None, "success: no restart");
        life.restart_policy = RestartPolicy::parse("always").unwrap();
        assert_eq!(
            decide(&life, 0, Duration::from_secs(11), &mut d),
            Some(FIRST_DELAY),
            "backoff resets after 10s of running"
        );
        life.manually_stopped = true;
        assert_eq!(decide(&life, 0, short, &mut d), None);
    }
}
