//! One behavioural test suite that every [`Store`] backend must pass: run against SQLite
//! (tests/store_sqlite.rs) and PostgreSQL (tests/store_postgres.rs).

use portcullis_core::clock::UnixTime;
use portcullis_core::model::*;
use portcullis_core::store::{
    FailOpenRecord, PushAdded, SendClaim, SendLimits, Store, StoreError, TakenTransaction,
    TxnBinding, FAIL_OPEN_IDS_KEPT,
};

/// Runs every check against a fresh, empty store.
pub fn run_all(s: &dyn Store) {
    tenants_are_unique(s);
    users_are_per_tenant(s);
    user_names_are_listed_per_tenant(s);
    directory_info_updates_the_user(s);
    factor_lifecycle(s);
    recovery_codes_are_single_use(s);
    otp_replay_cache_refuses_second_use(s);
    otp_use_touches_the_factor_only_when_fresh(s);
    transaction_steps_are_single_use_and_expire(s);
    a_transaction_step_is_taken_only_by_its_binding(s);
    throttle_counts_and_clears(s);
    failures_are_reserved_under_the_limit_also_at_once(s);
    draining_failures_are_reserved_under_the_limit_also_at_once(s);
    audit_is_listed_in_order_and_filtered(s);
    fail_open_reports_are_recorded_once_per_host(s);
    deleting_a_user_removes_their_state(s);
    factor_params_compare_and_set(s);
    bypass_codes_are_limited_and_expire(s);
    sent_codes_are_single_use_and_counted(s);
    remembered_sources_expire_and_can_be_forgotten(s);
    push_decisions_are_made_once(s);
    user_attributes_are_set_and_removed(s);
    session_epochs_are_raised_by_what_ends_web_sessions(s);
    admin_tokens_are_listed_per_tenant_and_revoked_once(s);
    admin_tokens_keep_their_expiry(s);
    pam_hosts_are_per_tenant_and_revocable(s);
    import_is_all_or_nothing(s);
    enrollment_links_open_once_and_expire(s);
    code_sends_are_claimed_within_the_limits(s);
    code_sends_claimed_at_once_never_exceed_the_limits(s);
    pushes_are_added_under_the_cap_also_at_once(s);
    an_expired_lock_is_cleared_only_as_it_was_read(s);
    two_spellings_created_at_once_make_one_user(s);
    only_one_first_factor_is_confirmed_also_at_once(s);
}

/// `confirm_first_factor`: two pending factors confirmed at once, one wins; none after a
/// factor is confirmed.
fn only_one_first_factor_is_confirmed_also_at_once(s: &dyn Store) {
    let t = tenant(s, "first-factor");
    for round in 0..5 {
        let u = user(s, &t, &format!("gil{round}"));
        let ids: Vec<String> = (0..4).map(|i| format!("ff-{round}-{i}")).collect();
        for id in &ids {
            s.add_factor(&factor(id, u.id)).unwrap();
        }
        let won = at_once(4, |i| s.confirm_first_factor(u.id, &ids[i], 200).unwrap());
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
    }
}

/// `create_user_unless_alike`: one user per folded name, also when the spellings are
/// created at the same moment (two first logins of one directory account).
fn two_spellings_created_at_once_make_one_user(s: &dyn Store) {
    let t = tenant(s, "spellings");
    let fold = |n: &str| n.to_lowercase();
    let new = |name: &str| NewUser {
        tenant_id: t.id,
        name: name.into(),
        ..Default::default()
    };
    let made = s
        .create_user_unless_alike(&new("Erin"), 100, &fold)
        .unwrap()
        .expect("a new name is created");
    assert_eq!(made.name, "Erin");
    assert_eq!(
        s.create_user_unless_alike(&new("ERIN"), 100, &fold)
            .unwrap(),
        Err("Erin".to_string())
    );
    assert_eq!(
        s.create_user_unless_alike(&new("Erin"), 100, &fold)
            .unwrap(),
        Err("Erin".to_string())
    );
    for round in 0..5 {
        let spellings = [format!("frank{round}"), format!("FRANK{round}")];
        let results = at_once(8, |i| {
            s.create_user_unless_alike(&new(&spellings[i % 2]), 100, &fold)
        });
        let created: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|r| r.as_ref().ok()))
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {results:?}");
        for r in &results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(name)) => assert_eq!(name, &created[0].name),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let stored = s
            .user_names(t.id)
            .unwrap()
            .into_iter()
            .filter(|n| fold(n) == format!("frank{round}"))
            .count();
        assert_eq!(stored, 1, "round {round}");
    }
}

/// Runs `claim` on `n` threads released at the same moment; their results.
fn at_once<T: Send>(n: usize, claim: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, claim) = (&barrier, &claim);
                scope.spawn(move || {
                    barrier.wait();
                    claim(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("claiming thread"))
            .collect()
    })
}

fn code_sends_are_claimed_within_the_limits(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "quinn");
    let limits = SendLimits {
        max_per_hour: 3,
        resend_after: 30,
    };
    let claim = |res: &str, now| s.claim_code_send(u.id, "fac-q", res, limits, now).unwrap();
    assert_eq!(claim("reserved:1", 1_000), SendClaim::Claimed);
    // A claim counts as a send, but is never a code.
    assert_eq!(s.sent_codes_since(u.id, 0).unwrap(), (1, Some(1_000)));
    assert_eq!(s.use_sent_code(u.id, "reserved:1", 1_000).unwrap(), None);
    assert_eq!(
        claim("reserved:2", 1_029),
        SendClaim::TooSoon { last: 1_000 }
    );
    // A failed send gives its claim back: nothing of it counts.
    s.release_code_send(u.id, "reserved:1").unwrap();
    assert_eq!(s.sent_codes_since(u.id, 0).unwrap(), (0, None));
    assert_eq!(claim("reserved:2", 1_010), SendClaim::Claimed);
    // A send that went out: the claim becomes the code, usable once, until it expires.
    assert!(s
        .confirm_code_send(u.id, "reserved:2", "q-code-2", 1_310)
        .unwrap());
    assert!(
        !s.confirm_code_send(u.id, "reserved:2", "q-code-x", 1_310)
            .unwrap(),
        "confirmed once"
    );
    s.release_code_send(u.id, "q-code-2").unwrap();
    assert_eq!(
        s.use_sent_code(u.id, "q-code-2", 1_011).unwrap().as_deref(),
        Some("fac-q"),
        "releasing a code that went out does nothing"
    );
    assert_eq!(claim("reserved:3", 1_050), SendClaim::Claimed);
    assert_eq!(claim("reserved:4", 1_090), SendClaim::Claimed);
    assert_eq!(claim("reserved:5", 1_130), SendClaim::QuotaExceeded);
    // An hour after the first of the three, one fits again.
    assert_eq!(claim("reserved:5", 1_010 + 3_600), SendClaim::QuotaExceeded);
    assert_eq!(claim("reserved:5", 1_011 + 3_600), SendClaim::Claimed);
    // Another user's sends are their own.
    let other = user(s, &t, "quentin");
    assert_eq!(
        s.claim_code_send(other.id, "fac-o", "reserved:o", limits, 1_130)
            .unwrap(),
        SendClaim::Claimed
    );
    // No sends allowed at all.
    let none = SendLimits {
        max_per_hour: 0,
        resend_after: 0,
    };
    let third = user(s, &t, "quill");
    assert_eq!(
        s.claim_code_send(third.id, "fac-3", "reserved:n", none, 1_000)
            .unwrap(),
        SendClaim::QuotaExceeded
    );
}

fn code_sends_claimed_at_once_never_exceed_the_limits(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    // The hourly quota: of 12 claims at once, 4 are taken.
    let u = user(s, &t, "rush");
    let quota = SendLimits {
        max_per_hour: 4,
        resend_after: 0,
    };
    for round in 0..3i64 {
        let now = 10_000 + round * 10_000;
        let claims = at_once(12, |i| {
            s.claim_code_send(u.id, "fac-r", &format!("reserved:r{round}-{i}"), quota, now)
                .unwrap()
        });
        let taken = claims.iter().filter(|c| **c == SendClaim::Claimed).count();
        assert_eq!(taken, 4, "round {round}: {claims:?}");
        assert!(
            claims
                .iter()
                .all(|c| matches!(c, SendClaim::Claimed | SendClaim::QuotaExceeded)),
            "{claims:?}"
        );
        assert_eq!(s.sent_codes_since(u.id, now - 3_600).unwrap().0, 4);
    }
    // The resend pause: of 12 claims at once, one is taken.
    let v = user(s, &t, "rusty");
    let pause = SendLimits {
        max_per_hour: 100,
        resend_after: 30,
    };
    let claims = at_once(12, |i| {
        s.claim_code_send(v.id, "fac-r", &format!("reserved:p{i}"), pause, 5_000)
            .unwrap()
    });
    let taken = claims.iter().filter(|c| **c == SendClaim::Claimed).count();
    assert_eq!(taken, 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, SendClaim::Claimed | SendClaim::TooSoon { last: 5_000 })),
        "{claims:?}"
    );
}

