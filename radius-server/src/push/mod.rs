//! Push approval in the daemon: the channels that deliver notifications (ntfy, webhook),
//! and the hub through which an answer from a phone wakes the request that waits for it.
//!
//! Waiting never holds a thread: a waiting RADIUS or PAM request is a future parked on a
//! [`tokio::sync::Notify`] of its transaction. The approval handler decides in the store
//! and then wakes that future, so the decision reaches the waiting request at once. On a
//! store that announces decisions (PostgreSQL: LISTEN/NOTIFY), [`PushHub::follow`] wakes
//! the request held here when another node decides; a poll of the store every
//! `store.push_poll_interval` covers whatever was not announced (that connection down).

mod enrol;
mod sender;

pub use enrol::{enroll_and_send, PushEnrolError, PushEnrolment};
pub use sender::PushClient;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_core::engine::Engine;
use portcullis_core::model::PushStatus;
use portcullis_core::store::{PushEvent, PushEvents};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a waiting request looks at the store unless configured
/// (`store.push_poll_interval`).
const DEFAULT_STORE_POLL: Duration = Duration::from_millis(500);

/// Waiting requests by transaction id.
pub struct PushHub {
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// How often a waiting request reads the store anyway.
    poll: Duration,
}

impl Default for PushHub {
    fn default() -> Self {
        Self::new(DEFAULT_STORE_POLL)
    }
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
    /// A hub whose waiting requests read the store every `poll`.
    pub fn new(poll: Duration) -> Self {
        Self {
            waiters: Mutex::default(),
            poll,
        }
    }

    /// Wakes the waiting requests named by `events` (decisions of every node) until the
    /// feed ends.
    pub async fn follow(&self, mut events: PushEvents) {
        while let Some(event) = events.recv().await {
            match event {
                PushEvent::Decided(txn) => self.notify(&txn),
                PushEvent::Resync => self.notify_all(),
            }
        }
    }

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

    /// Decisions may have been missed: every waiting request reads the store again.
    pub fn notify_all(&self) {
        for (n, _) in self.lock().values() {
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
            let nap = (until - now).min(self.poll);
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

    #[tokio::test]
    async fn announced_decisions_wake_the_waiters_they_name() {
        let hub = Arc::new(PushHub::new(Duration::from_secs(60)));
        let (t1, t2) = (hub.register("t1"), hub.register("t2"));
        let (w1, w2) = (t1.notify.notified(), t2.notify.notified());
        tokio::pin!(w1, w2);
        w1.as_mut().enable();
        w2.as_mut().enable();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let follower = tokio::spawn({
            let hub = hub.clone();
            async move { hub.follow(rx).await }
        });
        tx.send(PushEvent::Decided("t1".into())).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut w1)
            .await
            .expect("t1 woken");
        tx.send(PushEvent::Resync).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut w2)
            .await
            .expect("t2 woken by a resync");
        drop(tx);
        follower.await.unwrap();
    }
}
