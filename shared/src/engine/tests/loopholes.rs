//! Ways around the Engine's checks that are closed, each proved by a test that failed
//! before its fix: network rules and IPv4-mapped or non-IP sources, one code on two factors
//! of one secret, a mismatched answer ending its owner's login, one code or step raced over
//! threads, and `append` readings against the source limit.

use super::*;
use crate::policy::tests::rule;
use crate::policy::{Action, Rule};

fn reasons(w: &World) -> Vec<String> {
    w.admin
        .audit(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect()
}

// --- Rules on sources -----------------------------------------------------------------

#[test]
fn a_deny_rule_on_an_ipv4_network_also_denies_that_network_seen_as_ipv4_mapped_ipv6() {
    let mut w = world();
    w.engine.set_rules(
        "acme",
        vec![Rule {
            sources: vec!["198.51.100.0/24".parse().unwrap()],
            ..rule("blocked-net", Action::Deny)
        }],
    );
    let s = login_as(&w, "198.51.100.7", LoginMode::Challenge, "alice", "hunter2");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(last_reason(&w).contains("denied by rule 'blocked-net'"));
    // The same address, IPv4-mapped (a dual-stack peer, some NAS's Calling-Station-Id).
    let s = login_as(
        &w,
        "::ffff:198.51.100.7",
        LoginMode::Challenge,
        "alice",
        "hunter2",
    );
    assert!(
        matches!(s, Step::Reject { .. }),
        "deny rule bypassed by ::ffff:198.51.100.7: {s:?} ({})",
        last_reason(&w)
    );
    assert!(
        last_reason(&w).contains("denied by rule 'blocked-net'"),
        "{}",
        last_reason(&w)
    );
    // A rule written with the mapped form covers the plain IPv4 address too.
    w.engine.set_rules(
        "acme",
        vec![Rule {
            sources: vec!["::ffff:198.51.100.0/120".parse().unwrap()],
            ..rule("blocked-mapped", Action::Deny)
        }],
    );
    let s = login_as(&w, "198.51.100.7", LoginMode::Challenge, "alice", "hunter2");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(
        last_reason(&w).contains("denied by rule 'blocked-mapped'"),
        "{}",
        last_reason(&w)
    );
    // Outside the network: not denied.
    let s = login_as(
        &w,
        "::ffff:198.51.101.7",
        LoginMode::Challenge,
        "alice",
        "hunter2",
    );
    assert!(matches!(s, Step::Prompt { .. }), "{s:?}");
}

#[test]
fn a_deny_rule_with_sources_applies_to_a_source_that_is_not_an_ip_address() {
    let mut w = world();
    w.engine.set_rules(
        "acme",
        vec![
            Rule {
                sources: vec!["198.51.100.0/24".parse().unwrap()],
                ..rule("blocked-net", Action::Deny)
            },
            Rule {
                sources: vec!["192.0.2.0/24".parse().unwrap()],
                ..rule("office", Action::SkipMfa)
            },
        ],
    );
    // A PAM rhost that is a DNS name: the deny rule cannot rule it out, so it applies.
    let s = login_as(&w, "host.example", LoginMode::Challenge, "alice", "hunter2");
    assert!(
        matches!(s, Step::Reject { .. }),
        "deny rule failed open for a non-IP source: {s:?} ({})",
        last_reason(&w)
    );
    let reason = last_reason(&w);
    assert!(reason.contains("denied by rule 'blocked-net'"), "{reason}");
    assert!(
        reason.contains(
            "source 'host.example' is not an IP address; rule 'blocked-net' denies what it cannot rule out"
        ),
        "{reason}"
    );
    // An IP address outside the denied network goes on as before.
    let s = login_as(&w, "203.0.113.5", LoginMode::Challenge, "alice", "hunter2");
    assert!(matches!(s, Step::Prompt { .. }), "{s:?}");
    // A rule that lets in (skip_mfa) never applies to what it cannot place.
    w.engine.set_rules(
        "acme",
        vec![Rule {
            sources: vec!["192.0.2.0/24".parse().unwrap()],
            ..rule("office", Action::SkipMfa)
        }],
    );
    let s = login_as(&w, "host.example", LoginMode::Challenge, "alice", "hunter2");
    assert!(matches!(s, Step::Prompt { .. }), "{s:?}");
    // The rules are applied again to the answer of a login started before the rule.
    let txn = prompt_txn(&login_as(
        &w,
        "host.example",
        LoginMode::Challenge,
        "alice",
        "hunter2",
    ));
    w.engine.set_rules(
        "acme",
        vec![Rule {
            sources: vec!["198.51.100.0/24".parse().unwrap()],
            ..rule("blocked-net", Action::Deny)
        }],
    );
    let s = answer(&w, "alice", "host.example", &txn, &code_at(T0));
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(
        last_reason(&w).contains("is not an IP address"),
        "{}",
        last_reason(&w)
    );
    // And in append mode.
    let s = login_as(
        &w,
        "host.example",
        LoginMode::Append,
        "alice",
        &format!("hunter2{}", code_at(T0)),
    );
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(
        last_reason(&w).contains("is not an IP address"),
        "{}",
        last_reason(&w)
    );
}

// --- One code, two factors of one secret ------------------------------------------------

/// A second factor of `kind` holding SECRET for `user`, put straight into the store (as a
/// database from before enrolment refused a secret the user already holds would have it).
fn add_factor_with_secret(w: &World, user: &str, kind: FactorKind, params: String) {
    let store = w.engine.store();
    let tenant = store.tenant_by_name("acme").unwrap().unwrap();
    let u = store.user_by_name(tenant.id, user).unwrap().unwrap();
    let key = MasterKey::from_bytes([7; 32]);
    let id = format!("dup{kind:?}").to_ascii_lowercase();
    store
        .add_factor(&Factor {
            id: id.clone(),
            user_id: u.id,
            kind,
            state: FactorState::Confirmed,
            sealed_secret: key.seal(
                factor_context(&id).as_bytes(),
                &decode_base32(SECRET).unwrap(),
            ),
            params,
            created_at: T0,
            confirmed_at: Some(T0),
            last_used_at: None,
        })
        .unwrap();
}

#[test]
fn one_totp_code_logs_in_once_when_its_secret_is_on_two_factors_of_the_user() {
    let w = world();
    add_factor_with_secret(
        &w,
        "alice",
        FactorKind::Totp,
        serde_json::to_string(&TotpParams::default()).unwrap(),
    );
    let code = code_at(T0);
    assert!(is_accept(&append(&w, &format!("hunter2{code}"))));
    let again = append(&w, &format!("hunter2{code}"));
    assert!(
        !is_accept(&again),
        "the same code logged in twice: {again:?}"
    );
    assert!(last_reason(&w).contains("replayed"), "{}", last_reason(&w));
    // Over a challenge too.
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let s = answer(&w, "alice", "192.0.2.10", &txn, &code);
    assert!(!is_accept(&s), "the same code logged in twice: {s:?}");
    // The next code works once.
    let next = code_at(T0 + 30);
    assert!(is_accept(&append(&w, &format!("hunter2{next}"))));
    assert!(!is_accept(&append(&w, &format!("hunter2{next}"))));
}

#[test]
fn one_hotp_code_logs_in_once_when_its_secret_is_on_two_factors_of_the_user() {
    let w = world_with_hotp_user();
    add_factor_with_secret(
        &w,
        "hank",
        FactorKind::Hotp,
        serde_json::to_string(&crate::hotp::HotpParams {
            algorithm: crate::totp::TotpAlgorithm::SHA1,
            digits: 6,
            counter: 0,
            look_ahead: crate::hotp::DEFAULT_LOOK_AHEAD,
        })
        .unwrap(),
    );
    let hank = |c: &str| login(&w, LoginMode::Append, "hank", &format!("pw{c}"));
    assert!(is_accept(&hank(&hotp_code(2))));
    let again = hank(&hotp_code(2));
    assert!(
        !is_accept(&again),
        "the same code logged in twice: {again:?}"
    );
    assert!(last_reason(&w).contains("replayed"), "{}", last_reason(&w));
    // An older code of the token is refused too; the next one works once.
    assert!(!is_accept(&hank(&hotp_code(1))));
    assert!(is_accept(&hank(&hotp_code(3))));
    assert!(!is_accept(&hank(&hotp_code(3))));
}

#[test]
fn enrolling_an_otp_secret_the_user_already_holds_is_refused() {
    let w = world(); // alice holds SECRET as a TOTP factor
    let err = w
        .admin
        .enroll_totp("acme", "alice", Some(SECRET), 6, "SHA1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds this secret"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert_eq!(w.admin.list_factors("acme", "alice").unwrap().len(), 1);
    // HOTP the same: a token imported twice.
    add_user_with_pw(&w, "hank");
    w.admin
        .enroll_hotp("acme", "hank", Some(SECRET), 6, "SHA1", 0)
        .unwrap();
    let err = w
        .admin
        .enroll_hotp("acme", "hank", Some(SECRET), 6, "SHA1", 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds this secret"), "{err}");
    // Another secret, the same secret for another user, or as the other kind (TOTP steps
    // and HOTP counters never meet) is enrolled as before.
    w.admin
        .enroll_totp(
            "acme",
            "alice",
            Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            6,
            "SHA1",
        )
        .unwrap();
    w.admin
        .enroll_totp("acme", "hank", Some(SECRET), 6, "SHA1")
        .unwrap();
    w.admin
        .enroll_hotp("acme", "alice", Some(SECRET), 6, "SHA1", 0)
        .unwrap();
}

// --- Transactions bound to user, client and source ------------------------------------

#[test]
fn a_mismatched_answer_is_refused_and_leaves_the_owners_login_open() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    // Someone who saw alice's State answers from another source, as another user, over
    // another client and in another tenant; more often than alice has attempts.
    for _ in 0..4 {
        let s = answer(&w, "alice", "203.0.113.66", &txn, "000000");
        assert!(!is_accept(&s));
    }
    assert!(
        last_reason(&w).contains("another user, client or source"),
        "{}",
        last_reason(&w)
    );
    add_user_with_pw(&w, "bob");
    assert!(!is_accept(&answer(&w, "bob", "192.0.2.10", &txn, "000000")));
    let wifi = Channel::Radius {
        client: "wifi".into(),
        nas_address: "127.0.0.1".into(),
        nas_identifier: None,
    };
    let other_client = answer_in(&w, "acme", wifi, "alice", "192.0.2.10", &txn, &code_at(T0));
    assert!(!is_accept(&other_client));
    w.admin.add_tenant("other").unwrap();
    let other_tenant = answer_in(
        &w,
        "other",
        channel(),
        "alice",
        "192.0.2.10",
        &txn,
        &code_at(T0),
    );
    assert!(!is_accept(&other_tenant));
    // Neither a wrong code nor a failure of alice's was counted by the stranger's answers.
    assert!(
        reasons(&w).iter().all(|r| !r.contains("wrong code")),
        "{:?}",
        reasons(&w)
    );
    // Alice's own answer still works, on the same step.
    let s = answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0));
    assert!(
        is_accept(&s),
        "alice's login was ended by a stranger: {s:?} ({})",
        last_reason(&w)
    );
}

