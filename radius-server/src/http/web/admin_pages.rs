//! Admin pages (`/admin/`): sign in by pasting an admin API token; the token's role and
//! tenant decide what is shown and allowed, exactly as in the JSON API (the token is looked
//! up again on every request, so a revoked or expired token ends its sessions at once).
//! Users with their factors and lock state; reset a user's factors; issue a bypass code; the
//! audit log.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use portcullis_core::admin::{Actor, AdminError, TokenCheck};
use portcullis_core::engine::{Engine, ThrottleInForce};
use portcullis_core::model::{AdminRole, AdminToken, AuditFilter};
use zeroize::Zeroizing;

use super::session::{cookie, set_cookie, Kind, SESSION_TTL};
use super::{
    blocking, checked_form, esc, form_value, format_time, internal, page, read_form, secure,
    see_other, signer, with_cookie,
};
use crate::http::admin::{allows, note_expired_token, Perm};
use crate::http::HttpState;

const COOKIE: &str = "pc_admin";
const PRE_COOKIE: &str = "pc_admin_login";
const PATH: &str = "/admin";

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/admin", get(|| async { see_other("/admin/") }))
        .route("/admin/", get(home))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/t/{tenant}/", get(users))
        .route("/admin/t/{tenant}/audit", get(audit_log))
        .route("/admin/t/{tenant}/reset", post(reset))
        .route("/admin/t/{tenant}/bypass", post(bypass))
}

/// The signed-in token (still valid) and the session's cookie value.
async fn current(state: &HttpState, headers: &HeaderMap) -> Option<(AdminToken, String)> {
    let engine = state.radius.engine.clone();
    let value = cookie(headers, COOKIE)?;
    let s = signer(&engine).verify(&value, Kind::Admin, engine.now())?;
    let now = engine.now();
    let token = blocking(move || engine.store().admin_token(&s.subject))
        .await?
        .ok()??;
    (!token.revoked && !token.is_expired(now)).then_some((token, value))
}

/// May `t` do `perm` in `tenant`?
fn may(t: &AdminToken, tenant: &str, perm: Perm) -> bool {
    (t.role == AdminRole::Operator || t.tenant.as_deref() == Some(tenant)) && allows(t.role, perm)
}

fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "<p class=\"error\" id=\"error\">Your token's role may not do this here.</p><p><a href=\"/admin/\">Back</a></p>",
    )
}

fn login_page(engine: &Engine, error: &str, status: StatusCode) -> Response {
    let pre = signer(engine).issue(Kind::Pre, "", "admin", engine.now());
    let csrf = esc(&signer(engine).csrf(&pre));
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(error))
    };
    let body = format!(
        "{error}<form method=\"post\" action=\"/admin/login\" id=\"login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Admin token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label>\
<button type=\"submit\" id=\"submit\">Sign in</button></form>"
    );
    with_cookie(
        page(status, "Portcullis administration", &body),
        &set_cookie(PRE_COOKIE, &pre, PATH, secure(engine), SESSION_TTL),
    )
}

async fn home(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let engine = state.radius.engine.clone();
    let Some((token, value)) = current(&state, &headers).await else {
        return login_page(&engine, "", StatusCode::OK);
    };
    if let Some(t) = &token.tenant {
        return see_other(&format!("/admin/t/{}/", urlencoding::encode(t)));
    }
    let admin = state.admin.clone();
    let tenants = match blocking(move || admin.admin.list_tenants()).await {
        Some(Ok(t)) => t,
        _ => return internal(),
    };
    let items: String = tenants
        .iter()
        .map(|t| {
            format!(
                "<li><a href=\"/admin/t/{}/\">{}</a></li>",
                esc(&urlencoding::encode(&t.name)),
                esc(&t.name)
            )
        })
        .collect();
    let body = format!(
        "{}<h2>Tenants</h2><ul id=\"tenants\">{items}</ul>",
        header_bar(&engine, &token, &value)
    );
    page(StatusCode::OK, "Portcullis administration", &body)
}

fn header_bar(engine: &Engine, t: &AdminToken, value: &str) -> String {
    let csrf = esc(&signer(engine).csrf(value));
    format!(
        "<p>Signed in with token <strong id=\"token-name\">{name}</strong> (role {role}{tenant}).</p>\
<form method=\"post\" action=\"/admin/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"logout\">Sign out</button></form>",
        name = esc(&t.name),
        role = t.role.as_str(),
        tenant = t
            .tenant
            .as_ref()
            .map(|t| format!(", tenant {}", esc(t)))
            .unwrap_or_default(),
    )
}

