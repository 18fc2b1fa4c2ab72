//! The RADIUS front end (radius-server/src/radius/) against the real binary, where it meets
//! senders and shutdown: a shutdown that must still finish the login in flight whatever
//! `max_in_flight` says, a warning that an unauthenticated sender must not be able to repeat
//! at will, answers without the Engine that must not grow the response cache, and the State
//! bindings a NAS relies on.

use std::net::UdpSocket;
use std::time::Duration;

use portcullis_tests::http::wait_for_metric;
use portcullis_tests::process::Signal;
use portcullis_tests::raw::{code, socket_from, RawClient};
use portcullis_tests::{
    oathtool_totp, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode, TestEnv,
};

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

fn peers() {
    require_tool("oathtool", "oathtool");
}

/// Tenant `acme` with `alice` (password `pw`) and `bob` (password `bobpw`), each with a
/// confirmed TOTP factor; returns alice's TOTP secret.
fn env_with_users(clients: Vec<ClientSpec>, extra: &str) -> (TestEnv, String) {
    let env = TestEnv::with_extra_config(clients, extra);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    env.add_user("acme", "bob", "bobpw");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    env.enroll_totp("acme", "bob", Some(&random_base32_secret()));
    (env, secret)
}

/// `max_in_flight` above u32::MAX was truncated to a u32 by the shutdown drain
/// (4294967296 became 0 permits to wait for): SIGTERM then exited at once and the login in
/// flight never got its answer. The config now refuses more than 1,000,000 (a unit test in
/// the config); at that largest value the drain still waits for the login in flight.
#[test]
fn sigterm_finishes_the_login_in_flight_at_the_largest_max_in_flight() {
    peers();
    let (env, _) = env_with_users(vec![ClientSpec::new(Mode::Challenge)], HTTP);
    // A costly hash for alice's new password, so that her login is caught in flight.
    let slow = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("argon2_memory_kib = 1024", "argon2_memory_kib = 16384")
        .replace("argon2_iterations = 1", "argon2_iterations = 3")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"127.0.0.1:0\"]\nmax_in_flight = 1000000",
        );
    assert!(slow.contains("max_in_flight = 1000000"), "{slow}");
    std::fs::write(env.config_path(), slow).unwrap();
    env.cli_stdin_ok(
        &[
            "user",
            "set-password",
            "--tenant",
            "acme",
            "alice",
            "--password-stdin",
        ],
        "slowpw\n",
    );
    let mut server = env.start_server();
    let http = server.http_addr.expect("http listener");
    let client = RawClient::new(server.addr, "s3cret-vpn");
    let request = client.access_request(5, "alice", b"slowpw", None, true);
    client.send(&request.bytes);
    wait_for_metric(http, "portcullis_radius_in_flight", 1.0);
    server.signal(Signal::TERM);
    let reply = client.recv(Duration::from_secs(15));
    let status = server.wait_exit(Duration::from_secs(15));
    let reply = reply.unwrap_or_else(|| {
        panic!(
            "the login in flight at SIGTERM got no answer (exit {status:?}):\n{}",
            server.stderr()
        )
    });
    assert_eq!(client.decode(&request, &reply).code, code::ACCESS_CHALLENGE);
}

