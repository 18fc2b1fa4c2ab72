//! Duo end to end: `portcullis serve` asks a strict local fake of the Duo Auth API v2
//! (signature and Date checked on every request) after the password; radclient is the NAS.

use std::path::Path;

use portcullis_tests::fakes::duo::{DuoBehaviour, FakeDuo, PASSCODE};
use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::{
    radclient, radclient_waiting, require_tool, ClientSpec, Mode, RadReply, Server, TestEnv,
};

struct World {
    duo: FakeDuo,
    env: TestEnv,
    server: Server,
    _dir: tempfile::TempDir,
}

fn world(mode: Mode, fail_mode: &str, skey: Option<&str>) -> World {
    world_with(mode, fail_mode, skey, "")
}

/// [`world`] with `extra` before the Duo section (e.g. an `[http]` listener).
fn world_with(mode: Mode, fail_mode: &str, skey: Option<&str>, extra: &str) -> World {
    require_tool("radclient", "freeradius-utils");
    let dir = tempfile::tempdir().unwrap();
    let duo = FakeDuo::start(dir.path());
    let config = format!(
        "{extra}\n[tenants.acme.duo]\nikey = \"{}\"\nskey = \"{}\"\napi_host = \"{}\"\nfail_mode = \"{fail_mode}\"\nca_file = \"{}\"\ntimeout = \"3s\"\npush_timeout = \"5s\"\n",
        duo.ikey,
        skey.unwrap_or(&duo.skey),
        duo.api_host(),
        duo.ca_file.display()
    );
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(mode)], &config);
    env.add_tenant("acme");
    for user in ["alice", "bypass", "locked", "newbie"] {
        env.add_user("acme", user, "pw");
    }
    let server = env.start_server();
    World {
        duo,
        env,
        server,
        _dir: dir,
    }
}

fn login(w: &World, user: &str, password: &str, state: Option<&str>) -> RadReply {
    let mut attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
        ("Calling-Station-Id", "198.51.100.20".to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    radclient(w.server.addr, &w.env.client().secret, &attrs, true)
}

#[track_caller]
fn expect(reply: &RadReply, code: &str, what: &str) {
    assert_eq!(
        reply.code.as_deref(),
        Some(code),
        "{what}\n{}",
        reply.raw_output
    );
}

fn last_audit(w: &World) -> serde_json::Value {
    let v = w.env.cli_json(&["audit", "--tenant", "acme", "--json"]);
    v.as_array()
        .and_then(|a| a.last().cloned())
        .expect("an audit record")
}

#[test]
fn passcode_and_push_answer_the_duo_prompt() {
    let w = world(Mode::Challenge, "secure", None);
    let first = login(&w, "alice", "pw", None);
    expect(&first, "Access-Challenge", "password");
    let prompt = first.reply_message.clone().unwrap_or_default();
    assert!(
        prompt.contains("push") && prompt.contains("sms") && prompt.contains("phone"),
        "{prompt}"
    );
    expect(
        &login(&w, "alice", PASSCODE, first.state_hex.as_deref()),
        "Access-Accept",
        "passcode",
    );
    assert_eq!(
        last_audit(&w)["factors"],
        serde_json::json!(["password", "duo"])
    );

    let first = login(&w, "alice", "pw", None);
    expect(
        &login(&w, "alice", "push", first.state_hex.as_deref()),
        "Access-Accept",
        "push approved",
    );

    w.duo.set_push_allows(false);
    let first = login(&w, "alice", "pw", None);
    let denied = login(&w, "alice", "push", first.state_hex.as_deref());
    expect(&denied, "Access-Challenge", "push denied: asked again");
    expect(
        &login(&w, "alice", "000000", denied.state_hex.as_deref()),
        "Access-Challenge",
        "wrong passcode",
    );

    let calls = w.duo.calls();
    let preauth = calls
        .iter()
        .find(|(p, _)| p == "/auth/v2/preauth")
        .expect("a preauth call");
    assert_eq!(
        preauth.1.get("ipaddr").map(String::as_str),
        Some("198.51.100.20")
    );
    assert!(w.duo.refusals().is_empty(), "{:?}", w.duo.refusals());
}

#[test]
fn append_mode_takes_password_comma_push_or_passcode() {
    let w = world(Mode::Append, "secure", None);
    expect(
        &login(&w, "alice", "pw,push", None),
        "Access-Accept",
        "pw,push",
    );
    expect(
        &login(&w, "alice", &format!("pw{PASSCODE}"), None),
        "Access-Accept",
        "password+passcode",
    );
    expect(
        &login(&w, "alice", "pw000000", None),
        "Access-Reject",
        "wrong passcode",
    );
    expect(
        &login(&w, "alice", &format!("wrong{PASSCODE}"), None),
        "Access-Reject",
        "wrong password",
    );
}

#[test]
fn preauth_allow_deny_and_enroll_are_followed() {
    let w = world(Mode::Challenge, "secure", None);
    expect(
        &login(&w, "bypass", "pw", None),
        "Access-Accept",
        "preauth allow",
    );
    assert!(last_audit(&w)["reason"]
        .as_str()
        .unwrap()
        .contains("preauth allow"));
    expect(
        &login(&w, "locked", "pw", None),
        "Access-Reject",
        "preauth deny",
    );
    let r = login(&w, "newbie", "pw", None);
    expect(&r, "Access-Reject", "preauth enroll");
    assert!(r
        .reply_message
        .unwrap_or_default()
        .contains("https://api-xxxxxxxx.duosecurity.com/portal"));
}

#[test]
fn wrong_signature_is_refused_by_the_fake_and_fails_closed_even_in_safe_mode() {
    let w = world(
        Mode::Challenge,
        "safe",
        Some("not-the-secret-key-0000000000000000000000"),
    );
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "bad signature",
    );
    assert_eq!(w.duo.refusals(), ["invalid signature"]);
    assert!(
        last_audit(&w)["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 401"),
        "{}",
        last_audit(&w)
    );
}

