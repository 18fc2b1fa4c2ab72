//! Self-service "My MFA" (`/my/`, `/my/{tenant}/`): a user logs in with name, password and
//! a second factor (through the Engine, policy client `web`), then lists their factors,
//! adds an authenticator app (QR code, confirmed with a code) or push notifications (the
//! ntfy topic as a QR code, confirmed with the code pushed to it), removes a factor (never the
//! last confirmed one) and makes new recovery codes (shown once).

mod add;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ipnet::IpNet;
use portcullis_core::admin::{Actor, Admin, AdminError};
use portcullis_core::config::{LoginMode, Unenrolled};
use portcullis_core::engine::{Channel, Engine, LoginRequest, Step};
use portcullis_core::store::StoreError;
use std::net::IpAddr;
use zeroize::Zeroizing;

use super::session::{cookie, set_cookie, Kind, Session, SESSION_TTL};
use super::{
    blocking, checked_form, esc, form_value, format_time, internal, page, read_form, secure,
    see_other, signer, with_cookie,
};
use crate::http::HttpState;

const COOKIE: &str = "pc_my";
const PRE_COOKIE: &str = "pc_my_login";
const PATH: &str = "/my";

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/my", get(|| async { see_other("/my/") }))
        .route("/my/", get(home))
        .route("/my/{tenant}/", get(home_of_tenant))
        .route("/my/login", post(login))
        .route("/my/logout", post(logout))
        .route("/my/enroll", post(add::enroll))
        .route("/my/confirm", post(confirm))
        .route("/my/push-code", post(add::push_code))
        .route("/my/remove", post(remove))
        .route("/my/recovery", post(recovery))
        .route("/my/forget", post(forget))
}

/// The signed-in user's session and its cookie value.
fn current(engine: &Engine, headers: &HeaderMap) -> Option<(Session, String)> {
    let value = cookie(headers, COOKIE)?;
    let s = signer(engine).verify(&value, Kind::My, engine.now())?;
    Some((s, value))
}

async fn home(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    show_home(state, headers, String::new()).await
}

async fn home_of_tenant(
    State(state): State<HttpState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    show_home(state, headers, tenant).await
}

async fn show_home(state: HttpState, headers: HeaderMap, tenant: String) -> Response {
    let engine = state.radius.engine.clone();
    match current(&engine, &headers) {
        Some((s, value)) => dashboard(&state, &s, &value, "").await,
        None => login_page(&engine, &tenant, "", StatusCode::OK),
    }
}

/// The login form, with a fresh pre-session that binds its POST.
fn login_page(engine: &Engine, tenant: &str, error: &str, status: StatusCode) -> Response {
    let pre = signer(engine).issue(Kind::Pre, "", "my", engine.now());
    let csrf = signer(engine).csrf(&pre);
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(error))
    };
    let body = format!(
        "{error}<form method=\"post\" action=\"/my/login\" id=\"login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Organisation <input name=\"tenant\" id=\"tenant\" value=\"{tenant}\" required></label>\
<label>User name <input name=\"username\" id=\"username\" autocomplete=\"username\" required></label>\
<label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" required></label>\
<label>Verification code (app, hardware token or recovery code) <input name=\"code\" id=\"code\" autocomplete=\"one-time-code\" required></label>\
<button type=\"submit\" id=\"submit\">Sign in</button></form>",
        csrf = esc(&csrf),
        tenant = esc(tenant),
    );
    let r = page(status, "My second factors", &body);
    with_cookie(
        r,
        &set_cookie(PRE_COOKIE, &pre, PATH, secure(engine), SESSION_TTL),
    )
}

