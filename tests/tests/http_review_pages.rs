//! Security review of the self-service pages, against the real `portcullis serve` (raw
//! HTTP client, the fake ntfy server as the push channel).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::http::{request_full, HttpReply};
use portcullis_tests::{oathtool_totp, Algorithm, ClientSpec, Mode, Server, TestEnv};
use serde_json::Value;

struct World {
    server: Server,
    env: TestEnv,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tenant acme (pushing through `ntfy`) with alice (password "pw-alice", a confirmed TOTP
/// factor whose secret is returned).
fn world(ntfy: &FakeNtfy) -> (World, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &format!(
            "\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n{}",
            ntfy.config("acme", "number_matching = false\n")
        ),
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw-alice");
    let secret = portcullis_tests::random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    (World { server, env }, secret)
}

impl World {
    fn http(&self) -> SocketAddr {
        self.server.http_addr.expect("http listener")
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        request_full(
            self.http(),
            "GET",
            path,
            headers,
            None,
            Duration::from_secs(10),
        )
    }

    fn post(&self, path: &str, cookie: &str, form: &str) -> HttpReply {
        request_full(
            self.http(),
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

    fn factors(&self, user: &str) -> Vec<Value> {
        let v = self
            .env
            .cli_json(&["factor", "list", "--tenant", "acme", user, "--json"]);
        v.as_array()
            .cloned()
            .or_else(|| v["factors"].as_array().cloned())
            .unwrap_or_else(|| panic!("factor list: {v}"))
    }

    /// A self-service session of alice: (cookie pair, CSRF token of its forms).
    fn my_session(&self, secret: &str) -> (String, String) {
        let form = self.get("/my/", &[]);
        let pre = cookie_pair(&set_cookie(&form, "pc_my_login").expect("pre-session cookie"));
        let csrf = hidden(&form.body, "csrf");
        let code = oathtool_totp(secret, 6, Algorithm::Sha1, 0);
        let r = self.post(
            "/my/login",
            &pre,
            &format!(
                "csrf={}&tenant=acme&username=alice&password=pw-alice&code={code}",
                enc(&csrf)
            ),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        let session = cookie_pair(&set_cookie(&r, "pc_my").expect("session cookie"));
        let home = self.get("/my/", &[("Cookie", &session)]);
        let csrf = hidden(&home.body, "csrf");
        (session, csrf)
    }
}

fn hidden(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&key)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + key.len();
    html[i..].split('"').next().unwrap().to_string()
}

fn set_cookie(r: &HttpReply, name: &str) -> Option<String> {
    r.headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.to_string())
}

fn cookie_pair(set: &str) -> String {
    set.split(';').next().unwrap().to_string()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_add_push_button_does_not_flood_the_push_server() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let (w, secret) = world(&ntfy);
    let (session, csrf) = w.my_session(&secret);
    // "Send the code again" waits 15 s between codes; adding push again and again must not
    // be a way around that pause.
    for _ in 0..6 {
        let r = w.post(
            "/my/enroll",
            &session,
            &format!("csrf={}&kind=push", enc(&csrf)),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = ntfy.messages().len();
    assert_eq!(
        sent, 1,
        "{sent} codes pushed for six clicks within a second"
    );
    let pending = w
        .factors("alice")
        .iter()
        .filter(|f| f["state"] == "pending")
        .count();
    assert_eq!(pending, 1, "{:?}", w.factors("alice"));
}

#[test]
fn adding_apps_again_and_again_does_not_grow_without_bound() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let (w, secret) = world(&ntfy);
    let (session, csrf) = w.my_session(&secret);
    for _ in 0..20 {
        let r = w.post("/my/enroll", &session, &format!("csrf={}", enc(&csrf)));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let factors = w.factors("alice");
    let pending = factors.iter().filter(|f| f["state"] == "pending").count();
    assert!(
        pending <= 3,
        "{pending} pending factors from one session: {factors:?}"
    );
    // The page says why, and the pending ones can be removed there; then one more can be
    // added, and confirmed.
    let r = w.post("/my/enroll", &session, &format!("csrf={}", enc(&csrf)));
    assert!(r.body.contains("waiting for their code"), "{}", r.body);
    for f in factors.iter().filter(|f| f["state"] == "pending") {
        let r = w.post(
            "/my/remove",
            &session,
            &format!(
                "csrf={}&factor={}",
                enc(&csrf),
                enc(f["factor_id"].as_str().unwrap())
            ),
        );
        assert!(r.body.contains("The factor was removed"), "{}", r.body);
    }
    let r = w.post("/my/enroll", &session, &format!("csrf={}", enc(&csrf)));
    let new_secret = r
        .body
        .split("id=\"secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("{}", r.body))
        .to_string();
    let r = w.post(
        "/my/confirm",
        &session,
        &format!(
            "csrf={}&factor={}&code={}",
            enc(&csrf),
            enc(&hidden(&r.body, "factor")),
            oathtool_totp(&new_secret, 6, Algorithm::Sha1, 0)
        ),
    );
    assert!(r.body.contains("confirmed and ready"), "{}", r.body);
}
