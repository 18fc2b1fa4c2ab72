//! HOTP hardware tokens (codes from `oathtool --hotp`) and admin-issued bypass codes,
//! end to end through `portcullis serve` and radclient.

use std::process::Command;

use portcullis_tests::{random_base32_secret, require_tool, LoginFixture, Mode, RadReply};

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

/// The HOTP code for `counter`, from oathtool (an independent implementation).
fn oathtool_hotp(secret_b32: &str, counter: u64) -> String {
    let out = Command::new("oathtool")
        .args(["--hotp", "-b", "-c", &counter.to_string(), secret_b32])
        .output()
        .expect("run oathtool");
    assert!(out.status.success(), "oathtool: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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

/// A fixture whose user "hank" holds only an HOTP token at counter 5.
fn hotp_fixture(mode: Mode) -> (LoginFixture, String) {
    let f = LoginFixture::new(mode);
    let secret = random_base32_secret();
    f.env.add_user(&f.tenant, "hank", "token pass");
    f.env.cli_stdin_ok(
        &[
            "factor",
            "enroll",
            "hotp",
            "--tenant",
            &f.tenant,
            "hank",
            "--secret-stdin",
            "--counter",
            "5",
        ],
        &format!("{secret}\n"),
    );
    (f, secret)
}

#[test]
fn hotp_token_logs_in_once_per_code_in_append_mode() {
    peers();
    let (f, secret) = hotp_fixture(Mode::Append);
    let code = oathtool_hotp(&secret, 7); // pressed twice without logging in
    expect(
        &f.login_as("hank", &format!("token pass{code}"), None),
        "Access-Accept",
        "code within the look-ahead",
    );
    expect(
        &f.login_as("hank", &format!("token pass{code}"), None),
        "Access-Reject",
        "the same code again",
    );
    let older = oathtool_hotp(&secret, 6);
    expect(
        &f.login_as("hank", &format!("token pass{older}"), None),
        "Access-Reject",
        "a code behind the counter",
    );
    let next = oathtool_hotp(&secret, 8);
    expect(
        &f.login_as("hank", &format!("token pass{next}"), None),
        "Access-Accept",
        "the next code",
    );
}

#[test]
fn hotp_token_answers_the_challenge_and_resync_brings_back_a_drifted_token() {
    peers();
    let (f, secret) = hotp_fixture(Mode::Challenge);
    let far = oathtool_hotp(&secret, 100);
    let first = f.login_as("hank", "token pass", None);
    expect(&first, "Access-Challenge", "password");
    let r = f.login_as("hank", &far, first.state_hex.as_deref());
    expect(
        &r,
        "Access-Challenge",
        "a code beyond the look-ahead is wrong",
    );
    let factors = f.env.list_factors(&f.tenant, "hank");
    let id = &factors[0].factor_id;
    let (c100, c101) = (oathtool_hotp(&secret, 100), oathtool_hotp(&secret, 101));
    f.env.cli_ok(&[
        "factor", "resync", "--tenant", &f.tenant, "hank", id, &c100, &c101,
    ]);
    let first = f.login_as("hank", "token pass", None);
    let ok = f.login_as(
        "hank",
        &oathtool_hotp(&secret, 102),
        first.state_hex.as_deref(),
    );
    expect(&ok, "Access-Accept", "after resync");
}

#[test]
fn bypass_code_works_for_its_uses_only() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let v = f.env.cli_json(&[
        "bypass", "--tenant", &f.tenant, &f.user, "--uses", "2", "--ttl", "10m", "--json",
    ]);
    let code = v["code"].as_str().expect("bypass code in JSON").to_string();
    assert_eq!(code.len(), 9, "{v}");
    for i in 0..2 {
        expect(
            &f.login(&format!("{}{code}", f.password), None),
            "Access-Accept",
            &format!("use {}", i + 1),
        );
    }
    expect(
        &f.login(&format!("{}{code}", f.password), None),
        "Access-Reject",
        "third use",
    );
    expect(
        &f.login(&format!("wrong{code}"), None),
        "Access-Reject",
        "bypass never skips the password",
    );
}
