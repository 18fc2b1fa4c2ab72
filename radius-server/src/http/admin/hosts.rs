//! `/v1/tenants/{tenant}/pam-hosts`: the remote PAM hosts of a fleet (as `portcullis host
//! add|list|remove`). A new host's token is in the answer once and stored only as a hash.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Json;
use portcullis_core::hosts::{HostError, Hosts};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiRoute, Caller, HttpState, Perm};
use crate::pam::http::PamHttp;

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute {
            path: "/v1/tenants/{tenant}/pam-hosts",
            methods: &["get", "post"],
            handlers: get(list).post(add),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/pam-hosts/{host}",
            methods: &["delete"],
            handlers: delete(remove),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHostBody {
    name: String,
}

fn api_error(e: HostError) -> ApiError {
    match e {
        HostError::NoTenant(_) | HostError::NoHost { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
        HostError::Exists { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        HostError::InvalidName(_) => ApiError::bad_request(e.to_string()),
        other => {
            tracing::error!(error = %other, "PAM hosts: store error");
            ApiError::internal()
        }
    }
}

/// Run a (blocking) host operation off the async threads.
async fn run<T: Send + 'static>(
    pam: Arc<PamHttp>,
    f: impl FnOnce(&Hosts) -> Result<T, HostError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(move || f(&pam.hosts)).await {
        Ok(r) => r.map_err(api_error),
        Err(_) => Err(ApiError::internal()),
    }
}

async fn list(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::ManageHosts)?;
    let t = tenant.clone();
    let list = run(s.pam.clone(), move |h| h.list(&t)).await?;
    Ok(Json(json!(list)))
}

async fn add(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check(&tenant, Perm::ManageHosts)?;
    let bytes = body
        .map_err(|r| ApiError::bad_request(format!("cannot read the body: {}", r.body_text())))?;
    let b: NewHostBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let (t, name) = (tenant.clone(), b.name.clone());
    let created = run(s.pam.clone(), move |h| h.add(&t, &name)).await?;
    s.admin.audit(
        &caller,
        &tenant,
        "",
        "host.add",
        &format!("PAM host {}", b.name),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({ "host": created.host, "token": created.token.as_str() })),
    ))
}

async fn remove(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, host)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.check(&tenant, Perm::ManageHosts)?;
    let (t, name) = (tenant.clone(), host.clone());
    run(s.pam.clone(), move |h| h.remove(&t, &name)).await?;
    s.admin.audit(
        &caller,
        &tenant,
        "",
        "host.remove",
        &format!("PAM host {host}"),
    );
    Ok(StatusCode::NO_CONTENT)
}
