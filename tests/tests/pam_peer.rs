//! The PAM module checks who answers on its socket (`SO_PEERCRED`): root, the owner of the
//! socket's directory, or the user of `daemon_user=`. Anyone else who can write the
//! directory (here: a group member of a root-owned 0770 directory) could bind a socket of
//! their own there while the daemon is down and answer "accept"; the module refuses such a
//! peer as a setup error, in both failmodes, before it sends anything.
//!
//! The stand-in daemon is a separate process (`pam-standin`, which answers Accept to every
//! request) started as uid 65534 through `setpriv`, or as root; the module runs under
//! `pamtester` and `pam_wrapper`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portcullis_tests::pam::{run_under_pam_wrapper, under_pam_wrapper};
use portcullis_tests::{describe, pam_module_path, require_root, require_tool};

/// uid and gid of `nobody`/`nogroup`: the stand-in that is not the daemon.
const NOBODY: u32 = 65534;

/// A temporary directory with a pam_wrapper service directory, a copy of the stand-in
/// that uid 65534 may run, and the socket's directory `run/` (made by each test).
struct Host {
    dir: tempfile::TempDir,
    service_dir: PathBuf,
    standin: PathBuf,
}

impl Host {
    fn new() -> Host {
        require_root("the peer-uid tests (they run a stand-in daemon as uid 65534)");
        require_tool("pamtester", "pamtester");
        require_tool("setpriv", "util-linux");
        let dir = tempfile::Builder::new()
            .prefix("pam-peer-")
            .tempdir()
            .expect("temp dir");
        // uid 65534 may pass through it, to its socket directory and the stand-in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let service_dir = dir.path().join("pam.d");
        std::fs::create_dir(&service_dir).unwrap();
        // Copied by `cp`, not by this process: a file that this process has open for
        // writing cannot be run (ETXTBSY) while another test thread's fork holds the fd.
        let standin = dir.path().join("pam-standin");
        let copied = Command::new("cp")
            .arg(env!("CARGO_BIN_EXE_pam-standin"))
            .arg(&standin)
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp pam-standin: {copied}");
        std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Host {
            dir,
            service_dir,
            standin,
        }
    }

    /// Makes the socket's directory `run/` with owner `uid`:`gid` and `mode` (never
    /// writable by others: the module refuses that before it connects); its socket path.
    fn socket_dir(&self, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let run = self.dir.path().join("run");
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::chown(&run, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
        run.join("pam.sock")
    }

    /// Writes service `name`: the module alone on `socket`, the first factor checked by the
    /// stack, no delay, and `args`.
    /// With failmode=safe the host has the daemon's grant (the tenant allows it), so that
    /// only the module's own rules can refuse.
    fn service(&self, name: &str, socket: &Path, args: &str) {
        let args = portcullis_tests::pam::with_state_dir(args, self.dir.path());
        if args.contains("failmode=safe") {
            portcullis_tests::pam::grant_fail_open(
                &portcullis_tests::pam::fail_open_state_dir(self.dir.path()),
                "acme",
            );
        }
        let line = format!(
            "auth required {} socket={} tenant=acme first_factor=stack fail_delay=0 {args}\n",
            pam_module_path().display(),
            socket.display()
        );
        std::fs::write(self.service_dir.join(name), line).unwrap();
    }

    /// `pamtester -v SERVICE alice authenticate`, with what the module logs on stderr.
    fn login(&self, service: &str) -> Output {
        let mut cmd = Command::new(require_tool("pamtester", "pamtester"));
        cmd.args(["-v", service, "alice", "authenticate"]);
        under_pam_wrapper(&mut cmd, &self.service_dir);
        cmd.env("PAM_WRAPPER_DEBUGLEVEL", "3");
        run_under_pam_wrapper(cmd, Some(Vec::new()), Duration::from_secs(60))
    }

    /// Starts the stand-in on `socket` as `uid` (through setpriv, with its group and no
    /// other) or as root (`None`), once it listens.
    fn standin(&self, socket: &Path, uid: Option<u32>) -> Standin {
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new(require_tool("setpriv", "util-linux"));
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ])
                .arg(&self.standin);
                c
            }
            None => Command::new(&self.standin),
        };
        cmd.arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the stand-in");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "ready" => Standin { child, lines },
            other => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait for the stand-in");
                panic!("the stand-in did not start ({other:?}): {}", describe(&out));
            }
        }
    }
}

