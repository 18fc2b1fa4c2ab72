//! Interop: pam_radius_auth 2.0 (a PAM host, as in front of OpenSSH) through our server in
//! challenge mode. pam_radius_auth sends no Message-Authenticator, so its client opts out.

use portcullis_tests::pam_radius::PamRadius;
use portcullis_tests::{
    oathtool_totp, random_base32_secret, require_tool, wrong_totp, Algorithm, ClientSpec, Mode,
    TestEnv,
};

fn setup() -> (portcullis_tests::Server, TestEnv, String) {
    require_tool("oathtool", "oathtool");
    let mut nas = ClientSpec::new(Mode::Challenge);
    nas.name = "pam-host".into();
    nas.secret = "s3cret-pam".into();
    nas.require_message_authenticator = false;
    let env = TestEnv::new(vec![nas]);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "correct horse");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    (server, env, secret)
}

fn describe(out: &std::process::Output, server: &portcullis_tests::Server) -> String {
    format!(
        "pamtester exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    )
}

#[test]
fn pam_radius_auth_challenge_login_with_password_then_code_succeeds() {
    let (server, _env, secret) = setup();
    let pam = PamRadius::new(server.addr, "s3cret-pam");
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let out = pam.authenticate("alice", &["correct horse", &code]);
    assert!(out.status.success(), "{}", describe(&out, &server));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verification code"),
        "the challenge's Reply-Message is the second prompt\n{}",
        describe(&out, &server)
    );
}

#[test]
fn pam_radius_auth_challenge_login_with_a_wrong_code_fails() {
    let (server, _env, secret) = setup();
    let pam = PamRadius::new(server.addr, "s3cret-pam");
    let wrong = wrong_totp(&secret, 6, Algorithm::Sha1);
    // Three wrong answers (the server re-challenges until max_attempts).
    let out = pam.authenticate("alice", &["correct horse", &wrong, &wrong, &wrong]);
    assert!(!out.status.success(), "{}", describe(&out, &server));
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        text.contains("Wrong code, try again"),
        "the password passed and the code was refused\n{}",
        describe(&out, &server)
    );
    assert!(
        server.stderr().contains("wrong code")
            || server.stderr().contains("result=\"reject\"")
            || server.stderr().contains("result=reject"),
        "{}",
        describe(&out, &server)
    );
}

#[test]
fn pam_radius_auth_wrong_password_fails_without_a_challenge() {
    let (server, _env, _) = setup();
    let pam = PamRadius::new(server.addr, "s3cret-pam");
    let out = pam.authenticate("alice", &["wrong horse", "000000"]);
    assert!(!out.status.success(), "{}", describe(&out, &server));
}
