//! The duplicate / response cache of RFC 5080 §2.2.2.
//!
//! Key: receiving socket, source address and port, identifier. The entry remembers the
//! Request Authenticator: a request with the same key and authenticator is a retransmission
//! (answered with the cached reply, byte for byte, or dropped while the original is still
//! being processed); a new authenticator replaces the entry.
//!
//! The answered entries are bounded per source address and in total (see
//! [`per_source_limit`] and [`MAX_ANSWERED`]); past a bound the oldest answers go first.
//! Entries in progress are not counted: each holds an in-flight slot, so `max_in_flight`
//! bounds them already, and forgetting one would let a retransmission of a request still
//! running (a held push) run the login a second time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The bounds. A reply is needed only while the NAS may retransmit its request: the NAS's
// timeout x retries, a few seconds to about 30 s (RFC 5080 suggests caching 5-30 s);
// `response_cache_ttl` (1 s to 5 min) keeps it at least that long. Without a bound, every
// request that reaches the Engine kept its entry for the whole TTL, whoever sent it: the
// entries of one address were bounded only by the Engine's speed x TTL, and anyone able to
// use the address of a client without `require_message_authenticator` (no secret needed)
// could grow the daemon by some 400-500 bytes a request for as long as they liked.
//
// Past a bound the OLDEST answered entries are forgotten, never the new one: the oldest is
// the reply least likely to be asked for again. A retransmission of a forgotten request is
// processed afresh like a new one; the Engine makes that safe: a TOTP/HOTP, recovery or
// bypass code is refused as a replay, a transaction step (State) is single-use, so a
// login is never decided twice. The NAS then gets a Reject where the cached reply would have
// been sent: the cost of an eviction falls on retransmissions only, and only past bounds
// that no real NAS meets.

/// Requests a second that one busy NAS is assumed to send at most: a VPN concentrator
/// does a few hundred logins a second at its peak, each of one to three requests (password,
/// the answer to a challenge, a menu choice): 2,000 leaves about twice that.
pub const NAS_REQUEST_RATE: usize = 2_000;

/// The fewest answered entries one source address may hold: 65,536 = 256 identifiers x
/// 256 source ports. At the default TTL (30 s) that is 2,184 answered requests a second,
/// sustained, from one address.
pub const MIN_PER_SOURCE: usize = 65_536;

/// Answered entries in total (all addresses): 1,000,000, about 450 MB with replies of 60
/// bytes (measured; each byte more of reply adds 1 MB). The total bounds what the
/// per-source bound cannot: a client whose `address` is a network lets a sender use many
/// source addresses. It is past what real traffic needs: at the default TTL it takes 33,000
/// answered requests a second, past what one node answers (FreeRADIUS does about 18,700 a
/// second on the 2-core reference machine), and at any TTL an entry forgotten for it has
/// 1,000,000 answers newer than itself: it is 50 s old at 20,000 answers a second, older
/// than any NAS retransmits. So when the total is reached, the entry forgotten is the oldest
/// of the whole cache, whoever's it is: forgetting the oldest of the address that adds one
/// instead would let a flood spread over many addresses make a quiet NAS forget its own
/// replies of a second ago.
pub const MAX_ANSWERED: usize = 1_000_000;

/// Answered entries one source address (IP: a NAS retransmits from the address, and
/// usually the port, of its request) may hold for `ttl`: enough for [`NAS_REQUEST_RATE`]
/// for the whole TTL, at least [`MIN_PER_SOURCE`] (65,536 up to a TTL of 32 s; 600,000 at
/// the longest, 5 min), at most [`MAX_ANSWERED`].
pub fn per_source_limit(ttl: Duration) -> usize {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    let secs = usize::try_from(secs).unwrap_or(usize::MAX);
    NAS_REQUEST_RATE
        .saturating_mul(secs)
        .clamp(MIN_PER_SOURCE, MAX_ANSWERED)
}

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

/// Answered entries forgotten to make room for one reply, by the bound that was reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The oldest of the same source address, for its bound.
    pub source_limit: usize,
    /// The oldest of the whole cache, for the total bound.
    pub cache_limit: usize,
}

#[derive(Debug)]
enum State {
    InProgress,
    /// The reply, and the sequence number of its answer (the age order of the bounds).
    Answered(Arc<Vec<u8>>, u64),
}