fn pushes_are_added_under_the_cap_also_at_once(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "petra");
    let push = |id: String, at: UnixTime| PushRequest {
        id: id.clone(),
        tenant_id: t.id,
        user_id: u.id,
        txn_id: format!("txn-{id}"),
        factor_id: "fac-push".into(),
        token_hash: format!("hash-{id}"),
        number: None,
        status: PushStatus::Pending,
        detail: None,
        username: u.name.clone(),
        client: "vpn".into(),
        source: "10.0.0.9".into(),
        created_at: at,
        expires_at: at + 60,
        decided_at: None,
    };
    assert_eq!(
        s.add_push_capped(&push("cap-1".into(), 100), 0, 2).unwrap(),
        PushAdded::Added
    );
    assert_eq!(
        s.add_push_capped(&push("cap-2".into(), 110), 0, 2).unwrap(),
        PushAdded::Added
    );
    assert_eq!(
        s.add_push_capped(&push("cap-3".into(), 120), 0, 2).unwrap(),
        PushAdded::CapReached { sent: 2 }
    );
    assert_eq!(s.push_by_id("cap-3").unwrap(), None, "not added");
    // Outside the window the older pushes no longer count.
    assert_eq!(
        s.add_push_capped(&push("cap-4".into(), 120), 105, 2)
            .unwrap(),
        PushAdded::Added
    );
    // Many logins pushing at once: no more than the cap get through.
    let v = user(s, &t, "pavel");
    let push_v = |id: String| PushRequest {
        user_id: v.id,
        username: v.name.clone(),
        ..push(id, 5_000)
    };
    let added = at_once(12, |i| {
        s.add_push_capped(&push_v(format!("race-{i}")), 4_000, 3)
            .unwrap()
    });
    let n = added.iter().filter(|a| **a == PushAdded::Added).count();
    assert_eq!(n, 3, "{added:?}");
    assert_eq!(s.pushes_since(v.id, 0).unwrap(), 3);
}

fn an_expired_lock_is_cleared_only_as_it_was_read(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let key = "user:991:second_factor";
    s.record_failure(t.id, key, 10).unwrap();
    s.record_failure(t.id, key, 11).unwrap();
    s.lock_until(t.id, key, 50).unwrap();
    let seen = s.throttle(t.id, key).unwrap();
    assert_eq!(seen.locked_until, Some(50));
    // Not run out yet: kept.
    assert!(!s.clear_expired_lock(t.id, key, &seen, 49).unwrap());
    assert_eq!(s.throttle(t.id, key).unwrap(), seen);
    // Another node counted a failure (and locked again) after this one read the row.
    s.record_failure(t.id, key, 60).unwrap();
    s.lock_until(t.id, key, 500).unwrap();
    assert!(
        !s.clear_expired_lock(t.id, key, &seen, 60).unwrap(),
        "a stale clear removed a fresh lock"
    );
    let now = s.throttle(t.id, key).unwrap();
    assert_eq!((now.failures, now.locked_until), (3, Some(500)));
    // Only a failure counted since (the old lock still on the row): kept too.
    let other = "user:992:second_factor";
    s.record_failure(t.id, other, 10).unwrap();
    s.lock_until(t.id, other, 50).unwrap();
    let seen_other = s.throttle(t.id, other).unwrap();
    s.record_failure(t.id, other, 70).unwrap();
    assert!(!s.clear_expired_lock(t.id, other, &seen_other, 70).unwrap());
    assert_eq!(s.throttle(t.id, other).unwrap().failures, 2);
    // The row as read, run out: cleared.
    let seen = s.throttle(t.id, key).unwrap();
    assert!(s.clear_expired_lock(t.id, key, &seen, 500).unwrap());
    assert_eq!(s.throttle(t.id, key).unwrap(), Throttle::default());
    // A row without a lock is never cleared this way.
    let plain = "source:radius:192.0.2.77:first_factor";
    s.record_failure(t.id, plain, 10).unwrap();
    let seen = s.throttle(t.id, plain).unwrap();
    assert!(!s.clear_expired_lock(t.id, plain, &seen, 1_000).unwrap());
    assert_eq!(s.throttle(t.id, plain).unwrap().failures, 1);
}

fn user_attributes_are_set_and_removed(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "attr");
    assert!(u.attributes.is_empty());
    s.set_user_attribute(u.id, "use_mfa", Some("false"))
        .unwrap();
    s.set_user_attribute(u.id, "dept", Some("ops")).unwrap();
    s.set_user_attribute(u.id, "dept", Some("it")).unwrap();
    let got = s.user_by_name(t.id, "attr").unwrap().unwrap().attributes;
    assert_eq!(got.get("use_mfa").map(String::as_str), Some("false"));
    assert_eq!(got.get("dept").map(String::as_str), Some("it"));
    s.set_user_attribute(u.id, "dept", None).unwrap();
    let got = s.list_users(t.id).unwrap();
    let got = &got.iter().find(|x| x.name == "attr").unwrap().attributes;
    assert_eq!(got.len(), 1);
    assert!(matches!(
        s.set_user_attribute(987_654, "k", Some("v")),
        Err(StoreError::NotFound { .. })
    ));
}

/// The user's `session_epoch` (web sessions issued under an older one are over): raised
/// by one by `raise_session_epoch`, by setting a password, by disabling (not enabling)
/// and by an import that sets a password or disables; read by every way of reading a user.
fn session_epochs_are_raised_by_what_ends_web_sessions(s: &dyn Store) {
    let t = tenant(s, "suite-epoch");
    let u = user(s, &t, "eve");
    let other = user(s, &t, "other");
    let epoch = |name: &str| {
        let by_name = s.user_by_name(t.id, name).unwrap().unwrap().session_epoch;
        let (with, _) = s.user_with_factors(t.id, name).unwrap().unwrap();
        let listed = s.list_users(t.id).unwrap();
        let listed = listed.iter().find(|x| x.name == name).unwrap();
        assert_eq!(with.session_epoch, by_name, "user_with_factors");
        assert_eq!(listed.session_epoch, by_name, "list_users");
        by_name
    };
    assert_eq!(u.session_epoch, 0, "a new user");
    assert_eq!(epoch("eve"), 0);
    s.add_factor(&factor("fac-epoch-1", u.id)).unwrap();
    assert!(s.raise_session_epoch(u.id).unwrap());
    assert_eq!(epoch("eve"), 1);
    assert!(s.raise_session_epoch(u.id).unwrap());
    assert_eq!(epoch("eve"), 2);
    assert!(!s.raise_session_epoch(987_654).unwrap(), "no such user");
    s.set_password_hash(u.id, Some("$6$salt$z")).unwrap();
    assert_eq!(epoch("eve"), 3, "password set");
    s.set_password_hash(u.id, None).unwrap();
    assert_eq!(epoch("eve"), 4, "password removed");
    s.set_user_disabled(u.id, true).unwrap();
    assert_eq!(epoch("eve"), 5, "disabled");
    s.set_user_disabled(u.id, false).unwrap();
    assert_eq!(epoch("eve"), 5, "enabling ends nothing");
    s.set_user_attribute(u.id, "dept", Some("ops")).unwrap();
    s.set_directory_info(u.id, Some("eve@example.org"), None, &[])
        .unwrap();
    assert_eq!(epoch("eve"), 5, "other changes end nothing");
    let update = |password_hash: Option<&str>, disabled: Option<bool>| ImportUser::Update {
        user: u.id,
        email: None,
        phone: None,
        groups: None,
        password_hash: password_hash.map(str::to_string),
        disabled,
    };
    s.import_users(&[update(None, None)], 100).unwrap();
    s.import_users(&[update(None, Some(false))], 100).unwrap();
    assert_eq!(epoch("eve"), 5, "an import that sets neither");
    s.import_users(&[update(Some("$6$salt$w"), None)], 100)
        .unwrap();
    assert_eq!(epoch("eve"), 6, "an imported password");
    s.import_users(&[update(None, Some(true))], 100).unwrap();
    assert_eq!(epoch("eve"), 7, "disabled by an import");
    assert_eq!(epoch("other"), 0, "only the user's own");
    assert_eq!(other.session_epoch, 0);
}

