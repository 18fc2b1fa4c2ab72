//! Codes sent out of band (SMS): making, sending, quotas. Checking a sent code is part of
//! [`Engine::check_code`](super::Engine); the code is single-use and expires.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::clock::UnixTime;
use crate::codes::hash_code;
use crate::delivery::{mask_address, DeliveryError};
use crate::model::{Factor, FactorKind, FactorState, User};
use crate::policy::Decision;

/// The settings of an SMS factor, stored as its JSON `params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsParams {
    /// E.164 phone number.
    pub phone: String,
}

/// Digits of a sent code.
pub const SENT_CODE_LEN: usize = 6;

/// What happened when a code was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent to the (masked) address.
    Sent { to: String },
    /// The previous code is younger than the resend delay.
    TooSoon { wait: i64 },
    /// The hourly quota is used up.
    QuotaExceeded,
    /// The tenant has no provider for this channel.
    NotConfigured,
    /// The provider did not take it.
    Failed(DeliveryError),
}

impl SendOutcome {
    /// The audit reason.
    pub fn reason(&self) -> String {
        match self {
            SendOutcome::Sent { to } => format!("sms code sent to {to}"),
            SendOutcome::TooSoon { wait } => format!("sms resend refused: {wait} s too soon"),
            SendOutcome::QuotaExceeded => "sms refused: hourly quota used up".into(),
            SendOutcome::NotConfigured => {
                "sms refused: no sms provider configured for the tenant".into()
            }
            SendOutcome::Failed(e) => format!("sms not sent: {e}"),
        }
    }

    /// What the user is told.
    pub fn user_text(&self) -> String {
        match self {
            SendOutcome::Sent { to } => format!("A code was sent to {to}."),
            SendOutcome::TooSoon { wait } => {
                format!("Wait {wait} s before asking for another text message.")
            }
            SendOutcome::QuotaExceeded => {
                "Too many text messages were sent; try again later.".into()
            }
            SendOutcome::NotConfigured | SendOutcome::Failed(_) => {
                "The text message could not be sent.".into()
            }
        }
    }
}

impl Engine {
    /// The user's confirmed SMS factor, if the tenant can send text messages.
    pub(super) fn sms_factor(
        &self,
        tenant: &str,
        user: &User,
        d: &Decision,
    ) -> Result<Option<Factor>, EngineError> {
        if !self.senders.contains_key(tenant) || !d.allows("sms") {
            return Ok(None);
        }
        Ok(self
            .store
            .factors_of(user.id)?
            .into_iter()
            .find(|f| f.kind == FactorKind::Sms && f.state == FactorState::Confirmed))
    }

    /// Make a code for `factor`, send it, and keep its hash (send first: a code that never
    /// left is never valid).
    pub fn send_code(
        &self,
        tenant: &str,
        user: &User,
        factor: &Factor,
    ) -> Result<SendOutcome, EngineError> {
        let Some((sender, settings)) = self.senders.get(tenant) else {
            return Ok(SendOutcome::NotConfigured);
        };
        let Ok(params) = serde_json::from_str::<SmsParams>(&factor.params) else {
            tracing::error!(factor = %factor.id, "sms factor has unreadable parameters");
            return Ok(SendOutcome::Failed(DeliveryError::Refused(
                "factor has no phone number".into(),
            )));
        };
        let now: UnixTime = self.clock.now();
        let (count, last) = self.store.sent_codes_since(user.id, now - 3600)?;
        if let Some(last) = last {
            if now < last + settings.resend_after {
                return Ok(SendOutcome::TooSoon {
                    wait: last + settings.resend_after - now,
                });
            }
        }
        if count >= settings.max_per_hour {
            return Ok(SendOutcome::QuotaExceeded);
        }
        let mut rng = rand::rngs::OsRng;
        let code: String = (0..SENT_CODE_LEN)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let message = settings
            .template
            .replace("{issuer}", &settings.issuer)
            .replace("{code}", &code);
        if let Err(e) = sender.send(&params.phone, &code, &message) {
            tracing::warn!(tenant, user = %user.name, provider = sender.provider(), error = %e, "sms not sent");
            return Ok(SendOutcome::Failed(e));
        }
        let hash = hash_code(&self.sent_pepper, &code);
        self.store
            .add_sent_code(user.id, &factor.id, &hash, now + settings.code_ttl, now)?;
        Ok(SendOutcome::Sent {
            to: mask_address(&params.phone),
        })
    }

    /// Send the confirmation code of a pending (or confirmed) SMS factor (`factor enroll sms`).
    pub fn send_enrolment_code(
        &self,
        tenant: &str,
        username: &str,
        factor_id: &str,
    ) -> Result<SendOutcome, EngineError> {
        let Some(t) = self.store.tenant_by_name(tenant)? else {
            return Ok(SendOutcome::Failed(DeliveryError::Refused(format!(
                "tenant '{tenant}' does not exist"
            ))));
        };
        let Some(user) = self.store.user_by_name(t.id, username)? else {
            return Ok(SendOutcome::Failed(DeliveryError::Refused(format!(
                "user '{username}' does not exist"
            ))));
        };
        let Some(factor) = self
            .store
            .factors_of(user.id)?
            .into_iter()
            .find(|f| f.id == factor_id && f.kind == FactorKind::Sms)
        else {
            return Ok(SendOutcome::Failed(DeliveryError::Refused(format!(
                "no sms factor '{factor_id}'"
            ))));
        };
        self.send_code(tenant, &user, &factor)
    }

    /// A sent code: the factor it was sent for, spent now.
    pub(super) fn match_sent_code(
        &self,
        user: &User,
        code: &str,
        now: UnixTime,
    ) -> Result<Option<String>, EngineError> {
        if code.len() != SENT_CODE_LEN {
            return Ok(None);
        }
        let hash = hash_code(&self.sent_pepper, code);
        Ok(self.store.use_sent_code(user.id, &hash, now)?)
    }
}
