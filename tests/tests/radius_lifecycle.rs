//! The daemon's life: SIGHUP reloads clients and secrets without dropping logins in progress,
//! an invalid new config is refused, SIGTERM finishes logins in flight and then exits.

use std::time::{Duration, Instant};

use portcullis_server::radius::packet::encode_status_server;
use portcullis_tests::http::{metric, wait_for_metric};
use portcullis_tests::process::Signal;
use portcullis_tests::raw::{code, RawClient};
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    TestEnv,
};

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

/// Whether a Status-Server signed with `secret` is answered.
fn status_answered(addr: std::net::SocketAddr, secret: &str) -> bool {
    let c = RawClient::new(addr, secret);
    c.send(&encode_status_server(1, [3; 16], secret.as_bytes()));
    c.socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 4096];
    // No answer, or ICMP port unreachable once the server is gone.
    c.socket
        .recv(&mut buf)
        .is_ok_and(|n| n >= 20 && buf[0] == code::ACCESS_ACCEPT)
}

fn env_with_alice(extra: &str) -> (TestEnv, String) {
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], extra);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    (env, secret)
}

#[test]
fn sighup_swaps_secrets_keeps_logins_in_progress_and_refuses_an_invalid_config() {
    peers();
    let (env, totp) = env_with_alice(HTTP);
    let server = env.start_server();
    assert!(status_answered(server.addr, "s3cret-vpn"));

    // A login in progress across the reload.
    let first = radclient(
        server.addr,
        "s3cret-vpn",
        &[
            ("User-Name", "alice".into()),
            ("User-Password", "pw".into()),
        ],
        true,
    );
    assert!(first.is_challenge(), "{}", first.raw_output);

    // New secret, plus a second client.
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let new_text = text.replace("s3cret-vpn", "n3w-secret")
        + "\n[[radius.clients]]\nname = \"other\"\naddress = \"127.0.0.9/32\"\nsecret = \"x\"\ntenant = \"acme\"\n";
    std::fs::write(env.config_path(), &new_text).unwrap();
    assert!(server.reload(), "reload refused:\n{}", server.stderr());
    let log = server.stderr();
    assert!(
        log.contains("RADIUS clients (added: other; removed: none; changed: vpn)")
            && !log.contains("n3w-secret"),
        "the log names the clients, never their secrets:\n{log}"
    );
    assert!(
        !status_answered(server.addr, "s3cret-vpn"),
        "old secret still works"
    );
    assert!(
        status_answered(server.addr, "n3w-secret"),
        "new secret refused"
    );

    // The challenge started before the reload is answered with the new secret.
    let second = radclient(
        server.addr,
        "n3w-secret",
        &[
            ("User-Name", "alice".into()),
            ("User-Password", oathtool_totp(&totp, 6, Algorithm::Sha1, 0)),
            ("State", first.state_for_radclient()),
        ],
        true,
    );
    assert!(second.is_accept(), "{}", second.raw_output);

    // An invalid config is refused with a message naming the key; the old one stays.
    std::fs::write(
        env.config_path(),
        new_text.replace("mode = \"challenge\"", "mode = \"sometimes\""),
    )
    .unwrap();
    assert!(!server.reload(), "an invalid config was applied");
    assert!(
        server
            .wait_for_stderr("sometimes", Duration::from_secs(5))
            .contains("sometimes"),
        "the error names the problem:\n{}",
        server.stderr()
    );
    assert!(status_answered(server.addr, "n3w-secret"));
    let m = server.metrics();
    assert_eq!(
        metric(&m, r#"portcullis_config_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"portcullis_config_reloads_total{result="error"}"#),
        Some(1.0)
    );
    // Both reloads are audit records of the operator's (no tenant), by name only.
    std::fs::write(env.config_path(), &new_text).unwrap();
    let records = env.cli_json(&["--json", "audit"]);
    let reloads: Vec<&serde_json::Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mode"] == "config.reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{records}");
    let text = serde_json::to_string(&reloads).unwrap();
    assert!(
        reloads.iter().any(|r| r["result"] == "accept"
            && r["channel"] == "config"
            && r["reason"]
                .as_str()
                .unwrap()
                .contains("added: other; removed: none; changed: vpn")),
        "{text}"
    );
    assert!(
        reloads
            .iter()
            .any(|r| r["result"] == "reject"
                && r["reason"].as_str().unwrap().contains("does not load")),
        "{text}"
    );
    assert!(
        !text.contains("n3w-secret") && !text.contains("sometimes"),
        "{text}"
    );
}

#[test]
fn sighup_refuses_what_only_a_restart_applies_and_applies_nothing_of_it() {
    peers();
    let (env, totp) = env_with_alice(HTTP);
    let server = env.start_server();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let login = |password: String| {
        radclient(
            server.addr,
            &env.client().secret,
            &[("User-Name", "alice".into()), ("User-Password", password)],
            true,
        )
    };
    let refused = |new_text: &str, what: &str| {
        std::fs::write(env.config_path(), new_text).unwrap();
        assert!(!server.reload(), "applied: {what}\n{}", server.stderr());
        let log =
            server.wait_for_stderr("restart portcullis to apply them", Duration::from_secs(5));
        assert!(log.contains(what), "the log names {what}:\n{log}");
    };
    // The client's first factor, and a tenant's rules, live in the Engine: a reload that
    // took the client but not its first_factor would mix old and new.
    refused(
        &text.replace(
            "mode = \"challenge\"",
            "mode = \"challenge\"\nfirst_factor = \"none\"",
        ),
        "first_factor",
    );
    refused(
        &format!("{text}\n[tenants.acme]\n[[tenants.acme.rules]]\nname = \"nobody\"\naction = \"deny\"\n"),
        "[tenants.acme]",
    );
    // Nothing of either was applied: the password is still checked and nobody is denied.
    let code = oathtool_totp(&totp, 6, Algorithm::Sha1, 0);
    assert!(login(code).is_reject(), "a code alone logged in");
    let first = login("pw".into());
    assert!(first.is_challenge(), "{}", first.raw_output);
    let m = server.metrics();
    assert_eq!(
        metric(&m, r#"portcullis_config_reloads_total{result="error"}"#),
        Some(2.0)
    );
    // The running configuration's own text reloads, and so do reply attributes, also in
    // a tenant section that was not there at start.
    std::fs::write(env.config_path(), &text).unwrap();
    assert!(server.reload(), "{}", server.stderr());
    std::fs::write(
        env.config_path(),
        format!("{text}\n[tenants.acme]\nreply = [\"Class=reloaded\"]\n"),
    )
    .unwrap();
    assert!(server.reload(), "{}", server.stderr());
}

/// Alice's password `slowpw` has a costly hash, so that her login can be caught in flight.
fn slow_env(radius_extra: &str) -> TestEnv {
    let (env, _) = env_with_alice(HTTP);
    let slow = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("argon2_memory_kib = 1024", "argon2_memory_kib = 8192")
        .replace("argon2_iterations = 1", "argon2_iterations = 2")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:0\"]\n{radius_extra}"),
        );
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
    env
}

