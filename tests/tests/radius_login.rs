//! Logins through a real NAS (radclient) with codes from a real authenticator (oathtool).

use portcullis_tests::{
    oathtool_totp, require_tool, Algorithm, LoginFixture, Mode, RadReply, TestEnv,
};

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

#[track_caller]
fn expect(reply: &RadReply, code: &str, what: &str) {
    assert_eq!(
        reply.code.as_deref(),
        Some(code),
        "{what}: expected {code}\n{}",
        reply.raw_output
    );
}

#[test]
fn append_mode_accepts_password_and_totp_code() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let reply = f.login(&format!("{}{}", f.password, f.code()), None);
    expect(
        &reply,
        "Access-Accept",
        "password immediately followed by the code",
    );
}

#[test]
fn challenge_mode_accepts_code_after_state_round_trip() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let first = f.login(&f.password, None);
    expect(
        &first,
        "Access-Challenge",
        "password alone in challenge mode",
    );
    assert!(
        first.state_hex.as_deref().is_some_and(|s| !s.is_empty()),
        "the challenge carries a State\n{}",
        first.raw_output
    );
    assert!(
        first
            .reply_message
            .as_deref()
            .is_some_and(|m| !m.trim().is_empty()),
        "the challenge carries a Reply-Message (the prompt)\n{}",
        first.raw_output
    );
    let second = f.login(&f.code(), Some(&first.state_for_radclient()));
    expect(
        &second,
        "Access-Accept",
        "the code with the State of the challenge",
    );
}

#[test]
fn wrong_code_is_rejected() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let reply = f.login(&format!("{}{}", f.password, f.wrong_code()), None);
    expect(
        &reply,
        "Access-Reject",
        "right password, wrong code (append)",
    );
}

#[test]
fn wrong_code_in_challenge_mode_is_rechallenged_then_rejected_after_three_tries() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let first = f.login(&f.password, None);
    expect(&first, "Access-Challenge", "password alone");
    let prompt = first.reply_message.clone();

    let mut state = first.state_for_radclient();
    let mut seen_states = vec![state.clone()];
    for attempt in 1..=2 {
        let again = f.login(&f.wrong_code(), Some(&state));
        expect(
            &again,
            "Access-Challenge",
            &format!("wrong code, attempt {attempt} of 3"),
        );
        let new_state = again.state_for_radclient();
        assert!(
            !seen_states.contains(&new_state),
            "attempt {attempt}: the new challenge must carry a NEW State (got {new_state} again)\n{}",
            again.raw_output
        );
        assert!(
            again
                .reply_message
                .as_deref()
                .is_some_and(|m| !m.trim().is_empty()),
            "attempt {attempt}: the new challenge says the code was wrong\n{}",
            again.raw_output
        );
        assert_ne!(
            again.reply_message, prompt,
            "attempt {attempt}: the Reply-Message should say the code was wrong, not repeat the prompt\n{}",
            again.raw_output
        );
        seen_states.push(new_state.clone());
        state = new_state;
    }
    let last = f.login(&f.wrong_code(), Some(&state));
    expect(&last, "Access-Reject", "wrong code, attempt 3 of 3");
    // The login is over: even the right code with the last State does not get in.
    let after = f.login(&f.code(), Some(&state));
    expect(
        &after,
        "Access-Reject",
        "right code with the State of a rejected login",
    );
}

#[test]
fn right_code_after_a_wrong_one_is_accepted_in_challenge_mode() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let first = f.login(&f.password, None);
    expect(&first, "Access-Challenge", "password alone");
    let again = f.login(&f.wrong_code(), Some(&first.state_for_radclient()));
    expect(&again, "Access-Challenge", "wrong code");
    let last = f.login(&f.code(), Some(&again.state_for_radclient()));
    expect(&last, "Access-Accept", "right code with the new State");
}

#[test]
fn replayed_code_is_rejected() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let code = f.code();
    let first = f.login(&format!("{}{code}", f.password), None);
    expect(&first, "Access-Accept", "first use of the code");
    let second = f.login(&format!("{}{code}", f.password), None);
    expect(&second, "Access-Reject", "the same code in a new login");
}

#[test]
fn replayed_code_is_not_accepted_as_a_challenge_answer() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let code = f.code();
    let first = f.login(&f.password, None);
    expect(&first, "Access-Challenge", "password alone");
    let ok = f.login(&code, Some(&first.state_for_radclient()));
    expect(&ok, "Access-Accept", "first use of the code");

    let second = f.login(&f.password, None);
    expect(&second, "Access-Challenge", "password alone, second login");
    let replay = f.login(&code, Some(&second.state_for_radclient()));
    assert!(
        !replay.is_accept() && !replay.is_no_reply(),
        "a used code must be refused (re-challenge or reject), got {:?}\n{}",
        replay.code,
        replay.raw_output
    );
}

