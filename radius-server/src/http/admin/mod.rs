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
mod hosts;
pub mod openapi;
mod policies;
mod tenants;
mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;
use portcullis_core::admin::{Admin, AdminError};
use portcullis_core::config::Config;
use portcullis_core::policy::Rule;
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use auth::{allows, note_expired_token, Caller, Perm};
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
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
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
    all.extend(hosts::routes());
    all.extend(audit::routes());
    all
}

/// The admin API's router. Other paths under `/v1/` answer a JSON 404, and every error of
/// axum itself (405, a path that cannot be decoded) is turned into the same JSON shape.
pub fn routes() -> Router<HttpState> {
    let mut r = Router::new();
    for route in api_routes() {
        r = r.route(route.path, route.handlers);
    }
    r.route("/v1/{*rest}", any(no_route))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(json_errors))
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; the routes are listed in /v1/openapi.json",
    )
}

/// An error answer that is not JSON yet (axum's own) as `{"error": "..."}`.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        "this route does not take this method; the routes are listed in /v1/openapi.json".into()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// The context of the API for `state`'s shared pieces.
pub fn context(admin: Admin, config: &Config) -> Arc<AdminContext> {
    Arc::new(AdminContext::new(admin, config))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use portcullis_core::clock::ManualClock;
    use portcullis_core::config::PasswordConfig;
    use portcullis_core::engine::{Engine, EngineSettings};
    use portcullis_core::password::PasswordHasher;
    use portcullis_core::secrets::MasterKey;
    use portcullis_core::store::{SqliteStore, Store};
    use tower::ServiceExt;

    use super::*;
    use crate::radius::metrics::Metrics;
    use crate::radius::server::RadiusContext;

    fn state() -> HttpState {
        state_stopping(false)
    }

    /// [`state`], the daemon shutting down when `stopping`.
    fn state_stopping(stopping: bool) -> HttpState {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let key = Arc::new(MasterKey::from_bytes([3; 32]));
        let hasher = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..PasswordConfig::default()
        })
        .unwrap();
        let config = Config::from_toml_str("", std::path::Path::new("test.toml")).unwrap();
        let engine = Arc::new(Engine::new(
            store.clone(),
            clock.clone(),
            key.clone(),
            hasher.clone(),
            EngineSettings::default(),
        ));
        let admin = Admin::new(
            store.clone(),
            clock.clone(),
            key.clone(),
            hasher,
            "Test".into(),
            1,
        );
        let radius = Arc::new(RadiusContext::new(
            engine.clone(),
            &config,
            Arc::new(Metrics::default()),
        ));
        let pam = Arc::new(crate::pam::http::PamHttp {
            engine,
            settings: crate::pam::handler::PamSettings::new(
                &Default::default(),
                radius.push_hub.clone(),
            ),
            hosts: portcullis_core::hosts::Hosts::new(store, clock, &key),
            stopping: tokio::sync::watch::channel(stopping).1,
        });
        HttpState {
            radius,
            admin: context(admin, &config),
            pam,
            trusted_proxies: Arc::new([]),
        }
    }

    /// (method, path) of every route the router declares.
    fn declared() -> BTreeSet<(String, String)> {
        api_routes()
            .iter()
            .flat_map(|r| {
                r.methods
                    .iter()
                    .map(|m| (m.to_string(), r.path.to_string()))
            })
            .collect()
    }

    #[test]
    fn openapi_lists_exactly_the_routes_of_the_router() {
        let doc = openapi::document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(documented, declared());
    }

    #[tokio::test]
    async fn while_shutting_down_remote_pam_hosts_start_no_new_login() {
        let state = state_stopping(true);
        let store = state.pam.engine.store().clone();
        store.create_tenant("acme", 1).unwrap();
        let token = state.pam.hosts.add("acme", "web-a").unwrap().token;
        let app = crate::http::router(state);
        let post = |body: &'static str| {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/pam/step")
                .header("Authorization", format!("Bearer {}", token.as_str()))
                .body(Body::from(body))
                .unwrap()
        };
        let start = r#"{"v":1,"origin":{"tenant":"acme","user":"alice","service":"sshd","host":"x"},"step":{"type":"start","first_factor":"delegated"}}"#;
        let res = app.clone().oneshot(post(start)).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("\"busy\""), "{status} {body}");
        // A step of a login already in flight is still answered (its transaction is
        // unknown here, so it is refused by the Engine, not as busy).
        let answer = r#"{"v":1,"origin":{"tenant":"acme","user":"alice","service":"sshd","host":"x"},"step":{"type":"answer","txn":"00000000000000000000000000000000.0","answer":"123456"}}"#;
        let res = app.oneshot(post(answer)).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("\"busy\""));
    }

    #[tokio::test]
    async fn the_router_answers_exactly_the_declared_methods() {
        let app = crate::http::router(state());
        let all = ["GET", "POST", "PATCH", "PUT", "DELETE"];
        let declared = declared();
        let paths: BTreeSet<String> = declared.iter().map(|(_, p)| p.clone()).collect();
        for path in paths {
            let uri = path.replace(['{', '}'], "");
            for m in all {
                let req = Request::builder()
                    .method(Method::from_bytes(m.as_bytes()).unwrap())
                    .uri(&uri)
                    .body(Body::empty())
                    .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                let status = res.status();
                if status.is_client_error() {
                    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                        .await
                        .unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&body)
                        .unwrap_or_else(|e| panic!("{m} {uri}: not JSON ({e})"));
                    assert!(v["error"].is_string(), "{m} {uri}: {v}");
                }
                let expected = declared.contains(&(m.to_ascii_lowercase(), path.clone()));
                if !expected {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
                } else if path == "/v1/openapi.json" {
                    assert_eq!(status, StatusCode::OK, "{m} {uri}");
                } else {
                    // Routed to its handler, which wants a token first.
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {uri}");
                }
            }
        }
    }

    #[tokio::test]
    async fn unknown_paths_answer_json() {
        let app = crate::http::router(state());
        for (uri, want) in [
            ("/v1/nothing", StatusCode::NOT_FOUND),
            ("/v1/tenants/acme/userz", StatusCode::NOT_FOUND),
            ("/v1/tenants/acme/users/a/b/c/d", StatusCode::NOT_FOUND),
            ("/v1/openapi.json/x", StatusCode::NOT_FOUND),
        ] {
            let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), want, "{uri}");
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("openapi.json"), "{v}");
        }
        // Outside /v1/ the other routers (metrics) are untouched.
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn errors_are_json_and_oversized_bodies_are_refused() {
        let st = state();
        let token = st
            .admin
            .admin
            .add_token(None, portcullis_core::model::AdminRole::Operator, "t", None)
            .unwrap()
            .token;
        let app = crate::http::router(st);
        let send = |body: Vec<u8>| {
            Request::builder()
                .method("POST")
                .uri("/v1/tenants")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap()
        };
        let big = format!("{{\"name\": \"{}\"}}", "a".repeat(BODY_LIMIT + 10));
        let r = app.clone().oneshot(send(big.into_bytes())).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
        let r = app
            .clone()
            .oneshot(send(b"{\"name\": \"acme\", \"extra\": 1}".to_vec()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("extra"), "{v}");
        let r = app
            .clone()
            .oneshot(send(b"{\"name\": \"acme\"}".to_vec()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        // A path segment that is not UTF-8: axum's own 400, as JSON.
        let req = Request::builder()
            .uri("/v1/tenants/%FF/users")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
}
