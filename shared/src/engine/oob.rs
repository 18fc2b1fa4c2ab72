//! Codes sent out of band (SMS, e-mail): making, sending, quotas. Checking a sent code is
//! part of [`Engine::check_code`](super::Engine); the code is single-use and expires.
//!
//! E-mail is weaker than the other factors (a mailbox is often reachable with the very
//! password being checked), so, as in the product documentation this project follows, an
//! e-mail factor only counts for a user who also holds another confirmed factor.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::clock::UnixTime;
use crate::codes::hash_code;
use crate::delivery::{mask_address, DeliveryError};
use crate::model::{Factor, FactorKind, FactorState, User};
use crate::policy::Decision;
use crate::store::{SendClaim, SendLimits, StoreError};

/// The settings of an SMS factor, stored as its JSON `params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsParams {
    /// E.164 phone number.
    pub phone: String,
}

/// The settings of an e-mail factor, stored as its JSON `params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailParams {
    pub email: String,
}

/// Digits of a sent code.
pub const SENT_CODE_LEN: usize = 6;

/// How the stored "hash" of a claimed send starts until its code is confirmed sent: never
/// the start of a hash (hex digits), so a claim can never match a typed code.
const RESERVED: &str = "reserved:";

/// The out-of-band kinds, in the order they are offered.
pub const OUT_OF_BAND: [FactorKind; 2] = [FactorKind::Sms, FactorKind::Email];

/// What a user types instead of a code to get one sent: `sms` or `email`.
pub fn keyword(answer: &str) -> Option<FactorKind> {
    OUT_OF_BAND
        .into_iter()
        .find(|k| answer.trim().eq_ignore_ascii_case(k.as_str()))
}

/// What happened when a code was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent to the (masked) address.
    Sent { kind: FactorKind, to: String },
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
            SendOutcome::Sent { kind, to } => format!("{} code sent to {to}", kind.as_str()),
            SendOutcome::TooSoon { wait } => format!("resend refused: {wait} s too soon"),
            SendOutcome::QuotaExceeded => "code not sent: hourly quota used up".into(),
            SendOutcome::NotConfigured => {
                "code not sent: no provider configured for the tenant".into()
            }
            SendOutcome::Failed(e) => format!("code not sent: {e}"),
        }
    }

    /// What the user is told.
    pub fn user_text(&self) -> String {
        match self {
            SendOutcome::Sent { to, .. } => format!("A code was sent to {to}."),
            SendOutcome::TooSoon { wait } => {
                format!("Wait {wait} s before asking for another code.")
            }
            SendOutcome::QuotaExceeded => "Too many codes were sent; try again later.".into(),
            SendOutcome::NotConfigured | SendOutcome::Failed(_) => {
                "The code could not be sent.".into()
            }
        }
    }
}

/// Where a factor's codes go.
pub(super) fn address_of(f: &Factor) -> Option<String> {
    match f.kind {
        FactorKind::Sms => serde_json::from_str::<SmsParams>(&f.params)
            .ok()
            .map(|p| p.phone),
        FactorKind::Email => serde_json::from_str::<EmailParams>(&f.params)
            .ok()
            .map(|p| p.email),
        _ => None,
    }
}

/// The stored hash of a sent code: bound to its factor, so a code only counts for the
/// factor (and kind) it was sent for.
pub(crate) fn sent_code_hash(pepper: &[u8; 32], factor_id: &str, code: &str) -> String {
    hash_code(pepper, &format!("{factor_id}:{code}"))
}

impl Engine {
    /// Whether the tenant can send codes of `kind`.
    pub(super) fn can_send(&self, tenant: &str, kind: FactorKind) -> bool {
        self.senders.contains_key(&(tenant.to_string(), kind))
    }

    /// The user's confirmed factor of out-of-band `kind` that can be used now: the tenant
    /// can send it, the decision allows it, and (e-mail) the user holds another factor.
    pub(super) fn oob_factor(
        &self,
        tenant: &str,
        factors: &[Factor],
        kind: FactorKind,
        d: &Decision,
    ) -> Option<Factor> {
        if !self.can_send(tenant, kind) || !d.allows(kind.as_str()) {
            return None;
        }
        let confirmed = |f: &&Factor| f.state == FactorState::Confirmed;
        if kind == FactorKind::Email
            && !factors
                .iter()
                .filter(confirmed)
                .any(|f| f.kind != FactorKind::Email)
        {
            return None;
        }
        factors
            .iter()
            .find(|f| f.kind == kind && f.state == FactorState::Confirmed)
            .cloned()
    }

