//! `failmode=safe` is a per-tenant decision, and every use of it is audited (DESIGN.md:
//! "Fail closed by default. Any fail-open behaviour is an explicit, per-tenant setting, and
//! every use of it is audited."), driven through the real module under `pamtester` and
//! `pam_wrapper` against a real `portcullis serve`:
//!
//! - a host lets a login in without a second factor during an outage only if the daemon
//!   has told it that the tenant allows it (`[tenants.NAME] pam_fail_mode = "safe"`);
//! - each such login is kept in the host's spool and reported with the next login that
//!   reaches the daemon, which writes a FAIL-OPEN audit record for it;
//! - a tenant without the key: the same outage login is refused, and the module's log says
//!   why and what to set.

use std::process::Output;

use portcullis_tests::totp::{oathtool_totp, Algorithm};
use portcullis_tests::{describe, PamFixture};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The name the module sends as its host (what `portcullis audit` shows after `@`).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Stops the fixture's daemon (its socket file goes: the next connect fails).
fn stop_daemon(f: &mut PamFixture) {
    let mut server = f.server.take().expect("the daemon runs");
    server.stop();
    drop(server);
    assert!(!f.socket.exists(), "the socket file is gone");
}

/// Starts the fixture's daemon again.
fn start_daemon(f: &mut PamFixture) {
    let server = f.env.start_server();
    assert_eq!(server.wait_for_pam(), f.socket);
    f.server = Some(server);
}

/// The audit records of `user` that the daemon wrote for fail-open logins.
fn fail_open_records(f: &PamFixture, user: &str) -> Vec<serde_json::Value> {
    let audit = f
        .env
        .cli_json(&["audit", "--tenant", &f.tenant, "--user", user, "--json"]);
    audit
        .as_array()
        .expect("audit --json is a list")
        .iter()
        .filter(|r| r["mode"] == "fail-open")
        .cloned()
        .collect()
}

