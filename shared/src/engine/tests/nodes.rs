//! Two nodes (two Engines) on one store that says it is shared, as daemons share
//! PostgreSQL: the limits on codes and passwords checked at once hold across the nodes,
//! because each check reserves its failure in the store first; and the throttles a user
//! and an admin see are the same as on one node. Each test that compares nodes failed
//! before the reservations, when the checks in progress were counted in node memory only.

use super::*;
use crate::config::LockoutConfig;
use crate::engine::throttle::{second_factor_key, source_throttle_key};

struct Nodes {
    /// Node A (and the admin).
    w: World,
    b: Engine,
}

/// Node A and node B on one shared in-memory SQLite store (alice: password `hunter2`,
/// TOTP [`SECRET`]).
fn nodes_with(lockout: LockoutConfig) -> Nodes {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap().with_shared(true));
    assert!(store.shared());
    let settings = EngineSettings {
        lockout,
        ..EngineSettings::default()
    };
    let w = world_on(store.clone(), settings);
    let b = node(&store, &w.clock, settings);
    Nodes { w, b }
}

fn nodes() -> Nodes {
    nodes_with(LockoutConfig::default())
}

/// Alice's first request ([`super::request`]).
fn alice_request(source: &str, mode: LoginMode, credential: &str) -> LoginRequest {
    request("alice", source, mode, credential)
}

/// An `append` login of alice's on `node` from a source of her own.
fn append_on(node: &Engine, credential: &str) -> Step {
    node.start(&alice_request("192.0.2.10", LoginMode::Append, credential))
        .unwrap()
}

fn tenant(n: &Nodes) -> Tenant {
    n.w.engine.store().tenant_by_name("acme").unwrap().unwrap()
}

fn alice(n: &Nodes) -> User {
    n.w.engine
        .store()
        .user_by_name(1, "alice")
        .unwrap()
        .unwrap()
}

fn code_failures(n: &Nodes) -> u32 {
    let key = second_factor_key(&alice(n));
    n.w.engine.store().throttle(1, &key).unwrap().failures
}

/// The level of the source's bucket now: its failures less what has drained (20 per
/// 10 minutes).
fn source_level(n: &Nodes, src: &str) -> u32 {
    let row = source_row(n, src);
    let drained = (n.w.clock.now() - row.last_failure_at).max(0) * 20 / 600;
    (i64::from(row.failures) - drained).max(0) as u32
}

fn source_row(n: &Nodes, src: &str) -> Throttle {
    let key = source_throttle_key("radius", src);
    n.w.engine.store().throttle(1, &key).unwrap()
}

#[test]
fn codes_being_checked_on_one_node_count_on_the_other() {
    let n = nodes();
    let (t, alice) = (tenant(&n), alice(&n));
    for _ in 0..3 {
        assert!(!is_accept(&append_on(&n.w.engine, "hunter2000000")));
        n.w.clock.advance(1);
    }
    // Past the delays that the failures reserved below would owe.
    n.w.clock.advance(3600);
    let now = n.w.clock.now();
    // 7 codes of alice's being checked on node A: 3 + 7 = lock_after (10).
    let held: Vec<_> = (0..7)
        .map(
            |_| match n.w.engine.throttle_gate(&t, &alice, now).unwrap() {
                Ok(streak) => streak,
                Err(refused) => panic!("{}", refused.reason),
            },
        )
        .collect();
    // Node B refuses another unchecked, even the right code (before, it checked it: the
    // right code logged in, and a wrong one was counted as a guess past the limit).
    let step = append_on(&n.b, &format!("hunter2{}", code_at(now)));
    assert!(
        !is_accept(&step),
        "node B checked a code past the limit: {step:?}"
    );
    assert!(
        last_reason(&n.w).contains("too many at once"),
        "{}",
        last_reason(&n.w)
    );
    assert!(!is_accept(&append_on(&n.b, "hunter2000001")));
    assert!(
        last_reason(&n.w).contains("too many at once"),
        "{}",
        last_reason(&n.w)
    );
    assert_eq!(
        code_failures(&n),
        10,
        "each check on A reserved its failure"
    );
    // The checks on A end unsettled (none was counted): their failures are given back.
    drop(held);
    assert_eq!(code_failures(&n), 3);
    assert!(is_accept(&append_on(
        &n.b,
        &format!("hunter2{}", code_at(now))
    )));
    assert_eq!(code_failures(&n), 0, "a good code ends the streak");
}