/// Polls /metrics until the in-flight gauge shows `n`.
fn wait_in_flight(http: std::net::SocketAddr, n: f64) {
    wait_for_metric(http, "portcullis_radius_in_flight", n);
}

#[test]
fn past_max_in_flight_requests_are_shed_counted_and_served_on_retransmission() {
    peers();
    let env = slow_env("max_in_flight = 1");
    let server = env.start_server();
    let http = server.http_addr.expect("http listener");
    let a = RawClient::new(server.addr, "s3cret-vpn");
    let first = a.access_request(1, "alice", b"slowpw", None, true);
    a.send(&first.bytes);
    wait_in_flight(http, 1.0);
    // The only slot is taken: a new login and a started one (State) are both shed.
    let b = RawClient::new(server.addr, "s3cret-vpn");
    let second = b.access_request(2, "alice", b"slowpw", None, true);
    b.send(&second.bytes);
    let third = b.access_request(
        3,
        "alice",
        b"123456",
        Some(b"0123456789abcdef0123456789abcdef.0"),
        true,
    );
    b.send(&third.bytes);
    let reply = a
        .recv(Duration::from_secs(15))
        .expect("the admitted login got no answer");
    assert_eq!(a.decode(&first, &reply).code, code::ACCESS_CHALLENGE);
    let m = server.metrics();
    assert_eq!(
        metric(
            &m,
            r#"portcullis_radius_dropped_total{reason="shed_overload"}"#
        ),
        Some(2.0),
        "{m}"
    );
    assert!(
        b.recv(Duration::from_millis(200)).is_none(),
        "a shed request was answered"
    );
    // A shed request never entered the response cache: its retransmission is processed.
    let reply = b
        .exchange(&second, Duration::from_secs(15))
        .expect("the retransmitted shed request got no answer");
    assert_eq!(b.decode(&second, &reply).code, code::ACCESS_CHALLENGE);
}

