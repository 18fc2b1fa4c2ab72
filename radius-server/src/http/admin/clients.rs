//! `GET /v1/tenants/{tenant}/clients`: the tenant's RADIUS clients as running now (after
//! SIGHUP reloads), never their secrets.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, ApiError, ApiRoute, Caller, HttpState, Perm};

pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute {
        path: "/v1/tenants/{tenant}/clients",
        methods: &["get"],
        handlers: get(list),
    }]
}

async fn list(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    caller.check(&tenant, Perm::ReadClients)?;
    let ctx = s.admin.clone();
    let name = tenant.clone();
    blocking(move || ctx.admin.get_tenant(&name).map(|_| ())).await?;
    let table = s.radius.clients();
    let mut out: Vec<Value> = table
        .clients()
        .iter()
        .filter(|c| c.config.tenant == tenant)
        .map(|c| {
            let c = &c.config;
            json!({
                "name": c.name,
                "address": c.address.to_string(),
                "mode": c.mode.as_str(),
                "require_message_authenticator": c.require_message_authenticator,
                "limit_proxy_state": c.limit_proxy_state,
                "first_factor": c.first_factor.map(|f| f.as_str()),
                "reply": c.reply,
            })
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(out))
}
