//! SMS codes end to end: `portcullis serve` sends through a strict local fake of Twilio
//! (HTTPS with a CA made for the test, Basic auth, form fields checked); the test reads
//! the code from the captured message and answers as the user would, with radclient.

use std::time::Instant;

use portcullis_tests::fakes::twilio::{Behaviour, FakeTwilio};
use portcullis_tests::{require_tool, ClientSpec, Mode, RadReply, Server, TestEnv};

const PHONE: &str = "+15550001234";

struct World {
    twilio: FakeTwilio,
    env: TestEnv,
    server: Server,
    _ca_dir: tempfile::TempDir,
}

fn sms_config(t: &FakeTwilio, token: &str, timeout: &str) -> String {
    format!(
        "[tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"{}\"\nauth_token = \"{token}\"\nfrom = \"+15559990000\"\nbase_url = \"{}\"\nca_file = \"{}\"\ntimeout = \"{timeout}\"\nresend_after = \"1s\"\n",
        t.account_sid,
        t.base_url(),
        t.ca_file.display()
    )
}

/// Tenant acme, user "sid" (password "pw") whose only factor is SMS, enrolled through the
/// CLI and confirmed with the code the fake received.
fn world(mode: Mode) -> World {
    require_tool("radclient", "freeradius-utils");
    let ca_dir = tempfile::tempdir().unwrap();
    let twilio = FakeTwilio::start(ca_dir.path());
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(mode)],
        &sms_config(&twilio, &twilio.auth_token, "3s"),
    );
    env.add_tenant("acme");
    env.add_user("acme", "sid", "pw");
    let enrolled = env.cli_json(&[
        "factor", "enroll", "sms", "--tenant", "acme", "sid", "--phone", PHONE, "--json",
    ]);
    let id = enrolled["factor_id"]
        .as_str()
        .expect("factor id")
        .to_string();
    assert_eq!(twilio.messages().len(), 1, "enrolment sends a code");
    assert_eq!(twilio.messages()[0].to, PHONE);
    env.cli_ok(&[
        "factor",
        "confirm",
        "--tenant",
        "acme",
        "sid",
        &id,
        &twilio.last_code(),
    ]);
    // The enrolment text counts for the resend delay (1 s in this config).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let server = env.start_server();
    World {
        twilio,
        env,
        server,
        _ca_dir: ca_dir,
    }
}

