//! The Engine: one login = one transaction of steps.
//!
//! Front ends (RADIUS, PAM) only translate: they call [`Engine::start`] with what the user
//! gave first, then [`Engine::answer`] with each reply, and render the returned [`Step`].
//! The Engine decides; it never does I/O other than through the [`Store`].
//! Calls are synchronous and may take a password hash's time: front ends run them off
//! their receive loops.

mod second_factor;
mod split;
mod throttle;

pub use throttle::second_factor_key;

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::clock::{Clock, UnixTime};
use crate::config::{Config, LockoutConfig, LoginMode, TotpConfig, TransactionConfig, Unenrolled};
use crate::first_factor::{FirstFactor, FirstFactorResult, LocalPasswords};
use crate::model::*;
use crate::password::PasswordHasher;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

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
}

impl Channel {
    /// `radius` or `pam`, for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Radius { .. } => "radius",
            Channel::Pam { .. } => "pam",
        }
    }

    /// The configured client (RADIUS) or service (PAM) name.
    pub fn client(&self) -> &str {
        match self {
            Channel::Radius { client, .. } => client,
            Channel::Pam { service, .. } => service,
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
}

/// What the user is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expects {
    Password,
    Code,
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
    },
}

/// A RADIUS attribute for an Access-Accept, raw: `typ` 26 carries a Vendor-Specific
/// payload (vendor id, vendor type, length, value) already encoded in `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAttribute {
    pub typ: u8,
    pub value: Vec<u8>,
}

/// The message every failed login shows, so that nothing tells users apart.
pub const GENERIC_FAILURE: &str = "Authentication failed";

