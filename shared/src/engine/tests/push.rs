//! Push approval in the Engine: sending, the phone's answer, polling, number matching,
//! expiry, the anti-fatigue cap, and the factor menu around it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::*;
use crate::delivery::DeliveryError;
use crate::push::{
    PushAnswer, PushChannel, PushDecision, PushNotice, PushParams, PushSender, PushSettings,
};

/// A phone that keeps what was pushed to it.
#[derive(Default)]
struct Phone {
    notices: Mutex<Vec<(String, PushNotice)>>,
    texts: Mutex<Vec<String>>,
    down: AtomicBool,
}

impl PushSender for Phone {
    fn provider(&self, _: PushChannel) -> &'static str {
        "test"
    }
    fn send(&self, _: &PushParams, address: &str, n: &PushNotice) -> Result<(), DeliveryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DeliveryError::Unavailable("HTTP 503".into()));
        }
        self.notices
            .lock()
            .unwrap()
            .push((address.to_string(), n.clone()));
        Ok(())
    }
    fn send_text(
        &self,
        _: &PushParams,
        _: &str,
        _: &str,
        message: &str,
    ) -> Result<(), DeliveryError> {
        self.texts.lock().unwrap().push(message.to_string());
        Ok(())
    }
}

impl Phone {
    fn count(&self) -> usize {
        self.notices.lock().unwrap().len()
    }
    /// (push id, token) of the last notice.
    fn last(&self) -> (String, String) {
        let n = self.notices.lock().unwrap();
        let (_, notice) = n.last().expect("a push was sent");
        let id = notice
            .approve_url
            .trim_end_matches("/approve")
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        (id, notice.token.clone())
    }
}

fn settings(number_matching: bool) -> PushSettings {
    PushSettings {
        public_url: "https://mfa.example.com".into(),
        number_matching,
        ttl: 60,
        max_pushes: 5,
        window: 600,
        issuer: "Test".into(),
        ntfy_url: Some("https://ntfy.example.com".into()),
    }
}

/// "pat" has only push; alice has TOTP and push.
fn push_world(number_matching: bool) -> (World, Arc<Phone>) {
    let mut w = world();
    let phone = Arc::new(Phone::default());
    w.engine
        .set_push("acme", phone.clone(), settings(number_matching));
    w.admin
        .add_user(
            "acme",
            "pat",
            NewPassword::Plain(Zeroizing::new(b"pw".to_vec())),
            None,
            None,
            vec![],
        )
        .unwrap();
    for user in ["pat", "alice"] {
        let (f, topic) = w.admin.enroll_push("acme", user, None).unwrap();
        assert!(topic.starts_with("pc_") && topic.len() > 30, "{topic}");
        assert!(matches!(
            w.engine
                .send_push_enrolment_code("acme", user, &f.factor_id)
                .unwrap(),
            SendOutcome::Sent { .. }
        ));
        let code: String = phone
            .texts
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        w.admin
            .confirm_factor("acme", user, &f.factor_id, &code)
            .unwrap();
    }
    (w, phone)
}

fn wait_of(s: &Step) -> (String, String) {
    match s {
        Step::Wait { txn, text, .. } => (txn.clone(), text.clone()),
        other => panic!("expected a wait, got {other:?}"),
    }
}

/// The number a wait's text asks the user to pick.
fn number_in(text: &str) -> u8 {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 2)
        .and_then(|w| w.parse().ok())
        .expect("a two-digit number in the prompt")
}

fn poll(w: &World, user: &str, txn: &str) -> Step {
    answer(w, user, "192.0.2.10", txn, "")
}

