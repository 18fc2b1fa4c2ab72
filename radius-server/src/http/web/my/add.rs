//! Adding a factor on `/my/`: an authenticator app (QR code and secret) or, where the
//! tenant pushes through ntfy, push notifications (the topic as link and QR code, the code
//! pushed to it, and again on request); both confirmed with the same form.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use portcullis_core::admin::EnrolledTotp;
use portcullis_core::engine::{Engine, SendOutcome};

use super::{audit, dashboard, Posted};
use crate::http::web::{blocking, esc, form_value, internal, page, qr_svg, signer};
use crate::http::HttpState;
use crate::push::{PushEnrolError, PushEnrolment};

/// A factor just added on the page: pending until a code confirms it (the one the app
/// shows, or the one pushed to the phone).
enum Added {
    Totp(EnrolledTotp),
    Push(PushEnrolment),
}

/// Add an authenticator app, or (form field `kind=push`, where the tenant pushes through
/// ntfy) push notifications; then the page that confirms it with a code.
pub(super) async fn enroll(
    State(state): State<HttpState>,
    Posted { s, value, form }: Posted,
) -> Response {
    let engine = state.radius.engine.clone();
    let push = form_value(&form, "kind").as_deref() == Some("push");
    let admin = state.admin.clone();
    let e = engine.clone();
    let s2 = s.clone();
    let now = engine.now();
    let r = blocking(move || {
        // Every click makes a factor (and for push sends a code): bounded, so that the
        // button is no way to fill the store, nor around the pause of "send again".
        let factors = admin
            .admin
            .list_factors(&s2.tenant, &s2.subject)
            .map_err(|e| super::super::page_error(&e))?;
        let pending: Vec<_> = factors.iter().filter(|f| f.state == "pending").collect();
        if pending.len() >= MAX_PENDING {
            return Err(format!(
                "{} factors are waiting for their code: confirm one, or remove one, before adding another.",
                pending.len()
            ));
        }
        if push
            && pending
                .iter()
                .any(|f| f.kind == "push" && now - f.created_at < RESEND_PAUSE)
        {
            return Err(format!(
                "A code was pushed for a new factor less than {RESEND_PAUSE} seconds ago: enter it, or wait a little before adding push again."
            ));
        }
        let added = if push {
            let p = crate::push::enroll_and_send(&admin.admin, &e, &s2.tenant, &s2.subject, None)
                .map_err(push_error)?;
            Added::Push(p)
        } else {
            let t = admin
                .admin
                .enroll_totp(&s2.tenant, &s2.subject, None, 6, "SHA1")
                .map_err(|e| super::super::page_error(&e))?;
            Added::Totp(t)
        };
        let (kind, id) = match &added {
            Added::Totp(t) => ("totp", &t.factor_id),
            Added::Push(p) => ("push", &p.factor.factor_id),
        };
        audit(
            &admin.admin,
            &s2,
            "factor.enroll",
            &format!("{kind} factor {id} (pending)"),
        );
        Ok::<_, String>(added)
    })
    .await;
    let added = match r {
        Some(Ok(a)) => a,
        Some(Err(m)) => return dashboard(&state, &s, &value, &m).await,
        None => return internal(),
    };
    let (title, how, label, fid) = match &added {
        Added::Totp(t) => (
            "Add an authenticator app",
            format!(
                "<p>Scan this QR code with your authenticator app:</p>{qr}\
<p>or type this secret key (time-based, 6 digits): <code class=\"secret\" id=\"secret\">{secret}</code></p>",
                qr = qr_svg(&t.uri).unwrap_or_default(),
                secret = esc(&t.secret),
            ),
            "Code the app shows",
            &t.factor_id,
        ),
        Added::Push(p) => {
            let url = p.subscribe_url.as_deref().unwrap_or_default();
            (
                "Add push notifications",
                format!(
                    "<p>In the ntfy app, subscribe to this topic: scan this QR code, or add it by hand.</p>{qr}\
<p><code class=\"secret\" id=\"subscribe-url\">{url}</code></p>\
<p>Keep it to yourself: whoever knows it can read your login notifications. A code was sent to it.</p>",
                    qr = qr_svg(url).unwrap_or_default(),
                    url = esc(url),
                ),
                "Code in the notification",
                &p.factor.factor_id,
            )
        }
    };
    let push = matches!(added, Added::Push(_));
    let form = confirm_form(&engine, &value, fid, label, push);
    page(StatusCode::OK, title, &format!("{how}{form}"))
}

