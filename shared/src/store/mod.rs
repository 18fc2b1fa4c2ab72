//! The store: all state (tenants, users, factors, recovery codes, transactions, the OTP
//! replay cache, throttles, audit). SQLite is the embedded default; a PostgreSQL store
//! implements the same trait for several nodes. SQL is kept portable between the two.
//!
//! Operations that must be race-free across nodes are single statements with a condition
//! (`UPDATE ... WHERE step = ?`, `INSERT` under a unique key), never read-then-write. Where
//! a count of rows decides (the send quota of codes, the push cap), SQLite inserts with
//! the count in the statement's condition, and PostgreSQL, whose statements each see only
//! what was committed when they began, counts and inserts in one transaction after taking
//! a lock on the user's row.

mod group_commit;
mod migrations;
mod pg_tls;
mod postgres;
mod replay;
mod sqlite;

pub use migrations::MIGRATIONS;
pub use pg_tls::{
    check_url_tls as check_postgres_tls, parse_url as parse_postgres_url, PgSslMode, PgTlsParams,
};
pub use postgres::{is_postgres_url, redact_url, translate_sql, PgSettings, PgStore, PUSH_CHANNEL};
pub use sqlite::SqliteStore;

use crate::clock::UnixTime;
use crate::model::*;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is newer than this program knows ({known}); upgrade portcullis")]
    SchemaTooNew { found: i64, known: i64 },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a subscription to push decisions ([`Store::push_events`]) delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// A push of this transaction was decided, on this node or another one.
    Decided(String),
    /// Decisions may have been missed (the subscription was connected again): whoever
    /// waits should read the store now.
    Resync,
}

/// Push decisions of every node as they are made (see [`Store::push_events`]).
pub type PushEvents = tokio::sync::mpsc::Receiver<PushEvent>;

/// The units of a batch (see [`Store::batch`]): each one's writes can be undone alone.
pub trait BatchUnits {
    /// Begins a unit: what this thread writes until [`BatchUnits::end_unit`] can be
    /// undone without undoing the rest of the batch.
    fn begin_unit(&self) -> StoreResult<()>;
    /// Ends the unit, keeping its writes (`keep`) or undoing them.
    fn end_unit(&self, keep: bool) -> StoreResult<()>;
}

/// The window of the hourly send quota of codes sent out of band, in seconds.
pub const SEND_WINDOW: i64 = 3600;

/// The limits on codes sent out of band to one user (`[sms]` / `[email]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    /// Sends per user in the last [`SEND_WINDOW`] seconds.
    pub max_per_hour: u32,
    /// The shortest time between two sends to the same user, in seconds.
    pub resend_after: i64,
}

impl SendLimits {
    /// Why one more send is refused, given the `count` of sends in the window before `now`
    /// and the `last` of them; None if it may go.
    pub fn refusal(&self, count: u32, last: Option<UnixTime>, now: UnixTime) -> Option<SendClaim> {
        match last {
            Some(last) if now < last + self.resend_after => Some(SendClaim::TooSoon { last }),
            _ if count >= self.max_per_hour => Some(SendClaim::QuotaExceeded),
            _ => None,
        }
    }
}

/// What [`Store::claim_code_send`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendClaim {
    /// The send is counted (as a reservation): send, then confirm or release it.
    Claimed,
    /// The last send, at `last`, is younger than `resend_after`.
    TooSoon { last: UnixTime },
    /// `max_per_hour` sends in the last hour.
    QuotaExceeded,
}

/// What [`Store::add_push_capped`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAdded {
    /// The push was added.
    Added,
    /// The cap was reached: `sent` pushes in the window, none added.
    CapReached { sent: u32 },
}

/// Who may answer a transaction: the tenant, user, client and source it was started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnBinding<'a> {
    pub tenant_id: TenantId,
    pub username: &'a str,
    pub client: &'a str,
    pub source: &'a str,
}

/// What [`Store::take_transaction`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenTransaction {
    /// The step was taken: the transaction, its step advanced.
    Taken(Transaction),
    /// The step is open, but bound to another tenant, user, client or source: nothing was
    /// changed.
    OtherBinding,
    /// No such step is open: the transaction is unknown, expired or ended, or the step was
    /// answered already.
    Gone,
}