#[test]
fn approved_push_with_the_right_number_logs_in_once() {
    let (w, phone) = push_world(true);
    let s = login(&w, LoginMode::Challenge, "pat", "pw");
    let (txn, text) = wait_of(&s);
    assert_eq!(phone.count(), 1);
    let (id, token) = phone.last();
    let number = number_in(&text);
    // The page shows three numbers, the prompt's among them.
    let view = w.engine.push_view(&id, &token).unwrap().unwrap();
    assert_eq!(view.username, "pat");
    assert_eq!(view.status, "pending");
    assert!(view.choices.contains(&number), "{view:?}");
    // The decoys and their order come from the token's keyed hash, which only the server
    // has, not from the push id in the page's URL.
    let stored = w.engine.store().push_by_id(&id).unwrap().unwrap();
    assert_eq!(
        view.choices,
        crate::push::number_choices(number, stored.token_hash.as_bytes())
    );
    assert!(!stored.token_hash.contains(&id) && !id.contains(&stored.token_hash));
    // Not yet approved: the poll waits again.
    let (txn, again) = wait_of(&poll(&w, "pat", &txn));
    assert!(again.starts_with("Not approved yet"), "{again}");
    let (d, woke) = w
        .engine
        .answer_push(
            &id,
            &token,
            PushAnswer::Approve {
                number: Some(number),
            },
        )
        .unwrap();
    assert_eq!(d, PushDecision::Approved);
    assert_eq!(woke.as_deref(), transaction_of(&txn));
    match poll(&w, "pat", &txn) {
        Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "push"]),
        other => panic!("{other:?}"),
    }
    // The token is single-use; the transaction is gone.
    let again = w
        .engine
        .answer_push(
            &id,
            &token,
            PushAnswer::Approve {
                number: Some(number),
            },
        )
        .unwrap();
    assert_eq!(again.0, PushDecision::AlreadyDecided);
    assert!(matches!(poll(&w, "pat", &txn), Step::Reject { .. }));
}

#[test]
fn the_picked_number_typed_at_the_wait_is_a_poll_not_a_wrong_code() {
    let (w, _phone) = push_world(true);
    let (txn, text) = wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let number = number_in(&text);
    let (txn, again) = wait_of(&answer(&w, "pat", "192.0.2.10", &txn, &number.to_string()));
    assert!(again.starts_with("Not approved yet"), "{again}");
    let (_, again) = wait_of(&answer(&w, "pat", "192.0.2.10", &txn, " 7 "));
    assert!(again.starts_with("Not approved yet"), "{again}");
    let pat = w.engine.store().user_by_name(1, "pat").unwrap().unwrap();
    let throttle = w
        .engine
        .store()
        .throttle(1, &crate::engine::second_factor_key(&pat))
        .unwrap();
    assert_eq!(throttle.failures, 0, "{throttle:?}");
}

#[test]
fn an_approval_after_the_push_factor_was_removed_does_not_log_in() {
    let (w, phone) = push_world(false);
    let (txn, _) = wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let (id, token) = phone.last();
    // The phone is reported lost; the helpdesk removes its factor; it approves anyway.
    let factor = w.admin.list_factors("acme", "pat").unwrap()[0]
        .factor_id
        .clone();
    w.admin.remove_factor("acme", "pat", &factor).unwrap();
    let (d, _) = w
        .engine
        .answer_push(&id, &token, PushAnswer::Approve { number: None })
        .unwrap();
    assert_eq!(d, PushDecision::Approved);
    let s = poll(&w, "pat", &txn);
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert!(
        last_reason(&w).contains("factor was removed"),
        "{}",
        last_reason(&w)
    );
}

#[test]
fn denied_push_or_wrong_number_rejects_and_a_wrong_token_decides_nothing() {
    let (w, phone) = push_world(true);
    let (txn, text) = wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let (id, token) = phone.last();
    assert_eq!(
        w.engine
            .answer_push(
                &id,
                "forged",
                PushAnswer::Approve {
                    number: Some(number_in(&text))
                }
            )
            .unwrap()
            .0,
        PushDecision::NotFound
    );
    assert_eq!(
        w.engine
            .answer_push(&id, &token, PushAnswer::Approve { number: None })
            .unwrap()
            .0,
        PushDecision::NumberRequired
    );
    let wrong = if number_in(&text) == 10 { 11 } else { 10 };
    assert_eq!(
        w.engine
            .answer_push(
                &id,
                &token,
                PushAnswer::Approve {
                    number: Some(wrong)
                }
            )
            .unwrap()
            .0,
        PushDecision::WrongNumber
    );
    assert!(matches!(poll(&w, "pat", &txn), Step::Reject { .. }));
    assert!(
        last_reason(&w).contains("wrong number"),
        "{}",
        last_reason(&w)
    );

    w.clock.advance(31);
    let (txn, _) = wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let (id, token) = phone.last();
    assert_eq!(
        w.engine
            .answer_push(&id, &token, PushAnswer::Deny)
            .unwrap()
            .0,
        PushDecision::Denied
    );
    match poll(&w, "pat", &txn) {
        Step::Reject { user_message } => assert!(user_message.contains("denied"), "{user_message}"),
        other => panic!("{other:?}"),
    }
    assert!(last_reason(&w).contains("denied on the device"));
}

