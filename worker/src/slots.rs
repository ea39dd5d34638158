//! CPU slots: how many steps may do kiln's own work (preparing snapshots,
//! copying, checksumming, diffing layers) at once.
//!
//! `--jobs` defaults to the machine's cores, and that is what these slots
//! count. A RUN step gives its slot back while its sandboxed process runs:
//! the kernel already spreads processes over the cores, and a process that
//! sleeps or waits on the network must not keep an independent stage from
//! starting (BuildKit puts no cap on them at all; four 2 s stages take 2 s,
//! not 4 s, on a 2-core machine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A counting semaphore for blocking threads (the worker's steps run on
/// tokio's blocking pool).
#[derive(Debug)]
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A poisoned count is still a count.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot; `None` once `cancel` is set (the build failed
    /// elsewhere or was interrupted).
    pub fn acquire(&self, cancel: &AtomicBool) -> Option<Slot<'_>> {
        let mut free = self.lock();
        loop {
            if cancel.load(Ordering::SeqCst) {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot(self));
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.lock() += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn never_more_than_n_at_once() {
        let slots = Arc::new(Slots::new(2));
        let (busy, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let cancel = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, busy, peak, cancel) =
                    (slots.clone(), busy.clone(), peak.clone(), cancel.clone());
                std::thread::spawn(move || {
                    let _s = slots.acquire(&cancel).expect("not cancelled");
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    busy.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cancel_ends_the_wait() {
        let slots = Slots::new(1);
        let cancel = AtomicBool::new(false);
        let _held = slots.acquire(&cancel).expect("free slot");
        cancel.store(true, Ordering::SeqCst);
        assert!(slots.acquire(&cancel).is_none());
    }
}