fn push_decisions_are_made_once(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "pia");
    let push = |id: &str, txn: &str, at: UnixTime| PushRequest {
        id: id.into(),
        tenant_id: t.id,
        user_id: u.id,
        txn_id: txn.into(),
        factor_id: "fac-push".into(),
        token_hash: format!("hash-{id}"),
        number: Some(42),
        status: PushStatus::Pending,
        detail: None,
        username: u.name.clone(),
        client: "vpn".into(),
        source: "10.0.0.9".into(),
        created_at: at,
        expires_at: at + 60,
        decided_at: None,
    };
    assert_eq!(s.pushes_since(u.id, 0).unwrap(), 0);
    s.add_push_capped(&push("p1", "t1", 100), 0, u32::MAX)
        .unwrap();
    s.add_push_capped(&push("p2", "t1", 110), 0, u32::MAX)
        .unwrap();
    s.add_push_capped(&push("p3", "t2", 120), 0, u32::MAX)
        .unwrap();
    assert_eq!(s.pushes_since(u.id, 0).unwrap(), 3);
    assert_eq!(s.pushes_since(u.id, 110).unwrap(), 2);
    let got = s.push_by_id("p1").unwrap().unwrap();
    assert_eq!(got, push("p1", "t1", 100));
    assert_eq!(s.push_by_id("nope").unwrap(), None);
    assert_eq!(s.push_of_transaction("t1").unwrap().unwrap().id, "p2");
    assert_eq!(s.push_of_transaction("t9").unwrap(), None);
    // Two pushes of one transaction within one second: the one added last is the newest,
    // whatever their (random) ids.
    for (first, second) in [("pa", "pz"), ("qz", "qa")] {
        let txn = format!("t-{first}");
        s.add_push_capped(&push(first, &txn, 130), 0, u32::MAX)
            .unwrap();
        s.add_push_capped(&push(second, &txn, 130), 0, u32::MAX)
            .unwrap();
        assert_eq!(s.push_of_transaction(&txn).unwrap().unwrap().id, second);
    }
    // One decision only; the second answer (approve after deny) does not count.
    assert!(s
        .decide_push("p2", PushStatus::Denied, Some("denied on the device"), 115)
        .unwrap());
    assert!(!s
        .decide_push("p2", PushStatus::Approved, None, 116)
        .unwrap());
    let p2 = s.push_by_id("p2").unwrap().unwrap();
    assert_eq!(p2.status, PushStatus::Denied);
    assert_eq!(p2.detail.as_deref(), Some("denied on the device"));
    assert_eq!(p2.decided_at, Some(115));
    // An expired push cannot be approved.
    assert!(!s
        .decide_push("p3", PushStatus::Approved, None, 180)
        .unwrap());
    assert!(s
        .decide_push("p3", PushStatus::Approved, None, 179)
        .unwrap());
    // Kept a day past expiry for the anti-fatigue count, then purged.
    s.purge_expired(1_000).unwrap();
    assert_eq!(s.pushes_since(u.id, 0).unwrap(), 7);
    s.purge_expired(200 + 86_400).unwrap();
    assert_eq!(s.pushes_since(u.id, 0).unwrap(), 0);
}

fn pam_hosts_are_per_tenant_and_revocable(s: &dyn Store) {
    let a = tenant(s, "suite-a");
    let b = tenant(s, "suite-b");
    let h = s.create_pam_host(a.id, "web1", "hash-a-web1", 100).unwrap();
    assert_eq!(h.tenant, "suite-a");
    assert_eq!(h.name, "web1");
    assert_eq!(h.last_seen_at, None);
    assert!(!h.revoked);
    // The same name in another tenant is another host.
    s.create_pam_host(b.id, "web1", "hash-b-web1", 100).unwrap();
    assert!(matches!(
        s.create_pam_host(a.id, "web1", "hash-other", 100),
        Err(StoreError::AlreadyExists { .. })
    ));
    // The token names the host and its tenant.
    let found = s.pam_host_by_token_hash("hash-b-web1").unwrap().unwrap();
    assert_eq!((found.tenant.as_str(), found.tenant_id), ("suite-b", b.id));
    assert!(s.pam_host_by_token_hash("hash-other").unwrap().is_none());
    // last_seen_at: recorded, then at most once a minute.
    s.touch_pam_host(h.id, 200).unwrap();
    s.touch_pam_host(h.id, 230).unwrap();
    let seen = s.pam_host_by_token_hash("hash-a-web1").unwrap().unwrap();
    assert_eq!(seen.last_seen_at, Some(200));
    s.touch_pam_host(h.id, 260).unwrap();
    assert_eq!(
        s.pam_host_by_token_hash("hash-a-web1")
            .unwrap()
            .unwrap()
            .last_seen_at,
        Some(260)
    );
    // Revoked: still found (the caller refuses it), listed as revoked, revoked once.
    assert!(s.revoke_pam_host(a.id, "web1").unwrap());
    assert!(!s.revoke_pam_host(a.id, "web1").unwrap());
    assert!(!s.revoke_pam_host(a.id, "nope").unwrap());
    assert!(
        s.pam_host_by_token_hash("hash-a-web1")
            .unwrap()
            .unwrap()
            .revoked
    );
    let listed = s.list_pam_hosts(a.id).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
    assert!(!s.list_pam_hosts(b.id).unwrap()[0].revoked);
    // A revoked name can be registered again, with a new token; the old one is gone.
    let again = s
        .create_pam_host(a.id, "web1", "hash-a-web1-new", 300)
        .unwrap();
    assert!(!again.revoked);
    assert_eq!(again.created_at, 300);
    assert!(s.pam_host_by_token_hash("hash-a-web1").unwrap().is_none());
    assert!(s
        .pam_host_by_token_hash("hash-a-web1-new")
        .unwrap()
        .is_some());
}

fn remembered_sources_expire_and_can_be_forgotten(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "remy");
    s.remember_source(u.id, "10.0.0.1", "r", 200, 100).unwrap();
    s.remember_source(u.id, "10.0.0.2", "r", 200, 100).unwrap();
    assert_eq!(
        s.remembered_until(u.id, "10.0.0.1", "r", 150).unwrap(),
        Some(200)
    );
    assert_eq!(
        s.remembered_until(u.id, "10.0.0.1", "other-rule", 150)
            .unwrap(),
        None
    );
    assert_eq!(
        s.remembered_until(u.id, "10.0.0.1", "r", 200).unwrap(),
        None,
        "expired"
    );
    s.remember_source(u.id, "10.0.0.1", "r", 300, 250).unwrap();
    assert_eq!(
        s.remembered_until(u.id, "10.0.0.1", "r", 250).unwrap(),
        Some(300),
        "extended"
    );
    assert_eq!(s.forget_sources(u.id, Some("10.0.0.1")).unwrap(), 1);
    assert_eq!(
        s.remembered_until(u.id, "10.0.0.1", "r", 250).unwrap(),
        None
    );
    assert_eq!(s.forget_sources(u.id, None).unwrap(), 1);
}

fn sent_codes_are_single_use_and_counted(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "sid");
    assert_eq!(s.sent_codes_since(u.id, 0).unwrap(), (0, None));
    s.add_sent_code(u.id, "fac-sms", "c1", 400, 100).unwrap();
    s.add_sent_code(u.id, "fac-sms", "c2", 450, 150).unwrap();
    assert_eq!(s.sent_codes_since(u.id, 0).unwrap(), (2, Some(150)));
    assert_eq!(s.sent_codes_since(u.id, 120).unwrap(), (1, Some(150)));
    assert_eq!(
        s.use_sent_code(u.id, "c1", 200).unwrap().as_deref(),
        Some("fac-sms")
    );
    assert_eq!(s.use_sent_code(u.id, "c1", 201).unwrap(), None, "used");
    assert_eq!(s.use_sent_code(u.id, "c2", 450).unwrap(), None, "expired");
    let other = user(s, &t, "mallory");
    s.add_sent_code(u.id, "fac-sms", "c3", 900, 100).unwrap();
    assert_eq!(
        s.use_sent_code(other.id, "c3", 200).unwrap(),
        None,
        "another user's code"
    );
}

fn factor_params_compare_and_set(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "hank");
    s.add_factor(&factor("fac-cas", u.id)).unwrap();
    assert!(s
        .update_factor_params("fac-cas", "{}", "{\"counter\":1}")
        .unwrap());
    assert!(
        !s.update_factor_params("fac-cas", "{}", "{\"counter\":2}")
            .unwrap(),
        "stale"
    );
    assert_eq!(s.factors_of(u.id).unwrap()[0].params, "{\"counter\":1}");
}