/// A running stand-in daemon; killed when dropped.
struct Standin {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Standin {
    /// How many requests it has read since the last call (its lines come through a
    /// thread: those of a login that has ended arrive well within the wait here).
    fn requests(&self) -> usize {
        std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_millis(300)).ok())
            .filter(|l| l == "request")
            .count()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_accepted(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", describe(out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("successfully authenticated"),
        "{what}: {}",
        describe(out)
    );
}

/// Refused as a setup error of this host, not let in by failmode=safe; the log says
/// `needles`.
fn assert_setup_error(what: &str, out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "{what}: {}", describe(out));
    let err = stderr(out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains("successfully authenticated"),
        "{what}: {printed}"
    );
    assert!(!err.contains("WITHOUT a second factor"), "{what}: {err}");
    assert!(
        err.contains("this is a setup error on this host, refused whatever failmode= says")
            || err.contains("configuration error, refusing every login"),
        "{what}: {err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "{what}: no `{needle}` in: {err}");
    }
}

#[test]
fn a_socket_made_by_another_uid_in_a_group_writable_directory_is_refused_in_both_failmodes() {
    let host = Host::new();
    // The daemon is down; a member of the directory's group binds the daemon's path.
    let socket = host.socket_dir(0, NOBODY, 0o770);
    let standin = host.standin(&socket, Some(NOBODY));
    for failmode in ["failmode=secure", "failmode=safe"] {
        host.service("svc", &socket, failmode);
        let out = host.login("svc");
        assert_setup_error(
            failmode,
            &out,
            &[
                &format!("socket={} is answered by uid {NOBODY}", socket.display()),
                "not by uid 0 (root, the owner of its directory",
                "daemon_user=NAME",
            ],
        );
    }
    // The module asked nothing of it.
    assert_eq!(standin.requests(), 0);
}

#[test]
fn daemon_user_names_the_uid_that_may_answer() {
    let host = Host::new();
    let socket = host.socket_dir(0, NOBODY, 0o770);
    let standin = host.standin(&socket, Some(NOBODY));
    host.service("nobody", &socket, "daemon_user=nobody failmode=secure");
    assert_accepted("daemon_user=nobody", &host.login("nobody"));
    assert_eq!(standin.requests(), 1);
    // Another user than the one behind the socket: still refused, naming both.
    host.service("root", &socket, "daemon_user=root failmode=safe");
    assert_setup_error(
        "daemon_user=root",
        &host.login("root"),
        &[
            &format!("is answered by uid {NOBODY}"),
            "uid 0 (daemon_user=root)",
            "daemon_user=root names the wrong user",
        ],
    );
    assert_eq!(standin.requests(), 0);
}

#[test]
fn a_daemon_user_that_does_not_exist_is_a_setup_error() {
    let host = Host::new();
    let socket = host.socket_dir(0, 0, 0o755);
    // Even with root behind the socket: a typo is said at once, not when it matters.
    let standin = host.standin(&socket, None);
    host.service(
        "typo",
        &socket,
        "daemon_user=portcullis-no-such-user failmode=safe",
    );
    assert_setup_error(
        "daemon_user=portcullis-no-such-user",
        &host.login("typo"),
        &["daemon_user=portcullis-no-such-user: no such user"],
    );
    assert_eq!(standin.requests(), 0);
}

#[test]
fn the_owner_of_the_socket_directory_may_answer() {
    let host = Host::new();
    // Root's directory, group-writable: root's stand-in is the owner's.
    let socket = host.socket_dir(0, NOBODY, 0o770);
    let standin = host.standin(&socket, None);
    host.service("svc", &socket, "failmode=secure");
    assert_accepted("root's socket in root's directory", &host.login("svc"));
    assert_eq!(standin.requests(), 1);
    drop(standin);
    // As systemd makes it: RuntimeDirectory= belongs to the unit's User=, which makes the
    // socket (here uid 65534 in its own 0755 directory).
    let socket = host.socket_dir(NOBODY, NOBODY, 0o755);
    let standin = host.standin(&socket, Some(NOBODY));
    host.service("svc", &socket, "failmode=secure");
    assert_accepted(
        "the daemon user's socket in its directory",
        &host.login("svc"),
    );
    assert_eq!(standin.requests(), 1);
}
