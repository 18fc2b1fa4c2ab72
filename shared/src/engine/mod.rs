//! The Engine: one login = one transaction of steps.
//!
//! Front ends (RADIUS, PAM) only translate: they call [`Engine::start`] with what the user
//! gave first, then [`Engine::answer`] with each reply, and render the returned [`Step`].
//! The Engine decides; it never does I/O other than through the [`Store`].
//! Calls are synchronous and may take a password hash's time: front ends run them off
//! their receive loops.

mod batch;
mod decision_log;
mod enroll;
mod external_mfa;
mod menu;
mod oob;
mod push;
mod rules;
mod second_factor;
mod split;
mod throttle;

pub use batch::{BatchCounts, Batched, Done, HandOut, LoginBatcher};
pub use decision_log::DecisionLogs;
pub use enroll::{OpenedEnrollment, ENROLL_PATH, ENROLL_PEPPER_LABEL, ENROLL_TTL};
pub use throttle::{
    second_factor_key, source_throttle_key, throttle_in_force, ThrottleInForce, SOURCE_CHANNELS,
};

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::clock::{Clock, UnixTime};
use crate::config::{Config, LockoutConfig, LoginMode, TotpConfig, TransactionConfig, Unenrolled};
use crate::delivery::{CodeSender, DeliverySettings};
use crate::external::{ExternalMfa, ExternalSettings};
use crate::first_factor::{
    CheckContext, DirectoryInfo, FirstFactor, FirstFactorResult, LocalPasswords,
};
use crate::model::*;
use crate::password::PasswordHasher;
use crate::policy::{Decision, Rule};
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError, TakenTransaction, TxnBinding};

pub(crate) use oob::sent_code_hash;
pub use oob::{keyword, EmailParams, SendOutcome, SmsParams, OUT_OF_BAND};
pub use push::POLL_AFTER_MS;
pub use second_factor::{factor_context, CodeCheck};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A NAS over RADIUS: the configured client's name and the NAS's own identity.
    Radius {
        client: String,
        nas_address: String,
        nas_identifier: Option<String>,
    },
    /// A host's PAM stack: the service (sshd, sudo) is the "client" of policy and audit.
    Pam {
        host: String,
        service: String,
        rhost: Option<String>,
        tty: Option<String>,
    },
    /// The self-service web pages (`/my/`): the policy and audit client is `web`.
    Web {
        /// The browser's address, as the listener saw it.
        address: String,
    },
}

impl Channel {
    /// `radius` or `pam`, for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Radius { .. } => "radius",
            Channel::Pam { .. } => "pam",
            Channel::Web { .. } => "web",
        }
    }

    /// The configured client (RADIUS) or service (PAM) name.
    pub fn client(&self) -> &str {
        match self {
            Channel::Radius { client, .. } => client,
            Channel::Pam { service, .. } => service,
            Channel::Web { .. } => "web",
        }
    }

    /// What a transaction is bound to besides its user and source: the RADIUS client, or
    /// the PAM service on its host (`sshd@host1`: another host of the tenant, naming the
    /// same service, user and rhost, must not answer or poll this host's login).
    pub fn binding(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Channel::Pam { service, host, .. } => format!("{service}@{host}").into(),
            other => other.client().into(),
        }
    }
}

/// The first request of a login.
pub struct LoginRequest {
    pub tenant: String,
    pub channel: Channel,
    /// Where the user is: Calling-Station-Id, else the NAS address. Transactions are bound to it.
    pub source: String,
    pub mode: LoginMode,
    pub username: String,
    /// What the user typed first: the password, or in `append` mode password and code.
    pub credential: Zeroizing<Vec<u8>>,
    /// Separator of password and code in `append` mode.
    pub delimiter: String,
    /// The prompt of the code challenge.
    pub prompt: String,
    /// Users without a confirmed second factor.
    pub unenrolled: Unenrolled,
    /// Whether `source` tells users apart: false when the client says it does not (RADIUS
    /// client `source_limit = false`). Then wrong passwords do not count toward the
    /// source's limit, and a rule's `remember` does not hold for it.
    pub source_limited: bool,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("tenant", &self.tenant)
            .field("channel", &self.channel)
            .field("source", &self.source)
            .field("mode", &self.mode)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A reply to a [`Step::Prompt`].
pub struct AnswerRequest {
    pub tenant: String,
    pub channel: Channel,
    pub source: String,
    pub username: String,
    /// The `txn` of the prompt being answered.
    pub txn: String,
    pub answer: Zeroizing<Vec<u8>>,
    /// The prompt to repeat after a wrong code.
    pub prompt: String,
    /// As in [`LoginRequest::source_limited`].
    pub source_limited: bool,
}

/// What the user is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expects {
    Password,
    Code,
    /// A factor menu: the answer is a choice's id or number, or a code.
    Choice,
}

/// One entry of a factor menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuChoice {
    /// What picks it (`app`, `push`, `sms`, `email`); its 1-based position does too.
    pub id: String,
    pub label: String,
}

/// What the front end must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let the user in.
    Accept {
        factors_used: Vec<String>,
        groups: Vec<String>,
        /// Attributes for the front end to return (RADIUS reply attributes).
        reply_attributes: Vec<ReplyAttribute>,
    },
    /// Refuse. The audit record holds the real reason; the user sees only this.
    Reject { user_message: String },
    /// Ask the user; answer with [`Engine::answer`] quoting `txn`.
    Prompt {
        txn: String,
        text: String,
        echo: bool,
        expects: Expects,
        /// With `expects = Choice`: the menu (the text is its heading).
        choices: Vec<MenuChoice>,
    },
    /// A push was sent: hold the request until it is decided, or tell the user to approve
    /// and answer (an empty answer polls) quoting `txn`.
    Wait {
        txn: String,
        text: String,
        poll_after_ms: u32,
        /// True when this step sent the push (the user has not seen its text yet); false
        /// when a poll found it still pending.
        started: bool,
    },
}

/// A RADIUS attribute for an Access-Accept, raw: `typ` 26 carries a Vendor-Specific
/// payload (vendor id, vendor type, length, value) already encoded in `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAttribute {
    pub typ: u8,
    pub value: Vec<u8>,
}

/// Sub-key labels of the code peppers (shared with the admin side that makes the codes).
pub const RECOVERY_PEPPER_LABEL: &str = "portcullis recovery codes v1";
/// See [`RECOVERY_PEPPER_LABEL`].
pub const BYPASS_PEPPER_LABEL: &str = "portcullis bypass codes v1";
/// See [`RECOVERY_PEPPER_LABEL`].
pub const SENT_PEPPER_LABEL: &str = "portcullis sent codes v1";
/// See [`RECOVERY_PEPPER_LABEL`].
pub const PUSH_PEPPER_LABEL: &str = "portcullis push tokens v1";

/// The message every failed login shows, so that nothing tells users apart.
pub const GENERIC_FAILURE: &str = "Authentication failed";

/// The message of an answer to a login that expired or already ended: it names the
/// transaction, not the user, so it tells nobody apart.
pub const TRANSACTION_GONE: &str = "This login took too long or has already ended; start again";

/// Errors of the Engine itself (not login failures: those are [`Step::Reject`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The step has to wait for the network (a provider, a directory) or hash a password,
    /// and runs where nothing may block (a batch of code-only logins, see
    /// [`LoginBatcher`]): it is to be run again where blocking is allowed.
    #[error("this step waits for the network or a password hash; it cannot run in a batch")]
    WouldBlock,
    /// A bug: the Engine panicked on this login.
    #[error("internal error: {0}")]
    Internal(String),
}