#[test]
fn a_pam_login_is_answered_only_from_its_own_host() {
    // Two hosts of the tenant, the same service, user and rhost: the second host (a leaked
    // host token, a compromised machine) must not answer the first one's login.
    let w = world();
    let pam = |host: &str| Channel::Pam {
        host: host.into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.10".into()),
        tty: Some("ssh".into()),
    };
    let started = w
        .engine
        .start(&LoginRequest {
            channel: pam("host1"),
            ..request("alice", "192.0.2.10", LoginMode::Challenge, "hunter2")
        })
        .unwrap();
    let txn = prompt_txn(&started);
    let from = |host: &str| {
        answer_in(
            &w,
            "acme",
            pam(host),
            "alice",
            "192.0.2.10",
            &txn,
            &code_at(T0),
        )
    };
    let s = from("host2");
    assert!(!is_accept(&s), "{s:?}");
    assert!(
        last_reason(&w).contains("another user, client or source"),
        "{}",
        last_reason(&w)
    );
    let s = from("host1");
    assert!(is_accept(&s), "{s:?} ({})", last_reason(&w));
}

#[test]
fn first_logins_of_two_spellings_at_once_make_one_user() {
    // A directory binds "newuser" and "NEWUSER" alike; the fold check and the creation
    // were two store turns, so two first logins at once made two users, one of them
    // without the other's factors (proved in 60-96 rounds of 300 before the fix).
    let mut w = world();
    w.engine
        .set_first_factor("acme", Arc::new(super::FakeDirectory));
    let w = Arc::new(w);
    for i in 0..100 {
        let names = [format!("newuser{i}"), format!("NEWUSER{i}")];
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = names
            .iter()
            .cloned()
            .map(|name| {
                let (w, barrier) = (w.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    w.engine
                        .start(&request(
                            &name,
                            "192.0.2.10",
                            LoginMode::Challenge,
                            "dir-pass",
                        ))
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tenant = w.engine.store().tenant_by_name("acme").unwrap().unwrap();
        let made = names
            .iter()
            .filter(|n| {
                w.engine
                    .store()
                    .user_by_name(tenant.id, n)
                    .unwrap()
                    .is_some()
            })
            .count();
        assert_eq!(made, 1, "round {i}: both spellings became users");
    }
}

#[test]
fn another_form_of_an_upstream_users_name_is_no_new_user() {
    // An upstream NPS accepts bob as `CORP\bob` and `bob@corp.example` too: each form
    // made a store user of its own, without bob's factors (found by a review).
    struct Nps;
    impl crate::first_factor::FirstFactor for Nps {
        fn name(&self) -> &'static str {
            "radius"
        }
        fn check(
            &self,
            _: &str,
            _: &str,
            _: Option<&User>,
            pw: &[u8],
        ) -> crate::first_factor::FirstFactorResult {
            if pw == b"bob-pass" {
                crate::first_factor::FirstFactorResult::Accepted(Default::default())
            } else {
                crate::first_factor::FirstFactorResult::Rejected("wrong".into())
            }
        }
        fn creates_users(&self) -> bool {
            true
        }
        fn realm_forms_alike(&self) -> bool {
            true
        }
    }
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(Nps));
    let start = |name: &str| {
        w.engine
            .start(&LoginRequest {
                unenrolled: Unenrolled::Allow,
                ..request(name, "192.0.2.10", LoginMode::Challenge, "bob-pass")
            })
            .unwrap()
    };
    // bob's first login makes him; he enrols.
    assert!(is_accept(&start("bob")));
    w.admin
        .enroll_totp(
            "acme",
            "bob",
            Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            6,
            "SHA1",
        )
        .unwrap();
    for form in ["CORP\\bob", "bob@corp.example", "Corp\\BOB"] {
        let s = start(form);
        assert!(matches!(s, Step::Reject { .. }), "{form}: {s:?}");
        assert!(
            last_reason(&w).contains("log in as 'bob'"),
            "{form}: {}",
            last_reason(&w)
        );
        let t = w.engine.store().tenant_by_name("acme").unwrap().unwrap();
        assert!(w.engine.store().user_by_name(t.id, form).unwrap().is_none());
    }
}

/// Alice's answers `(txn, code)`, each sent on its own thread at once: how many were
/// accepted.
fn accepted_at_once(w: &Arc<World>, answers: Vec<(String, String)>) -> usize {
    let handles: Vec<_> = answers
        .into_iter()
        .map(|(t, c)| {
            let w = w.clone();
            std::thread::spawn(move || is_accept(&answer(&w, "alice", "192.0.2.10", &t, &c)))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|a| *a)
        .count()
}

#[test]
fn one_code_raced_over_several_logins_of_a_user_logs_in_once() {
    let w = Arc::new(world());
    let code = code_at(T0);
    let answers = (0..8)
        .map(|_| {
            let t = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
            (t, code.clone())
        })
        .collect();
    assert_eq!(accepted_at_once(&w, answers), 1);
}

#[test]
fn one_step_answered_at_once_is_taken_once() {
    let w = Arc::new(world());
    let t = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let codes = [code_at(T0), code_at(T0 - 30), code_at(T0 + 30)];
    let answers = codes.into_iter().map(|c| (t.clone(), c)).collect();
    assert_eq!(accepted_at_once(&w, answers), 1);
}

// --- Append readings against the source limit -------------------------------------------

fn source_failures(w: &World, src: &str) -> u32 {
    w.engine
        .store()
        .throttle(1, &source_throttle_key("radius", src))
        .unwrap()
        .failures
}

#[test]
fn an_append_request_counts_a_source_failure_for_each_password_it_tried() {
    let w = world();
    add_user_with_password(&w, "carol", "Winter");
    w.admin
        .enroll_totp("acme", "carol", None, 6, "SHA1")
        .unwrap(); // pending: no factor
    let src = "203.0.113.50";
    // One request: readings "Winter123" (6-digit suffix), "Winter1" (8), "Winter" (9),
    // then the whole string. The third reading is carol's password: it was found.
    let s = login_as(&w, src, LoginMode::Append, "carol", "Winter123456789");
    assert!(!is_accept(&s));
    assert!(
        !last_reason(&w).contains("wrong password"),
        "{}",
        last_reason(&w)
    );
    assert_eq!(source_failures(&w, src), 0, "the password was right");
    // A request whose four readings are all wrong counts four failures of the source.
    let _ = login_as(&w, src, LoginMode::Append, "carol", "Summer123456789");
    assert_eq!(last_reason(&w), "wrong password");
    assert_eq!(source_failures(&w, src), 4, "4 passwords tried");
    // The same for a user who does not exist (no enumeration by the count).
    let other = "203.0.113.51";
    let _ = login_as(&w, other, LoginMode::Append, "nobody", "Summer123456789");
    assert_eq!(source_failures(&w, other), 4);
    // A plain password with no code in it is one reading: one failure.
    let third = "203.0.113.52";
    let _ = login_as(&w, third, LoginMode::Append, "carol", "Summer");
    assert_eq!(source_failures(&w, third), 1);
}

#[test]
fn an_append_request_tries_at_most_four_passwords() {
    let w = world();
    // `pw,123456789`: the delimiter reading, the 6-, 8- and 9-digit suffixes and the
    // whole string would be five; the 9-digit suffix reading (`pw,`) is left out.
    let src = "203.0.113.60";
    let _ = login_as(&w, src, LoginMode::Append, "alice", "pw,123456789");
    assert_eq!(source_failures(&w, src), 4);
    // Ten digits after the delimiter (also a recovery code's shape): six readings at most,
    // four tried.
    let src = "203.0.113.61";
    let _ = login_as(&w, src, LoginMode::Append, "alice", "pw,2345678923");
    assert_eq!(source_failures(&w, src), 4);
    // The readings still find a password with the delimiter and a code after it.
    add_user_with_password(&w, "carol", "a,b");
    add_factor_with_secret(
        &w,
        "carol",
        FactorKind::Totp,
        serde_json::to_string(&TotpParams::default()).unwrap(),
    );
    assert!(is_accept(&login_as(
        &w,
        "203.0.113.62",
        LoginMode::Append,
        "carol",
        &format!("a,b,{}", code_at(T0))
    )));
}

#[test]
fn an_append_request_reserves_a_slot_per_password_in_the_source_gate() {
    let w = world();
    let src = "203.0.113.70";
    // 16 wrong on record (of 20): a request of four readings could make it 20, which the
    // bucket holds; with one more in progress elsewhere it would overflow: refused unheard.
    for _ in 0..4 {
        let _ = login_as(&w, src, LoginMode::Append, "alice", "Summer123456789");
    }
    assert_eq!(source_failures(&w, src), 16);
    let key = source_throttle_key("radius", src);
    let held: Vec<_> = (0..2)
        .map(|_| w.engine.checking_sources.enter(key.clone()).0)
        .collect();
    let right = format!("hunter2{}", code_at(T0));
    assert!(!is_accept(&login_as(
        &w,
        src,
        LoginMode::Append,
        "alice",
        "Summer123456789"
    )));
    assert!(
        last_reason(&w).contains("too many at once"),
        "{}",
        last_reason(&w)
    );
    assert_eq!(source_failures(&w, src), 16, "not checked, not counted");
    drop(held);
    // Alone, it is checked.
    assert!(is_accept(&login_as(
        &w,
        src,
        LoginMode::Append,
        "alice",
        &right
    )));
}