/// Read a POST form (bounded).
/// The browser's address: the connection's, or behind a trusted proxy the nearest one its
/// `X-Forwarded-For` names that is not a trusted proxy too. A trusted proxy that names no
/// address, and a loopback peer that is not listed (most likely a proxy on this machine
/// that sends no header), give `proxy:ADDRESS`, which stands for all its users and is
/// never throttled; `web` only for a router driven without a listener. IPv4 addresses
/// seen as IPv6 (`::ffff:192.0.2.1`, a dual-stack listener) are taken as IPv4.
pub(super) fn peer(ext: &Extensions, headers: &HeaderMap, trusted: &[IpNet]) -> String {
    let Some(peer) = ext
        .get::<ConnectInfo<crate::http::Peer>>()
        .map(|c| c.0 .0.ip().to_canonical())
    else {
        return "web".into();
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return if peer.is_loopback() {
            format!("proxy:{peer}")
        } else {
            peer.to_string()
        };
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip.to_string(),
            // Garbage before any client address: nothing further left can be believed.
            Err(_) => break,
        }
    }
    format!("proxy:{peer}")
}

async fn login(
    State(state): State<HttpState>,
    ext: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = state.radius.engine.clone();
    let Some(form) = read_form(&body) else {
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Error",
            "<p class=\"error\">The form is too large.</p>",
        );
    };
    let field = |k| form_value(&form, k).unwrap_or_default();
    let tenant = field("tenant").trim().to_string();
    let sign = signer(&engine);
    let pre_ok = cookie(&headers, PRE_COOKIE)
        .filter(|pre| sign.verify(pre, Kind::Pre, engine.now()).is_some())
        .is_some_and(|pre| sign.check_csrf(&pre, &field("csrf")));
    if !pre_ok {
        return login_page(
            &engine,
            &tenant,
            "The form had expired; please sign in again.",
            StatusCode::FORBIDDEN,
        );
    }
    let username = field("username").trim().to_string();
    let password = Zeroizing::new(field("password"));
    let code = Zeroizing::new(field("code"));
    if tenant.is_empty() || username.is_empty() {
        return login_page(
            &engine,
            &tenant,
            "Enter the organisation and your user name.",
            StatusCode::BAD_REQUEST,
        );
    }
    if code.trim().is_empty() {
        // Not a login attempt: nothing is checked, counted or left open.
        return login_page(
            &engine,
            &tenant,
            "Enter the code from your authenticator app (or a recovery code) with your password.",
            StatusCode::BAD_REQUEST,
        );
    }
    let e = engine.clone();
    let (t, u) = (tenant.clone(), username.clone());
    let source = peer(&ext, &headers, &state.trusted_proxies);
    let result = blocking(move || {
        // The user as they are before the login is checked: a session epoch raised while
        // it runs (factors reset, password set) ends this session too. A directory user's
        // first login makes their row, so it is read after the login then.
        let before = stored_user(&e, &t, &u);
        web_login(&e, &t, &u, &source, &password, &code)?;
        match before {
            Ok(Some(user)) => Ok(user),
            Ok(None) => match stored_user(&e, &t, &u) {
                Ok(Some(user)) => Ok(user),
                Ok(None) => Err("This account no longer exists; ask your administrator.".into()),
                Err(m) => Err(m),
            },
            Err(m) => Err(m),
        }
    })
    .await;
    match result {
        Some(Ok(user)) => {
            let value = sign.issue_my(&tenant, &user, engine.now());
            let r = see_other("/my/");
            let r = with_cookie(
                r,
                &set_cookie(COOKIE, &value, PATH, secure(&engine), SESSION_TTL),
            );
            with_cookie(r, &set_cookie(PRE_COOKIE, "", PATH, secure(&engine), 0))
        }
        Some(Err(message)) => login_page(&engine, &tenant, &message, StatusCode::UNAUTHORIZED),
        None => internal(),
    }
}

/// The stored user `username` of `tenant`, if any; `Err` is what the user may see.
fn stored_user(
    engine: &Engine,
    tenant: &str,
    username: &str,
) -> Result<Option<portcullis_core::model::User>, String> {
    let read = || -> Result<_, StoreError> {
        let store = engine.store();
        match store.tenant_by_name(tenant)? {
            Some(t) => store.user_by_name(t.id, username),
            None => Ok(None),
        }
    };
    read().map_err(|e| {
        tracing::error!(error = %e, "self-service login: store error");
        "The service failed; try again.".to_string()
    })
}