/// An Access-Request of just a User-Name, as anyone who can put a lenient NAS's address on
/// a datagram can send it (no Message-Authenticator, nothing secret in it).
fn user_name_only(identifier: u8, user: &str) -> Vec<u8> {
    let mut p = vec![code::ACCESS_REQUEST, identifier, 0, 0];
    p.extend_from_slice(&[identifier; 16]);
    p.push(1);
    p.push(u8::try_from(2 + user.len()).unwrap());
    p.extend_from_slice(user.as_bytes());
    let len = u16::try_from(p.len()).unwrap();
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// Every Access-Request without User-Password wrote a WARN line: a sender without the secret
/// (a lenient client needs no Message-Authenticator) could fill the log at will, which the
/// other drop warnings are limited against.
#[test]
fn requests_without_user_password_are_warned_about_at_most_once_a_minute() {
    peers();
    let legacy = ClientSpec::legacy(Mode::Challenge);
    let (env, _) = env_with_users(vec![ClientSpec::new(Mode::Challenge), legacy], "");
    let server = env.start_server();
    let sock = socket_from("127.0.0.2", server.addr);
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    const WARNING: &str = "without User-Password";
    for id in 0..20u8 {
        sock.send(&user_name_only(id, "alice")).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("each request is answered");
        assert_eq!(buf[0], code::ACCESS_REJECT, "request {id}");
        assert!(n >= 20);
    }
    let log = server.wait_for_stderr(WARNING, Duration::from_secs(5));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(lines.len(), 1, "one warning for 20 requests:\n{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("legacy"),
        "{}",
        lines[0]
    );
}

/// A State is bound to its user and client: an answer for another user or through another
/// client is refused; the same NAS answering from another source port is fine.
#[test]
fn a_state_is_refused_for_another_user_and_from_another_client() {
    peers();
    let mut branch = ClientSpec::new(Mode::Challenge);
    branch.name = "branch".into();
    branch.address = "127.0.0.2/32".into();
    branch.secret = "s3cret-branch".into();
    let (env, secret) = env_with_users(vec![ClientSpec::new(Mode::Challenge), branch], "");
    let server = env.start_server();
    let vpn = RawClient::new(server.addr, "s3cret-vpn");
    let other_port = RawClient::new(server.addr, "s3cret-vpn");
    let branch = RawClient::from_ip("127.0.0.2", server.addr, "s3cret-branch");
    let wait = Duration::from_secs(5);
    let code_now = || oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let mut id = 0u8;
    let mut challenge = || {
        id += 2;
        let r = vpn.access_request(id, "alice", b"pw", None, true);
        let reply = vpn.exchange(&r, wait).expect("challenge");
        let d = vpn.decode(&r, &reply);
        assert_eq!(d.code, code::ACCESS_CHALLENGE, "{d:?}");
        d.state.expect("State")
    };
    let answer = |c: &RawClient, user: &str, state: &[u8]| {
        let r = c.access_request(200, user, code_now().as_bytes(), Some(state), true);
        let reply = c.exchange(&r, wait).expect("answer");
        c.decode(&r, &reply).code
    };

    // (Whether a refused answer also ends the owner's login is the Engine's choice; each
    // case below starts its own.)
    let state = challenge();
    assert_eq!(answer(&vpn, "bob", &state), code::ACCESS_REJECT, "as bob");
    let state = challenge();
    assert_eq!(
        answer(&branch, "alice", &state),
        code::ACCESS_REJECT,
        "through another client"
    );
    let state = challenge();
    assert_eq!(
        answer(&other_port, "alice", &state),
        code::ACCESS_ACCEPT,
        "the same NAS from another source port"
    );
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// Each request answered by the front end alone (here: no User-Password) took a response
/// cache entry for `response_cache_ttl`: for a client that needs no Message-Authenticator,
/// anyone able to use its address could grow the server by ~450 bytes a datagram (100k
/// datagrams from 400 ports: +46 MB), at the speed the loop answers them. Such an answer
/// changes nothing and encodes to the same bytes again, so it needs no entry.
#[test]
fn requests_answered_without_the_engine_do_not_grow_the_response_cache() {
    peers();
    let legacy = ClientSpec::legacy(Mode::Challenge);
    let (env, _) = env_with_users(vec![legacy], "");
    let server = env.start_server();
    let socks: Vec<UdpSocket> = (0..400)
        .map(|_| {
            let s = socket_from("127.0.0.2", server.addr);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    let mut buf = [0u8; 4096];
    let mut round = |id: u8| {
        for s in &socks {
            s.send(&user_name_only(id, "alice")).unwrap();
        }
        for s in &socks {
            let n = s.recv(&mut buf).expect("every request is answered");
            assert!(n >= 20 && buf[0] == code::ACCESS_REJECT);
        }
    };
    // A first round warms the runtime and the allocator up.
    round(0);
    let before = rss_kib(server.pid());
    for id in 1..=255u8 {
        round(id);
    }
    let after = rss_kib(server.pid());
    assert!(
        after < before + 16 * 1024,
        "102000 unauthenticated requests grew the server from {before} KiB to {after} KiB"
    );
}