fn bypass_codes_are_limited_and_expire(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "bea");
    assert!(!s.has_bypass_code(u.id, 10).unwrap());
    s.add_bypass_code(u.id, "b1", 2, 100, 10).unwrap();
    assert!(s.has_bypass_code(u.id, 10).unwrap());
    assert!(s.use_bypass_code(u.id, "b1", 11).unwrap());
    assert!(s.use_bypass_code(u.id, "b1", 12).unwrap());
    assert!(!s.use_bypass_code(u.id, "b1", 13).unwrap(), "uses spent");
    assert!(!s.has_bypass_code(u.id, 13).unwrap());
    s.add_bypass_code(u.id, "b2", 5, 100, 10).unwrap();
    assert!(!s.use_bypass_code(u.id, "b2", 100).unwrap(), "expired");
    let other = user(s, &t, "mallory");
    s.add_bypass_code(u.id, "b3", 5, 1000, 10).unwrap();
    assert!(
        !s.use_bypass_code(other.id, "b3", 20).unwrap(),
        "another user's code"
    );
}

fn tenant(s: &dyn Store, name: &str) -> Tenant {
    match s.tenant_by_name(name).unwrap() {
        Some(t) => t,
        None => s.create_tenant(name, 100).unwrap(),
    }
}

fn user(s: &dyn Store, t: &Tenant, name: &str) -> User {
    match s.user_by_name(t.id, name).unwrap() {
        Some(u) => u,
        None => s
            .create_user(
                &NewUser {
                    tenant_id: t.id,
                    name: name.into(),
                    groups: vec!["staff".into()],
                    ..Default::default()
                },
                100,
            )
            .unwrap(),
    }
}

fn factor(id: &str, user: UserId) -> Factor {
    Factor {
        id: id.into(),
        user_id: user,
        kind: FactorKind::Totp,
        state: FactorState::Pending,
        sealed_secret: vec![1, 2, 3],
        params: "{}".into(),
        created_at: 100,
        confirmed_at: None,
        last_used_at: None,
    }
}

fn tenants_are_unique(s: &dyn Store) {
    let t = s.create_tenant("suite-a", 1).unwrap();
    assert!(matches!(
        s.create_tenant("suite-a", 2),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.tenant_by_name("suite-a").unwrap(), Some(t));
    assert!(s.tenant_by_name("nope").unwrap().is_none());
    assert!(s
        .list_tenants()
        .unwrap()
        .iter()
        .any(|t| t.name == "suite-a"));
}

fn users_are_per_tenant(s: &dyn Store) {
    let a = tenant(s, "suite-a");
    let b = tenant(s, "suite-b");
    let ua = user(s, &a, "alice");
    let ub = user(s, &b, "alice");
    assert_ne!(ua.id, ub.id);
    assert!(matches!(
        s.create_user(
            &NewUser {
                tenant_id: a.id,
                name: "alice".into(),
                ..Default::default()
            },
            1
        ),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        s.user_by_name(a.id, "alice").unwrap().unwrap().groups,
        vec!["staff"]
    );
    s.set_password_hash(ua.id, Some("$argon2id$x")).unwrap();
    s.set_user_disabled(ua.id, true).unwrap();
    let again = s.user_by_name(a.id, "alice").unwrap().unwrap();
    assert_eq!(again.password_hash.as_deref(), Some("$argon2id$x"));
    assert!(again.disabled);
    assert!(s
        .user_by_name(b.id, "alice")
        .unwrap()
        .unwrap()
        .password_hash
        .is_none());
    assert_eq!(s.list_users(b.id).unwrap().len(), 1);
}

fn user_names_are_listed_per_tenant(s: &dyn Store) {
    let t = tenant(s, "suite-names");
    let other = tenant(s, "suite-names-other");
    user(s, &t, "bob");
    user(s, &t, "Alice");
    user(s, &t, "ärger");
    user(s, &other, "carol");
    let mut names = s.user_names(t.id).unwrap();
    names.sort();
    assert_eq!(names, ["Alice", "bob", "ärger"]);
}

fn directory_info_updates_the_user(s: &dyn Store) {
    let t = tenant(s, "suite-dir");
    let u = user(s, &t, "dora");
    s.set_directory_info(
        u.id,
        Some("dora@example.org"),
        Some("+15550100"),
        &["vpn".into()],
    )
    .unwrap();
    let got = s.user_by_name(t.id, "dora").unwrap().unwrap();
    assert_eq!(got.email.as_deref(), Some("dora@example.org"));
    assert_eq!(got.phone.as_deref(), Some("+15550100"));
    assert_eq!(got.groups, ["vpn"]);
}

fn factor_lifecycle(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "fred");
    s.add_factor(&factor("fac-1", u.id)).unwrap();
    assert_eq!(s.factors_of(u.id).unwrap()[0].state, FactorState::Pending);
    assert!(s.confirm_factor(u.id, "fac-1", 200).unwrap());
    assert!(
        !s.confirm_factor(u.id, "fac-1", 201).unwrap(),
        "confirming twice"
    );
    let f = &s.factors_of(u.id).unwrap()[0];
    assert_eq!(
        (f.state, f.confirmed_at),
        (FactorState::Confirmed, Some(200))
    );
    assert_eq!(f.sealed_secret, vec![1, 2, 3]);
    s.touch_factor("fac-1", 300).unwrap();
    assert_eq!(s.factors_of(u.id).unwrap()[0].last_used_at, Some(300));
    let other = user(s, &t, "mallory");
    assert!(
        !s.remove_factor(other.id, "fac-1").unwrap(),
        "another user's factor"
    );
    assert!(s.remove_factor(u.id, "fac-1").unwrap());
    assert!(s.factors_of(u.id).unwrap().is_empty());
}

fn recovery_codes_are_single_use(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "rita");
    s.replace_recovery_codes(u.id, &["h1".into(), "h2".into()], 1)
        .unwrap();
    assert_eq!(s.unused_recovery_codes(u.id).unwrap(), 2);
    assert!(s.use_recovery_code(u.id, "h1", 2).unwrap());
    assert!(!s.use_recovery_code(u.id, "h1", 3).unwrap());
    assert!(!s.use_recovery_code(u.id, "nope", 3).unwrap());
    let other = user(s, &t, "mallory");
    assert!(!s.use_recovery_code(other.id, "h2", 3).unwrap());
    assert_eq!(s.unused_recovery_codes(u.id).unwrap(), 1);
    s.replace_recovery_codes(u.id, &["h3".into()], 4).unwrap();
    assert!(
        !s.use_recovery_code(u.id, "h2", 5).unwrap(),
        "old codes are gone"
    );
    assert!(s.use_recovery_code(u.id, "h3", 5).unwrap());
}

fn otp_replay_cache_refuses_second_use(s: &dyn Store) {
    assert!(s.record_otp_use("f", 1000, 500).unwrap());
    assert!(!s.record_otp_use("f", 1000, 500).unwrap());
    assert!(s.record_otp_use("f", 1001, 500).unwrap());
    assert!(s.record_otp_use("g", 1000, 500).unwrap());
    s.purge_expired(501).unwrap();
    assert!(
        s.record_otp_use("f", 1000, 900).unwrap(),
        "purged after expiry"
    );
}

fn otp_use_touches_the_factor_only_when_fresh(s: &dyn Store) {
    let t = tenant(s, "suite-otp");
    let u = user(s, &t, "olga");
    s.add_factor(&factor("otp-f", u.id)).unwrap();
    let last_used = || s.factors_of(u.id).unwrap()[0].last_used_at;
    let (with_user, with_factors) = s.user_with_factors(t.id, "olga").unwrap().unwrap();
    assert_eq!(with_user, u);
    assert_eq!(with_factors, s.factors_of(u.id).unwrap());
    assert!(s.user_with_factors(t.id, "nobody").unwrap().is_none());
    assert!(s.use_otp("otp-f", 7, 900, 300).unwrap());
    assert_eq!(last_used(), Some(300));
    assert!(
        !s.use_otp("otp-f", 7, 900, 400).unwrap(),
        "second use refused"
    );
    assert_eq!(
        last_used(),
        Some(300),
        "a refused use does not touch the factor"
    );
    assert!(
        !s.record_otp_use("otp-f", 7, 900).unwrap(),
        "one replay cache for both calls"
    );
    assert!(s.use_otp("otp-f", 8, 900, 500).unwrap());
    assert_eq!(last_used(), Some(500));
}

