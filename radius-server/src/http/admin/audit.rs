//! `GET /v1/tenants/{tenant}/audit?user=&since=1h&limit=100`: the tenant's audit records
//! (logins and admin changes), oldest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Json;
use portcullis_core::model::{AuditFilter, AuditRecord};
use serde::Deserialize;

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};

/// Most records one request returns.
const MAX_LIMIT: u32 = 1000;

pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute {
        path: "/v1/tenants/{tenant}/audit",
        methods: &["get"],
        handlers: get(search),
    }]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    user: Option<String>,
    /// Only records newer than this: `1h`, `30m`, `7d`.
    since: Option<String>,
    /// The newest this many (default 100, at most 1000).
    limit: Option<u32>,
}

async fn search(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    caller.check(&tenant, Perm::ReadAudit)?;
    let Query(q) = query?;
    let since = match &q.since {
        None => None,
        Some(text) => Some(humantime::parse_duration(text).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid since '{text}': {e} (use a duration like 1h, 30m, 7d)"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "invalid limit {limit}: use 1 to {MAX_LIMIT}"
        )));
    }
    let ctx = s.admin.clone();
    let records = blocking(move || {
        let since = since.map(|d| ctx.admin.now() - d.as_secs().min(i64::MAX as u64) as i64);
        ctx.admin.audit(&AuditFilter {
            tenant: Some(tenant),
            username: q.user,
            since,
            limit,
        })
    })
    .await?;
    Ok(Json(records))
}
