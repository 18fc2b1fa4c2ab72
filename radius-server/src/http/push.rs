//! Push approval on the HTTP listener.
//!
//! - `GET /v1/push/{id}?t=TOKEN`: a small page for any phone browser: the login's context
//!   and Approve/Deny (with number matching: the three numbers to pick from).
//! - `POST /v1/push/{id}/approve` and `/deny`: the answer, proven by the push's single-use
//!   token (`Authorization: Bearer TOKEN`, as ntfy action buttons send it, or the form
//!   field `t` from the page); `number` carries the picked number. A form post gets a
//!   page back, anything else JSON `{"result": ...}`.
//!
//! Nothing here decides: the Engine checks the token and records the decision; then the
//! hub wakes the request that waits for it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use portcullis_core::push::{PushAnswer, PushDecision, PushView};

use super::web::{esc, strict_headers};
use super::HttpState;

/// Largest answer body taken (a form with a token and a number).
const MAX_BODY: usize = 2048;

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/push/{id}", get(page))
        .route("/v1/push/{id}/approve", post(approve))
        .route("/v1/push/{id}/deny", post(deny))
}

/// `k=v&k2=v2` -> the value of `key`, percent-decoded (`+` is a space).
fn form_value(pairs: &str, key: &str) -> Option<String> {
    pairs.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            let v = v.replace('+', " ");
            urlencoding::decode(&v)
                .map(|c| c.into_owned())
                .unwrap_or_default()
        })
    })
}

/// A page with headers that keep the token out of caches and referrers.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>\
body{{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}}\
dl{{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}}dt{{color:#666}}\
button{{font-size:1.2rem;padding:.8rem 1.2rem;margin:.3rem;border-radius:.5rem;border:1px solid #888}}\
.approve{{background:#1a7f37;color:#fff}}.deny{{background:#b42318;color:#fff}}\
</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    );
    let mut r = (status, doc).into_response();
    // The same strict headers as every page: no caching, no referrer (the token is in the
    // URL), a CSP that allows only the inline style and forms posting here.
    strict_headers(r.headers_mut());
    r
}

fn format_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn page(State(state): State<HttpState>, Path(id): Path<String>, uri: Uri) -> Response {
    let token = uri
        .query()
        .and_then(|q| form_value(q, "t"))
        .unwrap_or_default();
    let engine = state.radius.engine.clone();
    let (id2, token2) = (id.clone(), token.clone());
    let view = match tokio::task::spawn_blocking(move || engine.push_view(&id2, &token2)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "push page: store error");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "<p>The service failed; try again.</p>",
            );
        }
        Err(_) => {
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "<p>The service failed; try again.</p>",
            )
        }
    };
    let Some(v) = view else {
        return html(
            StatusCode::NOT_FOUND,
            "Unknown request",
            "<p>This link is not valid (or was mistyped).</p>",
        );
    };
    html(
        StatusCode::OK,
        "Approve login?",
        &page_body(&id, &token, &v),
    )
}

fn page_body(id: &str, token: &str, v: &PushView) -> String {
    let context = format!(
        "<dl><dt>User</dt><dd>{}</dd><dt>Service</dt><dd>{}</dd><dt>From</dt><dd>{}</dd><dt>Time</dt><dd>{}</dd></dl>",
        esc(&v.username),
        esc(&v.client),
        esc(&v.source),
        format_time(v.created_at)
    );
    if v.status != "pending" {
        return format!(
            "{context}<p id=\"status\">This request is {}.</p>",
            esc(&v.status)
        );
    }
    let id = esc(id);
    let hidden = format!(
        "<input type=\"hidden\" name=\"t\" value=\"{}\">",
        esc(token)
    );
    let approve = if v.choices.is_empty() {
        format!(
            "<form method=\"post\" action=\"/v1/push/{id}/approve\">{hidden}\
<button class=\"approve\" id=\"approve\" type=\"submit\">Approve</button></form>"
        )
    } else {
        let buttons: String = v
            .choices
            .iter()
            .map(|n| {
                format!(
                    "<button class=\"approve\" name=\"number\" value=\"{n}\" id=\"pick-{n}\" type=\"submit\">{n}</button>"
                )
            })
            .collect();
        format!(
            "<p>To approve, pick the number your login prompt shows:</p>\
<form method=\"post\" action=\"/v1/push/{id}/approve\">{hidden}{buttons}</form>"
        )
    };
    format!(
        "{context}{approve}<form method=\"post\" action=\"/v1/push/{id}/deny\">{hidden}\
<button class=\"deny\" id=\"deny\" type=\"submit\">Deny — this was not me</button></form>"
    )
}