#[test]
fn sigterm_finishes_the_login_in_flight_then_exits_and_stops_answering() {
    peers();
    let env = slow_env("");
    let mut server = env.start_server();
    let http = server.http_addr.expect("http listener");
    let client = RawClient::new(server.addr, "s3cret-vpn");
    let request = client.access_request(5, "alice", b"slowpw", None, true);
    client.send(&request.bytes);

    // Wait until the login is being processed, then ask the server to stop.
    wait_in_flight(http, 1.0);
    let signalled = Instant::now();
    server.signal(Signal::TERM);

    let reply = client
        .recv(Duration::from_secs(15))
        .expect("the login in flight at SIGTERM got no answer");
    let decoded = client.decode(&request, &reply);
    assert_eq!(decoded.code, code::ACCESS_CHALLENGE, "{decoded:?}");
    eprintln!("reply {:?} after SIGTERM", signalled.elapsed());

    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server did not exit after finishing the login");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.stderr()
    );
    assert!(
        !status_answered(server.addr, "s3cret-vpn"),
        "a stopped server answered"
    );
    let log = server.stderr();
    assert!(
        log.contains("shutting down") && log.contains("the HTTP listener stays up"),
        "{log}"
    );
    assert!(log.contains("drops=none"), "nothing was dropped:\n{log}");
}

/// Writes `text` to the FIFO `path` once a reader opens it (in a thread: opening a FIFO
/// for writing waits for the reader); joined within `within`, else the test fails.
fn feed_fifo(path: &std::path::Path, text: String, within: Duration) {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        let _ = tx.send(written);
    });
    match rx.recv_timeout(within) {
        Ok(r) => r.unwrap_or_else(|e| panic!("writing the FIFO: {e}")),
        Err(_) => panic!("the daemon did not read its master key within {within:?}"),
    }
}

#[test]
fn sighup_while_the_daemon_starts_does_not_end_it_and_reloads_once_it_serves() {
    // `systemctl restart; systemctl reload` sends SIGHUP while the daemon opens its store
    // (a PostgreSQL connect, say). Its master key is a FIFO here, so the daemon is held
    // where it reads the key, for as long as the test wants.
    peers();
    let (env, _totp) = env_with_alice(HTTP);
    let key = env.dir().join("master.key");
    let key_text = std::fs::read_to_string(&key).expect("the test env's master key");
    std::fs::remove_file(&key).unwrap();
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&key)
        .status()
        .expect("run mkfifo (coreutils)");
    assert!(made.success(), "mkfifo {}", key.display());
    let mut child = env
        .command()
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start portcullis serve");
    let pid = child.id();
    // Let it get past its first steps to the key (it waits there), then signal: its async
    // runtime's threads exist once it is past them (a fixed sleep alone could be too short
    // on a busy machine); without them after 10 s, signal anyway.
    let threads = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        portcullis_tests::process::send_signal(pid, Signal::HUP).expect("send SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = child.try_wait().unwrap() {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        panic!("a SIGHUP while starting ended the daemon: {status:?}\n{err}");
    }
    feed_fifo(&key, key_text, Duration::from_secs(20));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("radius: listening on ") {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr: std::net::SocketAddr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon did not listen after its key was given")
        .parse()
        .unwrap();
    assert!(status_answered(addr, "s3cret-vpn"), "no answer after start");
    // The SIGHUPs it caught while starting are one reload once it serves.
    std::thread::sleep(Duration::from_millis(500));
    portcullis_tests::process::send_signal(pid, Signal::TERM).expect("send SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
    assert!(status.success(), "{status:?}\n{err}");
    assert!(
        err.matches("configuration reloaded").count() == 1,
        "one reload for the signals caught while starting:\n{err}"
    );
}

/// Whether a TLS handshake with `addr` succeeds for a client that trusts only the CA in
/// `ca_file` (and checks the name 127.0.0.1).
fn handshake_trusting(addr: std::net::SocketAddr, ca_file: &std::path::Path) -> bool {
    tls_trusting(addr, ca_file).is_some()
}

/// `GET /metrics` over TLS, trusting `ca_file`.
fn metrics_trusting(addr: std::net::SocketAddr, ca_file: &std::path::Path) -> String {
    use std::io::{Read, Write};
    let (mut conn, mut sock) = tls_trusting(addr, ca_file).expect("TLS handshake");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    // The daemon closes without close_notify at times: what was read is the reply.
    let _ = tls.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
}

/// A TLS connection to `addr` (as 127.0.0.1) trusting only `ca_file`, once handshaken.
fn tls_trusting(
    addr: std::net::SocketAddr,
    ca_file: &std::path::Path,
) -> Option<(rustls::ClientConnection, std::net::TcpStream)> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut sock).is_err() {
            return None;
        }
    }
    Some((conn, sock))
}

