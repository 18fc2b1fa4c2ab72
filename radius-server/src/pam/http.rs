//! `POST /v1/pam/step`: the step protocol for remote hosts of a fleet, on the HTTP(S)
//! listener. The body is one request frame's JSON (no length header), the answer one
//! response's JSON. `Authorization: Bearer TOKEN` names the host (`portcullis host add`):
//! its tenant and name come from the token, never from the body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::Router;
use portcullis_core::engine::Engine;
use portcullis_core::hosts::Hosts;
use portcullis_core::protocol::{ErrorCode, Response, MAX_FRAME_LEN};

use zeroize::Zeroizing;

use super::handler::{answer, Caller, PamSettings};
use crate::http::HttpState;

/// What the route needs.
pub struct PamHttp {
    pub engine: Arc<Engine>,
    pub settings: PamSettings,
    pub hosts: Hosts,
    /// True once the daemon is shutting down: logins in flight finish (the HTTP listener
    /// stops last), new ones are refused as `busy` (an outage to the module).
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Just enough of a request to tell a new login (`start`) from a step of one in flight,
/// without reading its password.
#[derive(serde::Deserialize)]
struct StepKind {
    step: StepType,
}

#[derive(serde::Deserialize)]
struct StepType {
    #[serde(rename = "type")]
    kind: String,
}

pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/pam/step", post(step))
}

/// A protocol response as JSON with `status`.
fn reply(status: StatusCode, response: &Response) -> HttpResponse {
    match serde_json::to_vec(response) {
        Ok(json) => (status, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn status_of(response: &Response) -> StatusCode {
    use portcullis_core::protocol::ResponseStep;
    match &response.step {
        ResponseStep::Error { code, .. } => match code {
            ErrorCode::Malformed | ErrorCode::UnsupportedVersion | ErrorCode::Unsupported => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::OK,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn step(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> HttpResponse {
    let pam = state.pam.clone();
    let unauthorized = || {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            &Response::error(
                ErrorCode::Forbidden,
                "unknown or revoked host token (register the host with: portcullis host add --tenant T NAME)",
            ),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let Some(token) = bearer(&headers).map(|t| Zeroizing::new(t.to_owned())) else {
        tracing::info!("PAM over HTTPS: a request without a bearer token; refused");
        return unauthorized();
    };
    // The token is checked before the body is parsed. (The listener has read it already,
    // at most 128 KiB within 20 s: see http/limits.rs.)
    let looked_up = {
        let pam = pam.clone();
        tokio::task::spawn_blocking(move || pam.hosts.authenticate(&token)).await
    };
    let host = match looked_up {
        Ok(Ok(Some(host))) => host,
        Ok(Ok(None)) => {
            tracing::info!("PAM over HTTPS: unknown or revoked host token; refused");
            return unauthorized();
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "PAM over HTTPS: cannot look the host token up; refused");
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &Response::error(ErrorCode::Internal, "the daemon failed; see its log"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "PAM over HTTPS: token task failed; refused");
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &Response::error(ErrorCode::Internal, "the daemon failed; see its log"),
            );
        }
    };
    let bytes = match axum::body::to_bytes(body, MAX_FRAME_LEN).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            tracing::debug!(host = %host.name, error = %e, "PAM over HTTPS: body not read");
            let response = if too_large {
                Response::error(
                    ErrorCode::TooLarge,
                    format!("the body is larger than the limit of {MAX_FRAME_LEN} bytes"),
                )
            } else {
                Response::error(ErrorCode::Malformed, "the request body could not be read")
            };
            return reply(status_of(&response), &response);
        }
    };
    if bytes.is_empty() {
        let response = Response::error(
            ErrorCode::Malformed,
            "empty body: the body holds one JSON request",
        );
        return reply(status_of(&response), &response);
    }
    if *pam.stopping.borrow()
        && serde_json::from_slice::<StepKind>(&bytes).is_ok_and(|r| r.step.kind == "start")
    {
        tracing::info!(host = %host.name, "PAM over HTTPS: a new login while shutting down; refused as busy");
        let response = Response::error(
            ErrorCode::Busy,
            "the daemon is shutting down; try another node",
        );
        return reply(status_of(&response), &response);
    }
    let response = answer(
        &pam.engine,
        &pam.settings,
        Vec::from(bytes),
        &Caller::Host(host),
    )
    .await;
    reply(status_of(&response), &response)
}
