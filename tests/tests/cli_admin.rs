//! The admin CLI as operators run it: its changes are audited, a mistyped store path or
//! the wrong user does not leave a new store or files the daemon cannot open, and output
//! piped into `head` ends quietly.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Output, Stdio};

use portcullis_tests::tools::run_with_timeout;
use portcullis_tests::{
    radclient, random_base32_secret, require_tool, wrong_totp, Algorithm, ClientSpec, Mode, Server,
    TestEnv,
};
use serde_json::Value;

/// uid and gid of `nobody`: another user than the root the tests run as.
const NOBODY: u32 = 65534;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cli_as_nobody(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = env.command();
    cmd.args(args).uid(NOBODY).gid(NOBODY);
    run_with_timeout(cmd, None, std::time::Duration::from_secs(60))
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[test]
fn cli_changes_are_audited_with_the_local_user() {
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "alice password");
    let factor = env.enroll_totp("acme", "alice", None);
    let mut unlock = env.command();
    unlock
        .args(["user", "unlock", "--tenant", "acme", "alice"])
        .env("SUDO_USER", "alice");
    let out = run_with_timeout(unlock, None, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    env.cli_ok(&[
        "factor",
        "remove",
        "--tenant",
        "acme",
        "alice",
        &factor.factor_id,
    ]);
    // A command that only reads leaves no record.
    env.cli_ok(&["user", "show", "--tenant", "acme", "alice"]);
    // A change that fails leaves one, as refused, with the reason.
    let failed = env.cli(&[
        "factor",
        "remove",
        "--tenant",
        "acme",
        "alice",
        "no-such-factor",
    ]);
    assert!(!failed.status.success());

    let records = env.cli_json(&["--json", "audit", "--tenant", "acme", "--user", "alice"]);
    let records = records.as_array().expect("a list of records");
    let find = |action: &str| {
        records
            .iter()
            .find(|r| r["mode"] == action)
            .unwrap_or_else(|| panic!("no {action} record: {records:?}"))
            .clone()
    };
    let unlock = find("user.unlock");
    assert_eq!(unlock["channel"], "cli", "{unlock}");
    assert_eq!(unlock["source"], "local", "{unlock}");
    // The kernel's login uid names who logged in when it is set (it cannot be forged);
    // without one, SUDO_USER is named as the unverified hint it is.
    let login_uid = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
    if login_uid
        .trim()
        .parse::<u32>()
        .map_or(true, |u| u == u32::MAX)
    {
        assert_eq!(unlock["client"], "root (SUDO_USER=alice)", "{unlock}");
    } else {
        let client = unlock["client"].as_str().unwrap_or_default();
        assert!(
            client.starts_with("root") && !client.contains("alice"),
            "{unlock}"
        );
    }
    assert_eq!(unlock["username"], "alice", "{unlock}");
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["mode"] == "factor.remove" && r["result"] == "reject")
        .collect();
    assert_eq!(refused.len(), 1, "{records:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed:")),
        "{refused:?}"
    );
    let removed = records
        .iter()
        .find(|r| r["mode"] == "factor.remove" && r["result"] == "accept")
        .cloned()
        .expect("the factor.remove record");
    assert_eq!(removed["channel"], "cli", "{removed}");
    assert_eq!(removed["client"], "root", "{removed}");
    assert!(
        removed["reason"]
            .as_str()
            .unwrap()
            .contains(&factor.factor_id),
        "{removed}"
    );
    for action in ["user.create", "factor.enroll"] {
        find(action);
    }
    assert_eq!(
        records.len(),
        5,
        "one record per change (the failed one too), none for reads: {records:?}"
    );
    // The secret shown at enrolment is in no record.
    let secret = factor.secret.clone().unwrap();
    let all = env.cli_ok(&["--json", "audit"]);
    assert!(!String::from_utf8_lossy(&all.stdout).contains(&secret));
}

