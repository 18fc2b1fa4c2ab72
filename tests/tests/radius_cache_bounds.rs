//! The response cache is bounded per source address (and in total; that bound is shown by
//! the unit tests of radius-server/src/radius/cache.rs): every request that reached the
//! Engine kept an entry for `response_cache_ttl`, so a sender able to use a client's
//! address could grow the daemon without limit. Here one NAS address answers one request
//! more than the per-source bound (65,536 at the default TTL) holds: the oldest reply is
//! forgotten, counted and warned about, and a retransmission of its request is processed
//! afresh, where the Engine refuses the code as a replay (never a second Accept).

use std::time::Duration;

use portcullis_tests::http::metric;
use portcullis_tests::raw::{code, RawClient};
use portcullis_tests::{
    oathtool_totp, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode, TestEnv,
};

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

/// The per-source bound at the default `response_cache_ttl` (30 s).
const PER_SOURCE: usize = 65_536;

#[test]
fn past_the_per_source_bound_the_oldest_reply_is_forgotten_and_its_retransmission_refused() {
    require_tool("oathtool", "oathtool");
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::OtpOnly)], HTTP);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    let wait = Duration::from_secs(10);
    let evicted = |m: &str| {
        metric(
            m,
            r#"portcullis_radius_dropped_total{reason="cache_evicted_source_limit"}"#,
        )
    };

    // Alice's login: accepted, and a retransmission gets the cached Accept.
    let nas = RawClient::new(server.addr, "s3cret-vpn");
    let code_now = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let login = nas.access_request(0, "alice", code_now.as_bytes(), None, true);
    let reply = nas.exchange(&login, wait).expect("alice's login");
    assert_eq!(nas.decode(&login, &reply).code, code::ACCESS_ACCEPT);
    assert_eq!(nas.exchange(&login, wait).as_deref(), Some(&reply[..]));
    let m = server.metrics();
    assert_eq!(
        metric(&m, "portcullis_radius_cached_replies_total"),
        Some(1.0)
    );
    assert_eq!(evicted(&m), Some(0.0), "{m}");

    // The same address answers PER_SOURCE more requests (256 ports x 256 identifiers), each
    // decided by the Engine (a code for an unknown user): one past the bound.
    let ports: Vec<RawClient> = (0..PER_SOURCE / 256)
        .map(|_| RawClient::new(server.addr, "s3cret-vpn"))
        .collect();
    let mut last = None;
    for id in 0..=255u8 {
        let requests: Vec<_> = ports
            .iter()
            .map(|c| {
                let r = c.access_request(id, "nobody", b"123456", None, true);
                c.send(&r.bytes);
                r
            })
            .collect();
        for (c, r) in ports.iter().zip(&requests) {
            let reply = c.recv(wait).expect("every request is answered");
            assert_eq!(c.decode(r, &reply).code, code::ACCESS_REJECT);
        }
        last = requests.into_iter().last().map(|r| (id, r));
    }
    let m = server.metrics();
    assert_eq!(evicted(&m), Some(1.0), "the oldest reply, alice's:\n{m}");
    assert_eq!(
        metric(
            &m,
            r#"portcullis_radius_dropped_total{reason="cache_evicted_cache_limit"}"#
        ),
        Some(0.0),
        "{m}"
    );
    let log = server.wait_for_stderr("answered requests from this address", wait);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("answered requests from this address"))
        .collect();
    assert_eq!(lines.len(), 1, "one warning:\n{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("client 'vpn'"),
        "{}",
        lines[0]
    );

    // A recent reply is still cached.
    let (_, newest) = last.expect("requests were sent");
    let port = ports.last().expect("ports");
    let again = port.exchange(&newest, wait).expect("the newest reply");
    assert_eq!(port.decode(&newest, &again).code, code::ACCESS_REJECT);
    assert_eq!(
        metric(&server.metrics(), "portcullis_radius_cached_replies_total"),
        Some(2.0)
    );

    // Alice's retransmission is processed afresh: the code is used up, so it is refused.
    let reply = nas.exchange(&login, wait).expect("alice's retransmission");
    assert_eq!(
        nas.decode(&login, &reply).code,
        code::ACCESS_REJECT,
        "a forgotten login must not be accepted twice"
    );
    let m = server.metrics();
    assert_eq!(
        metric(&m, "portcullis_radius_cached_replies_total"),
        Some(2.0),
        "{m}"
    );
}
