//! Enrolment on first login and the web pages, end to end against the real `portcullis
//! serve`: radclient as the NAS, oathtool as the authenticator app, the pages over the
//! daemon's HTTP listener (a raw HTTP client for headers, cookies and CSRF, and headless
//! Chromium through ChromeDriver for what a person does).

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::http::{request_full, HttpReply};
use portcullis_tests::pam::{spawn_under_pam_wrapper, under_pam_wrapper};
use portcullis_tests::web::{
    self, cookie_pair, enc, free_port, hidden, my_login, set_cookie, shown_secret,
};
use portcullis_tests::webdriver::Browser;
use portcullis_tests::{
    describe, oathtool_totp, radclient, require_tool, Algorithm, ClientSpec, Mode, PamFixture,
    RadReply, Server, TestEnv,
};
use serde_json::Value;

struct World {
    server: Server,
    env: TestEnv,
    /// `http://127.0.0.1:PORT`, the configured public_url (the listener's own address).
    base: String,
}

/// Tenant acme with "newbie" (password "pw-newbie", no factor); client vpn in challenge
/// mode with `unenrolled = "enroll"`; the HTTP listener on a free port that is also the
/// public_url.
fn world() -> World {
    world_with("")
}

/// [`world`] with `extra` appended to the config.
fn world_with(extra: &str) -> World {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut client = ClientSpec::new(Mode::Challenge);
    client.extra = "unenrolled = \"enroll\"\n".into();
    let env = TestEnv::with_extra_config(
        vec![client],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n{extra}"),
    );
    env.add_tenant("acme");
    env.add_user("acme", "newbie", "pw-newbie");
    let server = env.start_server();
    World { server, env, base }
}

impl World {
    fn http(&self) -> SocketAddr {
        self.server.http_addr.expect("http listener")
    }

    fn login(&self, user: &str, password: &str, state: Option<&str>) -> RadReply {
        let mut attrs = vec![
            ("User-Name", user.to_string()),
            ("User-Password", password.to_string()),
        ];
        if let Some(s) = state {
            attrs.push(("State", s.to_string()));
        }
        radclient(self.server.addr, &self.env.client().secret, &attrs, true)
    }

    fn factors(&self, user: &str) -> Vec<Value> {
        web::factors(&self.env, user)
    }

    /// Password of newbie: a challenge whose Reply-Message carries the enrolment link.
    fn enrolment_challenge(&self) -> (RadReply, String) {
        let r = self.login("newbie", "pw-newbie", None);
        assert!(r.is_challenge(), "{}", r.raw_output);
        let msg = r.reply_message.clone().unwrap_or_default();
        let prefix = format!("{}/v1/enroll/", self.base);
        let start = msg
            .find(&prefix)
            .unwrap_or_else(|| panic!("no enrolment link in {msg:?}"));
        let link: String = msg[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ',')
            .collect();
        assert_eq!(link.len(), prefix.len() + 43, "{link}");
        (r, link)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        web::get(self.http(), path, headers)
    }

    fn post(&self, path: &str, cookie: &str, form: &str) -> HttpReply {
        web::post_form(self.http(), path, cookie, form)
    }
}

fn path_of(link: &str) -> &str {
    &link[link.find("/v1/").unwrap()..]
}

fn assert_strict_headers(r: &HttpReply) {
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "{:?}",
        r.headers
    );
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(!r.body.contains("<script"), "no JavaScript: {}", r.body);
}

