//! Engine behaviour with an in-memory store and a clock that tests move.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;
use crate::admin::{Admin, NewPassword};
use crate::clock::ManualClock;
use crate::store::SqliteStore;
use crate::totp::{decode_base32, generate, TotpParams};

const T0: i64 = 1_800_000_000; // a step boundary (divisible by 30)
const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

struct World {
    clock: Arc<ManualClock>,
    engine: Engine,
    admin: Admin,
}

fn world() -> World {
    world_on(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        EngineSettings::default(),
    )
}

/// An Engine of `settings` on this node's key and a cheap hasher: another node of a
/// [`world_on`] shares its store and clock.
fn node(store: &Arc<dyn Store>, clock: &Arc<ManualClock>, settings: EngineSettings) -> Engine {
    Engine::new(
        store.clone(),
        clock.clone(),
        Arc::new(MasterKey::from_bytes([7; 32])),
        crate::password::cheap(),
        settings,
    )
}

/// [`world`] on `store` with `settings`: tenant acme, alice (password `hunter2`, group
/// vpn-users, TOTP [`SECRET`]).
fn world_on(store: Arc<dyn Store>, settings: EngineSettings) -> World {
    let clock = Arc::new(ManualClock::new(T0 + 5));
    let key = Arc::new(MasterKey::from_bytes([7; 32]));
    let hasher = crate::password::cheap();
    let engine = node(&store, &clock, settings);
    let admin = Admin::new(store, clock.clone(), key, hasher, "Test".into(), 1);
    admin.add_tenant("acme").unwrap();
    admin
        .add_user(
            "acme",
            "alice",
            NewPassword::Plain(Zeroizing::new(b"hunter2".to_vec())),
            None,
            None,
            vec!["vpn-users".into()],
        )
        .unwrap();
    admin
        .enroll_totp("acme", "alice", Some(SECRET), 6, "SHA1")
        .unwrap();
    World {
        clock,
        engine,
        admin,
    }
}

fn code_at(t: i64) -> String {
    generate(&decode_base32(SECRET).unwrap(), &TotpParams::default(), t)
}

fn channel() -> Channel {
    Channel::Radius {
        client: "vpn".into(),
        nas_address: "127.0.0.1".into(),
        nas_identifier: None,
    }
}

fn login(w: &World, mode: LoginMode, user: &str, credential: &str) -> Step {
    login_as(w, "192.0.2.10", mode, user, credential)
}

fn login_as(w: &World, source: &str, mode: LoginMode, user: &str, credential: &str) -> Step {
    w.engine
        .start(&request(user, source, mode, credential))
        .unwrap()
}

/// A first request of `user` in tenant acme over [`channel`] (prompt `Code:`, unenrolled
/// users refused, the source limited); tests change a field with `..request(...)`.
fn request(user: &str, source: &str, mode: LoginMode, credential: &str) -> LoginRequest {
    LoginRequest {
        tenant: "acme".into(),
        channel: channel(),
        source: source.into(),
        mode,
        username: user.into(),
        credential: Zeroizing::new(credential.as_bytes().to_vec()),
        delimiter: ",".into(),
        prompt: "Code:".into(),
        unenrolled: Unenrolled::Deny,
        source_limited: true,
    }
}

fn answer(w: &World, user: &str, source: &str, txn: &str, code: &str) -> Step {
    answer_in(w, "acme", channel(), user, source, txn, code)
}

/// [`answer`] in `tenant` over `channel`.
fn answer_in(
    w: &World,
    tenant: &str,
    channel: Channel,
    user: &str,
    source: &str,
    txn: &str,
    code: &str,
) -> Step {
    w.engine
        .answer(&AnswerRequest {
            tenant: tenant.into(),
            channel,
            source: source.into(),
            username: user.into(),
            txn: txn.into(),
            answer: Zeroizing::new(code.as_bytes().to_vec()),
            prompt: "Code:".into(),
            source_limited: true,
        })
        .unwrap()
}

fn append(w: &World, pw_and_code: &str) -> Step {
    login(w, LoginMode::Append, "alice", pw_and_code)
}

fn is_accept(s: &Step) -> bool {
    matches!(s, Step::Accept { .. })
}

fn prompt_txn(s: &Step) -> String {
    match s {
        Step::Prompt { txn, .. } => txn.clone(),
        other => panic!("expected a prompt, got {other:?}"),
    }
}

fn last_reason(w: &World) -> String {
    let records = w.admin.audit(&AuditFilter::default()).unwrap();
    records.last().unwrap().reason.clone()
}

#[test]
fn append_mode_accepts_password_and_current_code() {
    let w = world();
    let s = append(&w, &format!("hunter2{}", code_at(T0)));
    match s {
        Step::Accept {
            factors_used,
            groups,
            ..
        } => {
            assert_eq!(factors_used, ["password", "totp"]);
            assert_eq!(groups, ["vpn-users"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn code_one_step_old_or_new_is_accepted_two_steps_is_not() {
    let w = world();
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 - 30))
    )));
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 + 30))
    )));
    assert!(!is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 - 60))
    )));
    assert!(!is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 + 60))
    )));
}

#[test]
fn replayed_code_is_refused_even_after_the_clock_moves() {
    let w = world();
    let code = code_at(T0);
    assert!(is_accept(&append(&w, &format!("hunter2{code}"))));
    assert!(!is_accept(&append(&w, &format!("hunter2{code}"))));
    assert!(last_reason(&w).contains("replayed"));
    w.clock.advance(29); // still inside the window of that step
    assert!(!is_accept(&append(&w, &format!("hunter2{code}"))));
}

/// The factor's last use is written at the first login and then once an hour at most
/// ([`crate::model::LAST_USE_RESOLUTION`]); every login still spends its code.
#[test]
fn the_last_use_is_kept_to_the_hour_and_every_code_is_still_spent() {
    let w = world();
    let last_used = || w.admin.list_factors("acme", "alice").unwrap()[0].last_used_at;
    assert_eq!(last_used(), None);
    let start = w.clock.now();
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(start))
    )));
    assert_eq!(last_used(), Some(start), "the first use is written");

    w.clock.advance(60);
    let code = code_at(w.clock.now());
    assert!(is_accept(&append(&w, &format!("hunter2{code}"))));
    assert_eq!(last_used(), Some(start), "a use within the hour is not");
    assert!(
        !is_accept(&append(&w, &format!("hunter2{code}"))),
        "that code was spent all the same"
    );
    assert!(last_reason(&w).contains("replayed"));

    w.clock.set(start + crate::model::LAST_USE_RESOLUTION);
    let now = w.clock.now();
    assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
    assert_eq!(last_used(), Some(now), "an hour on, it is written again");

    w.clock.set(start + 30);
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(start + 30))
    )));
    assert_eq!(
        last_used(),
        Some(start + 30),
        "a clock set back writes it at once"
    );
}

#[test]
fn wrong_password_and_unknown_user_give_the_same_reject() {
    let w = world();
    let code = code_at(T0);
    let a = append(&w, &format!("hunter3{code}"));
    let b = login(&w, LoginMode::Append, "mallory", &format!("hunter2{code}"));
    assert_eq!(a, b);
    assert_eq!(
        a,
        Step::Reject {
            user_message: GENERIC_FAILURE.into()
        }
    );
    let records = w.admin.audit(&AuditFilter::default()).unwrap();
    assert_eq!(records[0].reason, "wrong password");
    assert_eq!(records[1].reason, "unknown user");
}

#[test]
fn challenge_round_trip_accepts_and_state_is_single_use() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let code = code_at(T0);
    assert!(is_accept(&answer(&w, "alice", "192.0.2.10", &txn, &code)));
    // The same State again: the transaction is gone.
    let again = answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0 + 30));
    assert!(!is_accept(&again));
    assert!(last_reason(&w).contains("unknown, expired or already answered"));
}

#[test]
fn wrong_code_reprompts_with_a_new_step_then_rejects_after_max_attempts() {
    let w = world();
    let t1 = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let t2 = prompt_txn(&answer(&w, "alice", "192.0.2.10", &t1, "000000"));
    assert_ne!(t1, t2);
    // The old step cannot be answered any more.
    assert!(!is_accept(&answer(
        &w,
        "alice",
        "192.0.2.10",
        &t1,
        &code_at(T0)
    )));
}

#[test]
fn an_empty_answer_asks_again_without_counting_a_failure() {
    let w = world();
    let alice = w.engine.store().user_by_name(1, "alice").unwrap().unwrap();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let again = answer(&w, "alice", "192.0.2.10", &txn, "  ");
    let Step::Prompt {
        text, txn: next, ..
    } = &again
    else {
        panic!("{again:?}")
    };
    assert!(text.starts_with("No code entered."), "{text}");
    let failures = |w: &World| {
        w.engine
            .store()
            .throttle(1, &second_factor_key(&alice))
            .unwrap()
            .failures
    };
    assert_eq!(failures(&w), 0, "an empty answer is not a wrong code");
    // It still uses one of the login's attempts: empty answers cannot hold a login open.
    let next = prompt_txn(&answer(&w, "alice", "192.0.2.10", next, ""));
    assert!(!is_accept(&answer(&w, "alice", "192.0.2.10", &next, "")));
    assert!(
        last_reason(&w).contains("login ended"),
        "{}",
        last_reason(&w)
    );
    assert_eq!(failures(&w), 0);
}

#[test]
fn three_wrong_answers_end_the_login() {
    let w = world();
    let mut t = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &t, "000001"));
    t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &t, "000002"));
    let last = answer(&w, "alice", "192.0.2.10", &t, "000003");
    assert!(matches!(last, Step::Reject { .. }));
    assert!(last_reason(&w).contains("3 of 3"));
}

#[test]
fn transaction_expires_after_its_ttl() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    w.clock.advance(121);
    let code = code_at(w.clock.now());
    assert!(!is_accept(&answer(&w, "alice", "192.0.2.10", &txn, &code)));
}

#[test]
fn transaction_is_bound_to_user_and_source() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    assert!(!is_accept(&answer(
        &w,
        "alice",
        "198.51.100.1",
        &txn,
        &code_at(T0)
    )));
    assert!(last_reason(&w).contains("another user, client or source"));
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    assert!(!is_accept(&answer(
        &w,
        "bob",
        "192.0.2.10",
        &txn,
        &code_at(T0)
    )));
}