/// The form that confirms pending factor `fid` with a code (for push, also one that sends
/// the code again: the phone may have subscribed after it was sent).
fn confirm_form(engine: &Engine, session: &str, fid: &str, label: &str, push: bool) -> String {
    let hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"factor\" value=\"{fid}\">",
        csrf = esc(&signer(engine).csrf(session)),
        fid = esc(fid),
    );
    let resend = if push {
        format!("<form method=\"post\" action=\"/my/push-code\">{hidden}<button type=\"submit\" id=\"resend-push\">Send the code again</button></form>")
    } else {
        String::new()
    };
    format!(
        "<form method=\"post\" action=\"/my/confirm\" id=\"confirm\">{hidden}\
<label>{label} <input name=\"code\" id=\"code\" autocomplete=\"one-time-code\" required></label>\
<button type=\"submit\" id=\"submit\">Confirm</button></form>{resend}<p><a href=\"/my/\">Back</a></p>"
    )
}

/// Seconds between two codes sent again from the page (or two push factors added).
const RESEND_PAUSE: i64 = 15;

/// Factors a user may have waiting for their code before the page adds another.
const MAX_PENDING: usize = 3;

/// Push the code of the user's pending push factor again.
pub(super) async fn push_code(
    State(state): State<HttpState>,
    Posted { s, value, form }: Posted,
) -> Response {
    let engine = state.radius.engine.clone();
    let factor = form_value(&form, "factor").unwrap_or_default();
    let admin = state.admin.clone();
    let (e, s2, f2) = (engine.clone(), s.clone(), factor.clone());
    // Ok(false): a code went out moments ago; none is sent now.
    let r = blocking(move || -> Result<bool, String> {
        let factors = admin
            .admin
            .list_factors(&s2.tenant, &s2.subject)
            .map_err(|e| super::super::page_error(&e))?;
        if !factors
            .iter()
            .any(|f| f.factor_id == f2 && f.kind == "push" && f.state == "pending")
        {
            return Err("No such push factor waiting for its code.".into());
        }
        // One code per RESEND_PAUSE: the button must not become a way to flood the push
        // server (or the phone). The send is claimed first: two clicks at once send one.
        match e.resend_push_enrolment_code(&s2.tenant, &s2.subject, &f2, RESEND_PAUSE) {
            Ok(SendOutcome::Sent { .. }) => Ok(true),
            Ok(SendOutcome::TooSoon { .. }) => Ok(false),
            Ok(other) => {
                tracing::warn!(reason = %other.reason(), "self-service push code not sent again");
                Err("The code could not be sent to the push server; try again later.".into())
            }
            Err(err) => {
                tracing::error!(error = %err, "self-service push code: store error");
                Err("The service failed; try again.".into())
            }
        }
    })
    .await;
    match r {
        Some(Ok(sent)) => {
            let form = confirm_form(&engine, &value, &factor, "Code in the notification", true);
            let message = if sent {
                "<p class=\"ok\" id=\"message\">A new code was sent to the topic.</p>".to_string()
            } else {
                format!("<p class=\"error\" id=\"too-soon\">A code was sent less than {RESEND_PAUSE} seconds ago: enter it, or wait a little before asking for another.</p>")
            };
            page(
                StatusCode::OK,
                "Add push notifications",
                &format!("{message}{form}"),
            )
        }
        Some(Err(m)) => dashboard(&state, &s, &value, &m).await,
        None => internal(),
    }
}

/// What the user is told when push cannot be added (the log or the admin has the rest).
fn push_error(e: PushEnrolError) -> String {
    match e {
        PushEnrolError::NotConfigured { .. } | PushEnrolError::NoNtfyUrl { .. } => {
            "Push notifications are not offered here; ask your administrator.".into()
        }
        PushEnrolError::NotSent { reason, .. } => {
            tracing::warn!(%reason, "self-service push enrolment: code not sent");
            "The code could not be sent to the push server; nothing was added. Try again later."
                .into()
        }
        PushEnrolError::Admin(e) => super::super::page_error(&e),
        e => {
            tracing::error!(error = %e, "self-service push enrolment failed");
            "The service failed; try again.".into()
        }
    }
}