#[test]
fn guesses_sent_at_once_to_two_nodes_never_pass_the_lock() {
    let n = nodes();
    let (t, alice) = (tenant(&n), alice(&n));
    for _ in 0..3 {
        assert!(!is_accept(&append_on(&n.w.engine, "hunter2000000")));
        n.w.clock.advance(1);
    }
    n.w.clock.advance(3600);
    let now = n.w.clock.now();
    // 8 guesses on each node at the same moment, each held until all have been gated.
    let barrier = std::sync::Barrier::new(16);
    let passed = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let node = if i % 2 == 0 { &n.w.engine } else { &n.b };
                let (barrier, t, alice) = (&barrier, &t, &alice);
                scope.spawn(move || {
                    barrier.wait();
                    let gate = node.throttle_gate(t, alice, now).unwrap();
                    let passed = gate.is_ok();
                    barrier.wait();
                    passed
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&p| p)
            .count()
    });
    // 3 on record: 7 more may be checked, on all nodes together (before: 7 on each).
    assert_eq!(passed, 7);
    assert_eq!(code_failures(&n), 3, "all given back");
}

#[test]
fn wrong_codes_on_two_nodes_grow_the_delays_and_lock_as_on_one() {
    let n = nodes();
    let shown = || n.w.admin.show_user("acme", "alice").unwrap().throttle;
    let nodes = [&n.w.engine, &n.b];
    for i in 0..5 {
        assert!(!is_accept(&append_on(nodes[i % 2], "hunter2000000")));
        assert_eq!(last_reason(&n.w), "wrong code");
        assert_eq!(
            code_failures(&n),
            i as u32 + 1,
            "each wrong code counted once"
        );
    }
    let fifth = n.w.clock.now();
    assert_eq!(
        shown(),
        Some(ThrottleInForce::Delayed {
            failures: 5,
            next_try_at: fifth + 2
        })
    );
    // Fifth failure: a 2 s delay is owed; even the right code is refused now, on both.
    for node in nodes {
        assert!(!is_accept(&append_on(
            node,
            &format!("hunter2{}", code_at(T0))
        )));
        assert!(
            last_reason(&n.w).contains("throttled"),
            "{}",
            last_reason(&n.w)
        );
    }
    assert_eq!(code_failures(&n), 5, "a refusal counts nothing");
    n.w.clock.advance(2);
    assert!(!is_accept(&append_on(&n.b, "hunter2000000"))); // sixth failure -> 4 s
    let sixth = n.w.clock.now();
    assert_eq!(
        shown(),
        Some(ThrottleInForce::Delayed {
            failures: 6,
            next_try_at: sixth + 4
        })
    );
    for i in 6..10 {
        n.w.clock.advance(300);
        assert!(!is_accept(&append_on(nodes[i % 2], "hunter2000000")));
        assert_eq!(last_reason(&n.w), "wrong code");
    }
    let tenth = n.w.clock.now();
    assert_eq!(
        shown(),
        Some(ThrottleInForce::Locked {
            failures: 10,
            until: tenth + 30 * 60
        })
    );
    n.w.clock.advance(300);
    let now = n.w.clock.now();
    for node in nodes {
        assert!(!is_accept(&append_on(
            node,
            &format!("hunter2{}", code_at(now))
        )));
        assert!(
            last_reason(&n.w).contains("locked"),
            "{}",
            last_reason(&n.w)
        );
    }
    n.w.admin.unlock("acme", "alice").unwrap();
    assert!(is_accept(&append_on(
        &n.b,
        &format!("hunter2{}", code_at(now))
    )));
    assert_eq!(shown(), None);
    // A right code with nothing on record gives its reservation back and leaves no row.
    n.w.clock.advance(30);
    let now = n.w.clock.now();
    assert!(is_accept(&append_on(
        &n.w.engine,
        &format!("hunter2{}", code_at(now))
    )));
    let key = second_factor_key(&alice(&n));
    assert_eq!(
        n.w.engine.store().throttle(1, &key).unwrap(),
        Throttle::default()
    );
}