async fn approve(
    state: State<HttpState>,
    id: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(state, id, headers, uri, body, true).await
}

async fn deny(
    state: State<HttpState>,
    id: Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(state, id, headers, uri, body, false).await
}

async fn answer(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
    approve: bool,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if body.len() > MAX_BODY {
        return reply(is_form, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    }
    let form = std::str::from_utf8(&body).unwrap_or("");
    let query = uri.query().unwrap_or("");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let token = bearer.or_else(|| form_value(form, "t")).unwrap_or_default();
    let number = form_value(form, "number").or_else(|| form_value(query, "number"));
    let number = match number {
        None => None,
        Some(n) => match n.trim().parse::<u8>() {
            Ok(n) => Some(n),
            Err(_) => return reply(is_form, StatusCode::BAD_REQUEST, "bad_number"),
        },
    };
    let choice = if approve {
        PushAnswer::Approve { number }
    } else {
        PushAnswer::Deny
    };
    let engine = state.radius.engine.clone();
    let decided =
        tokio::task::spawn_blocking(move || engine.answer_push(&id, &token, choice)).await;
    let (decision, txn) = match decided {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "push answer: store error");
            return reply(is_form, StatusCode::INTERNAL_SERVER_ERROR, "internal");
        }
        Err(_) => return reply(is_form, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    if let Some(txn) = txn {
        // Wake the request waiting for this transaction (also for a wrong number: it
        // denies the login).
        state.radius.push_hub.notify(&txn);
    }
    let status = match decision {
        PushDecision::Approved | PushDecision::Denied | PushDecision::WrongNumber => StatusCode::OK,
        PushDecision::NumberRequired => StatusCode::BAD_REQUEST,
        PushDecision::AlreadyDecided => StatusCode::CONFLICT,
        PushDecision::Expired => StatusCode::GONE,
        PushDecision::NotFound => StatusCode::NOT_FOUND,
    };
    reply(is_form, status, decision.as_str())
}

fn reply(is_form: bool, status: StatusCode, result: &str) -> Response {
    if !is_form {
        let mut r = (status, serde_json::json!({ "result": result }).to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let (title, text) = match result {
        "approved" => (
            "Approved",
            "The login was approved. You can close this page.",
        ),
        "denied" => (
            "Denied",
            "The login was denied. If it was not you, tell your administrator.",
        ),
        "wrong_number" => (
            "Denied",
            "That was not the number of the login prompt, so the login was denied.",
        ),
        "already_decided" => ("Already answered", "This request was already answered."),
        "expired" => (
            "Expired",
            "This request has expired; start the login again.",
        ),
        "number_required" => ("Pick a number", "Pick the number your login prompt shows."),
        "not_found" => ("Unknown request", "This link is not valid."),
        _ => ("Error", "The service could not take the answer; try again."),
    };
    html(
        status,
        title,
        &format!("<p id=\"result\" data-result=\"{result}\">{text}</p>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value("t=a%2Bb&number=42", "t").as_deref(), Some("a+b"));
        assert_eq!(form_value("t=a+b", "t").as_deref(), Some("a b"));
        assert_eq!(form_value("t=x&number=42", "number").as_deref(), Some("42"));
        assert_eq!(form_value("t=x", "number"), None);
    }

    #[test]
    fn the_page_escapes_what_users_typed() {
        let v = PushView {
            username: "<script>alert(1)</script>".into(),
            client: "vpn\"x".into(),
            source: "10.0.0.1".into(),
            created_at: 0,
            expires_at: 60,
            status: "pending".into(),
            choices: vec![12, 42, 77],
        };
        let b = page_body("ab", "tok\"en", &v);
        assert!(!b.contains("<script>"), "{b}");
        assert!(b.contains("&lt;script&gt;"));
        assert!(b.contains("value=\"tok&quot;en\""));
        assert!(b.contains("id=\"pick-42\""));
    }
}
