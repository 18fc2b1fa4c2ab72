//! Administration: what the CLI (and later the admin API) does to tenants, users, factors
//! and codes. Every operation validates its input and returns an error that says what to do.

use std::sync::Arc;

use rand::RngCore;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::clock::{Clock, UnixTime};
use crate::codes::generate_bypass_code;
use crate::codes::{
    generate_recovery_code, hash_code, normalize_recovery_code, RECOVERY_CODE_COUNT,
};
use crate::config::LockoutConfig;
use crate::engine::{
    factor_context, throttle_in_force, EmailParams, SmsParams, ThrottleInForce,
    BYPASS_PEPPER_LABEL, RECOVERY_PEPPER_LABEL, SENT_PEPPER_LABEL,
};
use crate::hotp::{self, HotpParams, DEFAULT_LOOK_AHEAD};
use crate::model::*;
use crate::password::{PasswordError, PasswordHasher};
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};
use crate::totp::{self, TotpAlgorithm, TotpParams};

mod manage;
mod tokens;
pub use manage::{Actor, PolicyQuery, PolicyTest, UserUpdate};
pub use tokens::{IssuedToken, TokenCheck, ADMIN_TOKEN_PEPPER_LABEL, TOKEN_PREFIX};

/// An admin operation that cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("tenant '{0}' does not exist; create it with: portcullis tenant add {0}")]
    NoTenant(String),
    #[error("user '{user}' does not exist in tenant '{tenant}'; list users with: portcullis user list --tenant {tenant}")]
    NoUser { tenant: String, user: String },
    #[error("factor '{factor}' of user '{user}' does not exist; list them with: portcullis factor list --tenant {tenant} {user}")]
    NoFactor {
        tenant: String,
        user: String,
        factor: String,
    },
    #[error("factor '{0}' is already confirmed")]
    AlreadyConfirmed(String),
    #[error("the code does not match factor '{0}': check the authenticator app's clock and that it scanned the latest QR code")]
    WrongCode(String),
    #[error("invalid {what} '{value}': {hint}")]
    Invalid {
        what: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("admin token '{0}' does not exist or is already revoked; list them with: portcullis token list")]
    NoToken(String),
    #[error("{} problem(s) in the file, nothing was imported (fix them and run the import again):\n{}", .0.len(), list_problems(.0))]
    ImportRows(Vec<String>),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A freshly enrolled TOTP or HOTP factor. A secret made here is shown once, to be
/// scanned: serialised with `secret` and `uri`. A secret given to the enrolment (a
/// migrated token, confirmed at once) is not repeated: the JSON leaves both out.
#[derive(Debug)]
pub struct EnrolledTotp {
    pub factor_id: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub secret: String,
    pub uri: String,
    pub digits: u8,
    pub algorithm: &'static str,
    /// The secret was made here (and the factor waits for its first code).
    generated: bool,
}

impl Serialize for EnrolledTotp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            factor_id: &'a str,
            kind: &'static str,
            state: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            uri: Option<&'a str>,
            digits: u8,
            algorithm: &'static str,
        }
        Shown {
            factor_id: &self.factor_id,
            kind: self.kind,
            state: self.state,
            secret: self.generated.then_some(self.secret.as_str()),
            uri: self.generated.then_some(self.uri.as_str()),
            digits: self.digits,
            algorithm: self.algorithm,
        }
        .serialize(serializer)
    }
}

/// An issued bypass code, shown once.
#[derive(Debug, Serialize)]
pub struct BypassCode {
    pub code: String,
    pub uses: u32,
    pub expires_at: UnixTime,
}

/// A factor as listed to admins (no secret).
#[derive(Debug, Serialize)]
pub struct FactorInfo {
    pub factor_id: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub details: serde_json::Value,
    pub created_at: UnixTime,
    pub confirmed_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
}

/// A user as shown by `user show`.
#[derive(Debug, Serialize)]
pub struct UserDetails {
    #[serde(flatten)]
    pub user: User,
    pub has_password: bool,
    pub factors: Vec<FactorInfo>,
    pub unused_recovery_codes: u32,
    pub failed_codes: u32,
    pub locked_until: Option<UnixTime>,
    /// The lock or delay that keeps the user's next code from being checked now, as a
    /// login would find it; `None` when there is none.
    pub throttle: Option<ThrottleInForce>,
}

/// How a new user's password is given.
pub enum NewPassword {
    None,
    Plain(Zeroizing<Vec<u8>>),
    Hash(String),
}

/// Administration over a store.
pub struct Admin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: Arc<MasterKey>,
    hasher: PasswordHasher,
    issuer: String,
    totp_window: u8,
    /// `[lockout]`, for what `user show` says of failed codes.
    lockout: LockoutConfig,
}

fn check_name(what: &'static str, value: &str) -> Result<(), AdminError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid {
            what,
            value: value.to_string(),
            hint: "use 1-128 letters, digits or . _ - @ +",
        })
    }
}