#[test]
fn enrolment_link_then_self_service_in_chromium() {
    let w = world();
    let (challenge, link) = w.enrolment_challenge();
    assert!(
        w.factors("newbie").is_empty(),
        "nothing before the link is opened"
    );

    let browser = Browser::start();
    browser.goto(&link);
    let secret = browser.text("#secret").trim().to_string();
    assert!(
        secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{secret}"
    );
    assert!(
        browser.try_find("svg#qr").is_some(),
        "the QR code is on the page"
    );
    assert_eq!(browser.text("#user"), "newbie");
    let f = w.factors("newbie");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        f[0]["state"], "pending",
        "not usable before the code: {f:?}"
    );

    // The app's first code answers the same login's prompt.
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let r = w.login("newbie", &code, Some(&challenge.state_for_radclient()));
    assert!(r.is_accept(), "{}", r.raw_output);
    assert_eq!(w.factors("newbie")[0]["state"], "confirmed");

    // The link was single-use.
    browser.goto(&link);
    assert!(
        browser.try_find("#invalid").is_some(),
        "{}",
        browser.source()
    );
    assert!(browser.try_find("#secret").is_none());

    // The same code cannot log in again (replay cache), even in a new login.
    let r = w.login("newbie", "pw-newbie", None);
    assert!(r.is_challenge(), "{}", r.raw_output);
    assert!(
        !r.reply_message
            .clone()
            .unwrap_or_default()
            .contains("/v1/enroll/"),
        "an enrolled user gets no link"
    );
    let again = w.login("newbie", &code, Some(&r.state_for_radclient()));
    assert!(!again.is_accept(), "{}", again.raw_output);

    // Self-service: password and a fresh code, then the factor and new recovery codes.
    browser.goto(&format!("{}/my/acme/", w.base));
    browser.type_into("#username", "newbie");
    browser.type_into("#password", "pw-newbie");
    browser.type_into("#code", &oathtool_totp(&secret, 6, Algorithm::Sha1, 1));
    browser.click("#submit");
    assert_eq!(browser.text("#user"), "newbie", "{}", browser.source());
    let rows = browser.find_all("#factors tr[data-kind=\"totp\"][data-state=\"confirmed\"]");
    assert_eq!(rows.len(), 1, "{}", browser.source());
    browser.click("#new-recovery");
    let codes: Vec<String> = browser
        .find_all("#recovery-codes li")
        .iter()
        .map(|id| browser.element_text(id).trim().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{}", browser.source());

    // A recovery code from the page logs in over RADIUS.
    let r = w.login("newbie", "pw-newbie", None);
    let r = w.login("newbie", &codes[0], Some(&r.state_for_radclient()));
    assert!(r.is_accept(), "{}", r.raw_output);

    // Back on the page: one code fewer.
    browser.click("#back");
    assert_eq!(browser.text("#recovery-left"), "9", "{}", browser.source());

    // The admin pages in the same browser: a helpdesk token signs in, sees newbie's
    // confirmed factor and issues a bypass code that logs in once.
    let (token, _) = add_token(&w, "helpdesk", "desk");
    browser.goto(&format!("{}/admin/", w.base));
    browser.type_into("#token", &token);
    browser.click("#submit");
    assert_eq!(browser.text("#token-name"), "desk", "{}", browser.source());
    let row = browser.text("tr[data-user=\"newbie\"]");
    assert!(row.contains("totp (confirmed)"), "{row}");
    browser.click("tr[data-user=\"newbie\"] button.bypass");
    let code = browser.text("#bypass-code");
    let r = w.login("newbie", "pw-newbie", None);
    let r = w.login("newbie", &code, Some(&r.state_for_radclient()));
    assert!(r.is_accept(), "{}", r.raw_output);
}

#[test]
fn enrolment_links_are_single_use_and_wrong_codes_do_not_confirm() {
    // Behind a proxy on this machine, which names the browser.
    let w = world_with("trusted_proxies = [\"127.0.0.1/32\"]\n");
    // A made-up token, a malformed one: not found, and nothing is made.
    for path in [
        "/v1/enroll/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/v1/enroll/short",
    ] {
        let r = w.get(path, &[]);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_strict_headers(&r);
    }
    let (challenge, link) = w.enrolment_challenge();
    let state = challenge.state_for_radclient();
    // Answering before the link was opened: asked again to open it (no factor to check).
    let r = w.login("newbie", "123456", Some(&state));
    assert!(r.is_challenge(), "{}", r.raw_output);
    assert!(
        r.reply_message
            .clone()
            .unwrap_or_default()
            .contains("Open the enrolment link first"),
        "{}",
        r.raw_output
    );
    let state = r.state_for_radclient();

    // Opened through the proxy for a browser.
    let page = w.get(path_of(&link), &[("X-Forwarded-For", "198.51.100.23")]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_strict_headers(&page);
    assert!(page.body.contains("<svg id=\"qr\""), "{}", page.body);
    let secret = shown_secret(&page.body);
    // Opened once: a second opening shows nothing.
    let second = w.get(path_of(&link), &[]);
    assert_eq!(second.status, 404);
    assert!(!second.body.contains(&secret));

    // A wrong code does not confirm the factor; the right one then does.
    let wrong = portcullis_tests::wrong_totp(&secret, 6, Algorithm::Sha1);
    let r = w.login("newbie", &wrong, Some(&state));
    assert!(r.is_challenge(), "{}", r.raw_output);
    assert!(r
        .reply_message
        .clone()
        .unwrap_or_default()
        .contains("Wrong code"));
    assert_eq!(w.factors("newbie")[0]["state"], "pending");
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let r = w.login("newbie", &code, Some(&r.state_for_radclient()));
    assert!(r.is_accept(), "{}", r.raw_output);
    assert_eq!(w.factors("newbie")[0]["state"], "confirmed");

    // The audit names the enrolment.
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "newbie", "--json"]);
    assert!(
        audit
            .to_string()
            .contains("enrolled a TOTP factor at login"),
        "{audit}"
    );
    // The opening of the link is recorded with the browser's address.
    let opened: Vec<&Value> = audit
        .as_array()
        .expect("audit records")
        .iter()
        .filter(|r| r["mode"] == "factor.enroll")
        .collect();
    assert!(
        !opened.is_empty() && opened.iter().all(|r| r["source"] == "198.51.100.23"),
        "{audit}"
    );
}