fn transaction_steps_are_single_use_and_expire(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "tom");
    let txn = Transaction {
        id: "txn-1".into(),
        tenant_id: t.id,
        user_id: u.id,
        username: "tom".into(),
        client: "vpn".into(),
        source: "192.0.2.1".into(),
        first_factor: "password".into(),
        reply_attributes: vec![
            portcullis_core::engine::ReplyAttribute {
                typ: 25,
                value: b"class-1".to_vec(),
            },
            portcullis_core::engine::ReplyAttribute {
                typ: 11,
                value: vec![0, 255],
            },
        ],
        step: 0,
        attempts: 0,
        created_at: 1000,
        expires_at: 1120,
    };
    s.put_transaction(&txn).unwrap();
    let tom = binding(&t, "tom");
    let take = |id: &str, step, now| s.take_transaction(id, step, &tom, now).unwrap();
    let TakenTransaction::Taken(taken) = take("txn-1", 0, 1001) else {
        panic!("step 0 not taken")
    };
    assert_eq!(taken.step, 1);
    assert_eq!(
        taken.reply_attributes, txn.reply_attributes,
        "reply attributes wait with the transaction"
    );
    assert_eq!(taken.username, "tom");
    assert_eq!(
        take("txn-1", 0, 1002),
        TakenTransaction::Gone,
        "same step twice"
    );
    assert_eq!(s.add_transaction_attempt("txn-1").unwrap(), 1);
    assert_eq!(s.add_transaction_attempt("txn-1").unwrap(), 2);
    assert_eq!(take("txn-1", 1, 1120), TakenTransaction::Gone, "expired");
    s.put_transaction(&Transaction {
        id: "txn-2".into(),
        ..txn.clone()
    })
    .unwrap();
    s.delete_transaction("txn-2").unwrap();
    assert_eq!(take("txn-2", 0, 1001), TakenTransaction::Gone);
    assert_eq!(take("txn-9", 0, 1001), TakenTransaction::Gone, "unknown");
    s.purge_expired(2000).unwrap();
    assert_eq!(take("txn-1", 1, 1001), TakenTransaction::Gone);
}

/// The binding of a transaction of `user` in tenant `t`, from client vpn and 192.0.2.1.
fn binding<'a>(t: &Tenant, user: &'a str) -> TxnBinding<'a> {
    TxnBinding {
        tenant_id: t.id,
        username: user,
        client: "vpn",
        source: "192.0.2.1",
    }
}

fn a_transaction_step_is_taken_only_by_its_binding(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let other_tenant = tenant(s, "suite-b");
    let u = user(s, &t, "uma");
    let txn = Transaction {
        id: "txn-bound".into(),
        tenant_id: t.id,
        user_id: u.id,
        username: "uma".into(),
        client: "vpn".into(),
        source: "192.0.2.1".into(),
        first_factor: "password".into(),
        reply_attributes: vec![],
        step: 0,
        attempts: 0,
        created_at: 1000,
        expires_at: 1120,
    };
    s.put_transaction(&txn).unwrap();
    let own = binding(&t, "uma");
    // Another user, client, source or tenant (compared exactly): refused, nothing changed.
    let others = [
        TxnBinding {
            username: "ulla",
            ..own
        },
        TxnBinding {
            username: "UMA",
            ..own
        },
        TxnBinding {
            client: "wifi",
            ..own
        },
        TxnBinding {
            source: "192.0.2.2",
            ..own
        },
        TxnBinding {
            source: "::ffff:192.0.2.1",
            ..own
        },
        TxnBinding {
            tenant_id: other_tenant.id,
            ..own
        },
    ];
    for other in &others {
        assert_eq!(
            s.take_transaction("txn-bound", 0, other, 1001).unwrap(),
            TakenTransaction::OtherBinding,
            "{other:?}"
        );
    }
    // The owner still takes step 0 (attempts untouched), then step 1; a stranger quoting
    // the step just taken, or an expired one, hears that it is gone.
    let TakenTransaction::Taken(taken) = s.take_transaction("txn-bound", 0, &own, 1002).unwrap()
    else {
        panic!("the owner's step was lost to a mismatched answer")
    };
    assert_eq!((taken.step, taken.attempts), (1, 0));
    assert_eq!(
        s.take_transaction("txn-bound", 0, &others[0], 1003)
            .unwrap(),
        TakenTransaction::Gone
    );
    assert_eq!(
        s.take_transaction("txn-bound", 1, &others[3], 1003)
            .unwrap(),
        TakenTransaction::OtherBinding
    );
    assert_eq!(
        s.take_transaction("txn-bound", 1, &others[3], 1120)
            .unwrap(),
        TakenTransaction::Gone,
        "expired"
    );
    // Strangers and the owner at the same moment: the owner takes the step, once.
    s.put_transaction(&Transaction {
        id: "txn-raced".into(),
        ..txn.clone()
    })
    .unwrap();
    let results = at_once(8, |i| {
        let b = if i % 2 == 0 {
            own
        } else {
            others[i % others.len()]
        };
        s.take_transaction("txn-raced", 0, &b, 1001).unwrap()
    });
    for (i, r) in results.iter().enumerate() {
        match (i % 2 == 0, r) {
            (true, TakenTransaction::Taken(_) | TakenTransaction::Gone) => {}
            (false, TakenTransaction::OtherBinding | TakenTransaction::Gone) => {}
            other => panic!("answer {i}: {other:?}"),
        }
    }
    let taken = results
        .iter()
        .filter(|r| matches!(r, TakenTransaction::Taken(_)))
        .count();
    assert_eq!(taken, 1, "{results:?}");
    s.delete_transaction("txn-bound").unwrap();
    s.delete_transaction("txn-raced").unwrap();
}

fn throttle_counts_and_clears(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    assert_eq!(s.throttle(t.id, "k").unwrap(), Throttle::default());
    assert_eq!(s.record_failure(t.id, "k", 10).unwrap().failures, 1);
    let th = s.record_failure(t.id, "k", 11).unwrap();
    assert_eq!((th.failures, th.last_failure_at), (2, 11));
    s.lock_until(t.id, "k", 99).unwrap();
    assert_eq!(s.throttle(t.id, "k").unwrap().locked_until, Some(99));
    let b = tenant(s, "suite-b");
    assert_eq!(s.throttle(b.id, "k").unwrap().failures, 0, "per tenant");
    s.clear_throttle(t.id, "k").unwrap();
    assert_eq!(s.throttle(t.id, "k").unwrap(), Throttle::default());

    // A bucket draining 4 failures per 60 s: one every 15 s.
    let drain = |at| s.record_draining_failure(t.id, "d", 1, at, 4, 60).unwrap();
    assert_eq!(drain(100).failures, 1);
    assert_eq!(drain(100).failures, 2);
    let th = drain(101);
    assert_eq!(
        (th.failures, th.last_failure_at),
        (3, 100),
        "a second drains nothing"
    );
    let th = drain(131);
    assert_eq!(
        (th.failures, th.last_failure_at),
        (2, 130),
        "31 s drain two (30 s)"
    );
    assert_eq!(drain(10_000).failures, 1, "an empty bucket stays empty");
    let th = drain(9_000);
    assert_eq!(
        (th.failures, th.last_failure_at),
        (2, 10_000),
        "a clock going back drains nothing"
    );
    // Gaps shorter than one failure's drain time add up: 10 s + 10 s + 10 s drain two.
    assert_eq!(drain(10_010).failures, 3);
    let th = drain(10_020);
    assert_eq!((th.failures, th.last_failure_at), (3, 10_015));
    assert_eq!(drain(10_030).failures, 3);
    // Several failures at once (an `append` login's readings): counted in one step, a
    // new bucket too; drained as the same number one by one would be.
    let th = s
        .record_draining_failure(t.id, "d", 4, 10_030, 4, 60)
        .unwrap();
    assert_eq!((th.failures, th.last_failure_at), (7, 10_030));
    let th = s
        .record_draining_failure(t.id, "d", 3, 10_060, 4, 60)
        .unwrap();
    assert_eq!((th.failures, th.last_failure_at), (8, 10_060));
    let th = s
        .record_draining_failure(t.id, "d4", 4, 500, 4, 60)
        .unwrap();
    assert_eq!((th.failures, th.last_failure_at), (4, 500));
    assert_eq!(
        s.record_draining_failure(t.id, "d0", 0, 500, 4, 60)
            .unwrap()
            .failures,
        1,
        "at least one"
    );

    // Purged once long drained (two days on); user throttles and fresh buckets stay.
    let old = "source:radius:192.0.2.1:first_factor";
    let fresh = "source:radius:192.0.2.2:first_factor";
    s.record_draining_failure(t.id, old, 1, 10_000, 4, 60)
        .unwrap();
    s.record_draining_failure(t.id, fresh, 1, 10_000 + 2 * 86_400, 4, 60)
        .unwrap();
    s.record_failure(t.id, "user:1:second_factor", 10_000)
        .unwrap();
    s.purge_expired(10_001 + 2 * 86_400).unwrap();
    assert_eq!(s.throttle(t.id, old).unwrap(), Throttle::default());
    assert_eq!(s.throttle(t.id, fresh).unwrap().failures, 1);
    assert_eq!(
        s.throttle(t.id, "user:1:second_factor").unwrap().failures,
        1
    );
}

