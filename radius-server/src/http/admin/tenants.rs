//! `/v1/tenants`: list and create tenants (operator tokens only).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use portcullis_core::model::Tenant;
use serde::Deserialize;

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};

pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute {
        path: "/v1/tenants",
        methods: &["get", "post"],
        handlers: get(list).post(create),
    }]
}

async fn list(caller: Caller, State(s): State<HttpState>) -> Result<Json<Vec<Tenant>>, ApiError> {
    caller.check_global(Perm::ManageTenants)?;
    let ctx = s.admin.clone();
    Ok(Json(blocking(move || ctx.admin.list_tenants()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create(
    caller: Caller,
    State(s): State<HttpState>,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.check_global(Perm::ManageTenants)?;
    let Json(b) = body?;
    let ctx = s.admin.clone();
    let t = blocking(move || {
        let t = ctx.admin.add_tenant(&b.name)?;
        ctx.audit(&caller, &t.name, "", "tenant.create", "tenant created");
        Ok(t)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(t)))
}
