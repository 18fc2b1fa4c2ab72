//! Limits of the HTTP listener for slow and greedy clients, against the real `portcullis
//! serve`. A client that never finishes its request, or trickles its body, must
//! not hold a connection (and a file descriptor) for ever; one address must not be able to
//! take every connection the daemon can hold.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use portcullis_tests::http::request_full;
use portcullis_tests::web::free_port;
use portcullis_tests::{ClientSpec, Mode, Server, TestEnv};

fn server() -> (Server, TestEnv, SocketAddr) {
    let port = free_port();
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    env.add_tenant("acme");
    let server = env.start_server();
    let addr = server.http_addr.expect("http listener");
    (server, env, addr)
}

/// Waits up to `limit` for the server to end the connection (EOF or reset); returns how
/// long that took, or None if the connection was still open at `limit`. Bytes the server
/// sends first (an error answer) are read and ignored.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Reset, aborted: closed by the server.
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[test]
fn a_request_head_that_never_ends_does_not_hold_the_connection() {
    let (_server, _env, addr) = server();
    let mut s = TcpStream::connect(addr).unwrap();
    // Slowloris: the head starts, and never ends.
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(45));
    assert!(
        took.is_some(),
        "the server still holds a connection whose request head never ended"
    );
    // An idle connection (nothing sent at all) is ended too.
    let mut idle = TcpStream::connect(addr).unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(45)).is_some());
}

#[test]
fn a_body_that_trickles_does_not_hold_the_connection() {
    let (_server, _env, addr) = server();
    let paths = [
        "/my/login",
        "/v1/tenants",
        "/v1/pam/step",
        "/v1/push/x/approve",
    ];
    let mut conns: Vec<TcpStream> = paths
        .iter()
        .map(|path| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Authorization: Bearer pca_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 1000\r\n\r\nab"
                )
                .as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    for (path, s) in paths.iter().zip(&mut conns) {
        let left = Duration::from_secs(45).saturating_sub(start.elapsed());
        assert!(
            closed_within(s, left).is_some(),
            "{path}: the server still waits for a body that trickles"
        );
    }
}

#[test]
fn one_address_cannot_take_every_connection() {
    let (_server, _env, addr) = server();
    // Far more idle connections from one address than any browser or proxy needs.
    let mut conns: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut closed = 0;
    for c in &mut conns {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            _ => closed += 1,
        }
    }
    assert!(
        closed >= 200,
        "only {closed} of 400 idle connections from one address were refused"
    );
    drop(conns);
    // Once they are gone, the address is served again.
    std::thread::sleep(Duration::from_millis(500));
    let r = request_full(addr, "GET", "/metrics", &[], None, Duration::from_secs(10));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn ordinary_requests_and_keep_alive_still_work() {
    let (_server, _env, addr) = server();
    // Two requests on one connection, the second after a pause shorter than the limit.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_reply = |s: &mut TcpStream| {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return head.to_string();
                }
            }
        }
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_reply(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(3));
    let body = br#"{"name": "beta"}"#;
    s.write_all(
        format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(body).unwrap();
    assert!(read_reply(&mut s).starts_with("HTTP/1.1 401"));
    // A body over the admin API's limit still gets its JSON 413.
    let big = vec![b'a'; 70 * 1024];
    let r = request_full(
        addr,
        "POST",
        "/v1/tenants",
        &[
            (
                "Authorization",
                "Bearer pca_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            ("Content-Type", "application/json"),
        ],
        Some(&big),
        Duration::from_secs(10),
    );
    // The token is checked first: unknown.
    assert_eq!(r.status, 401, "{}", r.body);
    let r = request_full(
        addr,
        "POST",
        "/my/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&big),
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 413, "{}", r.body);
}