/// `reserve_failure`, `keep_failure`, `release_failures`: a check's failure is counted
/// before the check, in one statement that refuses at the limit (also for checks on
/// several nodes at the same moment), then kept or given back.
fn failures_are_reserved_under_the_limit_also_at_once(s: &dyn Store) {
    use portcullis_core::store::Reservation::{Refused, Reserved};
    let t = tenant(s, "reserve-a");
    let other = tenant(s, "reserve-b");
    let key = "user:1:second_factor";
    let row = |failures, last_failure_at, locked_until| Throttle {
        failures,
        last_failure_at,
        locked_until,
    };
    // A new row takes the time of its first failure; later reservations leave the time
    // of the last failure as it is (a check that passes must not move the delays).
    assert_eq!(
        s.reserve_failure(t.id, key, 100, 3).unwrap(),
        Reserved(row(1, 100, None))
    );
    assert_eq!(
        s.reserve_failure(t.id, key, 150, 3).unwrap(),
        Reserved(row(2, 100, None))
    );
    assert_eq!(
        s.throttle(other.id, key).unwrap(),
        Throttle::default(),
        "per tenant"
    );
    // A wrong answer keeps its failure: the time is its own (never earlier).
    assert_eq!(
        s.keep_failure(t.id, key, 160, 3, 999).unwrap(),
        row(2, 160, None)
    );
    assert_eq!(
        s.keep_failure(t.id, key, 120, 3, 999).unwrap(),
        row(2, 160, None)
    );
    assert_eq!(
        s.reserve_failure(t.id, key, 165, 3).unwrap(),
        Reserved(row(3, 160, None))
    );
    // At the limit: refused, nothing counted.
    assert_eq!(
        s.reserve_failure(t.id, key, 166, 3).unwrap(),
        Refused(row(3, 160, None))
    );
    assert_eq!(s.throttle(t.id, key).unwrap(), row(3, 160, None));
    // Kept at the lock threshold: locked.
    assert_eq!(
        s.keep_failure(t.id, key, 170, 3, 999).unwrap(),
        row(3, 170, Some(999))
    );
    // Given back: the time and the lock stay.
    assert_eq!(
        s.release_failures(t.id, key, 1).unwrap(),
        row(2, 170, Some(999))
    );
    // Locked: refused under the limit too, until the lock has run out.
    assert_eq!(
        s.reserve_failure(t.id, key, 500, 3).unwrap(),
        Refused(row(2, 170, Some(999)))
    );
    assert_eq!(
        s.reserve_failure(t.id, key, 999, 3).unwrap(),
        Reserved(row(3, 170, Some(999)))
    );
    // Never below none; a row with a lock stays, one with nothing goes.
    assert_eq!(
        s.release_failures(t.id, key, 5).unwrap(),
        row(0, 170, Some(999))
    );
    assert_eq!(s.throttle(t.id, key).unwrap(), row(0, 170, Some(999)));
    s.clear_throttle(t.id, key).unwrap();
    assert!(matches!(
        s.reserve_failure(t.id, key, 1000, 3).unwrap(),
        Reserved(_)
    ));
    assert_eq!(
        s.release_failures(t.id, key, 1).unwrap(),
        Throttle::default()
    );
    assert_eq!(s.throttle(t.id, key).unwrap(), Throttle::default());
    assert_eq!(
        s.release_failures(t.id, key, 1).unwrap(),
        Throttle::default()
    );
    assert_eq!(
        s.keep_failure(t.id, key, 1000, 3, 999).unwrap(),
        Throttle::default()
    );
    assert_eq!(s.throttle(t.id, key).unwrap(), Throttle::default());
    // A limit of none reserves nothing.
    assert_eq!(
        s.reserve_failure(t.id, key, 1000, 0).unwrap(),
        Refused(Throttle::default())
    );
    assert_eq!(s.throttle(t.id, key).unwrap(), Throttle::default());
    // Checks on several nodes at the same moment: no more than the limit are counted,
    // each one its own count; then all given back, never below none.
    let busy = "user:2:second_factor";
    for round in 0..5 {
        let reserved: Vec<u32> = at_once(16, |_| s.reserve_failure(t.id, busy, 2000, 5).unwrap())
            .into_iter()
            .filter_map(|r| match r {
                Reserved(th) => Some(th.failures),
                Refused(th) => {
                    assert_eq!(th.failures, 5, "round {round}: refused under the limit");
                    None
                }
            })
            .collect();
        let mut counts = reserved.clone();
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3, 4, 5], "round {round}: {reserved:?}");
        assert_eq!(s.throttle(t.id, busy).unwrap().failures, 5);
        at_once(16, |_| s.release_failures(t.id, busy, 1).unwrap());
        assert_eq!(s.throttle(t.id, busy).unwrap(), Throttle::default());
    }
}

/// `reserve_draining_failures`: counted as `record_draining_failure` counts, only while
/// the drained level with them stays within the limit (also at the same moment).
fn draining_failures_are_reserved_under_the_limit_also_at_once(s: &dyn Store) {
    use portcullis_core::store::Reservation::{Refused, Reserved};
    let t = tenant(s, "reserve-drain");
    let (key, twin) = (
        "source:radius:a:first_factor",
        "source:radius:b:first_factor",
    );
    // 10 per 100 s drain; the level may reach 11.
    let reserve = |key, failures, now| {
        s.reserve_draining_failures(t.id, key, failures, now, 10, 100, 11)
            .unwrap()
    };
    let record = |key, failures, now| {
        s.record_draining_failure(t.id, key, failures, now, 10, 100)
            .unwrap()
    };
    assert_eq!(reserve(key, 4, 1000), Reserved(record(twin, 4, 1000)));
    // 4 + 8 would pass 11: refused, nothing counted.
    assert!(matches!(reserve(key, 8, 1000), Refused(th) if th.failures == 4));
    assert_eq!(reserve(key, 7, 1000), Reserved(record(twin, 7, 1000)));
    assert!(matches!(reserve(key, 1, 1000), Refused(th) if th.failures == 11));
    // 57 s later 5 have drained (the 7 s over carry to the next): 6 + 5 fit.
    assert_eq!(reserve(key, 5, 1057), Reserved(record(twin, 5, 1057)));
    assert_eq!(
        s.throttle(t.id, key).unwrap(),
        s.throttle(t.id, twin).unwrap()
    );
    assert_eq!(s.throttle(t.id, key).unwrap().failures, 11);
    // Given back: the level falls, and the drain goes on from where it was.
    let left = s.release_failures(t.id, key, 3).unwrap();
    assert_eq!(left.failures, 8);
    assert_eq!(
        left.last_failure_at,
        s.throttle(t.id, twin).unwrap().last_failure_at
    );
    // More than the limit at once is refused even on an empty bucket.
    let empty = "source:radius:c:first_factor";
    assert_eq!(reserve(empty, 12, 1057), Refused(Throttle::default()));
    assert_eq!(s.throttle(t.id, empty).unwrap(), Throttle::default());
    // A blocked source: refused until the block runs out.
    s.lock_until(t.id, key, 2000).unwrap();
    assert!(matches!(reserve(key, 1, 1100), Refused(th) if th.locked_until == Some(2000)));
    assert!(matches!(reserve(key, 1, 2000), Reserved(_)));
    // Checks on several nodes at the same moment: the level never passes the limit; all
    // given back at the same moment, nothing is left (not even a row of 0 failures).
    let busy = "source:radius:d:first_factor";
    for round in 0..10 {
        let reserved = at_once(16, |_| reserve(busy, 1, 3000))
            .into_iter()
            .filter(|r| matches!(r, Reserved(_)))
            .count();
        assert_eq!(reserved, 11, "round {round}");
        assert_eq!(
            s.throttle(t.id, busy).unwrap().failures,
            11,
            "round {round}"
        );
        at_once(16, |_| s.release_failures(t.id, busy, 1).unwrap());
        assert_eq!(
            s.throttle(t.id, busy).unwrap(),
            Throttle::default(),
            "round {round}"
        );
    }
}

