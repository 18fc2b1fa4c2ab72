//! PAM logins of a fleet's remote hosts: `libpam_portcullis.so` with `url=` +
//! `token_file=` (+ `ca_file=`) asks `portcullis serve` over HTTPS (`POST /v1/pam/step`,
//! TLS on the HTTP listener), driven by `pamtester` under `pam_wrapper` with codes from
//! `oathtool`. The host is registered with `portcullis host add`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::{describe, pam_module_path, require_root, PamFixture};
use rustls::pki_types::{CertificateDer, ServerName};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A PAM fixture (tenant `acme`, user `alice` with password and TOTP) whose server also
/// listens for HTTPS with a certificate of a throwaway CA.
struct Fleet {
    // Declared first: the server stops before the directories go.
    f: PamFixture,
    tls: TestTls,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        require_root("the token file must be owned by root");
        let dir = tempfile::Builder::new()
            .prefix("pam-https-")
            .tempdir()
            .expect("temp dir");
        let tls = TestTls::new(dir.path());
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &tls.cert_pem).unwrap();
        std::fs::write(&key, &tls.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = PamFixture::with_config(
            &format!(
                "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            true,
        );
        let http = f
            .server
            .as_ref()
            .and_then(|s| s.http_addr)
            .expect("the server printed `http: listening on ADDR`");
        Fleet { f, tls, http, dir }
    }

    /// `portcullis host add --tenant TENANT NAME --json`: the printed token.
    fn add_host(&self, tenant: &str, name: &str) -> String {
        let v = self
            .f
            .env
            .cli_json(&["host", "add", "--tenant", tenant, name, "--json"]);
        assert_eq!(v["name"], name, "{v}");
        assert_eq!(v["tenant"], tenant, "{v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// Writes `token` to a file with `mode`, owned by root (the tests run as root).
    fn token_file(&self, name: &str, token: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Service `name` with the module asking over HTTPS.
    /// With failmode=safe the host has the daemon's grant (the tenant allows failing
    /// open), so that only the module's own rules can refuse.
    fn https_service(&self, name: &str, token_file: &Path, args: &str) {
        if args.contains("failmode=safe") {
            self.f.grant_fail_open();
        }
        self.f.service(
            name,
            &format!(
                "auth required {} url=https://127.0.0.1:{} token_file={} tenant={} fail_delay=0 {}\n",
                pam_module_path().display(),
                self.http.port(),
                token_file.display(),
                self.f.tenant,
                portcullis_tests::pam::with_state_dir(args, self.f.env.dir())
            ),
        );
    }

    fn ca(&self) -> String {
        format!("ca_file={}", self.tls.ca_file.display())
    }

    fn login(&self, service: &str) -> std::process::Output {
        self.f.pamtester_logged(
            service,
            "alice",
            &format!("{}\n{}\n", self.f.password, self.f.code()),
        )
    }
}

#[test]
fn a_registered_host_logs_in_with_password_and_totp_and_is_audited_by_its_name() {
    let fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    assert!(token.starts_with("pch_"), "{token}");
    let file = fleet.token_file("web-a.token", &token, 0o600);
    fleet.https_service(
        "svc",
        &file,
        &format!("first_factor=portcullis {}", fleet.ca()),
    );
    let out = fleet.login("svc");
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("Verification code (app): "), "{err}");
    let rec = fleet.f.last_audit("alice");
    assert_eq!(rec["result"], "accept", "{rec}");
    assert_eq!(rec["channel"], "pam", "{rec}");
    assert_eq!(rec["client"], "svc", "{rec}");
    // The registered name, not the machine's hostname the module sends.
    assert_eq!(rec["host"], "web-a", "{rec}");
    // The host was seen; the token is stored only as a hash.
    let hosts = fleet
        .f
        .env
        .cli_json(&["host", "list", "--tenant", "acme", "--json"]);
    assert_eq!(hosts[0]["name"], "web-a", "{hosts}");
    assert!(hosts[0]["last_seen_at"].is_i64(), "{hosts}");
    assert!(!hosts.to_string().contains(&token[4..]), "{hosts}");
    let db = std::fs::read(fleet.f.env.dir().join("portcullis.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is in the database"
    );

    // A wrong code over HTTPS is refused like over the socket.
    let wrong = fleet.f.wrong_code();
    let out = fleet.f.pamtester(
        "svc",
        "alice",
        &format!("{}\n{wrong}\n{wrong}\n{wrong}\n", fleet.f.password),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Wrong code"), "{}", describe(&out));
}

#[test]
fn a_wrong_or_removed_token_is_refused_even_with_failmode_safe() {
    let fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    // Same shape, another value.
    let mut wrong = token.clone();
    let last = if wrong.ends_with('a') { "b" } else { "a" };
    wrong.replace_range(wrong.len() - 1.., last);
    let file = fleet.token_file("wrong.token", &wrong, 0o600);
    fleet.https_service(
        "wrong",
        &file,
        &format!("first_factor=none failmode=safe {}", fleet.ca()),
    );
    let out = fleet.f.pamtester_logged("wrong", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("token"), "{err}");
    assert!(!err.contains("WITHOUT a second factor"), "{err}");

    // The right token works until the host is removed.
    let good = fleet.token_file("good.token", &token, 0o600);
    fleet.https_service(
        "good",
        &good,
        &format!("first_factor=none failmode=safe {}", fleet.ca()),
    );
    let out = fleet
        .f
        .pamtester_logged("good", "alice", &format!("{}\n", fleet.f.code()));
    assert!(out.status.success(), "{}", describe(&out));
    fleet
        .f
        .env
        .cli_ok(&["host", "remove", "--tenant", "acme", "web-a"]);
    let out = fleet
        .f
        .pamtester_logged("good", "alice", &format!("{}\n", fleet.f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("WITHOUT a second factor"),
        "{}",
        describe(&out)
    );
    let hosts = fleet
        .f
        .env
        .cli_json(&["host", "list", "--tenant", "acme", "--json"]);
    assert_eq!(hosts[0]["revoked"], true, "{hosts}");
}

#[test]
fn a_host_of_tenant_b_cannot_log_in_a_user_of_tenant_a() {
    let fleet = Fleet::new();
    fleet.f.env.add_tenant("beta");
    let token_b = fleet.add_host("beta", "web-b");
    let file = fleet.token_file("web-b.token", &token_b, 0o600);
    // The module claims tenant=acme; the token says beta.
    fleet.https_service(
        "svc",
        &file,
        &format!("first_factor=portcullis {}", fleet.ca()),
    );
    let out = fleet.login("svc");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("Verification code"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("forbidden"), "{}", describe(&out));
    let server = fleet.f.server.as_ref().unwrap();
    let log = server.wait_for_stderr("another tenant than its token's", Duration::from_secs(5));
    assert!(log.contains("another tenant than its token's"), "{log}");
    // No decision was taken for alice: the Engine was never asked (the records are the
    // CLI's changes).
    let audit = fleet
        .f
        .env
        .cli_json(&["audit", "--tenant", "acme", "--json"]);
    let decisions = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] != "cli");
    assert_eq!(decisions.count(), 0, "{audit}");
}

#[test]
fn a_token_file_readable_by_others_refuses_every_login() {
    let fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    for (mode, name) in [(0o640, "group.token"), (0o604, "world.token")] {
        let file = fleet.token_file(name, &token, mode);
        fleet.https_service(
            "svc",
            &file,
            &format!("first_factor=none failmode=safe {}", fleet.ca()),
        );
        let out = fleet
            .f
            .pamtester_logged("svc", "alice", &format!("{}\n", fleet.f.code()));
        assert!(!out.status.success(), "{mode:o}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("refusing every login") && err.contains("chmod 600"),
            "{mode:o}: {err}"
        );
    }
    // The same token in a private file works.
    let file = fleet.token_file("ok.token", &token, 0o600);
    fleet.https_service("svc", &file, &format!("first_factor=none {}", fleet.ca()));
    let out = fleet
        .f
        .pamtester("svc", "alice", &format!("{}\n", fleet.f.code()));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn daemon_down_denies_with_failmode_secure_and_failmode_safe_applies() {
    let mut fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    let file = fleet.token_file("web-a.token", &token, 0o600);
    fleet.https_service(
        "secure",
        &file,
        &format!("first_factor=none timeout=3 {}", fleet.ca()),
    );
    fleet.https_service(
        "safe",
        &file,
        &format!("first_factor=none timeout=3 failmode=safe {}", fleet.ca()),
    );
    let mut server = fleet.f.server.take().expect("server");
    server.stop();
    drop(server);

    let out = fleet.f.pamtester("secure", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("not reachable"), "{}", describe(&out));

    let out = fleet.f.pamtester_logged("safe", "alice", "");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("WITHOUT a second factor"),
        "{}",
        describe(&out)
    );
}

#[test]
fn an_untrusted_certificate_denies_even_with_failmode_safe() {
    let fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    let file = fleet.token_file("web-a.token", &token, 0o600);
    // No ca_file: the system trust store does not know the test CA.
    fleet.https_service("system", &file, "first_factor=none failmode=safe");
    // A ca_file of another CA.
    let other_dir = fleet.dir.path().join("other-ca");
    std::fs::create_dir(&other_dir).unwrap();
    let other = TestTls::new(&other_dir);
    fleet.https_service(
        "other",
        &file,
        &format!(
            "first_factor=none failmode=safe ca_file={}",
            other.ca_file.display()
        ),
    );
    for service in ["system", "other"] {
        let out = fleet.f.pamtester_logged(service, "alice", "");
        assert!(!out.status.success(), "{service}: {}", describe(&out));
        let err = stderr(&out);
        // A machine without a system trust store refuses for that reason instead. The
        // daemon answered nothing: the log must not say it did.
        assert!(
            err.contains("TLS to the daemon failed: handshake with https://")
                || err.contains("no system trust store"),
            "{service}: {err}"
        );
        assert!(!err.contains("the daemon answered"), "{service}: {err}");
        assert!(!err.contains("WITHOUT a second factor"), "{service}: {err}");
    }
    // The daemon never saw a request.
    let hosts = fleet
        .f
        .env
        .cli_json(&["host", "list", "--tenant", "acme", "--json"]);
    assert!(hosts[0]["last_seen_at"].is_null(), "{hosts}");
}

/// A raw HTTPS POST with rustls (trusting the fixture's CA); returns status and body.
fn post(fleet: &Fleet, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&fleet.tls.ca_file).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1".to_string()).unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect_timeout(&fleet.http, Duration::from_secs(10)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/pam/step HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before an oversize body is all sent.
    let _ = s.write_all(body);
    let _ = s.flush();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text}"));
    (status, body.to_string())
}

#[test]
fn bad_requests_get_error_frames_and_the_server_keeps_serving() {
    let fleet = Fleet::new();
    let token = fleet.add_host("acme", "web-a");
    let start = br#"{"v":1,"origin":{"tenant":"acme","user":"alice","service":"svc","host":"liar"},
        "step":{"type":"start","first_factor":"delegated","unenrolled":"deny"}}"#;

    let (status, body) = post(&fleet, None, start);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""type":"error""#), "{body}");
    let (status, body) = post(&fleet, Some("pch_not-a-token"), start);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""type":"error""#), "{body}");

    let (status, body) = post(&fleet, Some(&token), b"{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(r#""code":"malformed""#), "{body}");
    let big = vec![b' '; 70 * 1024];
    let (status, body) = post(&fleet, Some(&token), &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(r#""code":"too_large""#), "{body}");

    // Still serving: a well-formed start gets the code prompt.
    let (status, body) = post(&fleet, Some(&token), start);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""type":"prompt""#), "{body}");
}

#[test]
fn tls_settings_are_checked_at_start_and_shown_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TestTls::new(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &tls.cert_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    let http = |keys: &str| format!("[http]\nlisten = \"127.0.0.1:0\"\n{keys}\n");
    let both = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );

    // Half a pair: the config names the missing key.
    let env = portcullis_tests::TestEnv::with_extra_config(
        vec![],
        &http(&format!("tls_cert = \"{}\"", cert.display())),
    );
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("http.tls_key"), "{}", describe(&out));

    // A private key that others may read: serve refuses to start and says what to do.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = portcullis_tests::TestEnv::with_extra_config(vec![], &http(&both));
    let out = env.cli(&["serve"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("http.tls_key") && err.contains("chmod 600"),
        "{err}"
    );

    // Both, private: config check shows the HTTPS listener.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.cli_ok(&["config", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTPS"), "{text}");
    let v = env.cli_json(&["config", "check", "--json"]);
    assert_eq!(v["http"]["tls"], true, "{v}");
}

#[test]
fn the_module_stays_mapped_after_pam_end() {
    // A name lookup that outlives timeout= finishes on its own thread, which must still
    // find the module's code after the application dlclose()s it: DF_1_NODELETE.
    let readelf = portcullis_tests::require_tool("readelf", "binutils");
    let out = std::process::Command::new(readelf)
        .arg("-d")
        .arg(pam_module_path())
        .output()
        .expect("readelf runs");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(
        dynamic
            .lines()
            .any(|l| l.contains("FLAGS_1") && l.contains("NODELETE")),
        "{dynamic}"
    );
}

/// A TLS server that completes the handshake, reads the request and then sends a whole
/// answer (an Accept) one byte of its TLS record every 300 ms: each byte comes well
/// within a 1 s socket timeout, the whole answer only after about a minute.
fn trickling_daemon(tls: &TestTls) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use rustls::pki_types::PrivateKeyDer;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(tls.cert_der.clone())],
        PrivateKeyDer::try_from(tls.key_der.clone()).unwrap(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                return;
            }
        }
        // Session tickets and the like go out at once; then the request is read.
        let _ = conn.complete_io(&mut tcp);
        let mut request = Vec::new();
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match rustls::Stream::new(&mut conn, &mut tcp).read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let body = br#"{"v":1,"step":{"type":"accept","factors":["delegated","totp"]}}"#;
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        conn.writer().write_all(&answer).unwrap();
        let mut records = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut records).unwrap();
        }
        for byte in records {
            if tcp.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    (addr, server)
}

#[test]
fn a_daemon_that_trickles_its_answer_is_cut_off_at_timeout() {
    require_root("the token file must be owned by root");
    let f = PamFixture::with_config("", false);
    let dir = tempfile::tempdir().unwrap();
    let tls = TestTls::new(dir.path());
    let token = dir.path().join("host.token");
    std::fs::write(&token, "pch_trickle\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (addr, server) = trickling_daemon(&tls);
    f.service(
        "svc",
        &format!(
            "auth required {} url=https://127.0.0.1:{} token_file={} ca_file={} tenant=acme first_factor=none timeout=1 fail_delay=0\n",
            pam_module_path().display(),
            addr.port(),
            token.display(),
            tls.ca_file.display()
        ),
    );
    let started = std::time::Instant::now();
    let out = f.pamtester_logged("svc", "alice", "");
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(3),
        "the login took {took:?} with timeout=1: {}",
        describe(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("not reachable"), "{err}");
    assert!(err.contains("timeout="), "{err}");
    server.join().unwrap();
}
