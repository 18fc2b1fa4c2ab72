//! `portcullis config check` against the files a config names: it opens and reads them
//! (and parses certificates and keys as `serve` does), reports every problem with the
//! setting, the path and the reason, never a file's content, and fails; relative paths
//! are taken from the config file's directory, whatever the working directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::{describe, ClientSpec, Mode, TestEnv};

/// A secret that must never be shown, whatever file it is in.
const SECRET: &str = "s3cr3t-never-shown";

/// The files of a good config, written into `dir`: a TLS certificate and key (0600), a CA,
/// a Duo secret key and an SMTP password.
fn write_good_files(dir: &Path) {
    let tls = TestTls::new(dir); // writes ca.pem
    std::fs::write(dir.join("cert.pem"), &tls.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &tls.key_pem).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("duo.skey"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.join("smtp.password"), format!("{SECRET}\n")).unwrap();
}

/// A config naming, with `path` for each, the TLS pair, Duo's `skey_file`, the SMTP
/// `password_file` and the LDAP `ca_file`.
fn config(path: impl Fn(&str) -> String) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey_file = \"{}\"\n\
         api_host = \"api-x.duosecurity.com\"\n\n\
         [tenants.acme.email]\nhost = \"smtp.example.com\"\nusername = \"mfa\"\n\
         password_file = \"{}\"\nfrom = \"Portcullis <mfa@example.com>\"\n\n\
         [tenants.acme.ldap]\nurl = \"ldaps://dc1.example.org\"\nbase_dn = \"dc=example,dc=org\"\n\
         ca_file = \"{}\"\n",
        path("cert.pem"),
        path("key.pem"),
        path("duo.skey"),
        path("smtp.password"),
        path("ca.pem"),
    )
}

fn absolute_in(dir: &Path) -> impl Fn(&str) -> String + '_ {
    move |name| dir.join(name).display().to_string()
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_good_config_passes_and_the_missing_master_key_is_not_made() {
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        write_good_files(dir);
        config(absolute_in(dir))
    });
    let out = env.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": OK") && text.contains("HTTPS"), "{text}");
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
    // config check reads; it makes nothing (the key is made for an empty store later).
    assert!(!env.dir().join("master.key").exists());
    assert!(!env.dir().join("portcullis.db").exists());
}

#[test]
fn every_unreadable_or_malformed_file_is_reported_with_its_setting_path_and_reason() {
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        write_good_files(dir);
        // The key is missing, Duo's secret key is a directory, the SMTP password file is
        // missing and the LDAP CA is not PEM (it holds a secret, which must not be shown).
        std::fs::remove_file(dir.join("key.pem")).unwrap();
        std::fs::remove_file(dir.join("duo.skey")).unwrap();
        std::fs::create_dir(dir.join("duo.skey")).unwrap();
        std::fs::remove_file(dir.join("smtp.password")).unwrap();
        std::fs::write(dir.join("ca.pem"), format!("{SECRET}\nnot a certificate\n")).unwrap();
        config(absolute_in(dir))
    });
    let d = env.dir();
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        format!(
            "http.tls_key {}: cannot read: No such file or directory",
            d.join("key.pem").display()
        ),
        format!(
            "tenants.acme.duo.skey_file {}: cannot read: Is a directory",
            d.join("duo.skey").display()
        ),
        format!(
            "tenants.acme.email.password_file {}: cannot read: No such file or directory",
            d.join("smtp.password").display()
        ),
        format!(
            "ca_file {} is not a PEM certificate",
            d.join("ca.pem").display()
        ),
        "4 problems".to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in\n{err}");
    }
    assert!(err.contains("tenants.acme.ldap"), "{err}");
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(": OK"));

    // --json: the same problems, for scripts; still a failure.
    let out = env.cli(&["config", "check", "--json"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(4), "{v}");
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
}

#[test]
fn a_garbage_certificate_or_key_and_a_key_others_may_read_are_refused_as_serve_would() {
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        write_good_files(dir);
        std::fs::write(dir.join("cert.pem"), format!("{SECRET}\n")).unwrap();
        config(absolute_in(dir))
    });
    let d = env.dir().to_path_buf();
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "http.tls_cert {} holds no certificate",
            d.join("cert.pem").display()
        )),
        "{err}"
    );
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));

    // A good certificate with a private key that is not PEM.
    write_good_files(&d);
    std::fs::write(d.join("key.pem"), format!("{SECRET}\n")).unwrap();
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls_key") && err.contains("holds no PEM private key"),
        "{err}"
    );
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));

    // A good key that group and others may read: serve refuses it, so does the check.
    write_good_files(&d);
    std::fs::set_permissions(d.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        describe(&out)
    );
    std::fs::set_permissions(d.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    env.cli_ok(&["config", "check"]);
}

