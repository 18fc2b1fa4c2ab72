//! Push approval end to end: `portcullis serve` publishes through a strict local fake of an
//! ntfy server (HTTPS with a CA made for the test, access token, JSON checked); the test
//! answers as the phone would, on the daemon's real HTTP listener (the ntfy action's POST
//! with the token, or the approval page's form), and logs in with radclient or raw UDP.

use std::thread;
use std::time::{Duration, Instant};

use portcullis_tests::fakes::ntfy::{Behaviour, FakeNtfy};
use portcullis_tests::http::{get, post};
use portcullis_tests::radclient::radclient_waiting;
use portcullis_tests::raw::code;
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, RawClient, Server, TestEnv,
};
use serde_json::Value;

const PUBLIC: &str = "https://mfa.example.test";

struct World {
    ntfy: FakeNtfy,
    env: TestEnv,
    server: Server,
    /// alice's TOTP secret (alice has TOTP and push; pat has push only).
    secret: String,
    _ca_dir: tempfile::TempDir,
}

/// Tenant acme: "pat" (password "pw") with push only, "alice" ("hunter2") with TOTP and
/// push; both push factors enrolled through the CLI and confirmed with the pushed code.
fn world(client: ClientSpec, push_extra: &str) -> World {
    require_tool("radclient", "freeradius-utils");
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    let extra = format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\"\n\n[tenants.acme]\nfactor_reply = [\"Class=mfa:{{factor}}\"]\n{}",
        ntfy.config("acme", push_extra)
    );
    let env = TestEnv::with_extra_config(vec![client], &extra);
    env.add_tenant("acme");
    env.add_user("acme", "pat", "pw");
    env.add_user("acme", "alice", "hunter2");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    for (i, user) in ["pat", "alice"].into_iter().enumerate() {
        let enrolled = env.cli_json(&[
            "factor", "enroll", "push", "--tenant", "acme", user, "--json",
        ]);
        let id = enrolled["factor_id"]
            .as_str()
            .expect("factor id")
            .to_string();
        let url = enrolled["subscribe_url"].as_str().expect("subscribe url");
        assert!(url.starts_with(&ntfy.base_url()), "{url}");
        let msgs = ntfy.messages();
        assert_eq!(msgs.len(), i + 1, "enrolment pushes a code");
        assert_eq!(
            format!("{}/{}", ntfy.base_url(), msgs[i]["topic"].as_str().unwrap()),
            url,
            "the code goes to the topic the user subscribes to"
        );
        env.cli_ok(&[
            "factor",
            "confirm",
            "--tenant",
            "acme",
            user,
            &id,
            &ntfy.last_code(),
        ]);
    }
    let server = env.start_server();
    World {
        ntfy,
        env,
        server,
        secret,
        _ca_dir: ca_dir,
    }
}

/// (push id, token) from a published notification: its click URL is the approval page.
fn link(msg: &Value) -> (String, String) {
    let click = msg["click"].as_str().expect("click URL");
    let rest = click
        .strip_prefix(&format!("{PUBLIC}/v1/push/"))
        .unwrap_or_else(|| panic!("unexpected click URL {click}"));
    let (id, token) = rest.split_once("?t=").expect("token in the link");
    (id.to_string(), token.to_string())
}

impl World {
    fn http(&self) -> std::net::SocketAddr {
        self.server.http_addr.expect("http listener")
    }

    /// Wait for the `n`th notification (counting enrolment codes).
    fn notification(&self, n: usize) -> Value {
        let msgs = self.ntfy.wait_for(n, Duration::from_secs(10));
        assert!(
            msgs.len() >= n,
            "no push arrived; refusals: {:?}",
            self.ntfy.refusals()
        );
        msgs[n - 1].clone()
    }

    /// The phone's answer, as an ntfy HTTP action sends it (token as Bearer).
    fn answer(&self, id: &str, token: &str, what: &str, number: Option<u8>) -> (u16, String) {
        let path = match number {
            Some(n) => format!("/v1/push/{id}/{what}?number={n}"),
            None => format!("/v1/push/{id}/{what}"),
        };
        let bearer = format!("Bearer {token}");
        post(self.http(), &path, &[("Authorization", &bearer)], b"")
    }

    fn radius(&self, user: &str, password: &str, state: Option<&str>) -> RadReply {
        let mut attrs = vec![
            ("User-Name", user.to_string()),
            ("User-Password", password.to_string()),
        ];
        if let Some(s) = state {
            attrs.push(("State", s.to_string()));
        }
        radclient(self.server.addr, &self.env.client().secret, &attrs, true)
    }
}