#[test]
fn skewed_date_is_refused_by_the_fake() {
    let w = world(Mode::Challenge, "secure", None);
    w.duo.set_clock_offset(3600);
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "skewed Date",
    );
    assert!(
        w.duo.refusals()[0].contains("skewed"),
        "{:?}",
        w.duo.refusals()
    );
}

#[test]
fn duo_down_fails_open_only_when_configured_and_audits_it() {
    let secure = world(Mode::Challenge, "secure", None);
    secure.duo.set_behaviour(DuoBehaviour::ServerError);
    expect(
        &login(&secure, "alice", "pw", None),
        "Access-Reject",
        "5xx, fail_mode secure",
    );

    let safe = world(Mode::Challenge, "safe", None);
    safe.duo.set_behaviour(DuoBehaviour::ServerError);
    expect(
        &login(&safe, "alice", "pw", None),
        "Access-Accept",
        "5xx, fail_mode safe",
    );
    assert!(
        last_audit(&safe)["reason"]
            .as_str()
            .unwrap()
            .starts_with("FAIL-OPEN"),
        "{}",
        last_audit(&safe)
    );
    expect(
        &login(&safe, "alice", "wrong", None),
        "Access-Reject",
        "fail-open never skips the password",
    );
    safe.duo.set_behaviour(DuoBehaviour::Malformed);
    expect(
        &login(&safe, "alice", "pw", None),
        "Access-Accept",
        "malformed reply, fail_mode safe",
    );
}

#[test]
fn rate_limiting_is_waited_out() {
    let w = world(Mode::Append, "secure", None);
    w.duo.set_behaviour(DuoBehaviour::RateLimited(1));
    // The server backs off a second before asking again: one try that waits for it.
    expect(
        &login_waiting(&w, "alice", &format!("pw{PASSCODE}")),
        "Access-Accept",
        "after one 429",
    );
}

