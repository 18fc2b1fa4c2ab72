//! Enrolment on first login: the link in the prompt, its single opening, the pending
//! factor confirmed by the login's answer, expiry, and where `enroll` falls back to deny.

use super::*;

const URL: &str = "https://mfa.example.test";

fn with_carol(url: Option<&str>) -> World {
    let mut w = world();
    w.engine.set_enroll_url(url);
    add_user_with_pw(&w, "carol");
    w
}

/// The prompt's txn and the link's token.
fn link(s: &Step) -> (String, String) {
    match s {
        Step::Prompt { txn, text, .. } => {
            let prefix = format!("{URL}/v1/enroll/");
            let i = text.find(&prefix).unwrap_or_else(|| panic!("{text}")) + prefix.len();
            let token: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert_eq!(token.len(), 43, "{text}");
            (txn.clone(), token)
        }
        other => panic!("expected the enrolment prompt, got {other:?}"),
    }
}

/// carol's password login on an `enroll` client: the prompt's txn and the link's token.
fn carol_link(w: &World) -> (String, String) {
    link(&login_with(
        w,
        LoginMode::Challenge,
        "carol",
        "pw",
        Unenrolled::Enroll,
    ))
}

fn prompt_text(s: &Step) -> String {
    match s {
        Step::Prompt { text, .. } => text.clone(),
        other => panic!("expected a prompt, got {other:?}"),
    }
}

fn carol_factors(w: &World) -> Vec<crate::admin::FactorInfo> {
    w.admin.list_factors("acme", "carol").unwrap()
}

#[test]
fn the_link_makes_a_pending_factor_that_the_first_code_confirms() {
    let w = with_carol(Some("https://mfa.example.test/"));
    let s = login_with(&w, LoginMode::Challenge, "carol", "pw", Unenrolled::Enroll);
    let (txn, token) = link(&s);
    assert!(
        carol_factors(&w).is_empty(),
        "nothing before the link is opened"
    );
    // Answering before opening the link: asked again, nothing confirmed.
    let s = answer(&w, "carol", "192.0.2.10", &txn, "123456");
    assert!(prompt_text(&s).contains("Open the enrolment link first"));
    let txn = prompt_txn(&s);

    assert!(w.engine.open_enrollment("x").unwrap().is_none());
    let opened = w.engine.open_enrollment(&token).unwrap().unwrap();
    assert_eq!(
        (opened.tenant.as_str(), opened.username.as_str()),
        ("acme", "carol")
    );
    assert!(w.engine.open_enrollment(&token).unwrap().is_none(), "once");
    let t = w
        .admin
        .enroll_totp("acme", "carol", None, 6, "SHA1")
        .unwrap();
    assert!(w
        .engine
        .attach_enrollment_factor(&opened, &t.factor_id)
        .unwrap());
    assert!(!w.engine.attach_enrollment_factor(&opened, "other").unwrap());

    let secret = decode_base32(&t.secret).unwrap();
    let now = w.engine.now();
    let wrong = generate(&secret, &TotpParams::default(), now + 300);
    let s = answer(&w, "carol", "192.0.2.10", &txn, &wrong);
    assert!(prompt_text(&s).contains("Wrong code"));
    assert_eq!(carol_factors(&w)[0].state, "pending");
    // The answer must come from the same user and source.
    let good = generate(&secret, &TotpParams::default(), now);
    let txn = prompt_txn(&s);
    let s = answer(&w, "carol", "192.0.2.10", &txn, &good);
    assert_eq!(
        s,
        Step::Accept {
            factors_used: vec!["password".into(), "totp".into()],
            groups: vec![],
            reply_attributes: vec![],
        }
    );
    assert_eq!(carol_factors(&w)[0].state, "confirmed");
    assert!(last_reason(&w).contains("enrolled a TOTP factor at login"));
    // Enrolled now: the next login asks for a code, and that code was spent.
    let s = login_with(&w, LoginMode::Challenge, "carol", "pw", Unenrolled::Enroll);
    assert!(!prompt_text(&s).contains("/v1/enroll/"));
    assert!(!is_accept(&answer(
        &w,
        "carol",
        "192.0.2.10",
        &prompt_txn(&s),
        &good
    )));
}

#[test]
fn links_expire_and_wrong_passwords_get_none() {
    let w = with_carol(Some(URL));
    assert!(matches!(
        login_with(&w, LoginMode::Challenge, "carol", "bad", Unenrolled::Enroll),
        Step::Reject { .. }
    ));
    let (_, token) = carol_link(&w);
    w.clock.advance(ENROLL_TTL);
    assert!(
        w.engine.open_enrollment(&token).unwrap().is_none(),
        "expired"
    );
}

