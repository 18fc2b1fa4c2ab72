//! `/v1/tenants/{tenant}/users/{user}/factors`: list, enrol (TOTP, HOTP; the secret and
//! otpauth URI are returned once), confirm, remove one, reset all.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Json;
use portcullis_core::admin::{EnrolledTotp, FactorInfo};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};

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
enum OtpKind {
    Totp,
    Hotp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolBody {
    kind: OtpKind,
    /// An existing base32 secret (migration, hardware token): confirmed at once.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default = "six")]
    digits: u8,
    #[serde(default = "sha1")]
    algorithm: String,
    /// HOTP only: the token's counter.
    #[serde(default)]
    counter: Option<u64>,
}

fn six() -> u8 {
    6
}

fn sha1() -> String {
    "SHA1".into()
}

async fn enroll(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
    body: Result<Json<EnrolBody>, JsonRejection>,
) -> Result<(StatusCode, Json<EnrolledTotp>), ApiError> {
    caller.check(&tenant, Perm::EnrolFactors)?;
    let Json(b) = body?;
    if matches!(b.kind, OtpKind::Totp) && b.counter.is_some() {
        return Err(ApiError::bad_request("counter is only for kind \"hotp\""));
    }
    let ctx = s.admin.clone();
    let f = blocking(move || {
        let a = &ctx.admin;
        let f = match b.kind {
            OtpKind::Totp => {
                a.enroll_totp(&tenant, &user, b.secret.as_deref(), b.digits, &b.algorithm)?
            }
            OtpKind::Hotp => a.enroll_hotp(
                &tenant,
                &user,
                b.secret.as_deref(),
                b.digits,
                &b.algorithm,
                b.counter.unwrap_or(0),
            )?,
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
    Ok((StatusCode::CREATED, Json(f)))
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