async fn login(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let engine = state.radius.engine.clone();
    let Some(form) = read_form(&body) else {
        return login_page(
            &engine,
            "The form is too large.",
            StatusCode::PAYLOAD_TOO_LARGE,
        );
    };
    let sign = signer(&engine);
    let csrf = form_value(&form, "csrf").unwrap_or_default();
    let pre_ok = cookie(&headers, PRE_COOKIE)
        .filter(|pre| sign.verify(pre, Kind::Pre, engine.now()).is_some())
        .is_some_and(|pre| sign.check_csrf(&pre, &csrf));
    if !pre_ok {
        return login_page(
            &engine,
            "The form had expired; please sign in again.",
            StatusCode::FORBIDDEN,
        );
    }
    let presented = Zeroizing::new(form_value(&form, "token").unwrap_or_default());
    let admin = state.admin.clone();
    match blocking(move || admin.admin.authenticate_token(&presented)).await {
        Some(Ok(TokenCheck::Valid(t))) => {
            let value = sign.issue(
                Kind::Admin,
                t.tenant.as_deref().unwrap_or(""),
                &t.id,
                engine.now(),
            );
            let r = with_cookie(
                see_other("/admin/"),
                &set_cookie(COOKIE, &value, PATH, secure(&engine), SESSION_TTL),
            );
            with_cookie(r, &set_cookie(PRE_COOKIE, "", PATH, secure(&engine), 0))
        }
        Some(Ok(check)) => {
            if let TokenCheck::Expired(t) = &check {
                note_expired_token(t, "admin page sign-in");
            }
            login_page(
                &engine,
                "This token is not valid (unknown, revoked or expired).",
                StatusCode::UNAUTHORIZED,
            )
        }
        _ => internal(),
    }
}

/// A POST of a signed-in admin: the token, the form; or the page to answer with.
async fn authorize(
    state: &HttpState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(AdminToken, String, String), Response> {
    let Some((t, value)) = current(state, headers).await else {
        return Err(see_other("/admin/"));
    };
    let form = checked_form(&state.radius.engine, &value, body).map_err(|r| *r)?;
    Ok((t, value, form))
}

async fn logout(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let engine = state.radius.engine.clone();
    if let Err(r) = authorize(&state, &headers, &body).await {
        return r;
    }
    with_cookie(
        see_other("/admin/"),
        &set_cookie(COOKIE, "", PATH, secure(&engine), 0),
    )
}

async fn users(
    State(state): State<HttpState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let engine = state.radius.engine.clone();
    let Some((t, value)) = current(&state, &headers).await else {
        return see_other("/admin/");
    };
    users_page(&state, &engine, &t, &value, &tenant, "").await
}

async fn users_page(
    state: &HttpState,
    engine: &Engine,
    t: &AdminToken,
    value: &str,
    tenant: &str,
    message: &str,
) -> Response {
    let bar = header_bar(engine, t, value);
    let audit_link = if may(t, tenant, Perm::ReadAudit) {
        format!(
            "<p><a id=\"audit-link\" href=\"/admin/t/{}/audit\">Audit log</a></p>",
            esc(&urlencoding::encode(tenant))
        )
    } else {
        String::new()
    };
    if !may(t, tenant, Perm::ReadUsers) {
        if audit_link.is_empty() {
            return forbidden();
        }
        return page(StatusCode::OK, tenant, &format!("{bar}{audit_link}"));
    }
    let admin = state.admin.clone();
    let tn = tenant.to_string();
    let details = blocking(move || -> Result<_, AdminError> {
        let mut out = Vec::new();
        for u in admin.admin.list_users(&tn)? {
            out.push(admin.admin.show_user(&tn, &u.name)?);
        }
        Ok(out)
    })
    .await;
    let details = match details {
        Some(Ok(d)) => d,
        Some(Err(AdminError::NoTenant(_))) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<p class=\"error\">No such tenant.</p>",
            )
        }
        _ => return internal(),
    };
    let csrf = esc(&signer(engine).csrf(value));
    let can_reset = may(t, tenant, Perm::ResetFactors);
    let can_bypass = may(t, tenant, Perm::BypassCodes);
    let tpath = esc(&urlencoding::encode(tenant));
    let rows: String = details
        .iter()
        .map(|d| {
            let factors: Vec<String> = d
                .factors
                .iter()
                .map(|f| format!("{} ({})", esc(f.kind), esc(f.state)))
                .collect();
            let lock = match d.throttle {
                Some(ThrottleInForce::Locked { until, .. }) => {
                    format!("locked until {}", format_time(until))
                }
                Some(ThrottleInForce::Delayed { next_try_at, .. }) => format!(
                    "{} failed codes, next try at {}",
                    d.failed_codes,
                    format_time(next_try_at)
                ),
                None if d.failed_codes > 0 => format!("{} failed codes", d.failed_codes),
                None => "no".into(),
            };
            let user = esc(&d.user.name);
            let mut actions = String::new();
            if can_reset {
                actions.push_str(&format!("<form class=\"inline\" method=\"post\" action=\"/admin/t/{tpath}/reset\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"user\" value=\"{user}\"><button type=\"submit\" class=\"reset\">Reset factors</button></form>"));
            }
            if can_bypass {
                actions.push_str(&format!("<form class=\"inline\" method=\"post\" action=\"/admin/t/{tpath}/bypass\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"user\" value=\"{user}\"><button type=\"submit\" class=\"bypass\">Bypass code (1 use, 1 h)</button></form>"));
            }
            format!(
                "<tr data-user=\"{user}\"><td>{user}</td><td>{}</td><td>{}</td><td>{lock}</td><td>{actions}</td></tr>",
                if factors.is_empty() { "none".to_string() } else { factors.join(", ") },
                if d.user.disabled { "yes" } else { "no" },
            )
        })
        .collect();
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<div id=\"message\">{message}</div>")
    };
    let body = format!(
        "{bar}{message}{audit_link}<table id=\"users\"><tr><th>user</th><th>factors</th><th>disabled</th><th>locked</th><th></th></tr>{rows}</table>"
    );
    page(StatusCode::OK, tenant, &body)
}