fn audit_is_listed_in_order_and_filtered(s: &dyn Store) {
    for (i, (tenant, user)) in [("suite-a", "ann"), ("suite-b", "ann"), ("suite-a", "bob")]
        .into_iter()
        .enumerate()
    {
        s.append_audit(&AuditRecord {
            time: 1000 + i as i64,
            tenant: tenant.into(),
            username: user.into(),
            channel: "radius".into(),
            client: "vpn".into(),
            source: "192.0.2.1".into(),
            mode: "append".into(),
            factors: vec!["password".into(), "totp".into()],
            result: AuditResult::Accept,
            reason: "ok".into(),
            transaction: None,
            host: (i == 2).then(|| "web1".into()),
        })
        .unwrap();
    }
    let a = s
        .list_audit(&AuditFilter {
            tenant: Some("suite-a".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        a.iter().map(|r| r.username.as_str()).collect::<Vec<_>>(),
        ["ann", "bob"]
    );
    assert_eq!(a[0].factors, ["password", "totp"]);
    assert_eq!(
        (a[0].host.as_deref(), a[1].host.as_deref()),
        (None, Some("web1"))
    );
    let recent = s
        .list_audit(&AuditFilter {
            since: Some(1001),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(recent.len(), 2);
}

/// `record_fail_opens`: a report a host sends again (same id) is recorded once, also when
/// sent by several requests at once; another host's report of the same id, and reports
/// without an id (older modules), are recorded; ids are forgotten after
/// `FAIL_OPEN_IDS_KEPT`.
fn fail_open_reports_are_recorded_once_per_host(s: &dyn Store) {
    let report = |id: Option<&str>, host: &str| FailOpenRecord {
        id: id.map(Into::into),
        audit: AuditRecord {
            time: 500,
            tenant: "suite-fo".into(),
            username: "ann".into(),
            channel: "pam".into(),
            client: "sshd".into(),
            source: "local".into(),
            mode: "fail-open".into(),
            factors: Vec::new(),
            result: AuditResult::Accept,
            reason: format!("{host} {id:?}"),
            transaction: None,
            host: Some(host.into()),
        },
    };
    let count = || {
        s.list_audit(&AuditFilter {
            tenant: Some("suite-fo".into()),
            ..Default::default()
        })
        .unwrap()
        .len()
    };
    let sent = [
        report(Some("a1"), "web1"),
        report(Some("b2"), "web1"),
        report(None, "web1"),
    ];
    assert_eq!(s.record_fail_opens(&sent, 1000).unwrap(), 3);
    assert_eq!(count(), 3);
    // Sent again: only the report without an id is recorded again.
    assert_eq!(s.record_fail_opens(&sent, 1010).unwrap(), 1);
    assert_eq!(count(), 4);
    // The same id from another host is another report.
    assert_eq!(
        s.record_fail_opens(&[report(Some("a1"), "web2")], 1010)
            .unwrap(),
        1
    );
    // Several requests with the same report at once: recorded once.
    let recorded = at_once(4, |_| {
        s.record_fail_opens(&[report(Some("c3"), "web1")], 1020)
            .unwrap()
    });
    assert_eq!(recorded.iter().sum::<usize>(), 1, "{recorded:?}");
    assert_eq!(count(), 6);
    // The same id twice in one request: recorded once.
    assert_eq!(
        s.record_fail_opens(
            &[report(Some("d4"), "web1"), report(Some("d4"), "web1")],
            1030
        )
        .unwrap(),
        1
    );
    // Two requests with the same ids in other orders at once (a claim taken over and
    // sent again beside a new one): each report recorded once, and neither request fails
    // (inserted in another order, their row locks could deadlock on PostgreSQL).
    for round in 0..5 {
        let ids: Vec<String> = (0..4).map(|i| format!("o{round}-{i}")).collect();
        let forward: Vec<FailOpenRecord> = ids
            .iter()
            .map(|id| report(Some(id.as_str()), "web1"))
            .collect();
        let backward: Vec<FailOpenRecord> = forward.iter().rev().cloned().collect();
        let recorded = at_once(2, |i| {
            s.record_fail_opens(if i == 0 { &forward } else { &backward }, 1030)
                .unwrap()
        });
        assert_eq!(
            recorded.iter().sum::<usize>(),
            4,
            "round {round}: {recorded:?}"
        );
    }
    assert_eq!(count(), 6 + 1 + 20);
    // FAIL_OPEN_IDS_KEPT after it arrived an id is forgotten (the purge), and recorded again.
    let later = 1000 + FAIL_OPEN_IDS_KEPT;
    s.purge_expired(later).unwrap();
    assert_eq!(s.record_fail_opens(&sent[..1], later).unwrap(), 1);
    assert_eq!(
        s.record_fail_opens(&[report(Some("c3"), "web1")], later)
            .unwrap(),
        0
    );
    assert_eq!(count(), 6 + 1 + 20 + 1);
}

fn deleting_a_user_removes_their_state(s: &dyn Store) {
    let t = tenant(s, "suite-a");
    let u = user(s, &t, "gone");
    s.add_factor(&factor("fac-gone", u.id)).unwrap();
    s.replace_recovery_codes(u.id, &["hg".into()], 1).unwrap();
    s.record_failure(t.id, &format!("user:{}:second_factor", u.id), 1)
        .unwrap();
    s.delete_user(u.id).unwrap();
    assert!(s.user_by_name(t.id, "gone").unwrap().is_none());
    assert!(s.factors_of(u.id).unwrap().is_empty());
    assert_eq!(s.unused_recovery_codes(u.id).unwrap(), 0);
    assert_eq!(
        s.throttle(t.id, &format!("user:{}:second_factor", u.id))
            .unwrap()
            .failures,
        0
    );
}

fn admin_tokens_are_listed_per_tenant_and_revoked_once(s: &dyn Store) {
    let a = tenant(s, "suite-tok-a");
    let b = tenant(s, "suite-tok-b");
    let token = |id: &str, tenant: Option<TenantId>, role: AdminRole| AdminToken {
        id: id.into(),
        tenant_id: tenant,
        tenant: None,
        role,
        name: format!("name-{id}"),
        hash: format!("hash-{id}"),
        created_at: 100,
        last_used_at: None,
        revoked: false,
        expires_at: None,
    };
    s.add_admin_token(&token("op1", None, AdminRole::Operator))
        .unwrap();
    s.add_admin_token(&token("ka1", Some(a.id), AdminRole::Admin))
        .unwrap();
    s.add_admin_token(&token("kb1", Some(b.id), AdminRole::Auditor))
        .unwrap();
    assert!(matches!(
        s.add_admin_token(&token("ka1", Some(b.id), AdminRole::Helpdesk)),
        Err(StoreError::AlreadyExists { .. })
    ));
    let got = s.admin_token("ka1").unwrap().unwrap();
    assert_eq!(got.tenant.as_deref(), Some("suite-tok-a"));
    assert_eq!(got.tenant_id, Some(a.id));
    assert_eq!(got.role, AdminRole::Admin);
    assert_eq!(got.hash, "hash-ka1");
    assert!(!got.revoked);
    let op = s.admin_token("op1").unwrap().unwrap();
    assert_eq!((op.tenant_id, op.tenant), (None, None));
    assert!(s.admin_token("nope").unwrap().is_none());
    let ids = |v: Vec<AdminToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_admin_tokens(Some(a.id)).unwrap()), ["ka1"]);
    assert_eq!(ids(s.list_admin_tokens(Some(b.id)).unwrap()), ["kb1"]);
    let all = ids(s.list_admin_tokens(None).unwrap());
    assert!(["op1", "ka1", "kb1"]
        .iter()
        .all(|i| all.iter().any(|x| x == i)));
    s.touch_admin_token("ka1", 500).unwrap();
    assert_eq!(
        s.admin_token("ka1").unwrap().unwrap().last_used_at,
        Some(500)
    );
    assert!(s.revoke_admin_token("ka1").unwrap());
    assert!(!s.revoke_admin_token("ka1").unwrap(), "only once");
    assert!(!s.revoke_admin_token("nope").unwrap());
    assert!(s.admin_token("ka1").unwrap().unwrap().revoked);
    assert!(!s.admin_token("kb1").unwrap().unwrap().revoked);
}

/// `expires_at` is stored and read back as given (by id and in lists), also after a use
/// and a revocation; a token without one reads back without one.
fn admin_tokens_keep_their_expiry(s: &dyn Store) {
    let t = tenant(s, "suite-tok-exp");
    let token = |id: &str, expires_at: Option<UnixTime>| AdminToken {
        id: id.into(),
        tenant_id: Some(t.id),
        tenant: None,
        role: AdminRole::Admin,
        name: format!("name-{id}"),
        hash: format!("hash-{id}"),
        created_at: 100,
        last_used_at: None,
        revoked: false,
        expires_at,
    };
    s.add_admin_token(&token("exp1", Some(7_776_100))).unwrap();
    s.add_admin_token(&token("exp2", None)).unwrap();
    let got = s.admin_token("exp1").unwrap().unwrap();
    assert_eq!(got.expires_at, Some(7_776_100));
    assert!(!got.is_expired(7_776_099) && got.is_expired(7_776_100));
    assert_eq!(s.admin_token("exp2").unwrap().unwrap().expires_at, None);
    let listed: Vec<(String, Option<UnixTime>)> = s
        .list_admin_tokens(Some(t.id))
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.expires_at))
        .collect();
    assert_eq!(
        listed,
        [
            ("exp1".to_string(), Some(7_776_100)),
            ("exp2".to_string(), None)
        ]
    );
    s.touch_admin_token("exp1", 500).unwrap();
    assert!(s.revoke_admin_token("exp1").unwrap());
    let got = s.admin_token("exp1").unwrap().unwrap();
    assert_eq!(
        (got.expires_at, got.last_used_at, got.revoked),
        (Some(7_776_100), Some(500), true)
    );
}

