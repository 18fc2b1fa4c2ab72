//! First-factor backends: who checks the password. `local` (the store's hashes) is built
//! in; LDAP/AD and upstream RADIUS implement the same trait. The Engine picks the backend
//! per tenant.

use crate::model::User;
use crate::password::PasswordHasher;

/// What a backend knows of a user beyond "the password is right" (for example LDAP
/// groups, mail and mobile), used by policy, reply attributes and the SMS/e-mail factors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryInfo {
    pub groups: Option<Vec<String>>,
    pub email: Option<String>,
    pub phone: Option<String>,
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

    /// Whether users it accepts but the store does not know are created on first login
    /// (the factor store follows the directory).
    fn creates_users(&self) -> bool {
        false
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