#[test]
fn read_only_commands_refuse_a_missing_store_and_make_nothing() {
    let env = TestEnv::challenge();
    let before = listing(env.dir());
    for args in [
        &["tenant", "list"][..],
        &["user", "list", "--tenant", "acme"],
        &["audit"],
        &["token", "list"],
        &["host", "list", "--tenant", "acme"],
        &["user", "export", "--tenant", "acme"],
    ] {
        let out = env.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        let db = env.dir().canonicalize().unwrap().join("portcullis.db");
        assert!(
            err.contains(&format!("no store at {} (store.url in ", db.display()))
                && err.contains("start portcullis serve once, or fix store.url"),
            "{args:?}: {err}"
        );
        assert_eq!(listing(env.dir()), before, "{args:?} made files");
    }
    // A command that writes makes the store, and says where.
    let out = env.cli_ok(&["tenant", "add", "acme"]);
    let err = stderr(&out);
    let db = env.dir().canonicalize().unwrap().join("portcullis.db");
    assert!(
        err.contains(&format!("created a new, empty store at {}", db.display())),
        "{err}"
    );
    env.cli_ok(&["tenant", "list"]);
    // Nor does it make a master key where there is none (a typo in key_file).
    let key = env.dir().join("master.key");
    std::fs::rename(&key, env.dir().join("master.key.moved")).unwrap();
    let out = env.cli(&["tenant", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));
    assert!(!key.exists(), "a read-only command made a master key");
}

#[test]
fn a_first_command_logs_the_new_key_and_the_migrations_once() {
    let env = TestEnv::challenge();
    let mut cmd = env.command();
    cmd.args(["tenant", "add", "acme"])
        .env("PORTCULLIS_LOG", "info");
    let out = run_with_timeout(cmd, None, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines = |what: &str| err.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("master key"), 1, "{err}");
    assert!(err.contains("WARN") && err.contains("back it up"), "{err}");
    let key = env.dir().canonicalize().unwrap().join("master.key");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert_eq!(lines("store migrated from version 0 to "), 1, "{err}");
    assert_eq!(lines("applied store migration"), 0, "{err}");
}

#[test]
fn root_refuses_to_make_files_in_the_daemons_directory() {
    let env = TestEnv::challenge();
    // The packaged state directory: owned by the daemon's user, empty.
    chown(env.dir(), NOBODY);
    let before = listing(env.dir());
    for args in [&["tenant", "add", "acme"][..], &["tenant", "list"]] {
        let out = env.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded as root");
        let err = stderr(&out);
        assert!(
            err.contains("run admin commands as the daemon's user: sudo -u nobody portcullis"),
            "{args:?}: {err}"
        );
        assert_eq!(listing(env.dir()), before, "{args:?} made files");
    }
}

