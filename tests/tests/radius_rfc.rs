//! RFC behaviour seen from the network: Status-Server, Proxy-State, reply attributes, and
//! every malformed-packet class of reference/radius.md dropped AND counted on /metrics.

use std::net::UdpSocket;
use std::time::Duration;

use portcullis_server::radius::packet::{
    encode_access_request, encode_status_server, RawAttribute,
};
use portcullis_tests::http::metric;
use portcullis_tests::raw::{self, code, socket_from, RawClient};
use portcullis_tests::{
    oathtool_totp, radclient, radclient_command, random_base32_secret, require_tool, Algorithm,
    ClientSpec, Mode, Server, TestEnv,
};

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

const REPLY: &str = r#"
[tenants.acme]
reply = ["Class=staff", "Session-Timeout=3600"]

[[tenants.acme.groups]]
name = "vpn-admins"
reply = ["Filter-Id=full", "9:1=shell:priv-lvl=15", "Session-Timeout=600"]
"#;

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

/// Tenant `acme`, user `alice` (password `pw`, TOTP, groups given) and a running server.
struct Setup {
    server: Server,
    // Kept so that the directory outlives the server (fields drop in order).
    _env: TestEnv,
    secret: String,
}

impl Setup {
    fn new(clients: Vec<ClientSpec>, extra: &str, groups: &[&str]) -> Setup {
        let env = TestEnv::with_extra_config(clients, extra);
        env.add_tenant("acme");
        let mut args = vec![
            "user",
            "add",
            "--tenant",
            "acme",
            "alice",
            "--password-stdin",
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        env.cli_stdin_ok(&args, "pw\n");
        let secret = random_base32_secret();
        env.enroll_totp("acme", "alice", Some(&secret));
        let server = env.start_server();
        Setup {
            server,
            _env: env,
            secret,
        }
    }

    fn code(&self) -> String {
        oathtool_totp(&self.secret, 6, Algorithm::Sha1, 0)
    }
}

#[test]
fn an_accept_too_large_for_one_packet_becomes_a_reject_not_silence() {
    peers();
    // 17 Filter-Ids of 240 bytes: over 4096 bytes with the rest of the reply.
    let filter = "f".repeat(240);
    let list = vec![format!("\"Filter-Id={filter}\""); 17].join(", ");
    let extra = format!(
        "{HTTP}\n[tenants.acme]\n\n[[tenants.acme.groups]]\nname = \"huge\"\nreply = [{list}]\n"
    );
    let s = Setup::new(vec![ClientSpec::new(Mode::Append)], &extra, &["huge"]);
    let attrs = [
        ("User-Name", "alice".to_string()),
        ("User-Password", format!("pw{}", s.code())),
    ];
    let r = radclient(s.server.addr, "s3cret-vpn", &attrs, true);
    assert!(r.is_reject(), "{}", r.raw_output);
    assert_eq!(
        r.attribute("Reply-Message"),
        Some("Authentication failed"),
        "{}",
        r.raw_output
    );
    let log = s
        .server
        .wait_for_stderr("does not fit in one RADIUS packet", Duration::from_secs(5));
    assert!(log.contains("shorten the reply attributes"), "{log}");
    // The audit says what was sent after the Engine's Accept.
    let record = audit_record(&s, "did not fit in one RADIUS packet");
    assert_eq!(record["result"], "reject", "{record}");
    assert_eq!(record["username"], "alice", "{record}");
}

/// The first audit record of tenant acme whose reason contains `text`, waited for up to
/// 5 s (the server writes it off its receive path).
fn audit_record(s: &Setup, text: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let audit = s._env.cli_json(&["audit", "--tenant", "acme", "--json"]);
        let found = audit.as_array().and_then(|records| {
            records
                .iter()
                .find(|r| r["reason"].as_str().is_some_and(|t| t.contains(text)))
                .cloned()
        });
        if let Some(record) = found {
            return record;
        }
        assert!(std::time::Instant::now() < deadline, "{audit}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_challenge_too_large_for_one_packet_becomes_a_reject_and_is_audited() {
    // The request's Proxy-States come back in the reply: with the challenge's prompt and
    // State they no longer fit one packet.
    let s = Setup::new(vec![ClientSpec::new(Mode::Challenge)], HTTP, &[]);
    let client = RawClient::new(s.server.addr, "s3cret-vpn");
    let mut proxy: Vec<RawAttribute> = (0..15)
        .map(|i| RawAttribute {
            typ: 33,
            value: vec![i; 253],
        })
        .collect();
    proxy.push(RawAttribute {
        typ: 33,
        value: vec![99; 140],
    });
    let authenticator = [5u8; 16];
    let bytes = encode_access_request(
        9,
        authenticator,
        b"s3cret-vpn",
        "alice",
        b"pw",
        None,
        &proxy,
        true,
    )
    .unwrap();
    assert!(
        bytes.len() <= 4096,
        "the request itself fits: {}",
        bytes.len()
    );
    let request = raw::RawRequest {
        identifier: 9,
        authenticator,
        bytes,
    };
    let reply = client
        .exchange(&request, Duration::from_secs(3))
        .expect("an answer, not silence");
    assert_eq!(client.decode(&request, &reply).code, code::ACCESS_REJECT);
    let record = audit_record(&s, "Challenge did not fit");
    assert_eq!(record["result"], "reject", "{record}");
}

#[test]
fn status_server_from_radclient_is_answered_and_counted() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::Challenge)], HTTP, &[]);
    let r = radclient_command(s.server.addr, "status", "s3cret-vpn", &[], true);
    assert!(r.is_accept(), "Status-Server: {}", r.raw_output);
    let m = s.server.metrics();
    assert_eq!(
        metric(
            &m,
            r#"portcullis_radius_requests_total{client="vpn",code="status_server",result="accept"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn proxy_state_comes_back_in_order_and_reply_attributes_arrive() {
    peers();
    let s = Setup::new(
        vec![ClientSpec::new(Mode::Append)],
        &format!("{HTTP}{REPLY}"),
        &["vpn-admins"],
    );
    let attrs = [
        ("User-Name", "alice".to_string()),
        ("User-Password", format!("pw{}", s.code())),
        ("Proxy-State", "0x6f6e65".to_string()),
        ("Proxy-State", "0x74776f".to_string()),
    ];
    let r = radclient(s.server.addr, "s3cret-vpn", &attrs, true);
    assert!(r.is_accept(), "{}", r.raw_output);
    let proxy: Vec<&str> = r
        .attributes
        .iter()
        .filter(|(n, _)| n == "Proxy-State")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(proxy, ["0x6f6e65", "0x74776f"], "{}", r.raw_output);
    assert_eq!(
        r.attribute("Class"),
        Some("0x7374616666"),
        "{}",
        r.raw_output
    );
    assert_eq!(r.attribute("Filter-Id"), Some("full"), "{}", r.raw_output);
    assert_eq!(
        r.attribute("Cisco-AVPair"),
        Some("shell:priv-lvl=15"),
        "{}",
        r.raw_output
    );
    // The group's Session-Timeout replaces the tenant's.
    let timeouts: Vec<_> = r
        .attributes
        .iter()
        .filter(|(n, _)| n == "Session-Timeout")
        .collect();
    assert_eq!(timeouts.len(), 1, "{}", r.raw_output);
    assert_eq!(timeouts[0].1, "600", "{}", r.raw_output);
    assert_eq!(
        r.attributes.first().map(|(n, _)| n.as_str()),
        Some("Message-Authenticator"),
        "{}",
        r.raw_output
    );
    let m = s.server.metrics();
    assert_eq!(
        metric(
            &m,
            r#"portcullis_radius_requests_total{client="vpn",code="access_request",result="accept"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn user_outside_the_group_gets_only_the_tenant_attributes() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::Append)], REPLY, &["staff"]);
    let attrs = [
        ("User-Name", "alice".to_string()),
        ("User-Password", format!("pw{}", s.code())),
    ];
    let r = radclient(s.server.addr, "s3cret-vpn", &attrs, true);
    assert!(r.is_accept(), "{}", r.raw_output);
    assert_eq!(
        r.attribute("Class"),
        Some("0x7374616666"),
        "{}",
        r.raw_output
    );
    assert_eq!(
        r.attribute("Session-Timeout"),
        Some("3600"),
        "{}",
        r.raw_output
    );
    assert_eq!(r.attribute("Filter-Id"), None, "{}", r.raw_output);
}

#[test]
fn append_mode_asks_for_the_code_when_the_whole_string_is_the_password() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::Append)], "", &[]);
    // "pw" alone: no code typed; the whole string is the password -> challenge for the code.
    let r = radclient(
        s.server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".to_string()),
            ("User-Password", "pw".to_string()),
        ],
        true,
    );
    assert!(r.is_challenge(), "{}", r.raw_output);
    let r = radclient(
        s.server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".to_string()),
            ("User-Password", s.code()),
            ("State", r.state_for_radclient()),
        ],
        true,
    );
    assert!(r.is_accept(), "{}", r.raw_output);
}