/// Password then code through the Engine (policy client `web`); Ok only after a second
/// factor. `Err` is what the user may see.
fn web_login(
    engine: &Engine,
    tenant: &str,
    username: &str,
    source: &str,
    password: &str,
    code: &str,
) -> Result<(), String> {
    let channel = Channel::Web {
        address: source.to_string(),
    };
    if engine.delegates_first_factor(tenant, &channel) {
        // The tenant's passwords are checked elsewhere (first_factor = "none"): the
        // Engine would take the password field for a code, and one code would sign in.
        tracing::warn!(%tenant, user = %username,
            "self-service sign-in refused: the tenant's first factor is checked elsewhere (first_factor = \"none\")");
        return Err(
            "These pages are not available for this account: its password is not checked here; ask your administrator."
                .into(),
        );
    }
    let failed = |e: portcullis_core::engine::EngineError| {
        tracing::error!(error = %e, "self-service login: store error");
        "The service failed; try again.".to_string()
    };
    let first = engine
        .start(&LoginRequest {
            tenant: tenant.to_string(),
            channel: channel.clone(),
            source: source.to_string(),
            mode: LoginMode::Challenge,
            username: username.to_string(),
            credential: Zeroizing::new(password.as_bytes().to_vec()),
            delimiter: ",".into(),
            prompt: "Verification code".into(),
            unenrolled: Unenrolled::Deny,
            source_limited: true,
        })
        .map_err(failed)?;
    let step = match first {
        Step::Prompt { txn, .. } => engine
            .answer(&portcullis_core::engine::AnswerRequest {
                tenant: tenant.to_string(),
                channel,
                source: source.to_string(),
                username: username.to_string(),
                txn,
                answer: Zeroizing::new(code.trim().as_bytes().to_vec()),
                prompt: "Verification code".into(),
                source_limited: true,
            })
            .map_err(failed)?,
        other => other,
    };
    match step {
        // Only a second factor checked in this login counts: not one skipped by a rule,
        // remembered from another login, or a first factor checked elsewhere.
        Step::Accept { factors_used, .. }
            if factors_used.len() >= 2
                && factors_used[0] == "password"
                && !matches!(factors_used[1].as_str(), "remembered" | "delegated") =>
        {
            Ok(())
        }
        Step::Accept { factors_used, .. } => {
            tracing::warn!(%tenant, user = %username, factors = ?factors_used,
                "self-service sign-in refused: no second factor was checked in this login");
            Err(
                "These pages need a second factor, and none was asked; ask your administrator."
                    .into(),
            )
        }
        Step::Reject { user_message } => Err(user_message),
        Step::Prompt { .. } => Err("Wrong code; sign in again.".into()),
        Step::Wait { .. } => Err(
            "Push approval is not offered here; enter a code from your app or a recovery code."
                .into(),
        ),
    }
}

/// A POST of the signed-in user: the session, its cookie's value and the form, whose CSRF
/// token was checked. The rejection is the page to answer with (sign in again, form too
/// large, forbidden).
pub(super) struct Posted {
    pub s: Session,
    pub value: String,
    pub form: String,
}

impl FromRequest<HttpState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (s, value, form) = authorize(&state.radius.engine, &headers, &body).map_err(|r| *r)?;
        // The cookie proves who signed in, not that they still may: a user disabled (or
        // deleted, or made again) since then, or whose sessions were ended (factors reset,
        // password set: a raised session epoch), changes nothing more, as the dashboard
        // already refuses them.
        let engine = state.radius.engine.clone();
        let s2 = s.clone();
        let enabled = blocking(move || -> Result<bool, StoreError> {
            let store = engine.store();
            let Some(t) = store.tenant_by_name(&s2.tenant)? else {
                return Ok(false);
            };
            Ok(store
                .user_by_name(t.id, &s2.subject)?
                .is_some_and(|u| !u.disabled && s2.still_of(&u)))
        })
        .await;
        match enabled {
            Some(Ok(true)) => Ok(Self { s, value, form }),
            Some(Ok(false)) => Err(with_cookie(
                see_other("/my/"),
                &set_cookie(COOKIE, "", PATH, secure(&state.radius.engine), 0),
            )),
            Some(Err(e)) => {
                tracing::error!(error = %e, "self-service page: store error");
                Err(internal())
            }
            None => Err(internal()),
        }
    }
}