/// A login the server holds for a push, sent from a thread of its own (radclient waits up
/// to 25 s for the answer).
fn held_login(w: &World, user: &str, password: &str) -> thread::JoinHandle<RadReply> {
    let (addr, secret) = (w.server.addr, w.env.client().secret.clone());
    let attrs = [
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
    ];
    thread::spawn(move || radclient_waiting(addr, &secret, &attrs, 25))
}

fn auto_client(max_wait: &str) -> ClientSpec {
    let mut c = ClientSpec::new(Mode::Auto);
    c.extra = format!("max_wait = \"{max_wait}\"\n");
    c
}

#[test]
fn auto_mode_holds_the_request_until_the_phone_approves() {
    let w = world(auto_client("20s"), "");
    let login = held_login(&w, "pat", "pw");
    let msg = w.notification(3);
    assert_eq!(msg["priority"], 5);
    let text = msg["message"].as_str().unwrap();
    assert!(text.contains("pat") && text.contains("vpn"), "{text}");
    // auto mode shows no prompt, so no number to match: Approve is a plain HTTP action.
    assert_eq!(msg["actions"][0]["action"], "http", "{msg}");
    let (id, token) = link(&msg);
    thread::sleep(Duration::from_millis(300));
    assert!(
        !login.is_finished(),
        "the request is held while the push waits"
    );
    let (status, body) = w.answer(&id, &token, "approve", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("approved"), "{body}");
    let reply = login.join().unwrap();
    assert!(reply.is_accept(), "{}", reply.raw_output);
    // The NAS learns the factor used (`factor_reply`): Class = "mfa:push".
    let class = reply.attribute("Class").unwrap_or_default().to_string();
    assert!(
        class.contains("mfa:push") || class.contains("6d66613a70757368"),
        "{}",
        reply.raw_output
    );
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "pat", "--json"]);
    assert!(audit.to_string().contains("push"), "{audit}");
    // The token was single-use.
    assert_eq!(w.answer(&id, &token, "approve", None).0, 409);
}

#[test]
fn a_login_held_at_sigterm_is_still_approved_through_the_http_listener() {
    let mut w = world(auto_client("20s"), "");
    let login = held_login(&w, "pat", "pw");
    let msg = w.notification(3);
    let (id, token) = link(&msg);
    // The daemon is asked to stop while the request is held for the phone: it stops
    // receiving RADIUS, but the phone's answer still lands and the login finishes.
    w.server.signal(portcullis_tests::process::Signal::TERM);
    let log = w
        .server
        .wait_for_stderr("shutting down", Duration::from_secs(10));
    assert!(log.contains("shutting down"), "{log}");
    let (status, body) = w.answer(&id, &token, "approve", None);
    assert_eq!(status, 200, "{body}");
    let reply = login.join().unwrap();
    assert!(reply.is_accept(), "{}", reply.raw_output);
    let status = w
        .server
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon did not exit after its last login");
    assert!(status.success(), "{status:?}\n{}", w.server.stderr());
}

#[test]
fn a_retransmitted_request_during_the_wait_sends_no_second_push() {
    let w = world(auto_client("20s"), "");
    let raw = RawClient::new(w.server.addr, &w.env.client().secret);
    let req = raw.access_request(7, "pat", b"pw", None, true);
    raw.send(&req.bytes);
    let msg = w.notification(3);
    // The NAS retransmits (the same bytes) while the user reaches for the phone.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(200));
        raw.send(&req.bytes);
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(w.ntfy.messages().len(), 3, "exactly one push for the login");
    let (id, token) = link(&msg);
    let asked = Instant::now();
    assert_eq!(w.answer(&id, &token, "approve", None).0, 200);
    let answered = asked.elapsed();
    let reply = raw
        .recv(Duration::from_secs(5))
        .expect("a reply after approval");
    let decided = asked.elapsed();
    assert_eq!(raw.decode(&req, &reply).code, code::ACCESS_ACCEPT);
    // Not a benchmark: a sanity bound showing the decision wakes the held request.
    eprintln!(
        "approval answered in {answered:?}; Access-Accept {decided:?} after the approval was sent"
    );
    assert!(decided < Duration::from_secs(2), "{decided:?}");
    assert!(
        raw.recv(Duration::from_millis(500)).is_none(),
        "one reply only"
    );
}

