//! Push approval in the daemon: the channels that deliver notifications (ntfy, webhook),
//! and the hub through which an answer from a phone wakes the request that waits for it.
//!
//! Waiting never holds a thread: a waiting RADIUS or PAM request is a future parked on a
//! [`tokio::sync::Notify`] of its transaction. The approval handler decides in the store
//! and then wakes that future, so the decision reaches the waiting request at once. A
//! short poll of the store covers answers that land on another node.

mod sender;

pub use sender::PushClient;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_core::engine::Engine;
use portcullis_core::model::PushStatus;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a waiting request looks at the store (answers received by another node).
const STORE_POLL: Duration = Duration::from_millis(500);

/// Waiting requests by transaction id.
#[derive(Default)]
pub struct PushHub {
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// A registration in the hub; dropping it unregisters.
struct Registration<'a> {
    hub: &'a PushHub,
    txn: String,
    notify: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        if let Some((_, n)) = map.get_mut(&self.txn) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.txn);
            }
        }
    }
}

impl PushHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        // A panic while holding this lock cannot leave the map inconsistent (each update
        // is one insert/remove), so a poisoned lock is still usable.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, txn: &str) -> Registration<'_> {
        let mut map = self.lock();
        let entry = map
            .entry(txn.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            hub: self,
            txn: txn.to_string(),
            notify: entry.0.clone(),
        }
    }

    /// A push of transaction `txn` was decided: wake whoever waits for it.
    pub fn notify(&self, txn: &str) {
        if let Some((n, _)) = self.lock().get(txn) {
            n.notify_waiters();
        }
    }

    /// Requests waiting now (for /metrics and tests).
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|(_, n)| n).sum()
    }

    /// Wait until the push of transaction `txn` is decided or expired, or `until`.
    /// True when there is something to read (decided, expired, or no push), false when
    /// `until` came first.
    pub async fn wait(&self, engine: &Arc<Engine>, txn: &str, until: Instant) -> bool {
        let reg = self.register(txn);
        loop {
            let notified = reg.notify.notified();
            tokio::pin!(notified);
            // Enabled before the store is read: a decision landing in between still wakes us.
            notified.as_mut().enable();
            if settled(engine, txn).await {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            let nap = (until - now).min(STORE_POLL);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

/// Whether the newest push of `txn` no longer waits (or there is none to wait for).
async fn settled(engine: &Arc<Engine>, txn: &str) -> bool {
    let store = engine.store().clone();
    let id = txn.to_string();
    let now = engine.now();
    match tokio::task::spawn_blocking(move || store.push_of_transaction(&id)).await {
        Ok(Ok(Some(p))) => p.status != PushStatus::Pending || now >= p.expires_at,
        Ok(Ok(None)) => true,
        // Not readable now: keep waiting (and reading) until the deadline.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read a push decision; trying again");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_counted_and_removed() {
        let hub = PushHub::default();
        {
            let _a = hub.register("t1");
            let _b = hub.register("t1");
            assert_eq!(hub.waiting(), 2);
        }
        assert_eq!(hub.waiting(), 0);
        assert!(hub.lock().is_empty());
        hub.notify("t1");
    }
}