    /// Make a code for `factor`, send it, and keep its hash. The send is claimed first
    /// (atomically, against the quota and the resend pause); the code becomes valid only
    /// once the provider took it, and a send the provider refused is not counted.
    pub fn send_code(
        &self,
        tenant: &str,
        user: &User,
        factor: &Factor,
    ) -> Result<SendOutcome, EngineError> {
        let Some((sender, settings)) = self.senders.get(&(tenant.to_string(), factor.kind)) else {
            return Ok(SendOutcome::NotConfigured);
        };
        let Some(to) = address_of(factor) else {
            tracing::error!(factor = %factor.id, "factor has no readable address");
            return Ok(SendOutcome::Failed(DeliveryError::Refused(
                "factor has no address".into(),
            )));
        };
        let now: UnixTime = self.clock.now();
        // The send is claimed before the provider is asked (which takes up to seconds):
        // logins asking at the same moment, on this node or others, each see the claims
        // of the others, so no more codes go out than the quota and the resend pause allow.
        let mut rng = rand::rngs::OsRng;
        let reservation = format!(
            "{RESERVED}{}",
            data_encoding::HEXLOWER.encode(&rng.gen::<[u8; 16]>())
        );
        let limits = SendLimits {
            max_per_hour: settings.max_per_hour,
            resend_after: settings.resend_after,
        };
        match self
            .store
            .claim_code_send(user.id, &factor.id, &reservation, limits, now)?
        {
            SendClaim::Claimed => {}
            SendClaim::TooSoon { last } => {
                return Ok(SendOutcome::TooSoon {
                    wait: last + settings.resend_after - now,
                })
            }
            SendClaim::QuotaExceeded => return Ok(SendOutcome::QuotaExceeded),
        }
        // A failed send is no sent code: the claim is given back.
        let release = |why: &str| {
            if let Err(e) = self.store.release_code_send(user.id, &reservation) {
                tracing::warn!(tenant, user = %user.name, error = %e,
                    "a send that did not happen still counts toward the user's hourly quota ({why})");
            }
        };
        if let Err(e) = super::blocking_point() {
            release("not sent in a batch");
            return Err(e);
        }
        let code: String = (0..SENT_CODE_LEN)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let message = settings
            .template
            .replace("{issuer}", &settings.issuer)
            .replace("{code}", &code);
        let sent = sender.send(&to, &code, &message);
        match sent {
            Err(e) if !e.may_have_been_sent() => {
                tracing::warn!(tenant, user = %user.name, provider = sender.provider(), error = %e, "code not sent");
                release("the provider did not take it");
                return Ok(SendOutcome::Failed(e));
            }
            _ => {}
        }
        // Sent, or perhaps (the provider timed out after taking the request): it counts
        // toward the quota and the resend pause, or a slow provider would let anyone with
        // the password send codes without limit; and it works if it arrives.
        let hash = sent_code_hash(&self.sent_pepper, &factor.id, &code);
        if !self
            .store
            .confirm_code_send(user.id, &reservation, &hash, now + settings.code_ttl)?
        {
            // Only if the user was deleted while the code was on its way.
            return Err(StoreError::NotFound {
                what: "user of a code being sent",
                name: user.name.clone(),
            }
            .into());
        }
        if let Err(e) = sent {
            tracing::warn!(tenant, user = %user.name, provider = sender.provider(), error = %e,
                "code perhaps not sent; it counts toward the user's quota and works if it arrives");
            return Ok(SendOutcome::Failed(e));
        }
        Ok(SendOutcome::Sent {
            kind: factor.kind,
            to: mask_address(&to),
        })
    }

    /// Send the confirmation code of a pending (or confirmed) SMS or e-mail factor
    /// (`factor enroll sms|email`).
    pub fn send_enrolment_code(
        &self,
        tenant: &str,
        username: &str,
        factor_id: &str,
    ) -> Result<SendOutcome, EngineError> {
        let Some(t) = self.tenant(tenant)? else {
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
            .find(|f| f.id == factor_id && f.kind.is_out_of_band())
        else {
            return Ok(SendOutcome::Failed(DeliveryError::Refused(format!(
                "no sms or email factor '{factor_id}'"
            ))));
        };
        self.send_code(tenant, &user, &factor)
    }

    /// A sent code for one of `factors` (already filtered by policy): the kind it was
    /// sent for, spent now.
    pub(super) fn match_sent_code(
        &self,
        user: &User,
        factors: &[&Factor],
        code: &str,
        now: UnixTime,
    ) -> Result<Option<FactorKind>, EngineError> {
        if code.len() != SENT_CODE_LEN {
            return Ok(None);
        }
        for f in factors {
            let hash = sent_code_hash(&self.sent_pepper, &f.id, code);
            if self.store.use_sent_code(user.id, &hash, now)?.is_some() {
                if f.last_use_outdated(now) {
                    self.store.touch_factor(&f.id, now)?;
                }
                return Ok(Some(f.kind));
            }
        }
        Ok(None)
    }
}