/// A NAS cut off by a reload (its client removed) while a login of it is held for a push:
/// the approval that comes after does not make an Access-Accept signed with its secret.
#[test]
fn a_login_held_for_a_client_that_a_reload_removes_gets_no_answer() {
    let w = world(auto_client("20s"), "");
    let raw = RawClient::new(w.server.addr, &w.env.client().secret);
    let req = raw.access_request(9, "pat", b"pw", None, true);
    raw.send(&req.bytes);
    let (id, token) = link(&w.notification(3));
    let text = std::fs::read_to_string(w.env.config_path()).unwrap();
    let moved = text.replace("address = \"127.0.0.1/32\"", "address = \"192.0.2.0/24\"");
    assert_ne!(moved, text, "the client's address is in the config");
    std::fs::write(w.env.config_path(), moved).unwrap();
    assert!(w.server.reload(), "{}", w.server.stderr());
    assert_eq!(w.answer(&id, &token, "approve", None).0, 200);
    assert!(
        raw.recv(Duration::from_secs(3)).is_none(),
        "a removed client was answered:\n{}",
        w.server.stderr()
    );
    let log = w
        .server
        .wait_for_stderr("removed by a reload", Duration::from_secs(5));
    assert!(log.contains("no answer sent"), "{log}");
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "pat", "--json"]);
    let logins: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] == "radius")
        .collect();
    assert_eq!(logins.len(), 1, "{audit}");
    assert_eq!(logins[0]["result"], "reject", "{audit}");
    assert!(
        logins[0]["reason"]
            .as_str()
            .unwrap()
            .contains("removed by a reload while the login was held"),
        "{audit}"
    );
}

