//! Engine behaviour with an in-memory store and a clock that tests move.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;
use crate::admin::{Admin, NewPassword};
use crate::clock::ManualClock;
use crate::config::PasswordConfig;
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
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let clock = Arc::new(ManualClock::new(T0 + 5));
    let key = Arc::new(MasterKey::from_bytes([7; 32]));
    let hasher = PasswordHasher::new(&PasswordConfig {
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        argon2_parallelism: 1,
    })
    .unwrap();
    let engine = Engine::new(
        store.clone(),
        clock.clone(),
        key.clone(),
        hasher.clone(),
        EngineSettings::default(),
    );
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
            unenrolled: Unenrolled::Deny,
        })
        .unwrap()
}

fn answer(w: &World, user: &str, source: &str, txn: &str, code: &str) -> Step {
    w.engine
        .answer(&AnswerRequest {
            tenant: "acme".into(),
            channel: channel(),
            source: source.into(),
            username: user.into(),
            txn: txn.into(),
            answer: Zeroizing::new(code.as_bytes().to_vec()),
            prompt: "Code:".into(),
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
fn pending_factor_cannot_be_used() {
    let w = world();
    w.admin
        .add_user(
            "acme",
            "bob",
            NewPassword::Plain(Zeroizing::new(b"pw".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
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
    w.admin
        .add_user(
            "acme",
            "carol",
            NewPassword::Plain(Zeroizing::new(b"pw".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
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
