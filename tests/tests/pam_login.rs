//! PAM logins through `libpam_portcullis.so`, driven by `pamtester` under `pam_wrapper`
//! (no /etc/pam.d change), against a real `portcullis serve` and codes from `oathtool`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use portcullis_tests::pam::system_file;
use portcullis_tests::{describe, PamFixture};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn password_and_totp_code_from_oathtool_log_in() {
    let f = PamFixture::new();
    f.module_service("svc", "first_factor=portcullis");
    let out = f.pamtester("svc", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("Password:"), "{err}");
    assert!(err.contains("Verification code (app): "), "{err}");
    let rec = f.last_audit("alice");
    assert_eq!(rec["result"], "accept", "{rec}");
    assert_eq!(rec["channel"], "pam", "{rec}");
    assert_eq!(rec["client"], "svc", "{rec}");
}

#[test]
fn wrong_code_is_refused() {
    let f = PamFixture::new();
    f.module_service("svc", "first_factor=portcullis");
    let wrong = f.wrong_code();
    let out = f.pamtester(
        "svc",
        "alice",
        &format!("{}\n{wrong}\n{wrong}\n{wrong}\n", f.password),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("Wrong code, try again"),
        "{}",
        describe(&out)
    );
    assert_eq!(f.last_audit("alice")["result"], "reject");
}

#[test]
fn wrong_password_is_refused_before_any_code_prompt() {
    let f = PamFixture::new();
    f.module_service("svc", "first_factor=portcullis");
    let out = f.pamtester("svc", "alice", &format!("not-the-password\n{}\n", f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("Verification code"),
        "{}",
        describe(&out)
    );
}

#[test]
fn replayed_code_is_refused() {
    let f = PamFixture::new();
    f.module_service("svc", "first_factor=portcullis");
    let code = f.code();
    let first = f.pamtester("svc", "alice", &format!("{}\n{code}\n", f.password));
    assert!(first.status.success(), "{}", describe(&first));
    let again = f.pamtester("svc", "alice", &format!("{}\n{code}\n", f.password));
    assert!(!again.status.success(), "{}", describe(&again));
    assert!(
        stderr(&again).contains("Wrong code"),
        "{}",
        describe(&again)
    );
}

#[test]
fn unenrolled_user_is_denied_by_default_and_allowed_with_unenrolled_allow() {
    let f = PamFixture::new();
    f.env.add_user("acme", "bob", "bobs password");
    f.module_service("deny", "first_factor=portcullis unenrolled=deny");
    f.module_service("allow", "first_factor=portcullis unenrolled=allow");
    f.module_service("enroll", "first_factor=portcullis unenrolled=enroll");

    let out = f.pamtester("deny", "bob", "bobs password\n");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("No second factor is enrolled"),
        "{}",
        describe(&out)
    );

    let out = f.pamtester("allow", "bob", "bobs password\n");
    assert!(out.status.success(), "{}", describe(&out));
    let rec = f.last_audit("bob");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("unenrolled = allow"),
        "{rec}"
    );

    // Without [http] public_url no enrolment link can be made: enroll behaves as deny.
    let out = f.pamtester("enroll", "bob", "bobs password\n");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("No second factor is enrolled"),
        "{}",
        describe(&out)
    );

    // The password still counts with unenrolled=allow.
    let out = f.pamtester("allow", "bob", "wrong\n");
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn first_factor_stack_asks_only_for_the_code_after_pam_matrix_checked_the_password() {
    let f = PamFixture::new();
    let passdb = f.env.dir().join("passdb");
    std::fs::write(&passdb, format!("alice:{}:svc\n", f.password)).unwrap();
    let matrix = system_file("pam_matrix.so", "libpam-wrapper");
    f.service(
        "svc",
        &format!(
            "auth requisite {} passdb={}\n{}",
            matrix.display(),
            passdb.display(),
            f.module_line("first_factor=stack")
        ),
    );
    let out = f.pamtester("svc", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("Password").count(), 1, "{err}");
    let rec = f.last_audit("alice");
    assert_eq!(rec["factors"][0], "delegated", "{rec}");
    // A wrong password stops at pam_matrix: Portcullis is never asked.
    let out = f.pamtester("svc", "alice", &format!("wrong\n{}\n", f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("Verification code"),
        "{}",
        describe(&out)
    );
}

#[test]
fn daemon_down_denies_with_failmode_secure_and_allows_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    f.module_service("secure", "first_factor=none");
    f.module_service("safe", "first_factor=none failmode=safe");
    f.module_service("safe-password", "first_factor=portcullis failmode=safe");
    // The daemon said earlier that the tenant allows failing open.
    f.grant_fail_open();

    let out = f.pamtester_logged("secure", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("not reachable"), "{}", describe(&out));
    assert!(
        err.contains("portcullis is unreachable at") && err.contains("); failmode=secure"),
        "{err}"
    );

    let out = f.pamtester_logged("safe", "alice", "");
    assert!(out.status.success(), "{}", describe(&out));
    // Loudly: syslog at LOG_ALERT (1).
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("SYSLOG(1)") && l.contains("WITHOUT a second factor")),
        "{err}"
    );
    // And kept for the daemon's audit.
    let spool = f.fail_open_spool();
    assert_eq!(spool.len(), 1, "{spool:?}");
    assert_eq!(spool[0]["user"], "alice");

    // failmode=safe never lets in a password nobody could check, and the log says so
    // (not "failmode=secure").
    let out = f.pamtester_logged("safe-password", "alice", "any password\n");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("not reachable"), "{}", describe(&out));
    assert!(
        err.contains("failmode=safe does not apply: the password was not checked yet (first_factor=portcullis)"),
        "{err}"
    );
    assert!(!err.contains("failmode=secure"), "{err}");
}