#[test]
fn denied_push_is_rejected_and_unanswered_push_times_out() {
    let w = world(auto_client("2s"), "");
    let (addr, secret) = (w.server.addr, w.env.client().secret.clone());
    let attrs = vec![
        ("User-Name", "pat".to_string()),
        ("User-Password", "pw".to_string()),
    ];
    let a = attrs.clone();
    let s = secret.clone();
    let login = thread::spawn(move || radclient_waiting(addr, &s, &a, 10));
    let (id, token) = link(&w.notification(3));
    assert_eq!(w.answer(&id, &token, "deny", None).0, 200);
    let reply = login.join().unwrap();
    assert!(reply.is_reject(), "{}", reply.raw_output);
    assert_eq!(
        reply.reply_message.as_deref(),
        Some("The login was denied on the phone.")
    );

    // Nobody answers: rejected once max_wait (2 s) has passed.
    let started = Instant::now();
    let reply = radclient_waiting(addr, &secret, &attrs, 10);
    let took = started.elapsed();
    assert!(reply.is_reject(), "{}", reply.raw_output);
    assert!(
        reply
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("not approved in time"),
        "{}",
        reply.raw_output
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(w.ntfy.messages().len(), 4);
}

#[test]
fn challenge_menu_push_with_number_matching_on_the_approval_page() {
    let mut client = ClientSpec::new(Mode::Challenge);
    client.extra = "menu_prompt = \"Second factor?\"\n".into();
    let w = world(client, "");
    // alice has the app and push: a menu, under the client's heading.
    let menu = w.radius("alice", "hunter2", None);
    assert!(menu.is_challenge(), "{}", menu.raw_output);
    let text = menu.reply_message.clone().unwrap_or_default();
    assert!(
        text.starts_with("Second factor? 1) code from your app  2) push to your phone"),
        "{text}"
    );
    let wait = w.radius("alice", "2", Some(&menu.state_for_radclient()));
    assert!(wait.is_challenge(), "{}", wait.raw_output);
    let prompt = wait.reply_message.clone().unwrap_or_default();
    let number: u8 = prompt
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| s.len() == 2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number to pick in {prompt}"));
    let msg = w.notification(3);
    // With number matching, Approve opens the page; Deny stays a one-tap action.
    assert_eq!(msg["actions"][0]["action"], "view", "{msg}");
    assert_eq!(msg["actions"][1]["action"], "http", "{msg}");
    let (id, token) = link(&msg);
    // The page: context and three numbers, the prompt's among them.
    let (status, page) = get(w.http(), &format!("/v1/push/{id}?t={token}"));
    assert_eq!(status, 200);
    assert!(page.contains("alice") && page.contains("vpn"), "{page}");
    assert_eq!(page.matches("name=\"number\"").count(), 3, "{page}");
    assert!(page.contains(&format!("id=\"pick-{number}\"")), "{page}");
    // A forged token shows nothing.
    assert_eq!(get(w.http(), &format!("/v1/push/{id}?t=forged")).0, 404);
    // The right number, picked on the page (a form post).
    let form = format!("t={token}&number={number}");
    let (status, body) = post(
        w.http(),
        &format!("/v1/push/{id}/approve"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(body.contains("data-result=\"approved\""), "{body}");
    // The user presses Enter: an empty answer with the State polls.
    let done = w.radius("alice", "", Some(&wait.state_for_radclient()));
    assert!(done.is_accept(), "{}", done.raw_output);

    // Again, picking a wrong number: the login is denied.
    let menu = w.radius("alice", "hunter2", None);
    let wait = w.radius("alice", "push", Some(&menu.state_for_radclient()));
    let prompt = wait.reply_message.clone().unwrap_or_default();
    let right: u8 = prompt
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| s.len() == 2)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let (id, token) = link(&w.notification(4));
    let wrong = if right == 10 { 11 } else { right - 1 };
    let (status, body) = w.answer(&id, &token, "approve", Some(wrong));
    assert_eq!(status, 200);
    assert!(body.contains("wrong_number"), "{body}");
    let done = w.radius("alice", "", Some(&wait.state_for_radclient()));
    assert!(done.is_reject(), "{}", done.raw_output);
}

#[test]
fn append_mode_push_word_and_a_provider_outage() {
    let w = world(ClientSpec::new(Mode::Append), "");
    let login = held_login(&w, "alice", "hunter2,push");
    let (id, token) = link(&w.notification(3));
    assert_eq!(w.answer(&id, &token, "approve", None).0, 200);
    assert!(login.join().unwrap().is_accept());

    // ntfy is down: push is refused with a clear message; the app's code still works.
    w.ntfy.set_behaviour(Behaviour::ServerError);
    let reply = w.radius("alice", "hunter2,push", None);
    assert!(reply.is_reject(), "{}", reply.raw_output);
    assert!(
        reply
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("unavailable"),
        "{}",
        reply.raw_output
    );
    let audit = w
        .env
        .cli_json(&["audit", "--tenant", "acme", "--user", "alice", "--json"]);
    assert!(audit.to_string().contains("push not sent"), "{audit}");
    let code = oathtool_totp(&w.secret, 6, Algorithm::Sha1, 0);
    let reply = w.radius("alice", &format!("hunter2{code}"), None);
    assert!(reply.is_accept(), "{}", reply.raw_output);
}

#[test]
fn the_anti_fatigue_cap_stops_a_push_storm() {
    let w = world(ClientSpec::new(Mode::Append), "max_pushes = 2\n");
    for n in 0..2 {
        let login = held_login(&w, "pat", "pw,push");
        let (id, token) = link(&w.notification(3 + n));
        assert_eq!(w.answer(&id, &token, "deny", None).0, 200);
        assert!(login.join().unwrap().is_reject());
    }
    let reply = w.radius("pat", "pw,push", None);
    assert!(reply.is_reject(), "{}", reply.raw_output);
    assert!(
        reply
            .reply_message
            .as_deref()
            .unwrap_or("")
            .contains("Too many push requests"),
        "{}",
        reply.raw_output
    );
    assert_eq!(w.ntfy.messages().len(), 4, "no third push");
}

#[test]
fn a_client_holds_at_most_max_held_requests_and_answers_the_next_with_a_challenge() {
    // One busy NAS must not take every in-flight slot with held push waits.
    let mut client = auto_client("20s");
    client.extra.push_str("max_held = 1\n");
    let w = world(client, "");
    let pat = held_login(&w, "pat", "pw");
    let pat_push = w.notification(3);
    // alice's push goes out too, but her request is not held: a challenge comes at once.
    let started = Instant::now();
    let alice = w.radius("alice", "hunter2", None);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        alice.code.as_deref(),
        Some("Access-Challenge"),
        "{}",
        alice.raw_output
    );
    let alice_push = w.notification(4);
    assert!(!pat.is_finished(), "pat's request is still held");
    let (_, metrics) = get(w.http(), "/metrics");
    assert!(
        metrics.contains("portcullis_radius_held{client=\"vpn\"} 1")
            && metrics.contains("portcullis_radius_held_over_limit_total{client=\"vpn\"} 1"),
        "{metrics}"
    );
    // Both logins end well: pat's held one, and alice's through her challenge.
    let (id, token) = link(&pat_push);
    assert_eq!(w.answer(&id, &token, "approve", None).0, 200);
    assert!(pat.join().unwrap().is_accept());
    let (id, token) = link(&alice_push);
    assert_eq!(w.answer(&id, &token, "approve", None).0, 200);
    let reply = w.radius("alice", "", Some(&alice.state_for_radclient()));
    assert!(reply.is_accept(), "{}", reply.raw_output);
    let (_, metrics) = get(w.http(), "/metrics");
    assert!(
        metrics.contains("portcullis_radius_held{client=\"vpn\"} 0"),
        "{metrics}"
    );
}
