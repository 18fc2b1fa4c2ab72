//! `/v1/tenants/{tenant}/users/{user}/factors`: list, enrol (TOTP, HOTP: the secret and
//! otpauth URI are returned once; push: the topic to subscribe to, with the confirmation
//! code pushed to the phone), confirm, remove one, reset all.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Json;
use portcullis_core::admin::{EnrolledTotp, FactorInfo};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};
use crate::push::PushEnrolError;

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
    if !matches!(b.kind, EnrolKind::Hotp) && b.counter.is_some() {
        return Err(ApiError::bad_request("counter is only for kind \"hotp\""));
    }
    if !is_push && b.webhook.is_some() {
        return Err(ApiError::bad_request("webhook is only for kind \"push\""));
    }
    if is_push && (b.secret.is_some() || b.digits.is_some() || b.algorithm.is_some()) {
        return Err(ApiError::bad_request(
            "secret, digits and algorithm are only for kinds \"totp\" and \"hotp\"",
        ));
    }
    if is_push {
        return enroll_push(caller, s, tenant, user, b.webhook).await;
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
    let e = blocking(move || {
        let e =
            crate::push::enroll_and_send(&ctx.admin, &engine, &tenant, &user, webhook.as_deref());
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