impl Admin {
    /// Administration of `store`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: Arc<MasterKey>,
        hasher: PasswordHasher,
        issuer: String,
        totp_window: u8,
    ) -> Self {
        Self {
            store,
            clock,
            key,
            hasher,
            issuer,
            totp_window,
            lockout: LockoutConfig::default(),
        }
    }

    /// With the `[lockout]` settings that logins use (else the defaults).
    pub fn with_lockout(mut self, lockout: LockoutConfig) -> Self {
        self.lockout = lockout;
        self
    }

    fn tenant(&self, name: &str) -> Result<Tenant, AdminError> {
        self.store
            .tenant_by_name(name)?
            .ok_or_else(|| AdminError::NoTenant(name.to_string()))
    }

    fn user(&self, tenant: &str, name: &str) -> Result<(Tenant, User), AdminError> {
        let t = self.tenant(tenant)?;
        let u = self
            .store
            .user_by_name(t.id, name)?
            .ok_or_else(|| AdminError::NoUser {
                tenant: tenant.to_string(),
                user: name.to_string(),
            })?;
        Ok((t, u))
    }

    /// `tenant add`
    pub fn add_tenant(&self, name: &str) -> Result<Tenant, AdminError> {
        check_name("tenant name", name)?;
        Ok(self.store.create_tenant(name, self.clock.now())?)
    }

    /// `tenant list`
    pub fn list_tenants(&self) -> Result<Vec<Tenant>, AdminError> {
        Ok(self.store.list_tenants()?)
    }

    /// `user add`
    pub fn add_user(
        &self,
        tenant: &str,
        name: &str,
        password: NewPassword,
        email: Option<String>,
        phone: Option<String>,
        groups: Vec<String>,
    ) -> Result<User, AdminError> {
        let t = self.tenant(tenant)?;
        check_name("user name", name)?;
        for g in &groups {
            check_name("group", g)?;
        }
        if let Some(e) = &email {
            check_email(e)?;
        }
        if let Some(p) = &phone {
            let digits = p.strip_prefix('+').unwrap_or(p);
            if !p.starts_with('+')
                || digits.len() < 6
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(AdminError::Invalid {
                    what: "phone number",
                    value: p.clone(),
                    hint: "expected E.164, like +4915112345678",
                });
            }
        }
        let password_hash = self.password_hash(password)?;
        Ok(self.store.create_user(
            &NewUser {
                tenant_id: t.id,
                name: name.to_string(),
                password_hash,
                email,
                phone,
                groups,
            },
            self.clock.now(),
        )?)
    }

    fn password_hash(&self, password: NewPassword) -> Result<Option<String>, AdminError> {
        Ok(match password {
            NewPassword::None => None,
            NewPassword::Plain(pw) => {
                if pw.is_empty() {
                    return Err(AdminError::Invalid {
                        what: "password",
                        value: String::new(),
                        hint: "an empty password is not allowed",
                    });
                }
                Some(self.hasher.hash(&pw)?)
            }
            NewPassword::Hash(h) => {
                self.hasher.check_importable(&h).map_err(hash_error)?;
                Some(h)
            }
        })
    }

    /// `user list`
    pub fn list_users(&self, tenant: &str) -> Result<Vec<User>, AdminError> {
        let t = self.tenant(tenant)?;
        Ok(self.store.list_users(t.id)?)
    }

    /// `user show`
    pub fn show_user(&self, tenant: &str, name: &str) -> Result<UserDetails, AdminError> {
        let (t, u) = self.user(tenant, name)?;
        let th = self
            .store
            .throttle(t.id, &crate::engine::second_factor_key(&u))?;
        let throttle = throttle_in_force(&th, &self.lockout, self.clock.now());
        Ok(UserDetails {
            has_password: u.password_hash.is_some(),
            factors: self.list_factors(tenant, name)?,
            unused_recovery_codes: self.store.unused_recovery_codes(u.id)?,
            failed_codes: th.failures,
            locked_until: match throttle {
                Some(ThrottleInForce::Locked { until, .. }) => Some(until),
                _ => None,
            },
            throttle,
            user: u,
        })
    }

    /// `user disable` / `user enable` (disabling also ends the user's web sessions)
    pub fn set_disabled(&self, tenant: &str, name: &str, disabled: bool) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        Ok(self.store.set_user_disabled(u.id, disabled)?)
    }

    /// `user delete`
    pub fn delete_user(&self, tenant: &str, name: &str) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        Ok(self.store.delete_user(u.id)?)
    }

    /// `user set-password` (also ends the user's web sessions)
    pub fn set_password(
        &self,
        tenant: &str,
        name: &str,
        password: NewPassword,
    ) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let hash = self.password_hash(password)?;
        Ok(self.store.set_password_hash(u.id, hash.as_deref())?)
    }

    /// `user forget`: revoke remembered sources (one, or all) of a user.
    pub fn forget_sources(
        &self,
        tenant: &str,
        name: &str,
        source: Option<&str>,
    ) -> Result<u64, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        Ok(self.store.forget_sources(u.id, source)?)
    }

    /// `user set-attr`: set (or, without a value, remove) an attribute for policy rules.
    pub fn set_attribute(
        &self,
        tenant: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), AdminError> {
        let ok_key = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok_key {
            return Err(AdminError::Invalid {
                what: "attribute name",
                value: key.to_string(),
                hint: "use 1-64 letters, digits, '_', '-' or '.'",
            });
        }
        if value.is_some_and(|v| v.len() > 256 || v.chars().any(char::is_control)) {
            return Err(AdminError::Invalid {
                what: "attribute value",
                value: String::new(),
                hint: "use at most 256 printable characters",
            });
        }
        let (_, u) = self.user(tenant, name)?;
        Ok(self.store.set_user_attribute(u.id, key, value)?)
    }

    /// `user unlock`: forget the user's failed codes and lock.
    pub fn unlock(&self, tenant: &str, name: &str) -> Result<(), AdminError> {
        let (t, u) = self.user(tenant, name)?;
        Ok(self
            .store
            .clear_throttle(t.id, &crate::engine::second_factor_key(&u))?)
    }

    /// Lift the block of a source address after too many wrong passwords (`unblock`).
    /// Whether it was blocked or had failures on record.
    pub fn unblock_source(&self, tenant: &str, source: &str) -> Result<bool, AdminError> {
        let t = self.tenant(tenant)?;
        // An address as the audit shows it (an IPv6 one stands for its /64), or another
        // Calling-Station-Id (a MAC address, a phone number): one line of printable text,
        // no room for more in the audit record that names it.
        let source = source.trim();
        if source.is_empty() || source.len() > 253 || !source.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(AdminError::Invalid {
                what: "source",
                value: source.escape_debug().take(80).collect(),
                hint: "give the address as a login's audit record shows it: an IP address, or the Calling-Station-Id (a MAC address, a phone number), in ASCII without spaces",
            });
        }
        let mut had = false;
        for channel in crate::engine::SOURCE_CHANNELS {
            let key = crate::engine::source_throttle_key(channel, source);
            had |= self.store.throttle(t.id, &key)? != Default::default();
            self.store.clear_throttle(t.id, &key)?;
        }
        Ok(had)
    }

    /// `factor enroll totp`: with `secret` (migration) the factor is confirmed at once,
    /// without it a new secret is made and the factor waits for `factor confirm`.
    pub fn enroll_totp(
        &self,
        tenant: &str,
        name: &str,
        secret: Option<&str>,
        digits: u8,
        algorithm: &str,
    ) -> Result<EnrolledTotp, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let generated = secret.is_none();
        let (secret, state, algorithm) = self.new_otp_secret(secret, digits, algorithm)?;
        self.refuse_held_secret(&u, FactorKind::Totp, &secret)?;
        let params = TotpParams {
            algorithm,
            digits,
            period: 30,
        };
        let id = self.add_sealed_factor(
            &u,
            FactorKind::Totp,
            state,
            &secret,
            serde_json::to_string(&params).unwrap_or_default(),
        )?;
        let account = format!("{}@{}", u.name, tenant);
        Ok(EnrolledTotp {
            factor_id: id,
            kind: "totp",
            state: state.as_str(),
            secret: totp::encode_base32(&secret),
            uri: totp::otpauth_uri(&self.issuer, &account, &secret, &params),
            digits,
            algorithm: algorithm.as_str(),
            generated,
        })
    }

    /// `factor confirm`: the user's app shows `code`, so it holds the secret. The code is
    /// recorded as used: it cannot also log in.
    pub fn confirm_factor(
        &self,
        tenant: &str,
        name: &str,
        factor_id: &str,
        code: &str,
    ) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let no_factor = || AdminError::NoFactor {
            tenant: tenant.to_string(),
            user: name.to_string(),
            factor: factor_id.to_string(),
        };
        let f = self
            .store
            .factors_of(u.id)?
            .into_iter()
            .find(|f| f.id == factor_id)
            .ok_or_else(no_factor)?;
        if f.state == FactorState::Confirmed {
            return Err(AdminError::AlreadyConfirmed(factor_id.to_string()));
        }
        let secret = || {
            self.key
                .open(factor_context(&f.id).as_bytes(), &f.sealed_secret)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("factor {factor_id} params: {e}"));
        let now = self.clock.now();
        match f.kind {
            FactorKind::Totp => {
                let params: TotpParams = serde_json::from_str(&f.params).map_err(corrupt)?;
                let step = totp::verify(&secret()?, &params, code.trim(), now, self.totp_window)
                    .ok_or_else(|| AdminError::WrongCode(factor_id.to_string()))?;
                let expires = totp::replay_expiry(step, params.period);
                // A code already used (a confirmation raced, or replayed) confirms nothing.
                if !self.store.record_otp_use(&f.id, step as i64, expires)? {
                    return Err(AdminError::WrongCode(factor_id.to_string()));
                }
            }
            // Push factors are confirmed with a code sent through the push channel.
            FactorKind::Sms | FactorKind::Email | FactorKind::Push => {
                let pepper = self.key.derive(SENT_PEPPER_LABEL);
                let hash = crate::engine::sent_code_hash(&pepper, factor_id, code.trim());
                let used = self.store.use_sent_code(u.id, &hash, now)?;
                if used.as_deref() != Some(factor_id) {
                    return Err(AdminError::WrongCode(factor_id.to_string()));
                }
            }
            FactorKind::Hotp => {
                let params: HotpParams = serde_json::from_str(&f.params).map_err(corrupt)?;
                let counter = hotp::find(&secret()?, &params, code.trim())
                    .ok_or_else(|| AdminError::WrongCode(factor_id.to_string()))?;
                let next = serde_json::to_string(&HotpParams {
                    counter: counter + 1,
                    ..params
                })
                .unwrap_or_default();
                if !self.store.update_factor_params(&f.id, &f.params, &next)? {
                    return Err(AdminError::WrongCode(factor_id.to_string()));
                }
            }
        }
        if self.store.confirm_factor(u.id, factor_id, now)? {
            Ok(())
        } else {
            Err(no_factor())
        }
    }

    /// `factor enroll hotp`: a hardware token's secret (confirmed at once) or a new secret
    /// for a software token (pending until `factor confirm`).
    pub fn enroll_hotp(
        &self,
        tenant: &str,
        name: &str,
        secret: Option<&str>,
        digits: u8,
        algorithm: &str,
        counter: u64,
    ) -> Result<EnrolledTotp, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let generated = secret.is_none();
        let (secret, state, algorithm) = self.new_otp_secret(secret, digits, algorithm)?;
        self.refuse_held_secret(&u, FactorKind::Hotp, &secret)?;
        let params = HotpParams {
            algorithm,
            digits,
            counter,
            look_ahead: DEFAULT_LOOK_AHEAD,
        };
        let id = self.add_sealed_factor(
            &u,
            FactorKind::Hotp,
            state,
            &secret,
            serde_json::to_string(&params).unwrap_or_default(),
        )?;
        let account = format!("{}@{}", u.name, tenant);
        Ok(EnrolledTotp {
            factor_id: id,
            kind: "hotp",
            state: state.as_str(),
            secret: totp::encode_base32(&secret),
            uri: hotp_uri(&self.issuer, &account, &secret, &params),
            digits,
            algorithm: algorithm.as_str(),
            generated,
        })
    }

    /// Refuses a secret that one of the user's factors of the same `kind` (TOTP or HOTP)
    /// holds already (a token imported twice): each factor keeps its own record of used
    /// codes, so one code would count once for each.
    fn refuse_held_secret(
        &self,
        u: &User,
        kind: FactorKind,
        secret: &[u8],
    ) -> Result<(), AdminError> {
        use subtle::ConstantTimeEq;
        for f in self.store.factors_of(u.id)? {
            if f.kind != kind {
                continue;
            }
            let Ok(held) = self
                .key
                .open(factor_context(&f.id).as_bytes(), &f.sealed_secret)
            else {
                continue;
            };
            if bool::from(held.as_slice().ct_eq(secret)) {
                return Err(AdminError::Invalid {
                    what: "secret",
                    value: "(hidden)".into(),
                    hint: "the user already holds this secret in another factor of this kind (see factor list): one code would log in once per factor; keep that factor, or remove it first",
                });
            }
        }
        Ok(())
    }

    /// Store a factor whose secret is sealed under the master key; its new id.
    fn add_sealed_factor(
        &self,
        u: &User,
        kind: FactorKind,
        state: FactorState,
        secret: &[u8],
        params: String,
    ) -> Result<String, AdminError> {
        let id = new_factor_id();
        let now = self.clock.now();
        self.store.add_factor(&Factor {
            id: id.clone(),
            user_id: u.id,
            kind,
            state,
            sealed_secret: self.key.seal(factor_context(&id).as_bytes(), secret),
            params,
            created_at: now,
            confirmed_at: (state == FactorState::Confirmed).then_some(now),
            last_used_at: None,
        })?;
        Ok(id)
    }

    fn new_otp_secret(
        &self,
        secret: Option<&str>,
        digits: u8,
        algorithm: &str,
    ) -> Result<(Zeroizing<Vec<u8>>, FactorState, TotpAlgorithm), AdminError> {
        if digits != 6 && digits != 8 {
            return Err(AdminError::Invalid {
                what: "digits",
                value: digits.to_string(),
                hint: "use 6 or 8",
            });
        }
        let algorithm = TotpAlgorithm::parse(algorithm).ok_or_else(|| AdminError::Invalid {
            what: "algorithm",
            value: algorithm.to_string(),
            hint: "use SHA1, SHA256 or SHA512",
        })?;
        Ok(match secret {
            Some(text) => (
                Zeroizing::new(totp::decode_base32(text).ok_or(AdminError::Invalid {
                    what: "secret",
                    value: "(hidden)".into(),
                    hint: "give the base32 secret (A-Z, 2-7) of at least 16 characters",
                })?),
                FactorState::Confirmed,
                algorithm,
            ),
            None => (
                Zeroizing::new(totp::generate_secret()),
                FactorState::Pending,
                algorithm,
            ),
        })
    }

    /// `factor enroll sms`: a pending SMS factor for `phone` (or the user's phone); a code
    /// sent to it confirms it (`factor confirm`).
    pub fn enroll_sms(
        &self,
        tenant: &str,
        name: &str,
        phone: Option<&str>,
    ) -> Result<FactorInfo, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let phone = phone
            .map(str::to_string)
            .or(u.phone.clone())
            .ok_or(AdminError::Invalid {
                what: "phone number",
                value: String::new(),
                hint: "give --phone +4915112345678 or set the user's phone",
            })?;
        check_phone(&phone)?;
        self.add_out_of_band_factor(
            &u,
            FactorKind::Sms,
            serde_json::to_string(&SmsParams { phone }).unwrap_or_default(),
        )
    }

    /// `factor enroll email`: a pending e-mail factor for `email` (or the user's address);
    /// a code sent there confirms it. It only counts beside another factor.
    pub fn enroll_email(
        &self,
        tenant: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<FactorInfo, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let email = email
            .map(str::to_string)
            .or(u.email.clone())
            .ok_or(AdminError::Invalid {
                what: "e-mail",
                value: String::new(),
                hint: "give --email alice@example.com or set the user's e-mail",
            })?;
        check_email(&email)?;
        self.add_out_of_band_factor(
            &u,
            FactorKind::Email,
            serde_json::to_string(&EmailParams { email }).unwrap_or_default(),
        )
    }

    fn add_out_of_band_factor(
        &self,
        u: &User,
        kind: FactorKind,
        params: String,
    ) -> Result<FactorInfo, AdminError> {
        let id = new_factor_id();
        let now = self.clock.now();
        self.store.add_factor(&Factor {
            id: id.clone(),
            user_id: u.id,
            kind,
            state: FactorState::Pending,
            sealed_secret: Vec::new(),
            params: params.clone(),
            created_at: now,
            confirmed_at: None,
            last_used_at: None,
        })?;
        Ok(FactorInfo {
            factor_id: id,
            kind: kind.as_str(),
            state: "pending",
            details: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
            created_at: now,
            confirmed_at: None,
            last_used_at: None,
        })
    }

    /// `factor enroll push`: a pending push factor. Its address is a new unguessable ntfy
    /// topic (returned, to subscribe to) or the given webhook URL; both are sealed like a
    /// TOTP seed. A code sent through the channel confirms it (`factor confirm`).
    pub fn enroll_push(
        &self,
        tenant: &str,
        name: &str,
        webhook: Option<crate::push::WebhookTarget<'_>>,
    ) -> Result<(FactorInfo, String), AdminError> {
        use crate::push::{PushChannel, PushParams};
        let (_, u) = self.user(tenant, name)?;
        let public_only = webhook.is_some_and(|w| w.public_only);
        let (channel, address) = match webhook.map(|w| w.url) {
            Some(url) => {
                let ok = url
                    .strip_prefix("https://")
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
                if !ok {
                    return Err(AdminError::Invalid {
                        what: "webhook URL",
                        value: url.to_string(),
                        hint: "give an https:// URL",
                    });
                }
                (PushChannel::Webhook, url.to_string())
            }
            None => {
                let mut raw = [0u8; 20];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
                let topic = format!(
                    "pc_{}",
                    data_encoding::BASE32_NOPAD
                        .encode(&raw)
                        .to_ascii_lowercase()
                );
                (PushChannel::Ntfy, topic)
            }
        };
        let params = serde_json::to_string(&PushParams {
            channel,
            public_only,
        })
        .unwrap_or_default();
        let id = self.add_sealed_factor(
            &u,
            FactorKind::Push,
            FactorState::Pending,
            address.as_bytes(),
            params.clone(),
        )?;
        let now = self.clock.now();
        Ok((
            FactorInfo {
                factor_id: id,
                kind: FactorKind::Push.as_str(),
                state: "pending",
                details: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
                created_at: now,
                confirmed_at: None,
                last_used_at: None,
            },
            address,
        ))
    }

    /// `factor resync`: a hardware token drifted past the look-ahead window; two
    /// consecutive codes put the counter after them.
    pub fn resync_hotp(
        &self,
        tenant: &str,
        name: &str,
        factor_id: &str,
        first: &str,
        second: &str,
    ) -> Result<u64, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let f = self
            .store
            .factors_of(u.id)?
            .into_iter()
            .find(|f| f.id == factor_id && f.kind == FactorKind::Hotp)
            .ok_or_else(|| AdminError::NoFactor {
                tenant: tenant.to_string(),
                user: name.to_string(),
                factor: factor_id.to_string(),
            })?;
        let params: HotpParams = serde_json::from_str(&f.params)
            .map_err(|e| StoreError::Corrupt(format!("factor {factor_id} params: {e}")))?;
        let secret = self
            .key
            .open(factor_context(&f.id).as_bytes(), &f.sealed_secret)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let next = hotp::resync(&secret, &params, first.trim(), second.trim())
            .ok_or_else(|| AdminError::WrongCode(factor_id.to_string()))?;
        let new = serde_json::to_string(&HotpParams {
            counter: next,
            ..params
        })
        .unwrap_or_default();
        if !self.store.update_factor_params(&f.id, &f.params, &new)? {
            return Err(AdminError::WrongCode(factor_id.to_string()));
        }
        Ok(next)
    }

    /// `bypass`: a code for a user who lost their device, usable `uses` times within `ttl_secs`.
    pub fn issue_bypass_code(
        &self,
        tenant: &str,
        name: &str,
        uses: u32,
        ttl_secs: u64,
    ) -> Result<BypassCode, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        if uses == 0 || uses > 100 {
            return Err(AdminError::Invalid {
                what: "uses",
                value: uses.to_string(),
                hint: "use 1 to 100",
            });
        }
        if ttl_secs == 0 || ttl_secs > 30 * 24 * 3600 {
            return Err(AdminError::Invalid {
                what: "ttl",
                value: format!("{ttl_secs}s"),
                hint: "use a duration from 1s to 30d",
            });
        }
        let code = generate_bypass_code();
        let pepper = self.key.derive(BYPASS_PEPPER_LABEL);
        let now = self.clock.now();
        let expires_at = now + ttl_secs as i64;
        self.store
            .add_bypass_code(u.id, &hash_code(&pepper, &code), uses, expires_at, now)?;
        Ok(BypassCode {
            code,
            uses,
            expires_at,
        })
    }

    /// `factor list`
    pub fn list_factors(&self, tenant: &str, name: &str) -> Result<Vec<FactorInfo>, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        Ok(self
            .store
            .factors_of(u.id)?
            .into_iter()
            .map(|f| FactorInfo {
                details: serde_json::from_str(&f.params).unwrap_or(serde_json::Value::Null),
                factor_id: f.id,
                kind: f.kind.as_str(),
                state: f.state.as_str(),
                created_at: f.created_at,
                confirmed_at: f.confirmed_at,
                last_used_at: f.last_used_at,
            })
            .collect())
    }

    /// `factor remove` (an administrator, CLI or API): the factor is removed and every web
    /// (`/my/`) session of the user ends, so that whoever holds one cannot add a factor of
    /// their own in its place.
    pub fn remove_factor(
        &self,
        tenant: &str,
        name: &str,
        factor_id: &str,
    ) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        self.store.raise_session_epoch(u.id)?;
        self.remove_factor_of(&u, tenant, name, factor_id)
    }

    /// A factor removed by the user on `/my/`, or a pending factor whose code could not be
    /// sent: the user's sessions live on.
    pub fn remove_own_factor(
        &self,
        tenant: &str,
        name: &str,
        factor_id: &str,
    ) -> Result<(), AdminError> {
        let (_, u) = self.user(tenant, name)?;
        self.remove_factor_of(&u, tenant, name, factor_id)
    }

    fn remove_factor_of(
        &self,
        u: &User,
        tenant: &str,
        name: &str,
        factor_id: &str,
    ) -> Result<(), AdminError> {
        if self.store.remove_factor(u.id, factor_id)? {
            Ok(())
        } else {
            Err(AdminError::NoFactor {
                tenant: tenant.to_string(),
                user: name.to_string(),
                factor: factor_id.to_string(),
            })
        }
    }

    /// `recovery generate`: replaces the user's codes with 10 new ones, returned once.
    pub fn generate_recovery_codes(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<String>, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        let pepper = self.key.derive(RECOVERY_PEPPER_LABEL);
        let codes: Vec<String> = (0..RECOVERY_CODE_COUNT)
            .map(|_| generate_recovery_code())
            .collect();
        let hashes: Vec<String> = codes
            .iter()
            .filter_map(|c| normalize_recovery_code(c))
            .map(|n| hash_code(&pepper, &n))
            .collect();
        self.store
            .replace_recovery_codes(u.id, &hashes, self.clock.now())?;
        Ok(codes)
    }

    /// `audit`
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AdminError> {
        if let Some(t) = &filter.tenant {
            self.tenant(t)?;
        }
        Ok(self.store.list_audit(filter)?)
    }
}