#[test]
fn unanswered_push_expires() {
    let (w, phone) = push_world(false);
    let (txn, _) = wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let (id, token) = phone.last();
    w.clock.advance(61);
    assert!(matches!(poll(&w, "pat", &txn), Step::Reject { .. }));
    assert!(
        last_reason(&w).contains("not answered within 60 s"),
        "{}",
        last_reason(&w)
    );
    assert_eq!(
        w.engine
            .answer_push(&id, &token, PushAnswer::Approve { number: None })
            .unwrap()
            .0,
        PushDecision::Expired,
        "a late approval counts for nothing"
    );
}

#[test]
fn anti_fatigue_cap_refuses_the_sixth_push_in_ten_minutes() {
    let (w, phone) = push_world(false);
    for _ in 0..5 {
        wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
        w.clock.advance(10);
    }
    assert_eq!(phone.count(), 5);
    let s = login(&w, LoginMode::Append, "pat", "pw,push");
    assert!(matches!(s, Step::Reject { .. }), "{s:?}");
    assert_eq!(phone.count(), 5, "no sixth notification");
    assert!(
        last_reason(&w).contains("anti-fatigue"),
        "{}",
        last_reason(&w)
    );
    w.clock.advance(600);
    wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    assert_eq!(phone.count(), 6);
}

