//! Enrolment on first login (`unenrolled = "enroll"`).
//!
//! A user with no usable second factor (no confirmed factor, recovery or bypass code) who passes the first factor gets a prompt whose text
//! carries a single-use link `{public_url}/v1/enroll/{token}` (valid [`ENROLL_TTL`]
//! seconds; the store keeps only a keyed hash of the token). Opening the link claims it
//! once and makes a new *pending* TOTP factor, whose QR code and secret the page shows.
//! The answer to the prompt is the app's first code: it confirms that factor (the same
//! checks as `factor confirm`, with the replay cache) and accepts the login. Nothing is
//! usable before that code.

use rand::RngCore;

use super::{accepted, carry, txn_ref, Engine, EngineError, Expects, LoginRequest, Outcome, Step};
use crate::clock::UnixTime;
use crate::codes::hash_code;
use crate::config::Unenrolled;
use crate::model::*;
use crate::policy::Decision;
use crate::totp::{self, TotpParams};

/// How long an enrolment link (and the login waiting for its first code) lives.
pub const ENROLL_TTL: i64 = 600;

/// Sub-key label of the enrolment link hashes.
pub const ENROLL_PEPPER_LABEL: &str = "portcullis enrolment links v1";

/// Sub-key label of the web pages' session signatures.
pub const WEB_SESSION_LABEL: &str = "portcullis web sessions v1";

/// The path prefix of enrolment links on the HTTP listener.
pub const ENROLL_PATH: &str = "/v1/enroll/";

/// Length of a link token: 32 random bytes, base64url without padding.
const TOKEN_LEN: usize = 43;

/// An enrolment link that was just opened (claimed): whose it is.
#[derive(Debug, Clone)]
pub struct OpenedEnrollment {
    pub tenant: String,
    pub username: String,
    pub expires_at: UnixTime,
    token_hash: String,
}

impl Engine {
    /// The base of enrolment links (`[http] public_url`); None: `enroll` acts as `deny`.
    pub fn set_enroll_url(&mut self, public_url: Option<&str>) {
        self.enroll_base = public_url.map(|u| u.trim_end_matches('/').to_string());
    }

    /// `[http] public_url` as given to [`Engine::set_enroll_url`].
    pub fn public_url(&self) -> Option<&str> {
        self.enroll_base.as_deref()
    }