#[test]
fn enroll_without_public_url_is_deny_and_config_check_warns() {
    require_tool("radclient", "freeradius-utils");
    let mut client = ClientSpec::new(Mode::Challenge);
    client.extra = "unenrolled = \"enroll\"\n".into();
    let env = TestEnv::with_extra_config(vec![client], "\n[http]\nlisten = \"127.0.0.1:0\"\n");
    let check = env.cli_json(&["config", "check", "--json"]);
    assert!(
        check["warnings"].to_string().contains("public_url"),
        "{check}"
    );
    env.add_tenant("acme");
    env.add_user("acme", "newbie", "pw-newbie");
    let server = env.start_server();
    let r = radclient(
        server.addr,
        &env.client().secret,
        &[
            ("User-Name", "newbie".to_string()),
            ("User-Password", "pw-newbie".to_string()),
        ],
        true,
    );
    assert!(r.is_reject(), "{}", r.raw_output);
}

#[test]
fn self_service_needs_a_second_factor_a_session_and_csrf() {
    let w = world();
    let secret = portcullis_tests::random_base32_secret();
    w.env.add_user("acme", "alice", "pw-alice");
    w.env.enroll_totp("acme", "alice", Some(&secret));

    let form = w.get("/my/", &[]);
    assert_eq!(form.status, 200);
    assert_strict_headers(&form);
    // What the path carries is escaped.
    let r = w.get("/my/%3Cscript%3Ealert(1)%3C%2Fscript%3E/", &[]);
    assert!(
        !r.body.contains("<script>alert") && r.body.contains("&lt;script&gt;alert(1)"),
        "{}",
        r.body
    );

    // Without the login form's cookie: refused.
    let r = w.post(
        "/my/login",
        "",
        &format!(
            "csrf=x&tenant=acme&username=alice&password=pw-alice&code={}",
            oathtool_totp(&secret, 6, Algorithm::Sha1, 0)
        ),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Password alone, or a wrong code: refused.
    let r = my_login(w.http(), "alice", "pw-alice", "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Enter the code"), "{}", r.body);
    assert!(set_cookie(&r, "pc_my").is_none());
    let r = my_login(
        w.http(),
        "alice",
        "wrong",
        &oathtool_totp(&secret, 6, Algorithm::Sha1, 0),
    );
    assert_eq!(r.status, 401);
    // The audit names where the login came from: here loopback, a trusted proxy by
    // default, that named no browser (no X-Forwarded-For).
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "alice", "--json"]);
    let sources: Vec<&str> = audit
        .as_array()
        .expect("audit records")
        .iter()
        .filter(|r| r["channel"] != "cli")
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(
        !sources.is_empty() && sources.iter().all(|s| *s == "proxy:127.0.0.1"),
        "{audit}"
    );

    let r = my_login(
        w.http(),
        "alice",
        "pw-alice",
        &oathtool_totp(&secret, 6, Algorithm::Sha1, 0),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set = set_cookie(&r, "pc_my").expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age=900"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "public_url is http: {set}");
    let session = cookie_pair(&set);
    let home = w.get("/my/", &[("Cookie", &session)]);
    assert!(home.body.contains("id=\"user\">alice<"), "{}", home.body);
    let csrf = hidden(&home.body, "csrf");
    // The tenant has no push channel: push is not offered, and a forged form adds nothing.
    assert!(!home.body.contains("id=\"add-push\""), "{}", home.body);
    let r = w.post(
        "/my/enroll",
        &session,
        &format!("csrf={}&kind=push", enc(&csrf)),
    );
    assert!(r.body.contains("not offered here"), "{}", r.body);
    assert_eq!(w.factors("alice").len(), 1);

    // A POST without the session's CSRF token is refused; with it, codes are made.
    let r = w.post("/my/recovery", &session, "csrf=forged");
    assert_eq!(r.status, 403);
    let r = w.post("/my/recovery", &session, "");
    assert_eq!(r.status, 403);
    // Another session's token does not fit this session.
    let other = cookie_pair(
        &set_cookie(
            &my_login(
                w.http(),
                "alice",
                "pw-alice",
                &oathtool_totp(&secret, 6, Algorithm::Sha1, 1),
            ),
            "pc_my",
        )
        .unwrap(),
    );
    let r = w.post("/my/recovery", &other, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 403);
    let r = w.post("/my/recovery", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.matches("<li><code>").count(), 10, "{}", r.body);

    // The user revokes remembered devices themselves (CSRF-checked like every POST).
    let r = w.post("/my/forget", &session, "csrf=forged");
    assert_eq!(r.status, 403);
    let r = w.post("/my/forget", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("remembered device(s) forgotten"),
        "{}",
        r.body
    );

    // The last confirmed factor cannot be removed here.
    let factor = w.factors("alice")[0]["factor_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.post(
        "/my/remove",
        &session,
        &format!("csrf={}&factor={}", enc(&csrf), enc(&factor)),
    );
    assert!(r.body.contains("last confirmed factor"), "{}", r.body);
    assert_eq!(w.factors("alice").len(), 1);

    // Add a second app through the page: pending until its code confirms it, then the
    // first one can go.
    let r = w.post("/my/enroll", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 200, "{}", r.body);
    let new_secret = shown_secret(&r.body);
    let new_id = hidden(&r.body, "factor");
    let r = w.post(
        "/my/confirm",
        &session,
        &format!(
            "csrf={}&factor={}&code={}",
            enc(&csrf),
            enc(&new_id),
            oathtool_totp(&new_secret, 6, Algorithm::Sha1, 0)
        ),
    );
    assert!(r.body.contains("id=\"message\""), "{}", r.body);
    let r = w.post(
        "/my/remove",
        &session,
        &format!("csrf={}&factor={}", enc(&csrf), enc(&factor)),
    );
    assert!(r.body.contains("The factor was removed"), "{}", r.body);
    let left = w.factors("alice");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["factor_id"], new_id.as_str());

    // A user disabled while signed in changes nothing more: the session's POSTs end it.
    w.env
        .cli_ok(&["user", "disable", "--tenant", "acme", "alice"]);
    let r = w.post("/my/recovery", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(set_cookie(&r, "pc_my").unwrap().contains("Max-Age=0"));
    let r = w.post("/my/enroll", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        w.factors("alice").len(),
        1,
        "no factor added by a disabled user"
    );
    w.env
        .cli_ok(&["user", "enable", "--tenant", "acme", "alice"]);

    // Signing out ends the cookie; a forged cookie is no session.
    let r = w.post("/my/logout", &session, &format!("csrf={}", enc(&csrf)));
    assert_eq!(r.status, 303);
    assert!(set_cookie(&r, "pc_my").unwrap().contains("Max-Age=0"));
    let forged = format!("pc_my={}x", &session["pc_my=".len()..]);
    let r = w.get("/my/", &[("Cookie", &forged)]);
    assert!(r.body.contains("id=\"login\""), "{}", r.body);
}

