//! `GET /v1/tenants/{tenant}/policies` (the configured rules) and
//! `POST /v1/tenants/{tenant}/policies/test` (like `portcullis policy test`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use portcullis_core::admin::{PolicyQuery, PolicyTest};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute {
            path: "/v1/tenants/{tenant}/policies",
            methods: &["get"],
            handlers: get(rules),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/policies/test",
            methods: &["post"],
            handlers: post(test),
        },
    ]
}

async fn rules(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::ReadPolicy)?;
    let ctx = s.admin.clone();
    let rules = blocking(move || {
        ctx.admin.get_tenant(&tenant)?;
        Ok(ctx.rules.get(&tenant).cloned().unwrap_or_default())
    })
    .await?;
    Ok(Json(json!({
        "rules": rules,
        "default": "require_mfa",
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    user: String,
    /// RADIUS client or PAM service name.
    client: String,
    /// Calling-Station-Id or PAM rhost.
    #[serde(default)]
    source: String,
    /// PAM host.
    #[serde(default)]
    host: Option<String>,
    /// RFC 3339 time (default now).
    #[serde(default)]
    at: Option<String>,
}

async fn test(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
    body: Result<Json<TestBody>, JsonRejection>,
) -> Result<Json<PolicyTest>, ApiError> {
    caller.check(&tenant, Perm::ReadPolicy)?;
    let Json(b) = body?;
    let at = match &b.at {
        None => None,
        Some(text) => {
            let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid at '{text}': {e} (use RFC 3339, like 2026-11-23T10:00:00Z)"
                ))
            })?;
            Some(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
            )
        }
    };
    let ctx = s.admin.clone();
    let result = blocking(move || {
        let rules = ctx.rules.get(&tenant).map(Vec::as_slice).unwrap_or(&[]);
        ctx.admin.policy_test(
            &tenant,
            rules,
            &PolicyQuery {
                user: &b.user,
                client: &b.client,
                source: &b.source,
                host: b.host.as_deref(),
                at,
            },
        )
    })
    .await?;
    Ok(Json(result))
}
