//! The PAM step protocol as a misbehaving or foreign client sees it: malformed, oversize
//! and foreign-version frames get an error frame and the daemon keeps serving; a peer
//! whose uid is not allowed is refused.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_tests::pam::{run_under_pam_wrapper, under_pam_wrapper};
use portcullis_tests::tools::{require_tool, run_with_timeout};
use portcullis_tests::{describe, require_root, PamFixture};
use serde_json::Value;

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn send_raw(s: &mut UnixStream, body: &[u8]) {
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
}

fn read_reply(s: &mut UnixStream) -> Value {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("reply header");
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).expect("reply body");
    serde_json::from_slice(&body).expect("reply is JSON")
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["v"], 1, "{reply}");
    assert_eq!(reply["step"]["type"], "error", "{reply}");
    reply["step"]["code"].as_str().unwrap_or("")
}

/// A well-formed start request (delegated first factor) for `user`.
fn start(user: &str) -> String {
    format!(
        r#"{{"v":1,"origin":{{"tenant":"acme","user":"{user}","service":"proto","host":"test"}},"step":{{"type":"start","first_factor":"delegated","unenrolled":"deny"}}}}"#
    )
}

/// The daemon still answers a good request on a fresh connection.
fn still_serving(f: &PamFixture) {
    let mut s = connect(&f.socket);
    send_raw(&mut s, start("alice").as_bytes());
    let reply = read_reply(&mut s);
    assert_eq!(reply["step"]["type"], "prompt", "{reply}");
    assert_eq!(reply["step"]["expects"], "code", "{reply}");
}

#[test]
fn a_good_request_gets_a_code_prompt_and_an_unknown_user_a_reject() {
    let f = PamFixture::new();
    still_serving(&f);
    let mut s = connect(&f.socket);
    send_raw(&mut s, start("nobody").as_bytes());
    let reply = read_reply(&mut s);
    assert_eq!(reply["step"]["type"], "reject", "{reply}");
}

#[test]
fn malformed_frames_get_an_error_frame_and_the_connection_goes_on() {
    let f = PamFixture::new();
    let mut s = connect(&f.socket);
    for body in [
        &b"\xff\xfe not json at all"[..],
        br#"{"v":1}"#,
        br#"{"v":1,"origin":{"tenant":"acme"},"step":{"type":"start"}}"#,
        br#"{"v":1,"origin":{"tenant":"a","user":"u","service":"s","host":"h"},"step":{"type":"launch"}}"#,
        br#"[1,2,3]"#,
    ] {
        send_raw(&mut s, body);
        let reply = read_reply(&mut s);
        assert_eq!(error_code(&reply), "malformed", "{reply}");
    }
    // An empty frame is malformed too, and the framing stays in step.
    s.write_all(&[0, 0, 0, 0]).unwrap();
    assert_eq!(error_code(&read_reply(&mut s)), "malformed");
    // Same connection, good request.
    send_raw(&mut s, start("alice").as_bytes());
    assert_eq!(read_reply(&mut s)["step"]["type"], "prompt");
    still_serving(&f);
}

#[test]
fn an_oversize_frame_gets_too_large_and_the_daemon_keeps_serving() {
    let f = PamFixture::new();
    let mut s = connect(&f.socket);
    // Announce 1 MiB; the daemon must answer without reading it.
    s.write_all(&(1024u32 * 1024).to_be_bytes()).unwrap();
    let reply = read_reply(&mut s);
    assert_eq!(error_code(&reply), "too_large", "{reply}");
    // It hangs up: the rest of the stream cannot be trusted.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    still_serving(&f);
}

