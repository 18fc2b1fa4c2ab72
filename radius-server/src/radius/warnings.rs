//! Warnings about dropped requests that an operator has to see at the default log level (a
//! NAS with the wrong shared secret, a NAS that is no configured client), logged at most
//! once a minute each, with how many such requests were dropped since the last warning.
//!
//! One limiter per configured client (for its wrong secret) and one for every unknown
//! address together: the memory is bounded by the config, not by who sends datagrams.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one subject is warned about, at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Drops of one kind since its last warning.
#[derive(Debug, Default)]
pub struct DropWarning {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_warned: Option<Instant>,
    /// Dropped since `last_warned` (not yet told).
    dropped: u64,
}

/// A warning that is due: how many were dropped (this one included) since the last
/// warning, and how long ago that was (`None`: the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub dropped: u64,
    pub since: Option<Duration>,
}

impl Due {
    /// `(1 such request dropped; ...)`, `(7 such requests dropped since the last such
    /// warning 2m 5s ago)`; `what` follows the noun (`" dropped"`, or nothing where the
    /// message says so already).
    pub fn count_text(&self, what: &str) -> String {
        let requests = if self.dropped == 1 {
            "request"
        } else {
            "requests"
        };
        match self.since {
            None => format!(
                "({} such {requests}{what}; repeats are logged at most once a minute)",
                self.dropped
            ),
            Some(since) => format!(
                "({} such {requests}{what} since the last such warning {} ago)",
                self.dropped,
                humantime::format_duration(Duration::from_secs(since.as_secs()))
            ),
        }
    }
}

impl DropWarning {
    /// Count one dropped request at `now`; `Some` when it is to be logged now.
    pub fn note(&self, now: Instant) -> Option<Due> {
        self.note_many(now, 1)
    }

    /// Count `n` dropped requests at `now`; `Some` when it is to be logged now.
    pub fn note_many(&self, now: Instant, n: u64) -> Option<Due> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.dropped = s.dropped.saturating_add(n);
        let since = s.last_warned.map(|t| now.saturating_duration_since(t));
        if since.is_some_and(|d| d < WARN_INTERVAL) {
            return None;
        }
        let due = Due {
            dropped: s.dropped,
            since,
        };
        s.dropped = 0;
        s.last_warned = Some(now);
        Some(due)
    }
}

/// The per-client limiters of one configured client.
#[derive(Debug, Default)]
pub struct ClientWarnings {
    /// Access-Requests and Status-Servers whose Message-Authenticator does not verify.
    pub access: DropWarning,
    /// Accounting-Requests whose Request Authenticator does not verify.
    pub accounting: DropWarning,
    /// Access-Requests without User-Password (CHAP, EAP): rejected, and from a client that
    /// needs no Message-Authenticator sendable by anyone who can use its address.
    pub no_user_password: DropWarning,
    /// Cached replies forgotten for the bound of answered requests per source address.
    pub cache_evictions: DropWarning,
    /// Push waits answered with a challenge because `max_held` requests were held.
    pub held_over_limit: DropWarning,
}

/// What a request failed to verify with the client's shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    MessageAuthenticator,
    RequestAuthenticator,
}

/// A request from a configured client that does not verify with its secret: a WARN at most
/// once a minute per client and kind.
pub fn wrong_secret(warnings: &ClientWarnings, client: &str, src: SocketAddr, what: Unverified) {
    let (limiter, attribute) = match what {
        Unverified::MessageAuthenticator => (&warnings.access, "Message-Authenticator"),
        Unverified::RequestAuthenticator => (
            &warnings.accounting,
            "Request Authenticator (Accounting-Request)",
        ),
    };
    if let Some(due) = limiter.note(Instant::now()) {
        tracing::warn!(
            "client '{client}' ({}): {attribute} does not verify: wrong shared secret? {}",
            src.ip().to_canonical(),
            due.count_text(" dropped")
        );
    }
}