fn check_email(e: &str) -> Result<(), AdminError> {
    let ok = e
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.len() <= 254;
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid {
            what: "e-mail",
            value: e.to_string(),
            hint: "expected name@domain.tld",
        })
    }
}

fn check_phone(p: &str) -> Result<(), AdminError> {
    let digits = p.strip_prefix('+').unwrap_or(p);
    if !p.starts_with('+')
        || digits.len() < 6
        || digits.len() > 15
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(AdminError::Invalid {
            what: "phone number",
            value: p.to_string(),
            hint: "expected E.164, like +4915112345678",
        });
    }
    Ok(())
}

/// The `otpauth://hotp/...` URI of a software HOTP token.
fn hotp_uri(issuer: &str, account: &str, secret: &[u8], p: &HotpParams) -> String {
    let totp_like = totp::otpauth_uri(
        issuer,
        account,
        secret,
        &TotpParams {
            algorithm: p.algorithm,
            digits: p.digits,
            period: 30,
        },
    );
    totp_like
        .replacen("otpauth://totp/", "otpauth://hotp/", 1)
        .replace("&period=30", &format!("&counter={}", p.counter))
}

/// An unguessable, short factor id (`totp-` is not put in: the kind is a column).
fn new_factor_id() -> String {
    let mut raw = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    data_encoding::BASE32_NOPAD
        .encode(&raw)
        .to_ascii_lowercase()
}