#[test]
fn a_daemon_that_stalls_in_the_middle_of_a_login_is_refused_and_the_log_says_why() {
    use portcullis_core::protocol::{self, Expects, Response, ResponseStep};
    let f = PamFixture::with_config("", false);
    // Asks for the code, then takes the answer and never replies (a hung daemon).
    let listener = std::os::unix::net::UnixListener::bind(&f.socket).unwrap();
    let daemon = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        let _ = protocol::read_frame(&mut first).unwrap();
        let prompt = Response::new(ResponseStep::Prompt {
            txn: "t.0".into(),
            text: "Code: ".into(),
            echo: false,
            expects: Expects::Code,
            choices: vec![],
        });
        protocol::write_frame(&mut first, &prompt).unwrap();
        let (mut second, _) = listener.accept().unwrap();
        let _ = protocol::read_frame(&mut second).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(second);
    });
    f.module_service("safe", "first_factor=none timeout=1 failmode=safe");
    f.grant_fail_open();
    let out = f.pamtester_logged("safe", "alice", "123456\n");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(
        err.contains("took the request and did not answer (")
            && err.contains(
                "failmode=safe does not apply: the daemon took the request and did not answer"
            ),
        "{err}"
    );
    assert!(!err.contains("failmode=secure"), "{err}");
    daemon.join().unwrap();
}