#[test]
fn sighup_serves_a_renewed_https_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    use portcullis_tests::fakes::tls::TestTls;
    use std::os::unix::fs::PermissionsExt;
    peers();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    let (a, b) = (TestTls::new(&a_dir), TestTls::new(&b_dir));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |tls: &TestTls| {
        std::fs::write(&cert, &tls.cert_pem).unwrap();
        std::fs::write(&key, &tls.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    install(&a);
    let (env, _totp) = env_with_alice(&format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let server = env.start_server();
    let https = server.http_addr.expect("the HTTPS listener");
    assert!(
        handshake_trusting(https, &a.ca_file),
        "the first certificate"
    );
    assert!(!handshake_trusting(https, &b.ca_file));

    // Renewed (certbot's deploy hook writes both files, then reloads).
    install(&b);
    assert!(server.reload(), "{}", server.stderr());
    assert!(
        handshake_trusting(https, &b.ca_file),
        "the renewed certificate is not served after SIGHUP:\n{}",
        server.stderr()
    );
    assert!(
        !handshake_trusting(https, &a.ca_file),
        "the old one is still served"
    );

    // A key that does not fit the certificate: refused, the renewed pair stays.
    std::fs::write(&key, &a.key_pem).unwrap();
    server.reload();
    let log = server.wait_for_stderr("HTTPS certificate reload failed", Duration::from_secs(5));
    assert!(log.contains("does not fit"), "{log}");
    assert!(
        handshake_trusting(https, &b.ca_file),
        "the pair in use was dropped"
    );
    assert!(status_answered(server.addr, "s3cret-vpn"));
    // One SIGHUP, one count: the second had a part that was not applied (the file was).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut m = metrics_trusting(https, &b.ca_file);
    while metric(&m, r#"portcullis_config_reloads_total{result="error"}"#) != Some(1.0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        m = metrics_trusting(https, &b.ca_file);
    }
    assert_eq!(
        (
            metric(&m, r#"portcullis_config_reloads_total{result="ok"}"#),
            metric(&m, r#"portcullis_config_reloads_total{result="error"}"#),
        ),
        (Some(1.0), Some(1.0)),
        "{m}"
    );
}

#[test]
fn systemd_hears_when_the_daemon_serves_reloads_and_stops() {
    // Type=notify: the manager's socket ($NOTIFY_SOCKET) gets READY=1 once every listener
    // is bound, RELOADING=1 then READY=1 around a reload, STOPPING=1 at SIGTERM.
    peers();
    let (env, _totp) = env_with_alice(HTTP);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut cmd = env.command();
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = portcullis_tests::Server::start(cmd);
    let ready = next();
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(status_answered(server.addr, "s3cret-vpn"));
    assert!(server.reload(), "{}", server.stderr());
    // With the reload's time on CLOCK_MONOTONIC (systemd's Type=notify-reload needs it).
    let reloading = next();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .unwrap();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    assert!(
        usec <= now && now - usec < 30_000_000,
        "MONOTONIC_USEC={usec}, now {now}"
    );
    assert_eq!(next(), "READY=1\nSTATUS=serving");
    // A reload that is refused says so in the status.
    std::fs::write(env.config_path(), "not toml [").unwrap();
    assert!(!server.reload());
    assert!(next().starts_with("RELOADING=1\n"));
    let status = next();
    assert!(
        status.starts_with("READY=1\nSTATUS=serving; the last reload was not applied"),
        "{status}"
    );
    server.signal(Signal::TERM);
    assert!(next().starts_with("STOPPING=1"));
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{}", server.stderr());
}

/// Started with a low soft limit on open descriptors (a shell's `ulimit -S -n`), the
/// daemon raises it towards the hard one: running out stops the PAM socket's accepts.
#[test]
fn the_open_files_limit_is_raised_at_start() {
    peers();
    let (env, _totp) = env_with_alice("");
    let inner = env.command();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -S -n 256 && exec \"$0\" \"$@\""]);
    let mut server =
        portcullis_tests::Server::start(portcullis_tests::process::run_through(cmd, &inner));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    let soft: u64 = soft.parse().unwrap();
    let wanted = match hard.parse::<u64>() {
        Ok(hard) => hard.min(65_536),
        Err(_) => 65_536,
    };
    assert_eq!(soft, wanted, "{line}");
    assert!(status_answered(server.addr, "s3cret-vpn"));
    server.stop();
}