#[test]
fn a_used_code_does_not_confirm_a_factor() {
    // The replay record of a confirmation was written and its answer ignored: a code used
    // already (two confirmations racing with one code, or one replayed) confirmed too.
    let w = world();
    add_user_with_pw(&w, "bob");
    let enrolled = w.admin.enroll_totp("acme", "bob", None, 6, "SHA1").unwrap();
    let secret = decode_base32(&enrolled.secret).unwrap();
    let now = w.clock.now();
    let code = generate(&secret, &TotpParams::default(), now);
    let step = now / 30;
    assert!(w
        .engine
        .store()
        .record_otp_use(
            &enrolled.factor_id,
            step,
            crate::totp::replay_expiry(step as u64, 30)
        )
        .unwrap());
    let e = w
        .admin
        .confirm_factor("acme", "bob", &enrolled.factor_id, &code)
        .unwrap_err();
    assert!(matches!(e, crate::admin::AdminError::WrongCode(_)), "{e}");
    assert_eq!(
        w.admin.list_factors("acme", "bob").unwrap()[0].state,
        "pending"
    );
}

#[test]
fn pending_factor_cannot_be_used() {
    let w = world();
    add_user_with_pw(&w, "bob");
    let enrolled = w.admin.enroll_totp("acme", "bob", None, 6, "SHA1").unwrap();
    assert_eq!(enrolled.state, "pending");
    let secret = decode_base32(&enrolled.secret).unwrap();
    let code = generate(&secret, &TotpParams::default(), T0);
    let s = login(&w, LoginMode::Append, "bob", &format!("pw{code}"));
    assert!(!is_accept(&s));
    assert!(last_reason(&w).contains("no confirmed second factor"));
    assert!(matches!(
        login(&w, LoginMode::Challenge, "bob", "pw"),
        Step::Reject { .. }
    ));
    // Confirming with the code makes it usable, but that code itself is spent.
    w.admin
        .confirm_factor("acme", "bob", &enrolled.factor_id, &code)
        .unwrap();
    assert!(!is_accept(&login(
        &w,
        LoginMode::Append,
        "bob",
        &format!("pw{code}")
    )));
    let next = generate(&secret, &TotpParams::default(), T0 + 30);
    assert!(is_accept(&login(
        &w,
        LoginMode::Append,
        "bob",
        &format!("pw{next}")
    )));
}

#[test]
fn recovery_code_works_once_in_both_modes() {
    let w = world();
    let codes = w.admin.generate_recovery_codes("acme", "alice").unwrap();
    assert_eq!(codes.len(), 10);
    assert!(is_accept(&append(&w, &format!("hunter2{}", codes[0]))));
    assert!(!is_accept(&append(&w, &format!("hunter2{}", codes[0]))));
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    let s = answer(&w, "alice", "192.0.2.10", &txn, &codes[1].to_uppercase());
    match s {
        Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "recovery"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn throttle_delays_grow_then_lock_until_unlock() {
    let w = world();
    for _ in 0..5 {
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    // Fifth failure: a 2 s delay is owed; even the right code is refused now.
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    assert!(last_reason(&w).contains("throttled"), "{}", last_reason(&w));
    w.clock.advance(2);
    assert!(!is_accept(&append(&w, "hunter2000000"))); // sixth failure -> 4 s
    w.clock.advance(3);
    assert!(last_reason(&w).contains("wrong code"));
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    assert!(last_reason(&w).contains("throttled"));
    // Keep failing (waiting out each delay) up to the lock.
    for _ in 6..10 {
        w.clock.advance(300);
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    w.clock.advance(300);
    let now = w.clock.now();
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
    assert!(last_reason(&w).contains("locked"), "{}", last_reason(&w));
    w.admin.unlock("acme", "alice").unwrap();
    assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
}

#[test]
fn codes_checked_at_once_count_toward_the_lock() {
    // Guesses sent together all read the failures on record before any is counted: the
    // checks in progress count too, so no more than lock_after (10) are ever in play.
    let w = world();
    let alice = w.engine.store().user_by_name(1, "alice").unwrap().unwrap();
    for _ in 0..3 {
        assert!(!is_accept(&append(&w, "hunter2000000")));
        w.clock.advance(1);
    }
    // 3 failures on record and 7 codes of alice's being checked right now: together they
    // reach the lock, so this one (the right code, even) is refused meanwhile.
    let mut held: Vec<_> = (0..7)
        .map(|_| w.engine.checking.enter(alice.id).0)
        .collect();
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    assert!(
        last_reason(&w).contains("too many at once"),
        "{}",
        last_reason(&w)
    );
    // One of them done: 3 + 6 is below the lock, and the code is checked.
    held.pop();
    assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    drop(held);
}

#[test]
fn lock_runs_out_after_the_configured_time() {
    let w = world();
    for _ in 0..10 {
        w.clock.advance(600);
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    w.clock.advance(60);
    let now = w.clock.now();
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
    assert!(last_reason(&w).contains("locked"));
    w.clock.advance(30 * 60);
    let now = w.clock.now();
    assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
}

#[test]
fn user_show_reports_the_throttle_that_a_login_meets_and_none_otherwise() {
    let w = world();
    let shown = || w.admin.show_user("acme", "alice").unwrap().throttle;
    assert_eq!(shown(), None);
    for _ in 0..4 {
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    // Four failures: below throttle_after (5), the next code is checked.
    assert_eq!(shown(), None);
    assert!(!is_accept(&append(&w, "hunter2000000")));
    let fifth = w.clock.now();
    assert_eq!(
        shown(),
        Some(ThrottleInForce::Delayed {
            failures: 5,
            next_try_at: fifth + 2
        })
    );
    w.clock.advance(1);
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    assert!(
        last_reason(&w).contains("next try allowed in 1 s"),
        "{}",
        last_reason(&w)
    );
    // The delay is over: nothing in force, and the code is checked (wrong: 4 s now).
    w.clock.advance(1);
    assert_eq!(shown(), None);
    assert!(!is_accept(&append(&w, "hunter2000000")));
    assert!(
        last_reason(&w).contains("wrong code"),
        "{}",
        last_reason(&w)
    );
    assert!(matches!(
        shown(),
        Some(ThrottleInForce::Delayed { failures: 6, next_try_at }) if next_try_at == w.clock.now() + 4
    ));
    for _ in 6..10 {
        w.clock.advance(300);
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    let locked_at = w.clock.now();
    let until = locked_at + 30 * 60;
    assert_eq!(
        shown(),
        Some(ThrottleInForce::Locked {
            failures: 10,
            until
        })
    );
    let d = w.admin.show_user("acme", "alice").unwrap();
    assert_eq!(d.locked_until, Some(until));
    w.clock.advance(30 * 60 - 1);
    assert!(!is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(w.clock.now()))
    )));
    assert!(
        last_reason(&w).contains("locked for 1 s more"),
        "{}",
        last_reason(&w)
    );
    // The lock ran out (the row still holds it until the next login): none in force, and
    // the next login starts afresh.
    w.clock.advance(1);
    assert_eq!(shown(), None);
    assert_eq!(
        w.admin.show_user("acme", "alice").unwrap().locked_until,
        None
    );
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(w.clock.now()))
    )));
}

#[test]
fn a_locked_user_is_refused_alike_with_a_right_or_a_wrong_password() {
    let w = world();
    for _ in 0..10 {
        w.clock.advance(600);
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    w.clock.advance(60);
    let code = code_at(w.clock.now());
    let mut seen = Vec::new();
    for (mode, credential) in [
        (LoginMode::Append, format!("hunter2{code}")),
        (LoginMode::Append, format!("hunter3{code}")),
        (LoginMode::Challenge, "hunter2".to_string()),
        (LoginMode::Challenge, "hunter3".to_string()),
    ] {
        let step = login(&w, mode, "alice", &credential);
        assert!(
            last_reason(&w).contains("locked")
                && last_reason(&w).contains("refused whatever the password"),
            "{mode:?} {credential}: {}",
            last_reason(&w)
        );
        seen.push(step);
    }
    // The same answer whether or not the password was right: no oracle for a guesser.
    let Step::Reject { user_message } = &seen[0] else {
        panic!("{:?}", seen[0])
    };
    assert!(user_message.contains("locked"), "{user_message}");
    for step in &seen {
        assert_eq!(step, &seen[0]);
    }
}

#[test]
fn a_good_code_resets_the_failure_count() {
    let w = world();
    for _ in 0..4 {
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    for _ in 0..4 {
        assert!(!is_accept(&append(&w, "hunter2000000")));
    }
    assert!(is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 + 30))
    )));
}

#[test]
fn disabled_user_is_rejected_with_a_clear_audit_reason() {
    let w = world();
    w.admin.set_disabled("acme", "alice", true).unwrap();
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
    assert_eq!(last_reason(&w), "user is disabled");
}

#[test]
fn audit_never_holds_the_password_or_code() {
    let w = world();
    let code = code_at(T0);
    append(&w, &format!("hunter2{code}"));
    append(&w, &format!("hunter3{code}"));
    let dump = format!("{:?}", w.admin.audit(&AuditFilter::default()).unwrap());
    assert!(!dump.contains("hunter"), "{dump}");
    assert!(!dump.contains(&code), "{dump}");
}

fn login_from(w: &World, source: &str, mode: LoginMode, credential: &str) -> Step {
    login_as(w, source, mode, "alice", credential)
}

#[test]
fn wrong_passwords_from_one_address_block_it_for_the_window() {
    let w = world();
    let code = code_at(T0);
    // 20 wrong passwords from one address are answered as wrong passwords, in any mode.
    for i in 0..20 {
        let mode = [LoginMode::Challenge, LoginMode::Append][i % 2];
        assert!(!is_accept(&login_from(&w, "203.0.113.7", mode, "guess")));
        assert_eq!(last_reason(&w), "wrong password");
    }
    // The 21st fills the bucket: from now on the address is refused unheard, even with
    // the right password and code.
    login_from(&w, "203.0.113.7", LoginMode::Append, "guess");
    let right = format!("hunter2{code}");
    let step = login_from(&w, "203.0.113.7", LoginMode::Append, &right);
    assert!(
        matches!(&step, Step::Reject { user_message } if user_message.contains("your address")),
        "{step:?}"
    );
    assert!(
        last_reason(&w).contains("source 203.0.113.7 is blocked"),
        "{}",
        last_reason(&w)
    );
    // Other addresses and otp-only logins (no password) are not affected.
    assert!(is_accept(&login_from(
        &w,
        "198.51.100.1",
        LoginMode::Append,
        &right
    )));
    // The block lasts the window (10 min), then the address starts afresh.
    w.clock.advance(9 * 60);
    assert!(!is_accept(&login_from(
        &w,
        "203.0.113.7",
        LoginMode::Append,
        &format!("hunter2{}", code_at(w.clock.now()))
    )));
    w.clock.advance(61);
    assert!(is_accept(&login_from(
        &w,
        "203.0.113.7",
        LoginMode::Append,
        &format!("hunter2{}", code_at(w.clock.now()))
    )));
}