#[test]
fn menu_offers_app_and_push_and_a_code_still_answers_a_wait() {
    let (w, phone) = push_world(false);
    let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
    match &p {
        Step::Prompt {
            expects, choices, ..
        } => {
            assert_eq!(*expects, Expects::Choice);
            let ids: Vec<&str> = choices.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["app", "push"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        phone.count(),
        0,
        "nothing is pushed before the user picks push"
    );
    let (txn, _) = wait_of(&answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "2"));
    assert_eq!(phone.count(), 1);
    // The user gives up waiting and types the app's code instead.
    match answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0)) {
        Step::Accept { factors_used, .. } => assert_eq!(factors_used, ["password", "totp"]),
        other => panic!("{other:?}"),
    }
    // Picking the app by name asks for its code.
    let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
    let s = answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "app");
    match &s {
        Step::Prompt { expects, .. } => assert_eq!(*expects, Expects::Code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_push_picked_late_in_a_login_expires_with_the_login() {
    let (w, phone) = push_world(false);
    let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
    // 100 s of the login's 120 go by at the menu before the user picks push.
    w.clock.advance(100);
    let (txn, _) = wait_of(&answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "2"));
    assert_eq!(phone.count(), 1);
    let push = w
        .engine
        .store()
        .push_of_transaction(transaction_of(&txn).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        push.expires_at,
        T0 + 5 + 120 - 3,
        "the push ends with its login (a poll before it), not a full push lifetime later"
    );
    // With less than that left, no push is sent: the user is asked for a code instead.
    let p = login(&w, LoginMode::Challenge, "alice", "hunter2");
    w.clock.advance(113);
    match answer(&w, "alice", "192.0.2.10", &prompt_txn(&p), "2") {
        Step::Prompt { text, .. } => assert!(text.contains("about to expire"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(phone.count(), 1, "no second push");
}

#[test]
fn auto_mode_and_append_push_word_push_at_once() {
    let (w, phone) = push_world(false);
    wait_of(&login(&w, LoginMode::Auto, "alice", "hunter2"));
    assert_eq!(phone.count(), 1);
    let (txn, _) = wait_of(&append(&w, "hunter2,push"));
    assert_eq!(phone.count(), 2);
    let (id, token) = phone.last();
    w.engine
        .answer_push(&id, &token, PushAnswer::Approve { number: None })
        .unwrap();
    assert!(is_accept(&poll(&w, "alice", &txn)));
}

#[test]
fn provider_down_falls_back_to_a_code_or_rejects() {
    let (w, phone) = push_world(false);
    phone.down.store(true, Ordering::SeqCst);
    // alice can still give a code.
    let s = login(&w, LoginMode::Auto, "alice", "hunter2");
    let txn = match &s {
        Step::Prompt { text, txn, .. } => {
            assert!(text.contains("unavailable"), "{text}");
            txn.clone()
        }
        other => panic!("{other:?}"),
    };
    assert!(is_accept(&answer(
        &w,
        "alice",
        "192.0.2.10",
        &txn,
        &code_at(T0)
    )));
    // append cannot prompt: a clear reject.
    match login(&w, LoginMode::Append, "pat", "pw,push") {
        Step::Reject { user_message } => {
            assert!(user_message.contains("unavailable"), "{user_message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        last_reason(&w).contains("push not sent"),
        "{}",
        last_reason(&w)
    );
}

#[test]
fn the_notice_carries_context_and_links_but_the_store_no_token() {
    let (w, phone) = push_world(true);
    wait_of(&login(&w, LoginMode::Challenge, "pat", "pw"));
    let (topic, notice) = phone.notices.lock().unwrap().last().cloned().unwrap();
    assert!(topic.starts_with("pc_"));
    assert!(notice.message.contains("pat") && notice.message.contains("192.0.2.10"));
    assert!(notice
        .page_url
        .starts_with("https://mfa.example.com/v1/push/"));
    assert!(notice.page_url.ends_with(&notice.token));
    assert!(notice.number_matching);
    let (id, _) = phone.last();
    let stored = w.engine.store().push_by_id(&id).unwrap().unwrap();
    assert_ne!(stored.token_hash, notice.token);
    assert!(!stored.token_hash.contains(&notice.token));
}

#[test]
fn a_tenant_that_accepts_only_push_pushes_at_once_and_refuses_app_codes() {
    let (mut w, phone) = push_world(false);
    w.engine
        .set_allowed_factors("acme", vec!["push".to_string()]);
    // alice holds TOTP too, but the tenant accepts push only: no menu, a push at once.
    let (txn, _) = wait_of(&login(&w, LoginMode::Challenge, "alice", "hunter2"));
    assert_eq!(phone.count(), 1);
    let s = answer(&w, "alice", "192.0.2.10", &txn, &code_at(T0));
    assert!(!is_accept(&s), "an app code is not accepted: {s:?}");
    assert!(!is_accept(&append(&w, &format!("hunter2{}", code_at(T0)))));
}

#[test]
fn auto_mode_sends_no_number_to_match() {
    let (w, phone) = push_world(true);
    let (txn, text) = wait_of(&login(&w, LoginMode::Auto, "alice", "hunter2"));
    assert!(!text.contains("pick"), "{text}");
    let (id, token) = phone.last();
    assert!(!phone.notices.lock().unwrap()[0].1.number_matching);
    assert_eq!(
        w.engine
            .answer_push(&id, &token, PushAnswer::Approve { number: None })
            .unwrap()
            .0,
        PushDecision::Approved
    );
    assert!(is_accept(&poll(&w, "alice", &txn)));
}

#[test]
fn the_default_factor_leads_the_menu_and_auto_starts_it() {
    let (mut w, phone) = push_world(false);
    // The tenant's default: the app. auto mode then asks for the app's code, no push.
    w.engine.set_default_factor("acme", Some("totp".into()));
    match login(&w, LoginMode::Auto, "alice", "hunter2") {
        Step::Prompt {
            expects, choices, ..
        } => {
            assert_eq!(expects, Expects::Code);
            assert!(choices.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(phone.count(), 0, "no push when the default is the app");
    // Default push: first in the challenge menu.
    w.engine.set_default_factor("acme", Some("push".into()));
    match login(&w, LoginMode::Challenge, "alice", "hunter2") {
        Step::Prompt { choices, .. } => assert_eq!(choices[0].id, "push"),
        other => panic!("{other:?}"),
    }
    // A rule's default overrides the tenant's.
    w.engine.set_rules(
        "acme",
        vec![crate::policy::Rule {
            name: "vpn-app-first".into(),
            action: crate::policy::Action::RequireMfa,
            clients: vec!["vpn".into()],
            hosts: vec![],
            groups: vec![],
            sources: vec![],
            attributes: Default::default(),
            time: None,
            factors: vec![],
            remember: None,
            default_factor: Some("totp".into()),
        }],
    );
    match login(&w, LoginMode::Challenge, "alice", "hunter2") {
        Step::Prompt { choices, .. } => assert_eq!(choices[0].id, "app"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_enrolment_code_is_sent_again_at_most_once_per_pause_even_from_parallel_clicks() {
    let (w, phone) = push_world(false);
    add_user_with_pw(&w, "quinn");
    let (f, _) = w.admin.enroll_push("acme", "quinn", None).unwrap();
    let before = phone.texts.lock().unwrap().len();
    let engine = Arc::new(w.engine);
    let clicks: Vec<_> = (0..4)
        .map(|_| {
            let (e, id) = (engine.clone(), f.factor_id.clone());
            std::thread::spawn(move || {
                e.resend_push_enrolment_code("acme", "quinn", &id, 15)
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<SendOutcome> = clicks.into_iter().map(|t| t.join().unwrap()).collect();
    let sent = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Sent { .. }))
        .count();
    assert_eq!(sent, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, SendOutcome::Sent { .. } | SendOutcome::TooSoon { .. })));
    assert_eq!(phone.texts.lock().unwrap().len(), before + 1);
}
