//! The domain model: tenants, users, factors, transactions, throttles, audit records.
//! One name per idea, the same in config, code, CLI and docs.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// Row id of a tenant.
pub type TenantId = i64;
/// Row id of a user.
pub type UserId = i64;

/// A tenant: an isolated set of users, factors, clients and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: UnixTime,
}

/// A user of a tenant. `password_hash` is an argon2id PHC string or a crypt(3) `$6$` hash.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixTime,
    /// Free-form attributes policy rules can test (`use_mfa = "false"`), set by admins.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The generation of the user's web sessions: a `/my/` session issued under another
    /// value is over ([`crate::store::Store::raise_session_epoch`]).
    #[serde(skip)]
    pub session_epoch: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("has_password", &self.password_hash.is_some())
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What a new user starts with.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub tenant_id: TenantId,
    pub name: String,
    pub password_hash: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub groups: Vec<String>,
}

impl NewUser {
    /// The user as a store keeps it once made under `id` at `now`: enabled, without
    /// attributes, at session epoch 0.
    pub fn stored(&self, id: UserId, now: UnixTime) -> User {
        User {
            id,
            tenant_id: self.tenant_id,
            name: self.name.clone(),
            password_hash: self.password_hash.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            groups: self.groups.clone(),
            disabled: false,
            created_at: now,
            attributes: Default::default(),
            session_epoch: 0,
        }
    }
}

/// The kind of a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    Totp,
    Hotp,
    Sms,
    Email,
    /// Push approval: a notification with Approve/Deny, answered on the approval page.
    Push,
}

impl FactorKind {
    /// The name used in the store, the CLI and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::Totp => "totp",
            FactorKind::Hotp => "hotp",
            FactorKind::Sms => "sms",
            FactorKind::Email => "email",
            FactorKind::Push => "push",
        }
    }

    /// Whether codes of this kind are sent to the user (SMS, e-mail).
    pub fn is_out_of_band(self) -> bool {
        matches!(self, FactorKind::Sms | FactorKind::Email)
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "totp" => Some(FactorKind::Totp),
            "hotp" => Some(FactorKind::Hotp),
            "sms" => Some(FactorKind::Sms),
            "email" => Some(FactorKind::Email),
            "push" => Some(FactorKind::Push),
            _ => None,
        }
    }
}

/// A factor is `pending` until the user proves they hold it, then `confirmed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorState {
    Pending,
    Confirmed,
}

impl FactorState {
    /// The name used in the store and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorState::Pending => "pending",
            FactorState::Confirmed => "confirmed",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(FactorState::Pending),
            "confirmed" => Some(FactorState::Confirmed),
            _ => None,
        }
    }
}

/// An enrolled second factor. `sealed_secret` is encrypted under the master key;
/// `params` is the factor kind's JSON settings (for TOTP: algorithm, digits, period).
#[derive(Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: String,
    pub user_id: UserId,
    pub kind: FactorKind,
    pub state: FactorState,
    pub sealed_secret: Vec<u8>,
    pub params: String,
    pub created_at: UnixTime,
    pub confirmed_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
}

/// How closely a factor's `last_used_at` follows its uses: a use less than this many
/// seconds after the recorded one leaves it as it is. Written on every login, it cost a
/// write of a scattered page of the factors table per login (docs/BENCHMARKS.md); every
/// login's exact time is in the audit log.
pub const LAST_USE_RESOLUTION: UnixTime = 3600;

impl Factor {
    /// Whether a use at `now` is to be written to `last_used_at`: it was never written,
    /// or [`LAST_USE_RESOLUTION`] or longer before `now`, or after `now` (the clock went
    /// back).
    pub fn last_use_outdated(&self, now: UnixTime) -> bool {
        self.last_used_at
            .is_none_or(|at| at > now || now - at >= LAST_USE_RESOLUTION)
    }
}

impl std::fmt::Debug for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factor")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A login in progress, kept in the store so that any node can continue it.
/// It is bound to user, client (a PAM service with its host: [`crate::engine::Channel::binding`])
/// and source; `step` makes every prompt single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub username: String,
    pub client: String,
    pub source: String,
    /// How the first factor was satisfied: `password` or `delegated`.
    pub first_factor: String,
    /// Attributes for the final Access-Accept that the first factor produced (upstream
    /// RADIUS `pass_through`), remembered until the second factor is done.
    pub reply_attributes: Vec<crate::engine::ReplyAttribute>,
    pub step: u32,
    pub attempts: u32,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

impl Transaction {
    /// The first factor's name for audit records and Accept steps.
    pub fn first_factor(&self) -> &str {
        &self.first_factor
    }
}

/// Failure counter of one throttle key (for example a user's second-factor attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttle {
    pub failures: u32,
    pub last_failure_at: UnixTime,
    pub locked_until: Option<UnixTime>,
}

