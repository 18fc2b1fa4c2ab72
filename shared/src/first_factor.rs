//! First-factor backends: who checks the password. `local` (the store's hashes) is built
//! in; LDAP/AD and upstream RADIUS implement the same trait. The Engine picks the backend
//! per tenant.

use crate::engine::ReplyAttribute;
use crate::model::User;
use crate::password::PasswordHasher;

/// What a backend knows of a user beyond "the password is right" (for example LDAP
/// groups, mail and mobile), used by policy, reply attributes and the SMS/e-mail factors.
/// `None` means "the backend does not say": the store keeps what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryInfo {
    pub groups: Option<Vec<String>>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Attributes the final Access-Accept must carry (upstream RADIUS `pass_through`);
    /// kept with the transaction until the second factor is done.
    pub reply_attributes: Vec<ReplyAttribute>,
}

/// Who asks, for backends that forward it (upstream RADIUS sends NAS-Identifier and
/// Calling-Station-Id).
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    /// The RADIUS client's or PAM service's configured name.
    pub client: &'a str,
    /// The NAS-Identifier the NAS sent, if any.
    pub nas_identifier: Option<&'a str>,
    /// Where the user is (Calling-Station-Id, else the NAS address).
    pub source: &'a str,
}

/// A backend's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFactorResult {
    /// The password is right.
    Accepted(DirectoryInfo),
    /// The password is wrong, or the user is unknown or disabled; the reason is audited.
    Rejected(String),
    /// The backend could not answer (directory down, timeout); the reason is audited.
    Unavailable(String),
}

/// Checks the first factor.
pub trait FirstFactor: Send + Sync + 'static {
    /// `local`, `ldap`, `radius`: the name in config and audit records.
    fn name(&self) -> &'static str;

    /// Check `password` for `username`. `user` is the store's record, if there is one.
    /// An unknown user must cost about the same time as a wrong password.
    fn check(
        &self,
        tenant: &str,
        username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult;

    /// Like [`FirstFactor::check`], with who asks; the Engine calls this one. Backends that
    /// forward the request (upstream RADIUS) override it.
    fn check_in(
        &self,
        ctx: &CheckContext<'_>,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        self.check(ctx.tenant, ctx.username, user, password)
    }

    /// Whether users it accepts but the store does not know are created on first login
    /// (the factor store follows the directory).
    fn creates_users(&self) -> bool {
        false
    }

    /// True for [`Delegated`]: the first factor was checked elsewhere, so the Engine asks
    /// for the code alone (as in `otp-only` mode).
    fn delegated(&self) -> bool {
        false
    }
}

/// `first_factor = "none"`: the first factor was checked elsewhere (the PAM stack, another
/// RADIUS server). The Engine never calls [`FirstFactor::check`] on it: logins become
/// second-factor-only and are audited as `delegated`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delegated;

impl FirstFactor for Delegated {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check(
        &self,
        _tenant: &str,
        _username: &str,
        _user: Option<&User>,
        _password: &[u8],
    ) -> FirstFactorResult {
        // Fail closed should anything call it.
        FirstFactorResult::Rejected("first factor is delegated; no password is checked here".into())
    }

    fn delegated(&self) -> bool {
        true
    }
}

/// Passwords hashed in the store (argon2id, or imported `$6$`).
#[derive(Debug, Clone)]
pub struct LocalPasswords {
    hasher: PasswordHasher,
}

impl LocalPasswords {
    /// The local backend with this hasher.
    pub fn new(hasher: PasswordHasher) -> Self {
        Self { hasher }
    }
}

impl FirstFactor for LocalPasswords {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(
        &self,
        _tenant: &str,
        _username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        let Some(u) = user else {
            self.hasher.verify_dummy(password);
            return FirstFactorResult::Rejected("unknown user".into());
        };
        let Some(hash) = &u.password_hash else {
            self.hasher.verify_dummy(password);
            return FirstFactorResult::Rejected("user has no password set".into());
        };
        // Verify before looking at `disabled`, so that both cost the same time.
        let ok = self.hasher.verify(hash, password);
        if u.disabled {
            FirstFactorResult::Rejected("user is disabled".into())
        } else if ok {
            FirstFactorResult::Accepted(DirectoryInfo::default())
        } else {
            FirstFactorResult::Rejected("wrong password".into())
        }
    }
}