/// A self-service session ends when the account's factors are taken away by an
/// administrator (CLI `factor remove`, "Reset factors" on the admin pages), its password is
/// set, or it is disabled: the signed cookie carries the user's session epoch, which these
/// raise, so its GET is sent to sign in again and its POSTs change nothing. Others'
/// sessions, and new sign-ins, go on.
#[test]
fn ending_the_factors_or_the_password_ends_self_service_sessions() {
    let w = world();
    let (helpdesk, _) = add_token(&w, "helpdesk", "desk");
    struct Signed {
        user: &'static str,
        session: String,
        csrf: String,
        secret: String,
    }
    let mut signed = Vec::new();
    for user in ["alice", "bob", "carol", "erin", "dave"] {
        let secret = portcullis_tests::random_base32_secret();
        w.env.add_user("acme", user, &format!("pw-{user}"));
        w.env.enroll_totp("acme", user, Some(&secret));
        let (session, csrf) = web::my_session(
            w.http(),
            user,
            &format!("pw-{user}"),
            &oathtool_totp(&secret, 6, Algorithm::Sha1, 0),
        );
        signed.push(Signed {
            user,
            session,
            csrf,
            secret,
        });
    }

    // alice: her only factor removed with the CLI (all she had: a reset).
    let factor = w.factors("alice")[0]["factor_id"]
        .as_str()
        .unwrap()
        .to_string();
    w.env
        .cli_ok(&["factor", "remove", "--tenant", "acme", "alice", &factor]);
    // bob: a new password.
    w.env.cli_stdin_ok(
        &[
            "user",
            "set-password",
            "--tenant",
            "acme",
            "bob",
            "--password-stdin",
        ],
        "pw-bob-2\n",
    );
    // carol: "Reset factors" on the admin pages.
    let a = admin_login(&w, &helpdesk);
    let users = w.get("/admin/t/acme/", &[("Cookie", &a)]);
    let r = w.post(
        "/admin/t/acme/reset",
        &a,
        &format!("csrf={}&user=carol", enc(&hidden(&users.body, "csrf"))),
    );
    assert!(r.body.contains("1 factors of carol removed"), "{}", r.body);
    // erin: disabled and enabled again.
    w.env
        .cli_ok(&["user", "disable", "--tenant", "acme", "erin"]);
    w.env
        .cli_ok(&["user", "enable", "--tenant", "acme", "erin"]);

    for s in &signed[..4] {
        let before = w.factors(s.user).len();
        let r = w.get("/my/", &[("Cookie", &s.session)]);
        assert_eq!(
            r.status, 303,
            "{}: the old session is refused: {}",
            s.user, r.body
        );
        assert_eq!(r.header("location"), Some("/my/"), "{}", s.user);
        assert!(
            set_cookie(&r, "pc_my").unwrap().contains("Max-Age=0"),
            "{}",
            s.user
        );
        for path in ["/my/enroll", "/my/recovery"] {
            let r = w.post(path, &s.session, &format!("csrf={}", enc(&s.csrf)));
            assert_eq!(r.status, 303, "{} {path}: {}", s.user, r.body);
            assert_eq!(r.header("location"), Some("/my/"), "{} {path}", s.user);
        }
        assert_eq!(
            w.factors(s.user).len(),
            before,
            "{}: no factor added by an ended session",
            s.user
        );
    }
    // dave's session goes on.
    let dave = &signed[4];
    let r = w.get("/my/", &[("Cookie", &dave.session)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"user\">dave<"), "{}", r.body);
    // A new sign-in, after the change, is a session again.
    let bob = &signed[1];
    let r = my_login(
        w.http(),
        "bob",
        "pw-bob-2",
        &oathtool_totp(&bob.secret, 6, Algorithm::Sha1, 1),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let session = cookie_pair(&set_cookie(&r, "pc_my").expect("session cookie"));
    let r = w.get("/my/", &[("Cookie", &session)]);
    assert!(r.body.contains("id=\"user\">bob<"), "{}", r.body);
}

#[test]
fn push_notifications_are_added_on_the_self_service_page_in_chromium() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let w = world_with(&ntfy.config("acme", "number_matching = false\n"));
    let secret = portcullis_tests::random_base32_secret();
    w.env.add_user("acme", "alice", "pw-alice");
    w.env.enroll_totp("acme", "alice", Some(&secret));

    let browser = Browser::start();
    browser.goto(&format!("{}/my/acme/", w.base));
    browser.type_into("#username", "alice");
    browser.type_into("#password", "pw-alice");
    browser.type_into("#code", &oathtool_totp(&secret, 6, Algorithm::Sha1, 0));
    browser.click("#submit");
    assert_eq!(browser.text("#user"), "alice", "{}", browser.source());

    // The topic to subscribe to, as text and QR code; the code was pushed to it.
    browser.click("#add-push");
    let url = browser.text("#subscribe-url").trim().to_string();
    assert!(browser.try_find("svg#qr").is_some(), "{}", browser.source());
    let msgs = ntfy.wait_for(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "refusals: {:?}", ntfy.refusals());
    let topic = msgs[0]["topic"].as_str().unwrap();
    assert_eq!(url, format!("{}/{topic}", ntfy.base_url()));
    let code = ntfy.last_code();
    assert!(
        !browser.source().contains(&code),
        "the code only goes to the phone"
    );
    let pending = w.factors("alice");
    assert!(
        pending
            .iter()
            .any(|f| f["kind"] == "push" && f["state"] == "pending"),
        "{pending:?}"
    );

    // Asking again at once is refused (the button must not flood the push server); the
    // confirm form stays.
    browser.click("#resend-push");
    assert!(
        browser.try_find("#too-soon").is_some(),
        "{}",
        browser.source()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ntfy.messages().len(), 1, "a second code went out at once");
    // The phone subscribed too late: after the pause the page sends the code again; the
    // new one confirms.
    // (The pause is 15 s, counted in whole seconds.)
    std::thread::sleep(Duration::from_secs(16));
    browser.click("#resend-push");
    assert!(
        browser.try_find("#message").is_some(),
        "{}",
        browser.source()
    );
    let msgs = ntfy.wait_for(2, Duration::from_secs(10));
    assert_eq!(msgs.len(), 2, "refusals: {:?}", ntfy.refusals());
    assert_eq!(msgs[1]["topic"], topic);
    let code = ntfy.last_code();
    browser.type_into("#code", &code);
    browser.click("#submit");
    assert!(
        browser.try_find("#message").is_some(),
        "{}",
        browser.source()
    );
    let rows = browser.find_all("#factors tr[data-kind=\"push\"][data-state=\"confirmed\"]");
    assert_eq!(rows.len(), 1, "{}", browser.source());

    // A RADIUS login now offers push; approved on the phone, it is accepted.
    let menu = w.login("alice", "pw-alice", None);
    assert!(menu.is_challenge(), "{}", menu.raw_output);
    let wait = w.login("alice", "push", Some(&menu.state_for_radclient()));
    assert!(wait.is_challenge(), "{}", wait.raw_output);
    let msgs = ntfy.wait_for(3, Duration::from_secs(10));
    assert_eq!(
        msgs.len(),
        3,
        "a login push; refusals: {:?}",
        ntfy.refusals()
    );
    assert_eq!(msgs[2]["topic"], topic);
    let click = msgs[2]["click"].as_str().expect("click URL");
    let (id, token) = click
        .strip_prefix(&format!("{}/v1/push/", w.base))
        .and_then(|rest| rest.split_once("?t="))
        .unwrap_or_else(|| panic!("unexpected click URL {click}"));
    let r = request_full(
        w.http(),
        "POST",
        &format!("/v1/push/{id}/approve"),
        &[("Authorization", &format!("Bearer {token}"))],
        Some(b""),
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let done = w.login("alice", "", Some(&wait.state_for_radclient()));
    assert!(done.is_accept(), "{}", done.raw_output);
}

#[test]
fn a_push_only_user_signs_in_with_a_recovery_code_and_no_push_is_sent() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let w = world_with(&ntfy.config("acme", "number_matching = false\n"));
    w.env.add_user("acme", "pat", "pw-pat");
    w.env.enroll_push_confirmed("acme", "pat", &ntfy);
    let sent = ntfy.messages().len(); // the enrolment's confirmation code
    let codes = w.env.generate_recovery_codes("acme", "pat");

    let r = my_login(w.http(), "pat", "pw-pat", &codes[0]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(set_cookie(&r, "pc_my").is_some(), "{:?}", r.headers);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ntfy.messages().len(),
        sent,
        "the web sign-in pushed to the phone"
    );
    // A wrong code is refused, and pushes nothing either; nor does a menu pick or a
    // factor's name typed in the code field.
    for typed in ["12345678", "push", "1", "2"] {
        let r = my_login(w.http(), "pat", "pw-pat", typed);
        assert_eq!(r.status, 401, "{typed}: {}", r.body);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ntfy.messages().len(), sent);
}