#[test]
fn wrong_password_is_rejected() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let reply = f.login("not the password", None);
    expect(
        &reply,
        "Access-Reject",
        "wrong password in challenge mode (no challenge)",
    );
}

#[test]
fn wrong_password_with_right_code_is_rejected_in_append_mode() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let reply = f.login(&format!("not the password{}", f.code()), None);
    expect(
        &reply,
        "Access-Reject",
        "wrong password, right code (append)",
    );
}

#[test]
fn unknown_user_is_rejected() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let unknown = f.login_as("mallory", &f.password, None);
    expect(&unknown, "Access-Reject", "unknown user");
    let wrong_password = f.login("not the password", None);
    expect(&wrong_password, "Access-Reject", "wrong password");
    // Nothing tells an unknown user from a wrong password.
    assert_eq!(
        unknown.attributes.iter().filter(|(n, _)| n != "Message-Authenticator").collect::<Vec<_>>(),
        wrong_password.attributes.iter().filter(|(n, _)| n != "Message-Authenticator").collect::<Vec<_>>(),
        "the reject of an unknown user differs from the reject of a wrong password\n--- unknown user ---\n{}\n--- wrong password ---\n{}",
        unknown.raw_output,
        wrong_password.raw_output
    );
}

#[test]
fn unknown_user_is_rejected_in_append_mode() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let reply = f.login_as("mallory", &format!("{}{}", f.password, f.code()), None);
    expect(&reply, "Access-Reject", "unknown user (append)");
}

#[test]
fn pending_factor_cannot_be_used() {
    peers();
    let env = TestEnv::challenge();
    let tenant = env.client().tenant.clone();
    env.add_tenant(&tenant);
    env.add_user(&tenant, "alice", "alice password");
    let pending = env.enroll_totp(&tenant, "alice", None);
    assert_eq!(
        pending.state, "pending",
        "enrolled without --secret: {}",
        pending.json
    );
    let secret = pending
        .secret
        .clone()
        .unwrap_or_else(|| panic!("enroll output has no secret: {}", pending.json));
    // bob has no factor at all.
    env.add_user(&tenant, "bob", "bob password");
    let server = env.start_server();
    let secret_vpn = &env.client().secret;

    let login = |user: &str, password: String, state: Option<String>| {
        let mut attrs = vec![("User-Name", user.to_string()), ("User-Password", password)];
        if let Some(state) = state {
            attrs.push(("State", state));
        }
        portcullis_tests::radclient(server.addr, secret_vpn, &attrs, true)
    };
    let alice = login("alice", "alice password".into(), None);
    expect(
        &alice,
        "Access-Reject",
        "right password, only a pending factor",
    );
    let bob = login("bob", "bob password".into(), None);
    expect(&bob, "Access-Reject", "right password, no factor");
    // Appending the pending factor's code does not help either.
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let alice_append = login("alice", format!("alice password{code}"), None);
    assert!(
        !alice_append.is_accept(),
        "a pending factor's code must not log in\n{}",
        alice_append.raw_output
    );
}

#[test]
fn recovery_code_is_accepted_once() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let codes = f.env.generate_recovery_codes(&f.tenant, &f.user);
    assert_eq!(
        codes.len(),
        10,
        "recovery generate gives 10 codes: {codes:?}"
    );
    let first = f.login(&format!("{}{}", f.password, codes[0]), None);
    expect(&first, "Access-Accept", "password + recovery code (append)");
    let second = f.login(&format!("{}{}", f.password, codes[0]), None);
    expect(&second, "Access-Reject", "the same recovery code again");
    let other = f.login(&format!("{}{}", f.password, codes[1]), None);
    expect(&other, "Access-Accept", "another recovery code of the set");
}

#[test]
fn recovery_code_answers_the_challenge_once() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let codes = f.env.generate_recovery_codes(&f.tenant, &f.user);
    assert_eq!(
        codes.len(),
        10,
        "recovery generate gives 10 codes: {codes:?}"
    );
    let challenge = f.login(&f.password, None);
    expect(&challenge, "Access-Challenge", "password alone");
    let ok = f.login(&codes[0], Some(&challenge.state_for_radclient()));
    expect(
        &ok,
        "Access-Accept",
        "recovery code as the answer to the challenge",
    );

    let challenge = f.login(&f.password, None);
    expect(
        &challenge,
        "Access-Challenge",
        "password alone, second login",
    );
    let again = f.login(&codes[0], Some(&challenge.state_for_radclient()));
    assert!(
        !again.is_accept() && !again.is_no_reply(),
        "a used recovery code must be refused (re-challenge or reject), got {:?}\n{}",
        again.code,
        again.raw_output
    );
}