/// The outcome recorded in an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    Accept,
    Reject,
}

impl AuditResult {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Accept => "accept",
            AuditResult::Reject => "reject",
        }
    }
}

/// One record per decision. Never holds a password, code or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub time: UnixTime,
    pub tenant: String,
    pub username: String,
    pub channel: String,
    pub client: String,
    pub source: String,
    pub mode: String,
    pub factors: Vec<String>,
    pub result: AuditResult,
    pub reason: String,
    pub transaction: Option<String>,
    /// The PAM host (a registered host's name over HTTPS); none for RADIUS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where a push request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    Pending,
    Approved,
    Denied,
}

impl PushStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PushStatus::Pending => "pending",
            PushStatus::Approved => "approved",
            PushStatus::Denied => "denied",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(PushStatus::Pending),
            "approved" => Some(PushStatus::Approved),
            "denied" => Some(PushStatus::Denied),
            _ => None,
        }
    }
}

/// One push notification of a login, waiting for the phone's answer. The answer link
/// carries `id` and a single-use token, kept here only as a keyed hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The transaction the push belongs to; its poll reads the decision.
    pub txn_id: String,
    pub factor_id: String,
    pub token_hash: String,
    /// The two digits the login prompt shows (number matching), if on.
    pub number: Option<u8>,
    pub status: PushStatus,
    /// Why it was denied (`denied on the device`, `wrong number picked`).
    pub detail: Option<String>,
    /// Login context shown on the approval page (never a secret).
    pub username: String,
    pub client: String,
    pub source: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub decided_at: Option<UnixTime>,
}

impl std::fmt::Debug for PushRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRequest")
            .field("id", &self.id)
            .field("txn_id", &self.txn_id)
            .field("status", &self.status)
            .field("username", &self.username)
            .field("client", &self.client)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub username: Option<String>,
    pub since: Option<UnixTime>,
    pub limit: u32,
}

/// What an admin API token may do. An `operator` token is global; the others belong to one
/// tenant and never reach another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    /// Everything, in every tenant, and tenant management.
    Operator,
    /// Everything inside its tenant.
    Admin,
    /// List and show users, reset factors, issue bypass codes.
    Helpdesk,
    /// Read the tenant's audit log.
    Auditor,
}

impl AdminRole {
    /// The name used in the store, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Operator => "operator",
            AdminRole::Admin => "admin",
            AdminRole::Helpdesk => "helpdesk",
            AdminRole::Auditor => "auditor",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(AdminRole::Operator),
            "admin" => Some(AdminRole::Admin),
            "helpdesk" => Some(AdminRole::Helpdesk),
            "auditor" => Some(AdminRole::Auditor),
            _ => None,
        }
    }
}

/// An admin API token as stored: the secret part only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminToken {
    pub id: String,
    /// None for an operator token.
    #[serde(skip)]
    pub tenant_id: Option<TenantId>,
    /// The tenant's name (read back with the token; ignored when adding one).
    pub tenant: Option<String>,
    pub role: AdminRole,
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub revoked: bool,
    /// When the token stops working (`token add --expires`); None: it never expires.
    pub expires_at: Option<UnixTime>,
}

impl AdminToken {
    /// Whether the token's lifetime is over at `now`: it works while `now < expires_at`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A remote host of a fleet that may ask `POST /v1/pam/step` with its token. The token's
/// hash stays in the store and is never part of this value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PamHost {
    pub id: i64,
    pub tenant_id: TenantId,
    /// The tenant's name (joined in for display and request binding).
    pub tenant: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_seen_at: Option<UnixTime>,
    pub revoked: bool,
}

/// One user of a bulk import (`user import`), applied with the others in one store
/// transaction: all of them or none.
#[derive(Clone)]
pub enum ImportUser {
    /// A new user, with an optional factor (already sealed) whose `user_id` the store fills in.
    Create {
        user: NewUser,
        factor: Option<Factor>,
        /// Created disabled (`user export` writes who is).
        disabled: bool,
    },
    /// An existing user: each `Some` field replaces the stored value, `None` keeps it.
    Update {
        user: UserId,
        email: Option<Option<String>>,
        phone: Option<Option<String>>,
        groups: Option<Vec<String>>,
        password_hash: Option<String>,
        disabled: Option<bool>,
    },
}

/// An enrolment link of a login (`unenrolled = "enroll"`): the token only as a keyed hash.
/// Opening the link claims it once (`opened_at`) and attaches a new pending factor, which
/// the login's next answer confirms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub token_hash: String,
    pub tenant_id: TenantId,
    pub tenant: String,
    pub user_id: UserId,
    pub username: String,
    /// The login transaction that waits for the first code.
    pub txn_id: String,
    /// The pending factor made when the link was opened.
    pub factor_id: Option<String>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub opened_at: Option<UnixTime>,
}