fn login(w: &World, password: &str, state: Option<&str>) -> RadReply {
    let mut attrs = vec![
        ("User-Name", "sid".to_string()),
        ("User-Password", password.to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    portcullis_tests::radclient(w.server.addr, &w.env.client().secret, &attrs, true)
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

#[test]
fn sms_code_is_sent_after_the_password_and_accepted_once() {
    let w = world(Mode::Challenge);
    let first = login(&w, "pw", None);
    expect(&first, "Access-Challenge", "password");
    assert!(
        first
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("••••1234"),
        "the prompt says where the code went: {:?}",
        first.reply_message
    );
    assert_eq!(w.twilio.messages().len(), 2);
    let code = w.twilio.last_code();
    assert_eq!(code.len(), 6);
    let ok = login(&w, &code, first.state_hex.as_deref());
    expect(&ok, "Access-Accept", "the texted code");
    assert!(
        w.twilio.refusals().is_empty(),
        "the fake refused requests: {:?}",
        w.twilio.refusals()
    );
    // The same code in a new login is refused.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = login(&w, "pw", None);
    expect(&again, "Access-Challenge", "second login");
    expect(
        &login(&w, &code, again.state_hex.as_deref()),
        "Access-Challenge",
        "old code is wrong",
    );
}

#[test]
fn wrong_sms_code_is_rechallenged() {
    let w = world(Mode::Challenge);
    let first = login(&w, "pw", None);
    let code = w.twilio.last_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = login(&w, wrong, first.state_hex.as_deref());
    expect(&r, "Access-Challenge", "wrong code");
    expect(
        &login(&w, &code, r.state_hex.as_deref()),
        "Access-Accept",
        "then the right one",
    );
}

#[test]
fn append_mode_password_comma_sms_sends_then_password_and_code_logs_in() {
    let w = world(Mode::Append);
    let r = login(&w, "pw,sms", None);
    expect(
        &r,
        "Access-Reject",
        "pw,sms sends a code and asks for a new login",
    );
    assert!(
        r.reply_message.as_deref().unwrap_or("").contains("sent to"),
        "{:?}",
        r.reply_message
    );
    let code = w.twilio.last_code();
    expect(
        &login(&w, &format!("pw{code}"), None),
        "Access-Accept",
        "password and texted code",
    );
}

#[test]
fn provider_errors_reject_with_a_clear_message() {
    let w = world(Mode::Challenge);
    for b in [
        Behaviour::ServerError,
        Behaviour::RateLimited,
        Behaviour::Malformed,
    ] {
        w.twilio.set_behaviour(b);
        let r = login(&w, "pw", None);
        expect(&r, "Access-Reject", &format!("{b:?}"));
        assert!(
            r.reply_message
                .as_deref()
                .unwrap_or("")
                .contains("could not be sent"),
            "{b:?}: {:?}",
            r.reply_message
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let audit = w.env.cli_json(&["audit", "--tenant", "acme", "--json"]);
    let reasons: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 503")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 429")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("malformed")),
        "{reasons:?}"
    );
}

#[test]
fn a_hanging_provider_is_cut_off_by_the_timeout() {
    let w = world(Mode::Challenge);
    w.twilio.set_behaviour(Behaviour::Hang);
    let started = Instant::now();
    // radclient waits 2 s per try: the login answers within the NAS's patience only if
    // the provider timeout is short; here the request times out at 3 s and radclient
    // gives up, so look at the audit for the outcome.
    let _ = login(&w, "pw", None);
    // The record is written once the provider's 3 s timeout has passed: wait for it.
    let wait_until = Instant::now() + std::time::Duration::from_secs(20);
    let last = loop {
        let audit = w.env.cli_json(&["audit", "--tenant", "acme", "--json"]);
        // The login's decision (the CLI's changes are audited too).
        let last = audit
            .as_array()
            .unwrap()
            .iter()
            .rfind(|r| r["channel"] != "cli")
            .cloned()
            .unwrap_or_default();
        if last.get("result").is_some() || Instant::now() > wait_until {
            break last;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(last["result"], "reject", "{last}");
    assert!(
        last["reason"].as_str().unwrap_or("").contains("timed out")
            || last["reason"].as_str().unwrap_or("").contains("no answer"),
        "{last}"
    );
    assert!(started.elapsed().as_secs() < 10);
}

#[test]
fn wrong_credentials_are_refused_by_the_fake_and_enrolment_says_so() {
    require_tool("radclient", "freeradius-utils");
    let ca_dir = tempfile::tempdir().unwrap();
    let twilio = FakeTwilio::start(ca_dir.path());
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &sms_config(&twilio, "not-the-token", "3s"),
    );
    env.add_tenant("acme");
    env.add_user("acme", "sid", "pw");
    let out = env.cli(&[
        "factor", "enroll", "sms", "--tenant", "acme", "sid", "--phone", PHONE,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("tenants.acme.sms"),
        "{err}"
    );
    assert_eq!(
        twilio.refusals(),
        ["wrong or missing HTTP Basic credentials"]
    );
    assert!(
        !err.contains("not-the-token"),
        "the token leaked into an error: {err}"
    );
}

/// The auth token rotated in Twilio's console and in `auth_token_file` (written in place,
/// as a secrets manager does): the next SMS goes out with the new one, no restart, no
/// reload.
#[test]
fn a_rotated_auth_token_file_is_used_at_once() {
    require_tool("radclient", "freeradius-utils");
    let ca_dir = tempfile::tempdir().unwrap();
    let twilio = FakeTwilio::start(ca_dir.path());
    let token_file = ca_dir.path().join("twilio.token");
    std::fs::write(&token_file, format!("{}\n", twilio.auth_token)).unwrap();
    let config = sms_config(&twilio, &twilio.auth_token, "3s").replace(
        &format!("auth_token = \"{}\"", twilio.auth_token),
        &format!("auth_token_file = \"{}\"", token_file.display()),
    );
    assert!(config.contains("auth_token_file"), "{config}");
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], &config);
    env.add_tenant("acme");
    env.add_user("acme", "sid", "pw");
    let enrolled = env.cli_json(&[
        "factor", "enroll", "sms", "--tenant", "acme", "sid", "--phone", PHONE, "--json",
    ]);
    let id = enrolled["factor_id"].as_str().expect("factor id");
    env.cli_ok(&[
        "factor",
        "confirm",
        "--tenant",
        "acme",
        "sid",
        id,
        &twilio.last_code(),
    ]);
    let w = World {
        twilio,
        server: env.start_server(),
        env,
        _ca_dir: ca_dir,
    };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    expect(
        &login(&w, "pw", None),
        "Access-Challenge",
        "before the rotation",
    );
    assert_eq!(w.twilio.messages().len(), 2);

    w.twilio.rotate_auth_token("rotated-auth-token-9876543210");
    std::fs::write(&token_file, "rotated-auth-token-9876543210\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after = login(&w, "pw", None);
    expect(&after, "Access-Challenge", "after the rotation");
    assert_eq!(w.twilio.messages().len(), 3, "{:?}", w.twilio.refusals());
    let ok = login(&w, &w.twilio.last_code(), after.state_hex.as_deref());
    expect(&ok, "Access-Accept", "the code sent with the new token");
    assert!(w.twilio.refusals().is_empty(), "{:?}", w.twilio.refusals());
    let log = w.server.stderr();
    assert!(log.contains("secret file changed"), "{log}");
    assert!(
        !log.contains("rotated-auth-token"),
        "the secret is not logged: {log}"
    );
}
