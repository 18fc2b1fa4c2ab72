//! The admin API under `/v1/`: JSON over HTTP with `Authorization: Bearer TOKEN`.
//!
//! Every handler is a thin wrapper over [`portcullis_core::admin::Admin`] (the same
//! operations the CLI runs), behind a role check ([`auth`]) and with an audit record of
//! every change. Routes are declared once, in [`api_routes`]; `openapi.json` must describe
//! exactly those (a unit test compares them).

mod audit;
mod auth;
mod clients;
mod codes;
mod error;
mod factors;
pub mod openapi;
mod policies;
mod tenants;
mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::Router;
use portcullis_core::admin::{Admin, AdminError};
use portcullis_core::config::Config;
use portcullis_core::policy::Rule;
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use auth::{allows, Caller, Perm};
pub use error::ApiError;

use super::HttpState;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the admin handlers share.
pub struct AdminContext {
    pub admin: Admin,
    /// Each tenant's policy rules, as loaded at start (like the Engine's).
    pub rules: BTreeMap<String, Vec<Rule>>,
}

impl AdminContext {
    /// The admin API over `admin`, with the rules of `config`.
    pub fn new(admin: Admin, config: &Config) -> Self {
        Self {
            admin,
            rules: config
                .tenants
                .iter()
                .map(|(name, t)| (name.clone(), t.rules.clone()))
                .collect(),
        }
    }

    /// Record an admin change (who = the token). A failure is logged: the change is done.
    fn audit(&self, caller: &Caller, tenant: &str, user: &str, action: &str, detail: &str) {
        if let Err(e) =
            self.admin
                .record_admin_action(&caller.actor(), tenant, user, action, detail)
        {
            tracing::error!(error = %e, action, tenant, user, token = %caller.0.id,
                "cannot write the audit record of an admin change");
        }
    }
}

/// Run a (blocking: SQLite, argon2) admin operation off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "admin API task failed");
            Err(ApiError::internal())
        }
    }
}

/// A JSON body that may also be empty (then `T::default()`).
fn optional_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                r.status(),
                format!("the body is larger than the limit of {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the body: {}", r.body_text()))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Deserialize a field that may be absent (None), `null` (Some(None)) or a value.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

/// One route: its path, the methods it answers and their handlers.
pub struct ApiRoute {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub handlers: MethodRouter<HttpState>,
}

/// Every route of the admin API.
pub fn api_routes() -> Vec<ApiRoute> {
    let mut all = Vec::new();
    all.extend(openapi::routes());
    all.extend(tenants::routes());
    all.extend(users::routes());
    all.extend(factors::routes());
    all.extend(codes::routes());
    all.extend(policies::routes());
    all.extend(clients::routes());
    all.extend(audit::routes());
    all
}

/// The admin API's router.
pub fn routes() -> Router<HttpState> {
    let mut r = Router::new();
    for route in api_routes() {
        r = r.route(route.path, route.handlers);
    }
    r.layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// The context of the API for `state`'s shared pieces.
pub fn context(admin: Admin, config: &Config) -> Arc<AdminContext> {
    Arc::new(AdminContext::new(admin, config))
}