/// Like [`login`], with one try that waits up to 10 s (the server backs off on 429).
fn login_waiting(w: &World, user: &str, password: &str) -> RadReply {
    let attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
        ("Calling-Station-Id", "198.51.100.20".to_string()),
    ];
    radclient_waiting(w.server.addr, &w.env.client().secret, &attrs, 10)
}

/// The audit reason of a login that Duo refused: failed closed, naming what Duo said.
#[track_caller]
fn refused_reason(w: &World, says: &str) {
    let record = last_audit(w);
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.starts_with("FAIL-OPEN")
            && reason.contains(says)
            && reason.contains("failed closed"),
        "{record}"
    );
}

#[test]
fn rate_limiting_past_the_deadline_fails_closed_even_in_safe_mode() {
    let w = world(Mode::Challenge, "safe", None);
    w.duo.set_behaviour(DuoBehaviour::AlwaysRateLimited);
    expect(
        &login_waiting(&w, "alice", "pw"),
        "Access-Reject",
        "429 until the deadline, fail_mode safe",
    );
    refused_reason(&w, "HTTP 429 code 42901 Too Many Requests");

    // The same at the second step: the answer to the Duo prompt.
    w.duo.set_behaviour(DuoBehaviour::Normal);
    let first = login(&w, "alice", "pw", None);
    expect(&first, "Access-Challenge", "password");
    w.duo.set_behaviour(DuoBehaviour::AlwaysRateLimited);
    let attrs = vec![
        ("User-Name", "alice".to_string()),
        ("User-Password", PASSCODE.to_string()),
        ("Calling-Station-Id", "198.51.100.20".to_string()),
        ("State", first.state_hex.clone().unwrap_or_default()),
    ];
    expect(
        &radclient_waiting(w.server.addr, &w.env.client().secret, &attrs, 10),
        "Access-Reject",
        "429 until the deadline on the passcode, fail_mode safe",
    );
    refused_reason(&w, "HTTP 429");
}

#[test]
fn a_failure_envelope_or_a_4xx_fails_closed_even_in_safe_mode() {
    let w = world(Mode::Challenge, "safe", None);
    w.duo.set_behaviour(DuoBehaviour::StatFail);
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "HTTP 200 with stat FAIL at preauth, fail_mode safe",
    );
    refused_reason(&w, "code 40002 Invalid request parameters");

    w.duo.set_behaviour(DuoBehaviour::Normal);
    let first = login(&w, "alice", "pw", None);
    expect(&first, "Access-Challenge", "password");
    w.duo.set_behaviour(DuoBehaviour::StatFail);
    expect(
        &login(&w, "alice", PASSCODE, first.state_hex.as_deref()),
        "Access-Reject",
        "HTTP 200 with stat FAIL at auth, fail_mode safe",
    );
    refused_reason(&w, "code 40002");

    // A 4xx that is not even Duo's JSON (a proxy in front of it) is still a 4xx.
    w.duo.set_behaviour(DuoBehaviour::HtmlForbidden);
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "HTTP 403 with an HTML body, fail_mode safe",
    );
    refused_reason(&w, "HTTP 403");
    assert!(w.duo.refusals().is_empty(), "{:?}", w.duo.refusals());
}