#[test]
fn enroll_without_a_public_url_or_in_one_append_request_denies() {
    let w = with_carol(None);
    assert!(matches!(
        login_with(&w, LoginMode::Challenge, "carol", "pw", Unenrolled::Enroll),
        Step::Reject { .. }
    ));
    let w = with_carol(Some(URL));
    assert!(matches!(
        login_with(
            &w,
            LoginMode::Append,
            "carol",
            "pw,123456",
            Unenrolled::Enroll
        ),
        Step::Reject { .. }
    ));
    // A user with a confirmed factor never gets a link.
    let s = login_with(
        &w,
        LoginMode::Challenge,
        "alice",
        "hunter2",
        Unenrolled::Enroll,
    );
    assert!(!prompt_text(&s).contains("/v1/enroll/"));
}

#[test]
fn a_bypass_code_is_used_instead_of_a_link() {
    let w = with_carol(Some(URL));
    let code = w.admin.issue_bypass_code("acme", "carol", 1, 3600).unwrap();
    let s = login_with(&w, LoginMode::Challenge, "carol", "pw", Unenrolled::Enroll);
    assert!(!prompt_text(&s).contains("/v1/enroll/"));
    assert!(is_accept(&answer(
        &w,
        "carol",
        "192.0.2.10",
        &prompt_txn(&s),
        &code.code
    )));
}

/// The link's pending factor for `opened`, attached as the web page does; its secret.
fn attach_new_totp(w: &World, opened: &crate::engine::OpenedEnrollment) -> Vec<u8> {
    let t = w
        .admin
        .enroll_totp("acme", "carol", None, 6, "SHA1")
        .unwrap();
    assert!(w
        .engine
        .attach_enrollment_factor(opened, &t.factor_id)
        .unwrap());
    decode_base32(&t.secret).unwrap()
}

#[test]
fn an_older_link_binds_no_second_app_once_the_user_has_a_factor() {
    let w = with_carol(Some(URL));
    // Whoever has carol's password logs in first and keeps the link unopened...
    let (their_txn, their_token) = carol_link(&w);
    // ...carol enrols with her own link meanwhile...
    let (txn, token) = carol_link(&w);
    let opened = w.engine.open_enrollment(&token).unwrap().unwrap();
    let secret = attach_new_totp(&w, &opened);
    let code = generate(&secret, &TotpParams::default(), w.engine.now());
    assert!(is_accept(&answer(&w, "carol", "192.0.2.10", &txn, &code)));
    // ...and the older link opens no more.
    assert!(w.engine.open_enrollment(&their_token).unwrap().is_none());
    let s = answer(&w, "carol", "192.0.2.10", &their_txn, "123456");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert_eq!(carol_factors(&w).len(), 1);
}

#[test]
fn a_link_opened_before_the_user_enrolled_elsewhere_cannot_confirm_its_factor() {
    let w = with_carol(Some(URL));
    let (their_txn, their_token) = carol_link(&w);
    let theirs = w.engine.open_enrollment(&their_token).unwrap().unwrap();
    let their_secret = attach_new_totp(&w, &theirs);
    // An administrator enrols carol's own app meanwhile.
    let own = w
        .admin
        .enroll_totp("acme", "carol", None, 6, "SHA1")
        .unwrap();
    let own_secret = decode_base32(&own.secret).unwrap();
    let now = w.engine.now();
    w.admin
        .confirm_factor(
            "acme",
            "carol",
            &own.factor_id,
            &generate(&own_secret, &TotpParams::default(), now),
        )
        .unwrap();
    let code = generate(&their_secret, &TotpParams::default(), now);
    let s = answer(&w, "carol", "192.0.2.10", &their_txn, &code);
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(
        last_reason(&w).contains("has had a second factor"),
        "{}",
        last_reason(&w)
    );
    let left = carol_factors(&w);
    assert_eq!(left.len(), 1, "the link's pending factor is gone: {left:?}");
    assert_eq!(left[0].factor_id, own.factor_id);
}

#[test]
fn a_bypass_code_issued_after_the_link_voids_it_too() {
    let w = with_carol(Some(URL));
    let (txn, token) = carol_link(&w);
    // The helpdesk gives carol a bypass code: she has a way in; the link is void.
    w.admin.issue_bypass_code("acme", "carol", 1, 3600).unwrap();
    assert!(w.engine.open_enrollment(&token).unwrap().is_none());
    let s = answer(&w, "carol", "192.0.2.10", &txn, "123456");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(carol_factors(&w).is_empty());
}