/// At most this many problems of an import are printed (all are counted).
const MAX_IMPORT_PROBLEMS_SHOWN: usize = 50;

fn list_problems(problems: &[String]) -> String {
    let mut out: Vec<String> = problems
        .iter()
        .take(MAX_IMPORT_PROBLEMS_SHOWN)
        .map(|p| format!("  {p}"))
        .collect();
    if problems.len() > MAX_IMPORT_PROBLEMS_SHOWN {
        out.push(format!(
            "  ... and {} more",
            problems.len() - MAX_IMPORT_PROBLEMS_SHOWN
        ));
    }
    out.join("\n")
}

/// One row of a user import as read from the file (`line` is its line number there).
/// A field is `None` when the file has no such column, `Some("")` for an empty cell.
#[derive(Default)]
pub struct ImportRow {
    pub line: u64,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Groups separated by `;`.
    pub groups: Option<String>,
    /// An argon2id or `$6$` hash, as `--password-hash-stdin` takes.
    pub password_hash: Option<String>,
    /// A base32 TOTP secret: a confirmed TOTP factor (SHA1, 6 digits, 30 s).
    pub totp_secret: Option<Zeroizing<String>>,
    /// `true` or `false` (any case), as `user export` writes it; empty: a new user is
    /// enabled, an updated one keeps its state.
    pub disabled: Option<String>,
}