thread_local! {
    /// Set while this thread decides logins in a batch, where nothing may block.
    static NO_BLOCKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every blocking point refused ([`EngineError::WouldBlock`]).
fn without_blocking<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_BLOCKING.with(|b| b.set(self.0));
        }
    }
    let _reset = Reset(NO_BLOCKING.with(|b| b.replace(true)));
    f()
}

/// Called before anything that waits for the network or hashes a password.
fn blocking_point() -> Result<(), EngineError> {
    if NO_BLOCKING.with(std::cell::Cell::get) {
        Err(EngineError::WouldBlock)
    } else {
        Ok(())
    }
}

/// Settings of the Engine, from the config file.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub totp_window: u8,
    pub transaction_ttl: i64,
    pub max_attempts: u32,
    pub lockout: LockoutConfig,
}

impl EngineSettings {
    /// The Engine's part of the config.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            totp_window: cfg.totp.window,
            transaction_ttl: cfg.transactions.ttl.as_secs() as i64,
            max_attempts: cfg.transactions.max_attempts,
            lockout: cfg.lockout,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            totp_window: TotpConfig::default().window,
            transaction_ttl: TransactionConfig::default().ttl.as_secs() as i64,
            max_attempts: TransactionConfig::default().max_attempts,
            lockout: LockoutConfig::default(),
        }
    }
}

/// The core that decides every login.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: Arc<MasterKey>,
    /// The first factor of tenants without a backend of their own.
    local: Arc<dyn FirstFactor>,
    /// Per-tenant first-factor backends (LDAP, upstream RADIUS).
    first_factors: HashMap<String, Arc<dyn FirstFactor>>,
    /// Per-client overrides, keyed by (channel kind, client name).
    client_first_factors: HashMap<(String, String), Arc<dyn FirstFactor>>,
    settings: EngineSettings,
    recovery_pepper: Zeroizing<[u8; 32]>,
    bypass_pepper: Zeroizing<[u8; 32]>,
    sent_pepper: Zeroizing<[u8; 32]>,
    /// Per-tenant out-of-band code delivery (SMS, e-mail).
    senders: HashMap<(String, FactorKind), (Arc<dyn CodeSender>, DeliverySettings)>,
    /// Per-tenant policy rules, in order.
    policies: HashMap<String, Vec<Rule>>,
    /// Per-tenant second factors accepted at all (`factors`; absent: all).
    allowed_factors: HashMap<String, Vec<String>>,
    /// Per-tenant factor to start first (`default_factor`).
    default_factors: HashMap<String, String>,
    /// Per-tenant external second-factor services (Duo).
    externals: HashMap<String, (Arc<dyn ExternalMfa>, ExternalSettings)>,
    /// Per-tenant push notification channels.
    pushes: HashMap<String, (Arc<dyn crate::push::PushSender>, crate::push::PushSettings)>,
    push_pepper: Zeroizing<[u8; 32]>,
    /// `[http] public_url`, the base of enrolment links (`unenrolled = "enroll"`).
    enroll_base: Option<String>,
    /// Tenants found so far, by name (see [`Engine::tenant`]).
    tenants: std::sync::RwLock<HashMap<String, Tenant>>,
    /// Second-factor checks in progress on this node, per user (see `throttle.rs`).
    checking: throttle::Checking<UserId>,
    /// Password checks in progress on this node, per counted source.
    checking_sources: throttle::Checking<String>,
    /// Answers refused for another binding: warned about once a minute (each is audited).
    foreign_answers: Hushed,
}

/// A warning that is written at most once a minute, with how many were not written since:
/// for events an outsider can repeat at will (each one is in the audit anyway).
#[derive(Debug, Default)]
struct Hushed(std::sync::Mutex<Option<(UnixTime, u64)>>);

impl Hushed {
    /// Whether to write the warning now; if so, how many were held back since the last.
    fn allow(&self, now: UnixTime) -> Option<u64> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_mut() {
            Some((at, held)) if now < *at + 60 => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let skipped = *held;
                *at = now;
                *held = 0;
                Some(skipped)
            }
            None => {
                *last = Some((now, 0));
                Some(0)
            }
        }
    }
}

/// What the first factor established, for the second-factor step.
#[derive(Clone, Copy)]
struct Gate<'a> {
    /// `password` or `delegated`.
    first: &'static str,
    /// Where the user is (for remembered sources).
    source: &'a str,
    unenrolled: Unenrolled,
    decision: &'a Decision,
    /// The user's factors if the login read them already (else they are read).
    factors: Option<&'a [Factor]>,
}

/// What happened, for the audit record.
struct Outcome {
    step: Step,
    reason: String,
    factors: Vec<String>,
}

impl Outcome {
    fn reject(reason: impl Into<String>) -> Self {
        Self::reject_with(reason, GENERIC_FAILURE)
    }

    fn reject_with(reason: impl Into<String>, user_message: &str) -> Self {
        Self {
            step: Step::Reject {
                user_message: user_message.into(),
            },
            reason: reason.into(),
            factors: Vec::new(),
        }
    }
}