#[test]
fn repeated_wrong_codes_lock_the_user_out_until_unlocked() {
    let f = PamFixture::with_config("[lockout]\nthrottle_after = 3\nlock_after = 3\n", true);
    f.module_service("svc", "first_factor=portcullis");
    let wrong = f.wrong_code();
    let out = f.pamtester(
        "svc",
        "alice",
        &format!("{}\n{wrong}\n{wrong}\n{wrong}\n", f.password),
    );
    assert!(!out.status.success(), "{}", describe(&out));

    // The right code no longer helps: the user is locked, and told so.
    let out = f.pamtester("svc", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("locked"), "{}", describe(&out));

    f.env.unlock_user("acme", "alice");
    let out = f.pamtester("svc", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn an_answer_after_the_transaction_expired_says_to_start_again() {
    let f = PamFixture::with_config("[transactions]\nttl = \"1s\"\n", true);
    f.module_service("svc", "first_factor=portcullis");
    let mut login = f.pamtester_held("svc", "alice", &[]);
    login.type_line(&f.password);
    // Wait for the code prompt, then let the transaction expire like a slow user would
    // (from the prompt on: the password's check may take a while on a loaded machine).
    login.wait_for("Verification code", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(2500));
    login.type_line(&f.code());
    let (status, err) = login.finish(Duration::from_secs(30));
    assert!(!status.success(), "{err}");
    assert!(err.contains("Verification code"), "{err}");
    assert!(err.contains("took too long"), "{err}");
}

#[test]
fn a_daemon_restarted_while_the_user_is_at_the_code_prompt_is_waited_for() {
    // failmode=secure: without the wait the login would be refused ("not reachable");
    // with failmode=safe it would be let in without its second factor.
    let mut f = PamFixture::new();
    f.module_service("svc", "first_factor=portcullis failmode=secure debug");
    // pam_wrapper prints what the module logs through pam_syslog (its debug notes) too.
    let mut login = f.pamtester_held("svc", "alice", &[("PAM_WRAPPER_DEBUGLEVEL", "3")]);
    login.type_line(&f.password);
    login.wait_for("Verification code", Duration::from_secs(20));

    // The daemon is stopped (SIGTERM, as `systemctl restart` or a package upgrade does):
    // it ends, and its socket file goes with it.
    let mut old = f.server.take().expect("the fixture's server");
    let status = old.stop().expect("the daemon's exit status");
    assert!(status.success(), "SIGTERM: {status:?}\n{}", old.stderr());
    drop(old);
    assert!(!f.socket.exists(), "the daemon left its socket file behind");

    // The user types the code while it is down: the module waits for it, quietly.
    login.type_line(&f.code());
    login.wait_for("waiting up to 30 s", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));

    // Started again on the same config and store: the transaction is still there.
    let server = f.env.start_server();
    assert_eq!(server.wait_for_pam(), f.socket);
    f.server = Some(server);
    let (status, out) = login.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}");
    assert!(out.contains("waited "), "{out}");
    assert!(out.contains("attempts); it answered"), "{out}");
    assert!(!out.contains("not reachable"), "{out}");
    assert_eq!(out.matches("Verification code").count(), 1, "{out}");

    // One login, accepted once, in the audit of the store the two processes shared.
    let records = f.env.cli_json(&[
        "audit", "--tenant", "acme", "--user", "alice", "--limit", "20", "--json",
    ]);
    let records = records.as_array().expect("audit records");
    let accepted = records
        .iter()
        .filter(|r| r["result"] == "accept" && r["channel"] == "pam")
        .count();
    assert_eq!(accepted, 1, "{records:?}");
    assert_eq!(f.last_audit("alice")["result"], "accept");
}

#[test]
fn use_first_pass_takes_the_password_an_earlier_module_set() {
    let f = PamFixture::new();
    // pam_wrapper's pam_set_items.so sets PAM_AUTHTOK from the environment, as a password
    // module earlier in the stack would; Portcullis must send that and not prompt.
    let set_items = system_file("pam_set_items.so", "libpam-wrapper");
    f.service(
        "svc",
        &format!(
            "auth required {}\n{}",
            set_items.display(),
            f.module_line("first_factor=portcullis use_first_pass")
        ),
    );
    let out = f.pamtester_with_env(
        "svc",
        "alice",
        &format!("{}\n", f.code()),
        &[("PAM_AUTHTOK", f.password.as_str())],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("Password"), "{err}");
    assert!(err.contains("Verification code (app): "), "{err}");

    // A wrong earlier password is refused before any code prompt.
    let out = f.pamtester_with_env("svc", "alice", "", &[("PAM_AUTHTOK", "wrong")]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("Verification code"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_daemon_that_never_answers_is_given_up_at_the_timeout_and_refused_in_both_modes() {
    let f = PamFixture::with_config("", false);
    // Accepts connections and reads, but never answers (a hung daemon).
    let listener = std::os::unix::net::UnixListener::bind(&f.socket).unwrap();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(2) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(5));
        drop(held);
    });
    f.module_service("secure", "first_factor=none timeout=1");
    f.module_service("safe", "first_factor=none timeout=1 failmode=safe");
    f.grant_fail_open();
    let started = Instant::now();
    let out = f.pamtester("secure", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("not reachable"), "{}", describe(&out));
    // A daemon that took the request is there: no outage, whatever failmode says (a
    // timeout is no evidence of one: a user can stop their own sudo past it).
    let out = f.pamtester("safe", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "two logins took {took:?} with timeout=1"
    );
    let _ = holder.join();
}

