//! Second-factor failures per user: growing delays, then a lock. Wrong passwords per
//! source address: a bucket that drains at the allowed rate, and a block when it is full.
//!
//! The record of failures is read before a code is checked and written after, so codes
//! checked at the same moment would all see the same record: with the password, one could
//! send many guesses at once and get them all checked before the first failure is counted.
//! So the checks in progress count too ([`Checking`]): a user never has more codes being
//! checked, plus failures on record, than `lock_after`.
//!
//! A node counts its own checks in memory, which is enough for one node (SQLite). Where
//! several nodes share the store ([`Store::shared`]: PostgreSQL) each one's memory sees
//! only its own checks, so there every check first reserves its failure in the store, in
//! one statement that refuses once the limit is reached ([`Store::reserve_failure`],
//! [`Store::reserve_draining_failures`]): count first, settle after. A wrong answer keeps
//! the failure; a right one clears the streak or gives the failure back; a check that ends
//! otherwise (an error, a push poll) gives it back when its guard is dropped. A reservation
//! that cannot be written refuses the check (fail closed), and a failure once reserved is
//! counted even if nothing after it can be written. The memory count stays in front, as a
//! cheap first filter.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use serde::Serialize;

use super::{Channel, Engine, EngineError, LoginRequest, Outcome};
use crate::clock::UnixTime;
use crate::config::LockoutConfig;
use crate::model::{Tenant, TenantId, Throttle, User, UserId};
use crate::store::{Reservation, Store};

/// Checks in progress on this node, per key: second-factor checks per user, password
/// checks per source. With a shared store, also the failures these checks reserved in it.
#[derive(Debug)]
pub(super) struct Checking<K> {
    counts: Mutex<HashMap<K, u32>>,
    reserved: Mutex<Reservations<K>>,
}

impl<K> Default for Checking<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
            reserved: Mutex::new(Reservations {
                next: 0,
                held: HashMap::new(),
            }),
        }
    }
}

/// The reservations of this node's checks, by the thread that runs the check (a check
/// runs on one thread from its gate to its end) and key, innermost last: what counts the
/// check's result finds its own reservation there.
#[derive(Debug)]
struct Reservations<K> {
    next: u64,
    held: HashMap<(ThreadId, K), Vec<(u64, Reserved)>>,
}

/// Failures a check reserved in a shared store before it ran.
struct Reserved {
    store: Arc<dyn Store>,
    tenant: TenantId,
    /// The throttle key in the store.
    key: String,
    /// Failures reserved and not settled yet: given back when the check ends.
    failures: u32,
    /// The row as the reservation left it.
    row: Throttle,
}

impl std::fmt::Debug for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reserved")
            .field("tenant", &self.tenant)
            .field("key", &self.key)
            .field("failures", &self.failures)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

/// Checks in progress, counted until dropped (after their results were counted); with
/// the failures they reserved in the store, given back then if they were not settled.
#[derive(Debug)]
pub(super) struct InProgress<'a, K: Hash + Eq + Clone> {
    checking: &'a Checking<K>,
    key: K,
    checks: u32,
    /// The reservation this guard holds (see [`InProgress::hold`]).
    held: Option<(ThreadId, u64)>,
}

impl<K: Hash + Eq + Clone> Checking<K> {
    /// Counts a check of `key`; says how many others are in progress.
    pub(super) fn enter(&self, key: K) -> (InProgress<'_, K>, u32) {
        self.enter_many(key, 1)
    }

    /// Counts `checks` checks of `key` (one login's); says how many others are in progress.
    pub(super) fn enter_many(&self, key: K, checks: u32) -> (InProgress<'_, K>, u32) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key.clone()).or_insert(0);
        let others = *n;
        *n = n.saturating_add(checks);
        (
            InProgress {
                checking: self,
                key,
                checks,
                held: None,
            },
            others,
        )
    }

    /// Settles the failures that this thread's innermost check of `key` reserved in the
    /// store and has not settled yet: they are the caller's now (kept, or given back), and
    /// are not given back when the check ends. How many, with the row the reservation
    /// left; None if there are none (a store of one node reserves nothing).
    fn take_reserved(&self, key: &K) -> Option<(u32, Throttle)> {
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        let held = reserved
            .held
            .get_mut(&(std::thread::current().id(), key.clone()))?;
        let (_, r) = held.iter_mut().rev().find(|(_, r)| r.failures > 0)?;
        Some((std::mem::take(&mut r.failures), r.row))
    }

