//! Checking a code against the user's factors: TOTP (with the replay cache), then
//! recovery codes.

use super::throttle::Streak;
use super::{Engine, EngineError};
use crate::clock::UnixTime;
use crate::codes::{hash_code, normalize_recovery_code, BYPASS_CODE_LEN};
use crate::hotp::{self, HotpParams};
use crate::model::{Factor, FactorKind, FactorState, Tenant, User};
use crate::policy::Decision;
use crate::totp::{self, TotpParams};

/// The result of checking one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code was right; `factor` names the kind used.
    Accepted { factor: &'static str },
    /// A right TOTP code that was already used, or an HOTP code behind the counter.
    Replayed,
    /// Not a valid code of any factor.
    Wrong,
}

impl CodeCheck {
    /// The audit reason.
    pub fn reason(&self) -> String {
        match self {
            CodeCheck::Accepted { factor } => format!("{factor} accepted"),
            CodeCheck::Replayed => "replayed code (already used)".into(),
            CodeCheck::Wrong => "wrong code".into(),
        }
    }
}

impl Engine {
    /// Check `code` against `factors` (the user's, read for this login) and count the
    /// result in the user's throttle. The caller has checked the throttle (`streak`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_code(
        &self,
        tenant: &Tenant,
        user: &User,
        factors: &[Factor],
        code: &str,
        now: UnixTime,
        d: &Decision,
        streak: Streak,
    ) -> Result<CodeCheck, EngineError> {
        // A shared store: the failure reserved at the gate is counted whatever comes of
        // the check, an error too, unless the code turns out right.
        let reserved = self.code_reserved(user);
        let result = self.match_code(user, factors, code.trim(), now, d)?;
        match result {
            // Nothing to clear when no failure was on record (one write less per login).
            CodeCheck::Accepted { .. } if streak.failures_on_record => {
                self.clear_failures(tenant, user)?
            }
            CodeCheck::Accepted { .. } if reserved => self.give_back_failure(tenant, user)?,
            CodeCheck::Accepted { .. } => {}
            _ if reserved => self.keep_failure(tenant, user, now)?,
            _ => self.count_failure(tenant, user, now)?,
        }
        Ok(result)
    }

    /// Only factors that `d` allows are looked at, so a code of another kind is never spent.
    fn match_code(
        &self,
        user: &User,
        factors: &[Factor],
        code: &str,
        now: UnixTime,
        d: &Decision,
    ) -> Result<CodeCheck, EngineError> {
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            if !d.allows("recovery") {
                return Ok(CodeCheck::Wrong);
            }
            return self.match_recovery_code(user, code, now);
        }
        if code.len() == BYPASS_CODE_LEN && d.allows("bypass") {
            let hash = hash_code(&self.bypass_pepper, code);
            if self.store.use_bypass_code(user.id, &hash, now)? {
                tracing::warn!(user = %user.name, "bypass code used");
                return Ok(CodeCheck::Accepted { factor: "bypass" });
            }
            return Ok(CodeCheck::Wrong);
        }
        let usable: Vec<&Factor> = factors
            .iter()
            .filter(|f| f.state == FactorState::Confirmed && d.allows(f.kind.as_str()))
            .collect();
        for f in &usable {
            let result = match f.kind {
                FactorKind::Totp => self.match_totp(f, code, now)?,
                FactorKind::Hotp => self.match_hotp(f, code, now)?,
                // Checked below against the codes that were sent.
                FactorKind::Sms | FactorKind::Email | FactorKind::Push => None,
            };
            // A code that one factor saw used is refused, whatever the others say: two
            // factors holding one secret (a token imported twice) must not let one code
            // in twice.
            if let Some(checked) = result {
                return Ok(checked);
            }
        }
        let out_of_band: Vec<&Factor> = usable
            .into_iter()
            .filter(|f| f.kind.is_out_of_band())
            .collect();
        if let Some(kind) = self.match_sent_code(user, &out_of_band, code, now)? {
            return Ok(CodeCheck::Accepted {
                factor: kind.as_str(),
            });
        }
        Ok(CodeCheck::Wrong)
    }

    pub(super) fn open_secret(&self, f: &Factor) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        match self
            .key
            .open(factor_context(&f.id).as_bytes(), &f.sealed_secret)
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(factor = %f.id, error = %e, "cannot decrypt factor secret; skipped");
                None
            }
        }
    }

    fn match_totp(
        &self,
        f: &Factor,
        code: &str,
        now: UnixTime,
    ) -> Result<Option<CodeCheck>, EngineError> {
        let Ok(params) = serde_json::from_str::<TotpParams>(&f.params) else {
            tracing::error!(factor = %f.id, "factor has unreadable parameters; skipped");
            return Ok(None);
        };
        if params.digits as usize != code.len() {
            return Ok(None);
        }
        let Some(secret) = self.open_secret(f) else {
            return Ok(None);
        };
        let Some(step) = totp::verify(&secret, &params, code, now, self.settings.totp_window)
        else {
            return Ok(None);
        };
        let expires = totp::replay_expiry(step, params.period);
        // The code's use and, when it is due, the factor's last use: one atomic write.
        let fresh = if f.last_use_outdated(now) {
            self.store.use_otp(&f.id, step as i64, expires, now)?
        } else {
            self.store.record_otp_use(&f.id, step as i64, expires)?
        };
        if fresh {
            return Ok(Some(CodeCheck::Accepted { factor: "totp" }));
        }
        Ok(Some(CodeCheck::Replayed))
    }

    /// HOTP: the counter moves past the matched code by compare-and-set, so a code is
    /// accepted once even when two requests carry it at the same moment.
    fn match_hotp(
        &self,
        f: &Factor,
        code: &str,
        now: UnixTime,
    ) -> Result<Option<CodeCheck>, EngineError> {
        let Ok(params) = serde_json::from_str::<HotpParams>(&f.params) else {
            tracing::error!(factor = %f.id, "factor has unreadable parameters; skipped");
            return Ok(None);
        };
        if params.digits as usize != code.len() {
            return Ok(None);
        }
        let Some(secret) = self.open_secret(f) else {
            return Ok(None);
        };
        let Some(counter) = hotp::find(&secret, &params, code) else {
            // A code just behind the counter was used (or passed over by a later one), on
            // this factor or on another holding the same secret: a replay, not a miss.
            return Ok(hotp::passed(&secret, &params, code).then_some(CodeCheck::Replayed));
        };
        let next = HotpParams {
            counter: counter + 1,
            ..params
        };
        let new = serde_json::to_string(&next).unwrap_or_default();
        if self.store.update_factor_params(&f.id, &f.params, &new)? {
            if f.last_use_outdated(now) {
                self.store.touch_factor(&f.id, now)?;
            }
            return Ok(Some(CodeCheck::Accepted { factor: "hotp" }));
        }
        // Another request moved the counter first: this code was spent there.
        Ok(Some(CodeCheck::Replayed))
    }

    fn match_recovery_code(
        &self,
        user: &User,
        code: &str,
        now: UnixTime,
    ) -> Result<CodeCheck, EngineError> {
        if let Some(normalized) = normalize_recovery_code(code) {
            let hash = hash_code(&self.recovery_pepper, &normalized);
            if self.store.use_recovery_code(user.id, &hash, now)? {
                tracing::warn!(user = %user.name, "recovery code used");
                return Ok(CodeCheck::Accepted { factor: "recovery" });
            }
        }
        Ok(CodeCheck::Wrong)
    }
}

/// The AEAD context of a factor's sealed secret: a secret moved to another row fails to open.
pub fn factor_context(factor_id: &str) -> String {
    format!("portcullis factor secret v1 {factor_id}")
}
