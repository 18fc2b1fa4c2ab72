//! Security review of the HTTPS listener: TLS handshakes in progress are bounded per
//! address (an IPv6 /64), so that a few addresses that open connections and never say
//! a word cannot hold every handshake slot (256 in all, each for up to 10 s) and keep
//! everybody else's handshakes waiting. Against the real `portcullis serve`.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::{ClientSpec, Mode, Server, TestEnv};

/// Handshakes one address may have in progress (radius-server/src/http/limits.rs).
const PER_ADDRESS: usize = 16;

/// A server whose HTTPS listener is on `[::]` (IPv4 and IPv6), so that 127.0.0.1 and ::1
/// are two addresses of this machine.
fn tls_server(dir: &std::path::Path) -> (Server, TestEnv, u16) {
    let port = TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tls = TestTls::new(dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &tls.cert_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &format!(
            "\n[http]\nlisten = \"[::]:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let server = env.start_server();
    (server, env, port)
}

/// Whether the server ends the connection within `limit` (EOF or reset).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        let Some(left) = limit.checked_sub(start.elapsed()) else {
            return false;
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Connections that never send a ClientHello: each holds a handshake until its 10 s are
/// up. Past 16 from one address, the next is closed at once; another address, and the same
/// one once its handshakes are over, are served as before.
#[test]
fn one_address_cannot_hold_the_tls_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _env, port) = tls_server(dir.path());
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();

    let mut silent: Vec<TcpStream> = (0..PER_ADDRESS)
        .map(|_| TcpStream::connect(v4).unwrap())
        .collect();
    // Let the server take them all in (each accepted, its handshake begun).
    std::thread::sleep(Duration::from_millis(500));
    for (i, s) in silent.iter_mut().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let open = matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
        assert!(open, "silent connection {i} was closed before its time");
        s.set_nonblocking(false).unwrap();
    }

    let mut one_more = TcpStream::connect(v4).unwrap();
    assert!(
        closed_within(&mut one_more, Duration::from_secs(2)),
        "a 17th handshake from one address was not refused at once"
    );

    // Another address still gets its handshake (it is not closed at once).
    let mut other = TcpStream::connect(v6).unwrap();
    assert!(
        !closed_within(&mut other, Duration::from_secs(1)),
        "another address was refused"
    );
    drop(other);

    // Once the silent ones are gone, the address is served again.
    drop(silent);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = TcpStream::connect(v4).unwrap();
    assert!(
        !closed_within(&mut again, Duration::from_secs(1)),
        "the address was still refused after its handshakes ended"
    );
}