#[test]
fn a_tenant_whose_passwords_are_checked_elsewhere_has_no_self_service_sign_in() {
    let w = world_with("\n[tenants.acme]\nfirst_factor = \"none\"\n");
    let secret = portcullis_tests::random_base32_secret();
    w.env.add_user("acme", "alice", "pw-alice");
    w.env.enroll_totp("acme", "alice", Some(&secret));
    // The code in the password field (what the Engine takes as the credential of a
    // delegated first factor) signs nobody in.
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let r = my_login(w.http(), "alice", &code, &code);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(set_cookie(&r, "pc_my").is_none(), "{:?}", r.headers);
    assert!(
        r.body.contains("not available for this account"),
        "{}",
        r.body
    );
    // Refused before the Engine: the code was neither checked nor counted (the records are
    // the CLI's changes).
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "alice", "--json"]);
    let decisions = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] != "cli");
    assert_eq!(decisions.count(), 0, "{audit}");
}

/// An admin pages session for `token`.
fn admin_login(w: &World, token: &str) -> String {
    let form = w.get("/admin/", &[]);
    assert_strict_headers(&form);
    let pre = cookie_pair(&set_cookie(&form, "pc_admin_login").expect("pre-session cookie"));
    let csrf = hidden(&form.body, "csrf");
    let r = w.post(
        "/admin/login",
        &pre,
        &format!("csrf={}&token={}", enc(&csrf), enc(token)),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    cookie_pair(&set_cookie(&r, "pc_admin").expect("admin session"))
}

fn add_token(w: &World, role: &str, name: &str) -> (String, String) {
    let v = w.env.cli_json(&[
        "token", "add", "--tenant", "acme", "--role", role, name, "--json",
    ]);
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

#[test]
fn admin_pages_follow_the_token_roles() {
    let w = world();
    w.env.add_user("acme", "alice", "pw-alice");
    w.env.enroll_totp("acme", "alice", None);
    let (helpdesk, helpdesk_id) = add_token(&w, "helpdesk", "desk");
    let (auditor, _) = add_token(&w, "auditor", "soc");

    // A wrong token: no session.
    let form = w.get("/admin/", &[]);
    let pre = cookie_pair(&set_cookie(&form, "pc_admin_login").unwrap());
    let r = w.post(
        "/admin/login",
        &pre,
        &format!(
            "csrf={}&token=pca_nope_nope",
            enc(&hidden(&form.body, "csrf"))
        ),
    );
    assert_eq!(r.status, 401);
    assert!(set_cookie(&r, "pc_admin").is_none());

    let s = admin_login(&w, &helpdesk);
    let users = w.get("/admin/t/acme/", &[("Cookie", &s)]);
    assert_eq!(users.status, 200, "{}", users.body);
    assert_strict_headers(&users);
    assert!(users.body.contains("data-user=\"alice\""), "{}", users.body);
    assert!(users.body.contains("totp (pending)"), "{}", users.body);
    assert!(!users.body.contains("audit-link"), "helpdesk sees no audit");
    assert_eq!(w.get("/admin/t/acme/audit", &[("Cookie", &s)]).status, 403);
    assert_eq!(w.get("/admin/t/other/", &[("Cookie", &s)]).status, 403);
    let csrf = hidden(&users.body, "csrf");
    // CSRF on every POST.
    let r = w.post("/admin/t/acme/bypass", &s, "csrf=forged&user=alice");
    assert_eq!(r.status, 403);
    let r = w.post(
        "/admin/t/acme/bypass",
        &s,
        &format!("csrf={}&user=alice", enc(&csrf)),
    );
    let code = r
        .body
        .split("id=\"bypass-code\">")
        .nth(1)
        .and_then(|x| x.split('<').next())
        .unwrap_or_else(|| panic!("{}", r.body))
        .to_string();
    assert_eq!(code.len(), 9);
    // The bypass code works once over RADIUS.
    let c = w.login("alice", "pw-alice", None);
    let ok = w.login("alice", &code, Some(&c.state_for_radclient()));
    assert!(ok.is_accept(), "{}", ok.raw_output);
    let r = w.post(
        "/admin/t/acme/reset",
        &s,
        &format!("csrf={}&user=alice", enc(&csrf)),
    );
    assert!(r.body.contains("1 factors of alice removed"), "{}", r.body);
    assert!(w.factors("alice").is_empty());

    // The auditor reads the audit (with the web changes in it), not the users.
    let a = admin_login(&w, &auditor);
    let users = w.get("/admin/t/acme/", &[("Cookie", &a)]);
    assert!(!users.body.contains("data-user="), "{}", users.body);
    assert!(users.body.contains("audit-link"));
    let log = w.get("/admin/t/acme/audit", &[("Cookie", &a)]);
    assert_eq!(log.status, 200);
    assert!(log.body.contains("admin-web:desk"), "{}", log.body);
    assert!(!log.body.contains(&code), "no secret in the audit");

    // Revoking the token ends its page sessions at once.
    w.env.cli_ok(&["token", "revoke", &helpdesk_id]);
    let r = w.get("/admin/t/acme/", &[("Cookie", &s)]);
    assert_eq!(r.status, 303);
}

/// A token's expiry ends its admin page sessions, and an expired token cannot sign in (the
/// same page as for an unknown one; the daemon's log says it expired). The expiry is moved
/// into the past in the store: the daemon's clock is the system's, and nothing sleeps.
#[test]
fn an_expired_token_ends_its_admin_page_session_and_cannot_sign_in() {
    let w = world();
    let v = w.env.cli_json(&[
        "token",
        "add",
        "--tenant",
        "acme",
        "--role",
        "admin",
        "--expires",
        "1h",
        "temp",
        "--json",
    ]);
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    let s = admin_login(&w, &token);
    assert_eq!(w.get("/admin/t/acme/", &[("Cookie", &s)]).status, 200);

    let db = rusqlite::Connection::open(w.env.dir().join("portcullis.db")).expect("the store");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let changed = db
        .execute(
            "UPDATE admin_tokens SET expires_at = CAST(strftime('%s','now') AS INTEGER) - 1 WHERE id = ?1",
            [&id],
        )
        .expect("move the expiry");
    assert_eq!(changed, 1);

    let r = w.get("/admin/t/acme/", &[("Cookie", &s)]);
    assert_eq!(r.status, 303, "the session ended: {}", r.body);
    let form = w.get("/admin/", &[]);
    let pre = cookie_pair(&set_cookie(&form, "pc_admin_login").unwrap());
    let r = w.post(
        "/admin/login",
        &pre,
        &format!(
            "csrf={}&token={}",
            enc(&hidden(&form.body, "csrf")),
            enc(&token)
        ),
    );
    assert_eq!(r.status, 401);
    assert!(set_cookie(&r, "pc_admin").is_none());
    assert!(r.body.contains("unknown, revoked or expired"), "{}", r.body);
    let said = "admin page sign-in refused: the token expired";
    let log = w.server.wait_for_stderr(said, Duration::from_secs(5));
    assert!(
        log.lines().any(|l| l.contains(said) && l.contains(&id)),
        "{log}"
    );
}

#[test]
fn pam_enrolment_prompt_carries_the_link_and_the_first_code_logs_in() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let f = PamFixture::with_config(
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n"),
        true,
    );
    f.env.add_user("acme", "bob", "bobs password");
    f.module_service("enroll", "first_factor=portcullis unenrolled=enroll");

    // pamtester answers from stdin: the password now, the code once the link was opened.
    let mut cmd = Command::new(require_tool("pamtester", "pamtester"));
    cmd.args(["-v", "enroll", "bob", "authenticate"]);
    under_pam_wrapper(&mut cmd, &f.service_dir);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_under_pam_wrapper(&mut cmd).expect("run pamtester");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"bobs password\n").unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let seen = seen.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    let prefix = format!("{base}/v1/enroll/");
    let deadline = Instant::now() + Duration::from_secs(20);
    let link = loop {
        let text = seen.lock().unwrap().clone();
        if let Some(i) = text.find(&prefix) {
            let link: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ',')
                .collect();
            if link.len() == prefix.len() + 43 {
                break link;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no enrolment link in the PAM prompt: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let http: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let page = request_full(
        http,
        "GET",
        path_of(&link),
        &[],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = shown_secret(&page.body);
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    stdin.write_all(format!("{code}\n").as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pamtester did not finish: {}", seen.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in readers {
        let _ = r.join();
    }
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: seen.lock().unwrap().clone().into_bytes(),
    };
    assert!(out.status.success(), "{}", describe(&out));
    let rec = f.last_audit("bob");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("enrolled a TOTP factor at login"),
        "{rec}"
    );
}