#[test]
fn relative_paths_are_taken_from_the_config_files_directory_not_the_working_directory() {
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        write_good_files(dir);
        config(|name| name.to_string())
    });
    let elsewhere = tempfile::tempdir().unwrap();
    for cwd in [Path::new("/"), elsewhere.path()] {
        let mut cmd = env.command();
        cmd.args(["config", "check", "--json"]).current_dir(cwd);
        let out = cmd.output().expect("portcullis runs");
        assert!(
            out.status.success(),
            "from {}: {}",
            cwd.display(),
            describe(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            v["http"]["tls_cert"],
            env.dir().join("cert.pem").display().to_string(),
            "{v}"
        );
    }
    // The files are not looked for in the working directory: one missing beside the config
    // is reported under its full path, though the working directory has it.
    std::fs::write(elsewhere.path().join("smtp.password"), SECRET).unwrap();
    std::fs::remove_file(env.dir().join("smtp.password")).unwrap();
    let mut cmd = env.command();
    cmd.args(["config", "check"]).current_dir(elsewhere.path());
    let out = cmd.output().expect("portcullis runs");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "tenants.acme.email.password_file {}: cannot read",
            env.dir().join("smtp.password").display()
        )),
        "{}",
        describe(&out)
    );
}

/// What every error about a provider's `ca_file` ends with.
const CA_EXPECTED: &str = "point it at the CA certificate(s) in PEM form";

/// Duo, SMS (Twilio), e-mail (SMTP) and push (ntfy) of tenant acme, each with `ca_file` set
/// to `dir/NAME-ca.pem`.
fn providers_config(dir: &Path) -> String {
    let ca = |name: &str| dir.join(format!("{name}-ca.pem")).display().to_string();
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://mfa.example.com\"\n\n\
         [tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey = \"{SECRET}\"\n\
         api_host = \"api-x.duosecurity.com\"\nca_file = \"{}\"\n\n\
         [tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"{SECRET}\"\n\
         from = \"+15559990000\"\nca_file = \"{}\"\n\n\
         [tenants.acme.email]\nhost = \"smtp.example.com\"\nfrom = \"Portcullis <mfa@example.com>\"\n\
         ca_file = \"{}\"\n\n\
         [tenants.acme.push]\nntfy_url = \"https://ntfy.example.com\"\nca_file = \"{}\"\n",
        ca("duo"),
        ca("sms"),
        ca("email"),
        ca("push"),
    )
}

#[test]
fn a_provider_ca_file_without_a_certificate_fails_the_check_and_the_start() {
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        let tls = TestTls::new(dir); // writes ca.pem
        let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        // Empty; text that is no PEM (a secret that must not be shown); a private key
        // only; a certificate cut off half way.
        std::fs::write(dir.join("duo-ca.pem"), "").unwrap();
        std::fs::write(dir.join("sms-ca.pem"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.join("email-ca.pem"), &tls.key_pem).unwrap();
        std::fs::write(dir.join("push-ca.pem"), &ca[..ca.len() / 2]).unwrap();
        providers_config(dir)
    });
    let d = env.dir();
    let out = env.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // An empty file is found by the first pass, which opens every file.
    let expected = format!(
        "tenants.acme.duo.ca_file {}: is empty",
        d.join("duo-ca.pem").display()
    );
    assert!(err.contains(&expected), "missing {expected:?} in\n{err}");
    for section in ["sms", "email"] {
        let expected = format!(
            "tenants.acme.{section}.ca_file: {} holds no PEM certificate; {CA_EXPECTED}",
            d.join(format!("{section}-ca.pem")).display()
        );
        assert!(err.contains(&expected), "missing {expected:?} in\n{err}");
    }
    let truncated = format!(
        "tenants.acme.push.ca_file: {} holds no PEM certificate (",
        d.join("push-ca.pem").display()
    );
    assert!(
        err.lines()
            .any(|l| l.contains(&truncated) && l.ends_with(CA_EXPECTED)),
        "missing {truncated:?} in\n{err}"
    );
    assert!(err.contains("4 problems"), "{err}");
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
    assert!(!output_text(&out).contains("PRIVATE"), "{}", describe(&out));

    // serve builds the same clients at start, and stops at the first bad one (Duo's).
    let out = env.cli(&["serve"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "tenants.acme.duo.ca_file: {} holds no PEM certificate; {CA_EXPECTED}",
        d.join("duo-ca.pem").display()
    );
    assert!(err.contains(&expected), "missing {expected:?} in\n{err}");
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
}