#[test]
fn append_mode_accepts_delimited_password_and_code() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::Append)], "", &[]);
    let r = radclient(
        s.server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".to_string()),
            ("User-Password", format!("pw,{}", s.code())),
        ],
        true,
    );
    assert!(r.is_accept(), "{}", r.raw_output);
}

const AUTH: [u8; 16] = [7; 16];

/// A packet with `code` and raw attribute bytes, Length = real size.
fn packet(code: u8, attrs: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + attrs.len()).unwrap();
    let mut p = vec![code, 1];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&AUTH);
    p.extend_from_slice(attrs);
    p
}

fn with_length(mut p: Vec<u8>, length: u16) -> Vec<u8> {
    p[2..4].copy_from_slice(&length.to_be_bytes());
    p
}

#[test]
fn every_malformed_class_is_dropped_and_counted_while_the_server_keeps_serving() {
    peers();
    let legacy = ClientSpec::legacy(Mode::Challenge);
    let s = Setup::new(vec![ClientSpec::new(Mode::Challenge), legacy], HTTP, &[]);
    let addr = s.server.addr;
    let vpn = socket_from("127.0.0.1", addr);
    let old = socket_from("127.0.0.2", addr);
    let stranger = socket_from("127.0.0.3", addr);
    let user = [1u8, 7, b'a', b'l', b'i', b'c', b'e'];

    let signed = |secret: &[u8], extra: &[RawAttribute], ma: bool| {
        encode_access_request(3, AUTH, secret, "alice", b"pw", None, extra, ma).unwrap()
    };
    let cases: Vec<(&str, &UdpSocket, Vec<u8>)> = vec![
        ("too_short", &vpn, vec![1, 1, 0, 10, 0, 0, 0, 0, 0, 0]),
        ("bad_length", &vpn, with_length(packet(1, &user), 19)),
        ("bad_length", &vpn, with_length(packet(1, &user), 200)),
        ("too_long", &vpn, with_length(packet(1, &user), 4097)),
        ("unknown_code", &vpn, packet(99, &user)),
        ("unsupported_code", &vpn, packet(4, &user)),
        ("bad_attribute", &vpn, packet(1, &[0, 3, b'x'])),
        ("bad_attribute", &vpn, packet(1, &[1, 0])),
        ("bad_attribute", &vpn, packet(1, &[1, 1])),
        ("bad_attribute", &vpn, packet(1, &[1, 50, b'a'])),
        (
            "bad_message_authenticator_length",
            &vpn,
            packet(1, &[80, 10, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
        // Status-Server without Message-Authenticator, even from a lenient client.
        ("missing_message_authenticator", &old, packet(12, &user)),
        // EAP-Message without Message-Authenticator, even from a lenient client.
        (
            "missing_message_authenticator",
            &old,
            packet(1, &[1, 3, b'a', 79, 3, 1]),
        ),
        // A client that requires it sends none.
        (
            "missing_message_authenticator",
            &vpn,
            signed(b"s3cret-vpn", &[], false),
        ),
        (
            "bad_message_authenticator",
            &vpn,
            signed(b"wrong-secret", &[], true),
        ),
        (
            "proxy_state_without_message_authenticator",
            &old,
            signed(
                b"s3cret-legacy",
                &[RawAttribute {
                    typ: 33,
                    value: b"ps".to_vec(),
                }],
                false,
            ),
        ),
        (
            "undecodable",
            &vpn,
            signed(
                b"s3cret-vpn",
                &[RawAttribute {
                    typ: 1,
                    value: b"bob".to_vec(),
                }],
                true,
            ),
        ),
        (
            "unknown_client",
            &stranger,
            signed(b"s3cret-vpn", &[], true),
        ),
    ];
    let mut expected: std::collections::BTreeMap<&str, u32> = Default::default();
    for (reason, sock, bytes) in &cases {
        sock.send(bytes).unwrap();
        *expected.entry(reason).or_default() += 1;
    }
    // The server is still serving: a Status-Server from the strict client is answered, and
    // since datagrams are handled in order, every drop above is counted by then.
    let client = RawClient::new(addr, "s3cret-vpn");
    client.send(&encode_status_server(9, [9; 16], b"s3cret-vpn"));
    let reply = client
        .recv(Duration::from_secs(5))
        .expect("Status-Server after the malformed packets got no answer");
    assert_eq!(reply[0], code::ACCESS_ACCEPT, "{}", raw::hex(&reply));
    // Nothing malformed was answered.
    for (reason, sock, _) in &cases {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        assert!(sock.recv(&mut buf).is_err(), "{reason}: got an answer");
    }
    let m = s.server.metrics();
    for (reason, n) in expected {
        let series = format!("portcullis_radius_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &series), Some(f64::from(n)), "{series}\n{m}");
    }
    assert_eq!(
        metric(&m, "portcullis_radius_received_total"),
        Some((cases.len() + 1) as f64),
        "{m}"
    );
    assert!(
        m.contains("portcullis_radius_request_duration_seconds_count 1"),
        "{m}"
    );
    assert_eq!(metric(&m, "portcullis_radius_in_flight"), Some(0.0), "{m}");
}

#[test]
fn accounting_request_from_radclient_is_acknowledged_only_with_the_right_secret() {
    peers();
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], HTTP);
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\naccounting_listen = [\"127.0.0.1:0\"]",
    );
    std::fs::write(env.config_path(), text).unwrap();
    let server = env.start_server();
    let acct = server
        .accounting_addr
        .expect("no `radius accounting: listening on` line");
    let attrs = [
        ("User-Name", "alice".to_string()),
        ("Acct-Status-Type", "Start".to_string()),
        ("Acct-Session-Id", "42".to_string()),
    ];
    let r = radclient_command(acct, "acct", "s3cret-vpn", &attrs, false);
    assert_eq!(
        r.code.as_deref(),
        Some("Accounting-Response"),
        "{}",
        r.raw_output
    );
    let wrong = radclient_command(acct, "acct", "not-the-secret", &attrs, false);
    assert!(wrong.is_no_reply(), "{}", wrong.raw_output);
    let m = server.metrics();
    assert_eq!(
        metric(&m, "portcullis_radius_accounting_responses_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"portcullis_radius_dropped_total{reason="bad_message_authenticator"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn auto_mode_challenges_for_the_code_until_push_exists() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::Auto)], "", &[]);
    let first = radclient(
        s.server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".to_string()),
            ("User-Password", "pw".to_string()),
        ],
        true,
    );
    assert!(first.is_challenge(), "{}", first.raw_output);
    let second = radclient(
        s.server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".to_string()),
            ("User-Password", s.code()),
            ("State", first.state_for_radclient()),
        ],
        true,
    );
    assert!(second.is_accept(), "{}", second.raw_output);
}

#[test]
fn otp_only_mode_takes_the_code_alone() {
    peers();
    let s = Setup::new(vec![ClientSpec::new(Mode::OtpOnly)], "", &[]);
    let login = |password: String| {
        radclient(
            s.server.addr,
            "s3cret-vpn",
            &[
                ("User-Name", "alice".to_string()),
                ("User-Password", password),
            ],
            true,
        )
    };
    let wrong = login("pw".to_string());
    assert!(
        wrong.is_reject(),
        "the password is not a code\n{}",
        wrong.raw_output
    );
    let right = login(s.code());
    assert!(right.is_accept(), "{}", right.raw_output);
}