#[test]
fn a_tenant_with_pam_fail_mode_safe_lets_an_outage_login_in_and_the_daemon_audits_it() {
    let mut f = PamFixture::with_config("[tenants.acme]\npam_fail_mode = \"safe\"\n", true);
    f.module_service("safe", "first_factor=none failmode=safe");
    let grant = f.state_dir().join("acme.fail-mode");

    // A login that reaches the daemon: the host learns that the tenant allows it.
    let out = f.pamtester_logged("safe", "alice", &format!("{}\n", f.code()));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&grant).expect("the grant is kept"),
        "safe\n"
    );
    assert!(f.fail_open_spool().is_empty());

    // The daemon is down: let in without a second factor, loudly, and kept for the audit.
    stop_daemon(&mut f);
    let out = f.pamtester_logged("safe", "alice", "");
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("SYSLOG(1)") && l.contains("WITHOUT a second factor")),
        "{err}"
    );
    assert!(err.contains("tenant acme allows it"), "{err}");
    let spool = f.fail_open_spool();
    assert_eq!(spool.len(), 1, "{spool:?}");
    assert_eq!(spool[0]["user"], "alice");
    assert_eq!(spool[0]["service"], "safe");
    let why = spool[0]["why"].as_str().unwrap().to_string();
    assert!(
        why.contains(&format!("connect to {}", f.socket.display())),
        "{why}"
    );
    assert!(
        spool[0]["id"].as_str().is_some_and(|id| id.len() == 32),
        "{spool:?}"
    );
    // Nothing is audited yet: the daemon has not heard of it.
    assert!(fail_open_records(&f, "alice").is_empty());
    let spool_path = f.state_dir().join("acme.fail-opens");
    let spool_bytes = std::fs::read(&spool_path).unwrap();

    // The daemon is back: the next login is accepted as usual and carries the report (with
    // the next step's code: the first one is spent).
    start_daemon(&mut f);
    let next = oathtool_totp(&f.secret, 6, Algorithm::Sha1, 1);
    let out = f.pamtester_logged("safe", "alice", &format!("{next}\n"));
    assert!(out.status.success(), "{}", describe(&out));
    let records = fail_open_records(&f, "alice");
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    let host = this_host();
    assert_eq!(r["result"], "accept", "{r}");
    assert_eq!(r["channel"], "pam", "{r}");
    assert_eq!(r["client"], "safe", "{r}");
    assert_eq!(r["host"], host.as_str(), "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "FAIL-OPEN: let in WITHOUT a second factor by failmode=safe on host {host} because it could not reach the daemon: "
        )) && reason.contains(&why),
        "{reason}"
    );
    // The time is the login's, not the report's arrival (within the test's minute).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = spool[0]["at"].as_i64().unwrap();
    assert_eq!(r["time"].as_i64(), Some(at), "{r}");
    assert!(now - at < 300, "{r}");
    // The table of `portcullis audit` shows it with the host and why.
    let table = f
        .env
        .cli_ok(&["audit", "--tenant", "acme", "--user", "alice"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table
        .lines()
        .find(|l| l.contains("FAIL-OPEN"))
        .unwrap_or_else(|| panic!("no FAIL-OPEN line: {table}"));
    assert!(
        line.contains(&format!("pam:safe@{host}")) && line.contains("fail-open"),
        "{line}"
    );
    // The daemon said so in its log, and the host's spool is gone.
    let log = f.server.as_ref().unwrap().stderr();
    assert!(
        log.contains("WITHOUT a second factor (failmode=safe)"),
        "{log}"
    );
    assert!(f.fail_open_spool().is_empty());
    for file in ["acme.fail-opens", "acme.fail-opens.sending"] {
        assert!(!f.state_dir().join(file).exists(), "{file} is left");
    }
    // Sent once: another login (here one that fails) adds no record.
    let out = f.pamtester("safe", "alice", &format!("{}\n", f.wrong_code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(fail_open_records(&f, "alice").len(), 1);
    // The same report sent again (as when the answer that took it was lost, or its sender
    // died before removing its claim: here its line is put back into the spool) is not
    // recorded a second time; the host's spool is emptied all the same.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut put_back = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spool_path)
            .unwrap();
        std::io::Write::write_all(&mut put_back, &spool_bytes).unwrap();
    }
    assert_eq!(f.fail_open_spool().len(), 1);
    let out = f.pamtester("safe", "alice", &format!("{}\n", f.wrong_code()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(f.fail_open_spool().is_empty());
    assert_eq!(fail_open_records(&f, "alice").len(), 1);
}

#[test]
fn a_tenant_without_pam_fail_mode_safe_refuses_the_outage_login_and_the_log_says_why() {
    let mut f = PamFixture::new();
    f.module_service("safe", "first_factor=none failmode=safe");

    // A host that has not heard from the daemon yet: refused, and told how it learns.
    let down = PamFixture::with_config("", false);
    down.module_service("safe", "first_factor=none failmode=safe");
    let out = down.pamtester_logged("safe", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(err.contains("not reachable"), "{err}");
    assert!(
        err.contains("failmode=safe does not apply: this host has not heard from the daemon that tenant acme allows it")
            && err.contains(r#"pam_fail_mode = "safe" in [tenants.acme]"#)
            && err.contains("it learns that at the next login that reaches the daemon"),
        "{err}"
    );
    assert!(down.fail_open_spool().is_empty());

    // The daemon says the tenant does not allow it (no key: secure).
    let out = f.pamtester("safe", "alice", &format!("{}\n", f.code()));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(f.state_dir().join("acme.fail-mode")).unwrap(),
        "secure\n"
    );
    stop_daemon(&mut f);
    let out = f.pamtester_logged("safe", "alice", "");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("WITHOUT a second factor"), "{err}");
    assert!(err.contains("not reachable"), "{err}");
    assert!(
        err.contains("failmode=safe does not apply: tenant acme does not allow it")
            && err
                .contains(r#"set pam_fail_mode = "safe" in [tenants.acme] of the daemon's config"#),
        "{err}"
    );
    assert!(f.fail_open_spool().is_empty());
}

#[test]
fn a_state_dir_others_may_write_refuses_every_login_as_a_setup_error() {
    use std::os::unix::fs::PermissionsExt;
    let f = PamFixture::with_config("[tenants.acme]\npam_fail_mode = \"safe\"\n", true);
    f.grant_fail_open();
    std::fs::set_permissions(f.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    f.module_service("safe", "first_factor=none failmode=safe");
    let out = f.pamtester_logged("safe", "alice", &format!("{}\n", f.code()));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("configuration error, refusing every login")
            && err.contains(&format!("state_dir={}", f.state_dir().display()))
            && err.contains("chmod 700"),
        "{err}"
    );
}