    /// The key that signs the web pages' session cookies (derived from the master key).
    pub fn web_session_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.key.derive(WEB_SESSION_LABEL)
    }

    fn enroll_hash(&self, token: &str) -> String {
        hash_code(&self.key.derive(ENROLL_PEPPER_LABEL), token)
    }

    /// After the first factor, for a user with no confirmed factor when the client says
    /// `enroll`: a new transaction and link, and the prompt that carries it. None when
    /// enrolment does not apply (the `unenrolled` handling then decides).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enroll_start(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &LoginRequest,
        first: &str,
        d: &Decision,
        now: UnixTime,
        reply_attributes: &[super::ReplyAttribute],
    ) -> Result<Option<Outcome>, EngineError> {
        if req.unenrolled != Unenrolled::Enroll || !d.allows("totp") {
            return Ok(None);
        }
        let Some(base) = &self.enroll_base else {
            tracing::warn!(tenant = %tenant.name, client = %req.channel.client(),
                "unenrolled = enroll needs [http] public_url; treated as deny");
            return Ok(None);
        };
        // A user who can give any second factor (a bypass code from the helpdesk, recovery
        // codes) uses it; the link is for those with nothing. A user with a confirmed
        // factor that cannot be used now (an SMS factor without a sender) gets no link
        // either: whoever has the password could bind their own app to the account.
        let factors = self.store.factors_of(user.id)?;
        if self.has_usable_factor(tenant, user, &factors, d)?
            || factors.iter().any(|f| f.state == FactorState::Confirmed)
        {
            return Ok(None);
        }
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = data_encoding::HEXLOWER.encode(&raw);
        let expires_at = now + ENROLL_TTL.max(self.settings.transaction_ttl);
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
            expires_at,
        })?;
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        let token = zeroize::Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(secret.as_ref()));
        self.store.add_enrollment(&Enrollment {
            token_hash: self.enroll_hash(&token),
            tenant_id: tenant.id,
            tenant: tenant.name.clone(),
            user_id: user.id,
            username: user.name.clone(),
            txn_id: id.clone(),
            factor_id: None,
            created_at: now,
            expires_at: now + ENROLL_TTL,
            opened_at: None,
        })?;
        Ok(Some(Outcome {
            step: Step::Prompt {
                txn: txn_ref(&id, 0),
                text: format!(
                    "No second factor is set up for this account. Within 10 minutes, open {base}{ENROLL_PATH}{} and add the account to your authenticator app; then enter the code it shows:",
                    token.as_str()
                ),
                echo: false,
                expects: Expects::Code,
                choices: Vec::new(),
            },
            reason: format!(
                "no second factor enrolled; enrolment link issued (unenrolled = enroll; {})",
                d.label()
            ),
            factors: vec![first.to_string()],
        }))
    }

    /// The answer to an enrolment prompt: the first code of the new factor. None when the
    /// transaction is not an enrolment.
    pub(super) fn enroll_answer(
        &self,
        tenant: &Tenant,
        user: &User,
        txn: &Transaction,
        code: &str,
        d: &Decision,
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(e) = self.store.enrollment_of_transaction(&txn.id)? else {
            return Ok(None);
        };
        if e.user_id != user.id || e.tenant_id != tenant.id {
            self.store.delete_transaction(&txn.id)?;
            return Ok(Some(Outcome::reject(
                "enrolment link belongs to another user",
            )));
        }
        // The link is for a user with nothing: once the user has confirmed a factor some
        // other way (their own link, an admin), whoever holds this older link and the
        // password must not bind a second app to the account.
        let others = self.store.factors_of(user.id)?;
        if others
            .iter()
            .any(|f| f.state == FactorState::Confirmed && Some(&f.id) != e.factor_id.as_ref())
            || self.has_usable_factor(tenant, user, &others, d)?
        {
            self.store.delete_transaction(&txn.id)?;
            if let Some(fid) = &e.factor_id {
                self.store.remove_factor(user.id, fid)?;
            }
            return Ok(Some(Outcome::reject(
                "enrolment login ended: the user has had a second factor (or a recovery or bypass code) since its link was issued (the link's pending factor was removed)",
            )));
        }
        let confirmed = match &e.factor_id {
            Some(fid) => self.confirm_enrolled(user, fid, code, now)?,
            None => false,
        };
        if confirmed {
            self.store.delete_transaction(&txn.id)?;
            self.clear_failures(tenant, user)?;
            let mut o = accepted(user, txn.first_factor(), "totp", d);
            o.reason = format!(
                "enrolled a TOTP factor at login and confirmed it with its first code; {}",
                o.reason
            );
            return Ok(Some(carry(o, &txn.reply_attributes)));
        }
        let reason = if e.factor_id.is_none() {
            "enrolment link not opened yet"
        } else {
            "wrong code for the factor being enrolled"
        };
        if !code.is_empty() {
            self.count_failure(tenant, user, now)?;
        }
        let attempts = self.store.add_transaction_attempt(&txn.id)?;
        if attempts >= self.settings.max_attempts {
            self.store.delete_transaction(&txn.id)?;
            return Ok(Some(Outcome::reject(format!(
                "{reason} ({attempts} of {} attempts; login ended)",
                self.settings.max_attempts
            ))));
        }
        if let Some(blocked) = self.throttle_blocks(tenant, user, now)? {
            self.store.delete_transaction(&txn.id)?;
            return Ok(Some(blocked));
        }
        let text = if e.factor_id.is_none() {
            "Open the enrolment link first and add the account to your authenticator app, then enter the code it shows:"
        } else {
            "Wrong code, try again. Enter the code your authenticator app shows for the new account:"
        };
        Ok(Some(Outcome {
            step: Step::Prompt {
                txn: txn_ref(&txn.id, txn.step),
                text: text.into(),
                echo: false,
                expects: Expects::Code,
                choices: Vec::new(),
            },
            reason: reason.into(),
            factors: vec![txn.first_factor().to_string()],
        }))
    }

    /// `factor confirm` for the pending TOTP factor of an enrolment: the code must match,
    /// must not have been used, and confirms the factor. False on any mismatch.
    fn confirm_enrolled(
        &self,
        user: &User,
        factor_id: &str,
        code: &str,
        now: UnixTime,
    ) -> Result<bool, EngineError> {
        let Some(f) = self
            .store
            .factors_of(user.id)?
            .into_iter()
            .find(|f| f.id == factor_id && f.kind == FactorKind::Totp)
        else {
            return Ok(false);
        };
        if f.state != FactorState::Pending {
            return Ok(false);
        }
        let Ok(params) = serde_json::from_str::<TotpParams>(&f.params) else {
            tracing::error!(factor = %f.id, "factor has unreadable parameters");
            return Ok(false);
        };
        let code = code.trim();
        if params.digits as usize != code.len() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        let Some(secret) = self.open_secret(&f) else {
            return Ok(false);
        };
        let Some(step) = totp::verify(&secret, &params, code, now, self.settings.totp_window)
        else {
            return Ok(false);
        };
        let expires = totp::replay_expiry(step, params.period);
        if !self.store.record_otp_use(&f.id, step as i64, expires)? {
            return Ok(false);
        }
        // Only as the user's first confirmed factor: another enrolment link of the user
        // answered at the same moment (on any node) must not bind a second app.
        if !self.store.confirm_first_factor(user.id, &f.id, now)? {
            return Ok(false);
        }
        self.store.touch_factor(&f.id, now)?;
        Ok(true)
    }

    /// Opening an enrolment link: claims it (once, before it expires) and says whose it
    /// is. None for an unknown, expired or already opened link, or a user gone since.
    pub fn open_enrollment(&self, token: &str) -> Result<Option<OpenedEnrollment>, EngineError> {
        if token.len() != TOKEN_LEN
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let now = self.clock.now();
        let hash = self.enroll_hash(token);
        let Some(e) = self.store.open_enrollment(&hash, now)? else {
            return Ok(None);
        };
        let Some(tenant) = self.tenant(&e.tenant)? else {
            return Ok(None);
        };
        let user = match self.store.user_by_name(tenant.id, &e.username)? {
            Some(u) if u.id == e.user_id && tenant.id == e.tenant_id && !u.disabled => u,
            _ => return Ok(None),
        };
        // Issued to a user with no factor; one confirmed since (their own link, an admin)
        // makes this link void: it would bind a second app for whoever has the password.
        let factors = self.store.factors_of(user.id)?;
        // As at issue: any confirmed factor, or a code the user can give (recovery codes,
        // a bypass code from the helpdesk), under no rule's narrowing.
        let no_attributes = std::collections::BTreeMap::new();
        let any_rule = crate::policy::evaluate(
            &[],
            &crate::policy::Context {
                client: "",
                host: None,
                groups: &[],
                attributes: &no_attributes,
                source: "",
                now,
            },
        );
        if factors.iter().any(|f| f.state == FactorState::Confirmed)
            || self.has_usable_factor(&tenant, &user, &factors, &any_rule)?
        {
            tracing::warn!(tenant = %e.tenant, user = %e.username,
                "enrolment link opened after the user confirmed a second factor; refused");
            return Ok(None);
        }
        Ok(Some(OpenedEnrollment {
            tenant: e.tenant,
            username: e.username,
            expires_at: e.expires_at,
            token_hash: hash,
        }))
    }

    /// Ties the pending factor made for an opened link to it, so that the login's answer
    /// confirms that factor. False if the link already has one.
    pub fn attach_enrollment_factor(
        &self,
        opened: &OpenedEnrollment,
        factor_id: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .store
            .set_enrollment_factor(&opened.token_hash, factor_id)?)
    }
}