    /// The row of `key` was cleared: what this thread's checks of it reserved went with it,
    /// and nothing is given back for them.
    fn cleared(&self, key: &K) {
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = reserved
            .held
            .get_mut(&(std::thread::current().id(), key.clone()))
        {
            for (_, r) in held.iter_mut() {
                r.failures = 0;
            }
        }
    }
}

impl<K: Hash + Eq + Clone> InProgress<'_, K> {
    /// Holds `failures` failures that this check reserved in `store` (row `row` after the
    /// reservation) until they are settled, or given back when this guard is dropped.
    fn hold(
        &mut self,
        store: &Arc<dyn Store>,
        tenant: TenantId,
        key: String,
        failures: u32,
        row: Throttle,
    ) {
        let thread = std::thread::current().id();
        let mut reserved = self
            .checking
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = reserved.next;
        reserved.next = id.wrapping_add(1);
        reserved
            .held
            .entry((thread, self.key.clone()))
            .or_default()
            .push((
                id,
                Reserved {
                    store: store.clone(),
                    tenant,
                    key,
                    failures,
                    row,
                },
            ));
        self.held = Some((thread, id));
    }
}

impl<K: Hash + Eq + Clone> Drop for InProgress<'_, K> {
    fn drop(&mut self) {
        {
            let mut map = self
                .checking
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&self.key) {
                *n = n.saturating_sub(self.checks);
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
        let Some((thread, id)) = self.held.take() else {
            return;
        };
        let unsettled = {
            let mut reserved = self
                .checking
                .reserved
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let slot = (thread, self.key.clone());
            let mut mine = None;
            if let Some(held) = reserved.held.get_mut(&slot) {
                if let Some(i) = held.iter().position(|(n, _)| *n == id) {
                    mine = Some(held.remove(i).1);
                }
                if held.is_empty() {
                    reserved.held.remove(&slot);
                }
            }
            mine
        };
        // Neither kept nor cleared: the check ended otherwise (the code was right with no
        // streak to clear, it was no code, or an error): its failures are given back.
        if let Some(r) = unsettled.filter(|r| r.failures > 0) {
            if let Err(e) = r.store.release_failures(r.tenant, &r.key, r.failures) {
                tracing::warn!(key = %r.key, failures = r.failures, error = %e,
                    "failures reserved for a check could not be given back: they stay counted");
            }
        }
    }
}

/// The throttle key of a user's second-factor attempts.
pub fn second_factor_key(user: &User) -> String {
    format!("user:{}:second_factor", user.id)
}

/// The throttle key of wrong passwords from the login's source, if the source is the
/// user's own address: not when it fell back to the NAS's address (one guesser would
/// block every user of that NAS), nor a PAM host's own terminal (the console stays open),
/// nor a web proxy's address.
pub fn source_key(req: &LoginRequest) -> Option<String> {
    let source = req.source.as_str();
    (req.source_limited && !shared_source(&req.channel, source))
        .then(|| source_throttle_key(req.channel.kind(), source))
}

/// Whether `source` stands for many users on `channel` rather than one user's address:
/// the NAS's own address (no Calling-Station-Id), a PAM host's console or terminal (every
/// host has a `tty:/dev/pts/0`), the web pages behind a proxy that named no client, or
/// nothing at all. Such a source is neither limited on its own nor ever remembered.
pub fn shared_source(channel: &Channel, source: &str) -> bool {
    source.trim().is_empty()
        || match channel {
            Channel::Radius { nas_address, .. } => source == nas_address,
            // The console, a terminal name, and a login from the host itself (`ssh
            // localhost`): the same text on every host of the fleet.
            Channel::Pam { .. } => {
                source == "local"
                    || source.starts_with("tty:")
                    || source.eq_ignore_ascii_case("localhost")
                    || source
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.to_canonical().is_loopback())
            }
            // Behind a trusted proxy that named no client (see the web pages).
            Channel::Web { .. } => source == "web" || source.starts_with("proxy:"),
        }
}

