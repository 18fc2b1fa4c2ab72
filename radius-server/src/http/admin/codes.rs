//! Recovery codes (`POST .../recovery-codes`: 10 new ones, returned once) and bypass codes
//! (`POST .../bypass-codes`: uses and ttl, returned once).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use portcullis_core::admin::BypassCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, optional_body, ApiError, ApiRoute, Caller, HttpState, Perm};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/recovery-codes",
            methods: &["post"],
            handlers: post(recovery),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/bypass-codes",
            methods: &["post"],
            handlers: post(bypass),
        },
    ]
}

async fn recovery(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check(&tenant, Perm::RecoveryCodes)?;
    let ctx = s.admin.clone();
    let codes = blocking(move || {
        let codes = ctx.admin.generate_recovery_codes(&tenant, &user)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "recovery.generate",
            &format!("{} new recovery codes (older ones revoked)", codes.len()),
        );
        Ok(codes)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "codes": codes }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BypassBody {
    uses: u32,
    /// A duration: `1h`, `30m`, `2d`.
    ttl: String,
}

impl Default for BypassBody {
    fn default() -> Self {
        Self {
            uses: 1,
            ttl: "1h".into(),
        }
    }
}

async fn bypass(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BypassCode>), ApiError> {
    caller.check(&tenant, Perm::BypassCodes)?;
    let b: BypassBody = optional_body(body)?;
    let ttl = humantime::parse_duration(&b.ttl).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid ttl '{}': {e} (use a duration like 1h, 30m, 2d)",
            b.ttl
        ))
    })?;
    let ctx = s.admin.clone();
    let code = blocking(move || {
        let code = ctx
            .admin
            .issue_bypass_code(&tenant, &user, b.uses, ttl.as_secs())?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "bypass.issue",
            &format!(
                "bypass code for {} use(s), valid until {}",
                code.uses,
                crate::http::web::format_time(code.expires_at)
            ),
        );
        Ok(code)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(code)))
}
