//! First factor from a real upstream FreeRADIUS (started by the test from a private copy of
//! /etc/freeradius/3.0 on its own port), second factor TOTP from oathtool, NAS = radclient.
//! A fake upstream that answers with a wrong authenticator checks that forged replies are
//! refused.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_tests::freeradius::{free_udp_port, FreeRadius};
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, TestEnv,
};
use serde_json::Value;

const BOB_PW: &str = "bob upstream pw";

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

fn upstream() -> FreeRadius {
    FreeRadius::start(&format!(
        "bob\tCleartext-Password := \"{BOB_PW}\"\n\tClass := 0x75707374726561d2d2, Filter-Id := \"vpn-filter\"\n"
    ))
}

/// Tenant `acme` forwards passwords to `servers` (address, secret) in order.
fn upstream_config(servers: &[(SocketAddr, &str)], timeout: &str) -> String {
    let mut s = format!(
        "[tenants.acme]\nfirst_factor = \"radius\"\n\n[tenants.acme.radius]\ntimeout = \"{timeout}\"\nretries = 0\n\
         pass_through = [\"Class\", \"Filter-Id\"]\n"
    );
    for (addr, secret) in servers {
        s.push_str(&format!(
            "\n[[tenants.acme.radius.servers]]\naddress = \"{addr}\"\nsecret = \"{secret}\"\n"
        ));
    }
    s
}

fn env_with(mode: Mode, extra: &str) -> TestEnv {
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(mode)], extra);
    env.add_tenant("acme");
    env
}

fn login(env: &TestEnv, addr: SocketAddr, user: &str, pw: &str, state: Option<&str>) -> RadReply {
    let mut attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", pw.to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    radclient(addr, &env.client().secret, &attrs, true)
}

fn last_reason(env: &TestEnv, user: &str) -> String {
    let v = env.cli_json(&["audit", "--tenant", "acme", "--user", user, "--json"]);
    v.as_array()
        .and_then(|a| a.last())
        .and_then(|r| r.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no audit record for {user}: {v}"))
        .to_string()
}

#[track_caller]
fn expect(reply: &RadReply, code: &str, what: &str) {
    assert_eq!(
        reply.code.as_deref(),
        Some(code),
        "{what}\n{}",
        reply.raw_output
    );
}

/// A port on 127.0.0.1 where nothing listens (ICMP port unreachable: a dead server).
fn dead_server() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

#[test]
fn upstream_radius_first_factor_is_forwarded_with_failover_and_pass_through_reaches_the_nas() {
    peers();
    let fr = upstream();
    // The first server is dead: the login fails over to FreeRADIUS.
    let env = env_with(
        Mode::Challenge,
        &upstream_config(&[(dead_server(), "x"), (fr.addr, &fr.secret)], "1s"),
    );
    let server = env.start_server();
    let secret = random_base32_secret();
    env.add_user("acme", "bob", "not used: the upstream checks passwords");
    env.enroll_totp("acme", "bob", Some(&secret));

    let first = login(&env, server.addr, "bob", BOB_PW, None);
    expect(&first, "Access-Challenge", "upstream accepted the password");
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let done = login(
        &env,
        server.addr,
        "bob",
        &code,
        Some(&first.state_for_radclient()),
    );
    expect(&done, "Access-Accept", "upstream password + TOTP");
    // The upstream Accept's Class and Filter-Id arrive at the NAS with the final Accept.
    assert_eq!(
        done.attribute("Class"),
        Some("0x75707374726561d2d2"),
        "{}",
        done.raw_output
    );
    assert_eq!(
        done.attribute("Filter-Id"),
        Some("vpn-filter"),
        "{}",
        done.raw_output
    );
}

#[test]
fn upstream_radius_refuses_a_wrong_password_and_the_local_hash_is_not_used() {
    peers();
    let fr = upstream();
    let env = env_with(
        Mode::Append,
        &upstream_config(&[(fr.addr, &fr.secret)], "2s"),
    );
    let server = env.start_server();
    let secret = random_base32_secret();
    env.add_user("acme", "bob", "local-pw");
    env.enroll_totp("acme", "bob", Some(&secret));
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let r = login(&env, server.addr, "bob", &format!("wrong{code}"), None);
    expect(&r, "Access-Reject", "wrong upstream password");
    assert!(
        last_reason(&env, "bob").contains("rejected the password"),
        "{}",
        last_reason(&env, "bob")
    );
    let r = login(&env, server.addr, "bob", &format!("local-pw{code}"), None);
    expect(
        &r,
        "Access-Reject",
        "the store's hash is not the first factor",
    );
    // Append mode: the pass-through attributes come with the one Accept.
    let r = login(&env, server.addr, "bob", &format!("{BOB_PW}{code}"), None);
    expect(&r, "Access-Accept", "upstream password + code");
    assert_eq!(
        r.attribute("Filter-Id"),
        Some("vpn-filter"),
        "{}",
        r.raw_output
    );
}

/// Answers every request with an Access-Accept whose Response Authenticator is wrong (as an
/// attacker who cannot know the secret would), until `stop`.
fn forging_upstream(stop: Arc<AtomicBool>) -> (SocketAddr, std::thread::JoinHandle<u32>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut answered = 0;
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 20 {
                continue;
            }
            // Access-Accept, same identifier, Filter-Id "forged", random authenticator.
            let mut reply = vec![2u8, buf[1], 0, 0];
            reply.extend_from_slice(&rand::random::<[u8; 16]>());
            reply.extend_from_slice(&[11, 8]);
            reply.extend_from_slice(b"forged");
            let len = reply.len() as u16;
            reply[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = sock.send_to(&reply, from);
            answered += 1;
        }
        answered
    });
    (addr, handle)
}

#[test]
fn forged_upstream_reply_is_refused() {
    peers();
    let stop = Arc::new(AtomicBool::new(false));
    let (fake, handle) = forging_upstream(stop.clone());
    let env = env_with(
        Mode::Append,
        &upstream_config(&[(fake, "upstream-secret")], "1s"),
    );
    let server = env.start_server();
    let secret = random_base32_secret();
    env.add_user("acme", "bob", "x");
    env.enroll_totp("acme", "bob", Some(&secret));
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let r = login(&env, server.addr, "bob", &format!("{BOB_PW}{code}"), None);
    stop.store(true, Ordering::Relaxed);
    let answered = handle.join().expect("fake upstream");
    assert!(answered >= 1, "the fake upstream was never asked");
    expect(&r, "Access-Reject", "a forged upstream Accept");
    let why = last_reason(&env, "bob");
    assert!(why.contains("first factor (radius) unavailable"), "{why}");
    assert!(why.contains("did not verify"), "{why}");
}