/// The throttle key of wrong passwords from `source` over one kind of channel (`radius`,
/// `pam`, `web`): each has its own bucket, so that guesses on one (say the web pages from
/// an office's NAT address) never block that address on another (its VPN logins).
pub fn source_throttle_key(channel: &str, source: &str) -> String {
    format!("source:{channel}:{}:first_factor", source_bucket(source))
}

/// What a source's bucket is kept for: an IPv6 address by its /64 (a host or network
/// is given a whole /64 and may take any address in it), IPv4 seen over IPv6 as IPv4,
/// anything else (a MAC address, a phone number) as written.
fn source_bucket(source: &str) -> String {
    match source.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Ok(ip) => ip.to_string(),
        Err(_) => source.trim().to_string(),
    }
}

/// `source X` for a reason text, with `(counted as BUCKET)` where the bucket is not the
/// source as written (an IPv6 address counted by its /64, IPv4 seen over IPv6).
fn source_named(source: &str) -> String {
    let bucket = source_bucket(source);
    if bucket == source {
        format!("source {source}")
    } else {
        format!("source {source} (counted as {bucket})")
    }
}

/// The channels that have a bucket per source.
pub const SOURCE_CHANNELS: [&str; 3] = ["radius", "pam", "web"];

/// The delay owed after `failures` failures, if any.
pub(crate) fn delay_after(failures: u32, throttle_after: u32, base: u64, cap: u64) -> u64 {
    if failures < throttle_after {
        return 0;
    }
    let doublings = (failures - throttle_after).min(30);
    base.saturating_mul(1u64 << doublings).min(cap)
}

/// What keeps a user's next code from being checked, after failed codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ThrottleInForce {
    /// Locked after `failures` failed codes, until `until` (or `portcullis user unlock`).
    Locked { failures: u32, until: UnixTime },
    /// `failures` failed codes: the next is checked from `next_try_at` on, not before.
    Delayed {
        failures: u32,
        next_try_at: UnixTime,
    },
}

/// The throttle in force at `now` on a user's second-factor row `th` under `lockout`, or
/// `None` if their next code would be checked. A lock that ran out is none: the streak
/// starts afresh (the next login clears the row). Logins decide with this, and `user
/// show` says with it what they would decide.
pub fn throttle_in_force(
    th: &Throttle,
    lockout: &LockoutConfig,
    now: UnixTime,
) -> Option<ThrottleInForce> {
    match th.locked_until {
        Some(until) if until > now => {
            return Some(ThrottleInForce::Locked {
                failures: th.failures,
                until,
            })
        }
        Some(_) => return None,
        None => {}
    }
    let delay = delay_after(
        th.failures,
        lockout.throttle_after,
        lockout.base_delay.as_secs(),
        lockout.duration.as_secs(),
    );
    let next_try_at = th
        .last_failure_at
        .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    (delay > 0 && now < next_try_at).then_some(ThrottleInForce::Delayed {
        failures: th.failures,
        next_try_at,
    })
}

/// The user's failure streak as the throttle check saw it; the check stays counted as in
/// progress until this is dropped.
#[derive(Debug)]
pub(super) struct Streak<'a> {
    /// Failures are on record: a good code must clear them.
    pub failures_on_record: bool,
    _checking: InProgress<'a, UserId>,
}

impl Engine {
    /// A Reject if the user is locked or must still wait; `None` if they may try.
    pub(super) fn throttle_blocks(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        // Nothing is checked here: nothing to reserve.
        Ok(self.user_gate(tenant, user, now, false)?.err())
    }

    /// `Err(reject)` if the user is locked or must still wait, or has too many codes
    /// being checked at once; else the streak on record. With a shared store the check's
    /// failure is reserved in it: the returned streak holds it until it is settled
    /// ([`Engine::count_failure`], [`Engine::clear_failures`]) or given back (dropped).
    pub(super) fn throttle_gate(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<Result<Streak<'_>, Outcome>, EngineError> {
        self.user_gate(tenant, user, now, true)
    }