#[derive(Debug)]
struct Entry {
    authenticator: [u8; 16],
    state: State,
    expires: Instant,
}

impl Entry {
    fn is_answered(&self) -> bool {
        matches!(self.state, State::Answered(..))
    }
}

type Key = (usize, SocketAddr, u8);

/// The source address an entry counts against: an IPv4 NAS arriving on a dual-stack
/// listener as ::ffff:a.b.c.d is the same NAS as a.b.c.d.
fn source_of(key: &Key) -> IpAddr {
    key.1.ip().to_canonical()
}

/// What `entry` (the one under a request's key, if any) says about a request with `auth`.
fn seen(entry: Option<&Entry>, auth: [u8; 16], now: Instant) -> Lookup {
    match entry {
        Some(e) if e.authenticator == auth && e.expires > now => match &e.state {
            State::InProgress => Lookup::InProgress,
            State::Answered(bytes, _) => Lookup::Answered(bytes.clone()),
        },
        _ => Lookup::New,
    }
}

/// Answered entries in the order of their answers, oldest first: `live` of them, and the
/// queue of (answer sequence number, key). Entries that left otherwise (replaced, abandoned,
/// expired, evicted through the other order) stay in the queue until they reach its front or
/// the queue is compacted: no removal searches it.
#[derive(Debug, Default)]
struct Order {
    live: usize,
    queue: VecDeque<(u64, Key)>,
}

/// Whether a queued `(seq, key)` still stands for an answered entry.
fn is_live(entries: &HashMap<Key, Entry>, seq: u64, key: &Key) -> bool {
    matches!(entries.get(key), Some(Entry { state: State::Answered(_, s), .. }) if *s == seq)
}

/// Queue items beyond twice the live entries that a queue may hold before it is compacted.
const QUEUE_SLACK: usize = 64;

impl Order {
    /// Append an answer; compact when more than half of the queue is stale (each compaction
    /// removes at least as many items as were pushed since the last: amortised O(1)).
    fn push(&mut self, seq: u64, key: Key, entries: &HashMap<Key, Entry>) {
        self.queue.push_back((seq, key));
        if self.queue.len() > self.live.saturating_mul(2).saturating_add(QUEUE_SLACK) {
            self.compact(entries);
        }
    }

    fn compact(&mut self, entries: &HashMap<Key, Entry>) {
        self.queue.retain(|(seq, key)| is_live(entries, *seq, key));
    }