/// A token of a store made before admin tokens could expire (migration 15; the backend's
/// test made it, as `old1` of tenant `old`): it still works and never expires.
pub fn a_token_from_before_expiry_never_expires(s: &dyn Store) {
    let got = s.admin_token("old1").unwrap().expect("the old token");
    assert_eq!(got.expires_at, None);
    assert!(!got.is_expired(i64::MAX) && !got.revoked);
    assert_eq!(got.tenant.as_deref(), Some("old"));
    assert_eq!(got.role, AdminRole::Admin);
    let listed = s.list_admin_tokens(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].expires_at, None);
    // New tokens beside it get theirs.
    let mut new = got.clone();
    new.id = "new1".into();
    new.expires_at = Some(900);
    s.add_admin_token(&new).unwrap();
    assert_eq!(
        s.admin_token("new1").unwrap().unwrap().expires_at,
        Some(900)
    );
}

/// Rows of an admin token as a store before migration 15 held it (SQL for both backends).
pub const OLD_ADMIN_TOKEN_ROWS: &str =
    "INSERT INTO tenants (id, name, created_at) VALUES (1, 'old', 0);
     INSERT INTO admin_tokens (id, tenant_id, role, name, token_hash, created_at, last_used_at, revoked)
         VALUES ('old1', 1, 'admin', 'legacy', 'hash-old1', 50, 60, 0);";

fn import_is_all_or_nothing(s: &dyn Store) {
    let t = tenant(s, "suite-import");
    let existing = user(s, &t, "ivy");
    let new_as = |name: &str, f: Option<Factor>, disabled: bool| ImportUser::Create {
        user: NewUser {
            tenant_id: t.id,
            name: name.into(),
            password_hash: Some("$6$salt$x".into()),
            email: Some(format!("{name}@example.org")),
            phone: None,
            groups: vec!["vpn".into(), "ops".into()],
        },
        factor: f,
        disabled,
    };
    let new = |name: &str, f: Option<Factor>| new_as(name, f, false);
    let mut f = factor("fac-import-1", 0);
    f.state = FactorState::Confirmed;
    f.confirmed_at = Some(100);
    // A name that exists makes the whole batch fail, the rows before it included.
    let err = s
        .import_users(&[new("imp-a", Some(f.clone())), new("ivy", None)], 100)
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert!(
        s.user_by_name(t.id, "imp-a").unwrap().is_none(),
        "rolled back"
    );

    let update = ImportUser::Update {
        user: existing.id,
        email: Some(Some("ivy@example.org".into())),
        phone: None,
        groups: Some(vec!["admins".into()]),
        password_hash: Some("$6$salt$y".into()),
        disabled: Some(true),
    };
    assert_eq!(
        s.import_users(
            &[
                new("imp-a", Some(f)),
                new("imp-b", None),
                new_as("imp-off", None, true),
                update
            ],
            100
        )
        .unwrap(),
        (3, 1)
    );
    let a = s.user_by_name(t.id, "imp-a").unwrap().unwrap();
    assert!(!a.disabled);
    assert!(
        s.user_by_name(t.id, "imp-off").unwrap().unwrap().disabled,
        "created disabled"
    );
    assert_eq!(a.groups, ["vpn", "ops"]);
    assert_eq!(a.password_hash.as_deref(), Some("$6$salt$x"));
    let fs = s.factors_of(a.id).unwrap();
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].user_id, a.id, "the store fills in the new user's id");
    assert_eq!(fs[0].state, FactorState::Confirmed);
    assert!(s
        .factors_of(s.user_by_name(t.id, "imp-b").unwrap().unwrap().id)
        .unwrap()
        .is_empty());
    let ivy = s.user_by_name(t.id, "ivy").unwrap().unwrap();
    assert_eq!(ivy.email.as_deref(), Some("ivy@example.org"));
    assert_eq!(ivy.phone, existing.phone, "None keeps the phone");
    assert_eq!(ivy.groups, ["admins"]);
    assert_eq!(ivy.password_hash.as_deref(), Some("$6$salt$y"));
    assert!(ivy.disabled, "Some(true) disables");
    // Some(None) clears a field; an update of a user that is gone fails.
    s.import_users(
        &[ImportUser::Update {
            user: ivy.id,
            email: Some(None),
            phone: None,
            groups: None,
            password_hash: None,
            disabled: None,
        }],
        100,
    )
    .unwrap();
    let ivy = s.user_by_name(t.id, "ivy").unwrap().unwrap();
    assert_eq!(ivy.email, None);
    assert_eq!(ivy.groups, ["admins"], "None keeps the groups");
    assert!(ivy.disabled, "None keeps the disabled state");
    s.import_users(
        &[ImportUser::Update {
            user: ivy.id,
            email: None,
            phone: None,
            groups: None,
            password_hash: None,
            disabled: Some(false),
        }],
        100,
    )
    .unwrap();
    assert!(
        !s.user_by_name(t.id, "ivy").unwrap().unwrap().disabled,
        "Some(false) enables"
    );
    assert!(s
        .import_users(
            &[ImportUser::Update {
                user: i64::MAX,
                email: None,
                phone: None,
                groups: None,
                password_hash: None,
                disabled: None,
            }],
            100
        )
        .is_err());
}

fn enrollment_links_open_once_and_expire(s: &dyn Store) {
    let t = tenant(s, "suite-enrol");
    let u = user(s, &t, "newbie");
    let link = |hash: &str, txn: &str, expires_at| Enrollment {
        token_hash: hash.into(),
        tenant_id: t.id,
        tenant: t.name.clone(),
        user_id: u.id,
        username: u.name.clone(),
        txn_id: txn.into(),
        factor_id: None,
        created_at: 100,
        expires_at,
        opened_at: None,
    };
    s.add_enrollment(&link("h1", "txn-a", 700)).unwrap();
    s.add_enrollment(&link("h2", "txn-b", 700)).unwrap();
    assert!(matches!(
        s.add_enrollment(&link("h1", "txn-c", 700)),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(s.open_enrollment("nope", 200).unwrap().is_none());
    assert!(
        !s.set_enrollment_factor("h1", "f1").unwrap(),
        "not before it is opened"
    );
    let opened = s.open_enrollment("h1", 200).unwrap().unwrap();
    assert_eq!(opened.opened_at, Some(200));
    assert_eq!((opened.user_id, opened.txn_id.as_str()), (u.id, "txn-a"));
    assert!(
        s.open_enrollment("h1", 201).unwrap().is_none(),
        "single use"
    );
    assert!(s.set_enrollment_factor("h1", "f1").unwrap());
    assert!(!s.set_enrollment_factor("h1", "f2").unwrap(), "only once");
    let got = s.enrollment_of_transaction("txn-a").unwrap().unwrap();
    assert_eq!(got.factor_id.as_deref(), Some("f1"));
    assert!(s.enrollment_of_transaction("txn-x").unwrap().is_none());
    assert!(s.open_enrollment("h2", 700).unwrap().is_none(), "expired");
    s.purge_expired(700).unwrap();
    assert!(s.enrollment_of_transaction("txn-b").unwrap().is_none());
}
