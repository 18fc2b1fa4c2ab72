//! Server-rendered pages for people: the enrolment link of a login (`/v1/enroll/{token}`),
//! self-service "My MFA" (`/my/`) and the admin pages (`/admin/`).
//!
//! No JavaScript and no external resource: every page is plain HTML with one inline style,
//! a strict Content-Security-Policy, `Cache-Control: no-store`, and every string that came
//! from a user or the store HTML-escaped ([`esc`]). Sessions and CSRF are in [`session`].

mod admin_pages;
mod enroll;
mod my;
pub mod session;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use portcullis_core::config::{Config, Unenrolled};

use super::HttpState;
use portcullis_core::engine::Engine;
use session::Signer;

/// Largest form body taken.
pub const MAX_FORM: usize = 8 * 1024;

/// The routes of the pages.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .merge(enroll::routes())
        .merge(my::routes())
        .merge(admin_pages::routes())
}

/// What `config check` and `serve` warn about for these pages.
pub fn config_warnings(cfg: &Config) -> Vec<String> {
    let public_url = cfg.http.as_ref().and_then(|h| h.public_url.as_ref());
    let mut out = Vec::new();
    if public_url.is_none() {
        for c in &cfg.radius.clients {
            if c.unenrolled == Unenrolled::Enroll {
                out.push(format!(
                    "client '{}' has unenrolled = \"enroll\" but [http] public_url is not set: enrolment links cannot be made, so it behaves as \"deny\"",
                    c.name
                ));
            }
        }
    }
    out
}

/// The signer of session cookies and CSRF tokens (a key derived from the master key).
/// A posted form: at most [`MAX_FORM`] bytes of UTF-8.
pub(super) fn read_form(body: &axum::body::Bytes) -> Option<String> {
    (body.len() <= MAX_FORM)
        .then(|| std::str::from_utf8(body).ok().map(str::to_string))
        .flatten()
}

/// The form of a signed-in POST (`value`: the session cookie's), its CSRF token checked;
/// or the page to answer with (form too large, or not from this session).
pub(super) fn checked_form(
    engine: &Engine,
    value: &str,
    body: &axum::body::Bytes,
) -> Result<String, Box<Response>> {
    let Some(form) = read_form(body) else {
        return Err(Box::new(page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Error",
            "<p class=\"error\">The form is too large.</p>",
        )));
    };
    if !signer(engine).check_csrf(value, &form_value(&form, "csrf").unwrap_or_default()) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "<p class=\"error\" id=\"error\">This form is not from this session; reload the page and try again.</p>",
        )));
    }
    Ok(form)
}

pub(super) fn signer(engine: &Engine) -> Signer {
    Signer::new(engine.web_session_key())
}

/// Whether cookies get `Secure`: the pages are reached over `https://`.
pub(super) fn secure(engine: &Engine) -> bool {
    engine
        .public_url()
        .is_some_and(|u| u.starts_with("https://"))
}

/// `r` with one more `Set-Cookie: value`.
pub(super) fn with_cookie(mut r: Response, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy of every page: nothing but the inline style, forms post
/// only here, never framed.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A whole page with the strict headers. `body` must already be escaped.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>\
body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}}\
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}}\
label{{display:block;margin:.4rem 0}}input{{font-size:1rem;padding:.3rem}}button{{font-size:1rem;padding:.4rem .9rem;margin:.2rem 0}}\
code,.secret{{font-family:monospace;font-size:1.1rem;word-break:break-all}}.error{{color:#b42318}}.ok{{color:#1a7f37}}\
form.inline{{display:inline}}svg{{width:14rem;height:14rem}}\
</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    );
    let mut r = (status, doc).into_response();
    strict_headers(r.headers_mut());
    r
}

/// The headers of every page.
pub fn strict_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
}

/// A 303 to `location` (after a POST), with the strict headers.
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    strict_headers(r.headers_mut());
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `k=v&k2=v2` (application/x-www-form-urlencoded) -> the value of `key`, decoded.
pub fn form_value(pairs: &str, key: &str) -> Option<String> {
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

/// A QR code of `text` as inline SVG (rendered here: no script, no external image).
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let w = code.width();
    let colors = code.to_colors();
    let quiet = 4;
    let size = w + 2 * quiet;
    // One rectangle per horizontal run of dark modules.
    let mut path = String::new();
    for (y, row) in colors.chunks(w).enumerate() {
        let mut x = 0;
        while x < w {
            if row[x] != qrcode::Color::Dark {
                x += 1;
                continue;
            }
            let start = x;
            while x < w && row[x] == qrcode::Color::Dark {
                x += 1;
            }
            let len = x - start;
            path.push_str(&format!("M{} {}h{len}v1h-{len}z", start + quiet, y + quiet));
        }
    }
    Some(format!(
        "<svg id=\"qr\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"QR code\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

/// A Unix time as RFC 3339 (UTC).
pub fn format_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The page of a failure inside a handler (the details go to the log).
/// What a page may show of an admin error: the user's own mistakes as they are (a wrong
/// code, an invalid value), never a database's or hasher's words (logged instead), nor
/// the CLI hints meant for operators.
pub fn page_error(e: &portcullis_core::admin::AdminError) -> String {
    use portcullis_core::admin::AdminError as E;
    match e {
        E::WrongCode(_) => {
            "The code does not match: check the app's clock and that it scanned the latest QR code."
                .into()
        }
        E::Invalid { .. } => e.to_string(),
        E::AlreadyConfirmed(_) => "That factor is already confirmed.".into(),
        E::NoFactor { .. } => "That factor no longer exists; reload the page.".into(),
        E::NoUser { .. } | E::NoTenant(_) => {
            "This account no longer exists; ask your administrator.".into()
        }
        other => {
            tracing::error!(error = %other, "web page: request failed");
            "The service failed; try again.".into()
        }
    }
}

pub fn internal() -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "<p class=\"error\">The service failed; try again.</p>",
    )
}

/// Run blocking work (SQLite, password hashes) off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "web page task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_show_no_database_words_and_no_operator_hints() {
        use portcullis_core::admin::AdminError;
        use portcullis_core::store::StoreError;
        let db = AdminError::Store(StoreError::Database(
            "database disk image is malformed (table factors)".into(),
        ));
        assert_eq!(page_error(&db), "The service failed; try again.");
        let gone = AdminError::NoFactor {
            tenant: "acme".into(),
            user: "alice".into(),
            factor: "f1".into(),
        };
        assert!(!page_error(&gone).contains("portcullis factor list"));
        assert!(page_error(&AdminError::WrongCode("f1".into())).contains("does not match"));
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(esc("alice"), "alice");
    }

    #[test]
    fn pages_carry_the_strict_headers_and_escape_the_title() {
        let r = page(StatusCode::OK, "<b>x</b>", "<p>ok</p>");
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["content-security-policy"], CSP);
        assert!(CSP.contains("default-src 'none'") && !CSP.contains("script-src"));
        assert_eq!(h["x-frame-options"], "DENY");
    }

    #[test]
    fn qr_codes_are_svg_without_scripts() {
        let svg = qr_svg("otpauth://totp/P:alice?secret=JBSWY3DP").unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("script"));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value("a=x%26y&b=1+2", "a").as_deref(), Some("x&y"));
        assert_eq!(form_value("a=x&b=1+2", "b").as_deref(), Some("1 2"));
        assert_eq!(form_value("a=x", "c"), None);
    }
}