#[test]
fn a_file_of_another_user_is_named_with_its_owner() {
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    // As if root had run `tenant add` in the daemon's directory: the directory and the
    // store are the daemon's (nobody), the key stayed root's (0600).
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in listing(env.dir()) {
        if name.starts_with("portcullis.db") {
            chown(&env.dir().join(name), NOBODY);
        }
    }
    chown(env.dir(), NOBODY);
    let key = env.dir().join("master.key");
    let out = cli_as_nobody(&env, &["tenant", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the master key file {}", key.display()))
            && err.contains("owned by root")
            && err.contains(&format!("chown nobody: {}", key.display())),
        "{err}"
    );
    let out = cli_as_nobody(&env, &["serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the daemon runs as nobody")
            && err.contains(&format!(
                "give it to the daemon's user: chown nobody: {}",
                key.display()
            )),
        "{err}"
    );
    assert!(err.matches("os error").count() <= 1, "{err}");
    // Given to the daemon's user, it works.
    chown(&key, NOBODY);
    let out = cli_as_nobody(&env, &["tenant", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `args`, reads a little of its standard output and closes it.
fn read_a_little(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = env.command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn portcullis");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout);
    child.wait_with_output().expect("wait")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    // Far more than a pipe holds (64 KiB).
    let mut csv = String::from("name,email,groups\n");
    for i in 0..5000 {
        csv.push_str(&format!("user{i},user{i}@example.org,vpn;ops\n"));
    }
    let file = env.dir().join("users.csv");
    std::fs::write(&file, csv).unwrap();
    env.cli_ok(&["user", "import", "--tenant", "acme", file.to_str().unwrap()]);
    for args in [
        &["--json", "user", "export", "--tenant", "acme"][..],
        &["user", "export", "--tenant", "acme"],
        &["user", "list", "--tenant", "acme"],
    ] {
        let out = read_a_little(&env, args);
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && err.is_empty(),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

#[test]
fn config_check_warns_of_an_example_shared_secret() {
    let mut client = ClientSpec::new(Mode::Challenge);
    for secret in ["trial-secret-change-me", "CHANGE-ME-please-0123456789"] {
        client.secret = secret.into();
        let env = TestEnv::new(vec![client.clone()]);
        let v = env.cli_json(&["--json", "config", "check"]);
        let warnings = v["warnings"].to_string();
        assert!(
            warnings.contains("client 'vpn' has the example shared secret"),
            "{secret}: {v}"
        );
    }
    let env = TestEnv::challenge();
    let v = env.cli_json(&["--json", "config", "check"]);
    assert!(!v["warnings"].to_string().contains("example"), "{v}");
}

#[test]
fn policy_test_warns_of_a_client_that_does_not_exist() {
    let env = TestEnv::challenge();
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let out = env.cli_ok(&[
        "policy", "test", "--tenant", "acme", "--user", "alice", "--client", "vnp",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("no RADIUS client or PAM service named 'vnp' in ")
            && err.contains("(known: vpn)"),
        "{err}"
    );
    let out = env.cli_ok(&[
        "policy", "test", "--tenant", "acme", "--user", "alice", "--client", "vpn",
    ]);
    assert_eq!(stderr(&out), "");
}

#[test]
fn ldap_test_says_what_the_tenant_uses_and_that_a_down_directory_saw_no_password() {
    let env = TestEnv::challenge();
    let out = env.cli_stdin(&["ldap", "test", "--tenant", "acme", "alice"], "pw\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("tenant 'acme' has no [tenants.acme.ldap] section")
            && err.contains("its first factor is local"),
        "{err}"
    );
    // Nothing listens on port 9 of the loopback address.
    let env = TestEnv::with_extra_config(
        vec![],
        "[tenants.acme.ldap]\nurl = \"ldap://127.0.0.1:9\"\nstarttls = false\n\
         base_dn = \"dc=example,dc=org\"\nuser_dn_template = \"uid={username},dc=example,dc=org\"\n",
    );
    let out = env.cli_stdin(&["ldap", "test", "--tenant", "acme", "alice"], "pw\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("error: directory ldap://127.0.0.1:9 unreachable")
            && err.contains("the password was not checked")
            && !err.contains("did not accept"),
        "{err}"
    );
}

#[test]
fn totp_options_take_one_spelling_in_any_case() {
    let env = TestEnv::challenge();
    let out = env.cli_ok(&["factor", "enroll", "totp", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("[possible values: SHA1, SHA256, SHA512]")
            && help.contains("[possible values: 6, 8]"),
        "{help}"
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let v: Value = env.cli_json(&[
        "--json",
        "factor",
        "enroll",
        "totp",
        "--tenant",
        "acme",
        "alice",
        "--algorithm",
        "sha256",
        "--digits",
        "8",
    ]);
    assert_eq!(v["algorithm"], "SHA256", "{v}");
    assert_eq!(v["digits"], 8, "{v}");
}

/// Tenant acme with `[lockout]` set to `lockout`, user alice (password "pw", a TOTP
/// factor) and a running server whose `vpn` client is in append mode.
fn throttle_world(lockout: &str) -> (TestEnv, Server, String) {
    require_tool("radclient", "freeradius-utils");
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Append)],
        &format!("\n[lockout]\n{lockout}\n"),
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    (env, server, secret)
}

/// One login of alice with her password and a wrong code: one failed code.
fn fail_a_code(env: &TestEnv, server: &Server, secret: &str) {
    let password = format!("pw{}", wrong_totp(secret, 6, Algorithm::Sha1));
    let reply = radclient(
        server.addr,
        &env.client().secret,
        &[("User-Name", "alice".into()), ("User-Password", password)],
        true,
    );
    assert_eq!(
        reply.code.as_deref(),
        Some("Access-Reject"),
        "{}",
        reply.raw_output
    );
}

fn show(env: &TestEnv) -> (String, Value) {
    let text = env.cli_ok(&["user", "show", "--tenant", "acme", "alice"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let json = env.cli_json(&["--json", "user", "show", "--tenant", "acme", "alice"]);
    (text, json)
}

#[test]
fn user_show_says_when_the_next_code_is_allowed_after_failed_codes() {
    let (env, server, secret) =
        throttle_world("throttle_after = 2\nbase_delay = \"10m\"\nlock_after = 5");
    // Nothing in force: no line about it.
    fail_a_code(&env, &server, &secret);
    let (text, json) = show(&env);
    assert!(text.contains("failures:   1 failed codes"), "{text}");
    assert!(
        !text.contains("throttled") && !text.contains("locked"),
        "{text}"
    );
    assert_eq!(json["throttle"], Value::Null, "{json}");

    // The second failed code owes a 10 minute delay before the next is checked.
    fail_a_code(&env, &server, &secret);
    let (text, json) = show(&env);
    assert_eq!(json["throttle"]["state"], "delayed", "{json}");
    assert_eq!(json["throttle"]["failures"], 2, "{json}");
    let next = json["throttle"]["next_try_at"]
        .as_i64()
        .expect("next_try_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now + 590..=now + 600).contains(&next), "{next} vs {now}");
    let line = text
        .lines()
        .find(|l| l.starts_with("throttled:"))
        .unwrap_or_else(|| panic!("no throttled line in\n{text}"));
    assert!(
        line.contains("2 failures, next try allowed at 20")
            && (line.ends_with("Z (in 10m)") || line.contains("Z (in 9m ")),
        "{line}"
    );
    assert!(!text.contains("locked"), "{text}");
    // The daemon refuses the next login for the same reason.
    fail_a_code(&env, &server, &secret);
    let audit = String::from_utf8_lossy(
        &env.cli_ok(&["audit", "--tenant", "acme", "--limit", "1"])
            .stdout,
    )
    .into_owned();
    assert!(audit.contains("throttled: 2 failed codes"), "{audit}");
}

#[test]
fn user_show_says_until_when_a_user_is_locked_and_how_to_lift_it() {
    let (env, server, secret) = throttle_world(
        "throttle_after = 2\nbase_delay = \"10m\"\nlock_after = 2\nduration = \"1h\"",
    );
    fail_a_code(&env, &server, &secret);
    fail_a_code(&env, &server, &secret);
    let (text, json) = show(&env);
    assert_eq!(json["throttle"]["state"], "locked", "{json}");
    assert_eq!(json["throttle"]["failures"], 2, "{json}");
    assert_eq!(json["throttle"]["until"], json["locked_until"], "{json}");
    let line = text
        .lines()
        .find(|l| l.starts_with("locked:"))
        .unwrap_or_else(|| panic!("no locked line in\n{text}"));
    assert!(
        line.contains("until 20")
            && (line.contains("Z (in 1h)") || line.contains("Z (in 59m "))
            && line.contains("after 2 failures")
            && line.ends_with("portcullis user unlock --tenant acme alice"),
        "{line}"
    );
    assert!(!text.contains("throttled"), "{text}");
    env.unlock_user("acme", "alice");
    let (text, json) = show(&env);
    assert!(!text.contains("locked:"), "{text}");
    assert_eq!(json["throttle"], Value::Null, "{json}");
}

#[test]
fn every_cli_enrolment_is_audited_with_the_id_of_the_factor_it_made() {
    use portcullis_tests::fakes::ntfy::FakeNtfy;
    use portcullis_tests::fakes::smtp::{SinkTls, SmtpSink};
    use portcullis_tests::fakes::twilio::FakeTwilio;

    let fakes = tempfile::tempdir().unwrap();
    let (sms_dir, smtp_dir, ntfy_dir) = (
        fakes.path().join("sms"),
        fakes.path().join("smtp"),
        fakes.path().join("ntfy"),
    );
    for d in [&sms_dir, &smtp_dir, &ntfy_dir] {
        std::fs::create_dir(d).unwrap();
    }
    let twilio = FakeTwilio::start(&sms_dir);
    let sink = SmtpSink::start(&smtp_dir, SinkTls::Implicit);
    let ntfy = FakeNtfy::start(&ntfy_dir);
    let env = TestEnv::with_extra_config(
        vec![],
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://mfa.example.com\"\n\n\
             [tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"{}\"\nauth_token = \"{}\"\n\
             from = \"+15559990000\"\nbase_url = \"{}\"\nca_file = \"{}\"\ntimeout = \"5s\"\n\n\
             [tenants.acme.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\nusername = \"{}\"\n\
             password = \"{}\"\nfrom = \"Portcullis <mfa@example.com>\"\nca_file = \"{}\"\ntimeout = \"5s\"\n{}",
            twilio.account_sid,
            twilio.auth_token,
            twilio.base_url(),
            twilio.ca_file.display(),
            sink.addr.port(),
            sink.username,
            sink.password,
            sink.ca_file.display(),
            ntfy.config("acme", ""),
        ),
    );
    env.add_tenant("acme");
    // One user per channel that sends a code: each send counts for the user's resend delay.
    for user in ["alice", "bob", "carol", "dave"] {
        env.add_user("acme", user, "pw");
    }
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let enrol = |user: &str, args: &[&str]| -> String {
        let mut all = vec!["--json", "factor", "enroll"];
        all.extend_from_slice(&args[..1]);
        all.extend(["--tenant", "acme", user]);
        all.extend_from_slice(&args[1..]);
        let v = env.cli_json(&all);
        v["factor_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no factor_id in {v}"))
            .to_string()
    };
    let made = [
        ("alice", "totp", enrol("alice", &["totp"])),
        (
            "alice",
            "totp",
            enrol("alice", &["totp", "--secret", secret]),
        ),
        ("alice", "hotp", enrol("alice", &["hotp", "--counter", "5"])),
        (
            "bob",
            "sms",
            enrol("bob", &["sms", "--phone", "+15550001234"]),
        ),
        (
            "carol",
            "totp",
            enrol("carol", &["totp", "--secret", secret]),
        ),
        (
            "carol",
            "email",
            enrol("carol", &["email", "--email", "carol@example.com"]),
        ),
        ("dave", "push", enrol("dave", &["push"])),
    ];
    assert_eq!(twilio.messages().len(), 1, "{:?}", twilio.refusals());
    assert_eq!(sink.mails().len(), 1, "{:?}", sink.refusals());

    let audit = env.cli_json(&["--json", "audit", "--tenant", "acme"]);
    let records: Vec<&Value> = audit
        .as_array()
        .expect("a list")
        .iter()
        .filter(|r| r["mode"] == "factor.enroll")
        .collect();
    assert_eq!(records.len(), made.len(), "{records:?}");
    for (user, kind, id) in &made {
        let naming: Vec<&&Value> = records
            .iter()
            .filter(|r| {
                r["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains(id.as_str()))
            })
            .collect();
        assert_eq!(
            naming.len(),
            1,
            "the record of {kind} factor {id}: {records:?}"
        );
        let r = naming[0];
        assert_eq!(r["username"], *user, "{r}");
        assert_eq!(r["result"], "accept", "{r}");
        assert_eq!(r["channel"], "cli", "{r}");
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!("{kind} factor {id} enrolled (")),
            "{reason}"
        );
    }
    // How the codes went, as the admin API says; never the secret given.
    let reason_of = |id: &str| {
        records
            .iter()
            .find_map(|r| r["reason"].as_str().filter(|t| t.contains(id)))
            .unwrap_or_default()
            .to_string()
    };
    assert!(reason_of(&made[1].2).ends_with("(confirmed), from a given secret"));
    assert!(reason_of(&made[3].2).contains("(pending), code sent to "));
    assert!(reason_of(&made[6].2).ends_with("(pending), code sent via ntfy"));
    assert!(!audit.to_string().contains(secret), "{audit}");
}