/// A push wait of `client` not held because `max_held` of its requests are held already:
/// a WARN at most once a minute per client.
pub fn held_over_limit(warnings: &ClientWarnings, client: &str, max_held: usize) {
    if let Some(due) = warnings.held_over_limit.note(Instant::now()) {
        tracing::warn!(
            client,
            max_held,
            "{max_held} requests of client '{client}' are already held waiting for a push: \
             this one is answered with a challenge instead (raise the client's max_held if \
             that many logins wait at once) {}",
            due.count_text(" answered so")
        );
    }
}

/// An Access-Request without User-Password (and without State) from a configured client,
/// rejected: a WARN at most once a minute per client, naming the user of the one it reports.
pub fn no_user_password(warnings: &ClientWarnings, client: &str, src: SocketAddr, user: &str) {
    if let Some(due) = warnings.no_user_password.note(Instant::now()) {
        tracing::warn!(%src, client, user,
            "Access-Request without User-Password rejected (CHAP/EAP are not supported; configure the NAS for PAP) {}",
            due.count_text(" rejected")
        );
    }
}

/// `n` cached replies of the client's address `src` forgotten for the per-source bound of
/// the response cache (`limit`): a WARN at most once a minute per client.
pub fn cache_source_full(
    warnings: &ClientWarnings,
    client: &str,
    src: SocketAddr,
    n: usize,
    limit: usize,
) {
    if let Some(due) = warnings
        .cache_evictions
        .note_many(Instant::now(), u64::try_from(n).unwrap_or(u64::MAX))
    {
        tracing::warn!(
            "client '{client}' ({}): more than {limit} answered requests from this address within response_cache_ttl: \
             the oldest cached replies are forgotten (a retransmission of one is processed again) {}",
            src.ip().to_canonical(),
            due.count_text(" forgotten from the cache")
        );
    }
}

/// `n` cached replies forgotten for the total bound of the response cache (`limit`),
/// making room for a reply to `client`: a WARN at most once a minute for the whole cache.
pub fn cache_full(limiter: &DropWarning, client: &str, n: usize, limit: usize) {
    if let Some(due) = limiter.note_many(Instant::now(), u64::try_from(n).unwrap_or(u64::MAX)) {
        tracing::warn!(
            "the response cache holds {limit} answered requests, its bound: the oldest cached replies \
             are forgotten (a retransmission of one is processed again; latest for client '{client}') {}",
            due.count_text(" forgotten from the cache")
        );
    }
}

/// A request from an address that no client's `address` contains: a WARN at most once a
/// minute for all such addresses together (naming the latest).
pub fn unknown_client(limiter: &DropWarning, src: SocketAddr) {
    if let Some(due) = limiter.note(Instant::now()) {
        tracing::warn!(
            "request from {} which is no configured client: dropped {}",
            src.ip().to_canonical(),
            due.count_text("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_due_at_most_once_a_minute_with_the_count_since_the_last() {
        let w = DropWarning::default();
        let t0 = Instant::now();
        let first = w.note(t0).expect("the first drop is told at once");
        assert_eq!(
            first,
            Due {
                dropped: 1,
                since: None
            }
        );
        assert!(first
            .count_text(" dropped")
            .starts_with("(1 such request dropped;"));
        for s in 1..60 {
            assert_eq!(w.note(t0 + Duration::from_secs(s)), None, "{s} s");
        }
        let next = w
            .note(t0 + Duration::from_secs(75))
            .expect("a minute later");
        assert_eq!(
            next,
            Due {
                dropped: 60,
                since: Some(Duration::from_secs(75))
            }
        );
        assert_eq!(
            next.count_text(" dropped"),
            "(60 such requests dropped since the last such warning 1m 15s ago)"
        );
        assert_eq!(w.note(t0 + Duration::from_secs(76)), None);
    }

    #[test]
    fn many_at_once_count_as_many() {
        let w = DropWarning::default();
        let t0 = Instant::now();
        assert_eq!(w.note_many(t0, 3).map(|d| d.dropped), Some(3));
        assert_eq!(w.note_many(t0 + Duration::from_secs(1), 5), None);
        let due = w.note_many(t0 + WARN_INTERVAL, 2).expect("a minute later");
        assert_eq!(due.dropped, 7);
        assert!(due
            .count_text(" forgotten from the cache")
            .starts_with("(7 such requests forgotten from the cache since"));
    }
}