/// What [`Store::reserve_failure`] and [`Store::reserve_draining_failures`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The failures were counted: the row as it is now, with them in it.
    Reserved(Throttle),
    /// Nothing was counted: the limit was reached, or the key is locked. The row as it was
    /// read right after (for the reason of the refusal).
    Refused(Throttle),
}

/// How long a source's wrong-password bucket is kept after its last failure: longer than
/// the longest `[lockout] source_window` (a day) takes to drain it.
pub const SOURCE_ROWS_KEPT: i64 = 2 * 86_400;

/// How long the ids of the fail-open reports a host sent are remembered (seconds): a
/// report comes again when its answer was lost or its sender died before removing it,
/// with the next login that reaches the daemon: in practice within hours, but a host cut
/// off right after sending may take as long as its outage. Longer than the 30 days within
/// which the daemon keeps a report's own time.
pub const FAIL_OPEN_IDS_KEPT: i64 = 40 * 86_400;

/// One fail-open report to record (see [`Store::record_fail_opens`]).
#[derive(Debug, Clone)]
pub struct FailOpenRecord {
    /// The module's name for the report; `None` from modules that name none (recorded
    /// each time).
    pub id: Option<String>,
    pub audit: AuditRecord,
}

/// Which of `reports` are to be recorded (in their order): those without an id, and the
/// first of each id that `insert` (its id row, `Ok(false)` if the row was there) finds new.
/// The ids are inserted in sorted order, so that two requests of one host with the same
/// ids in another order wait for each other instead of deadlocking (PostgreSQL).
pub(crate) fn new_fail_open_ids(
    reports: &[FailOpenRecord],
    mut insert: impl FnMut(&FailOpenRecord, &str) -> StoreResult<bool>,
) -> StoreResult<Vec<bool>> {
    let mut fresh: Vec<bool> = reports.iter().map(|r| r.id.is_none()).collect();
    let mut named: Vec<(&str, usize)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.id.as_deref().map(|id| (id, i)))
        .collect();
    named.sort_unstable();
    named.dedup_by_key(|(id, _)| *id);
    for (id, i) in named {
        fresh[i] = insert(&reports[i], id)?;
    }
    Ok(fresh)
}