fn authorize(
    engine: &Engine,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, String, String), Box<Response>> {
    let Some((s, value)) = current(engine, headers) else {
        return Err(Box::new(see_other("/my/")));
    };
    let form = checked_form(engine, &value, body)?;
    Ok((s, value, form))
}

fn audit(admin: &Admin, s: &Session, action: &str, detail: &str) {
    let actor = Actor {
        channel: "web",
        name: &s.subject,
        source: "self-service".into(),
    };
    if let Err(e) = admin.record_admin_action(&actor, &s.tenant, &s.subject, action, detail) {
        tracing::error!(error = %e, action, "cannot write the audit record of a self-service change");
    }
}

async fn logout(State(state): State<HttpState>, _: Posted) -> Response {
    let engine = state.radius.engine.clone();
    with_cookie(
        see_other("/my/"),
        &set_cookie(COOKIE, "", PATH, secure(&engine), 0),
    )
}

async fn confirm(State(state): State<HttpState>, Posted { s, value, form }: Posted) -> Response {
    let factor = form_value(&form, "factor").unwrap_or_default();
    let code = Zeroizing::new(form_value(&form, "code").unwrap_or_default());
    let admin = state.admin.clone();
    let s2 = s.clone();
    let r = blocking(move || {
        admin
            .admin
            .confirm_factor(&s2.tenant, &s2.subject, &factor, &code)?;
        audit(
            &admin.admin,
            &s2,
            "factor.confirm",
            &format!("factor {factor}"),
        );
        Ok::<_, AdminError>(())
    })
    .await;
    match r {
        Some(Ok(())) => {
            dashboard(&state, &s, &value, "ok:The factor is confirmed and ready.").await
        }
        Some(Err(e)) => dashboard(&state, &s, &value, &super::page_error(&e)).await,
        None => internal(),
    }
}

async fn remove(State(state): State<HttpState>, Posted { s, value, form }: Posted) -> Response {
    let factor = form_value(&form, "factor").unwrap_or_default();
    let admin = state.admin.clone();
    let s2 = s.clone();
    let r = blocking(move || -> Result<Result<(), String>, AdminError> {
        let factors = admin.admin.list_factors(&s2.tenant, &s2.subject)?;
        let Some(f) = factors.iter().find(|f| f.factor_id == factor) else {
            return Ok(Err("No such factor.".into()));
        };
        let confirmed = factors.iter().filter(|f| f.state == "confirmed").count();
        if f.state == "confirmed" && confirmed <= 1 {
            return Ok(Err("This is your last confirmed factor: add another one before removing it (or ask your administrator).".into()));
        }
        admin.admin.remove_own_factor(&s2.tenant, &s2.subject, &factor)?;
        audit(&admin.admin, &s2, "factor.remove", &format!("factor {factor}"));
        Ok(Ok(()))
    })
    .await;
    match r {
        Some(Ok(Ok(()))) => dashboard(&state, &s, &value, "ok:The factor was removed.").await,
        Some(Ok(Err(m))) => dashboard(&state, &s, &value, &m).await,
        Some(Err(e)) => dashboard(&state, &s, &value, &super::page_error(&e)).await,
        None => internal(),
    }
}

/// Forget every remembered source ("remembered devices"): the next login from each of
/// them asks for a second factor again.
async fn forget(State(state): State<HttpState>, Posted { s, value, .. }: Posted) -> Response {
    let admin = state.admin.clone();
    let s2 = s.clone();
    let r = blocking(move || {
        let n = admin.admin.forget_sources(&s2.tenant, &s2.subject, None)?;
        audit(
            &admin.admin,
            &s2,
            "sources.forget",
            &format!("{n} remembered source(s)"),
        );
        Ok::<_, AdminError>(n)
    })
    .await;
    match r {
        Some(Ok(n)) => {
            let m = format!(
                "ok:{n} remembered device(s) forgotten: they ask for a second factor again."
            );
            dashboard(&state, &s, &value, &m).await
        }
        Some(Err(e)) => dashboard(&state, &s, &value, &super::page_error(&e)).await,
        None => internal(),
    }
}

