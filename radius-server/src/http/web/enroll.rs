//! `GET /v1/enroll/{token}`: the enrolment link of a login (`unenrolled = "enroll"`).
//!
//! Opening it claims the link (once, within its 10 minutes) and makes a new pending TOTP
//! factor for the link's user; the page shows its QR code and secret. The login prompt
//! that carried the link then takes the app's first code, which confirms the factor.

use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use portcullis_core::admin::Actor;

use super::{blocking, esc, format_time, internal, page, qr_svg};
use crate::http::HttpState;

pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/enroll/{token}", get(open))
}

/// What opening a link gave.
enum Opened {
    Invalid,
    Ready {
        tenant: String,
        username: String,
        secret: String,
        uri: String,
        expires_at: i64,
    },
}

async fn open(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    ext: Extensions,
    headers: HeaderMap,
) -> Response {
    // The browser's address (behind a trusted proxy, the one it names), as the login pages
    // record it.
    let source = super::my::peer(&ext, &headers, &state.trusted_proxies);
    let engine = state.radius.engine.clone();
    let admin = state.admin.clone();
    let result = blocking(move || -> anyhow::Result<Opened> {
        let Some(link) = engine.open_enrollment(&token)? else {
            return Ok(Opened::Invalid);
        };
        let t = admin
            .admin
            .enroll_totp(&link.tenant, &link.username, None, 6, "SHA1")?;
        if !engine.attach_enrollment_factor(&link, &t.factor_id)? {
            admin
                .admin
                .remove_own_factor(&link.tenant, &link.username, &t.factor_id)?;
            return Ok(Opened::Invalid);
        }
        let actor = Actor {
            channel: "web",
            name: "enrolment link",
            source,
        };
        if let Err(e) = admin.admin.record_admin_action(
            &actor,
            &link.tenant,
            &link.username,
            "factor.enroll",
            &format!(
                "totp factor {} made from an enrolment link (pending until the login's code)",
                t.factor_id
            ),
        ) {
            tracing::error!(error = %e, "cannot write the audit record of an enrolment");
        }
        Ok(Opened::Ready {
            tenant: link.tenant,
            username: link.username,
            secret: t.secret,
            uri: t.uri,
            expires_at: link.expires_at,
        })
    })
    .await;
    match result {
        Some(Ok(Opened::Ready {
            tenant,
            username,
            secret,
            uri,
            expires_at,
        })) => page(
            StatusCode::OK,
            "Set up your authenticator app",
            &ready_body(&tenant, &username, &secret, &uri, expires_at),
        ),
        Some(Ok(Opened::Invalid)) => page(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "<p id=\"invalid\">This enrolment link is not valid: it has expired, was already opened, or was mistyped. Log in again to get a new one.</p>",
        ),
        Some(Err(e)) => {
            tracing::error!(error = %e, "enrolment page failed");
            internal()
        }
        None => internal(),
    }
}

fn ready_body(tenant: &str, username: &str, secret: &str, uri: &str, expires_at: i64) -> String {
    let qr = qr_svg(uri).unwrap_or_default();
    format!(
        "<p>Account <strong id=\"user\">{user}</strong> ({tenant}).</p>\
<ol><li>In your authenticator app, add an account by scanning this QR code:<br>{qr}</li>\
<li>or by typing this secret key (time-based, 6 digits):<br><code class=\"secret\" id=\"secret\">{secret}</code></li>\
<li>Go back to your login prompt and enter the code the app shows. That code finishes the set-up and logs you in.</li></ol>\
<p>This page can be opened only once and the login waits until {expires}; do not share it.</p>",
        user = esc(username),
        tenant = esc(tenant),
        secret = esc(secret),
        expires = format_time(expires_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_names_and_shows_the_secret() {
        let b = ready_body("a<b", "<img src=x>", "JBSWY3DP", "otpauth://totp/x", 0);
        assert!(!b.contains("<img"), "{b}");
        assert!(b.contains("&lt;img src=x&gt;") && b.contains("a&lt;b"));
        assert!(b.contains("id=\"secret\">JBSWY3DP<"));
        assert!(b.contains("<svg id=\"qr\""));
    }
}
