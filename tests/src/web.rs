//! The web pages over the raw HTTP client ([`crate::http`]): a free port for a listener
//! that is also the `public_url`, GET and form POST with a cookie, hidden fields, cookies,
//! form encoding and a self-service sign-in.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;

use crate::http::{request_full, HttpReply};
use crate::TestEnv;

/// A port on 127.0.0.1 that was free a moment ago (for a listener whose address must be
/// known before the daemon starts, e.g. to be its `public_url`).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `http` with extra `headers`.
pub fn get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    request_full(http, "GET", path, headers, None, Duration::from_secs(10))
}

/// `POST path` on `http` of the urlencoded `form`, sending `cookie` (`name=value`, or
/// empty).
pub fn post_form(http: SocketAddr, path: &str, cookie: &str, form: &str) -> HttpReply {
    request_full(
        http,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        Some(form.as_bytes()),
        Duration::from_secs(10),
    )
}

/// `factor list --json` of `user` in tenant acme.
pub fn factors(env: &TestEnv, user: &str) -> Vec<Value> {
    let v = env.cli_json(&["factor", "list", "--tenant", "acme", user, "--json"]);
    v.as_array()
        .cloned()
        .or_else(|| v["factors"].as_array().cloned())
        .unwrap_or_else(|| panic!("factor list: {v}"))
}

/// The value of the hidden field `name` in `html` (the first one).
pub fn hidden(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&key)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + key.len();
    html[i..].split('"').next().unwrap().to_string()
}

/// The TOTP secret an enrolment page shows (the text of `id="secret"`).
pub fn shown_secret(html: &str) -> String {
    html.split("id=\"secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("no secret on the page: {html}"))
        .to_string()
}

/// The whole Set-Cookie header of the cookie called `name`, if the reply sets it.
pub fn set_cookie(r: &HttpReply, name: &str) -> Option<String> {
    r.headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.to_string())
}

/// `name=value` of a Set-Cookie header (what a browser sends back).
pub fn cookie_pair(set: &str) -> String {
    set.split(';').next().unwrap().to_string()
}

/// `s` percent-encoded for a form body.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A self-service sign-in to tenant acme through the raw HTTP client: the login form, then
/// its POST with the form's cookie and CSRF token. Returns the reply to the POST.
pub fn my_login(http: SocketAddr, user: &str, password: &str, code: &str) -> HttpReply {
    let form = get(http, "/my/", &[]);
    let pre = cookie_pair(&set_cookie(&form, "pc_my_login").expect("pre-session cookie"));
    let csrf = hidden(&form.body, "csrf");
    post_form(
        http,
        "/my/login",
        &pre,
        &format!(
            "csrf={}&tenant=acme&username={}&password={}&code={}",
            enc(&csrf),
            enc(user),
            enc(password),
            enc(code)
        ),
    )
}

/// A self-service session of `user`: [`my_login`] must succeed and the page must name the
/// user. Returns (cookie pair, CSRF token of the session's forms).
pub fn my_session(http: SocketAddr, user: &str, password: &str, code: &str) -> (String, String) {
    let r = my_login(http, user, password, code);
    assert_eq!(r.status, 303, "{user}: {}", r.body);
    let session = cookie_pair(&set_cookie(&r, "pc_my").expect("session cookie"));
    let home = get(http, "/my/", &[("Cookie", &session)]);
    assert!(
        home.body.contains(&format!("id=\"user\">{user}<")),
        "{}",
        home.body
    );
    let csrf = hidden(&home.body, "csrf");
    (session, csrf)
}
