//! `failmode=safe` lets a login in without a second factor only on evidence that no daemon
//! is there: the connect itself failed (no socket file, nobody listening on it; over
//! `url=` connection refused). Once a connection was made, whatever happens next is a
//! refusal, never an outage:
//!
//! - a user who stops their own sudo/su (Ctrl-Z, SIGSTOP) for longer than `timeout=` while
//!   the daemon answers must not turn the daemon's Reject into "no answer in time" and so
//!   into a login: the module reads what is queued even after its deadline passed;
//! - a peer that accepts the TCP connection and closes or resets it during the TLS
//!   handshake (a daemon past its connection limits, an on-path attacker) is no outage.
//!
//! The daemons here are stand-ins written in the test (threads on a Unix or TCP listener),
//! driving the real module under `pamtester` and `pam_wrapper`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portcullis_core::protocol::{self, Response, ResponseStep};
use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::pam::{spawn_under_pam_wrapper, under_pam_wrapper, with_state_dir};
use portcullis_tests::process::{send_signal, Signal};
use portcullis_tests::{describe, pam_module_path, require_root, require_tool, PamFixture};

/// How long the stand-in keeps the PAM application stopped: well past `timeout=1`.
const STOPPED_FOR: Duration = Duration::from_millis(2500);

/// The Reject of the stand-in daemon, as the user sees it.
const DENIED: &str = "Denied by the stand-in daemon.";

/// What pamtester printed on stderr (prompts, messages and, under pam_wrapper with
/// `PAM_WRAPPER_DEBUGLEVEL=3`, what the module logged through pam_syslog).
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The module's line: only the module, the first factor checked by the stack, no delay.
/// With failmode=safe the host has the daemon's grant (the tenant allows failing open), so
/// that only the module's own rules can refuse.
fn line(f: &PamFixture, args: &str) -> String {
    if args.contains("failmode=safe") {
        f.grant_fail_open();
    }
    format!(
        "auth required {} tenant={} first_factor=stack fail_delay=0 {}\n",
        pam_module_path().display(),
        f.tenant,
        with_state_dir(args, f.env.dir())
    )
}

/// A login the module let in without a second factor, and said so at LOG_ALERT.
fn assert_let_in(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", describe(out));
    let err = stderr(out);
    assert!(
        err.lines()
            .any(|l| l.contains("SYSLOG(1)") && l.contains("WITHOUT a second factor")),
        "{what}: {err}"
    );
}

/// A login refused, and not let in through failmode=safe.
fn assert_refused(what: &str, out: &Output) {
    assert!(!out.status.success(), "{what}: {}", describe(out));
    let err = stderr(out);
    assert!(!err.contains("WITHOUT a second factor"), "{what}: {err}");
    assert!(!err.contains("successfully authenticated"), "{what}: {err}");
}

// ---------------------------------------------------------------------------------------
// (a) The PAM application stopped while the daemon answers.

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// Waits until `pid` is stopped (SIGSTOP is delivered asynchronously).
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_stopped(pid) {
        assert!(Instant::now() < deadline, "pid {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When the stand-in daemon answers, relative to the stop of the PAM application.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// It reads the request, stops the application, writes a Reject into the connection
    /// (where it waits in the application's receive queue), and resumes it after
    /// [`STOPPED_FOR`].
    AnswerQueuedWhileStopped,
    /// It stops the application as soon as it has accepted the connection, resumes it
    /// after [`STOPPED_FOR`], and only then reads the request and answers Reject.
    AnswerAfterResume,
}

/// A stand-in for `portcullis serve` on `socket` that stops the PAM application (its pid
/// comes on `pid`: pamtester runs the module in its own process) as `how` says.
fn stopping_daemon(socket: &Path, pid: mpsc::Receiver<u32>, how: Stop) -> JoinHandle<()> {
    let listener = UnixListener::bind(socket).expect("bind the stand-in's socket");
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("the module connects");
        let pid = pid.recv().expect("pamtester's pid");
        let reject = Response::new(ResponseStep::Reject {
            message: DENIED.into(),
        });
        match how {
            Stop::AnswerQueuedWhileStopped => {
                protocol::read_frame(&mut conn).expect("the module's request");
                send_signal(pid, Signal::STOP).expect("SIGSTOP pamtester");
                wait_until_stopped(pid);
                protocol::write_frame(&mut conn, &reject).expect("queue the Reject");
                conn.flush().expect("flush");
                std::thread::sleep(STOPPED_FOR);
                send_signal(pid, Signal::CONT).expect("SIGCONT pamtester");
            }
            Stop::AnswerAfterResume => {
                send_signal(pid, Signal::STOP).expect("SIGSTOP pamtester");
                wait_until_stopped(pid);
                std::thread::sleep(STOPPED_FOR);
                send_signal(pid, Signal::CONT).expect("SIGCONT pamtester");
                // The module may give up before the request is read: not an error here.
                if protocol::read_frame(&mut conn).is_ok() {
                    let _ = protocol::write_frame(&mut conn, &reject);
                }
            }
        }
        // Hold the connection until the module closes it.
        let _ = conn.read(&mut [0u8; 1]);
    })
}

