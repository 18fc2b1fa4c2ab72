//! The duplicate / response cache of RFC 5080 §2.2.2.
//!
//! Key: receiving socket, source address and port, identifier. The entry remembers the
//! Request Authenticator: a request with the same key and authenticator is a retransmission
//! (answered with the cached reply, byte for byte, or dropped while the original is still
//! being processed); a new authenticator replaces the entry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the cache says about an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen: process it (the cache now marks it in progress).
    New,
    /// Seen and still being processed: drop the duplicate.
    InProgress,
    /// Seen and answered: send this reply again.
    Answered(Arc<Vec<u8>>),
}

#[derive(Debug)]
enum State {
    InProgress,
    Answered(Arc<Vec<u8>>),
}

#[derive(Debug)]
struct Entry {
    authenticator: [u8; 16],
    state: State,
    expires: Instant,
}

type Key = (usize, SocketAddr, u8);

/// What `entry` (the one under a request's key, if any) says about a request with `auth`.
fn seen(entry: Option<&Entry>, auth: [u8; 16], now: Instant) -> Lookup {
    match entry {
        Some(e) if e.authenticator == auth && e.expires > now => match &e.state {
            State::InProgress => Lookup::InProgress,
            State::Answered(bytes) => Lookup::Answered(bytes.clone()),
        },
        _ => Lookup::New,
    }
}

/// Shared by the receive loop and the request tasks.
#[derive(Debug)]
pub struct ResponseCache {
    ttl: Duration,
    /// How long an in-progress entry may live before it is considered abandoned.
    in_progress_ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ResponseCache {
    /// A cache keeping replies for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            // A request is in progress until answered; the longest is a held push
            // (`max_wait`, at most MAX_WAIT_LIMIT) and the Engine step after it. The bound
            // only frees entries of requests that never got an answer.
            in_progress_ttl: portcullis_core::config::MAX_WAIT_LIMIT + Duration::from_secs(60),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Entries are plain data; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Look the request up without changing anything: [`Lookup::New`] when it is not a
    /// retransmission of a request seen (a request that has not verified yet must not
    /// take an entry's place).
    pub fn lookup(
        &self,
        listener: usize,
        src: SocketAddr,
        id: u8,
        auth: [u8; 16],
        now: Instant,
    ) -> Lookup {
        seen(self.lock().get(&(listener, src, id)), auth, now)
    }

    /// Look the request up, marking it in progress when it is new (replacing the entry of
    /// an earlier request with the same identifier). Only for a request that verified.
    pub fn begin(
        &self,
        listener: usize,
        src: SocketAddr,
        id: u8,
        auth: [u8; 16],
        now: Instant,
    ) -> Lookup {
        let mut map = self.lock();
        let key = (listener, src, id);
        let found = seen(map.get(&key), auth, now);
        if found != Lookup::New {
            return found;
        }
        map.insert(
            key,
            Entry {
                authenticator: auth,
                state: State::InProgress,
                expires: now + self.in_progress_ttl,
            },
        );
        Lookup::New
    }

    /// Store the reply sent for a request.
    pub fn finish(
        &self,
        listener: usize,
        src: SocketAddr,
        id: u8,
        auth: [u8; 16],
        reply: Arc<Vec<u8>>,
        now: Instant,
    ) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&(listener, src, id)) {
            if e.authenticator == auth {
                e.state = State::Answered(reply);
                e.expires = now + self.ttl;
            }
        }
    }

    /// Forget a request that got no reply (dropped or shed), so a retransmission is processed.
    pub fn abandon(&self, listener: usize, src: SocketAddr, id: u8, auth: [u8; 16]) {
        let mut map = self.lock();
        let key = (listener, src, id);
        if map.get(&key).is_some_and(|e| e.authenticator == auth) {
            map.remove(&key);
        }
    }

    /// Drop expired entries; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SocketAddr {
        "192.0.2.1:4000".parse().unwrap()
    }

    #[test]
    fn retransmission_gets_the_cached_reply_until_it_expires() {
        let c = ResponseCache::new(Duration::from_secs(30));
        let t = Instant::now();
        assert_eq!(c.begin(0, src(), 7, [1; 16], t), Lookup::New);
        assert_eq!(c.begin(0, src(), 7, [1; 16], t), Lookup::InProgress);
        c.finish(0, src(), 7, [1; 16], Arc::new(vec![9, 9]), t);
        assert_eq!(
            c.begin(0, src(), 7, [1; 16], t + Duration::from_secs(29)),
            Lookup::Answered(Arc::new(vec![9, 9]))
        );
        assert_eq!(
            c.begin(0, src(), 7, [1; 16], t + Duration::from_secs(31)),
            Lookup::New
        );
    }

    #[test]
    fn new_authenticator_replaces_the_entry() {
        let c = ResponseCache::new(Duration::from_secs(30));
        let t = Instant::now();
        c.begin(0, src(), 7, [1; 16], t);
        c.finish(0, src(), 7, [1; 16], Arc::new(vec![1]), t);
        assert_eq!(c.begin(0, src(), 7, [2; 16], t), Lookup::New);
        // A late reply for the old request does not overwrite the new one.
        c.finish(0, src(), 7, [1; 16], Arc::new(vec![1]), t);
        assert_eq!(c.begin(0, src(), 7, [2; 16], t), Lookup::InProgress);
    }

    #[test]
    fn lookup_answers_retransmissions_and_changes_nothing() {
        let c = ResponseCache::new(Duration::from_secs(30));
        let t = Instant::now();
        assert_eq!(c.lookup(0, src(), 7, [1; 16], t), Lookup::New);
        // Not marked in progress by the lookup.
        assert_eq!(c.lookup(0, src(), 7, [1; 16], t), Lookup::New);
        c.begin(0, src(), 7, [1; 16], t);
        assert_eq!(c.lookup(0, src(), 7, [1; 16], t), Lookup::InProgress);
        c.finish(0, src(), 7, [1; 16], Arc::new(vec![5]), t);
        // Another authenticator with that identifier (not verified yet) leaves the entry.
        assert_eq!(c.lookup(0, src(), 7, [2; 16], t), Lookup::New);
        assert_eq!(
            c.lookup(0, src(), 7, [1; 16], t),
            Lookup::Answered(Arc::new(vec![5]))
        );
    }

    #[test]
    fn other_port_identifier_or_listener_is_another_request() {
        let c = ResponseCache::new(Duration::from_secs(30));
        let t = Instant::now();
        c.begin(0, src(), 7, [1; 16], t);
        assert_eq!(c.begin(1, src(), 7, [1; 16], t), Lookup::New);
        assert_eq!(
            c.begin(0, "192.0.2.1:4001".parse().unwrap(), 7, [1; 16], t),
            Lookup::New
        );
        assert_eq!(c.begin(0, src(), 8, [1; 16], t), Lookup::New);
    }

    #[test]
    fn abandoned_request_is_processed_again_and_sweep_expires() {
        let c = ResponseCache::new(Duration::from_secs(30));
        let t = Instant::now();
        c.begin(0, src(), 7, [1; 16], t);
        c.abandon(0, src(), 7, [1; 16]);
        assert_eq!(c.begin(0, src(), 7, [1; 16], t), Lookup::New);
        assert_eq!(c.sweep(t + Duration::from_secs(181)), 0);
    }
}
