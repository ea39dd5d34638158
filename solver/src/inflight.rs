//! Identical work once across solves: BuildKit's solver is one graph shared
//! by every job the daemon runs, so two builds that reach the same vertex
//! (the same digest) at the same time run it once and both get its result.
//! kiln has no daemon; a [`InFlight`] shared by the solves of one process
//! (one `Builder`, e.g. the services `kiln compose build` builds at once)
//! gives them the same guarantee: a cache key is worked on by one solve at a
//! time, and a solve that waited for it looks the result up afterwards
//! instead of running the step again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::Key;

/// The cache keys some solve is working on now.
#[derive(Debug, Default)]
pub struct InFlight {
    table: Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while a solve looks up, and perhaps runs, one key; others wait.
pub(crate) struct Flight {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl InFlight {
    /// A table shared by the solves that are given it.
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    /// Waits until no other holder works on `key`, then holds it until the
    /// returned [`Flight`] is dropped (the step's result recorded, or the
    /// solve cancelled).
    pub(crate) async fn enter(&self, key: Key) -> Flight {
        let lock = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            // Keys nobody holds or waits for any more.
            table.retain(|_, w| w.strong_count() > 0);
            match table.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    table.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        Flight {
            _guard: lock.lock_owned().await,
        }
    }
}