/// Errors of the Engine itself (not login failures: those are [`Step::Reject`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
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
    settings: EngineSettings,
    recovery_pepper: Zeroizing<[u8; 32]>,
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
        let recovery_pepper = key.derive("portcullis recovery codes v1");
        Self {
            store,
            clock,
            key,
            local: Arc::new(LocalPasswords::new(hasher)),
            first_factors: HashMap::new(),
            settings,
            recovery_pepper,
        }
    }

    /// Check the passwords of `tenant` with `backend` instead of the store's hashes.
    pub fn set_first_factor(&mut self, tenant: &str, backend: Arc<dyn FirstFactor>) {
        self.first_factors.insert(tenant.to_string(), backend);
    }

    fn first_factor(&self, tenant: &str) -> &Arc<dyn FirstFactor> {
        self.first_factors.get(tenant).unwrap_or(&self.local)
    }

    /// The store this Engine uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Begin a login.
    pub fn start(&self, req: &LoginRequest) -> Result<Step, EngineError> {
        let now = self.clock.now();
        let outcome = self.start_inner(req, now)?;
        self.finish(
            now,
            &req.tenant,
            &req.username,
            &req.channel,
            &req.source,
            req.mode.as_str(),
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
            Step::Prompt { txn, .. } => {
                tracing::debug!(tenant, username, txn = %txn_id(txn), "prompting");
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
        };
        tracing::info!(
            tenant = %record.tenant,
            user = %record.username,
            client = %record.client,
            source = %record.source,
            result = record.result.as_str(),
            reason = %record.reason,
            factors = %record.factors.join(","),
            "login decision"
        );
        self.store.append_audit(&record)?;
        Ok(outcome.step)
    }

    fn start_inner(&self, req: &LoginRequest, now: UnixTime) -> Result<Outcome, EngineError> {
        let Some(tenant) = self.store.tenant_by_name(&req.tenant)? else {
            let _ = self
                .local
                .check(&req.tenant, &req.username, None, &req.credential);
            return Ok(Outcome::reject(format!(
                "tenant '{}' does not exist (check the client's tenant setting)",
                req.tenant
            )));
        };
        let user = self.store.user_by_name(tenant.id, &req.username)?;
        match req.mode {
            LoginMode::Challenge | LoginMode::Auto => {
                if let Err(reason) =
                    self.check_password(&tenant, &req.username, user.as_ref(), &req.credential)
                {
                    return Ok(Outcome::reject(reason));
                }
                let Some(user) = user else {
                    return Ok(Outcome::reject("unknown user"));
                };
                self.begin_second_factor(&tenant, &user, req, now, "password")
            }
            LoginMode::Append => {
                // Every reading of the string, then the whole string as the password: the
                // number of password checks depends on the string only, never on the user
                // (no enumeration by timing).
                let candidates = split::append_candidates(&req.credential, &req.delimiter);
                let mut reason = String::from("wrong password");
                for cand in &candidates {
                    match self.check_password(&tenant, &req.username, user.as_ref(), &cand.password)
                    {
                        Ok(()) => {
                            let Some(user) = user else {
                                return Ok(Outcome::reject("unknown user"));
                            };
                            if split::is_factor_word(&cand.code) {
                                // `password,push` / `password,sms`: those factors come with
                                // the factors issue; until then the code is asked for.
                                return self
                                    .begin_second_factor(&tenant, &user, req, now, "password");
                            }
                            return self.second_factor_once(
                                &tenant,
                                &user,
                                &cand.code,
                                now,
                                "password",
                                req.unenrolled,
                            );
                        }
                        Err(r) => reason = r,
                    }
                }
                // No split passed the first factor: the password may contain the delimiter
                // or end in digits, or the user typed no code. Whole string as the password,
                // then a challenge asks for the code.
                match self.check_password(&tenant, &req.username, user.as_ref(), &req.credential) {
                    Ok(()) => {
                        let Some(user) = user else {
                            return Ok(Outcome::reject("unknown user"));
                        };
                        self.begin_second_factor(&tenant, &user, req, now, "password")
                    }
                    Err(r) if candidates.is_empty() => Ok(Outcome::reject(r)),
                    Err(_) => Ok(Outcome::reject(reason)),
                }
            }
            LoginMode::OtpOnly => {
                // The first factor was checked elsewhere; the audit says so.
                let user = match user {
                    Some(u) if !u.disabled => u,
                    Some(_) => return Ok(Outcome::reject("user is disabled")),
                    None => return Ok(Outcome::reject("unknown user")),
                };
                if req.credential.is_empty() {
                    return self.begin_second_factor(&tenant, &user, req, now, "delegated");
                }
                let code =
                    Zeroizing::new(String::from_utf8_lossy(&req.credential).trim().to_string());
                self.second_factor_once(&tenant, &user, &code, now, "delegated", req.unenrolled)
            }
        }
    }

    /// Checks the first factor with the tenant's backend.
    fn check_password(
        &self,
        tenant: &Tenant,
        username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> Result<(), String> {
        let backend = self.first_factor(&tenant.name);
        match backend.check(&tenant.name, username, user, password) {
            FirstFactorResult::Accepted(_) => Ok(()),
            FirstFactorResult::Rejected(reason) => Err(reason),
            FirstFactorResult::Unavailable(reason) => Err(format!(
                "first factor ({}) unavailable: {reason}",
                backend.name()
            )),
        }
    }

    /// After the password in challenge mode: prompt for the code, if the user can give one.
    fn begin_second_factor(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &LoginRequest,
        now: UnixTime,
        first: &'static str,
    ) -> Result<Outcome, EngineError> {
        if !self.has_usable_factor(user)? {
            return Ok(unenrolled_outcome(user, first, req.unenrolled));
        }
        if let Some(blocked) = self.throttle_blocks(tenant, user, now)? {
            return Ok(blocked);
        }
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = data_encoding::HEXLOWER.encode(&raw);
        let txn = Transaction {
            id: id.clone(),
            tenant_id: tenant.id,
            user_id: user.id,
            username: user.name.clone(),
            client: req.channel.client().to_string(),
            source: req.source.clone(),
            first_factor: first.to_string(),
            step: 0,
            attempts: 0,
            created_at: now,
            expires_at: now + self.settings.transaction_ttl,
        };
        self.store.put_transaction(&txn)?;
        Ok(Outcome {
            step: Step::Prompt {
                txn: txn_ref(&id, 0),
                text: req.prompt.clone(),
                echo: false,
                expects: Expects::Code,
            },
            reason: "first factor ok; code asked".into(),
            factors: vec![first.into()],
        })
    }

    fn has_usable_factor(&self, user: &User) -> Result<bool, EngineError> {
        let confirmed = self
            .store
            .factors_of(user.id)?
            .iter()
            .any(|f| f.state == FactorState::Confirmed);
        Ok(confirmed || self.store.unused_recovery_codes(user.id)? > 0)
    }

    /// Append mode: the code came with the password; one try.
    fn second_factor_once(
        &self,
        tenant: &Tenant,
        user: &User,
        code: &str,
        now: UnixTime,
        first: &'static str,
        unenrolled: Unenrolled,
    ) -> Result<Outcome, EngineError> {
        if !self.has_usable_factor(user)? {
            return Ok(unenrolled_outcome(user, first, unenrolled));
        }
        if let Some(blocked) = self.throttle_blocks(tenant, user, now)? {
            return Ok(blocked);
        }
        Ok(match self.check_code(tenant, user, code, now)? {
            CodeCheck::Accepted { factor } => accepted(user, first, factor),
            failed => Outcome::reject(failed.reason()),
        })
    }

    fn answer_inner(&self, req: &AnswerRequest, now: UnixTime) -> Result<Outcome, EngineError> {
        let Some((id, step)) = parse_txn_ref(&req.txn) else {
            return Ok(Outcome::reject("malformed transaction reference (State)"));
        };
        let Some(tenant) = self.store.tenant_by_name(&req.tenant)? else {
            return Ok(Outcome::reject(format!(
                "tenant '{}' does not exist",
                req.tenant
            )));
        };
        let Some(txn) = self.store.take_transaction(id, step, now)? else {
            return Ok(Outcome::reject(
                "transaction unknown, expired or already answered",
            ));
        };
        if txn.tenant_id != tenant.id
            || txn.username != req.username
            || txn.client != req.channel.client()
            || txn.source != req.source
        {
            self.store.delete_transaction(&txn.id)?;
            return Ok(Outcome::reject(
                "transaction belongs to another user, client or source",
            ));
        }
        let user = match self.store.user_by_name(tenant.id, &req.username)? {
            Some(u) if u.id == txn.user_id && !u.disabled => u,
            _ => {
                self.store.delete_transaction(&txn.id)?;
                return Ok(Outcome::reject(
                    "user was removed or disabled during the login",
                ));
            }
        };
        if let Some(blocked) = self.throttle_blocks(&tenant, &user, now)? {
            self.store.delete_transaction(&txn.id)?;
            return Ok(blocked);
        }
        let code = String::from_utf8_lossy(&req.answer).trim().to_string();
        let code = Zeroizing::new(code);
        match self.check_code(&tenant, &user, &code, now)? {
            CodeCheck::Accepted { factor } => {
                self.store.delete_transaction(&txn.id)?;
                Ok(accepted(&user, txn.first_factor(), factor))
            }
            failed => {
                let attempts = self.store.add_transaction_attempt(&txn.id)?;
                if attempts >= self.settings.max_attempts {
                    self.store.delete_transaction(&txn.id)?;
                    return Ok(Outcome::reject(format!(
                        "{} ({} of {} attempts; login ended)",
                        failed.reason(),
                        attempts,
                        self.settings.max_attempts
                    )));
                }
                // A throttle that the failure just switched on ends the login too.
                if let Some(blocked) = self.throttle_blocks(&tenant, &user, now)? {
                    self.store.delete_transaction(&txn.id)?;
                    return Ok(blocked);
                }
                Ok(Outcome {
                    step: Step::Prompt {
                        txn: txn_ref(&txn.id, txn.step),
                        text: format!("Wrong code, try again. {}", req.prompt),
                        echo: false,
                        expects: Expects::Code,
                    },
                    reason: failed.reason(),
                    factors: vec!["password".into()],
                })
            }
        }
    }
}

fn accepted(user: &User, first: &str, factor: &str) -> Outcome {
    Outcome {
        step: Step::Accept {
            factors_used: vec![first.into(), factor.into()],
            groups: user.groups.clone(),
            reply_attributes: Vec::new(),
        },
        reason: format!("{first} and {factor} ok"),
        factors: vec![first.into(), factor.into()],
    }
}

fn unenrolled_outcome(user: &User, first: &str, unenrolled: Unenrolled) -> Outcome {
    match unenrolled {
        Unenrolled::Deny => Outcome::reject_with(
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