/// `pamtester -v SERVICE alice authenticate` under pam_wrapper (syslog on stderr), its pid
/// sent on `pid` as soon as it runs; killed (after a SIGCONT) if it takes over a minute.
fn pamtester_reporting_pid(f: &PamFixture, service: &str, pid: mpsc::Sender<u32>) -> Output {
    let mut cmd = Command::new(require_tool("pamtester", "pamtester"));
    cmd.args(["-v", service, "alice", "authenticate"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    under_pam_wrapper(&mut cmd, &f.service_dir);
    cmd.env("PAM_WRAPPER_DEBUGLEVEL", "3");
    let child = spawn_under_pam_wrapper(&mut cmd).expect("start pamtester");
    let id = child.id();
    pid.send(id).expect("the stand-in waits for the pid");
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = send_signal(id, Signal::CONT);
            let _ = send_signal(id, Signal::KILL);
        }
    });
    let out = child.wait_with_output().expect("wait for pamtester");
    let _ = done.send(());
    let _ = watchdog.join();
    out
}

fn stopped_while_the_daemon_answers(how: Stop, failmode: &str) -> Output {
    let f = PamFixture::with_config("", false);
    f.service(
        "svc",
        &line(
            &f,
            &format!("socket={} timeout=1 {failmode}", f.socket.display()),
        ),
    );
    let (tx, rx) = mpsc::channel();
    let daemon = stopping_daemon(&f.socket, rx, how);
    let started = Instant::now();
    let out = pamtester_reporting_pid(&f, "svc", tx);
    assert!(
        started.elapsed() >= STOPPED_FOR,
        "{how:?}: pamtester ended before it was resumed: {}",
        describe(&out)
    );
    daemon.join().expect("the stand-in daemon");
    out
}

#[test]
fn a_reject_queued_while_the_application_was_stopped_past_timeout_is_read_not_an_outage() {
    let out = stopped_while_the_daemon_answers(Stop::AnswerQueuedWhileStopped, "failmode=safe");
    assert_refused("stopped, Reject queued", &out);
    // The daemon's answer was read after the deadline, not skipped: the user sees it.
    let err = stderr(&out);
    assert!(err.contains(DENIED), "{err}");
    assert!(
        err.contains("(the daemon's audit log says why)"),
        "the module logs the daemon's refusal: {err}"
    );
    // With failmode=secure, as before.
    let out = stopped_while_the_daemon_answers(Stop::AnswerQueuedWhileStopped, "failmode=secure");
    assert_refused("stopped, Reject queued, failmode=secure", &out);
    assert!(stderr(&out).contains(DENIED), "{}", describe(&out));
}