/// What an import did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub totp_enrolled: u64,
    /// Each user created or updated, for one audit record each (not in the JSON report).
    #[serde(skip)]
    pub users: Vec<ImportedUser>,
}

/// One user an import wrote: who, and what (never the values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUser {
    pub name: String,
    /// Created (with a TOTP factor from the file, if `totp`), or updated.
    pub created: bool,
    pub totp: bool,
    /// The columns an update set (`email`, `phone`, `groups`, `password_hash`, `disabled`).
    pub changed: Vec<&'static str>,
}

/// A user as exported (`user export`): no secret, no hash.
#[derive(Debug, Serialize)]
pub struct ExportedUser {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Factor kinds, `kind` when confirmed and `kind:pending` otherwise.
    pub factors: Vec<String>,
}

impl Admin {
    /// `user import`: every row is checked first; if any is wrong nothing is written and
    /// every problem is returned with its line. Existing users are refused unless
    /// `update` (then their e-mail, phone, groups, hash and disabled state are replaced by
    /// the row's non-absent columns; an empty `password_hash` or `disabled` cell keeps the
    /// stored value). All rows are written in one store transaction.
    pub fn import_users(
        &self,
        tenant: &str,
        rows: Vec<ImportRow>,
        update: bool,
    ) -> Result<ImportReport, AdminError> {
        let t = self.tenant(tenant)?;
        let existing: std::collections::HashMap<String, UserId> = self
            .store
            .list_users(t.id)?
            .into_iter()
            .map(|u| (u.name, u.id))
            .collect();
        let mut seen: std::collections::HashMap<String, u64> = Default::default();
        let mut problems = Vec::new();
        let mut batch = Vec::with_capacity(rows.len());
        let mut users = Vec::with_capacity(rows.len());
        let now = self.clock.now();
        let mut totp_enrolled = 0;
        for row in rows {
            let line = row.line;
            let mut row_problems = Vec::new();
            let mut bad =
                |e: &dyn std::fmt::Display| row_problems.push(format!("line {line}: {e}"));
            let name = row.name.trim().to_string();
            if let Err(e) = check_name("user name", &name) {
                bad(&e);
            }
            if let Some(first) = seen.get(&name) {
                bad(&format!(
                    "user '{name}' is also on line {first}: keep one row per user"
                ));
            } else {
                seen.insert(name.clone(), line);
            }
            let email = nonempty(&row.email).map(|e| e.trim().to_string());
            if let Some(e) = &email {
                if let Err(e) = check_email(e) {
                    bad(&e);
                }
            }
            let phone = nonempty(&row.phone).map(|p| p.trim().to_string());
            if let Some(p) = &phone {
                if let Err(e) = check_phone(p) {
                    bad(&e);
                }
            }
            let groups: Option<Vec<String>> = row.groups.as_ref().map(|g| {
                g.split(';')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            for g in groups.iter().flatten() {
                if let Err(e) = check_name("group", g) {
                    bad(&e);
                }
            }
            let hash = nonempty(&row.password_hash).map(|h| h.trim().to_string());
            if let Some(h) = &hash {
                if let Err(e) = self.hasher.check_importable(h) {
                    bad(&format!("password_hash of '{name}': {}", hash_error(e)));
                }
            }
            let disabled = match nonempty(&row.disabled).map(str::trim) {
                None => None,
                Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
                Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
                Some(v) => {
                    bad(&AdminError::Invalid {
                        what: "disabled",
                        value: v.to_string(),
                        hint: "write true or false (or leave the cell empty: a new user is enabled, an updated one keeps its state)",
                    });
                    None
                }
            };
            let secret = row
                .totp_secret
                .as_ref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| totp::decode_base32(s).map(Zeroizing::new));
            if let Some(None) = secret {
                bad(&AdminError::Invalid {
                    what: "totp_secret",
                    value: "(hidden)".into(),
                    hint: "give the base32 secret (A-Z, 2-7) of at least 16 characters",
                });
            }
            let id = existing.get(&name).copied();
            match id {
                // The name is valid: the problem is the user behind it.
                Some(_) if !update => bad(&format!(
                    "user '{name}' exists already: remove the row, or import with --update to update it"
                )),
                Some(_) if secret.is_some() => bad(&AdminError::Invalid {
                    what: "totp_secret",
                    value: "(hidden)".into(),
                    hint: "the user exists already and --update does not enrol factors: empty the cell and use portcullis factor enroll totp",
                }),
                _ => {}
            }
            if !row_problems.is_empty() {
                problems.append(&mut row_problems);
                continue;
            }
            users.push(ImportedUser {
                name: name.clone(),
                created: id.is_none(),
                totp: id.is_none() && matches!(secret, Some(Some(_))),
                changed: match id {
                    None => Vec::new(),
                    Some(_) => [
                        ("email", row.email.is_some()),
                        ("phone", row.phone.is_some()),
                        ("groups", groups.is_some()),
                        ("password_hash", hash.is_some()),
                        ("disabled", disabled.is_some()),
                    ]
                    .into_iter()
                    .filter_map(|(column, set)| set.then_some(column))
                    .collect(),
                },
            });
            batch.push(match id {
                Some(user) => ImportUser::Update {
                    user,
                    email: row.email.as_ref().map(|_| email),
                    phone: row.phone.as_ref().map(|_| phone),
                    groups,
                    password_hash: hash,
                    disabled,
                },
                None => {
                    let factor = match secret.flatten() {
                        Some(secret) => {
                            totp_enrolled += 1;
                            let id = new_factor_id();
                            let params = TotpParams {
                                algorithm: TotpAlgorithm::SHA1,
                                digits: 6,
                                period: 30,
                            };
                            Some(Factor {
                                sealed_secret: self
                                    .key
                                    .seal(factor_context(&id).as_bytes(), &secret),
                                id,
                                user_id: 0,
                                kind: FactorKind::Totp,
                                state: FactorState::Confirmed,
                                params: serde_json::to_string(&params).unwrap_or_default(),
                                created_at: now,
                                confirmed_at: Some(now),
                                last_used_at: None,
                            })
                        }
                        None => None,
                    };
                    ImportUser::Create {
                        user: NewUser {
                            tenant_id: t.id,
                            name,
                            password_hash: hash,
                            email,
                            phone,
                            groups: groups.unwrap_or_default(),
                        },
                        factor,
                        disabled: disabled.unwrap_or(false),
                    }
                }
            });
        }
        if !problems.is_empty() {
            return Err(AdminError::ImportRows(problems));
        }
        let (created, updated) = self.store.import_users(&batch, now)?;
        Ok(ImportReport {
            created,
            updated,
            totp_enrolled,
            users,
        })
    }

    /// `user export`: every user of the tenant with the kinds of their factors.
    pub fn export_users(&self, tenant: &str) -> Result<Vec<ExportedUser>, AdminError> {
        let t = self.tenant(tenant)?;
        let mut out = Vec::new();
        for u in self.store.list_users(t.id)? {
            let factors = self
                .store
                .factors_of(u.id)?
                .into_iter()
                .map(|f| match f.state {
                    FactorState::Confirmed => f.kind.as_str().to_string(),
                    _ => format!("{}:{}", f.kind.as_str(), f.state.as_str()),
                })
                .collect();
            out.push(ExportedUser {
                name: u.name,
                email: u.email,
                phone: u.phone,
                groups: u.groups,
                disabled: u.disabled,
                factors,
            });
        }
        Ok(out)
    }
}

/// Whether an `https://` webhook URL names, as an address or `localhost`, the daemon's own
/// host or a private, link-local or unspecified network. The admin API refuses such a URL
/// from a tenant's token (the daemon must not post, for a tenant's admin, to services only
/// it can reach); the operator may set one. A name is checked by the admin API too, by
/// resolving it ([`webhook_host`], [`address_is_internal`]), and the daemon checks both
/// again at every post of such a webhook (a DNS answer may change after the check).
pub fn webhook_host_is_internal(url: &str) -> bool {
    let Some((host, _)) = webhook_host(url) else {
        return false;
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(address_is_internal)
}

/// The host (lower case, without a trailing dot or IPv6 brackets; an address in its usual
/// form) and port (443 unless given) of a webhook URL, read by the URL parser the HTTP
/// client uses (a `\` ends the host as a `/` does; `0x7f.1` is 127.0.0.1); None when it
/// names no host or does not parse.
pub fn webhook_host(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let host = match parsed.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    (!host.is_empty()).then_some((host, port))
}

/// Whether `ip` is the daemon's own host (loopback), a private, shared (CGNAT), link-local,
/// unspecified, "this network", benchmarking, broadcast or multicast address, or an IPv6
/// address that reaches such an IPv4 one (NAT64 64:ff9b::/96, 6to4, IPv4-compatible or
/// -mapped): where a tenant's webhook may not point.
pub fn address_is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let v4_internal = |v4: Ipv4Addr| {
        let o = v4.octets();
        v4.is_loopback()
            || v4.is_private()
            || v4.is_link_local()
            || v4.is_unspecified()
            || v4.is_broadcast()
            || v4.is_multicast()
            || o[0] == 0 // "this network"
            || o[0] == 100 && (64..128).contains(&o[1]) // CGNAT
            || o[0] == 198 && (o[1] & 0xfe) == 18 // 198.18.0.0/15, benchmarking
            || o[0] == 192 && o[1] == 0 && o[2] == 0 // 192.0.0.0/24, protocol assignments
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // An IPv4 address inside: NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach it.
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[0] & 0xfe00 == 0xfc00 // unique local
                || s[0] & 0xffc0 == 0xfe80 // link-local
                || (s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] && v4_internal(embedded(s[6], s[7])))
                || (s[0] == 0x2002 && v4_internal(embedded(s[1], s[2])))
                // IPv4-compatible (deprecated ::a.b.c.d)
                || (s[0..6] == [0; 6] && v4_internal(embedded(s[6], s[7])))
        }
    }
}

