//! Setup errors of the PAM module are not outages: a `socket=` that is not a socket, a
//! path too long to be one or in a directory that does not exist, or a `url=` host that
//! does not exist in DNS, refuses the login with PAM_SERVICE_ERR even with
//! `failmode=safe`, while a daemon that is merely down (or a DNS resolver that fails for
//! now) still falls under `failmode=`.
//!
//! The DNS tests need no network: pamtester runs in a private mount namespace (`unshare`,
//! root) whose /etc/resolv.conf names a fake DNS server of the test on a 127.0.0.0/8
//! address, port 53, and whose /etc/nsswitch.conf says `hosts: files dns`.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::pam::{pam_wrapper_lib, run_under_pam_wrapper};
use portcullis_tests::{describe, pam_module_path, require_root, require_tool, PamFixture};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Service `name`: the module alone, first factor checked by the stack, failmode=safe
/// (the tenant allows it: the host has the daemon's grant), asking the daemon at `socket`.
fn safe_service(f: &PamFixture, name: &str, socket: &str) {
    f.grant_fail_open();
    f.service(
        name,
        &format!(
            "auth required {} socket={socket} tenant={} first_factor=stack failmode=safe state_dir={} fail_delay=0\n",
            pam_module_path().display(),
            f.tenant,
            f.state_dir().display()
        ),
    );
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_refused_even_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    let file = f.env.dir().join("not-a-socket");
    std::fs::write(&file, b"").unwrap();
    safe_service(&f, "file", &file.display().to_string());
    let out = f.pamtester_logged("file", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    // Syslog says what to fix; PAM gets PAM_SERVICE_ERR, which pam_faillock does not count.
    assert!(
        err.contains("is a regular file, not a socket") && err.contains("setup error"),
        "{err}"
    );
    assert!(err.contains("Error in service module"), "{err}");
}

#[test]
fn a_socket_path_too_long_for_sun_path_is_refused_as_a_typo() {
    let f = PamFixture::with_config("", false);
    let long = format!("{}/{}.sock", f.env.dir().display(), "s".repeat(120));
    safe_service(&f, "long", &long);
    let out = f.pamtester_logged("long", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(
        err.contains("refusing every login") && err.contains("shorter path"),
        "{err}"
    );
}

#[test]
fn a_socket_that_does_not_exist_is_an_outage_and_failmode_safe_applies() {
    // The daemon is down and its socket gone: an outage, unlike the setup errors above.
    let f = PamFixture::with_config("", false);
    safe_service(&f, "down", &f.socket.display().to_string());
    let out = f.pamtester_logged("down", "alice", "");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("WITHOUT a second factor"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_socket_in_a_directory_that_does_not_exist_is_refused_even_with_failmode_safe() {
    // A typo in socket='s directory: no daemon, up or down, has its socket there.
    let f = PamFixture::with_config("", false);
    let missing = f.env.dir().join("no-such-dir");
    let socket = missing.join("pam.sock");
    safe_service(&f, "typo", &socket.display().to_string());
    let out = f.pamtester_logged("typo", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(
        err.contains(&format!("socket={}", socket.display()))
            && err.contains(&format!("the directory {} ", missing.display()))
            && err.contains("does not exist")
            && err.contains("setup error"),
        "{err}"
    );
    // PAM_SERVICE_ERR, which pam_faillock does not count.
    assert!(err.contains("Error in service module"), "{err}");
}

/// How the fake DNS server answers every query.
#[derive(Clone, Copy, Debug)]
enum Dns {
    /// This RCODE, no records (3 = NXDOMAIN, 2 = SERVFAIL, 0 with no answer = NODATA).
    Rcode(u8),
    /// Never: reads the queries and lets the resolver time out.
    Silent,
}

/// A DNS server (UDP) on port 53 of a random 127.0.0.0/8 address, answering as told;
/// stopped when dropped.
struct FakeDns {
    addr: Ipv4Addr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start(how: Dns) -> FakeDns {
        require_root("a DNS server on port 53");
        let (socket, addr) = (0..50)
            .find_map(|_| {
                let [a, b] = rand::random::<u16>().to_be_bytes();
                let addr = Ipv4Addr::new(127, 53, a, b.clamp(1, 254));
                UdpSocket::bind((addr, 53)).ok().map(|s| (s, addr))
            })
            .expect("a free 127.53.x.y:53 for the fake DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_reply(&buf[..n], how) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        FakeDns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to `query` with the RCODE of `how`: its id and question, no records.
fn dns_reply(query: &[u8], how: Dns) -> Option<Vec<u8>> {
    let Dns::Rcode(rcode) = how else {
        return None;
    };
    // The question: labels up to the root label, then QTYPE and QCLASS.
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += 1 + usize::from(query[i]);
    }
    let end = i + 5;
    if query.len() < end {
        return None;
    }
    let mut reply = Vec::with_capacity(end);
    reply.extend_from_slice(&query[..2]);
    // QR, the query's RD; RA and the RCODE.
    reply.push(0x80 | (query[2] & 0x01));
    reply.push(0x80 | (rcode & 0x0f));
    // One question, no answer, authority or additional records.
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..end]);
    Some(reply)
}

/// A PAM fixture without a daemon and service `name`: the module over HTTPS to `host`,
/// failmode=safe (granted), the first factor checked by the stack.
fn https_safe_service(f: &PamFixture, name: &str, host: &str) {
    f.grant_fail_open();
    let dir = f.env.dir().join("https");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = TestTls::new(&dir);
    let token = dir.join("host.token");
    std::fs::write(&token, "pch_test\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.service(
        name,
        &format!(
            "auth required {} url=https://{host}:8443 token_file={} ca_file={} tenant={} first_factor=stack failmode=safe state_dir={} fail_delay=0 timeout=5\n",
            pam_module_path().display(),
            token.display(),
            tls.ca_file.display(),
            f.tenant,
            f.state_dir().display()
        ),
    );
}

/// `pamtester -v SERVICE alice authenticate` under pam_wrapper (syslog on stderr), in a
/// private mount namespace whose resolver is `nameserver` alone.
fn pamtester_with_resolver(f: &PamFixture, service: &str, nameserver: Ipv4Addr) -> Output {
    require_root("a private mount namespace");
    let unshare = require_tool("unshare", "util-linux");
    require_tool("mount", "mount");
    let pamtester = require_tool("pamtester", "pamtester");
    let resolv = f.env.dir().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {nameserver}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    let nsswitch = f.env.dir().join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
    // The bind mounts stay in the namespace (unshare makes its mounts private). nscd, if
    // it runs, would answer from its cache instead of the resolver: kept out too.
    let script = r#"mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf || exit 97
if [ -S /run/nscd/socket ]; then mount --bind /dev/null /run/nscd/socket || exit 97; fi
shift 2
exec env "$@""#;
    let mut cmd = Command::new(unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&resolv)
    .arg(&nsswitch)
    // pam_wrapper for pamtester only, not for sh and mount.
    .arg(format!("LD_PRELOAD={}", pam_wrapper_lib().display()))
    .arg("PAM_WRAPPER=1")
    .arg(format!(
        "PAM_WRAPPER_SERVICE_DIR={}",
        f.service_dir.display()
    ))
    .arg("PAM_WRAPPER_DEBUGLEVEL=3")
    .arg(&pamtester)
    .args(["-v", service, "alice", "authenticate"]);
    let out = run_under_pam_wrapper(cmd, Some(Vec::new()), Duration::from_secs(60));
    assert_ne!(
        out.status.code(),
        Some(97),
        "cannot set up the mount namespace: {}",
        describe(&out)
    );
    out
}

/// The name the tests resolve: under `.invalid` (RFC 6761), and never in /etc/hosts.
const TYPO_HOST: &str = "mfa.portcullis-typo.invalid";

#[test]
fn a_url_host_that_does_not_exist_in_dns_is_refused_even_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    https_safe_service(&f, "typo", TYPO_HOST);
    for (how, needle) in [
        (Dns::Rcode(3), "does not exist in DNS"),
        (Dns::Rcode(0), "has no address in DNS"),
    ] {
        let dns = FakeDns::start(how);
        let out = pamtester_with_resolver(&f, "typo", dns.addr);
        assert!(!out.status.success(), "{how:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(!err.contains("WITHOUT a second factor"), "{how:?}: {err}");
        assert!(
            err.contains(&format!("url= host {TYPO_HOST} {needle}")) && err.contains("setup error"),
            "{how:?}: {err}"
        );
        assert!(err.contains("Error in service module"), "{how:?}: {err}");
    }
}

#[test]
fn a_dns_resolver_that_fails_for_now_is_an_outage_and_failmode_safe_applies() {
    let f = PamFixture::with_config("", false);
    https_safe_service(&f, "dns-down", TYPO_HOST);
    // SERVFAIL, a server that never answers, and no server at all (nothing on port 53 of
    // an address nobody uses: connection refused).
    let servfail = FakeDns::start(Dns::Rcode(2));
    let silent = FakeDns::start(Dns::Silent);
    let nobody = {
        let unused = FakeDns::start(Dns::Silent);
        unused.addr
    };
    for (what, nameserver) in [
        ("SERVFAIL", servfail.addr),
        ("no answer", silent.addr),
        ("no server", nobody),
    ] {
        let out = pamtester_with_resolver(&f, "dns-down", nameserver);
        assert!(out.status.success(), "{what}: {}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("WITHOUT a second factor"), "{what}: {err}");
        assert!(!err.contains("does not exist in DNS"), "{what}: {err}");
    }
}