#[test]
fn an_application_stopped_past_timeout_after_it_connected_is_refused_even_with_failmode_safe() {
    let out = stopped_while_the_daemon_answers(Stop::AnswerAfterResume, "failmode=safe");
    assert_refused("stopped after the connect", &out);
    // Either the Reject came in time after all, or the module gave up: then the log says
    // that failmode=safe does not apply to a daemon it was connected to.
    let err = stderr(&out);
    assert!(
        err.contains(DENIED) || err.contains("failmode=safe does not apply"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// (b) and (c) over HTTPS: a peer that accepts and closes, and a port that refuses.

/// A host's token file (root, 0600) and the CA file of a throwaway CA for `url=`.
struct HttpsHost {
    token: PathBuf,
    tls: TestTls,
    _dir: tempfile::TempDir,
}

impl HttpsHost {
    fn new() -> HttpsHost {
        require_root("the token file must be owned by root");
        let dir = tempfile::Builder::new()
            .prefix("pam-failmode-")
            .tempdir()
            .expect("temp dir");
        let tls = TestTls::new(dir.path());
        let token = dir.path().join("host.token");
        std::fs::write(&token, "pch_failmode_test\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        HttpsHost {
            token,
            tls,
            _dir: dir,
        }
    }

    /// The module's arguments for a daemon at 127.0.0.1:`port`.
    fn args(&self, port: u16, failmode: &str) -> String {
        format!(
            "url=https://127.0.0.1:{port} token_file={} ca_file={} timeout=2 {failmode}",
            self.token.display(),
            self.tls.ca_file.display()
        )
    }
}

/// How the stand-in peer ends a connection it accepted.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// At once, before the ClientHello (what an over-limit listener does).
    AtOnce,
    /// Once the ClientHello is in, without reading it: a reset (RST).
    Reset,
    /// After reading the ClientHello, without a word: end of stream in the handshake.
    AfterHello,
}

/// A TCP listener on 127.0.0.1 that accepts one connection and ends it as `how` says.
fn closing_peer(how: Close) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn: TcpStream = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "{how:?}: the module never connected"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        match how {
            Close::AtOnce => drop(conn),
            Close::Reset => {
                // Closing with received data unread makes the kernel send a RST.
                let mut waited = Duration::ZERO;
                let mut probe = [0u8; 1];
                conn.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                while conn.peek(&mut probe).is_err() && waited < Duration::from_secs(5) {
                    waited += Duration::from_millis(50);
                }
                drop(conn);
            }
            Close::AfterHello => {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = conn.read(&mut [0u8; 4096]);
                let _ = conn.shutdown(std::net::Shutdown::Both);
                drop(conn);
            }
        }
    });
    (addr, peer)
}

#[test]
fn a_peer_that_accepts_and_closes_during_the_tls_handshake_is_refused_even_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    let host = HttpsHost::new();
    for how in [Close::AtOnce, Close::Reset, Close::AfterHello] {
        let (addr, peer) = closing_peer(how);
        f.service("safe", &line(&f, &host.args(addr.port(), "failmode=safe")));
        let out = f.pamtester_logged("safe", "alice", "");
        peer.join().expect("the stand-in peer");
        assert_refused(&format!("{how:?}"), &out);
        let err = stderr(&out);
        assert!(err.contains("not reachable"), "{how:?}: {err}");
        assert!(
            err.contains("failmode=safe does not apply"),
            "{how:?}: the log says why: {err}"
        );
    }
}

#[test]
fn an_https_port_that_refuses_connections_is_an_outage_for_failmode() {
    let f = PamFixture::with_config("", false);
    let host = HttpsHost::new();
    // A port nobody listens on: connection refused.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    f.service("safe", &line(&f, &host.args(port, "failmode=safe")));
    f.service("secure", &line(&f, &host.args(port, "failmode=secure")));
    let out = f.pamtester_logged("safe", "alice", "");
    assert_let_in("https refused, failmode=safe", &out);
    assert!(
        stderr(&out).contains("connect to 127.0.0.1"),
        "{}",
        describe(&out)
    );
    let out = f.pamtester_logged("secure", "alice", "");
    assert_refused("https refused, failmode=secure", &out);
    let err = stderr(&out);
    assert!(err.contains("not reachable"), "{err}");
    assert!(err.contains("failmode=secure"), "{err}");
}

// ---------------------------------------------------------------------------------------
// (c) Nothing listening on the socket: the feature keeps working.

#[test]
fn no_daemon_on_the_socket_is_an_outage_let_in_with_failmode_safe_refused_with_secure() {
    let f = PamFixture::with_config("", false);
    // No socket file in the socket's directory (ENOENT), and a socket file that nobody
    // listens on, as a crashed daemon leaves it (ECONNREFUSED).
    let stale = f.env.dir().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for (what, socket) in [("no socket file", &f.socket), ("stale socket", &stale)] {
        f.service(
            "safe",
            &line(&f, &format!("socket={} failmode=safe", socket.display())),
        );
        f.service(
            "secure",
            &line(&f, &format!("socket={} failmode=secure", socket.display())),
        );
        let out = f.pamtester_logged("safe", "alice", "");
        assert_let_in(what, &out);
        assert!(
            stderr(&out).contains(&format!("connect to {}", socket.display())),
            "{what}: {}",
            describe(&out)
        );
        let out = f.pamtester_logged("secure", "alice", "");
        assert_refused(what, &out);
        let err = stderr(&out);
        assert!(err.contains("not reachable"), "{what}: {err}");
        assert!(err.contains("failmode=secure"), "{what}: {err}");
    }
}
