//! `portcullis config check` against the files a config names: it opens and reads them
//! (and parses certificates and keys as `serve` does), reports every problem with the
//! setting, the path and the reason, never a file's content, and fails; relative paths
//! are taken from the config file's directory, whatever the working directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::{describe, TestEnv};

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