#[test]
fn passwords_checked_at_once_from_one_address_count_toward_its_block() {
    let w = world();
    for _ in 0..15 {
        login_from(&w, "203.0.113.9", LoginMode::Challenge, "guess");
    }
    // 15 wrong on record and 6 passwords from there being checked right now: if all were
    // wrong the bucket would overflow, so this one waits its turn, unheard.
    let key = source_throttle_key("radius", "203.0.113.9");
    let mut held: Vec<_> = (0..6)
        .map(|_| w.engine.checking_sources.enter(key.clone()).0)
        .collect();
    let right = format!("hunter2{}", code_at(T0));
    assert!(!is_accept(&login_from(
        &w,
        "203.0.113.9",
        LoginMode::Append,
        &right
    )));
    assert!(
        last_reason(&w).contains("too many at once"),
        "{}",
        last_reason(&w)
    );
    // This login may check two passwords (the reading `hunter2` + code, then the whole
    // string): with 15 on record, four others may be in progress, not five.
    held.pop();
    assert!(!is_accept(&login_from(
        &w,
        "203.0.113.9",
        LoginMode::Append,
        &right
    )));
    held.pop();
    assert!(is_accept(&login_from(
        &w,
        "203.0.113.9",
        LoginMode::Append,
        &right
    )));
    drop(held);
}

#[test]
fn unblock_takes_an_address_not_free_text_for_the_audit() {
    let w = world();
    for ok in [
        "192.0.2.10",
        "2001:db8::7",
        "00-11-22-33-44-55",
        "+15550100",
    ] {
        assert!(w.admin.unblock_source("acme", ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "approved by CISO",
        "192.0.2.10\nforged line",
        "a\u{202e}b",
    ] {
        let e = w.admin.unblock_source("acme", bad).unwrap_err();
        assert!(
            matches!(e, crate::admin::AdminError::Invalid { what: "source", .. }),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn wrong_passwords_spread_out_never_block_and_a_nas_address_is_never_blocked() {
    let w = world();
    // One wrong password every 30 s is the rate the bucket drains (20 per 10 min).
    for _ in 0..60 {
        login_from(&w, "203.0.113.8", LoginMode::Challenge, "guess");
        assert_eq!(last_reason(&w), "wrong password");
        w.clock.advance(30);
    }
    // A NAS that sends no Calling-Station-Id: the source is its own address, shared by
    // all its users, and never blocked (channel(): nas_address 127.0.0.1).
    for _ in 0..30 {
        login_from(&w, "127.0.0.1", LoginMode::Challenge, "guess");
        assert_eq!(last_reason(&w), "wrong password");
    }
    let now = w.clock.now();
    assert!(is_accept(&login_from(
        &w,
        "127.0.0.1",
        LoginMode::Append,
        &format!("hunter2{}", code_at(now))
    )));
}

/// A user of tenant acme with password "pw" and no factor.
fn add_user_with_pw(w: &World, name: &str) {
    add_user_with_password(w, name, "pw");
}

/// A user of tenant acme with `password` and no factor.
fn add_user_with_password(w: &World, name: &str, password: &str) {
    w.admin
        .add_user(
            "acme",
            name,
            NewPassword::Plain(Zeroizing::new(password.as_bytes().to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
}

fn login_with(
    w: &World,
    mode: LoginMode,
    user: &str,
    credential: &str,
    unenrolled: Unenrolled,
) -> Step {
    w.engine
        .start(&LoginRequest {
            tenant: "acme".into(),
            channel: channel(),
            source: "192.0.2.10".into(),
            mode,
            username: user.into(),
            credential: Zeroizing::new(credential.as_bytes().to_vec()),
            delimiter: ",".into(),
            prompt: "Code:".into(),
            unenrolled,
            source_limited: true,
        })
        .unwrap()
}

#[test]
fn otp_only_accepts_the_code_alone_and_audits_a_delegated_first_factor() {
    let w = world();
    let s = login(&w, LoginMode::OtpOnly, "alice", &code_at(T0));
    assert_eq!(
        s,
        Step::Accept {
            factors_used: vec!["delegated".into(), "totp".into()],
            groups: vec!["vpn-users".into()],
            reply_attributes: vec![],
        }
    );
    let records = w.admin.audit(&AuditFilter::default()).unwrap();
    assert_eq!(records[0].factors, ["delegated", "totp"]);
    assert!(
        !is_accept(&login(&w, LoginMode::OtpOnly, "alice", &code_at(T0))),
        "replay"
    );
    assert!(!is_accept(&login(
        &w,
        LoginMode::OtpOnly,
        "nobody",
        &code_at(T0 + 30)
    )));
}

#[test]
fn otp_only_without_a_code_prompts_for_one() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::OtpOnly, "alice", ""));
    match answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0)) {
        Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["delegated", "totp"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unenrolled_users_are_denied_by_default_and_allowed_only_when_configured() {
    let w = world();
    add_user_with_pw(&w, "carol");
    assert!(!is_accept(&login_with(
        &w,
        LoginMode::Challenge,
        "carol",
        "pw",
        Unenrolled::Deny
    )));
    let s = login_with(&w, LoginMode::Challenge, "carol", "pw", Unenrolled::Allow);
    assert_eq!(
        s,
        Step::Accept {
            factors_used: vec!["password".into()],
            groups: vec![],
            reply_attributes: vec![],
        }
    );
    assert!(last_reason(&w).contains("unenrolled = allow"));
    // Allow never skips the password.
    assert!(!is_accept(&login_with(
        &w,
        LoginMode::Challenge,
        "carol",
        "wrong",
        Unenrolled::Allow
    )));
    // A user who has a factor must still use it.
    assert!(!is_accept(&login_with(
        &w,
        LoginMode::Append,
        "alice",
        "hunter2000000",
        Unenrolled::Allow
    )));
}

#[test]
fn a_user_whose_factors_cannot_be_used_is_refused_not_treated_as_unenrolled() {
    // carol enrolled SMS; the tenant has no SMS sender (not configured, or broken).
    let w = world();
    add_user_with_pw(&w, "carol");
    let carol = w.engine.store().user_by_name(1, "carol").unwrap().unwrap();
    w.engine
        .store()
        .add_factor(&Factor {
            id: "sms-carol".into(),
            user_id: carol.id,
            kind: FactorKind::Sms,
            state: FactorState::Confirmed,
            sealed_secret: vec![],
            params: r#"{"phone":"+15550100"}"#.into(),
            created_at: T0,
            confirmed_at: Some(T0),
            last_used_at: None,
        })
        .unwrap();
    for mode in [LoginMode::Challenge, LoginMode::Append] {
        let s = login_with(&w, mode, "carol", "pw", Unenrolled::Allow);
        assert!(
            !is_accept(&s),
            "{mode:?}: the password alone let carol in: {s:?}"
        );
        let reason = last_reason(&w);
        assert!(reason.contains("sms"), "{mode:?}: {reason}");
        assert!(!reason.contains("unenrolled"), "{mode:?}: {reason}");
    }
}

#[test]
fn a_tenant_backend_replaces_local_passwords() {
    use crate::first_factor::{DirectoryInfo, FirstFactor, FirstFactorResult};
    struct Directory;
    impl FirstFactor for Directory {
        fn name(&self) -> &'static str {
            "test-directory"
        }
        fn check(&self, _: &str, _: &str, _: Option<&User>, pw: &[u8]) -> FirstFactorResult {
            if pw == b"dir-pass" {
                FirstFactorResult::Accepted(DirectoryInfo::default())
            } else {
                FirstFactorResult::Unavailable("directory down".into())
            }
        }
    }
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(Directory));
    assert!(is_accept(&append(&w, &format!("dir-pass{}", code_at(T0)))));
    assert!(!is_accept(&append(
        &w,
        &format!("hunter2{}", code_at(T0 + 30))
    )));
    assert!(last_reason(&w).contains("first factor (test-directory) unavailable: directory down"));
}

fn hotp_code(counter: u64) -> String {
    crate::hotp::generate(
        &decode_base32(SECRET).unwrap(),
        crate::totp::TotpAlgorithm::SHA1,
        6,
        counter,
    )
}

fn world_with_hotp_user() -> World {
    let w = world();
    add_user_with_pw(&w, "hank");
    w.admin
        .enroll_hotp("acme", "hank", Some(SECRET), 6, "SHA1", 0)
        .unwrap();
    w
}

#[test]
fn hotp_code_is_accepted_once_and_the_counter_moves_past_it() {
    let w = world_with_hotp_user();
    let hank = |c: &str| login(&w, LoginMode::Append, "hank", &format!("pw{c}"));
    // A token pressed three times without logging in: still within the look-ahead.
    assert!(is_accept(&hank(&hotp_code(3))));
    assert!(!is_accept(&hank(&hotp_code(3))), "same code again");
    assert!(!is_accept(&hank(&hotp_code(1))), "an older code");
    assert!(is_accept(&hank(&hotp_code(4))));
    let records = w.admin.audit(&AuditFilter::default()).unwrap();
    assert_eq!(records[0].factors, ["password", "hotp"]);
}

/// HOTP as TOTP: the last use written to the hour, the counter moved at every use.
#[test]
fn hotp_writes_the_last_use_to_the_hour_and_moves_the_counter_every_time() {
    let w = world_with_hotp_user();
    let hank = |c: &str| login(&w, LoginMode::Append, "hank", &format!("pw{c}"));
    let last_used = || w.admin.list_factors("acme", "hank").unwrap()[0].last_used_at;
    let start = w.clock.now();
    assert!(is_accept(&hank(&hotp_code(0))));
    assert_eq!(last_used(), Some(start));
    w.clock.advance(60);
    assert!(is_accept(&hank(&hotp_code(1))));
    assert_eq!(
        last_used(),
        Some(start),
        "a use within the hour is not written"
    );
    assert!(
        !is_accept(&hank(&hotp_code(1))),
        "the counter moved all the same"
    );
    w.clock.advance(crate::model::LAST_USE_RESOLUTION);
    assert!(is_accept(&hank(&hotp_code(2))));
    assert_eq!(last_used(), Some(w.clock.now()));
}

#[test]
fn hotp_beyond_the_look_ahead_needs_a_resync() {
    let w = world_with_hotp_user();
    let hank = |c: &str| login(&w, LoginMode::Append, "hank", &format!("pw{c}"));
    assert!(!is_accept(&hank(&hotp_code(50))));
    let f = &w.admin.list_factors("acme", "hank").unwrap()[0];
    assert!(w
        .admin
        .resync_hotp("acme", "hank", &f.factor_id, &hotp_code(50), &hotp_code(52))
        .is_err());
    assert_eq!(
        w.admin
            .resync_hotp("acme", "hank", &f.factor_id, &hotp_code(50), &hotp_code(51))
            .unwrap(),
        52
    );
    assert!(!is_accept(&hank(&hotp_code(51))));
    assert!(is_accept(&hank(&hotp_code(52))));
}

#[test]
fn bypass_code_works_for_its_uses_until_it_expires() {
    let w = world();
    let b = w.admin.issue_bypass_code("acme", "alice", 2, 3600).unwrap();
    assert_eq!(b.code.len(), 9);
    assert!(is_accept(&append(&w, &format!("hunter2{}", b.code))));
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    match answer(&w, "alice", "192.0.2.10", &txn, &b.code) {
        Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "bypass"]),
        other => panic!("{other:?}"),
    }
    assert!(
        !is_accept(&append(&w, &format!("hunter2{}", b.code))),
        "uses spent"
    );
    let late = w.admin.issue_bypass_code("acme", "alice", 1, 60).unwrap();
    w.clock.advance(61);
    assert!(
        !is_accept(&append(&w, &format!("hunter2{}", late.code))),
        "expired"
    );
}

#[test]
fn a_bypass_code_lets_a_user_without_a_device_in() {
    let w = world();
    add_user_with_pw(&w, "lost");
    assert!(!is_accept(&login(&w, LoginMode::Challenge, "lost", "pw")));
    let b = w.admin.issue_bypass_code("acme", "lost", 1, 3600).unwrap();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "lost", "pw"));
    assert!(is_accept(&answer(&w, "lost", "192.0.2.10", &txn, &b.code)));
}