#[test]
fn eight_digit_sha256_code_is_accepted() {
    peers();
    let f = LoginFixture::with_totp(Mode::Append, 8, Algorithm::Sha256);
    assert_eq!(f.factor.digits, Some(8), "enroll output: {}", f.factor.json);
    assert_eq!(
        f.factor.algorithm.as_deref(),
        Some("SHA256"),
        "enroll output: {}",
        f.factor.json
    );
    let code = f.code();
    assert_eq!(code.len(), 8);
    let reply = f.login(&format!("{}{code}", f.password), None);
    expect(&reply, "Access-Accept", "password + 8-digit SHA256 code");
}

#[test]
fn old_state_cannot_be_reused() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let recovery = f.env.generate_recovery_codes(&f.tenant, &f.user);

    // A State answered with a wrong code is spent: the new challenge's State replaces it.
    let first = f.login(&f.password, None);
    expect(&first, "Access-Challenge", "password alone");
    let old_state = first.state_for_radclient();
    let rechallenge = f.login(&f.wrong_code(), Some(&old_state));
    expect(&rechallenge, "Access-Challenge", "wrong code");
    let reused = f.login(&f.code(), Some(&old_state));
    expect(
        &reused,
        "Access-Reject",
        "right code with the already answered State",
    );

    // A State that led to an Accept is spent too (the second answer is a fresh, unused
    // recovery code, so only the State can be the reason for the reject).
    let login = f.login(&f.password, None);
    expect(&login, "Access-Challenge", "password alone, second login");
    let state = login.state_for_radclient();
    let ok = f.login(&recovery[0], Some(&state));
    expect(&ok, "Access-Accept", "recovery code as the answer");
    let reused = f.login(&recovery[1], Some(&state));
    expect(
        &reused,
        "Access-Reject",
        "another valid recovery code with the spent State",
    );
}

/// radclient as the NAS, for a user at `station` (Calling-Station-Id).
fn login_from(f: &LoginFixture, station: &str, password: &str) -> RadReply {
    portcullis_tests::radclient(
        f.server.addr,
        &f.env.client().secret,
        &[
            ("User-Name", f.user.clone()),
            ("User-Password", password.to_string()),
            ("Calling-Station-Id", station.to_string()),
        ],
        true,
    )
}

#[test]
fn an_address_guessing_passwords_is_blocked_until_an_admin_unblocks_it() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    // [lockout] source_failures = 20 (the default): 20 wrong passwords are plain rejects,
    // the 21st blocks the address.
    for i in 0..21 {
        let reply = login_from(&f, "203.0.113.7", &format!("guess{i}"));
        expect(&reply, "Access-Reject", "a wrong password");
        assert_eq!(
            reply.attribute("Reply-Message"),
            Some("Authentication failed"),
            "{}",
            reply.raw_output
        );
    }
    let right = format!("{}{}", f.password, f.code());
    let blocked = login_from(&f, "203.0.113.7", &right);
    expect(
        &blocked,
        "Access-Reject",
        "the right password from a blocked address",
    );
    assert!(
        blocked
            .attribute("Reply-Message")
            .is_some_and(|m| m.contains("Too many failed logins from your address")),
        "{}",
        blocked.raw_output
    );
    // The user is not locked out: from another address the login works.
    expect(
        &login_from(&f, "198.51.100.1", &right),
        "Access-Accept",
        "the same user from another address",
    );
    let audit = f.env.cli_ok(&["audit", "--tenant", &f.tenant]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("source 203.0.113.7 is blocked"), "{audit}");

    let out = f
        .env
        .cli_ok(&["unblock", "--tenant", &f.tenant, "203.0.113.7"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unblocked"),
        "{out:?}"
    );
    // The next step's code: this step's was used from the other address.
    let next = portcullis_tests::oathtool_totp(&f.secret, f.digits, f.algorithm, 1);
    expect(
        &login_from(&f, "203.0.113.7", &format!("{}{next}", f.password)),
        "Access-Accept",
        "the address after `portcullis unblock`",
    );
}

#[test]
fn a_client_with_source_limit_false_counts_no_address() {
    peers();
    // A NAS whose Calling-Station-Id is the same for every user.
    let env = TestEnv::new(vec![portcullis_tests::ClientSpec {
        extra: "source_limit = false".into(),
        ..portcullis_tests::ClientSpec::new(Mode::Append)
    }]);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let secret = portcullis_tests::random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    let send = |password: &str| {
        portcullis_tests::radclient(
            server.addr,
            &env.client().secret,
            &[
                ("User-Name", "alice".to_string()),
                ("User-Password", password.to_string()),
                ("Calling-Station-Id", "vpn-gateway".to_string()),
            ],
            true,
        )
    };
    for i in 0..25 {
        expect(
            &send(&format!("guess{i}")),
            "Access-Reject",
            "a wrong password",
        );
    }
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    expect(
        &send(&format!("pw{code}")),
        "Access-Accept",
        "after 25 wrong passwords from the shared Calling-Station-Id",
    );
}