#[test]
fn an_unknown_version_gets_unsupported_version() {
    let f = PamFixture::new();
    let mut s = connect(&f.socket);
    send_raw(
        &mut s,
        start("alice").replace(r#""v":1"#, r#""v":7"#).as_bytes(),
    );
    let reply = read_reply(&mut s);
    assert_eq!(error_code(&reply), "unsupported_version", "{reply}");
    assert!(
        reply["step"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("version 7"),
        "{reply}"
    );
    still_serving(&f);
}

#[test]
fn a_peer_that_is_not_root_is_refused() {
    require_root("the non-root peer test");
    let setpriv = require_tool("setpriv", "util-linux");
    // The socket is world-connectable here so that the uid check (SO_PEERCRED), not the
    // file mode, is what refuses the peer.
    let f = PamFixture::with_pam_section("socket_mode = \"0666\"\n", "", true);
    std::fs::set_permissions(f.env.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    // A copy of the helper that uid 65534 can execute wherever the target dir is.
    let helper = f.env.dir().join("pam-frame");
    std::fs::copy(env!("CARGO_BIN_EXE_pam-frame"), &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = Command::new(&setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&helper)
        .arg(&f.socket);
    let out = run_with_timeout(
        cmd,
        Some(start("alice").into_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("reply is JSON");
    assert_eq!(error_code(&reply), "forbidden", "{reply}");
    assert!(
        reply["step"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("65534"),
        "{reply}"
    );

    // Root, through the same helper, is served.
    let cmd = {
        let mut c = Command::new(&helper);
        c.arg(&f.socket);
        c
    };
    let out = run_with_timeout(
        cmd,
        Some(start("alice").into_bytes()),
        Duration::from_secs(30),
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("reply is JSON");
    assert_eq!(reply["step"]["type"], "prompt", "{reply}");
    let log = f.server.as_ref().map(|s| s.stderr()).unwrap_or_default();
    assert!(log.contains("uid=65534"), "{log}");
}

#[test]
fn pam_logins_of_a_uid_not_allowed_are_refused_as_forbidden_every_time_even_with_failmode_safe() {
    // The daemon used to write `forbidden` and close before the module had sent its
    // request: the module's send failed (EPIPE), it took that for an outage, and
    // failmode=safe let the user in without a second factor (2 runs of 3). Many logins
    // here, so that the race would show.
    require_root("the non-root PAM login test");
    let setpriv = require_tool("setpriv", "util-linux");
    let pamtester = require_tool("pamtester", "pamtester");
    let f = PamFixture::with_pam_section("socket_mode = \"0666\"\nallowed_uids = [0]\n", "", true);
    // uid 65534 may reach the socket (and read the service files); only the uid check
    // (SO_PEERCRED) stops it.
    std::fs::set_permissions(f.env.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    f.module_service("safe", "first_factor=stack failmode=safe");
    // The host has the grant (made by root: uid 65534 may not create the state_dir).
    f.grant_fail_open();
    for i in 0..20 {
        let mut cmd = Command::new(&setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&pamtester)
            .args(["-v", "safe", "alice", "authenticate"]);
        under_pam_wrapper(&mut cmd, &f.service_dir);
        // pam_wrapper prints what the module logs through pam_syslog on stderr.
        cmd.env("PAM_WRAPPER_DEBUGLEVEL", "3");
        let out = run_under_pam_wrapper(cmd, Some(Vec::new()), Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "login {i}: {}", describe(&out));
        assert!(
            !err.contains("WITHOUT a second factor") && !err.contains("unreachable"),
            "login {i}: {err}"
        );
        assert!(
            err.contains("the daemon answered forbidden: uid 65534 may not use this socket"),
            "login {i}: {err}"
        );
    }
    let log = f.server.as_ref().map(|s| s.stderr()).unwrap_or_default();
    assert!(log.contains("uid=65534"), "{log}");
}

#[test]
fn the_socket_is_root_only_by_default() {
    let f = PamFixture::new();
    let mode = std::fs::metadata(&f.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_stale_socket_file_is_replaced_and_removed_at_shutdown() {
    let f = PamFixture::with_config("", false);
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&f.socket).unwrap());
    assert!(f.socket.exists());
    let mut server = f.env.start_server();
    assert_eq!(server.wait_for_pam(), f.socket);
    still_serving(&f);
    server.stop();
    assert!(!f.socket.exists(), "the socket file outlived the daemon");
}

#[test]
fn past_max_connections_a_peer_gets_busy_and_later_ones_are_served() {
    let f = PamFixture::with_pam_section("max_connections = 1\n", "", true);
    // The first connection is served and stays open: it holds the only slot.
    let mut first = connect(&f.socket);
    send_raw(&mut first, start("alice").as_bytes());
    assert_eq!(read_reply(&mut first)["step"]["type"], "prompt");
    let mut second = connect(&f.socket);
    assert_eq!(error_code(&read_reply(&mut second)), "busy");
    drop(first);
    // The slot comes back once the first connection is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(&f.socket);
        // A busy daemon may have hung up before the request is written: not an error.
        let body = start("alice");
        let _ = s
            .write_all(&(body.len() as u32).to_be_bytes())
            .and_then(|()| s.write_all(body.as_bytes()));
        let reply = read_reply(&mut s);
        if reply["step"]["type"] == "prompt" {
            break;
        }
        assert_eq!(error_code(&reply), "busy");
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