#[test]
fn append_password_containing_the_delimiter_works() {
    let w = world();
    w.admin
        .add_user(
            "acme",
            "carol",
            NewPassword::Plain(Zeroizing::new(b"a,b".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
    w.admin
        .enroll_totp("acme", "carol", Some(SECRET), 6, "SHA1")
        .unwrap();
    assert!(is_accept(&login(
        &w,
        LoginMode::Append,
        "carol",
        &format!("a,b,{}", code_at(T0))
    )));
}

#[test]
fn append_whole_string_as_password_then_challenge_for_the_code() {
    let w = world();
    w.admin
        .add_user(
            "acme",
            "dave",
            NewPassword::Plain(Zeroizing::new(b"pw,123456".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
    w.admin
        .enroll_totp("acme", "dave", Some(SECRET), 6, "SHA1")
        .unwrap();
    // The split (pw / 123456) fails the first factor; the whole string is the password.
    let txn = prompt_txn(&login(&w, LoginMode::Append, "dave", "pw,123456"));
    assert!(is_accept(&answer(
        &w,
        "dave",
        "192.0.2.10",
        &txn,
        &code_at(T0)
    )));
    // A password alone (no code typed) is also asked for the code.
    let txn = prompt_txn(&append(&w, "hunter2"));
    assert!(is_accept(&answer(
        &w,
        "alice",
        "192.0.2.10",
        &txn,
        &code_at(T0 + 30)
    )));
    // Wrong whole string: a plain reject.
    assert!(matches!(append(&w, "hunter3"), Step::Reject { .. }));
}

#[test]
fn append_factor_word_asks_for_a_code_until_push_and_sms_exist() {
    let w = world();
    for word in ["push", "sms"] {
        let txn = prompt_txn(&append(&w, &format!("hunter2,{word}")));
        assert!(!txn.is_empty());
    }
    assert!(matches!(append(&w, "hunter3,push"), Step::Reject { .. }));
}

mod sms {
    use std::sync::Mutex;

    use super::*;
    use crate::delivery::{CodeSender, DeliveryError, DeliverySettings};

    #[derive(Default)]
    struct Phone {
        inbox: Mutex<Vec<(String, String)>>,
        down: std::sync::atomic::AtomicBool,
        /// Takes the message, then times out (the answer never comes).
        unconfirmed: std::sync::atomic::AtomicBool,
        email: bool,
    }

    impl CodeSender for Phone {
        fn channel(&self) -> &'static str {
            if self.email {
                "email"
            } else {
                "sms"
            }
        }
        fn provider(&self) -> &str {
            "test"
        }
        fn send(&self, to: &str, _code: &str, message: &str) -> Result<(), DeliveryError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(DeliveryError::Unavailable("HTTP 503".into()));
            }
            self.inbox.lock().unwrap().push((to.into(), message.into()));
            if self.unconfirmed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(DeliveryError::Uncertain("timed out".into()));
            }
            Ok(())
        }
    }

    impl Phone {
        fn last_code(&self) -> String {
            let inbox = self.inbox.lock().unwrap();
            let (_, msg) = inbox.last().expect("a message was sent");
            msg.chars().filter(|c| c.is_ascii_digit()).collect()
        }
        fn count(&self) -> usize {
            self.inbox.lock().unwrap().len()
        }
    }

    /// "sid" has only an SMS factor (confirmed through a sent code); alice has TOTP + SMS.
    fn sms_world() -> (World, Arc<Phone>) {
        let mut w = world();
        let phone = Arc::new(Phone::default());
        w.engine
            .set_sender("acme", phone.clone(), DeliverySettings::default());
        w.admin
            .add_user(
                "acme",
                "sid",
                NewPassword::Plain(Zeroizing::new(b"pw".to_vec())),
                None,
                Some("+4915112345678".into()),
                vec![],
            )
            .unwrap();
        for user in ["sid", "alice"] {
            let f = w
                .admin
                .enroll_sms("acme", user, Some("+4915112345678"))
                .unwrap();
            assert!(matches!(
                w.engine
                    .send_enrolment_code("acme", user, &f.factor_id)
                    .unwrap(),
                SendOutcome::Sent { .. }
            ));
            w.admin
                .confirm_factor("acme", user, &f.factor_id, &phone.last_code())
                .unwrap();
            w.clock.advance(31);
        }
        (w, phone)
    }

    /// A code-only login that must send a text cannot be decided in a batch: it is handed
    /// back untouched (nothing sent, nothing kept), and runs normally afterwards.
    #[test]
    fn a_batch_hands_back_a_login_that_must_send_a_text() {
        let (w, phone) = sms_world();
        let engine = Arc::new(w.engine);
        let before = phone.count();
        let batcher = LoginBatcher::start(engine.clone()).unwrap().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let req = super::batch::code_login("sid", "sms");
        assert!(engine.is_code_only(&req));
        batcher.submit(req, Box::new(move |b| tx.send(b).unwrap()));
        let Batched::Declined(req) = rx.recv().unwrap() else {
            panic!("a login that sends a text was decided in a batch");
        };
        assert_eq!(phone.count(), before, "the batch sent a text");
        assert_eq!(req.username, "sid");
        let step = engine.start(&req).unwrap();
        assert!(
            matches!(&step, Step::Reject { user_message } if user_message.contains("A code was sent")),
            "{step:?}"
        );
        assert_eq!(phone.count(), before + 1);
    }

    #[test]
    fn sms_only_user_gets_a_text_at_once_and_its_code_works_once() {
        let (w, phone) = sms_world();
        let before = phone.count();
        let p = login(&w, LoginMode::Challenge, "sid", "pw");
        assert_eq!(phone.count(), before + 1);
        match &p {
            Step::Prompt { text, .. } => assert!(text.contains("••••5678"), "{text}"),
            other => panic!("{other:?}"),
        }
        let code = phone.last_code();
        match answer(&w, "sid", "192.0.2.10", &prompt_txn(&p), &code) {
            Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "sms"]),
            other => panic!("{other:?}"),
        }
        assert!(
            !is_accept(&login(&w, LoginMode::Append, "sid", &format!("pw{code}"))),
            "code reused"
        );
    }

    #[test]
    fn typing_sms_at_the_prompt_sends_a_code_without_costing_an_attempt() {
        let (w, phone) = sms_world();
        let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
        match &p {
            // App and SMS: a menu, which a code also answers.
            Step::Prompt {
                expects, choices, ..
            } => {
                assert_eq!(*expects, Expects::Choice);
                let ids: Vec<&str> = choices.iter().map(|c| c.id.as_str()).collect();
                assert_eq!(ids, ["app", "sms"]);
                assert!(choices[1].label.contains("••••5678"), "{choices:?}");
            }
            other => panic!("{other:?}"),
        }
        let before = phone.count();
        let t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "SMS"));
        assert_eq!(phone.count(), before + 1);
        let t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &t, "000000"));
        let t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &t, "000001"));
        assert!(is_accept(&answer(
            &w,
            "alice",
            "192.0.2.10",
            &t,
            &phone.last_code()
        )));
    }

    #[test]
    fn resend_waits_30_seconds_and_the_hourly_quota_holds() {
        let (w, phone) = sms_world();
        let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
        let t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "sms"));
        let n = phone.count();
        let p = answer(&w, "alice", "192.0.2.10", &t, "sms");
        assert_eq!(phone.count(), n, "too soon");
        assert!(matches!(&p, Step::Prompt { text, .. } if text.contains("Wait")));
        // Alice's enrolment text and one login text so far; three more fit into the hour.
        for _ in 0..3 {
            w.clock.advance(31);
            login(&w, LoginMode::Append, "alice", "hunter2,sms");
        }
        w.clock.advance(31);
        let n = phone.count();
        match login(&w, LoginMode::Append, "alice", "hunter2,sms") {
            Step::Reject { user_message } => {
                assert!(user_message.contains("Too many"), "{user_message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(phone.count(), n, "quota");
        assert!(last_reason(&w).contains("hourly quota"));
    }

    #[test]
    fn a_send_the_provider_did_not_confirm_counts_and_its_code_works() {
        // A provider that takes the message and then times out: giving the send back made
        // every such send free, so the resend pause and the hourly quota did not hold
        // while the provider was slow (texts without limit, for anyone with the password).
        let (w, phone) = sms_world();
        phone
            .unconfirmed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let n = phone.count();
        login(&w, LoginMode::Append, "alice", "hunter2,sms");
        assert_eq!(phone.count(), n + 1);
        assert!(
            last_reason(&w).contains("may have been sent"),
            "{}",
            last_reason(&w)
        );
        // At once again: the pause holds, nothing is sent.
        login(&w, LoginMode::Append, "alice", "hunter2,sms");
        assert_eq!(phone.count(), n + 1, "resend pause");
        // The quota holds too: the enrolment text, then four an hour.
        for _ in 0..6 {
            w.clock.advance(31);
            login(&w, LoginMode::Append, "alice", "hunter2,sms");
        }
        assert_eq!(phone.count(), n + 4, "hourly quota");
        // The code that arrived works.
        assert!(is_accept(&login(
            &w,
            LoginMode::Append,
            "alice",
            &format!("hunter2{}", phone.last_code())
        )));
    }

    #[test]
    fn a_provider_that_did_not_take_the_message_does_not_use_the_quota() {
        let (w, phone) = sms_world();
        phone.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..6 {
            login(&w, LoginMode::Append, "alice", "hunter2,sms");
        }
        phone.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let n = phone.count();
        login(&w, LoginMode::Append, "alice", "hunter2,sms");
        assert_eq!(phone.count(), n + 1, "sent once the provider is back");
    }

    #[test]
    fn append_mode_sends_on_password_comma_sms_then_accepts_the_code() {
        let (w, phone) = sms_world();
        let s = login(&w, LoginMode::Append, "alice", "hunter2,sms");
        match s {
            Step::Reject { user_message } => {
                assert!(user_message.contains("sent to ••••5678"), "{user_message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(last_reason(&w).contains("sms code sent"));
        assert!(is_accept(&login(
            &w,
            LoginMode::Append,
            "alice",
            &format!("hunter2{}", phone.last_code())
        )));
    }

    #[test]
    fn sent_code_expires_after_five_minutes() {
        let (w, phone) = sms_world();
        login(&w, LoginMode::Append, "alice", "hunter2,sms");
        w.clock.advance(301);
        assert!(!is_accept(&login(
            &w,
            LoginMode::Append,
            "alice",
            &format!("hunter2{}", phone.last_code())
        )));
    }

    #[test]
    fn provider_down_rejects_an_sms_only_user_clearly_and_leaves_other_factors_working() {
        let (w, phone) = sms_world();
        phone.down.store(true, std::sync::atomic::Ordering::SeqCst);
        match login(&w, LoginMode::Challenge, "sid", "pw") {
            Step::Reject { user_message } => {
                assert!(user_message.contains("could not be sent"), "{user_message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            last_reason(&w).contains("provider unavailable: HTTP 503"),
            "{}",
            last_reason(&w)
        );
        let now = w.clock.now();
        assert!(is_accept(&append(&w, &format!("hunter2{}", code_at(now)))));
    }

    /// alice (TOTP) and sid (SMS) also get a confirmed e-mail factor.
    fn email_world() -> (World, Arc<Phone>, Arc<Phone>) {
        let (mut w, phone) = sms_world();
        let mail = Arc::new(Phone {
            email: true,
            ..Phone::default()
        });
        w.engine
            .set_sender("acme", mail.clone(), DeliverySettings::default());
        for user in ["alice", "sid"] {
            let f = w
                .admin
                .enroll_email("acme", user, Some("alice@example.com"))
                .unwrap();
            assert!(matches!(
                w.engine
                    .send_enrolment_code("acme", user, &f.factor_id)
                    .unwrap(),
                SendOutcome::Sent { .. }
            ));
            w.admin
                .confirm_factor("acme", user, &f.factor_id, &mail.last_code())
                .unwrap();
            w.clock.advance(31);
        }
        (w, phone, mail)
    }

    #[test]
    fn email_is_offered_beside_another_factor_and_its_code_logs_in() {
        let (w, _phone, mail) = email_world();
        let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
        match &p {
            Step::Prompt { choices, .. } => {
                let ids: Vec<&str> = choices.iter().map(|c| c.id.as_str()).collect();
                assert_eq!(ids, ["app", "sms", "email"]);
            }
            other => panic!("{other:?}"),
        }
        // Picked by its number in the menu.
        let t = prompt_txn(&answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "3"));
        match answer(&w, "alice", "192.0.2.10", &t, &mail.last_code()) {
            Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "email"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn email_alone_is_never_enough_and_a_refused_kind_keeps_its_code() {
        let (mut w, _phone, mail) = email_world();
        add_user_with_pw(&w, "eve");
        let f = w
            .admin
            .enroll_email("acme", "eve", Some("eve@example.com"))
            .unwrap();
        w.engine
            .send_enrolment_code("acme", "eve", &f.factor_id)
            .unwrap();
        w.admin
            .confirm_factor("acme", "eve", &f.factor_id, &mail.last_code())
            .unwrap();
        // Eve holds only e-mail: not usable (and not unenrolled either).
        assert!(!is_accept(&login(&w, LoginMode::Challenge, "eve", "pw")));
        assert!(
            last_reason(&w).contains("factors (email) cannot be used"),
            "{}",
            last_reason(&w)
        );
        // A rule that accepts only SMS leaves an e-mail code unspent.
        w.clock.advance(31);
        login(&w, LoginMode::Append, "alice", "hunter2,email");
        let code = mail.last_code();
        w.engine.set_rules(
            "acme",
            vec![crate::policy::Rule {
                name: "sms-only".into(),
                action: crate::policy::Action::RequireMfa,
                clients: vec![],
                hosts: vec![],
                groups: vec![],
                sources: vec![],
                time: None,
                factors: vec!["sms".into()],
                remember: None,
                default_factor: None,
                attributes: Default::default(),
            }],
        );
        assert!(!is_accept(&login(
            &w,
            LoginMode::Append,
            "alice",
            &format!("hunter2{code}")
        )));
        w.engine.set_rules("acme", vec![]);
        assert!(is_accept(&login(
            &w,
            LoginMode::Append,
            "alice",
            &format!("hunter2{code}")
        )));
    }

    #[test]
    fn sms_factor_without_a_provider_is_not_usable() {
        let w = world();
        add_user_with_pw(&w, "sid");
        let f = w
            .admin
            .enroll_sms("acme", "sid", Some("+4915112345678"))
            .unwrap();
        assert!(matches!(
            w.engine
                .send_enrolment_code("acme", "sid", &f.factor_id)
                .unwrap(),
            SendOutcome::NotConfigured
        ));
        assert!(!is_accept(&login(&w, LoginMode::Challenge, "sid", "pw")));
    }
}

/// A directory that knows `dave` (password `dir-pass`, groups, mail, mobile) and `alice`,
/// creates users, and asks for a Class attribute in the final Accept.
struct FakeDirectory;

impl crate::first_factor::FirstFactor for FakeDirectory {
    fn name(&self) -> &'static str {
        "ldap"
    }
    fn check(
        &self,
        _: &str,
        _: &str,
        _: Option<&User>,
        pw: &[u8],
    ) -> crate::first_factor::FirstFactorResult {
        use crate::first_factor::{DirectoryInfo, FirstFactorResult};
        if pw == b"dir-pass" {
            FirstFactorResult::Accepted(DirectoryInfo {
                groups: Some(vec!["admins".into(), "vpn-users".into()]),
                email: Some("dave@example.org".into()),
                phone: Some("+15550101".into()),
                reply_attributes: vec![ReplyAttribute {
                    typ: 25,
                    value: b"upstream-class".to_vec(),
                }],
            })
        } else {
            FirstFactorResult::Rejected("invalid credentials".into())
        }
    }
    fn creates_users(&self) -> bool {
        true
    }
}

#[test]
fn directory_users_are_created_on_first_login_with_groups_mail_and_phone() {
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    // Unknown to the store, no factor yet: rejected as unenrolled, but created.
    let s = login(&w, LoginMode::Challenge, "dave", "dir-pass");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(last_reason(&w).contains("no confirmed second factor"));
    let dave = w.engine.store().user_by_name(1, "dave").unwrap().unwrap();
    assert_eq!(dave.groups, ["admins", "vpn-users"]);
    assert_eq!(dave.email.as_deref(), Some("dave@example.org"));
    assert_eq!(dave.phone.as_deref(), Some("+15550101"));
    assert!(dave.password_hash.is_none());
    // A wrong directory password creates nobody and says who refused.
    let s = login(&w, LoginMode::Challenge, "erin", "nope");
    assert!(matches!(s, Step::Reject { .. }));
    assert_eq!(last_reason(&w), "first factor (ldap): invalid credentials");
    assert!(w.engine.store().user_by_name(1, "erin").unwrap().is_none());
}

#[test]
fn a_directory_name_in_another_case_is_not_a_new_user_without_factors() {
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    // The directory (like LDAP and AD) accepts alice's password for "ALICE" and "alice ";
    // neither becomes a new user who could enrol factors of their own.
    // Full-width letters, the Kelvin sign and doubled spaces are the same name to LDAP.
    add_user_with_pw(&w, "kate");
    for typed in [
        "ALICE",
        "Alice",
        " alice",
        "alice ",
        "\u{ff41}lice",
        "\u{212a}ate",
        "ＫＡＴＥ",
    ] {
        let s = login(&w, LoginMode::Challenge, typed, "dir-pass");
        assert!(matches!(s, Step::Reject { .. }), "{typed:?}: {s:?}");
        assert!(
            last_reason(&w).contains("log in as 'alice'")
                || last_reason(&w).contains("log in as 'kate'"),
            "{typed:?}: {}",
            last_reason(&w)
        );
        assert!(w.engine.store().user_by_name(1, typed).unwrap().is_none());
    }
    // The stored spelling still logs in.
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "dir-pass"));
    assert!(is_accept(&answer(
        &w,
        "alice",
        "192.0.2.10",
        &txn,
        &code_at(T0)
    )));
}

#[test]
fn directory_groups_and_pass_through_attributes_reach_the_accept_after_a_challenge() {
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    let s = login(&w, LoginMode::Challenge, "alice", "dir-pass");
    let txn = prompt_txn(&s);
    match answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0)) {
        Step::Accept {
            groups,
            reply_attributes,
            ..
        } => {
            // The store's groups were replaced by the directory's.
            assert_eq!(groups, ["admins", "vpn-users"]);
            assert_eq!(
                reply_attributes,
                [ReplyAttribute {
                    typ: 25,
                    value: b"upstream-class".to_vec()
                }]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_disabled_store_user_is_refused_even_when_the_directory_accepts() {
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    w.admin.set_disabled("acme", "alice", true).unwrap();
    let s = append(&w, &format!("dir-pass{}", code_at(T0)));
    assert!(matches!(s, Step::Reject { .. }));
    assert_eq!(last_reason(&w), "user is disabled");
}

#[test]
fn first_factor_none_makes_the_login_second_factor_only_and_audits_it() {
    let mut w = world();
    w.engine
        .set_first_factor("acme", Arc::new(crate::first_factor::Delegated));
    // The client is configured for challenge mode, but the tenant delegates the password.
    let s = login(&w, LoginMode::Challenge, "alice", &code_at(T0));
    assert!(is_accept(&s), "{s:?}");
    let records = w.admin.audit(&AuditFilter::default()).unwrap();
    let last = records.last().unwrap();
    assert_eq!(last.mode, "otp-only");
    assert_eq!(last.factors, ["delegated", "totp"]);
    assert!(
        last.reason.contains("first_factor = \"none\""),
        "{}",
        last.reason
    );
    // A password is not a code.
    assert!(!is_accept(&login(
        &w,
        LoginMode::Challenge,
        "alice",
        "hunter2"
    )));
}

#[test]
fn a_client_override_wins_over_the_tenant_backend() {
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    w.engine.set_client_first_factor(
        "radius",
        "other-nas",
        Arc::new(crate::first_factor::Delegated),
    );
    // "vpn" still uses the directory.
    assert!(is_accept(&append(&w, &format!("dir-pass{}", code_at(T0)))));
    w.engine
        .set_client_first_factor("radius", "vpn", Arc::new(crate::first_factor::Delegated));
    assert!(is_accept(&login(
        &w,
        LoginMode::Append,
        "alice",
        &code_at(T0 + 30)
    )));
}

/// Counts how often it is asked; answers with `verdict`.
struct Counting {
    calls: std::sync::atomic::AtomicUsize,
    unavailable: bool,
}

impl crate::first_factor::FirstFactor for Counting {
    fn name(&self) -> &'static str {
        "radius"
    }
    fn check(
        &self,
        _: &str,
        _: &str,
        _: Option<&User>,
        _: &[u8],
    ) -> crate::first_factor::FirstFactorResult {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.unavailable {
            crate::first_factor::FirstFactorResult::Unavailable("down".into())
        } else {
            crate::first_factor::FirstFactorResult::Rejected("wrong".into())
        }
    }
}

#[test]
fn append_mode_asks_a_remote_backend_once_when_the_delimiter_is_typed_or_it_is_down() {
    let calls = |w: &mut World, unavailable: bool, credential: &str| {
        let b = Arc::new(Counting {
            calls: 0.into(),
            unavailable,
        });
        w.engine.set_first_factor("acme", b.clone());
        let s = append(w, credential);
        assert!(matches!(s, Step::Reject { .. }));
        b.calls.load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut w = world();
    // Wrong password with the delimiter: one bind/request upstream, not one per reading.
    assert_eq!(calls(&mut w, false, "wrong,12345678"), 1);
    // Without it, every reading is tried (6 and 8 digits here).
    assert!(calls(&mut w, false, "wrong12345678") > 1);
    // A backend that is down is asked once.
    assert_eq!(calls(&mut w, true, "wrong12345678"), 1);
    assert!(last_reason(&w).contains("first factor (radius) unavailable: down"));
}

#[test]
fn a_good_append_login_sends_the_backend_no_wrong_reading_first() {
    // `dir-pass` + an 8-digit code was first tried as `dir-pass12` + 6 digits: a failed bind
    // on every good login, which a directory counts towards the account's lockout.
    use crate::first_factor::{DirectoryInfo, FirstFactor, FirstFactorResult};
    use std::sync::Mutex;
    #[derive(Default)]
    struct Recording(Mutex<Vec<Vec<u8>>>);
    impl FirstFactor for Recording {
        fn name(&self) -> &'static str {
            "test-directory"
        }
        fn check(&self, _: &str, _: &str, _: Option<&User>, pw: &[u8]) -> FirstFactorResult {
            self.0.lock().unwrap().push(pw.to_vec());
            if pw == b"dir-pass" {
                FirstFactorResult::Accepted(DirectoryInfo::default())
            } else {
                FirstFactorResult::Rejected("invalid credentials".into())
            }
        }
    }
    let mut w = world();
    add_user_with_pw(&w, "hank");
    w.admin
        .enroll_hotp("acme", "hank", Some(SECRET), 8, "SHA1", 0)
        .unwrap();
    let dir = Arc::new(Recording::default());
    w.engine.set_first_factor("acme", dir.clone());
    let code = crate::hotp::generate(
        &decode_base32(SECRET).unwrap(),
        crate::totp::TotpAlgorithm::SHA1,
        8,
        1,
    );
    let s = login(&w, LoginMode::Append, "hank", &format!("dir-pass{code}"));
    assert!(is_accept(&s), "{s:?}");
    assert_eq!(*dir.0.lock().unwrap(), [b"dir-pass".to_vec()]);
    // A wrong password still costs every reading, whoever the user is.
    dir.0.lock().unwrap().clear();
    let s = login(&w, LoginMode::Append, "hank", "wrong-pass12345678");
    assert!(!is_accept(&s));
    let known = dir.0.lock().unwrap().len();
    dir.0.lock().unwrap().clear();
    let s = login(&w, LoginMode::Append, "nobody", "wrong-pass12345678");
    assert!(!is_accept(&s));
    assert_eq!(dir.0.lock().unwrap().len(), known);
}

/// Code-only logins decided in batches ([`LoginBatcher`]).
mod batch {
    use std::sync::mpsc;

    use super::*;

    pub(super) fn code_login(user: &str, code: &str) -> LoginRequest {
        LoginRequest {
            tenant: "acme".into(),
            channel: channel(),
            source: "192.0.2.10".into(),
            mode: LoginMode::OtpOnly,
            username: user.into(),
            credential: Zeroizing::new(code.as_bytes().to_vec()),
            delimiter: ",".into(),
            prompt: "Code:".into(),
            unenrolled: Unenrolled::Deny,
            source_limited: true,
        }
    }

    /// The world with two more users, bob and carol, with alice's TOTP secret.
    fn world_with_bob_and_carol() -> World {
        let w = world();
        for name in ["bob", "carol"] {
            w.admin
                .add_user("acme", name, NewPassword::None, None, None, vec![])
                .unwrap();
            w.admin
                .enroll_totp("acme", name, Some(SECRET), 6, "SHA1")
                .unwrap();
        }
        w
    }

    /// Submits every login to `batcher` at once; their outcomes, in the order submitted.
    fn submit_all(batcher: &LoginBatcher, logins: Vec<LoginRequest>) -> Vec<Batched> {
        let (tx, rx) = mpsc::channel();
        for (i, req) in logins.into_iter().enumerate() {
            let tx = tx.clone();
            batcher.submit(req, Box::new(move |b| tx.send((i, b)).unwrap()));
        }
        drop(tx);
        let mut out: Vec<(usize, Batched)> = rx.iter().collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, b)| b).collect()
    }

    /// Submits every login at once to a batcher of its own; their decisions, in order.
    fn decide_all(engine: &Arc<Engine>, logins: Vec<LoginRequest>) -> Vec<Step> {
        let batcher = LoginBatcher::start(engine.clone()).unwrap().unwrap();
        submit_all(&batcher, logins)
            .into_iter()
            .map(|b| match b {
                Batched::Decided(step, _log) => step.unwrap(),
                Batched::Declined(req) => panic!("{req:?} was handed back"),
            })
            .collect()
    }

    #[test]
    fn a_batched_decision_hands_its_log_line_out_with_it() {
        let lines = crate::engine::decision_log::tests::Lines::default();
        let _scope = crate::engine::decision_log::tests::capture(&lines);
        let w = world();
        let engine = Arc::new(w.engine);
        let batcher = LoginBatcher::start(engine.clone()).unwrap().unwrap();
        let (tx, rx) = mpsc::channel();
        for code in [code_at(T0), "000000".to_string()] {
            let tx = tx.clone();
            batcher.submit(
                code_login("alice", &code),
                Box::new(move |b| tx.send(b).unwrap()),
            );
        }
        drop(tx);
        let outcomes: Vec<Batched> = rx.iter().collect();
        // Decided and committed, but no line written yet: the receiver writes it, off the
        // batch thread, by dropping what came with the decision.
        assert!(lines.0.lock().unwrap().is_empty());
        for b in outcomes {
            let Batched::Decided(step, log) = b else {
                panic!("handed back")
            };
            assert!(step.is_ok());
            assert_eq!(log.len(), 1);
            drop(log);
        }
        assert_eq!(*lines.0.lock().unwrap(), ["alice", "alice"]);
    }

    /// In a batch, as alone: a factor's last use is written at its first use, not at a
    /// use within the hour, and every code is spent either way.
    #[test]
    fn a_batched_login_writes_the_last_use_only_when_it_is_due() {
        let w = world();
        let engine = Arc::new(w.engine);
        let last_used = || w.admin.list_factors("acme", "alice").unwrap()[0].last_used_at;
        let start = w.clock.now();
        let first = decide_all(&engine, vec![code_login("alice", &code_at(start))]);
        assert!(is_accept(&first[0]));
        assert_eq!(last_used(), Some(start));
        w.clock.advance(60);
        let code = code_at(w.clock.now());
        let again = decide_all(
            &engine,
            vec![code_login("alice", &code), code_login("alice", &code)],
        );
        assert!(is_accept(&again[0]) && !is_accept(&again[1]), "{again:?}");
        assert_eq!(last_used(), Some(start));
    }

    /// `start_with`: every outcome reaches the hand-out once, a batch's all in one call.
    #[test]
    fn every_outcome_reaches_the_hand_out_once() {
        let w = world_with_bob_and_carol();
        let engine = Arc::new(w.engine);
        let (calls_tx, calls) = mpsc::channel();
        let hand_out: crate::engine::HandOut = Box::new(move |outcomes| {
            calls_tx.send(outcomes.len()).unwrap();
            for (done, outcome) in outcomes {
                done(outcome);
            }
        });
        let batcher = LoginBatcher::start_with(engine.clone(), hand_out)
            .unwrap()
            .unwrap();
        let code = code_at(T0);
        let logins: Vec<LoginRequest> = ["alice", "bob", "carol", "alice", "mallory"]
            .iter()
            .map(|u| code_login(u, &code))
            .collect();
        let outcomes = submit_all(&batcher, logins);
        drop(batcher);
        let accepted: Vec<bool> = outcomes
            .iter()
            .map(|b| matches!(b, Batched::Decided(Ok(s), _) if is_accept(s)))
            .collect();
        assert_eq!(accepted, [true, true, true, false, false]);
        assert_eq!(
            calls.iter().sum::<usize>(),
            5,
            "each outcome handed out once"
        );
    }

    #[test]
    fn batched_logins_are_decided_as_alone_and_a_code_is_used_once() {
        let w = world_with_bob_and_carol();
        let engine = Arc::new(w.engine);
        let code = code_at(T0);
        let mut logins = vec![
            code_login("alice", &code),
            code_login("alice", &code), // a replay, maybe in the same batch
            code_login("bob", "000000"),
            code_login("mallory", &code),
            code_login("carol", &code),
        ];
        logins.extend((0..20).map(|_| code_login("alice", &code)));
        let steps = decide_all(&engine, logins);
        let accepted: Vec<usize> = (0..steps.len()).filter(|&i| is_accept(&steps[i])).collect();
        assert_eq!(accepted, [0, 4], "{steps:?}");
        // One audit record per decision, none of them holding the code.
        let records = w.admin.audit(&AuditFilter::default()).unwrap();
        assert_eq!(records.len(), steps.len());
        assert!(records.iter().all(|r| !format!("{r:?}").contains(&code)));
        let reasons: Vec<&str> = records.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.contains("unknown user")),
            "{reasons:?}"
        );
        // The failure was counted, as alone: the throttle of bob has one.
        w.clock.advance(30);
        let again = decide_all(&engine, vec![code_login("alice", &code_at(T0 + 30))]);
        assert!(is_accept(&again[0]));
    }

    #[test]
    fn a_login_handed_back_undoes_nothing_of_the_others_of_its_batch() {
        let w = world_with_bob_and_carol();
        let engine = Arc::new(w.engine);
        let batcher = LoginBatcher::start(engine.clone()).unwrap().unwrap();
        let code = code_at(T0);
        // An unknown tenant's login spends a dummy password hash: not in a batch.
        let nope = || {
            let mut req = code_login("alice", &code);
            req.tenant = "nope".into();
            req
        };
        let logins = vec![
            code_login("alice", &code),
            nope(),
            code_login("carol", &code),
            code_login("bob", "000000"),
            code_login("alice", &code), // a replay
            nope(),
        ];
        let got: Vec<&str> = submit_all(&batcher, logins)
            .iter()
            .map(|b| match b {
                Batched::Declined(_) => "declined",
                Batched::Decided(Ok(step), _) if is_accept(step) => "accept",
                Batched::Decided(Ok(_), _) => "reject",
                Batched::Decided(Err(_), _) => "error",
            })
            .collect();
        assert_eq!(
            got,
            ["accept", "declined", "accept", "reject", "reject", "declined"]
        );
        // Whatever was decided before the login that was handed back (and undone with the
        // whole transaction) was decided again and recorded once.
        let records = w.admin.audit(&AuditFilter::default()).unwrap();
        assert_eq!(records.len(), 4, "{records:#?}");
        // The first batch with such a login was decided twice; the next ones in units at once.
        assert_eq!(
            batcher
                .counts()
                .redone
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            batcher
                .counts()
                .declined
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        // Bob's wrong code is counted once.
        let store = engine.store();
        let tenant = store.tenant_by_name("acme").unwrap().unwrap();
        let bob = store.user_by_name(tenant.id, "bob").unwrap().unwrap();
        let key = super::super::throttle::second_factor_key(&bob);
        assert_eq!(store.throttle(tenant.id, &key).unwrap().failures, 1);
    }

    #[test]
    fn logins_that_need_a_password_are_not_code_only() {
        let w = world();
        let mut req = code_login("alice", "hunter2");
        req.mode = LoginMode::Challenge;
        assert!(!w.engine.is_code_only(&req));
        let mut empty = code_login("alice", "");
        empty.credential = Zeroizing::new(Vec::new());
        assert!(!w.engine.is_code_only(&empty));
        assert!(w.engine.is_code_only(&code_login("alice", "123456")));
    }
}

#[test]
fn the_longest_valid_prompt_still_fits_one_reply_message_after_a_wrong_or_empty_code() {
    use crate::config::{max_prompt_len, REPLY_MESSAGE_MAX};
    let w = world();
    let prompt = "p".repeat(max_prompt_len());
    let start = w
        .engine
        .start(&LoginRequest {
            tenant: "acme".into(),
            channel: channel(),
            source: "192.0.2.10".into(),
            mode: LoginMode::Challenge,
            username: "alice".into(),
            credential: Zeroizing::new(b"hunter2".to_vec()),
            delimiter: ",".into(),
            prompt: prompt.clone(),
            unenrolled: Unenrolled::Deny,
            source_limited: true,
        })
        .unwrap();
    let mut txn = prompt_txn(&start);
    for typed in ["000000", ""] {
        let s = w
            .engine
            .answer(&AnswerRequest {
                tenant: "acme".into(),
                channel: channel(),
                source: "192.0.2.10".into(),
                username: "alice".into(),
                txn: txn.clone(),
                answer: Zeroizing::new(typed.as_bytes().to_vec()),
                prompt: prompt.clone(),
                source_limited: true,
            })
            .unwrap();
        let Step::Prompt {
            text, txn: next, ..
        } = s
        else {
            panic!("{typed:?}: {s:?}");
        };
        assert!(text.ends_with(&prompt), "{text}");
        assert!(
            text.len() <= REPLY_MESSAGE_MAX,
            "{typed:?}: {} bytes",
            text.len()
        );
        txn = next;
    }
}

mod rules {
    use super::*;
    use crate::policy::tests::rule;
    use crate::policy::{Action, Rule};

    fn with_rules(rules: Vec<Rule>) -> World {
        let mut w = world();
        w.engine.set_rules("acme", rules);
        w
    }

    #[test]
    fn skip_from_a_trusted_network_accepts_on_the_password_and_audits_the_rule() {
        let w = with_rules(vec![Rule {
            sources: vec!["192.0.2.0/24".parse().unwrap()],
            ..rule("lab", Action::SkipMfa)
        }]);
        // login() uses source 192.0.2.10.
        let s = login(&w, LoginMode::Challenge, "alice", "hunter2");
        assert!(
            matches!(&s, Step::Accept { factors_used, .. } if factors_used == &["password"]),
            "{s:?}"
        );
        assert!(
            last_reason(&w).contains("rule 'lab' (skip_mfa)"),
            "{}",
            last_reason(&w)
        );
        // The password is still checked.
        assert!(!is_accept(&login(
            &w,
            LoginMode::Challenge,
            "alice",
            "nope"
        )));
    }

    #[test]
    fn deny_by_group_rejects_after_the_password() {
        let w = with_rules(vec![Rule {
            groups: vec!["vpn-users".into()],
            ..rule("no-vpn", Action::Deny)
        }]);
        assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
        assert_eq!(last_reason(&w), "denied by rule 'no-vpn' (deny)");
    }

    #[test]
    fn step_up_accepts_only_the_named_factor_and_spends_no_other_code() {
        let mut w = with_rules(vec![Rule {
            clients: vec!["vpn".into()],
            factors: vec!["hotp".into()],
            ..rule("token-only", Action::StepUp)
        }]);
        // alice has only TOTP: the rule asks for what she lacks.
        assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
        assert!(
            last_reason(&w).contains("asks for hotp"),
            "{}",
            last_reason(&w)
        );
        w.admin
            .enroll_hotp("acme", "alice", Some(SECRET), 6, "SHA1", 0)
            .unwrap();
        let totp_code = code_at(T0);
        assert!(
            !is_accept(&append(&w, &format!("hunter2{totp_code}"))),
            "TOTP is not enough"
        );
        let h = crate::hotp::generate(
            &decode_base32(SECRET).unwrap(),
            crate::totp::TotpAlgorithm::SHA1,
            6,
            0,
        );
        assert!(is_accept(&append(&w, &format!("hunter2{h}"))));
        assert!(last_reason(&w).contains("rule 'token-only' (step_up)"));
        // The TOTP code was never spent by the refused attempt.
        w.engine.set_rules("acme", vec![]);
        assert!(is_accept(&append(&w, &format!("hunter2{totp_code}"))));
    }

    #[test]
    fn a_remembered_source_skips_the_code_until_it_expires_or_is_forgotten() {
        let w = with_rules(vec![Rule {
            remember: Some(std::time::Duration::from_secs(8 * 3600)),
            default_factor: None,
            attributes: Default::default(),
            ..rule("remember-8h", Action::RequireMfa)
        }]);
        // First login from 192.0.2.10 needs the code...
        let t = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
        assert!(is_accept(&answer(
            &w,
            "alice",
            "192.0.2.10",
            &t,
            &code_at(T0)
        )));
        // ...the next one from there does not, and says why.
        let s = login(&w, LoginMode::Challenge, "alice", "hunter2");
        assert!(
            matches!(&s, Step::Accept { factors_used, .. } if factors_used == &["password", "remembered"]),
            "{s:?}"
        );
        assert!(
            last_reason(&w).contains("remembered for source '192.0.2.10'"),
            "{}",
            last_reason(&w)
        );
        assert!(
            !is_accept(&login(&w, LoginMode::Challenge, "alice", "wrong")),
            "never without the password"
        );
        // Another source is asked.
        let other = w
            .engine
            .start(&LoginRequest {
                tenant: "acme".into(),
                channel: channel(),
                source: "198.51.100.7".into(),
                mode: LoginMode::Challenge,
                username: "alice".into(),
                credential: Zeroizing::new(b"hunter2".to_vec()),
                delimiter: ",".into(),
                prompt: "Code:".into(),
                unenrolled: Unenrolled::Deny,
                source_limited: true,
            })
            .unwrap();
        assert!(matches!(other, Step::Prompt { .. }));
        // Forgotten: asked again.
        w.admin
            .forget_sources("acme", "alice", Some("192.0.2.10"))
            .unwrap();
        assert!(matches!(
            login(&w, LoginMode::Challenge, "alice", "hunter2"),
            Step::Prompt { .. }
        ));
        // Remembered again, then expired.
        assert!(is_accept(&append(
            &w,
            &format!("hunter2{}", code_at(T0 + 30))
        )));
        assert!(is_accept(&login(
            &w,
            LoginMode::Challenge,
            "alice",
            "hunter2"
        )));
        w.clock.advance(8 * 3600 + 1);
        assert!(matches!(
            login(&w, LoginMode::Challenge, "alice", "hunter2"),
            Step::Prompt { .. }
        ));
    }

    /// A login over `channel` from `source`, password then the code of `t`: its final step.
    fn login_and_answer(
        w: &World,
        channel: Channel,
        source: &str,
        source_limited: bool,
        t: i64,
    ) -> Step {
        let started = w
            .engine
            .start(&LoginRequest {
                tenant: "acme".into(),
                channel: channel.clone(),
                source: source.into(),
                mode: LoginMode::Challenge,
                username: "alice".into(),
                credential: Zeroizing::new(b"hunter2".to_vec()),
                delimiter: ",".into(),
                prompt: "Code:".into(),
                unenrolled: Unenrolled::Deny,
                source_limited,
            })
            .unwrap();
        let Step::Prompt { txn, .. } = started else {
            return started;
        };
        w.engine
            .answer(&AnswerRequest {
                tenant: "acme".into(),
                channel,
                source: source.into(),
                username: "alice".into(),
                txn,
                answer: Zeroizing::new(code_at(t).into_bytes()),
                prompt: "Code:".into(),
                source_limited,
            })
            .unwrap()
    }

    #[test]
    fn sources_shared_by_many_users_and_the_web_pages_are_never_remembered() {
        let w = with_rules(vec![Rule {
            remember: Some(std::time::Duration::from_secs(8 * 3600)),
            ..rule("remember-8h", Action::RequireMfa)
        }]);
        let pam = |tty: &str| Channel::Pam {
            host: "host1".into(),
            service: "sshd".into(),
            rhost: None,
            tty: Some(tty.into()),
        };
        let web = Channel::Web {
            address: "192.0.2.10".into(),
        };
        let mut t = T0;
        // (channel, source, source_limited): each is asked for a code every time.
        let shared = [
            (channel(), "127.0.0.1", true), // the NAS's own address: no Calling-Station-Id
            (channel(), "00-11-22-33-44-55", false), // a client whose source is a constant
            (pam("/dev/pts/0"), "tty:/dev/pts/0", true), // every host has a pts/0
            (pam("/dev/tty1"), "local", true),
            (pam("/dev/pts/1"), "127.0.0.1", true), // `ssh localhost` on any host
            (pam("/dev/pts/1"), "::1", true),
            (web.clone(), "proxy:127.0.0.1", true),
            (web.clone(), "192.0.2.10", true), // the web pages never use one
        ];
        for (ch, source, limited) in shared {
            let s = login_and_answer(&w, ch.clone(), source, limited, t);
            assert!(
                matches!(&s, Step::Accept { factors_used, .. } if factors_used[1] == "totp"),
                "{source}: {s:?}"
            );
            t += 30;
            w.clock.advance(30);
            let again = login_and_answer(&w, ch, source, limited, t);
            assert!(
                matches!(&again, Step::Accept { factors_used, .. } if factors_used[1] == "totp"),
                "{source} was remembered: {again:?}"
            );
            t += 30;
            w.clock.advance(30);
        }
        // A Calling-Station-Id of the user's own is remembered (and the web pages, from
        // that very address, still ask).
        let s = login_and_answer(&w, channel(), "192.0.2.10", true, t);
        assert!(is_accept(&s), "{s:?}");
        let s = login(&w, LoginMode::Challenge, "alice", "hunter2");
        assert!(
            matches!(&s, Step::Accept { factors_used, .. } if factors_used[1] == "remembered"),
            "{s:?}"
        );
        w.clock.advance(30);
        let s = login_and_answer(&w, web, "192.0.2.10", true, t + 30);
        assert!(
            matches!(&s, Step::Accept { factors_used, .. } if factors_used[1] == "totp"),
            "{s:?}"
        );
    }

    #[test]
    fn first_match_wins_and_default_requires_a_code() {
        let w = with_rules(vec![
            Rule {
                groups: vec!["vpn-users".into()],
                ..rule("staff", Action::RequireMfa)
            },
            rule("everyone-else", Action::SkipMfa),
        ]);
        assert!(matches!(
            login(&w, LoginMode::Challenge, "alice", "hunter2"),
            Step::Prompt { .. }
        ));
        add_user_with_pw(&w, "svc");
        assert!(is_accept(&login(&w, LoginMode::Challenge, "svc", "pw")));
    }
}

#[test]
fn directory_groups_feed_policy_rules_and_pass_through_survives_a_skip() {
    use crate::policy::{Action, Rule};
    let rule = |name: &str, action: Action, group: &str| Rule {
        name: name.into(),
        action,
        clients: vec![],
        hosts: vec![],
        groups: vec![group.into()],
        sources: vec![],
        time: None,
        factors: vec![],
        remember: None,
        default_factor: None,
        attributes: Default::default(),
    };
    let mut w = world();
    w.engine.set_first_factor("acme", Arc::new(FakeDirectory));
    // alice is only in vpn-users in the store; the directory says she is in admins too.
    w.engine
        .set_rules("acme", vec![rule("admins-skip", Action::SkipMfa, "admins")]);
    match login(&w, LoginMode::Challenge, "alice", "dir-pass") {
        Step::Accept {
            factors_used,
            groups,
            reply_attributes,
        } => {
            assert_eq!(factors_used, ["password"]);
            assert_eq!(groups, ["admins", "vpn-users"]);
            assert_eq!(reply_attributes.len(), 1, "the upstream Class comes along");
        }
        other => panic!("{other:?}"),
    }
    w.engine
        .set_rules("acme", vec![rule("no-admins", Action::Deny, "admins")]);
    assert!(!is_accept(&login(
        &w,
        LoginMode::Challenge,
        "alice",
        "dir-pass"
    )));
    assert!(last_reason(&w).contains("no-admins"), "{}", last_reason(&w));
}

#[test]
fn only_our_state_shape_counts_as_a_transaction_reference() {
    let w = world();
    let txn = prompt_txn(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    assert!(is_transaction_reference(txn.as_bytes()));
    assert!(!is_transaction_reference(b"garbage"));
    assert!(!is_transaction_reference(
        b"0123456789abcdef0123456789abcdeg.0"
    ));
    assert!(!is_transaction_reference(&[0xff, 0xfe]));
}

mod enroll;
mod loopholes;
mod nodes;
mod push;

/// Codes asked for at the same moment (parallel logins, on one node or several): the
/// send is claimed before the provider is asked, so the resend pause and the hourly quota
/// hold however many ask at once, and a send the provider refused is not counted.
mod send_claims {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Barrier, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::delivery::{CodeSender, DeliveryError, DeliverySettings};

    /// A provider that takes its time, as one across the network does.
    #[derive(Default)]
    struct SlowPhone {
        codes: Mutex<Vec<String>>,
        down: AtomicBool,
    }

    impl CodeSender for SlowPhone {
        fn channel(&self) -> &'static str {
            "sms"
        }
        fn provider(&self) -> &str {
            "slow"
        }
        fn send(&self, _to: &str, code: &str, _message: &str) -> Result<(), DeliveryError> {
            std::thread::sleep(Duration::from_millis(100));
            if self.down.load(Ordering::SeqCst) {
                return Err(DeliveryError::Unavailable("HTTP 503".into()));
            }
            self.codes.lock().unwrap().push(code.to_string());
            Ok(())
        }
    }

    impl SlowPhone {
        fn sent(&self) -> usize {
            self.codes.lock().unwrap().len()
        }
    }

    /// alice with a pending SMS factor (its id), and a slow phone behind it.
    fn slow_world(settings: DeliverySettings) -> (World, Arc<SlowPhone>, String) {
        let mut w = world();
        let phone = Arc::new(SlowPhone::default());
        w.engine.set_sender("acme", phone.clone(), settings);
        let f = w
            .admin
            .enroll_sms("acme", "alice", Some("+4915112345678"))
            .unwrap();
        (w, phone, f.factor_id)
    }

    fn send_at_once(w: &World, factor: &str, n: usize) -> Vec<SendOutcome> {
        let barrier = Barrier::new(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        w.engine
                            .send_enrolment_code("acme", "alice", factor)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn sent(outcomes: &[SendOutcome]) -> usize {
        outcomes
            .iter()
            .filter(|o| matches!(o, SendOutcome::Sent { .. }))
            .count()
    }

    #[test]
    fn codes_asked_for_at_once_are_sent_once_within_the_resend_pause() {
        let (w, phone, factor) = slow_world(DeliverySettings::default());
        let outcomes = send_at_once(&w, &factor, 6);
        assert_eq!(sent(&outcomes), 1, "{outcomes:?}");
        assert_eq!(phone.sent(), 1, "texts that left");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, SendOutcome::Sent { .. } | SendOutcome::TooSoon { .. })),
            "{outcomes:?}"
        );
    }

    #[test]
    fn codes_asked_for_at_once_never_exceed_the_hourly_quota() {
        let (w, phone, factor) = slow_world(DeliverySettings {
            resend_after: 0,
            max_per_hour: 3,
            ..DeliverySettings::default()
        });
        let outcomes = send_at_once(&w, &factor, 8);
        assert_eq!(sent(&outcomes), 3, "{outcomes:?}");
        assert_eq!(phone.sent(), 3, "texts that left");
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, SendOutcome::QuotaExceeded))
            .count();
        assert_eq!(refused, 5, "{outcomes:?}");
        // The hour later the quota is free again.
        w.clock.advance(3601);
        assert_eq!(sent(&send_at_once(&w, &factor, 1)), 1);
    }

    #[test]
    fn a_failed_send_is_not_counted_and_a_sent_code_works() {
        let (w, phone, factor) = slow_world(DeliverySettings {
            max_per_hour: 1,
            ..DeliverySettings::default()
        });
        phone.down.store(true, Ordering::SeqCst);
        let outcome = send_at_once(&w, &factor, 1);
        assert!(
            matches!(outcome[..], [SendOutcome::Failed(_)]),
            "{outcome:?}"
        );
        // Neither the resend pause nor the quota (one an hour) counts the failed send.
        phone.down.store(false, Ordering::SeqCst);
        let outcome = send_at_once(&w, &factor, 1);
        assert!(
            matches!(outcome[..], [SendOutcome::Sent { .. }]),
            "{outcome:?}"
        );
        let code = phone.codes.lock().unwrap().last().cloned().unwrap();
        w.admin
            .confirm_factor("acme", "alice", &factor, &code)
            .expect("the code that was sent confirms the factor");
    }
}