#[test]
fn an_answer_that_is_no_code_leaves_the_streak_and_its_delay_as_they_were() {
    // It reserves a failure at its gate and gives it back: the failures on record and
    // the time the delay counts from are as before.
    let n = nodes();
    for _ in 0..6 {
        n.w.clock.advance(300);
        assert!(!is_accept(&append_on(&n.w.engine, "hunter2000000")));
    }
    let key = second_factor_key(&alice(&n));
    let before = n.w.engine.store().throttle(1, &key).unwrap();
    assert_eq!(before.failures, 6);
    n.w.clock.advance(4);
    let s =
        n.b.start(&alice_request(
            "192.0.2.10",
            LoginMode::Challenge,
            "hunter2",
        ))
        .unwrap();
    let txn = prompt_txn(&s);
    let s = answer(&n.w, "alice", "192.0.2.10", &txn, "");
    assert!(matches!(s, Step::Prompt { .. }), "{s:?}");
    assert_eq!(n.w.engine.store().throttle(1, &key).unwrap(), before);
    let now = n.w.clock.now();
    let s = answer(&n.w, "alice", "192.0.2.10", &prompt_txn(&s), &code_at(now));
    assert!(is_accept(&s), "{s:?}");
    assert_eq!(code_failures(&n), 0);
}

#[test]
fn passwords_being_checked_on_one_node_count_on_the_other() {
    let n = nodes();
    let t = tenant(&n);
    let src = "203.0.113.99";
    let now = n.w.clock.now();
    // Node A checks 21 passwords from there at once: if all were wrong, the bucket (20)
    // would overflow with the last. A 22nd is refused, on A and on B alike.
    let req = alice_request(src, LoginMode::Challenge, "guess");
    let held: Vec<_> = (0..21)
        .map(
            |_| match n.w.engine.source_gate(&t, &req, 1, now).unwrap() {
                Ok(checking) => checking,
                Err(refused) => panic!("{}", refused.reason),
            },
        )
        .collect();
    // Before, node B checked it: "wrong password".
    let _ = n.b.start(&req).unwrap();
    assert!(
        last_reason(&n.w).contains("too many at once"),
        "{}",
        last_reason(&n.w)
    );
    assert_eq!(
        source_row(&n, src).failures,
        21,
        "each check on A reserved its failure"
    );
    drop(held);
    assert_eq!(source_row(&n, src), Throttle::default(), "all given back");
    // Alone, it is checked.
    let _ = n.b.start(&req).unwrap();
    assert_eq!(last_reason(&n.w), "wrong password");
    assert_eq!(source_row(&n, src).failures, 1);
}

#[test]
fn passwords_sent_at_once_to_two_nodes_never_overflow_the_bucket() {
    let n = nodes();
    let t = tenant(&n);
    let src = "203.0.113.98";
    let now = n.w.clock.now();
    let req = alice_request(src, LoginMode::Challenge, "guess");
    let barrier = std::sync::Barrier::new(30);
    let passed = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let node = if i % 2 == 0 { &n.w.engine } else { &n.b };
                let (barrier, t, req) = (&barrier, &t, &req);
                scope.spawn(move || {
                    barrier.wait();
                    let gate = node.source_gate(t, req, 1, now).unwrap();
                    let passed = gate.is_ok();
                    barrier.wait();
                    passed
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&p| p)
            .count()
    });
    // The bucket takes 20 and the 21st blocks: 21 checks in play at most, on all nodes
    // together (before: 15 on each).
    assert_eq!(passed, 21);
    assert_eq!(source_row(&n, src), Throttle::default());
}

#[test]
fn wrong_passwords_on_two_nodes_block_the_address_as_on_one() {
    let n = nodes();
    let src = "203.0.113.7";
    let nodes = [&n.w.engine, &n.b];
    // A right password counts nothing, and leaves nothing.
    let right = |node: &Engine| {
        let now = n.w.clock.now();
        node.start(&alice_request(
            src,
            LoginMode::Append,
            &format!("hunter2{}", code_at(now)),
        ))
        .unwrap()
    };
    assert!(is_accept(&right(&n.b)));
    assert_eq!(source_row(&n, src), Throttle::default());
    // Wrong passwords, in any mode on any node, are answered as wrong passwords and
    // counted once each.
    let wrong = |i: usize| {
        let mode = [
            LoginMode::Challenge,
            LoginMode::Challenge,
            LoginMode::Append,
        ][i % 3];
        let _ = nodes[i % 2]
            .start(&alice_request(src, mode, "guess"))
            .unwrap();
        assert_eq!(last_reason(&n.w), "wrong password");
    };
    for i in 0..19 {
        wrong(i);
        assert_eq!(source_row(&n, src).failures, i as u32 + 1);
    }
    // 30 s drain one (20 per 10 min); a right password adds nothing.
    n.w.clock.advance(30);
    assert_eq!(source_level(&n, src), 18);
    assert!(is_accept(&right(&n.w.engine)));
    assert_eq!(source_level(&n, src), 18);
    wrong(1);
    wrong(2);
    assert_eq!(source_level(&n, src), 20);
    // The 21st fills the bucket: the address is refused unheard from now on, everywhere.
    wrong(3);
    for node in nodes {
        let step = right(node);
        assert!(
            matches!(&step, Step::Reject { user_message } if user_message.contains("your address")),
            "{step:?}"
        );
        assert!(
            last_reason(&n.w).contains("source 203.0.113.7 is blocked"),
            "{}",
            last_reason(&n.w)
        );
    }
    // The block lasts the window (10 min), then the address starts afresh.
    n.w.clock.advance(10 * 60 + 1);
    assert!(is_accept(&right(&n.b)));
}

