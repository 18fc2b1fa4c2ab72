//! Counters of the RADIUS front end: exported on `/metrics` by the HTTP listener
//! (`crate::http::metrics`) and logged on shutdown.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::packet::DropReason;

/// Why a datagram got no answer, beyond [`DropReason`]'s packet classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    Packet(DropReason),
    UnknownClient,
    Duplicate,
    Shed,
    /// An answered entry of the response cache forgotten for its source address's bound
    /// (not a datagram: a retransmission of its request would be processed afresh).
    CacheSourceLimit,
    /// An answered entry of the response cache forgotten for the cache's total bound.
    CacheLimit,
}

impl DropCause {
    /// Every cause, each packet class included: the order of logs and /metrics.
    pub fn every() -> Vec<DropCause> {
        let mut all = vec![
            DropCause::UnknownClient,
            DropCause::Duplicate,
            DropCause::Shed,
            DropCause::CacheSourceLimit,
            DropCause::CacheLimit,
        ];
        all.extend(DropReason::ALL.iter().map(|r| DropCause::Packet(*r)));
        all
    }

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::Packet(r) => r.as_str(),
            DropCause::UnknownClient => "unknown_client",
            DropCause::Duplicate => "duplicate_in_progress",
            DropCause::Shed => "shed_overload",
            DropCause::CacheSourceLimit => "cache_evicted_source_limit",
            DropCause::CacheLimit => "cache_evicted_cache_limit",
        }
    }
}

/// Process-wide RADIUS counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub accepts: AtomicU64,
    pub rejects: AtomicU64,
    pub challenges: AtomicU64,
    pub cached_replies: AtomicU64,
    pub status_server: AtomicU64,
    /// Accounting-Requests acknowledged (the accounting listener).
    pub accounting_responses: AtomicU64,
    /// Config reloads (SIGHUP) that were applied / refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Receive-to-send time of processed requests.
    pub latency: LatencyHistogram,
    drops: [AtomicU64; 32],
}

impl Metrics {
    fn slot(d: DropCause) -> usize {
        match d {
            DropCause::UnknownClient => 0,
            DropCause::Duplicate => 1,
            DropCause::Shed => 2,
            DropCause::CacheSourceLimit => 3,
            DropCause::CacheLimit => 4,
            DropCause::Packet(r) => 5 + DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0),
        }
    }

    /// Count one dropped datagram.
    pub fn count_drop(&self, d: DropCause) {
        self.count_drops(d, 1);
    }

    /// Count `n` drops for `d`.
    pub fn count_drops(&self, d: DropCause, n: u64) {
        if let Some(c) = self.drops.get(Self::slot(d)) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// How many datagrams were dropped for `d`.
    pub fn dropped(&self, d: DropCause) -> u64 {
        self.drops
            .get(Self::slot(d))
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Every drop reason with its count, for logs and /metrics.
    pub fn drop_counts(&self) -> Vec<(&'static str, u64)> {
        DropCause::every()
            .into_iter()
            .map(|d| (d.as_str(), self.dropped(d)))
            .collect()
    }
}

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Time from receiving a request to sending its reply (answers from the cache excluded).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Record one request that took `d`.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(slot) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// (cumulative counts per bucket bound incl. +Inf, total count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// What a request was answered with, for the per-client counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Accept,
    Reject,
    Challenge,
}

impl Answered {
    pub const ALL: [Answered; 3] = [Answered::Accept, Answered::Reject, Answered::Challenge];

    pub fn as_str(self) -> &'static str {
        match self {
            Answered::Accept => "accept",
            Answered::Reject => "reject",
            Answered::Challenge => "challenge",
        }
    }
}

/// Per-client request counters (kept across config reloads for a client of the same name).
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Access-Requests by answer: accept, reject, challenge.
    access: [AtomicU64; 3],
    /// Status-Server requests answered.
    status_server: AtomicU64,
    /// Requests held now, waiting for a push decision (see [`ClientCounters::hold`]).
    held: AtomicUsize,
    /// Push waits not held because `max_held` were already held.
    held_over_limit: AtomicU64,
}

/// One request held for a push decision; the client's count drops when it goes.
#[derive(Debug)]
pub struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientCounters {
    /// A hold for one more request, unless `max_held` are held already (counted then).
    pub fn hold(&self, max_held: usize) -> Option<Held<'_>> {
        let taken = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_held).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.held_over_limit.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Held(&self.held))
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Push waits answered at once because `max_held` were held.
    pub fn held_over_limit(&self) -> u64 {
        self.held_over_limit.load(Ordering::Relaxed)
    }

    fn slot(a: Answered) -> usize {
        match a {
            Answered::Accept => 0,
            Answered::Reject => 1,
            Answered::Challenge => 2,
        }
    }

    /// Count an answered Access-Request.
    pub fn count_access(&self, a: Answered) {
        self.access[Self::slot(a)].fetch_add(1, Ordering::Relaxed);
    }

    /// Count an answered Status-Server.
    pub fn count_status_server(&self) {
        self.status_server.fetch_add(1, Ordering::Relaxed);
    }

    /// Access-Requests answered with `a`.
    pub fn access(&self, a: Answered) -> u64 {
        self.access[Self::slot(a)].load(Ordering::Relaxed)
    }

    /// Status-Server requests answered.
    pub fn status_server(&self) -> u64 {
        self.status_server.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_cause_has_its_own_counter() {
        let m = Metrics::default();
        let all = DropCause::every();
        for (n, d) in all.iter().enumerate() {
            m.count_drops(*d, n as u64 + 1);
        }
        let counts = m.drop_counts();
        assert_eq!(counts.len(), all.len());
        for (n, d) in all.iter().enumerate() {
            assert_eq!(m.dropped(*d), n as u64 + 1, "{}", d.as_str());
            assert_eq!(counts[n], (d.as_str(), n as u64 + 1));
        }
    }

    #[test]
    fn holds_stop_at_the_limit_and_come_back_when_released() {
        let c = ClientCounters::default();
        let a = c.hold(2).unwrap();
        let b = c.hold(2).unwrap();
        assert!(c.hold(2).is_none());
        assert_eq!((c.held(), c.held_over_limit()), (2, 1));
        drop(a);
        let _c = c.hold(2).unwrap();
        drop(b);
        assert_eq!(c.held(), 1);
        // A limit lowered by a reload applies to new holds only.
        assert!(c.hold(1).is_none());
    }
}
