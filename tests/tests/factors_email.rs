//! E-mail codes end to end: `portcullis serve` mails through a strict local SMTP sink (TLS,
//! AUTH required); the test reads the code from the received mail and answers with
//! radclient. E-mail only counts beside another factor.

use portcullis_tests::fakes::smtp::{SinkTls, SmtpSink};
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, Server, TestEnv,
};

fn email_config(sink: &SmtpSink, tls: &str, password: &str) -> String {
    format!(
        "[tenants.acme.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nusername = \"{}\"\npassword = \"{password}\"\nfrom = \"Portcullis <mfa@example.com>\"\nca_file = \"{}\"\ntimeout = \"5s\"\nresend_after = \"1s\"\n",
        sink.addr.port(),
        sink.username,
        sink.ca_file.display()
    )
}

struct World {
    sink: SmtpSink,
    env: TestEnv,
    secret: String,
    _dir: tempfile::TempDir,
}

/// alice: TOTP + a confirmed e-mail factor, enrolled through the CLI.
fn world(tls: SinkTls) -> World {
    world_with(tls, |config, _, _| config)
}

/// [`world`] with its config changed by `adjust(config, sink, dir)` first.
fn world_with(
    tls: SinkTls,
    adjust: impl Fn(String, &SmtpSink, &std::path::Path) -> String,
) -> World {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), tls);
    let mode = if tls == SinkTls::Implicit {
        "implicit"
    } else {
        "starttls"
    };
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &adjust(email_config(&sink, mode, &sink.password), &sink, dir.path()),
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw-alice");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let v = env.cli_json(&[
        "factor",
        "enroll",
        "email",
        "--tenant",
        "acme",
        "alice",
        "--email",
        "alice@example.com",
        "--json",
    ]);
    let id = v["factor_id"].as_str().expect("factor id").to_string();
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "refusals: {:?}", sink.refusals());
    assert!(
        mails[0].to[0].contains("alice@example.com"),
        "{:?}",
        mails[0]
    );
    env.cli_ok(&[
        "factor",
        "confirm",
        "--tenant",
        "acme",
        "alice",
        &id,
        &sink.last_code(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    World {
        sink,
        env,
        secret,
        _dir: dir,
    }
}

fn login(
    server: &Server,
    env: &TestEnv,
    user: &str,
    password: &str,
    state: Option<&str>,
) -> RadReply {
    let mut attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    radclient(server.addr, &env.client().secret, &attrs, true)
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
fn typing_email_at_the_prompt_mails_a_code_that_logs_in() {
    let w = world(SinkTls::Implicit);
    let server = w.env.start_server();
    let first = login(&server, &w.env, "alice", "pw-alice", None);
    expect(&first, "Access-Challenge", "password");
    assert!(
        first
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("2) e-mail to a"),
        "a factor menu offers the app and e-mail: {:?}",
        first.reply_message
    );
    let mailed = login(
        &server,
        &w.env,
        "alice",
        "email",
        first.state_hex.as_deref(),
    );
    expect(&mailed, "Access-Challenge", "asking for a mail");
    assert!(
        mailed
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("a•••@example.com"),
        "{:?}",
        mailed.reply_message
    );
    let ok = login(
        &server,
        &w.env,
        "alice",
        &w.sink.last_code(),
        mailed.state_hex.as_deref(),
    );
    expect(&ok, "Access-Accept", "mailed code");
    let audit = w.env.cli_json(&["audit", "--tenant", "acme", "--json"]);
    let last = audit.as_array().unwrap().last().unwrap();
    assert_eq!(
        last["factors"],
        serde_json::json!(["password", "email"]),
        "{last}"
    );
    // The app's code still works as before.
    let again = login(&server, &w.env, "alice", "pw-alice", None);
    let code = oathtool_totp(&w.secret, 6, Algorithm::Sha1, 0);
    expect(
        &login(&server, &w.env, "alice", &code, again.state_hex.as_deref()),
        "Access-Accept",
        "TOTP",
    );
}

#[test]
fn starttls_submission_delivers_the_enrolment_code() {
    let w = world(SinkTls::Starttls);
    assert!(w.sink.refusals().is_empty(), "{:?}", w.sink.refusals());
}

#[test]
fn email_alone_does_not_let_a_user_in() {
    let w = world(SinkTls::Implicit);
    w.env.add_user("acme", "eve", "pw-eve");
    let v = w.env.cli_json(&[
        "factor",
        "enroll",
        "email",
        "--tenant",
        "acme",
        "eve",
        "--email",
        "eve@example.com",
        "--json",
    ]);
    let id = v["factor_id"].as_str().unwrap().to_string();
    w.env.cli_ok(&[
        "factor",
        "confirm",
        "--tenant",
        "acme",
        "eve",
        &id,
        &w.sink.last_code(),
    ]);
    let server = w.env.start_server();
    expect(
        &login(&server, &w.env, "eve", "pw-eve", None),
        "Access-Reject",
        "e-mail is only an extra factor",
    );
}

#[test]
fn wrong_smtp_password_fails_enrolment_clearly_without_leaking_it() {
    require_tool("radclient", "freeradius-utils");
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), SinkTls::Implicit);
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &email_config(&sink, "implicit", "not-the-password"),
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let out = env.cli(&[
        "factor",
        "enroll",
        "email",
        "--tenant",
        "acme",
        "alice",
        "--email",
        "alice@example.com",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants.acme.email") && err.contains("code not sent"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    assert_eq!(sink.refusals(), ["wrong credentials"]);
    assert!(sink.mails().is_empty());
}

/// The SMTP password changed at the server and in `password_file` (in place): the next
/// mail is sent with the new one, no restart, no reload.
#[test]
fn a_changed_password_file_is_used_for_the_next_mail() {
    let w = world_with(SinkTls::Implicit, |config, sink, dir| {
        let file = dir.join("smtp.password");
        std::fs::write(&file, format!("{}\n", sink.password)).unwrap();
        config.replace(
            &format!("password = \"{}\"", sink.password),
            &format!("password_file = \"{}\"", file.display()),
        )
    });
    let file = w._dir.path().join("smtp.password");
    assert!(file.exists());
    let server = w.env.start_server();
    let mail_code = |w: &World| {
        let first = login(&server, &w.env, "alice", "pw-alice", None);
        expect(&first, "Access-Challenge", "password");
        let mailed = login(
            &server,
            &w.env,
            "alice",
            "email",
            first.state_hex.as_deref(),
        );
        expect(&mailed, "Access-Challenge", "asking for a mail");
        mailed
    };
    mail_code(&w);
    assert_eq!(w.sink.mails().len(), 2, "{:?}", w.sink.refusals());

    w.sink.rotate_password("a-new-smtp-password-2026");
    std::fs::write(&file, "a-new-smtp-password-2026\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mailed = mail_code(&w);
    assert_eq!(w.sink.mails().len(), 3, "{:?}", w.sink.refusals());
    let ok = login(
        &server,
        &w.env,
        "alice",
        &w.sink.last_code(),
        mailed.state_hex.as_deref(),
    );
    expect(
        &ok,
        "Access-Accept",
        "the code mailed with the new password",
    );
    assert!(w.sink.refusals().is_empty(), "{:?}", w.sink.refusals());
}
