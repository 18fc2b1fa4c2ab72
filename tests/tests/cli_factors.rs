//! Enrolling and confirming factors through the admin CLI.

use portcullis_tests::{oathtool_totp, radclient, require_tool, wrong_totp, Algorithm, TestEnv};

#[test]
fn factor_confirm_requires_the_right_code() {
    require_tool("oathtool", "oathtool");
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "alice password");
    let factor = env.enroll_totp("acme", "alice", None);
    assert_eq!(
        factor.state, "pending",
        "enrolled without --secret: {}",
        factor.json
    );
    assert_eq!(factor.digits, Some(6), "{}", factor.json);
    assert_eq!(factor.algorithm.as_deref(), Some("SHA1"), "{}", factor.json);
    let secret = factor
        .secret
        .clone()
        .unwrap_or_else(|| panic!("enroll shows the new secret: {}", factor.json));
    assert!(
        data_is_base32(&secret),
        "the secret is RFC 4648 base32: {secret:?}"
    );
    let uri = factor.uri.clone().unwrap_or_default();
    assert!(uri.starts_with("otpauth://totp/"), "uri: {uri:?}");
    assert!(
        uri.contains(&format!("secret={secret}")),
        "uri carries the secret: {uri:?}"
    );

    let wrong = env.confirm_factor(
        "acme",
        "alice",
        &factor.factor_id,
        &wrong_totp(&secret, 6, Algorithm::Sha1),
    );
    assert!(
        !wrong.status.success(),
        "confirm with a wrong code must fail\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&wrong.stdout),
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(
        !wrong.stderr.is_empty(),
        "a failed confirm explains itself on stderr"
    );
    let listed = env.list_factors("acme", "alice");
    let it = listed
        .iter()
        .find(|f| f.factor_id == factor.factor_id)
        .unwrap_or_else(|| panic!("factor list does not show {}: {listed:?}", factor.factor_id));
    assert_eq!(it.state, "pending", "still pending after a wrong code");

    let right = env.confirm_factor(
        "acme",
        "alice",
        &factor.factor_id,
        &oathtool_totp(&secret, 6, Algorithm::Sha1, 0),
    );
    assert!(
        right.status.success(),
        "confirm with the right code must succeed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&right.stdout),
        String::from_utf8_lossy(&right.stderr)
    );
    let listed = env.list_factors("acme", "alice");
    let it = listed
        .iter()
        .find(|f| f.factor_id == factor.factor_id)
        .unwrap_or_else(|| panic!("factor list does not show {}: {listed:?}", factor.factor_id));
    assert_eq!(it.state, "confirmed", "confirmed after the right code");
    assert_eq!(it.kind, "totp");
}

fn data_is_base32(s: &str) -> bool {
    !s.is_empty()
        && s.trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[test]
fn factor_confirmed_through_the_cli_logs_in() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let env = TestEnv::append();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "alice password");
    let factor = env.enroll_totp("acme", "alice", None);
    let secret = factor.secret.clone().expect("secret in enroll output");
    let confirm = env.confirm_factor(
        "acme",
        "alice",
        &factor.factor_id,
        &oathtool_totp(&secret, 6, Algorithm::Sha1, 0),
    );
    assert!(
        confirm.status.success(),
        "confirm: {}",
        String::from_utf8_lossy(&confirm.stderr)
    );
    let server = env.start_server();
    // The next step's code: the confirming code may count as used, the server accepts +-1 step.
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 1);
    let reply = radclient(
        server.addr,
        &env.client().secret,
        &[
            ("User-Name", "alice".into()),
            ("User-Password", format!("alice password{code}")),
        ],
        true,
    );
    assert!(
        reply.is_accept(),
        "login after confirm\n{}",
        reply.raw_output
    );
}

#[test]
fn enrolling_with_a_secret_confirms_the_factor() {
    require_tool("oathtool", "oathtool");
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "alice password");
    let secret = portcullis_tests::random_base32_secret();
    let factor = env.enroll_totp("acme", "alice", Some(&secret));
    assert_eq!(factor.state, "confirmed", "{}", factor.json);
    let listed = env.list_factors("acme", "alice");
    assert!(
        listed
            .iter()
            .any(|f| f.factor_id == factor.factor_id && f.state == "confirmed" && f.kind == "totp"),
        "factor list: {listed:?}"
    );
}

#[test]
fn a_given_secret_is_not_printed_back_in_json() {
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "alice password");
    let secret = portcullis_tests::random_base32_secret();
    let check = |what: &str, out: &std::process::Output| {
        assert!(out.status.success(), "{what}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!(v["state"], "confirmed", "{what}: {v}");
        assert!(v["factor_id"].is_string(), "{what}: {v}");
        assert!(
            v.get("secret").is_none() && v.get("uri").is_none(),
            "{what}: the given secret is not repeated: {v}"
        );
        assert!(
            !text.contains(&secret) && !text.contains("otpauth://"),
            "{what}: {text}"
        );
    };
    let base = ["--json", "factor", "enroll"];
    let with_user = |kind: &str, user: &str, extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(&[kind, "--tenant", "acme", user])
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let with = |kind: &str, extra: &[&str]| with_user(kind, "alice", extra);
    let args = with("totp", &["--secret", &secret]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check("totp --secret", &env.cli(&args));
    // The same secret again for alice would let one code in once per factor: refused,
    // without printing it. Another user may hold it.
    let refused = env.cli(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("already holds this secret"),
        "{refused:?}"
    );
    assert!(!stderr.contains(&secret), "{stderr}");
    env.add_user("acme", "bob", "bob password");
    let args = with_user("totp", "bob", &["--secret-stdin"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(
        "totp --secret-stdin",
        &env.cli_stdin(&args, &format!("{secret}\n")),
    );
    let args = with("hotp", &["--secret-stdin", "--counter", "3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(
        "hotp --secret-stdin",
        &env.cli_stdin(&args, &format!("{secret}\n")),
    );

    // A secret made by the enrolment is still shown once, with its URI.
    let made = env.cli_json(&[
        "--json", "factor", "enroll", "hotp", "--tenant", "acme", "alice",
    ]);
    assert_eq!(made["state"], "pending", "{made}");
    let shown = made["secret"].as_str().unwrap_or_else(|| panic!("{made}"));
    assert!(
        made["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://hotp/") && u.contains(shown)),
        "{made}"
    );
}