    /// The key of the oldest answered entry, taken off the queue.
    fn pop_oldest(&mut self, entries: &HashMap<Key, Entry>) -> Option<Key> {
        while let Some((seq, key)) = self.queue.pop_front() {
            if is_live(entries, seq, &key) {
                return Some(key);
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Every answered entry, oldest answer first.
    answered: Order,
    /// The answered entries of each source address; an address without any has no item.
    sources: HashMap<IpAddr, Order>,
    /// The sequence number of the latest answer.
    last_seq: u64,
}

/// Count out an answered entry (under `key`) that leaves the cache.
fn forget(answered: &mut Order, sources: &mut HashMap<IpAddr, Order>, key: &Key) {
    answered.live = answered.live.saturating_sub(1);
    let ip = source_of(key);
    if let Some(o) = sources.get_mut(&ip) {
        o.live = o.live.saturating_sub(1);
        if o.live == 0 {
            sources.remove(&ip);
        }
    }
}

impl Inner {
    /// Remove the entry under `key`, counting it out if it was answered.
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        if e.is_answered() {
            forget(&mut self.answered, &mut self.sources, key);
        }
        Some(e)
    }
}

/// Shared by the receive loop and the request tasks.
#[derive(Debug)]
pub struct ResponseCache {
    ttl: Duration,
    /// How long an in-progress entry may live before it is considered abandoned.
    in_progress_ttl: Duration,
    /// Answered entries one source address may hold.
    per_source: usize,
    /// Answered entries in all.
    total: usize,
    inner: Mutex<Inner>,
}

impl ResponseCache {
    /// A cache keeping replies for `ttl`, within [`per_source_limit`] and [`MAX_ANSWERED`].
    pub fn new(ttl: Duration) -> Self {
        Self::with_limits(ttl, per_source_limit(ttl), MAX_ANSWERED)
    }

    /// A cache keeping replies for `ttl`, at most `per_source` answered entries per source
    /// address and `total` in all (each at least 1).
    pub fn with_limits(ttl: Duration, per_source: usize, total: usize) -> Self {
        Self {
            ttl,
            // A request is in progress until answered; the longest is a held push
            // (`max_wait`, at most MAX_WAIT_LIMIT) and the Engine step after it. The bound
            // only frees entries of requests that never got an answer.
            in_progress_ttl: portcullis_core::config::MAX_WAIT_LIMIT + Duration::from_secs(60),
            per_source: per_source.max(1),
            total: total.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The bounds: answered entries per source address, and in all.
    pub fn limits(&self) -> (usize, usize) {
        (self.per_source, self.total)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Entries are plain data; a panic elsewhere cannot leave one half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        seen(self.lock().entries.get(&(listener, src, id)), auth, now)
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
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = (listener, src, id);
        let found = seen(inner.entries.get(&key), auth, now);
        if found != Lookup::New {
            return found;
        }
        let old = inner.entries.insert(
            key,
            Entry {
                authenticator: auth,
                state: State::InProgress,
                expires: now + self.in_progress_ttl,
            },
        );
        if old.is_some_and(|e| e.is_answered()) {
            forget(&mut inner.answered, &mut inner.sources, &key);
        }
        Lookup::New
    }

    /// Store the reply sent for a request, forgetting the oldest answered entries of its
    /// source address, or of the whole cache, past a bound (see [`Evicted`]).
    pub fn finish(
        &self,
        listener: usize,
        src: SocketAddr,
        id: u8,
        auth: [u8; 16],
        reply: Arc<Vec<u8>>,
        now: Instant,
    ) -> Evicted {
        let mut evicted = Evicted::default();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = (listener, src, id);
        let Some(e) = inner.entries.get_mut(&key) else {
            return evicted;
        };
        if e.authenticator != auth {
            return evicted;
        }
        let counted = e.is_answered();
        inner.last_seq += 1;
        let seq = inner.last_seq;
        e.state = State::Answered(reply, seq);
        e.expires = now + self.ttl;
        let ip = source_of(&key);
        let source = inner.sources.entry(ip).or_default();
        if !counted {
            source.live += 1;
            inner.answered.live += 1;
        }
        source.push(seq, key, &inner.entries);
        inner.answered.push(seq, key, &inner.entries);
        // The entry just answered is the newest of both orders: never the one to go.
        while inner
            .sources
            .get(&ip)
            .is_some_and(|o| o.live > self.per_source)
        {
            let oldest = inner
                .sources
                .get_mut(&ip)
                .and_then(|o| o.pop_oldest(&inner.entries));
            let Some(oldest) = oldest else { break };
            inner.remove(&oldest);
            evicted.source_limit += 1;
        }
        while inner.answered.live > self.total {
            let Some(oldest) = inner.answered.pop_oldest(&inner.entries) else {
                break;
            };
            inner.remove(&oldest);
            evicted.cache_limit += 1;
        }
        evicted
    }

    /// Forget a request that got no reply (dropped or shed), so a retransmission is processed.
    pub fn abandon(&self, listener: usize, src: SocketAddr, id: u8, auth: [u8; 16]) {
        let mut inner = self.lock();
        let key = (listener, src, id);
        if inner
            .entries
            .get(&key)
            .is_some_and(|e| e.authenticator == auth)
        {
            inner.remove(&key);
        }
    }

    /// Drop expired entries; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let Inner {
            entries,
            answered,
            sources,
            ..
        } = &mut *inner;
        entries.retain(|key, e| {
            let keep = e.expires > now;
            if !keep && e.is_answered() {
                forget(answered, sources, key);
            }
            keep
        });
        answered.compact(entries);
        for o in sources.values_mut() {
            o.compact(entries);
        }
        entries.len()
    }

    /// Answered entries: in all, and of source address `ip`.
    pub fn answered(&self, ip: IpAddr) -> (usize, usize) {
        let inner = self.lock();
        let of_ip = inner.sources.get(&ip.to_canonical()).map_or(0, |o| o.live);
        (inner.answered.live, of_ip)
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

    fn from(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    /// Begin and answer request `id` from `src` (authenticator [id; 16]).
    fn answer(c: &ResponseCache, src: SocketAddr, id: u8, t: Instant) -> Evicted {
        assert_eq!(c.begin(0, src, id, [id; 16], t), Lookup::New);
        c.finish(0, src, id, [id; 16], Arc::new(vec![id]), t)
    }

    fn cached(c: &ResponseCache, src: SocketAddr, id: u8, t: Instant) -> bool {
        c.lookup(0, src, id, [id; 16], t) == Lookup::Answered(Arc::new(vec![id]))
    }

    #[test]
    fn the_default_bounds_hold_a_busy_nas_for_the_whole_ttl() {
        assert_eq!(per_source_limit(Duration::from_secs(1)), 65_536);
        assert_eq!(per_source_limit(Duration::from_secs(30)), 65_536);
        assert_eq!(per_source_limit(Duration::from_millis(32_500)), 66_000);
        assert_eq!(per_source_limit(Duration::from_secs(300)), 600_000);
        for secs in 1..=300 {
            let ttl = Duration::from_secs(secs);
            assert!(per_source_limit(ttl) >= NAS_REQUEST_RATE * secs as usize);
            assert!(per_source_limit(ttl) <= MAX_ANSWERED);
        }
        assert_eq!(
            ResponseCache::new(Duration::from_secs(30)).limits(),
            (65_536, 1_000_000)
        );
    }

    #[test]
    fn past_the_per_source_bound_the_oldest_answers_of_that_source_go() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 3, 100);
        let t = Instant::now();
        let nas = from("192.0.2.1", 4000);
        let other = from("192.0.2.2", 4000);
        assert_eq!(answer(&c, other, 0, t), Evicted::default());
        for id in 0..3 {
            assert_eq!(answer(&c, nas, id, t), Evicted::default(), "{id}");
        }
        // The same address from another port counts too.
        let e = answer(&c, from("192.0.2.1", 4001), 3, t);
        assert_eq!(
            e,
            Evicted {
                source_limit: 1,
                cache_limit: 0
            }
        );
        assert!(!cached(&c, nas, 0, t), "the oldest went");
        assert!(cached(&c, nas, 1, t) && cached(&c, nas, 2, t));
        assert!(cached(&c, from("192.0.2.1", 4001), 3, t));
        assert_eq!(answer(&c, nas, 4, t).source_limit, 1);
        assert!(!cached(&c, nas, 1, t));
        // Another address keeps its entry.
        assert!(cached(&c, other, 0, t));
        let ip = nas.ip();
        assert_eq!(c.answered(ip), (4, 3));
        // The evicted request is processed afresh.
        assert_eq!(c.begin(0, nas, 0, [0; 16], t), Lookup::New);
    }

    #[test]
    fn the_age_order_is_that_of_the_answers_and_requests_in_progress_are_never_evicted() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 2, 100);
        let t = Instant::now();
        let nas = from("192.0.2.1", 4000);
        // A held push: in progress all along.
        assert_eq!(c.begin(0, nas, 200, [200; 16], t), Lookup::New);
        for id in 0..3 {
            assert_eq!(c.begin(0, nas, id, [id; 16], t), Lookup::New);
        }
        // Answered in the order 2, 0, 1: 2 is the oldest answer.
        for id in [2, 0] {
            c.finish(0, nas, id, [id; 16], Arc::new(vec![id]), t);
        }
        assert_eq!(
            c.finish(0, nas, 1, [1; 16], Arc::new(vec![1]), t)
                .source_limit,
            1
        );
        assert!(!cached(&c, nas, 2, t));
        assert!(cached(&c, nas, 0, t) && cached(&c, nas, 1, t));
        for id in 3..20 {
            answer(&c, nas, id, t);
        }
        assert_eq!(c.lookup(0, nas, 200, [200; 16], t), Lookup::InProgress);
        assert_eq!(c.answered(nas.ip()), (2, 2));
    }

