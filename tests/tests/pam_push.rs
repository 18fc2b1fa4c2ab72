//! Push approval through the PAM module: pamtester under pam_wrapper answers the factor
//! menu and the "approve, then press Enter" prompt; the test approves (or denies) as the
//! phone would, on the daemon's HTTP listener, while the module polls.

use std::thread;
use std::time::Duration;

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::http::post;
use portcullis_tests::{describe, PamFixture};
use serde_json::Value;

const PUBLIC: &str = "https://mfa.example.test";

/// alice (TOTP already) also enrols push; the daemon then runs with the PAM socket.
fn fixture() -> (PamFixture, FakeNtfy, tempfile::TempDir) {
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let extra = format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\"\n{}",
        // The module shows the prompt, so number matching would work; this test answers
        // through pamtester's stdin, which cannot read the number first.
        ntfy.config("acme", "number_matching = false\n")
    );
    let mut fx = PamFixture::with_config(&extra, false);
    fx.env.enroll_push_confirmed("acme", "alice", &ntfy);
    let server = fx.env.start_server();
    server.wait_for_pam();
    fx.server = Some(server);
    fx.module_service("push-test", "");
    (fx, ntfy, ca_dir)
}

fn link(msg: &Value) -> (String, String) {
    let click = msg["click"].as_str().expect("click URL");
    let rest = click.strip_prefix(&format!("{PUBLIC}/v1/push/")).unwrap();
    let (id, token) = rest.split_once("?t=").unwrap();
    (id.to_string(), token.to_string())
}

fn answer_push(fx: &PamFixture, ntfy: &FakeNtfy, n: usize, what: &str) {
    let msgs = ntfy.wait_for(n, Duration::from_secs(20));
    assert!(
        msgs.len() >= n,
        "no push arrived; refusals {:?}",
        ntfy.refusals()
    );
    let (id, token) = link(&msgs[n - 1]);
    let http = fx
        .server
        .as_ref()
        .unwrap()
        .http_addr
        .expect("http listener");
    let bearer = format!("Bearer {token}");
    let (status, body) = post(
        http,
        &format!("/v1/push/{id}/{what}"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn menu_then_push_approved_while_the_module_polls() {
    let (fx, ntfy, _ca) = fixture();
    let stdin = format!("{}\n2\n\n", fx.password);
    let out = thread::scope(|s| {
        let login = s.spawn(|| fx.pamtester("push-test", "alice", &stdin));
        answer_push(&fx, &ntfy, 2, "approve");
        login.join().unwrap()
    });
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("push to your phone"),
        "the menu was shown: {text}"
    );
    assert!(
        text.contains("Approve the request on your phone, then press Enter"),
        "{text}"
    );
    let audit = fx.last_audit("alice");
    assert_eq!(audit["result"], "accept", "{audit}");
    assert!(audit["factors"].to_string().contains("push"), "{audit}");
    assert_eq!(audit["client"], "push-test");
}

#[test]
fn denied_push_refuses_the_pam_login() {
    let (fx, ntfy, _ca) = fixture();
    let stdin = format!("{}\npush\n\n", fx.password);
    let out = thread::scope(|s| {
        let login = s.spawn(|| fx.pamtester("push-test", "alice", &stdin));
        answer_push(&fx, &ntfy, 2, "deny");
        login.join().unwrap()
    });
    assert!(!out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("denied on the phone"), "{text}");
    assert_eq!(fx.last_audit("alice")["result"], "reject");
}

#[test]
fn a_code_typed_at_the_push_wait_prompt_logs_in_without_the_phone() {
    let (fx, ntfy, _ca) = fixture();
    // The menu's push, then the app's code at "Approve ..., then press Enter (or type a
    // code):" instead of Enter; nobody approves on the phone.
    let stdin = format!("{}\n2\n{}\n", fx.password, fx.code());
    let out = fx.pamtester("push-test", "alice", &stdin);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("or type a code"), "{text}");
    assert!(
        ntfy.wait_for(2, Duration::from_secs(5)).len() >= 2,
        "the push was sent"
    );
    let audit = fx.last_audit("alice");
    assert_eq!(audit["result"], "accept", "{audit}");
    let factors = audit["factors"].to_string();
    assert!(
        factors.contains("totp") && !factors.contains("push"),
        "{audit}"
    );
}