async fn recovery(State(state): State<HttpState>, Posted { s, value, .. }: Posted) -> Response {
    let admin = state.admin.clone();
    let s2 = s.clone();
    let r = blocking(move || {
        let codes = admin
            .admin
            .generate_recovery_codes(&s2.tenant, &s2.subject)?;
        audit(
            &admin.admin,
            &s2,
            "recovery.generate",
            &format!("{} codes", codes.len()),
        );
        Ok::<_, AdminError>(codes)
    })
    .await;
    match r {
        Some(Ok(codes)) => {
            let items: String = codes
                .iter()
                .map(|c| format!("<li><code>{}</code></li>", esc(c)))
                .collect();
            let body = format!(
                "<p>Each code logs you in once where a verification code is asked. Keep them somewhere safe: they are shown only now, and your older codes no longer work.</p>\
<ul id=\"recovery-codes\">{items}</ul><p><a href=\"/my/\" id=\"back\">Back</a></p>"
            );
            page(StatusCode::OK, "Your new recovery codes", &body)
        }
        Some(Err(e)) => dashboard(&state, &s, &value, &super::page_error(&e)).await,
        None => internal(),
    }
}

/// The signed-in user's page. `message` prefixed `ok:` is a success, else an error.
async fn dashboard(state: &HttpState, s: &Session, value: &str, message: &str) -> Response {
    let engine = state.radius.engine.clone();
    let admin = state.admin.clone();
    let s2 = s.clone();
    let details = blocking(move || admin.admin.show_user(&s2.tenant, &s2.subject)).await;
    let d = match details {
        // Disabled, or the session was ended (see `Posted`): signed out.
        Some(Ok(d)) if !d.user.disabled && s.still_of(&d.user) => d,
        Some(Ok(_)) | Some(Err(AdminError::NoUser { .. })) | Some(Err(AdminError::NoTenant(_))) => {
            return with_cookie(
                see_other("/my/"),
                &set_cookie(COOKIE, "", PATH, secure(&engine), 0),
            );
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "self-service page: store error");
            return internal();
        }
        None => return internal(),
    };
    // Push is offered where the tenant pushes through ntfy (a webhook is the admin's).
    let can_push = matches!(engine.push_enrolment_target(&s.tenant), Some(Some(_)));
    let csrf = esc(&signer(&engine).csrf(value));
    let hidden = format!("<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">");
    let message = match message.strip_prefix("ok:") {
        Some(ok) => format!("<p class=\"ok\" id=\"message\">{}</p>", esc(ok)),
        None if message.is_empty() => String::new(),
        None => format!("<p class=\"error\" id=\"error\">{}</p>", esc(message)),
    };
    let rows: String = d
        .factors
        .iter()
        .map(|f| {
            format!(
                "<tr data-kind=\"{kind}\" data-state=\"{state}\"><td>{kind}</td><td>{state}</td><td><code>{id}</code></td><td>{created}</td><td>{used}</td>\
<td><form class=\"inline\" method=\"post\" action=\"/my/remove\">{hidden}<input type=\"hidden\" name=\"factor\" value=\"{id}\"><button type=\"submit\">Remove</button></form></td></tr>",
                kind = esc(f.kind),
                state = esc(f.state),
                id = esc(&f.factor_id),
                created = format_time(f.created_at),
                used = f.last_used_at.map(format_time).unwrap_or_else(|| "never".into()),
            )
        })
        .collect();
    let body = format!(
        "{message}<p>Signed in as <strong id=\"user\">{user}</strong> ({tenant}); the session ends at {ends}.</p>\
<form method=\"post\" action=\"/my/logout\">{hidden}<button type=\"submit\" id=\"logout\">Sign out</button></form>\
<h2>Factors</h2><table id=\"factors\"><tr><th>kind</th><th>state</th><th>id</th><th>added</th><th>last used</th><th></th></tr>{rows}</table>\
<form method=\"post\" action=\"/my/enroll\">{hidden}<button type=\"submit\" id=\"add-totp\">Add an authenticator app</button></form>{push}\
<h2>Recovery codes</h2><p><span id=\"recovery-left\">{left}</span> unused.</p>\
<form method=\"post\" action=\"/my/recovery\">{hidden}<button type=\"submit\" id=\"new-recovery\">Make new recovery codes</button></form>\
<h2>Remembered devices</h2><p>Where a rule remembers a device (network address), logins from it may skip the second factor for a while.</p>\
<form method=\"post\" action=\"/my/forget\">{hidden}<button type=\"submit\" id=\"forget\">Forget all remembered devices</button></form>",
        user = esc(&d.user.name),
        tenant = esc(&s.tenant),
        ends = format_time(s.expires_at),
        left = d.unused_recovery_codes,
        push = if can_push {
            format!("<form method=\"post\" action=\"/my/enroll\">{hidden}<input type=\"hidden\" name=\"kind\" value=\"push\"><button type=\"submit\" id=\"add-push\">Add push notifications (ntfy app)</button></form>")
        } else {
            String::new()
        },
    );
    page(StatusCode::OK, "My second factors", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(addr: &str, forwarded: &[&str]) -> (Extensions, HeaderMap) {
        let mut ext = Extensions::new();
        ext.insert(ConnectInfo(crate::http::Peer(addr.parse().unwrap())));
        let mut headers = HeaderMap::new();
        for f in forwarded {
            headers.append("x-forwarded-for", f.parse().unwrap());
        }
        (ext, headers)
    }

    #[test]
    fn the_client_is_the_connection_unless_a_trusted_proxy_names_it() {
        let proxies: Vec<IpNet> = vec![
            "192.0.2.80/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let cases = [
            // Not a proxy: its X-Forwarded-For is not believed.
            ("198.51.100.5:4000", &["203.0.113.9"][..], "198.51.100.5"),
            ("[::ffff:198.51.100.5]:4000", &[][..], "198.51.100.5"),
            ("192.0.2.80:4000", &["203.0.113.9"][..], "203.0.113.9"),
            (
                "[::ffff:192.0.2.80]:4000",
                &["::ffff:203.0.113.9"][..],
                "203.0.113.9",
            ),
            // The nearest address that is not a proxy; what the client wrote before it is
            // ignored.
            (
                "192.0.2.80:4000",
                &["198.51.100.1, 203.0.113.9, 10.1.2.3"][..],
                "203.0.113.9",
            ),
            (
                "192.0.2.80:4000",
                &["198.51.100.1", "203.0.113.9"][..],
                "203.0.113.9",
            ),
            // A proxy that names nobody (or garbage) stands for all its users.
            ("192.0.2.80:4000", &[][..], "proxy:192.0.2.80"),
            ("192.0.2.80:4000", &["unknown"][..], "proxy:192.0.2.80"),
            ("192.0.2.80:4000", &["10.9.9.9"][..], "proxy:192.0.2.80"),
            // Loopback, not listed: a local proxy whose header is not believed.
            ("127.0.0.1:4000", &["203.0.113.9"][..], "proxy:127.0.0.1"),
            ("[::1]:4000", &[][..], "proxy:::1"),
        ];
        for (addr, forwarded, want) in cases {
            let (ext, headers) = from(addr, forwarded);
            assert_eq!(peer(&ext, &headers, &proxies), want, "{addr} {forwarded:?}");
        }
        let (ext, headers) = from("192.0.2.80:4000", &["203.0.113.9"]);
        assert_eq!(
            peer(&ext, &headers, &[]),
            "192.0.2.80",
            "no trusted proxies"
        );
        assert_eq!(peer(&Extensions::new(), &headers, &proxies), "web");
    }
}