/// `reset` and `bypass`: the checked form's user, or the page to answer with.
async fn user_action(
    state: &HttpState,
    headers: &HeaderMap,
    body: &Bytes,
    tenant: &str,
    perm: Perm,
) -> Result<(AdminToken, String, String), Response> {
    let (t, value, form) = authorize(state, headers, body).await?;
    if !may(&t, tenant, perm) {
        return Err(forbidden());
    }
    Ok((t, value, form_value(&form, "user").unwrap_or_default()))
}

fn actor(t: &AdminToken) -> Actor<'_> {
    Actor {
        channel: "admin-web",
        name: &t.name,
        source: format!("token {}", t.id),
    }
}

async fn reset(
    State(state): State<HttpState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = state.radius.engine.clone();
    let (t, value, user) =
        match user_action(&state, &headers, &body, &tenant, Perm::ResetFactors).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let admin = state.admin.clone();
    let (tn, un, tk) = (tenant.clone(), user.clone(), t.clone());
    let r = blocking(move || {
        let n = admin.admin.reset_factors(&tn, &un)?;
        if let Err(e) = admin.admin.record_admin_action(
            &actor(&tk),
            &tn,
            &un,
            "factor.reset",
            &format!("{n} factors and the recovery codes removed"),
        ) {
            tracing::error!(error = %e, "cannot write the audit record of an admin change");
        }
        Ok::<_, AdminError>(n)
    })
    .await;
    let message = match r {
        Some(Ok(n)) => format!(
            "<p class=\"ok\">{} factors of {} removed, and the recovery codes.</p>",
            n,
            esc(&user)
        ),
        Some(Err(e)) => format!("<p class=\"error\">{}</p>", esc(&super::page_error(&e))),
        None => return internal(),
    };
    users_page(&state, &engine, &t, &value, &tenant, &message).await
}

async fn bypass(
    State(state): State<HttpState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = state.radius.engine.clone();
    let (t, value, user) =
        match user_action(&state, &headers, &body, &tenant, Perm::BypassCodes).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let admin = state.admin.clone();
    let (tn, un, tk) = (tenant.clone(), user.clone(), t.clone());
    let r = blocking(move || {
        let c = admin.admin.issue_bypass_code(&tn, &un, 1, 3600)?;
        if let Err(e) =
            admin
                .admin
                .record_admin_action(&actor(&tk), &tn, &un, "bypass.issue", "1 use, 1h")
        {
            tracing::error!(error = %e, "cannot write the audit record of an admin change");
        }
        Ok::<_, AdminError>(c)
    })
    .await;
    let message = match r {
        Some(Ok(c)) => format!(
            "<p class=\"ok\">Bypass code for {}: <code id=\"bypass-code\">{}</code> (one use, until {}). It is shown only now.</p>",
            esc(&user),
            esc(&c.code),
            format_time(c.expires_at)
        ),
        Some(Err(e)) => format!("<p class=\"error\">{}</p>", esc(&super::page_error(&e))),
        None => return internal(),
    };
    users_page(&state, &engine, &t, &value, &tenant, &message).await
}

async fn audit_log(
    State(state): State<HttpState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let engine = state.radius.engine.clone();
    let Some((t, value)) = current(&state, &headers).await else {
        return see_other("/admin/");
    };
    if !may(&t, &tenant, Perm::ReadAudit) {
        return forbidden();
    }
    let admin = state.admin.clone();
    let tn = tenant.clone();
    let records = match blocking(move || {
        admin.admin.audit(&AuditFilter {
            tenant: Some(tn),
            username: None,
            since: None,
            limit: 200,
        })
    })
    .await
    {
        Some(Ok(r)) => r,
        Some(Err(AdminError::NoTenant(_))) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<p class=\"error\">No such tenant.</p>",
            )
        }
        _ => return internal(),
    };
    let rows: String = records
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                format_time(r.time),
                esc(&r.username),
                esc(&r.channel),
                esc(&r.client),
                esc(&r.source),
                esc(r.result.as_str()),
                esc(&r.factors.join(",")),
                esc(&r.reason),
            )
        })
        .collect();
    let body = format!(
        "{}<p><a href=\"/admin/t/{}/\">Users</a></p><table id=\"audit\"><tr><th>time</th><th>user</th><th>channel:client</th><th>source</th><th>result</th><th>factors</th><th>reason</th></tr>{rows}</table>",
        header_bar(&engine, &t, &value),
        esc(&urlencoding::encode(&tenant)),
    );
    page(StatusCode::OK, &format!("Audit log of {tenant}"), &body)
}