#[test]
fn a_provider_ca_file_with_a_pem_bundle_trusts_every_certificate_in_it() {
    use portcullis_tests::fakes::smtp::{SinkTls, SmtpSink};
    use portcullis_tests::fakes::twilio::FakeTwilio;

    let (sms_dir, smtp_dir, other_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let twilio = FakeTwilio::start(sms_dir.path());
    let sink = SmtpSink::start(smtp_dir.path(), SinkTls::Implicit);
    let other_tls = TestTls::new(other_dir.path());
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    // The CA that signed each fake comes second in its bundle, after an unrelated one; the
    // SMTP bundle carries a comment and a private key too, which are skipped.
    let other = read(&other_dir.path().join("ca.pem"));
    let sms_bundle = format!("{other}{}", read(&twilio.ca_file));
    let email_bundle = format!(
        "# corporate CAs\n{other}\n{}{}",
        other_tls.key_pem,
        read(&sink.ca_file)
    );
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        std::fs::write(dir.join("sms-bundle.pem"), &sms_bundle).unwrap();
        std::fs::write(dir.join("email-bundle.pem"), &email_bundle).unwrap();
        format!(
            "[tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"{}\"\nauth_token = \"{}\"\n\
             from = \"+15559990000\"\nbase_url = \"{}\"\nca_file = \"sms-bundle.pem\"\ntimeout = \"5s\"\n\n\
             [tenants.acme.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\nusername = \"{}\"\n\
             password = \"{}\"\nfrom = \"Portcullis <mfa@example.com>\"\nca_file = \"email-bundle.pem\"\n\
             timeout = \"5s\"\n",
            twilio.account_sid,
            twilio.auth_token,
            twilio.base_url(),
            sink.addr.port(),
            sink.username,
            sink.password,
        )
    });
    env.cli_ok(&["config", "check"]);
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw");
    env.add_user("acme", "bob", "pw");
    env.cli_ok(&[
        "factor",
        "enroll",
        "sms",
        "--tenant",
        "acme",
        "alice",
        "--phone",
        "+15550001234",
    ]);
    assert_eq!(twilio.messages().len(), 1, "{:?}", twilio.refusals());
    // E-mail is enrolled only beside another factor (and not 30 s after alice's SMS).
    env.enroll_totp("acme", "bob", Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"));
    env.cli_ok(&[
        "factor",
        "enroll",
        "email",
        "--tenant",
        "acme",
        "bob",
        "--email",
        "bob@example.com",
    ]);
    assert_eq!(sink.mails().len(), 1, "{:?}", sink.refusals());
}