/// The cell's text, unless the cell is absent or blank.
fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

/// A hash that cannot be imported or set. One over the cost limits is an invalid value
/// (the admin API answers 400) that names its cost, never the hash.
fn hash_error(e: PasswordError) -> AdminError {
    match e {
        PasswordError::TooCostly { cost } => AdminError::Invalid {
            what: "password hash cost",
            value: cost,
            hint: crate::password::COST_LIMITS,
        },
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{webhook_host, webhook_host_is_internal};

    #[test]
    fn webhooks_to_the_daemons_host_or_private_networks_are_refused() {
        for internal in [
            "https://localhost/hook",
            "https://LOCALHOST.:8443/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3:443/x",
            "https://192.168.1.5/x",
            "https://172.16.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]:8443/x",
            "https://[fd00::5]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://user:pw@127.0.0.1/x",
            "https://0.1.2.3/x",
            "https://198.18.0.1/x",
            "https://255.255.255.255/x",
            "https://[64:ff9b::a00:1]/x",
            "https://[2002:a9fe:a9fe::1]/x",
            "https://[::127.0.0.1]/x",
            "https://[ff02::1]/x",
        ] {
            assert!(webhook_host_is_internal(internal), "{internal}");
        }
        for public in [
            "https://hooks.example.com/x",
            "https://203.0.113.9/x",
            "https://[2001:db8::1]:8443/x",
            "https://example.com/?next=127.0.0.1",
            "https://[64:ff9b::cb00:7109]/x",
        ] {
            assert!(!webhook_host_is_internal(public), "{public}");
        }
    }

    #[test]
    fn the_host_and_port_of_a_webhook_are_read_as_a_client_would() {
        let hp = |u: &str| webhook_host(u).map(|(h, p)| format!("{h} {p}"));
        assert_eq!(
            hp("https://Hooks.Example.com./x").as_deref(),
            Some("hooks.example.com 443")
        );
        assert_eq!(
            hp("https://u:p@h.example:8443?q").as_deref(),
            Some("h.example 8443")
        );
        assert_eq!(hp("https://[fd00::5]:9/x").as_deref(), Some("fd00::5 9"));
        assert_eq!(
            hp("https://[2001:db8::1]/x").as_deref(),
            Some("2001:db8::1 443")
        );
        // As the client reads it: the extra slash is skipped.
        assert_eq!(hp("https:///x").as_deref(), Some("x 443"));
        assert_eq!(hp("https://"), None);
        assert_eq!(hp("https://h.example:port/x"), None);
        // What the HTTP client connects to, not what a split at '/' and '@' would say.
        assert_eq!(
            hp("https://127.0.0.1\\@attacker.example/x").as_deref(),
            Some("127.0.0.1 443")
        );
        assert_eq!(hp("https://0x7f.1/x").as_deref(), Some("127.0.0.1 443"));
        assert_eq!(hp("https://2130706433/x").as_deref(), Some("127.0.0.1 443"));
        for internal in [
            "https://127.0.0.1\\@attacker.example/x",
            "https://0x7f.1/x",
            "https://[::ffff:10.0.0.1]/x",
        ] {
            assert!(webhook_host_is_internal(internal), "{internal}");
        }
    }
}