impl Engine {
    /// An Engine over `store`, with time from `clock` and secrets under `key`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: Arc<MasterKey>,
        hasher: PasswordHasher,
        settings: EngineSettings,
    ) -> Self {
        let recovery_pepper = key.derive(RECOVERY_PEPPER_LABEL);
        let bypass_pepper = key.derive(BYPASS_PEPPER_LABEL);
        let sent_pepper = key.derive(SENT_PEPPER_LABEL);
        let push_pepper = key.derive(PUSH_PEPPER_LABEL);
        Self {
            store,
            clock,
            key,
            local: Arc::new(LocalPasswords::new(hasher)),
            first_factors: HashMap::new(),
            client_first_factors: HashMap::new(),
            settings,
            recovery_pepper,
            bypass_pepper,
            sent_pepper,
            senders: HashMap::new(),
            policies: HashMap::new(),
            allowed_factors: HashMap::new(),
            default_factors: HashMap::new(),
            externals: HashMap::new(),
            pushes: HashMap::new(),
            push_pepper,
            enroll_base: None,
            tenants: Default::default(),
            checking: Default::default(),
            checking_sources: Default::default(),
            foreign_answers: Hushed::default(),
        }
    }

    /// Let `service` (Duo) own the second factor of `tenant`'s users.
    pub fn set_external(
        &mut self,
        tenant: &str,
        service: Arc<dyn ExternalMfa>,
        settings: ExternalSettings,
    ) {
        self.externals
            .insert(tenant.to_string(), (service, settings));
    }

    /// The policy rules of `tenant`, evaluated in order (first match wins).
    pub fn set_rules(&mut self, tenant: &str, rules: Vec<Rule>) {
        self.policies.insert(tenant.to_string(), rules);
    }

    /// The second factors `tenant` accepts at all (empty: all); rules narrow it further.
    pub fn set_allowed_factors(&mut self, tenant: &str, factors: Vec<String>) {
        if factors.is_empty() {
            self.allowed_factors.remove(tenant);
        } else {
            self.allowed_factors.insert(tenant.to_string(), factors);
        }
    }

    /// The factor `tenant` starts first (`auto` mode) and lists first in the menu.
    pub fn set_default_factor(&mut self, tenant: &str, factor: Option<String>) {
        match factor {
            Some(f) => self.default_factors.insert(tenant.to_string(), f),
            None => self.default_factors.remove(tenant),
        };
    }

    /// Send the codes of `tenant` for the sender's channel (`sms`, `email`) through it.
    pub fn set_sender(
        &mut self,
        tenant: &str,
        sender: Arc<dyn CodeSender>,
        settings: DeliverySettings,
    ) {
        match FactorKind::parse(sender.channel()).filter(|k| k.is_out_of_band()) {
            Some(kind) => {
                self.senders
                    .insert((tenant.to_string(), kind), (sender, settings));
            }
            None => tracing::error!(
                channel = sender.channel(),
                "sender for an unknown channel ignored"
            ),
        }
    }

    /// Check the passwords of `tenant` with `backend` instead of the store's hashes.
    pub fn set_first_factor(&mut self, tenant: &str, backend: Arc<dyn FirstFactor>) {
        self.first_factors.insert(tenant.to_string(), backend);
    }

    /// Check the passwords of one RADIUS client (`channel_kind` "radius") or PAM service
    /// ("pam") with `backend`, whatever its tenant uses.
    pub fn set_client_first_factor(
        &mut self,
        channel_kind: &str,
        client: &str,
        backend: Arc<dyn FirstFactor>,
    ) {
        self.client_first_factors
            .insert((channel_kind.to_string(), client.to_string()), backend);
    }

    /// The backend for a login: the client's override, else the tenant's, else `local`.
    fn first_factor(&self, tenant: &str, channel: &Channel) -> &Arc<dyn FirstFactor> {
        self.client_first_factors
            .get(&(channel.kind().to_string(), channel.client().to_string()))
            .or_else(|| self.first_factors.get(tenant))
            .unwrap_or(&self.local)
    }

    /// Whether logins of `tenant` over `channel` have their first factor checked elsewhere
    /// (`first_factor = "none"`): a password sent along would not be checked.
    pub fn delegates_first_factor(&self, tenant: &str, channel: &Channel) -> bool {
        self.first_factor(tenant, channel).delegated()
    }

    /// Whether the tenant `name` exists (from memory once seen, as for logins).
    pub fn tenant_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self.tenant(name)?.is_some())
    }

    /// The tenant named `name`. Tenants are never renamed or deleted, so one found is kept
    /// in memory (no store read per login); an unknown name is looked up every time (an
    /// admin may create it meanwhile).
    fn tenant(&self, name: &str) -> Result<Option<Tenant>, EngineError> {
        let cached = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let found = self.store.tenant_by_name(name)?;
        if let Some(t) = &found {
            self.tenants
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), t.clone());
        }
        Ok(found)
    }

    /// The store this Engine uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The Engine's time (its injected clock).
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Whether `req` is a code-only login (mode `otp-only`, or a client or service whose
    /// first factor is delegated) that carries a code: one a [`LoginBatcher`] takes.
    pub fn is_code_only(&self, req: &LoginRequest) -> bool {
        !req.credential.is_empty()
            && (req.mode == LoginMode::OtpOnly
                || self.first_factor(&req.tenant, &req.channel).delegated())
    }

    /// Begin a login.
    pub fn start(&self, req: &LoginRequest) -> Result<Step, EngineError> {
        let now = self.clock.now();
        let backend = self.first_factor(&req.tenant, &req.channel).clone();
        // A delegated first factor (`first_factor = "none"`) makes any mode second-factor-only.
        let mode = if backend.delegated() {
            LoginMode::OtpOnly
        } else {
            req.mode
        };
        let outcome = self.start_inner(req, mode, &backend, now)?;
        self.finish(
            now,
            &req.tenant,
            &req.username,
            &req.channel,
            &req.source,
            mode.as_str(),
            outcome,
        )
    }

    /// Continue a login with the user's reply to a prompt.
    pub fn answer(&self, req: &AnswerRequest) -> Result<Step, EngineError> {
        let now = self.clock.now();
        let outcome = self.answer_inner(req, now)?;
        self.finish(
            now,
            &req.tenant,
            &req.username,
            &req.channel,
            &req.source,
            LoginMode::Challenge.as_str(),
            outcome,
        )
    }

    /// Audit decisions (accept/reject); prompts are not decisions.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        now: UnixTime,
        tenant: &str,
        username: &str,
        channel: &Channel,
        source: &str,
        mode: &str,
        outcome: Outcome,
    ) -> Result<Step, EngineError> {
        let result = match &outcome.step {
            Step::Accept { .. } => AuditResult::Accept,
            Step::Reject { .. } => AuditResult::Reject,
            Step::Prompt { txn, .. } | Step::Wait { txn, .. } => {
                tracing::debug!(tenant, username, txn = %txn_id(txn), reason = %outcome.reason, "prompting");
                return Ok(outcome.step);
            }
        };
        let record = AuditRecord {
            time: now,
            tenant: tenant.to_string(),
            username: username.to_string(),
            channel: channel.kind().to_string(),
            client: channel.client().to_string(),
            source: source.to_string(),
            mode: mode.to_string(),
            factors: outcome.factors,
            result,
            reason: outcome.reason,
            transaction: None,
            host: match channel {
                Channel::Pam { host, .. } => Some(host.clone()),
                Channel::Radius { .. } | Channel::Web { .. } => None,
            },
        };
        self.store.append_audit(&record)?;
        decision_log::log_decision(record);
        Ok(outcome.step)
    }

    fn start_inner(
        &self,
        req: &LoginRequest,
        mode: LoginMode,
        backend: &Arc<dyn FirstFactor>,
        now: UnixTime,
    ) -> Result<Outcome, EngineError> {
        if mode != LoginMode::OtpOnly {
            // Every other mode checks a password first.
            blocking_point()?;
        }
        let Some(tenant) = self.tenant(&req.tenant)? else {
            blocking_point()?;
            let _ = self
                .local
                .check(&req.tenant, &req.username, None, &req.credential);
            return Ok(Outcome::reject(format!(
                "tenant '{}' does not exist (check the client's tenant setting)",
                req.tenant
            )));
        };
        // `append`: the readings of the string (at most split::MAX_READINGS). They depend on
        // the string only, never on the user (no enumeration by timing or by count).
        let mut candidates = match mode {
            LoginMode::Append => split::append_candidates(&req.credential, &req.delimiter),
            _ => Vec::new(),
        };
        // With a directory or upstream server every reading is a bind or request there, and
        // failures count toward its lockout: when the user typed the delimiter
        // (`password,code`), only that reading is tried.
        let explicit_only = mode == LoginMode::Append
            && backend.name() != "local"
            && candidates.first().is_some_and(|c| {
                [
                    c.password.as_slice(),
                    req.delimiter.as_bytes(),
                    c.code.as_bytes(),
                ]
                .concat()
                    == req.credential.as_slice()
            });
        if explicit_only {
            candidates.truncate(1);
        }
        // The passwords this login may check: each one refused counts against the source.
        let checks = match mode {
            LoginMode::OtpOnly => 0,
            LoginMode::Append if !explicit_only => {
                (candidates.len() + 1).min(split::MAX_PASSWORD_CHECKS)
            }
            _ => 1,
        } as u32;
        // Held until the login's password failures (if any) are counted.
        let _source_check = if mode == LoginMode::OtpOnly {
            None
        } else {
            match self.source_gate(&tenant, req, checks, now)? {
                Ok(guard) => guard,
                Err(blocked) => return Ok(blocked),
            }
        };
        // The factors come with the user: one store turn, and the second-factor checks
        // of append and otp-only logins use them.
        let (user, factors) = match self.store.user_with_factors(tenant.id, &req.username)? {
            Some((u, f)) => (Some(u), f),
            None => (None, Vec::new()),
        };
        let snapshot = user.as_ref().map(|u| u.id);
        // Each reading refused is a wrong password to the backend (a failed bind that a
        // directory counts towards the account's lockout, a hash computed in vain): the
        // readings with the user's code lengths go first. Their number stays the string's.
        if candidates.len() > 1 {
            split::prefer_code_lengths(&mut candidates, &split::code_lengths(&factors));
        }
        if let Some(u) = user.as_ref().filter(|_| mode != LoginMode::OtpOnly) {
            // A locked or throttled user is refused before the password is checked: after
            // it, the refusal would confirm the password (otp-only logins check no password
            // and meet the same gate before their code).
            if let Err(mut blocked) = self.throttle_state(&tenant, u, now)? {
                // With local hashes it still takes a wrong password's time, so that timing
                // does not single out the locked: the user's own hash, verified as often
                // as a wrong string would have been, the results thrown away unread.
                if backend.name() == "local" {
                    let mut readings: Vec<&[u8]> = Vec::new();
                    readings.extend(candidates.iter().map(|c| c.password.as_slice()));
                    readings.push(&req.credential);
                    for password in readings {
                        let _ = self
                            .local
                            .check(&req.tenant, &req.username, Some(u), password);
                    }
                }
                blocked.reason.push_str(" (refused whatever the password)");
                return Ok(blocked);
            }
        }
        match mode {
            LoginMode::Challenge | LoginMode::Auto => {
                let info = match self.check_password(
                    backend,
                    &tenant,
                    req,
                    user.as_ref(),
                    &req.credential,
                ) {
                    Ok(info) => info,
                    Err(failed) => {
                        let refused = u32::from(!failed.unavailable);
                        return self.wrong_password(&tenant, req, failed, refused, now);
                    }
                };
                self.password_then_prompt(backend, &tenant, req, user, &info, now)
            }
            LoginMode::Append => {
                // Every reading of the string, then the whole string as the password: the
                // number of password checks depends on the string only, never on the user
                // (no enumeration by timing); each one refused counts against the source.
                let mut wrong = PasswordFailure {
                    reason: String::from("wrong password"),
                    unavailable: false,
                };
                let mut refused = 0;
                for cand in &candidates {
                    match self.check_password(backend, &tenant, req, user.as_ref(), &cand.password)
                    {
                        Ok(info) => {
                            let user = match self.follow_directory(
                                &tenant,
                                backend,
                                &req.username,
                                user,
                                &info,
                                now,
                            )? {
                                Ok(u) => u,
                                Err(r) => return Ok(Outcome::reject(r)),
                            };
                            let attrs = &info.reply_attributes;
                            let d = self.decide_login(&tenant, &user, req, now);
                            if let Some(stop) = self.stop_after_first_factor(
                                &d,
                                &user,
                                "password",
                                &req.source,
                                now,
                            )? {
                                return Ok(carry(stop, attrs));
                            }
                            if let Some(o) = self.push_word(
                                &tenant, &user, req, &cand.code, "password", &d, attrs, now,
                            )? {
                                return Ok(carry(o, attrs));
                            }
                            if split::is_factor_word(&cand.code)
                                && !self.serves_word(&tenant, &user, &cand.code, &d)?
                            {
                                // `password,push` for a factor this tenant cannot serve
                                // (push approval comes later): ask for a code instead.
                                let outcome = self.begin_second_factor(
                                    &tenant, &user, req, now, "password", &d, attrs,
                                )?;
                                return Ok(carry(outcome, attrs));
                            }
                            let outcome = self.second_factor_once(
                                &tenant,
                                &user,
                                &cand.code,
                                now,
                                Gate {
                                    first: "password",
                                    source: &req.source,
                                    unenrolled: req.unenrolled,
                                    decision: &d,
                                    // Not if the user was created meanwhile.
                                    factors: (snapshot == Some(user.id))
                                        .then_some(factors.as_slice()),
                                },
                            )?;
                            return Ok(carry(outcome, attrs));
                        }
                        // A backend that cannot answer will not answer the next reading
                        // either; do not make the NAS wait for each.
                        Err(failed) if failed.unavailable => {
                            return self.wrong_password(&tenant, req, failed, refused, now)
                        }
                        Err(failed) => {
                            refused += 1;
                            wrong = failed;
                        }
                    }
                }
                if explicit_only {
                    return self.wrong_password(&tenant, req, wrong, refused, now);
                }
                // No split passed the first factor: the password may contain the delimiter
                // or end in digits, or the user typed no code. Whole string as the password,
                // then a challenge asks for the code.
                match self.check_password(backend, &tenant, req, user.as_ref(), &req.credential) {
                    Ok(info) => self.password_then_prompt(backend, &tenant, req, user, &info, now),
                    Err(failed) if candidates.is_empty() || failed.unavailable => {
                        let refused = refused + u32::from(!failed.unavailable);
                        self.wrong_password(&tenant, req, failed, refused, now)
                    }
                    Err(_) => self.wrong_password(&tenant, req, wrong, refused + 1, now),
                }
            }
            LoginMode::OtpOnly => {
                // The first factor was checked elsewhere; the audit says so.
                let user = match user {
                    Some(u) if !u.disabled => u,
                    Some(_) => return Ok(Outcome::reject("user is disabled")),
                    None => return Ok(Outcome::reject("unknown user")),
                };
                let d = self.decide_login(&tenant, &user, req, now);
                if let Some(stop) =
                    self.stop_after_first_factor(&d, &user, "delegated", &req.source, now)?
                {
                    return Ok(stop);
                }
                if req.credential.is_empty() {
                    return self.begin_second_factor(
                        &tenant,
                        &user,
                        req,
                        now,
                        "delegated",
                        &d,
                        &[],
                    );
                }
                let code =
                    Zeroizing::new(String::from_utf8_lossy(&req.credential).trim().to_string());
                if let Some(o) =
                    self.push_word(&tenant, &user, req, &code, "delegated", &d, &[], now)?
                {
                    return Ok(o);
                }
                let mut outcome = self.second_factor_once(
                    &tenant,
                    &user,
                    &code,
                    now,
                    Gate {
                        first: "delegated",
                        source: &req.source,
                        unenrolled: req.unenrolled,
                        decision: &d,
                        factors: Some(&factors),
                    },
                )?;
                if backend.delegated() {
                    outcome.reason = format!(
                        "{} (first factor delegated: first_factor = \"none\")",
                        outcome.reason
                    );
                }
                Ok(outcome)
            }
        }
    }

    /// The Reject of a login whose password did not pass (`failed`: the last refusal, or an
    /// unavailable backend); the `refused` passwords it checked (one per reading of an
    /// `append` string, none that an unavailable backend could not answer) count against
    /// the login's source.
    fn wrong_password(
        &self,
        tenant: &Tenant,
        req: &LoginRequest,
        failed: PasswordFailure,
        refused: u32,
        now: UnixTime,
    ) -> Result<Outcome, EngineError> {
        self.count_source_failures(tenant, req, refused, now)?;
        Ok(Outcome::reject(failed.reason))
    }

    /// Checks the first factor with the login's backend.
    fn check_password(
        &self,
        backend: &Arc<dyn FirstFactor>,
        tenant: &Tenant,
        req: &LoginRequest,
        user: Option<&User>,
        password: &[u8],
    ) -> Result<DirectoryInfo, PasswordFailure> {
        let nas_identifier = match &req.channel {
            Channel::Radius { nas_identifier, .. } => nas_identifier.as_deref(),
            Channel::Pam { host, .. } => Some(host.as_str()),
            Channel::Web { .. } => None,
        };
        let ctx = CheckContext {
            tenant: &tenant.name,
            username: &req.username,
            client: req.channel.client(),
            nas_identifier,
            source: &req.source,
        };
        match backend.check_in(&ctx, user, password) {
            FirstFactorResult::Accepted(info) => Ok(info),
            FirstFactorResult::Rejected(reason) => Err(PasswordFailure {
                reason: if backend.name() == "local" {
                    reason
                } else {
                    format!("first factor ({}): {reason}", backend.name())
                },
                unavailable: false,
            }),
            FirstFactorResult::Unavailable(reason) => Err(PasswordFailure {
                reason: format!("first factor ({}) unavailable: {reason}", backend.name()),
                unavailable: true,
            }),
        }
    }

    /// After a backend accepted the password: the store's user follows the directory.
    /// Creates the user on first login when the backend does so, and updates groups, e-mail
    /// and phone when they changed. `Err` is the audit reason of a rejection.
    /// After a good password (challenge mode, or append mode's whole-string reading): the
    /// directory's view of the user, the policy decision, then the prompt for the code.
    fn password_then_prompt(
        &self,
        backend: &Arc<dyn FirstFactor>,
        tenant: &Tenant,
        req: &LoginRequest,
        user: Option<User>,
        info: &DirectoryInfo,
        now: UnixTime,
    ) -> Result<Outcome, EngineError> {
        let user = match self.follow_directory(tenant, backend, &req.username, user, info, now)? {
            Ok(u) => u,
            Err(reason) => return Ok(Outcome::reject(reason)),
        };
        let attrs = &info.reply_attributes;
        let d = self.decide_login(tenant, &user, req, now);
        if let Some(stop) = self.stop_after_first_factor(&d, &user, "password", &req.source, now)? {
            return Ok(carry(stop, attrs));
        }
        let outcome = self.begin_second_factor(tenant, &user, req, now, "password", &d, attrs)?;
        Ok(carry(outcome, attrs))
    }

    fn follow_directory(
        &self,
        tenant: &Tenant,
        backend: &Arc<dyn FirstFactor>,
        username: &str,
        user: Option<User>,
        info: &DirectoryInfo,
        now: UnixTime,
    ) -> Result<Result<User, String>, EngineError> {
        let mut user = match user {
            Some(u) => u,
            None if backend.creates_users() => {
                // A directory finds "ALICE" or "alice " as alice's entry and binds with her
                // password; a new store user of that spelling would have none of alice's
                // factors (and could enrol new ones). Only the spelling the store knows logs
                // in; the store checks and creates in one step, so that two first logins of
                // two spellings at once do not both create.
                let new = NewUser {
                    tenant_id: tenant.id,
                    name: username.to_string(),
                    password_hash: None,
                    email: info.email.clone(),
                    phone: info.phone.clone(),
                    groups: info.groups.clone().unwrap_or_default(),
                };
                let realm_free = |n: &str| directory_fold(crate::first_factor::without_realm(n));
                let fold: &dyn Fn(&str) -> String = if backend.realm_forms_alike() {
                    &realm_free
                } else {
                    &directory_fold
                };
                match self.store.create_user_unless_alike(&new, now, fold) {
                    // Another login (on any node) created this very name a moment ago.
                    Ok(Err(known)) if known == username => {
                        match self.store.user_by_name(tenant.id, username)? {
                            Some(u) => u,
                            None => return Ok(Err("unknown user".into())),
                        }
                    }
                    Ok(Err(known)) => {
                        return Ok(Err(format!(
                            "user name '{username}' is not the stored user '{known}' (names are matched exactly, but the directory ignores case, width and spaces{}): log in as '{known}'",
                            if backend.realm_forms_alike() { ", and a domain or realm" } else { "" }
                        )));
                    }
                    Ok(Ok(u)) => {
                        tracing::info!(tenant = %tenant.name, user = %username, backend = backend.name(),
                            "created the user on first login (the store follows the directory)");
                        return Ok(Ok(u));
                    }
                    // Another node created it a moment ago.
                    Err(StoreError::AlreadyExists { .. }) => {
                        match self.store.user_by_name(tenant.id, username)? {
                            Some(u) => u,
                            None => return Ok(Err("unknown user".into())),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                return Ok(Err(format!(
                    "unknown user (first factor {} accepted, but the user is not in the store and this backend does not create users)",
                    backend.name()
                )))
            }
        };
        if user.disabled {
            return Ok(Err("user is disabled".into()));
        }
        let groups = info.groups.as_ref().unwrap_or(&user.groups);
        let email = info.email.as_ref().or(user.email.as_ref());
        let phone = info.phone.as_ref().or(user.phone.as_ref());
        if *groups != user.groups || email != user.email.as_ref() || phone != user.phone.as_ref() {
            let (groups, email, phone) = (groups.clone(), email.cloned(), phone.cloned());
            self.store
                .set_directory_info(user.id, email.as_deref(), phone.as_deref(), &groups)?;
            user.groups = groups;
            user.email = email;
            user.phone = phone;
        }
        Ok(Ok(user))
    }

    /// After the password in challenge mode: prompt for the code, if the user can give one.
    /// `reply_attributes` (upstream pass-through) wait with the transaction.
    #[allow(clippy::too_many_arguments)]
    fn begin_second_factor(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &LoginRequest,
        now: UnixTime,
        first: &'static str,
        d: &Decision,
        reply_attributes: &[ReplyAttribute],
    ) -> Result<Outcome, EngineError> {
        if let Some(blocked) = self.throttle_blocks(tenant, user, now)? {
            return Ok(blocked);
        }
        let new_txn = || self.put_new_txn(tenant, user, req, first, now, reply_attributes);
        if let Some(o) = self.external_start(
            tenant,
            user,
            first,
            &req.source,
            req.mode,
            None,
            &req.prompt,
            &new_txn,
        )? {
            return Ok(o);
        }
        if let Some(o) = self.enroll_start(tenant, user, req, first, d, now, reply_attributes)? {
            return Ok(o);
        }
        let factors = self.store.factors_of(user.id)?;
        if let Some(stop) =
            self.no_usable_factor(tenant, user, &factors, first, req.unenrolled, d)?
        {
            return Ok(stop);
        }
        let mut methods = self.usable_methods(&tenant.name, &factors, d);
        // The default factor (the rule's, else the tenant's) goes first in the menu and is
        // what `auto` starts.
        if let Some(i) = d
            .default_factor
            .as_deref()
            .and_then(|f| methods.iter().position(|m| m.method.serves(f)))
        {
            let chosen = methods.remove(i);
            methods.insert(0, chosen);
            if req.mode == LoginMode::Auto {
                let txn = self.put_new_txn(tenant, user, req, first, now, reply_attributes)?;
                return self.start_method(
                    tenant,
                    user,
                    (txn_id(&txn), 0, first, now + self.settings.transaction_ttl),
                    (req.channel.client(), &req.source, &req.prompt),
                    &methods[0],
                    false,
                    now,
                );
            }
        }
        // The self-service pages take the code in the same form as the password: nothing
        // is pushed or sent from there (the user signs in with an app, recovery or bypass
        // code).
        let sends_at_once = !matches!(req.channel, Channel::Web { .. });
        // Push at once when the client wants it (`auto`) or when it is the only way.
        if let Some(push) = methods.iter().find(|m| m.method == menu::Method::Push) {
            if sends_at_once && (req.mode == LoginMode::Auto || methods.len() == 1) {
                if let Some(f) = &push.factor {
                    let txn = self.put_new_txn(tenant, user, req, first, now, reply_attributes)?;
                    return self.begin_push(
                        tenant,
                        user,
                        f,
                        (txn_id(&txn), 0, now + self.settings.transaction_ttl),
                        (req.channel.client(), &req.source),
                        first,
                        (true, req.mode != LoginMode::Auto),
                        now,
                    );
                }
            }
        }
        if methods.len() >= 2 {
            let txn = self.put_new_txn(tenant, user, req, first, now, reply_attributes)?;
            return Ok(Outcome {
                step: Step::Prompt {
                    txn,
                    text: MENU_HEADING.into(),
                    echo: false,
                    expects: Expects::Choice,
                    choices: menu::choices(&methods),
                },
                reason: format!("first factor ok; factor menu offered ({})", d.label()),
                factors: vec![first.into()],
            });
        }
        // Codes that can be sent: with no other way to give a code, an SMS goes out at
        // once; otherwise the prompt offers them ("type sms").
        let mut text = req.prompt.clone();
        let mut offers = Vec::new();
        let mut sms_now = None;
        let has_other = self.has_code_factor_besides_oob(user, &factors, d)?;
        for kind in OUT_OF_BAND {
            if let Some(f) = self.oob_factor(&tenant.name, &factors, kind, d) {
                if kind == FactorKind::Sms && !has_other && sends_at_once {
                    sms_now = Some(f);
                } else {
                    offers.push(kind.as_str());
                }
            }
        }
        if let Some(sms) = sms_now {
            let sent = self.send_code(&tenant.name, user, &sms)?;
            if !matches!(sent, SendOutcome::Sent { .. }) && offers.is_empty() {
                return Ok(Outcome::reject_with(sent.reason(), &sent.user_text()));
            }
            text = format!("{} Enter it:", sent.user_text());
        }
        if !offers.is_empty() {
            text = format!(
                "{text} (or type {} to get a code sent)",
                offers.join(" or ")
            );
        }
        let txn = self.put_new_txn(tenant, user, req, first, now, reply_attributes)?;
        Ok(Outcome {
            step: Step::Prompt {
                txn,
                text,
                echo: false,
                expects: Expects::Code,
                choices: Vec::new(),
            },
            reason: format!("first factor ok; code asked ({})", d.label()),
            factors: vec![first.into()],
        })
    }

    /// Whether `word` (push, phone, sms, email) typed after the password names something
    /// this tenant can do for this user now.
    fn serves_word(
        &self,
        tenant: &Tenant,
        user: &User,
        word: &str,
        d: &Decision,
    ) -> Result<bool, EngineError> {
        if self.external(&tenant.name).is_some() {
            return Ok(true);
        }
        match keyword(word) {
            Some(kind) => {
                let factors = self.store.factors_of(user.id)?;
                Ok(self.oob_factor(&tenant.name, &factors, kind, d).is_some())
            }
            None => Ok(false),
        }
    }

    /// `password,push` (append) or `push` (otp-only): send a push and wait for it, when
    /// the user has push and no external service owns the second factor.
    #[allow(clippy::too_many_arguments)]
    fn push_word(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &LoginRequest,
        word: &str,
        first: &'static str,
        d: &Decision,
        reply_attributes: &[ReplyAttribute],
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        if !word.trim().eq_ignore_ascii_case("push") || self.external(&tenant.name).is_some() {
            return Ok(None);
        }
        if !self.pushes.contains_key(&tenant.name) {
            return Ok(None);
        }
        let factors = self.store.factors_of(user.id)?;
        let Some(f) = self.push_factor(&tenant.name, &factors, d) else {
            return Ok(None);
        };
        if let Some(blocked) = self.throttle_blocks(tenant, user, now)? {
            return Ok(Some(blocked));
        }
        let txn = self.put_new_txn(tenant, user, req, first, now, reply_attributes)?;
        self.begin_push(
            tenant,
            user,
            &f,
            (txn_id(&txn), 0, now + self.settings.transaction_ttl),
            (req.channel.client(), &req.source),
            first,
            (false, false),
            now,
        )
        .map(Some)
    }

    /// Store a new transaction for the prompt after the first factor; its reference.
    /// `reply_attributes` (upstream pass-through) wait in it for the final Accept.
    fn put_new_txn(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &LoginRequest,
        first: &str,
        now: UnixTime,
        reply_attributes: &[ReplyAttribute],
    ) -> Result<String, EngineError> {
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = data_encoding::HEXLOWER.encode(&raw);
        self.store.put_transaction(&Transaction {
            id: id.clone(),
            tenant_id: tenant.id,
            user_id: user.id,
            username: user.name.clone(),
            client: req.channel.binding().into_owned(),
            source: req.source.clone(),
            first_factor: first.to_string(),
            reply_attributes: reply_attributes.to_vec(),
            step: 0,
            attempts: 0,
            created_at: now,
            expires_at: now + self.settings.transaction_ttl,
        })?;
        Ok(txn_ref(&id, 0))
    }

    /// Whether the user can give a code (allowed by `d`) without one being sent.
    fn has_code_factor_besides_oob(
        &self,
        user: &User,
        factors: &[Factor],
        d: &Decision,
    ) -> Result<bool, EngineError> {
        let other = factors.iter().any(|f| {
            f.state == FactorState::Confirmed
                && !f.kind.is_out_of_band()
                && d.allows(f.kind.as_str())
        });
        Ok(other
            || (d.allows("recovery") && self.store.unused_recovery_codes(user.id)? > 0)
            || (d.allows("bypass") && self.store.has_bypass_code(user.id, self.clock.now())?))
    }

    /// Whether the user holds a factor that `d` accepts (e-mail only counts beside
    /// another factor, so it never makes a user usable on its own).
    fn has_usable_factor(
        &self,
        tenant: &Tenant,
        user: &User,
        factors: &[Factor],
        d: &Decision,
    ) -> Result<bool, EngineError> {
        Ok(self.has_code_factor_besides_oob(user, factors, d)?
            || self
                .oob_factor(&tenant.name, factors, FactorKind::Sms, d)
                .is_some())
    }

    /// A user without a factor the decision accepts: the unenrolled setting applies to users
    /// with no factor at all; a rule that asks for factors the user lacks always rejects.
    #[allow(clippy::too_many_arguments)]
    fn no_usable_factor(
        &self,
        tenant: &Tenant,
        user: &User,
        factors: &[Factor],
        first: &str,
        unenrolled: Unenrolled,
        d: &Decision,
    ) -> Result<Option<Outcome>, EngineError> {
        if self.has_usable_factor(tenant, user, factors, d)? {
            return Ok(None);
        }
        // `unenrolled` is for users who enrolled nothing. A user whose factors cannot be
        // used right now (an SMS factor while the tenant has no SMS sender, an e-mail
        // factor alone) is not one of them: letting them in on the password alone (or
        // handing out an enrolment link) would bypass the factor they chose.
        let enrolled: Vec<&str> = factors
            .iter()
            .filter(|f| f.state == FactorState::Confirmed)
            .map(|f| f.kind.as_str())
            .collect();
        if d.factors.is_empty() && !enrolled.is_empty() {
            return Ok(Some(Outcome::reject_with(
                format!(
                    "the user's factors ({}) cannot be used for this login (is the tenant's sender for them configured?)",
                    enrolled.join(", ")
                ),
                "Your second factor cannot be used right now; ask your administrator",
            )));
        }
        if d.factors.is_empty() {
            return Ok(Some(unenrolled_outcome(user, first, unenrolled)));
        }
        Ok(Some(Outcome::reject_with(
            format!(
                "{} asks for {} and the user has none of them",
                d.label(),
                d.factors.join("/")
            ),
            "This login needs a second factor you have not enrolled; ask your administrator",
        )))
    }

    /// Append mode: the code came with the password; one try.
    fn second_factor_once(
        &self,
        tenant: &Tenant,
        user: &User,
        code: &str,
        now: UnixTime,
        gate: Gate<'_>,
    ) -> Result<Outcome, EngineError> {
        let Gate {
            first,
            source,
            unenrolled,
            decision: d,
            factors,
        } = gate;
        let streak = match self.throttle_gate(tenant, user, now)? {
            Ok(streak) => streak,
            Err(blocked) => return Ok(blocked),
        };
        let no_txn = || Ok(String::new());
        if let Some(o) = self.external_start(
            tenant,
            user,
            first,
            source,
            LoginMode::Append,
            Some(code),
            "",
            &no_txn,
        )? {
            return Ok(o);
        }
        // One read of the user's factors serves every check of this login.
        let factors = match factors {
            Some(f) => std::borrow::Cow::Borrowed(f),
            None => std::borrow::Cow::Owned(self.store.factors_of(user.id)?),
        };
        if let Some(stop) = self.no_usable_factor(tenant, user, &factors, first, unenrolled, d)? {
            return Ok(stop);
        }
        // `password,sms`: send a code; the user logs in again with it (a NAS in append
        // mode cannot show a prompt).
        if let Some(kind) = keyword(code) {
            if let Some(f) = self.oob_factor(&tenant.name, &factors, kind, d) {
                let sent = self.send_code(&tenant.name, user, &f)?;
                let message = match sent {
                    SendOutcome::Sent { .. } => format!(
                        "{} Log in again with your password followed by the code.",
                        sent.user_text()
                    ),
                    _ => sent.user_text(),
                };
                return Ok(Outcome::reject_with(sent.reason(), &message));
            }
        }
        Ok(
            match self.check_code(tenant, user, &factors, code, now, d, streak)? {
                CodeCheck::Accepted { factor } => {
                    self.remember_if_asked(d, user, source, now)?;
                    accepted(user, first, factor, d)
                }
                failed => Outcome::reject(failed.reason()),
            },
        )
    }

    fn answer_inner(&self, req: &AnswerRequest, now: UnixTime) -> Result<Outcome, EngineError> {
        let Some((id, step)) = parse_txn_ref(&req.txn) else {
            return Ok(Outcome::reject("malformed transaction reference (State)"));
        };
        let Some(tenant) = self.tenant(&req.tenant)? else {
            return Ok(Outcome::reject(format!(
                "tenant '{}' does not exist",
                req.tenant
            )));
        };
        // The store takes the step only for the tenant, user, client and source the login
        // was started for. An answer from anyone else (the State travels in cleartext) is
        // refused and audited, and changes nothing: the owner's login stays answerable.
        let bound_to = req.channel.binding();
        let binding = TxnBinding {
            tenant_id: tenant.id,
            username: &req.username,
            client: &bound_to,
            source: &req.source,
        };
        let txn = match self.store.take_transaction(id, step, &binding, now)? {
            TakenTransaction::Taken(txn) => txn,
            TakenTransaction::OtherBinding => {
                if let Some(not_logged) = self.foreign_answers.allow(now) {
                    tracing::warn!(tenant = %req.tenant, user = %req.username, source = %req.source,
                        txn = %id, not_logged,
                        "answer to a transaction of another user, client or source refused (at most one line a minute; every one is audited)");
                }
                return Ok(Outcome::reject(
                    "transaction belongs to another user, client or source (answer refused; the login stays open for its own user)",
                ));
            }
            TakenTransaction::Gone => {
                return Ok(Outcome::reject_with(
                    "transaction unknown, expired or already answered",
                    TRANSACTION_GONE,
                ))
            }
        };
        let user = match self.store.user_by_name(tenant.id, &req.username)? {
            Some(u) if u.id == txn.user_id && !u.disabled => u,
            _ => {
                self.store.delete_transaction(&txn.id)?;
                return Ok(Outcome::reject(
                    "user was removed or disabled during the login",
                ));
            }
        };
        let streak = match self.throttle_gate(&tenant, &user, now)? {
            Ok(streak) => streak,
            Err(blocked) => {
                self.store.delete_transaction(&txn.id)?;
                return Ok(blocked);
            }
        };
        // The rules are applied again: the user's groups or the time may have changed. A
        // started login is never downgraded: skip_mfa here still asks for the code.
        let d = self.decide(
            &tenant,
            &user,
            &req.channel,
            &req.source,
            req.source_limited,
            now,
        );
        if d.action == crate::policy::Action::Deny {
            self.store.delete_transaction(&txn.id)?;
            return Ok(Outcome::reject(d.deny_reason()));
        }
        let code = String::from_utf8_lossy(&req.answer).trim().to_string();
        let code = Zeroizing::new(code);
        if let Some(o) = self.enroll_answer(&tenant, &user, &txn, &code, &d, now)? {
            return Ok(o);
        }
        if let Some(push) = self.store.push_of_transaction(&txn.id)? {
            if push.detail.as_deref() != Some(push::NOT_SENT) {
                match self.poll_push(
                    &user,
                    &push,
                    &code,
                    txn.first_factor(),
                    &req.source,
                    &d,
                    now,
                )? {
                    push::PushPoll::Done(o) => return Ok(carry(o, &txn.reply_attributes)),
                    push::PushPoll::Waiting(text) => {
                        return Ok(Outcome {
                            step: Step::Wait {
                                txn: txn_ref(&txn.id, txn.step),
                                text,
                                poll_after_ms: POLL_AFTER_MS,
                                started: false,
                            },
                            reason: "push still pending".into(),
                            factors: vec![txn.first_factor().to_string()],
                        })
                    }
                    push::PushPoll::Typed => {}
                }
            }
        }
        // The self-service pages send nothing: a menu pick or `sms` typed in their code
        // field is checked as the code it is not (see `sends_at_once`).
        let sends = !matches!(req.channel, Channel::Web { .. });
        if sends {
            if let Some(o) = self.menu_answer(&tenant, &user, &txn, req, &code, &d, now)? {
                return Ok(o);
            }
        }
        // On the self-service pages only a passcode goes to Duo: its method words (`push`,
        // `sms`, `phone`, a menu number) would push or text from an internet-facing form.
        let passcode = code.len() >= 6 && code.bytes().all(|b| b.is_ascii_digit());
        let external = if sends || passcode {
            self.external_answer(
                &tenant,
                &user,
                txn.first_factor(),
                &req.source,
                &code,
                &txn.id,
                txn.step,
            )?
        } else {
            None
        };
        if let Some(o) = external {
            if let Step::Prompt { .. } = o.step {
                if let Some(ended) = self.use_attempt(&txn.id, &o.reason)? {
                    return Ok(ended);
                }
            } else {
                self.store.delete_transaction(&txn.id)?;
            }
            return Ok(carry(o, &txn.reply_attributes));
        }
        let factors = self.store.factors_of(user.id)?;
        if let Some(kind) = keyword(&code).filter(|_| sends) {
            if let Some(f) = self.oob_factor(&tenant.name, &factors, kind, &d) {
                // Asking for a code is not a wrong answer: no attempt is counted.
                let sent = self.send_code(&tenant.name, &user, &f)?;
                return Ok(Outcome {
                    step: Step::Prompt {
                        txn: txn_ref(&txn.id, txn.step),
                        text: format!("{} Enter the code:", sent.user_text()),
                        echo: false,
                        expects: Expects::Code,
                        choices: Vec::new(),
                    },
                    reason: sent.reason(),
                    factors: vec![txn.first_factor().to_string()],
                });
            }
        }
        if code.is_empty() {
            // Nothing typed (Enter by mistake, a NAS that sends an empty answer): not a
            // guess, so the user's failures stay as they are; it uses one of this login's
            // attempts, so that a login cannot be kept open by empty answers.
            let reason = "no code entered";
            return Ok(match self.use_attempt(&txn.id, reason)? {
                Some(ended) => ended,
                None => ask_again(&txn, format!("No code entered. {}", req.prompt), reason),
            });
        }
        match self.check_code(&tenant, &user, &factors, &code, now, &d, streak)? {
            CodeCheck::Accepted { factor } => {
                self.store.delete_transaction(&txn.id)?;
                self.remember_if_asked(&d, &user, &req.source, now)?;
                Ok(carry(
                    accepted(&user, txn.first_factor(), factor, &d),
                    &txn.reply_attributes,
                ))
            }
            failed => {
                let reason = failed.reason();
                if let Some(ended) = self.use_attempt(&txn.id, &reason)? {
                    return Ok(ended);
                }
                // A throttle that the failure just switched on ends the login too.
                if let Some(blocked) = self.throttle_blocks(&tenant, &user, now)? {
                    self.store.delete_transaction(&txn.id)?;
                    return Ok(blocked);
                }
                let text = format!("Wrong code, try again. {}", req.prompt);
                Ok(ask_again(&txn, text, &reason))
            }
        }
    }

    /// Counts an answer that did not log in against the login's attempts: the Reject that
    /// ends the login once they are used up (audited with `reason`), else `None`.
    fn use_attempt(&self, txn: &str, reason: &str) -> Result<Option<Outcome>, EngineError> {
        let attempts = self.store.add_transaction_attempt(txn)?;
        if attempts < self.settings.max_attempts {
            return Ok(None);
        }
        self.store.delete_transaction(txn)?;
        Ok(Some(Outcome::reject(format!(
            "{reason} ({attempts} of {} attempts; login ended)",
            self.settings.max_attempts
        ))))
    }
}

/// The same transaction's prompt for a code again, headed by `text`.
fn ask_again(txn: &Transaction, text: String, reason: &str) -> Outcome {
    Outcome {
        step: Step::Prompt {
            txn: txn_ref(&txn.id, txn.step),
            text,
            echo: false,
            expects: Expects::Code,
            choices: Vec::new(),
        },
        reason: reason.into(),
        factors: vec![txn.first_factor().to_string()],
    }
}

/// The heading of the factor menu.
pub const MENU_HEADING: &str = "Choose a second factor (or enter a code):";

/// A first factor that did not pass: the audit reason, and whether the backend could not
/// answer at all (then trying another reading of an `append` credential is pointless).
struct PasswordFailure {
    reason: String,
    unavailable: bool,
}

/// Adds the first factor's reply attributes (upstream pass-through) to an Accept.
fn carry(mut outcome: Outcome, attrs: &[ReplyAttribute]) -> Outcome {
    if let Step::Accept {
        reply_attributes, ..
    } = &mut outcome.step
    {
        reply_attributes.extend(attrs.iter().cloned());
    }
    outcome
}

fn accepted(user: &User, first: &str, factor: &str, d: &Decision) -> Outcome {
    Outcome {
        step: Step::Accept {
            factors_used: vec![first.into(), factor.into()],
            groups: user.groups.clone(),
            reply_attributes: Vec::new(),
        },
        // Joined, not formatted: every accepted login makes it (format! costs about a
        // thousand instructions more on the thread that decides code-only logins).
        reason: [first, " and ", factor, " ok; ", &d.label()].concat(),
        factors: vec![first.into(), factor.into()],
    }
}

fn unenrolled_outcome(user: &User, first: &str, unenrolled: Unenrolled) -> Outcome {
    match unenrolled {
        // `enroll` reaches here only where no link can be given (append mode's single
        // request, no public_url, a tenant or rule without TOTP).
        Unenrolled::Deny | Unenrolled::Enroll => Outcome::reject_with(
            "no confirmed second factor enrolled",
            "No second factor is enrolled for this account; ask your administrator",
        ),
        Unenrolled::Allow => Outcome {
            step: Step::Accept {
                factors_used: vec![first.into()],
                groups: user.groups.clone(),
                reply_attributes: Vec::new(),
            },
            reason: "no second factor enrolled; allowed without one (unenrolled = allow)".into(),
            factors: vec![first.into()],
        },
    }
}

/// `id.step`, the reference a prompt carries (RADIUS State).
fn txn_ref(id: &str, step: u32) -> String {
    format!("{id}.{step}")
}

fn txn_id(r: &str) -> &str {
    r.split('.').next().unwrap_or("")
}

/// A user name as directories compare names (LDAP's caseIgnoreMatch, Active Directory):
/// compatibility-normalized (full-width letters, the Kelvin sign), case-folded, with runs
/// of spaces as one and none around it.
fn directory_fold(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lower: String = name.nfkc().flat_map(char::to_lowercase).collect();
    let folded: String = lower.nfkc().collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The transaction a step's reference (`txn` of a Prompt or Wait) belongs to, for front
/// ends that wait for a push decision on it.
pub fn transaction_of(reference: &str) -> Option<&str> {
    parse_txn_ref(reference).map(|(id, _)| id)
}

/// Whether `state` has the shape of a prompt's reference (a RADIUS State we issued):
/// cheap, no store lookup. Front ends use it to give started logins priority under load
/// without letting any State-carrying request jump the queue.
pub fn is_transaction_reference(state: &[u8]) -> bool {
    std::str::from_utf8(state)
        .ok()
        .and_then(parse_txn_ref)
        .is_some()
}

fn parse_txn_ref(r: &str) -> Option<(&str, u32)> {
    let (id, step) = r.split_once('.')?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((id, step.parse().ok()?))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hushed_tests {
    use super::Hushed;

    #[test]
    fn a_hushed_warning_is_written_once_a_minute_with_the_count_held_back() {
        let h = Hushed::default();
        assert_eq!(h.allow(1_000), Some(0));
        for t in 1_001..1_060 {
            assert_eq!(h.allow(t), None, "at {t}");
        }
        assert_eq!(h.allow(1_060), Some(59));
        assert_eq!(h.allow(1_061), None);
        assert_eq!(h.allow(2_000), Some(1));
    }
}