    /// [`Engine::throttle_gate`]; a shared store's reservation only if `reserve`.
    fn user_gate(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
        reserve: bool,
    ) -> Result<Result<Streak<'_>, Outcome>, EngineError> {
        let failures = match self.throttle_state(tenant, user, now)? {
            Ok(failures) => failures,
            Err(blocked) => return Ok(Err(blocked)),
        };
        let (mut checking, others) = self.checking.enter(user.id);
        let limit = self.settings.lockout.lock_after.max(1);
        let shared = self.store.shared();
        // A shared store's failures on record hold the checks that this node (and every
        // other) has reserved there: only the larger of the two is sure to be in play.
        let in_play = if shared {
            failures.max(others)
        } else {
            failures.saturating_add(others)
        };
        if in_play >= limit {
            return Ok(Err(Outcome::reject_with(
                format!(
                    "{others} other codes of this user are being checked and {failures} failed on record: too many at once"
                ),
                "Too many failed attempts: wait a little, then try again",
            )));
        }
        if shared && reserve {
            let key = second_factor_key(user);
            match self.store.reserve_failure(tenant.id, &key, now, limit)? {
                Reservation::Reserved(row) => checking.hold(&self.store, tenant.id, key, 1, row),
                Reservation::Refused(row) => {
                    return Ok(Err(match throttle_in_force(&row, &self.settings.lockout, now) {
                        Some(blocked) => blocked_outcome(blocked, now),
                        None => Outcome::reject_with(
                            format!(
                                "{} codes of this user failed on record or are being checked on all nodes: too many at once",
                                row.failures
                            ),
                            "Too many failed attempts: wait a little, then try again",
                        ),
                    }))
                }
            }
        }
        Ok(Ok(Streak {
            failures_on_record: failures > 0,
            _checking: checking,
        }))
    }

    /// `Err(reject)` if the user is locked or must still wait after failed codes; else
    /// the failures on record.
    ///
    /// Logins check this before the password too: were it checked only after, a locked
    /// user's "locked" answer would come only with the right password, and tell a guesser
    /// when they had it.
    pub(super) fn throttle_state(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<Result<u32, Outcome>, EngineError> {
        let key = second_factor_key(user);
        let th = self.current_throttle(tenant, &key, now)?;
        Ok(match throttle_in_force(&th, &self.settings.lockout, now) {
            Some(blocked) => Err(blocked_outcome(blocked, now)),
            None => Ok(th.failures),
        })
    }

    /// `Err(reject)` if the login's source is blocked after too many wrong passwords, or
    /// has so many passwords being checked that their failures would overflow its bucket;
    /// else the login's `checks` password checks (an `append` login makes up to
    /// [`super::split::MAX_PASSWORD_CHECKS`]) stay counted as in progress until the guard
    /// is dropped (after their failures were counted). With a shared store they are
    /// reserved in its bucket as failures: [`Engine::count_source_failures`] keeps those
    /// that were wrong, and the rest are given back. `Ok(None)`: the source is not counted.
    pub(super) fn source_gate(
        &self,
        tenant: &Tenant,
        req: &LoginRequest,
        checks: u32,
        now: UnixTime,
    ) -> Result<Result<Option<InProgress<'_, String>>, Outcome>, EngineError> {
        let Some(key) = self.source_throttle_key(req) else {
            return Ok(Ok(None));
        };
        let blocked = |reason: String| {
            Outcome::reject_with(
                format!("{reason} (password not checked)"),
                "Too many failed logins from your address: try again later",
            )
        };
        let is_blocked = |until: UnixTime| {
            blocked(format!(
                "{} is blocked for {} s more after too many wrong passwords",
                source_named(&req.source),
                until - now
            ))
        };
        let th = self.current_throttle(tenant, &key, now)?;
        if let Some(until) = th.locked_until {
            return Ok(Err(is_blocked(until)));
        }
        let lock = &self.settings.lockout;
        let level = self.source_level(&th, now);
        // The bucket takes `source_failures` failures; the one after blocks the source.
        // Every check of this login may fail, and so may every one in progress: all of
        // them must fit (a login with more checks than the bucket holds fits an empty one).
        let checks = checks.clamp(1, lock.source_failures.saturating_add(1));
        // Only for a refusal's reason.
        let mine = || {
            if checks > 1 {
                format!("{checks} passwords of this login to check, ")
            } else {
                String::new()
            }
        };
        let (mut checking, others) = self.checking_sources.enter_many(key, checks);
        let shared = self.store.shared();
        // A shared store's level holds what every node reserved, this one's checks too.
        let in_play = if shared {
            level.max(others)
        } else {
            level.saturating_add(others)
        };
        if in_play.saturating_add(checks - 1) > lock.source_failures {
            return Ok(Err(blocked(format!(
                "{}: {}{others} other passwords being checked and {level} wrong on record: too many at once",
                source_named(&req.source),
                mine()
            ))));
        }
        if shared {
            let key = checking.key.clone();
            let window = lock.source_window.as_secs().max(1) as i64;
            match self.store.reserve_draining_failures(
                tenant.id,
                &key,
                checks,
                now,
                lock.source_failures,
                window,
                lock.source_failures.saturating_add(1),
            )? {
                Reservation::Reserved(row) => {
                    checking.hold(&self.store, tenant.id, key, checks, row)
                }
                Reservation::Refused(row) => {
                    return Ok(Err(match row.locked_until.filter(|&until| until > now) {
                        Some(until) => is_blocked(until),
                        None => blocked(format!(
                            "{}: {}{} wrong on record or being checked on all nodes: too many at once",
                            source_named(&req.source),
                            mine(),
                            self.source_level(&row, now)
                        )),
                    }))
                }
            }
        }
        Ok(Ok(Some(checking)))
    }

    /// The level of a source's bucket at `now`: its failures, less what has drained since.
    fn source_level(&self, th: &Throttle, now: UnixTime) -> u32 {
        let lock = &self.settings.lockout;
        let window = lock.source_window.as_secs().max(1) as i64;
        let drained = (now - th.last_failure_at).max(0) * i64::from(lock.source_failures) / window;
        (i64::from(th.failures) - drained).max(0) as u32
    }

    /// The throttle row of `key` as it stands at `now`: a lock or block in it is one that
    /// has not run out. One that ran out is cleared (the key starts afresh), but only as it
    /// was read: should another node have locked the key again (or counted a failure)
    /// since, that is kept, and the row is read again.
    fn current_throttle(
        &self,
        tenant: &Tenant,
        key: &str,
        now: UnixTime,
    ) -> Result<Throttle, EngineError> {
        for _ in 0..3 {
            let th = self.store.throttle(tenant.id, key)?;
            match th.locked_until {
                Some(until) if until <= now => {
                    if self.store.clear_expired_lock(tenant.id, key, &th, now)? {
                        return Ok(Throttle::default());
                    }
                }
                _ => return Ok(th),
            }
        }
        // Changed under this check every time it looked, and still a lock that ran out:
        // this check starts afresh; a later one clears the row.
        Ok(Throttle::default())
    }

    /// Count `wrong` wrong passwords from the login's source (one per password checked:
    /// an `append` login checks a few); block the source when its bucket overflows. With
    /// a shared store they were reserved at the gate: those are kept, and the login's
    /// other reserved checks (passwords it did not check, or that passed) given back.
    pub(super) fn count_source_failures(
        &self,
        tenant: &Tenant,
        req: &LoginRequest,
        wrong: u32,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        if wrong == 0 {
            return Ok(());
        }
        let Some(key) = self.source_throttle_key(req) else {
            return Ok(());
        };
        let lock = &self.settings.lockout;
        let window = lock.source_window.as_secs().max(1) as i64;
        let reserved = if self.store.shared() {
            self.checking_sources.take_reserved(&key)
        } else {
            None
        };
        let level = match reserved {
            Some((reserved, _)) if reserved > wrong => {
                let th = self
                    .store
                    .release_failures(tenant.id, &key, reserved - wrong)?;
                self.source_level(&th, now)
            }
            Some((reserved, row)) if reserved == wrong => self.source_level(&row, now),
            // More wrong than reserved (a login with more passwords than the bucket
            // holds), or nothing reserved: counted now.
            reserved => {
                let counted = reserved.map_or(0, |(n, _)| n);
                self.store
                    .record_draining_failure(
                        tenant.id,
                        &key,
                        wrong - counted,
                        now,
                        lock.source_failures,
                        window,
                    )?
                    .failures
            }
        };
        if level > lock.source_failures {
            self.store.lock_until(tenant.id, &key, now + window)?;
            tracing::warn!(tenant = %tenant.name, source = %req.source, failures = level,
                "source blocked after too many wrong passwords");
        }
        Ok(())
    }

    fn source_throttle_key(&self, req: &LoginRequest) -> Option<String> {
        if self.settings.lockout.source_failures == 0 {
            return None;
        }
        source_key(req)
    }

    /// Count a wrong code; lock the user when the limit is reached. With a shared store
    /// the check reserved the failure at its gate: it is kept.
    pub(super) fn count_failure(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        if self.code_reserved(user) {
            return self.keep_failure(tenant, user, now);
        }
        let key = second_factor_key(user);
        let lock_after = self.settings.lockout.lock_after;
        let th = self.store.record_failure(tenant.id, &key, now)?;
        if th.failures >= lock_after {
            let until = now + self.settings.lockout.duration.as_secs() as i64;
            self.store.lock_until(tenant.id, &key, until)?;
            tracing::warn!(tenant = %tenant.name, user = %user.name, failures = th.failures, "user locked after repeated wrong codes");
        }
        Ok(())
    }

    /// Whether this check of the user's code reserved its failure in a shared store (at
    /// [`Engine::throttle_gate`]). If so the failure is the caller's from now on: it stays
    /// counted unless given back with [`Engine::give_back_failure`] or cleared, also if the
    /// check ends in an error (fail closed: a store that fails under load must not let
    /// guesses through uncounted). Then the caller settles it: [`Engine::keep_failure`].
    pub(super) fn code_reserved(&self, user: &User) -> bool {
        self.store.shared() && self.checking.take_reserved(&user.id).is_some()
    }

    /// A reserved failure ([`Engine::code_reserved`]) was a wrong code: it stays, with its
    /// time; the user is locked when the limit is reached.
    pub(super) fn keep_failure(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        let key = second_factor_key(user);
        let lock_after = self.settings.lockout.lock_after;
        let until = now + self.settings.lockout.duration.as_secs() as i64;
        let th = self
            .store
            .keep_failure(tenant.id, &key, now, lock_after, until)?;
        if th.failures >= lock_after {
            tracing::warn!(tenant = %tenant.name, user = %user.name, failures = th.failures, "user locked after repeated wrong codes");
        }
        Ok(())
    }

    /// A reserved failure ([`Engine::code_reserved`]) was no failure: it is given back.
    pub(super) fn give_back_failure(
        &self,
        tenant: &Tenant,
        user: &User,
    ) -> Result<(), EngineError> {
        self.store
            .release_failures(tenant.id, &second_factor_key(user), 1)?;
        Ok(())
    }

    /// A good code ends the user's failure streak (with what this check reserved).
    pub(super) fn clear_failures(&self, tenant: &Tenant, user: &User) -> Result<(), EngineError> {
        self.store
            .clear_throttle(tenant.id, &second_factor_key(user))?;
        if self.store.shared() {
            self.checking.cleared(&user.id);
        }
        Ok(())
    }
}