#[test]
fn a_daemon_speaking_another_protocol_version_is_refused_even_with_failmode_safe() {
    let f = PamFixture::with_config("", false);
    // Answers every request with a frame of protocol version 2.
    let listener = std::os::unix::net::UnixListener::bind(&f.socket).unwrap();
    let fake = std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let Ok(mut s) = stream else { continue };
            let mut header = [0u8; 4];
            if s.read_exact(&mut header).is_err() {
                continue;
            }
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            let _ = s.read_exact(&mut body);
            let reply = br#"{"v":2,"step":{"type":"accept","factors":["totp"]}}"#;
            let _ = s.write_all(&(reply.len() as u32).to_be_bytes());
            let _ = s.write_all(reply);
        }
    });
    f.module_service("safe", "first_factor=none failmode=safe");
    f.grant_fail_open();
    let out = f.pamtester("safe", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("could not handle this login"),
        "{}",
        describe(&out)
    );
    let _ = fake.join();
}

#[test]
fn service_tty_and_rhost_reach_the_audit_record() {
    let f = PamFixture::new();
    // pam_set_items.so sets PAM items from the environment, as sudo (tty, ruser) and sshd
    // (rhost) would.
    let set_items = system_file("pam_set_items.so", "libpam-wrapper");
    f.service(
        "sudo",
        &format!(
            "auth required {}\n{}",
            set_items.display(),
            f.module_line("first_factor=none")
        ),
    );
    let out = f.pamtester_with_env(
        "sudo",
        "alice",
        &format!("{}\n", f.code()),
        &[("PAM_TTY", "/dev/pts/7"), ("PAM_RUSER", "alice")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let rec = f.last_audit("alice");
    assert_eq!(rec["client"], "sudo", "{rec}");
    assert_eq!(rec["source"], "tty:/dev/pts/7", "{rec}");

    let out = f.pamtester_with_env(
        "sudo",
        "alice",
        &format!("{}\n", f.wrong_code()),
        &[("PAM_RHOST", "192.0.2.44")],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let rec = f.last_audit("alice");
    assert_eq!(rec["source"], "192.0.2.44", "{rec}");
    assert_eq!(rec["result"], "reject", "{rec}");
}

#[test]
fn a_tenant_typo_is_a_setup_error_not_a_failed_login() {
    let f = PamFixture::new();
    f.service(
        "svc",
        &f.module_line("first_factor=portcullis")
            .replace(&format!("tenant={} ", f.tenant), "tenant=acmee "),
    );
    let out = f.pamtester_logged("svc", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    // PAM_SERVICE_ERR (pam_faillock counts PAM_AUTH_ERR only), and syslog says what to fix.
    assert!(
        err.contains("Error in service module"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains("tenant 'acmee' does not exist"),
        "{}",
        describe(&out)
    );
    assert!(!err.contains("Verification code"), "{err}");
}

#[test]
fn a_daemon_error_is_no_failed_login_to_pam() {
    use portcullis_core::protocol::{self, ErrorCode, Response};
    let f = PamFixture::with_config("", false);
    // A daemon whose store is down answers `internal`; one that refuses this uid answers
    // `forbidden`.
    let listener = std::os::unix::net::UnixListener::bind(&f.socket).unwrap();
    let daemon = std::thread::spawn(move || {
        for code in [ErrorCode::Internal, ErrorCode::Forbidden] {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = protocol::read_frame(&mut conn).unwrap();
            protocol::write_frame(&mut conn, &Response::error(code, "test")).unwrap();
        }
    });
    f.module_service("svc", "first_factor=none timeout=5");
    let out = f.pamtester("svc", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    // pamtester prints pam_strerror: PAM_AUTHINFO_UNAVAIL, not PAM_AUTH_ERR.
    assert!(
        stderr(&out).contains("cannot retrieve authentication info"),
        "{}",
        describe(&out)
    );
    let out = f.pamtester("svc", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    // PAM_SERVICE_ERR.
    assert!(
        stderr(&out).contains("Error in service module"),
        "{}",
        describe(&out)
    );
    daemon.join().unwrap();
}