#[test]
fn the_self_service_page_sends_only_passcodes_to_duo_never_a_push_or_a_text() {
    use portcullis_tests::http::request_full;
    use std::time::Duration;
    let w = world_with(
        Mode::Challenge,
        "secure",
        None,
        "[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let http = w.server.http_addr.expect("http listener");
    let sign_in = |code: &str| {
        let form = request_full(http, "GET", "/my/", &[], None, Duration::from_secs(10));
        let pre = form
            .headers_named("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("pc_my_login="))
            .map(|c| c.split(';').next().unwrap().to_string())
            .expect("pre-session cookie");
        let key = "name=\"csrf\" value=\"";
        let at = form.body.find(key).expect("csrf field") + key.len();
        let csrf = form.body[at..].split('"').next().unwrap().to_string();
        request_full(
            http,
            "POST",
            "/my/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &pre),
            ],
            Some(
                format!("csrf={csrf}&tenant=acme&username=alice&password=pw&code={code}")
                    .as_bytes(),
            ),
            Duration::from_secs(20),
        )
    };
    let auth_calls = |w: &World| {
        w.duo
            .calls()
            .iter()
            .filter(|(path, _)| path.ends_with("/auth"))
            .count()
    };
    for word in ["push", "sms", "phone", "1"] {
        let r = sign_in(word);
        assert_eq!(r.status, 401, "{word}: {}", r.body);
    }
    assert_eq!(
        auth_calls(&w),
        0,
        "a method word reached Duo: {:?}",
        w.duo.calls()
    );
    // A passcode does go to Duo, and signs in.
    let r = sign_in(PASSCODE);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(auth_calls(&w), 1, "{:?}", w.duo.calls());
}

/// A `fail_mode = "safe"` world whose Duo section points at `api_host` and trusts `ca_file`
/// (the fake runs either way, so that a call reaching it would show).
fn safe_world_at(duo: FakeDuo, dir: tempfile::TempDir, api_host: &str, ca: &Path) -> World {
    let config = format!(
        "\n[tenants.acme.duo]\nikey = \"{}\"\nskey = \"{}\"\napi_host = \"{api_host}\"\n\
         fail_mode = \"safe\"\nca_file = \"{}\"\ntimeout = \"3s\"\npush_timeout = \"5s\"\n",
        duo.ikey,
        duo.skey,
        ca.display()
    );
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], &config);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let server = env.start_server();
    World {
        duo,
        env,
        server,
        _dir: dir,
    }
}

#[test]
fn a_tls_certificate_that_does_not_verify_fails_closed_even_in_safe_mode() {
    // Someone on the path presenting their own certificate looks like interception, not an
    // outage: with only the password, safe mode must not become a way past Duo.
    require_tool("radclient", "freeradius-utils");
    let pki = tempfile::tempdir().unwrap();
    let sub = |name: &str| {
        let d = pki.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let fresh = || tempfile::tempdir().unwrap();

    // The fake's certificate is signed by a CA the configuration does not trust.
    let unrelated = TestTls::new(&sub("unrelated"));
    let dir = fresh();
    let duo = FakeDuo::start(dir.path());
    let api_host = duo.api_host();
    let w = safe_world_at(duo, dir, &api_host, &unrelated.ca_file);
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "untrusted certificate, fail_mode safe",
    );
    refused_reason(&w, "TLS certificate verification of");
    let record = last_audit(&w);
    assert!(
        record["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("possible interception"),
        "{record}"
    );
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());

    // A certificate from the trusted CA, but for another host name: the same.
    let named = TestTls::for_names(&sub("named"), &["duo.example.net"]);
    let other_host = tiny_http::Server::https(
        "127.0.0.1:0",
        tiny_http::SslConfig {
            certificate: named.cert_pem.clone().into_bytes(),
            private_key: named.key_pem.clone().into_bytes(),
        },
    )
    .expect("an HTTPS listener for another name");
    let port = other_host
        .server_addr()
        .to_ip()
        .expect("an IP listener")
        .port();
    let dir = fresh();
    let w = safe_world_at(
        FakeDuo::start(dir.path()),
        dir,
        &format!("127.0.0.1:{port}"),
        &named.ca_file,
    );
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Reject",
        "certificate for another name, fail_mode safe",
    );
    refused_reason(&w, "TLS certificate verification of");
    drop(other_host);

    // Nothing listening (connection refused) is still an outage, which safe mode lets in.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = fresh();
    let duo = FakeDuo::start(dir.path());
    let ca = duo.ca_file.clone();
    let w = safe_world_at(duo, dir, &format!("127.0.0.1:{closed_port}"), &ca);
    expect(
        &login(&w, "alice", "pw", None),
        "Access-Accept",
        "connection refused, fail_mode safe",
    );
    let record = last_audit(&w);
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("FAIL-OPEN") && reason.contains("transport error"),
        "{record}"
    );
}