#[test]
fn an_append_login_keeps_only_its_wrong_readings() {
    let n = nodes();
    let src = "203.0.113.70";
    // `Summer123456789`: three readings and the whole string, all wrong: four counted.
    let _ =
        n.b.start(&alice_request(src, LoginMode::Append, "Summer123456789"))
            .unwrap();
    assert_eq!(last_reason(&n.w), "wrong password");
    assert_eq!(source_row(&n, src).failures, 4);
    // The right password read first: nothing counted, the reservation given back.
    let now = n.w.clock.now();
    let s =
        n.w.engine
            .start(&alice_request(
                src,
                LoginMode::Append,
                &format!("hunter2{}", code_at(now)),
            ))
            .unwrap();
    assert!(is_accept(&s), "{s:?}");
    assert_eq!(source_row(&n, src).failures, 4);
}

/// One node on a shared store in a file (another connection can then change the
/// database under it); alice as in [`nodes`].
fn file_node(path: &std::path::Path) -> Engine {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).unwrap().with_shared(true));
    let clock = Arc::new(ManualClock::new(T0 + 5));
    let key = Arc::new(MasterKey::from_bytes([7; 32]));
    let hasher = crate::password::cheap();
    let engine = Engine::new(
        store.clone(),
        clock.clone(),
        key.clone(),
        hasher.clone(),
        EngineSettings::default(),
    );
    let admin = Admin::new(store, clock, key, hasher, "Test".into(), 1);
    admin.add_tenant("acme").unwrap();
    admin
        .add_user(
            "acme",
            "alice",
            NewPassword::Plain(Zeroizing::new(b"hunter2".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
    admin
        .enroll_totp("acme", "alice", Some(SECRET), 6, "SHA1")
        .unwrap();
    engine
}

#[test]
fn a_check_whose_reservation_cannot_be_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.db");
    let engine = file_node(&path);
    // The throttles can be read but not written (a database that refuses writes: full,
    // or no connection free for them).
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER no_insert BEFORE INSERT ON throttles BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER no_update BEFORE UPDATE ON throttles BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let right = format!("hunter2{}", code_at(T0));
    // The code is not checked (fail closed): before, the right code let the user in.
    let req = LoginRequest {
        source_limited: false,
        ..alice_request("192.0.2.10", LoginMode::Append, &right)
    };
    assert!(engine.start(&req).is_err());
    other
        .execute_batch("DROP TRIGGER no_insert; DROP TRIGGER no_update;")
        .unwrap();
    // It was not used: it logs in now.
    let step = engine.start(&req).unwrap();
    assert!(is_accept(&step), "{step:?}");
}

#[test]
fn a_guess_whose_check_fails_in_the_store_stays_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.db");
    let engine = file_node(&path);
    let alice = engine.store().user_by_name(1, "alice").unwrap().unwrap();
    let failures = || {
        let key = second_factor_key(&alice);
        engine.store().throttle(1, &key).unwrap().failures
    };
    // A bypass code's length: the guess is looked up in the store, which fails (before,
    // the failure was counted after the check, and the check's error skipped it).
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("ALTER TABLE bypass_codes RENAME TO bypass_codes_away")
        .unwrap();
    let guess = alice_request("192.0.2.10", LoginMode::OtpOnly, "123456789");
    for n in 1..=3 {
        assert!(engine.start(&guess).is_err());
        assert_eq!(failures(), n, "guess {n} counted");
    }
    other
        .execute_batch("ALTER TABLE bypass_codes_away RENAME TO bypass_codes")
        .unwrap();
    let _ = engine.start(&guess).unwrap();
    assert_eq!(failures(), 4);
}
