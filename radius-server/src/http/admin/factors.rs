//! `/v1/tenants/{tenant}/users/{user}/factors`: list, enrol (TOTP, HOTP: the secret and
//! otpauth URI are returned once; push: the topic to subscribe to, with the confirmation
//! code pushed to the phone), confirm, remove one, reset all.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Json;
use portcullis_core::admin::{EnrolledTotp, FactorInfo};
use portcullis_core::model::AdminRole;
use portcullis_core::push::WebhookTarget;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};
use crate::push::PushEnrolError;
use portcullis_core::engine::SendOutcome;

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/factors",
            methods: &["get", "post", "delete"],
            handlers: get(list).post(enroll).delete(reset),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/factors/{factor}",
            methods: &["delete"],
            handlers: delete(remove),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/factors/{factor}/confirm",
            methods: &["post"],
            handlers: post(confirm),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/factors/{factor}/send-code",
            methods: &["post"],
            handlers: post(send_code),
        },
    ]
}

async fn list(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Json<Vec<FactorInfo>>, ApiError> {
    caller.check(&tenant, Perm::ReadFactors)?;
    let ctx = s.admin.clone();
    Ok(Json(
        blocking(move || ctx.admin.list_factors(&tenant, &user)).await?,
    ))
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum EnrolKind {
    Totp,
    Hotp,
    Push,
    Sms,
    Email,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolBody {
    kind: EnrolKind,
    /// TOTP/HOTP: an existing base32 secret (migration, hardware token): confirmed at once.
    #[serde(default)]
    secret: Option<String>,
    /// TOTP/HOTP; 6 unless given.
    #[serde(default)]
    digits: Option<u8>,
    /// TOTP/HOTP; SHA1 unless given.
    #[serde(default)]
    algorithm: Option<String>,
    /// HOTP only: the token's counter.
    #[serde(default)]
    counter: Option<u64>,
    /// Push only: deliver to this https:// webhook instead of a new ntfy topic.
    #[serde(default)]
    webhook: Option<String>,
    /// SMS only: the phone number (E.164); else the user's phone.
    #[serde(default)]
    phone: Option<String>,
    /// E-mail only: the address; else the user's e-mail.
    #[serde(default)]
    email: Option<String>,
}

/// A new SMS or e-mail factor: pending until the code sent to it confirms it.
#[derive(Serialize)]
struct EnrolledSent {
    factor_id: String,
    kind: &'static str,
    state: &'static str,
    /// Where the code went, masked.
    code_sent_to: String,
}

/// A new push factor: pending until the pushed code confirms it.
#[derive(Serialize)]
struct EnrolledPush {
    factor_id: String,
    kind: &'static str,
    state: &'static str,
    /// The ntfy topic URL to subscribe to (None for a webhook), and its QR code as SVG.
    subscribe_url: Option<String>,
    subscribe_qr_svg: Option<String>,
    /// The channel the confirmation code went through.
    code_sent_via: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Enrolled {
    Otp(EnrolledTotp),
    Push(EnrolledPush),
    Sent(EnrolledSent),
}

impl From<PushEnrolError> for ApiError {
    fn from(e: PushEnrolError) -> Self {
        match e {
            PushEnrolError::Admin(e) => e.into(),
            PushEnrolError::Engine(e) => {
                tracing::error!(error = %e, "push enrolment failed");
                ApiError::internal()
            }
            e @ (PushEnrolError::NotConfigured { .. } | PushEnrolError::NoNtfyUrl { .. }) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ PushEnrolError::NotSent { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
        }
    }
}

async fn enroll(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
    body: Result<Json<EnrolBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    caller.check(&tenant, Perm::EnrolFactors)?;
    let Json(b) = body?;
    let is_push = matches!(b.kind, EnrolKind::Push);
    let is_otp = matches!(b.kind, EnrolKind::Totp | EnrolKind::Hotp);
    if !matches!(b.kind, EnrolKind::Hotp) && b.counter.is_some() {
        return Err(ApiError::bad_request("counter is only for kind \"hotp\""));
    }
    if !is_push && b.webhook.is_some() {
        return Err(ApiError::bad_request("webhook is only for kind \"push\""));
    }
    if caller.0.role != AdminRole::Operator {
        if let Some(url) = b.webhook.as_deref() {
            tenant_webhook_is_public(url).await?;
        }
    }
    if !matches!(b.kind, EnrolKind::Sms) && b.phone.is_some() {
        return Err(ApiError::bad_request("phone is only for kind \"sms\""));
    }
    if !matches!(b.kind, EnrolKind::Email) && b.email.is_some() {
        return Err(ApiError::bad_request("email is only for kind \"email\""));
    }
    if !is_otp && (b.secret.is_some() || b.digits.is_some() || b.algorithm.is_some()) {
        return Err(ApiError::bad_request(
            "secret, digits and algorithm are only for kinds \"totp\" and \"hotp\"",
        ));
    }
    match b.kind {
        EnrolKind::Push => return enroll_push(caller, s, tenant, user, b.webhook).await,
        EnrolKind::Sms => return enroll_sent(caller, s, tenant, user, "sms", b.phone).await,
        EnrolKind::Email => return enroll_sent(caller, s, tenant, user, "email", b.email).await,
        EnrolKind::Totp | EnrolKind::Hotp => {}
    }
    let ctx = s.admin.clone();
    let f = blocking(move || {
        let a = &ctx.admin;
        let (digits, algorithm) = (
            b.digits.unwrap_or(6),
            b.algorithm.as_deref().unwrap_or("SHA1"),
        );
        let f = match b.kind {
            EnrolKind::Hotp => a.enroll_hotp(
                &tenant,
                &user,
                b.secret.as_deref(),
                digits,
                algorithm,
                b.counter.unwrap_or(0),
            )?,
            _ => a.enroll_totp(&tenant, &user, b.secret.as_deref(), digits, algorithm)?,
        };
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.enroll",
            &format!("{} factor {} enrolled ({})", f.kind, f.factor_id, f.state),
        );
        Ok(f)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(Enrolled::Otp(f))))
}

/// The longest wait for the DNS answer about a tenant's webhook name.
const WEBHOOK_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Refuses a webhook of a tenant's token that names, or resolves to, the daemon's own host
/// or a private, link-local or unspecified address (see
/// [`portcullis_core::admin::webhook_host_is_internal`]), and a name that does not resolve.
async fn tenant_webhook_is_public(url: &str) -> Result<(), ApiError> {
    const REFUSED: &str = "webhook: a tenant's token may not name the daemon's own host or a private, link-local or unspecified address; give the webhook's public name, or ask the operator";
    if portcullis_core::admin::webhook_host_is_internal(url) {
        return Err(ApiError::bad_request(REFUSED));
    }
    // A URL without a host is refused by the enrolment itself, with its own message.
    let Some((host, port)) = portcullis_core::admin::webhook_host(url) else {
        return Ok(());
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let found = tokio::time::timeout(
        WEBHOOK_RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    let addresses: Vec<std::net::IpAddr> = match found {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            return Err(ApiError::bad_request(format!(
                "webhook: cannot resolve {host}: {e}; give a name that resolves to the webhook's public address"
            )))
        }
        Err(_) => {
            return Err(ApiError::bad_request(format!(
                "webhook: no DNS answer for {host} within {WEBHOOK_RESOLVE_TIMEOUT:?}; try again, or give the webhook's public address"
            )))
        }
    };
    match addresses
        .iter()
        .find(|ip| portcullis_core::admin::address_is_internal(**ip))
    {
        Some(ip) => Err(ApiError::bad_request(format!(
            "{REFUSED} ({host} resolves to {ip})"
        ))),
        None => Ok(()),
    }
}

/// A pending push factor; its confirmation code goes to the phone through the tenant's
/// push channel, and `.../confirm` with that code makes it count.
async fn enroll_push(
    caller: Caller,
    s: HttpState,
    tenant: String,
    user: String,
    webhook: Option<String>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let ctx = s.admin.clone();
    let engine = s.radius.engine.clone();
    // A tenant's token may name only public webhooks (checked above), and so it stays.
    let public_only = caller.0.role != AdminRole::Operator;
    let e = blocking(move || {
        let target = webhook
            .as_deref()
            .map(|url| WebhookTarget { url, public_only });
        let e = crate::push::enroll_and_send(&ctx.admin, &engine, &tenant, &user, target);
        if let Ok(e) = &e {
            ctx.audit(
                &caller,
                &tenant,
                &user,
                "factor.enroll",
                &format!(
                    "push factor {} enrolled (pending), code sent via {}",
                    e.factor.factor_id, e.sent_to
                ),
            );
        }
        Ok(e)
    })
    .await??;
    let qr = e
        .subscribe_url
        .as_deref()
        .and_then(crate::http::web::qr_svg);
    Ok((
        StatusCode::CREATED,
        Json(Enrolled::Push(EnrolledPush {
            factor_id: e.factor.factor_id,
            kind: e.factor.kind,
            state: e.factor.state,
            subscribe_url: e.subscribe_url,
            subscribe_qr_svg: qr,
            code_sent_via: e.sent_to,
        })),
    ))
}

/// A pending SMS or e-mail factor (`kind`) for `address` (else the user's own), and the
/// code that confirms it sent there. A factor whose code could not be sent is not kept.
async fn enroll_sent(
    caller: Caller,
    s: HttpState,
    tenant: String,
    user: String,
    kind: &'static str,
    address: Option<String>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let ctx = s.admin.clone();
    let engine = s.radius.engine.clone();
    let (f, to) = blocking(move || {
        let a = &ctx.admin;
        let f = match kind {
            "sms" => a.enroll_sms(&tenant, &user, address.as_deref())?,
            _ => a.enroll_email(&tenant, &user, address.as_deref())?,
        };
        let sent = engine.send_enrolment_code(&tenant, &user, &f.factor_id);
        let to = match &sent {
            Ok(SendOutcome::Sent { to, .. }) => to.clone(),
            _ => {
                if let Err(e) = a.remove_own_factor(&tenant, &user, &f.factor_id) {
                    tracing::error!(error = %e, factor = %f.factor_id,
                        "cannot remove a factor whose confirmation code was not sent");
                }
                return Ok(Err(match sent {
                    Ok(SendOutcome::NotConfigured) => ApiError::new(
                        StatusCode::CONFLICT,
                        format!("tenant '{tenant}' cannot send {kind} codes: configure [tenants.{tenant}.{kind}] and restart the server"),
                    ),
                    Ok(other) => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the confirmation code could not be sent ({}); the factor was not kept", other.reason()),
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "enrolment code: engine error");
                        ApiError::internal()
                    }
                }));
            }
        };
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.enroll",
            &format!("{kind} factor {} enrolled (pending), code sent to {to}", f.factor_id),
        );
        Ok(Ok((f, to)))
    })
    .await??;
    Ok((
        StatusCode::CREATED,
        Json(Enrolled::Sent(EnrolledSent {
            factor_id: f.factor_id,
            kind: f.kind,
            state: f.state,
            code_sent_to: to,
        })),
    ))
}

/// Send the confirmation code of a pending SMS, e-mail or push factor again (the user
/// did not get it, or it expired). SMS and e-mail keep their resend delay and quota.
async fn send_code(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user, factor)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::EnrolFactors)?;
    let ctx = s.admin.clone();
    let engine = s.radius.engine.clone();
    let sent = blocking(move || {
        let fs = ctx.admin.list_factors(&tenant, &user)?;
        let Some(f) = fs.iter().find(|f| f.factor_id == factor) else {
            return Ok(Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("user '{user}' has no factor '{factor}'"),
            )));
        };
        if f.state != "pending" || !matches!(f.kind, "sms" | "email" | "push") {
            return Ok(Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("factor '{factor}' is a {} factor in state {}: only pending sms, email and push factors get a confirmation code", f.kind, f.state),
            )));
        }
        let sent = if f.kind == "push" {
            engine.send_push_enrolment_code(&tenant, &user, &factor)
        } else {
            engine.send_enrolment_code(&tenant, &user, &factor)
        };
        let sent = match sent {
            Ok(SendOutcome::Sent { to, .. }) => to,
            Ok(SendOutcome::TooSoon { wait }) => {
                return Ok(Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("a code was sent moments ago; ask again in {wait} s"),
                )))
            }
            Ok(other) => {
                return Ok(Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the code could not be sent: {}", other.reason()),
                )))
            }
            Err(e) => {
                tracing::error!(error = %e, "confirmation code: engine error");
                return Ok(Err(ApiError::internal()));
            }
        };
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.send_code",
            &format!("confirmation code of factor {factor} sent again to {sent}"),
        );
        Ok(Ok(sent))
    })
    .await??;
    Ok(Json(json!({"ok": true, "code_sent_to": sent})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    code: String,
}

async fn confirm(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user, factor)): Path<(String, String, String)>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::EnrolFactors)?;
    let Json(b) = body?;
    let ctx = s.admin.clone();
    blocking(move || {
        ctx.admin.confirm_factor(&tenant, &user, &factor, &b.code)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.confirm",
            &format!("factor {factor} confirmed"),
        );
        Ok(())
    })
    .await?;
    Ok(Json(json!({"ok": true, "state": "confirmed"})))
}

async fn remove(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user, factor)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.check(&tenant, Perm::ResetFactors)?;
    let ctx = s.admin.clone();
    blocking(move || {
        ctx.admin.remove_factor(&tenant, &user, &factor)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.remove",
            &format!("factor {factor} removed"),
        );
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::ResetFactors)?;
    let ctx = s.admin.clone();
    let n = blocking(move || {
        let n = ctx.admin.reset_factors(&tenant, &user)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "factor.reset",
            &format!("all factors ({n}) and recovery codes removed"),
        );
        Ok(n)
    })
    .await?;
    Ok(Json(
        json!({"ok": true, "removed_factors": n, "recovery_codes_removed": true}),
    ))
}