#[test]
fn a_pam_socket_the_daemons_user_cannot_make_is_reported() {
    // Run as uid 65534 (setpriv), for whom a root-owned 0755 directory is read-only: the
    // check must say so before `serve` fails at bind. Root passes every permission check.
    portcullis_tests::require_root("the config check run as another user");
    let setpriv = portcullis_tests::require_tool("setpriv", "util-linux");
    let env = TestEnv::with_config_in_dir(vec![], |dir| {
        std::fs::create_dir(dir.join("run")).unwrap();
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "[pam]\nsocket = \"{}\"\nsocket_mode = \"0600\"\n",
            dir.join("run/portcullis/pam.sock").display()
        )
    });
    // uid 65534 reaches the config (and a copy of the binary) through the env's directory.
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = env.dir().join("portcullis");
    std::fs::copy(portcullis_tests::portcullis_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = || {
        let mut cmd = std::process::Command::new(&setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("--config")
            .arg(env.config_path())
            .args(["config", "check"]);
        portcullis_tests::tools::run_with_timeout(cmd, None, std::time::Duration::from_secs(30))
    };
    let out = as_nobody();
    assert!(!out.status.success(), "{}", describe(&out));
    let text = output_text(&out);
    assert!(
        text.contains("pam.socket")
            && text.contains(&format!("{}", env.dir().join("run").display()))
            && text.contains("may not create files"),
        "{text}"
    );
    // The same config as root (who may make it) passes, and makes nothing.
    let out = env.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!env.dir().join("run/portcullis").exists());
    // Once the directory is the daemon user's, the other user passes too.
    std::os::unix::fs::chown(env.dir().join("run"), Some(65534), Some(65534)).unwrap();
    let out = as_nobody();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_postgres_sslrootcert_that_holds_no_certificate_fails_the_check() {
    // Readable but not a CA: before, only a connection at start found out.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("db-ca.pem");
    std::fs::write(&ca, format!("{SECRET}\n")).unwrap();
    let env = TestEnv::with_store(
        vec![],
        &format!(
            "url = \"postgres://portcullis@db.example.org:5432/portcullis?sslmode=verify-full&sslrootcert={}\"\n",
            ca.display()
        ),
        "",
    );
    let out = env.cli(&["config", "check"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text.contains("store.url")
            && text.contains("sslrootcert")
            && text.contains("no certificate"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    // A real CA passes (nothing is connected to).
    let tls = TestTls::new(dir.path()); // writes ca.pem
    std::fs::copy(&tls.ca_file, &ca).unwrap();
    let out = env.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Duo's `skey_file` and the SMTP `password_file` as the default umask writes them (0644),
/// one RADIUS client (its shared secret is in the config file, also 0644): `config check`
/// and the start of `serve` warn of each file, with its mode and the fix, and still pass.
#[test]
fn secret_files_and_a_config_file_others_may_read_are_warned_about_by_check_and_serve() {
    let env = TestEnv::with_config_in_dir(vec![ClientSpec::new(Mode::Challenge)], |dir| {
        std::fs::write(dir.join("duo.skey"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.join("smtp.password"), format!("{SECRET}\n")).unwrap();
        "[tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey_file = \"duo.skey\"\n\
         api_host = \"api-x.duosecurity.com\"\n\n\
         [tenants.acme.email]\nhost = \"smtp.example.com\"\nusername = \"mfa\"\n\
         password_file = \"smtp.password\"\nfrom = \"Portcullis <mfa@example.com>\"\n"
            .to_string()
    });
    let d = env.dir();
    let (skey, password, config) = (
        d.join("duo.skey"),
        d.join("smtp.password"),
        env.config_path().to_path_buf(),
    );
    chmod(&skey, 0o644);
    chmod(&password, 0o640);
    chmod(&config, 0o644);
    let expected = [
        format!(
            "tenants.acme.duo.skey_file {0} has mode 0644: group and others may read the secret; chmod 600 {0}",
            skey.display()
        ),
        format!(
            "tenants.acme.email.password_file {0} has mode 0640: its group may read the secret; chmod 600 {0}",
            password.display()
        ),
        format!(
            "config file {0} has mode 0644 and holds secrets (radius.clients secret): every local user may read them; \
             chown root:portcullis {0} && chmod 640 {0}",
            config.display()
        ),
    ];
    let out = env.cli(&["config", "check"]);
    assert!(
        out.status.success(),
        "a warning, not a refusal: {}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for w in &expected {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("warning: {w}"))),
            "missing {w:?} in\n{text}"
        );
    }
    assert!(!output_text(&out).contains(SECRET), "{}", describe(&out));
    let v = env.cli_json(&["--json", "config", "check"]);
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("duo.skey_file") && warnings.contains("config file"),
        "{v}"
    );

    // serve starts, and says the same at start.
    let mut server = env.start_server();
    let wait = std::time::Duration::from_secs(10);
    let log = server.wait_for_stderr("config file", wait);
    for w in &expected {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(w.as_str())),
            "missing {w:?} in\n{log}"
        );
    }
    assert!(!log.contains(SECRET), "{log}");
    server.stop();

    // Fixed as the warnings say: no more warnings about modes.
    chmod(&skey, 0o600);
    chmod(&password, 0o600);
    chmod(&config, 0o640);
    let out = env.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !output_text(&out).contains("has mode"),
        "{}",
        describe(&out)
    );
}