/// The Reject of a login that meets `blocked` at `now`.
fn blocked_outcome(blocked: ThrottleInForce, now: UnixTime) -> Outcome {
    match blocked {
        ThrottleInForce::Locked { failures, until } => Outcome::reject_with(
            format!("user is locked for {} s more after {failures} failed codes", until - now),
            "Too many failed attempts: this account is locked. Try again later or ask your administrator",
        ),
        ThrottleInForce::Delayed { failures, next_try_at } => Outcome::reject_with(
            format!(
                "throttled: {failures} failed codes, next try allowed in {} s",
                next_try_at - now
            ),
            "Too many failed attempts: wait a little, then try again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        delay_after, source_key, source_named, source_throttle_key, throttle_in_force,
        ThrottleInForce,
    };
    use crate::config::LockoutConfig;
    use crate::engine::{Channel, LoginMode, LoginRequest, Unenrolled};
    use crate::model::Throttle;

    #[test]
    fn a_throttle_is_in_force_until_its_delay_or_lock_runs_out() {
        let lockout = LockoutConfig::default(); // 5 failures, then 2 s doubling; lock at 10
        let row = |failures, last_failure_at, locked_until| Throttle {
            failures,
            last_failure_at,
            locked_until,
        };
        assert_eq!(throttle_in_force(&row(4, 100, None), &lockout, 100), None);
        let delayed = ThrottleInForce::Delayed {
            failures: 6,
            next_try_at: 104,
        };
        assert_eq!(
            throttle_in_force(&row(6, 100, None), &lockout, 103),
            Some(delayed)
        );
        assert_eq!(throttle_in_force(&row(6, 100, None), &lockout, 104), None);
        let locked = ThrottleInForce::Locked {
            failures: 10,
            until: 1900,
        };
        assert_eq!(
            throttle_in_force(&row(10, 100, Some(1900)), &lockout, 1899),
            Some(locked)
        );
        // A lock that ran out is none, whatever delay its failures would owe.
        assert_eq!(
            throttle_in_force(&row(10, 1899, Some(1900)), &lockout, 1900),
            None
        );
        // No delays before the lock.
        let no_delays = LockoutConfig {
            base_delay: std::time::Duration::ZERO,
            ..lockout
        };
        assert_eq!(throttle_in_force(&row(9, 100, None), &no_delays, 100), None);
    }

    #[test]
    fn a_reason_names_the_counted_bucket_only_where_it_differs() {
        assert_eq!(source_named("203.0.113.7"), "source 203.0.113.7");
        assert_eq!(
            source_named("aa-bb-cc-dd-ee-ff"),
            "source aa-bb-cc-dd-ee-ff"
        );
        assert_eq!(
            source_named("2001:db8::1:2"),
            "source 2001:db8::1:2 (counted as 2001:db8::/64)"
        );
        assert_eq!(
            source_named("::ffff:192.0.2.1"),
            "source ::ffff:192.0.2.1 (counted as 192.0.2.1)"
        );
    }

    #[test]
    fn only_a_users_own_address_is_a_throttled_source() {
        let radius = Channel::Radius {
            client: "vpn".into(),
            nas_address: "192.0.2.1".into(),
            nas_identifier: None,
        };
        let pam = Channel::Pam {
            host: "bastion".into(),
            service: "sshd".into(),
            rhost: None,
            tty: None,
        };
        let web = Channel::Web {
            address: String::new(),
        };
        let cases = [
            (&radius, "203.0.113.9", true),
            (&radius, "02-00-5E-10-00-00", true),
            (&radius, "192.0.2.1", false),
            (&radius, "", false),
            (&pam, "203.0.113.9", true),
            (&pam, "local", false),
            (&pam, "tty:/dev/tty1", false),
            (&web, "203.0.113.9", true),
            (&web, "proxy:127.0.0.1", false),
            (&web, "web", false),
            (&radius, "::ffff:203.0.113.9", true),
            (&radius, "2001:db8:1:2::abcd", true),
        ];
        for (channel, source, counted) in cases {
            let req = LoginRequest {
                tenant: "acme".into(),
                channel: channel.clone(),
                source: source.into(),
                mode: LoginMode::Challenge,
                username: "alice".into(),
                credential: Default::default(),
                delimiter: ",".into(),
                prompt: String::new(),
                unenrolled: Unenrolled::Deny,
                source_limited: true,
            };
            assert_eq!(
                source_key(&req),
                counted.then(|| source_throttle_key(channel.kind(), source)),
                "{channel:?} {source}"
            );
            // A client that says its sources do not tell users apart: nothing counted.
            let req = LoginRequest {
                source_limited: false,
                ..req
            };
            assert_eq!(source_key(&req), None, "{channel:?} {source}");
        }
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        use super::source_throttle_key as key;
        assert_eq!(
            key("radius", "2001:db8:1:2::abcd"),
            "source:radius:2001:db8:1:2::/64:first_factor"
        );
        assert_eq!(
            key("radius", "2001:db8:1:2:ffff::1"),
            key("radius", "2001:db8:1:2::abcd")
        );
        assert_ne!(
            key("radius", "2001:db8:1:3::1"),
            key("radius", "2001:db8:1:2::1")
        );
        assert_eq!(
            key("web", "::ffff:203.0.113.9"),
            "source:web:203.0.113.9:first_factor"
        );
        assert_eq!(
            key("radius", "02-00-5E-10-00-00"),
            "source:radius:02-00-5E-10-00-00:first_factor"
        );
    }

    #[test]
    fn delays_start_at_the_threshold_and_double() {
        assert_eq!(delay_after(4, 5, 2, 1800), 0);
        assert_eq!(delay_after(5, 5, 2, 1800), 2);
        assert_eq!(delay_after(6, 5, 2, 1800), 4);
        assert_eq!(delay_after(9, 5, 2, 1800), 32);
        assert_eq!(delay_after(40, 5, 2, 1800), 1800);
    }
}
