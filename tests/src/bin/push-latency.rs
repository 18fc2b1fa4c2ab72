//! Benchmark: how fast a push approval reaches the RADIUS request that waits for it.
//!
//! Starts `portcullis serve` (the binary next to this one; build both with
//! `cargo build --release -p portcullis-server -p portcullis-tests`) with a client in `auto`
//! mode and a strict fake ntfy server, then for N logins: sends the Access-Request (raw UDP,
//! Message-Authenticator), waits for the notification, approves it on the daemon's HTTP
//! listener as the phone's Approve button would, and measures from the moment the phone's
//! request was sent to the moment the Access-Accept arrived (the approval's own HTTP round
//! trip and store write included). Prints p50/p99/max.
//!
//! Usage: push-latency [N]   (default 50; loopback only, bounded in count and time)

use std::time::{Duration, Instant};

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::http::post;
use portcullis_tests::raw::code;
use portcullis_tests::{ClientSpec, Mode, RawClient, TestEnv};

const PUBLIC: &str = "https://mfa.example.test";

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let ca = tempfile::tempdir().expect("temp dir");
    let ntfy = FakeNtfy::start(ca.path());
    let mut client = ClientSpec::new(Mode::Auto);
    client.extra = "max_wait = \"10s\"\n".into();
    // A window large enough for the run (the anti-fatigue cap stays on).
    let push = format!("max_pushes = {}\n", 2 * n + 10);
    let extra = format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\"\n{}",
        ntfy.config("acme", &push)
    );
    let env = TestEnv::with_extra_config(vec![client], &extra);
    env.add_tenant("acme");
    env.add_user("acme", "pat", "pw");
    env.enroll_push_confirmed("acme", "pat", &ntfy);
    let server = env.start_server();
    let http = server.http_addr.expect("http listener");
    let raw = RawClient::new(server.addr, &env.client().secret);

    let mut same_node = Vec::with_capacity(n);
    for i in 0..n {
        let req = raw.access_request((i % 256) as u8, "pat", b"pw", None, true);
        raw.send(&req.bytes);
        let msgs = ntfy.wait_for(i + 2, Duration::from_secs(10));
        let msg = msgs.get(i + 1).expect("a push for every login");
        let click = msg["click"].as_str().expect("click URL");
        let rest = click
            .strip_prefix(&format!("{PUBLIC}/v1/push/"))
            .expect("approval link");
        let (push_id, token) = rest.split_once("?t=").expect("token");
        let bearer = format!("Bearer {token}");
        let asked = Instant::now();
        let (status, _) = post(
            http,
            &format!("/v1/push/{push_id}/approve"),
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(status, 200, "approval refused");
        let reply = raw.recv(Duration::from_secs(10)).expect("a reply");
        let took = asked.elapsed();
        assert_eq!(raw.decode(&req, &reply).code, code::ACCESS_ACCEPT);
        same_node.push(took);
    }
    report("phone's approval sent -> Access-Accept", &mut same_node);
    println!(
        "(an approval received by another node is seen by the store poll: at most 500 ms, 250 ms on average)"
    );
}

fn report(what: &str, v: &mut [Duration]) {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}
