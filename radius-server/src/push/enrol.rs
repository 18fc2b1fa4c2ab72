//! Enrolling a push factor, the same from the CLI, the admin API and `/my/`: check that the
//! tenant can push, make the pending factor, work out what the phone subscribes to, and
//! push the confirmation code. A factor whose code could not be sent is not kept.

use portcullis_core::admin::{Admin, AdminError, FactorInfo};
use portcullis_core::engine::{Engine, EngineError, SendOutcome};
use portcullis_core::push::WebhookTarget;

/// A pending push factor whose confirmation code was pushed.
#[derive(Debug)]
pub struct PushEnrolment {
    pub factor: FactorInfo,
    /// The ntfy topic URL the phone subscribes to (None for a webhook factor). It is the
    /// factor's secret address: shown to whoever enrols, never stored in clear.
    pub subscribe_url: Option<String>,
    /// The provider the code went through (`ntfy`, `webhook`).
    pub sent_to: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PushEnrolError {
    #[error("tenant '{tenant}' has no push channel: configure [tenants.{tenant}.push] (ntfy_url for the ntfy app, or webhook_secret for webhooks) and restart the server")]
    NotConfigured { tenant: String },
    #[error("[tenants.{tenant}.push] has no ntfy_url: set it to the ntfy server the phones subscribe to, or enrol with a webhook URL")]
    NoNtfyUrl { tenant: String },
    #[error("the confirmation code could not be sent ({reason}); the factor was not kept: check [tenants.{tenant}.push] and the push server, then enrol again")]
    NotSent { tenant: String, reason: String },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Enrol a push factor of `user` (to `webhook`, else a new ntfy topic) and push its code;
/// `factor confirm` with that code makes it count.
pub fn enroll_and_send(
    admin: &Admin,
    engine: &Engine,
    tenant: &str,
    user: &str,
    webhook: Option<WebhookTarget<'_>>,
) -> Result<PushEnrolment, PushEnrolError> {
    // An unknown tenant or user is that error, whatever the configuration.
    admin.list_factors(tenant, user)?;
    let Some(ntfy_url) = engine.push_enrolment_target(tenant) else {
        return Err(PushEnrolError::NotConfigured {
            tenant: tenant.to_string(),
        });
    };
    if webhook.is_none() && ntfy_url.is_none() {
        return Err(PushEnrolError::NoNtfyUrl {
            tenant: tenant.to_string(),
        });
    }
    let (factor, address) = admin.enroll_push(tenant, user, webhook)?;
    let subscribe_url = match (webhook, ntfy_url) {
        (None, Some(base)) => Some(format!("{base}/{address}")),
        _ => None,
    };
    let not_sent = |reason: String| {
        if let Err(e) = admin.remove_own_factor(tenant, user, &factor.factor_id) {
            tracing::error!(error = %e, tenant, user, factor = %factor.factor_id,
                "cannot remove a push factor whose code was not sent");
        }
        PushEnrolError::NotSent {
            tenant: tenant.to_string(),
            reason,
        }
    };
    match engine.send_push_enrolment_code(tenant, user, &factor.factor_id) {
        Ok(SendOutcome::Sent { to, .. }) => Ok(PushEnrolment {
            factor,
            subscribe_url,
            sent_to: to,
        }),
        Ok(other) => Err(not_sent(other.reason())),
        Err(e) => Err(not_sent(e.to_string())),
    }
}