    #[test]
    fn past_the_total_bound_the_oldest_answer_of_the_whole_cache_goes() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 10, 4);
        let t = Instant::now();
        let a = from("192.0.2.1", 4000);
        let b = from("192.0.2.2", 4000);
        answer(&c, a, 0, t);
        answer(&c, b, 0, t);
        answer(&c, a, 1, t);
        answer(&c, b, 1, t);
        assert_eq!(c.answered(a.ip()), (4, 2));
        // A flood from many addresses: each new answer takes the place of the oldest one,
        // whoever's, never of a newer one.
        let e = answer(&c, from("198.51.100.1", 1), 0, t);
        assert_eq!(
            e,
            Evicted {
                source_limit: 0,
                cache_limit: 1
            }
        );
        assert!(!cached(&c, a, 0, t));
        assert!(cached(&c, b, 0, t) && cached(&c, a, 1, t) && cached(&c, b, 1, t));
        answer(&c, from("198.51.100.2", 1), 0, t);
        assert!(!cached(&c, b, 0, t));
        assert!(cached(&c, a, 1, t) && cached(&c, b, 1, t));
        assert_eq!(c.answered(a.ip()), (4, 1));
        assert_eq!(c.answered(b.ip()), (4, 1));
        // A source's fresh answer evicts the oldest of the cache (its own here too).
        answer(&c, a, 2, t);
        assert!(!cached(&c, a, 1, t) && cached(&c, b, 1, t) && cached(&c, a, 2, t));
        assert_eq!(c.answered(a.ip()), (4, 1));
    }

    #[test]
    fn replaced_abandoned_and_expired_entries_free_their_room() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 2, 3);
        let t = Instant::now();
        let nas = from("192.0.2.1", 4000);
        answer(&c, nas, 0, t);
        answer(&c, nas, 1, t);
        // A new request with identifier 0 replaces the answered entry: one answered left.
        assert_eq!(c.begin(0, nas, 0, [7; 16], t), Lookup::New);
        assert_eq!(c.answered(nas.ip()), (1, 1));
        c.abandon(0, nas, 0, [7; 16]);
        assert_eq!(answer(&c, nas, 2, t), Evicted::default());
        assert!(cached(&c, nas, 1, t) && cached(&c, nas, 2, t));
        // Expired: swept, and the bounds count them no more.
        assert_eq!(c.sweep(t + Duration::from_secs(31)), 0);
        assert_eq!(c.answered(nas.ip()), (0, 0));
        let later = t + Duration::from_secs(32);
        assert_eq!(answer(&c, nas, 3, later), Evicted::default());
        assert_eq!(answer(&c, nas, 4, later), Evicted::default());
        assert!(cached(&c, nas, 3, later) && cached(&c, nas, 4, later));
        assert!(c.lock().sources.len() == 1);
    }

    #[test]
    fn an_ipv4_nas_on_a_dual_stack_listener_is_one_source() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 1, 10);
        let t = Instant::now();
        answer(&c, from("192.0.2.1", 4000), 0, t);
        assert_eq!(
            answer(&c, from("::ffff:192.0.2.1", 4000), 1, t).source_limit,
            1
        );
        assert!(!cached(&c, from("192.0.2.1", 4000), 0, t));
    }

    #[test]
    fn the_age_queues_stay_within_twice_the_live_entries() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 1000, 1000);
        let t = Instant::now();
        let nas = from("192.0.2.1", 4000);
        // A NAS that cycles through its identifiers: every answer replaces an earlier one.
        for n in 0..100_000u32 {
            let id = (n % 256) as u8;
            let auth = n.to_be_bytes().repeat(4).try_into().unwrap();
            assert_eq!(c.begin(0, nas, id, auth, t), Lookup::New);
            c.finish(0, nas, id, auth, Arc::new(vec![id]), t);
        }
        let inner = c.lock();
        assert_eq!(inner.answered.live, 256);
        assert!(inner.answered.queue.len() <= 2 * 256 + QUEUE_SLACK + 1);
        let source = &inner.sources[&nas.ip()];
        assert!(source.queue.len() <= 2 * 256 + QUEUE_SLACK + 1);
    }

    #[test]
    fn many_sources_past_the_total_bound_keep_the_cache_at_it() {
        let c = ResponseCache::with_limits(Duration::from_secs(30), 65_536, 10_000);
        let t = Instant::now();
        let mut evicted = 0;
        for n in 0..50_000u32 {
            let [_, a, b, c4] = n.to_be_bytes();
            let src = SocketAddr::new(IpAddr::from([10, a, b, c4]), 1812);
            evicted += answer(&c, src, 0, t).cache_limit;
        }
        assert_eq!(evicted, 40_000);
        assert_eq!(c.sweep(t), 10_000);
        assert_eq!(c.lock().sources.len(), 10_000);
    }
}