/// Everything the Engine and the admin commands keep. Implemented by every backend and
/// exercised by one test suite.
pub trait Store: Send + Sync + 'static {
    /// Whether [`Store::batch`] is supported (the embedded SQLite store).
    fn can_batch(&self) -> bool {
        false
    }

    /// Runs `work` with every call this thread makes on the store inside one transaction,
    /// committed when `work` returns Ok (rolled back when it returns an error, which is
    /// returned); calls of other threads wait meanwhile. Many small logins then cost one
    /// commit and no hand-off between threads. `work` must not let anything it decided
    /// out (an answer to a client) before this returns Ok: an error means that nothing of
    /// the batch was kept. [`BatchUnits`] undo one unit's writes; a write that fails inside
    /// a unit may leave part of itself behind until its unit is undone, so a unit in which
    /// a write failed must be undone.
    fn batch(&self, work: &mut dyn FnMut(&dyn BatchUnits) -> StoreResult<()>) -> StoreResult<()> {
        let _ = work;
        Err(StoreError::Database(
            "this store does not run batches".into(),
        ))
    }

    /// Called by the thread that runs batches once a batch's answers are on their way:
    /// housekeeping that holds up the store (SQLite: restarting a large WAL, two `fsync`s)
    /// is done here rather than between a batch's commit and its answers.
    fn after_batch(&self) {}

    /// Reads ahead what the first logins would otherwise wait for (SQLite: the TOTP replay
    /// cache, the whole table): called by the daemon before it serves.
    fn warm(&self) -> StoreResult<()> {
        Ok(())
    }

    // Tenants
    fn create_tenant(&self, name: &str, now: UnixTime) -> StoreResult<Tenant>;
    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>>;
    fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;

    // Users
    fn create_user(&self, user: &NewUser, now: UnixTime) -> StoreResult<User>;
    /// Creates `user` unless the tenant has a user whose name `fold`s to the same (another
    /// spelling of one directory account): then `Ok(Err(that name))`. The check and the
    /// insert are one step on every node, so two first logins of two spellings at once
    /// make one user, not a second one without the first one's factors.
    fn create_user_unless_alike(
        &self,
        user: &NewUser,
        now: UnixTime,
        fold: &dyn Fn(&str) -> String,
    ) -> StoreResult<Result<User, String>>;
    fn user_by_name(&self, tenant: TenantId, name: &str) -> StoreResult<Option<User>>;
    fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<User>>;
    /// The names of all the tenant's users, in order (a full scan: for first logins of
    /// directory users only, who are compared by a fold the database cannot do).
    fn user_names(&self, tenant: TenantId) -> StoreResult<Vec<String>>;
    /// Disabling a user also raises their session epoch ([`Store::raise_session_epoch`]);
    /// enabling does not.
    fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<()>;
    /// Sets (or removes) the password; also raises the session epoch.
    fn set_password_hash(&self, user: UserId, hash: Option<&str>) -> StoreResult<()>;
    /// Raises the user's `session_epoch` by one, in one statement: every web session issued
    /// before is over. False if there is no such user. Setting a password, disabling the
    /// user and an import that sets either raise it too.
    fn raise_session_epoch(&self, user: UserId) -> StoreResult<bool>;
    /// Sets (`Some`) or removes (`None`) one of the user's attributes.
    fn set_user_attribute(&self, user: UserId, key: &str, value: Option<&str>) -> StoreResult<()>;
    /// What the first-factor backend's directory says about the user (LDAP groups, mail, mobile).
    fn set_directory_info(
        &self,
        user: UserId,
        email: Option<&str>,
        phone: Option<&str>,
        groups: &[String],
    ) -> StoreResult<()>;
    /// Deletes the user with their factors, codes, transactions and throttles (audit stays).
    /// The replay-cache rows of their TOTP factors are left to the purge: they name factor
    /// ids that are never given out again, and expire within a few TOTP steps.
    fn delete_user(&self, user: UserId) -> StoreResult<()>;

    // Factors
    fn add_factor(&self, factor: &Factor) -> StoreResult<()>;
    fn factors_of(&self, user: UserId) -> StoreResult<Vec<Factor>>;
    /// The user and their factors, read together (in one turn where the backend can).
    fn user_with_factors(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> StoreResult<Option<(User, Vec<Factor>)>> {
        match self.user_by_name(tenant, name)? {
            Some(u) => {
                let factors = self.factors_of(u.id)?;
                Ok(Some((u, factors)))
            }
            None => Ok(None),
        }
    }
    /// Pending -> confirmed; false if there was no such pending factor.
    fn confirm_factor(&self, user: UserId, factor_id: &str, now: UnixTime) -> StoreResult<bool>;
    /// [`Store::confirm_factor`] only while the user has no confirmed factor, in one step
    /// on every node (enrolment at login: of two links answered at once, one confirms).
    fn confirm_first_factor(
        &self,
        user: UserId,
        factor_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Deletes the factor (its replay-cache rows expire, as for [`Store::delete_user`]).
    fn remove_factor(&self, user: UserId, factor_id: &str) -> StoreResult<bool>;
    fn touch_factor(&self, factor_id: &str, now: UnixTime) -> StoreResult<()>;
    /// Compare-and-set of a factor's params (HOTP counter): true only if they still were `old`.
    fn update_factor_params(&self, factor_id: &str, old: &str, new: &str) -> StoreResult<bool>;

    // Bypass codes (admin-issued, limited uses, expiring)
    fn add_bypass_code(
        &self,
        user: UserId,
        hash: &str,
        uses: u32,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Spends one use of an unexpired code; true if there was one left.
    fn use_bypass_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool>;
    /// Whether the user holds a bypass code that can still be used.
    fn has_bypass_code(&self, user: UserId, now: UnixTime) -> StoreResult<bool>;

    // Recovery codes
    /// Replaces all of a user's recovery codes with these hashes.
    fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Marks the code used; true only for the first use of an existing code.
    fn use_recovery_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool>;
    fn unused_recovery_codes(&self, user: UserId) -> StoreResult<u32>;

    // Codes sent out of band (SMS)
    fn add_sent_code(
        &self,
        user: UserId,
        factor_id: &str,
        hash: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Spends an unexpired, unused sent code; the factor it was sent for, if it matched.
    fn use_sent_code(&self, user: UserId, hash: &str, now: UnixTime)
        -> StoreResult<Option<String>>;
    /// How many codes were sent to the user since `since`, and when the last one was.
    fn sent_codes_since(
        &self,
        user: UserId,
        since: UnixTime,
    ) -> StoreResult<(u32, Option<UnixTime>)>;
    /// Claims one send of a code to `user` at `now`, atomically (also between nodes): only
    /// if `limits` allow it, counting every code sent (or being sent) in the last
    /// [`SEND_WINDOW`] seconds. A claim is a row under `reservation` (a text no code hash
    /// can equal) that counts as a send but is never a usable code: once the provider has
    /// taken the code, [`Store::confirm_code_send`] turns it into the code; if it did not,
    /// [`Store::release_code_send`] removes it (a failed send is no sent code).
    fn claim_code_send(
        &self,
        user: UserId,
        factor_id: &str,
        reservation: &str,
        limits: SendLimits,
        now: UnixTime,
    ) -> StoreResult<SendClaim>;
    /// The claimed send went out: the reservation becomes the code with hash `hash`,
    /// usable until `expires_at`. False if there is no such reservation (any more).
    fn confirm_code_send(
        &self,
        user: UserId,
        reservation: &str,
        hash: &str,
        expires_at: UnixTime,
    ) -> StoreResult<bool>;
    /// The claimed send failed: the reservation is removed and counts no more.
    fn release_code_send(&self, user: UserId, reservation: &str) -> StoreResult<()>;

    // Remembered sources ("remember this device" for infrastructure)
    /// Remember (or extend) that `user` passed a second factor from `source`.
    fn remember_source(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()>;
    /// The expiry of an unexpired remembered `source` of `user` under `rule`.
    fn remembered_until(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        now: UnixTime,
    ) -> StoreResult<Option<UnixTime>>;
    /// Forget one source, or all of the user's; returns how many were forgotten.
    fn forget_sources(&self, user: UserId, source: Option<&str>) -> StoreResult<u64>;

    // OTP replay cache
    /// Records that `counter` of `factor_id` was used; false if it was used before.
    ///
    /// The row is unique by (`expires_at`, `factor_id`, `counter`) and purged after
    /// `expires_at`: callers give the same `expires_at` for the same counter of the same
    /// factor ([`crate::totp::replay_expiry`]), which makes that the uniqueness of the
    /// counter. The key leads with the expiry so that new rows and purged rows each sit
    /// together (see migration 12).
    fn record_otp_use(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
    ) -> StoreResult<bool>;

    /// A login's use of a TOTP code: records `counter` of `factor_id` as used and, only
    /// if it was not used before, sets the factor's `last_used_at`; one atomic write.
    /// False if the code was used before (nothing changes then). The Engine calls it when
    /// the factor's last use is due to be written ([`crate::model::Factor::last_use_outdated`])
    /// and [`Store::record_otp_use`] otherwise. The SQLite store commits the last use with
    /// the code's row and writes it into the factors table about a second later, together
    /// with others (see `replay`); its readers see it at once.
    fn use_otp(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<bool>;

    // Transactions
    fn put_transaction(&self, txn: &Transaction) -> StoreResult<()>;
    /// Atomically takes step `step` of an unexpired transaction bound to `binding` (its
    /// tenant, user name, client and source, compared exactly): on success the stored step
    /// is advanced, so the same step can never be answered twice. An answer with another
    /// binding changes nothing ([`TakenTransaction::OtherBinding`]): whoever saw a State
    /// cannot take its owner's step nor end the login.
    fn take_transaction(
        &self,
        id: &str,
        step: u32,
        binding: &TxnBinding<'_>,
        now: UnixTime,
    ) -> StoreResult<TakenTransaction>;
    /// Records a wrong answer and returns the attempt count.
    fn add_transaction_attempt(&self, id: &str) -> StoreResult<u32>;
    fn delete_transaction(&self, id: &str) -> StoreResult<()>;

    // Push approval
    fn push_by_id(&self, id: &str) -> StoreResult<Option<PushRequest>>;
    /// The newest push of a transaction.
    fn push_of_transaction(&self, txn_id: &str) -> StoreResult<Option<PushRequest>>;
    /// Pending -> `status`, only while unexpired: true if this call decided it.
    fn decide_push(
        &self,
        id: &str,
        status: PushStatus,
        detail: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// How many pushes were sent to the user since `since` (anti-fatigue cap).
    fn pushes_since(&self, user: UserId, since: UnixTime) -> StoreResult<u32>;
    /// Adds the push only if fewer than `max` pushes were sent to its user since `since`
    /// (the anti-fatigue cap), in one atomic step (also between nodes): of pushes started
    /// at the same moment, no more than the cap are added.
    fn add_push_capped(
        &self,
        push: &PushRequest,
        since: UnixTime,
        max: u32,
    ) -> StoreResult<PushAdded>;
    /// A feed of push decisions made by every node sharing this store, for a store that
    /// can push them (PostgreSQL: LISTEN/NOTIFY over one dedicated connection per call,
    /// reconnected when it drops). None (the default, SQLite): a decision is seen by the
    /// node that made it at once and by others only by reading the store.
    fn push_events(&self) -> Option<PushEvents> {
        None
    }

    // Throttles
    /// Whether several nodes may share this store (PostgreSQL): what a node keeps in its
    /// own memory then limits that node only, so the Engine reserves each check's failure
    /// in the store before the check ([`Store::reserve_failure`]). False for the embedded
    /// SQLite store (one node), whose limits the node's memory keeps at no cost.
    fn shared(&self) -> bool;
    fn throttle(&self, tenant: TenantId, key: &str) -> StoreResult<Throttle>;
    /// Counts one failure atomically and returns the new state.
    fn record_failure(&self, tenant: TenantId, key: &str, now: UnixTime) -> StoreResult<Throttle>;
    /// Counts `failures` failures (at least one; an `append` login counts one per password
    /// it checked) atomically in a bucket that drains `per_window` failures every `window`
    /// seconds, and returns the new state. `last_failure_at` is then the time the bucket
    /// has drained up to: a part of a failure's drain time carries over to the next.
    fn record_draining_failure(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
        now: UnixTime,
        per_window: u32,
        window: i64,
    ) -> StoreResult<Throttle>;
    /// Counts one failure in one atomic statement (also between nodes), but only if the
    /// row holds fewer than `limit` failures and is not locked at `now`: a check reserves
    /// its failure before it runs, so the failures on record with the checks in progress
    /// on every node never pass `limit`. Unlike [`Store::record_failure`], the time of the
    /// last failure stays as it was (a new row takes `now`): a wrong answer sets it when it
    /// keeps the failure ([`Store::keep_failure`]); a check that passes gives the failure
    /// back ([`Store::release_failures`]) or clears the row, and the delays are as before.
    fn reserve_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        limit: u32,
    ) -> StoreResult<Reservation>;
    /// Counts `failures` failures as [`Store::record_draining_failure`] does, in one
    /// atomic statement, but only if the bucket's level at `now` with them in it is at most
    /// `limit` and the key is not locked at `now` (see [`Store::reserve_failure`]).
    #[allow(clippy::too_many_arguments)]
    fn reserve_draining_failures(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
        now: UnixTime,
        per_window: u32,
        window: i64,
        limit: u32,
    ) -> StoreResult<Reservation>;
    /// A failure reserved with [`Store::reserve_failure`] stays counted: the time of the
    /// last failure becomes `now` (unless it is later), and the key is locked until
    /// `until` if it holds `lock_at` failures or more; one atomic statement. The row as it
    /// is now (empty if there is none any more).
    fn keep_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        lock_at: u32,
        until: UnixTime,
    ) -> StoreResult<Throttle>;
    /// Gives back `failures` failures reserved before (never below none), in one atomic
    /// statement, leaving the time of the last failure and any lock as they are; a row
    /// left with no failure and no lock is deleted. The row as it is now (empty if none).
    fn release_failures(&self, tenant: TenantId, key: &str, failures: u32)
        -> StoreResult<Throttle>;
    fn lock_until(&self, tenant: TenantId, key: &str, until: UnixTime) -> StoreResult<()>;
    fn clear_throttle(&self, tenant: TenantId, key: &str) -> StoreResult<()>;
    /// Deletes the row of `key` only if it is still `seen` (as read by [`Store::throttle`])
    /// and `seen` is a lock that ran out by `now`; true if it did. A lock (or a failure)
    /// recorded since, by another node, is kept.
    fn clear_expired_lock(
        &self,
        tenant: TenantId,
        key: &str,
        seen: &Throttle,
        now: UnixTime,
    ) -> StoreResult<bool>;

    // Audit (append-only)
    fn append_audit(&self, record: &AuditRecord) -> StoreResult<()>;
    /// Writes the audit records of the fail-open reports one request of a host brought,
    /// all of them or none. A report whose id the same host (`audit.host`, in
    /// `audit.tenant`) sent in the last [`FAIL_OPEN_IDS_KEPT`] seconds is not recorded
    /// again. Returns how many were recorded.
    fn record_fail_opens(&self, reports: &[FailOpenRecord], now: UnixTime) -> StoreResult<usize>;
    fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;

    // Housekeeping
    /// Deletes expired transactions and replay-cache entries.
    fn purge_expired(&self, now: UnixTime) -> StoreResult<u64>;

    // Admin API tokens (only the hash of the secret is kept)
    fn add_admin_token(&self, token: &AdminToken) -> StoreResult<()>;
    /// The token with this id (revoked, expired or not), with its tenant's name.
    fn admin_token(&self, id: &str) -> StoreResult<Option<AdminToken>>;
    /// Every token, or the tenant's only, oldest first.
    fn list_admin_tokens(&self, tenant: Option<TenantId>) -> StoreResult<Vec<AdminToken>>;
    /// Revokes the token; false if there was no such token not yet revoked.
    fn revoke_admin_token(&self, id: &str) -> StoreResult<bool>;
    fn touch_admin_token(&self, id: &str, now: UnixTime) -> StoreResult<()>;
    // PAM hosts (remote hosts of a fleet, `portcullis host add`)
    /// Registers host `name` of `tenant` with the hash of its token. A revoked host of the
    /// same name is replaced (new token, not revoked); a live one is `AlreadyExists`.
    fn create_pam_host(
        &self,
        tenant: TenantId,
        name: &str,
        token_hash: &str,
        now: UnixTime,
    ) -> StoreResult<PamHost>;
    /// The tenant's hosts, revoked ones included, by name.
    fn list_pam_hosts(&self, tenant: TenantId) -> StoreResult<Vec<PamHost>>;
    /// Revokes a host: its token stops working at once. False if there was no live host.
    fn revoke_pam_host(&self, tenant: TenantId, name: &str) -> StoreResult<bool>;
    /// The host holding the token with this hash (revoked ones too: the caller refuses them).
    fn pam_host_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<PamHost>>;
    /// Records that the host was seen at `now` (at most one write a minute per host).
    fn touch_pam_host(&self, host: i64, now: UnixTime) -> StoreResult<()>;
    // Bulk import
    /// Creates and updates users (with their factors) in one transaction: either every
    /// entry is applied or, on the first error (e.g. a name that exists), none is.
    /// Returns how many users were created and how many updated.
    fn import_users(&self, users: &[ImportUser], now: UnixTime) -> StoreResult<(u64, u64)>;

    // Enrolment links (`unenrolled = "enroll"`)
    fn add_enrollment(&self, e: &Enrollment) -> StoreResult<()>;
    /// Claims an unexpired, never opened link (one conditional UPDATE): the link as it is
    /// now, or None if it is unknown, expired or was opened before.
    fn open_enrollment(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<Enrollment>>;
    /// Attaches the pending factor to an opened link that has none yet.
    fn set_enrollment_factor(&self, token_hash: &str, factor_id: &str) -> StoreResult<bool>;
    /// The newest enrolment link of a login transaction.
    fn enrollment_of_transaction(&self, txn_id: &str) -> StoreResult<Option<Enrollment>>;
}
