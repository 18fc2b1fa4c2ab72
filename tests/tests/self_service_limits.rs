//! Limits of the self-service pages, against the real `portcullis serve` (raw HTTP
//! client, the fake ntfy server as the push channel): adding push or app factors again and
//! again must neither flood the push server nor grow the pending factors without bound.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::http::HttpReply;
use portcullis_tests::web::{self, enc, free_port, hidden, shown_secret};
use portcullis_tests::{oathtool_totp, Algorithm, ClientSpec, Mode, Server, TestEnv};
use serde_json::Value;

struct World {
    server: Server,
    env: TestEnv,
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

    fn post(&self, path: &str, cookie: &str, form: &str) -> HttpReply {
        web::post_form(self.http(), path, cookie, form)
    }

    fn factors(&self, user: &str) -> Vec<Value> {
        web::factors(&self.env, user)
    }

    /// A self-service session of alice: (cookie pair, CSRF token of its forms).
    fn my_session(&self, secret: &str) -> (String, String) {
        let code = oathtool_totp(secret, 6, Algorithm::Sha1, 0);
        web::my_session(self.http(), "alice", "pw-alice", &code)
    }
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
    let new_secret = shown_secret(&r.body);
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
