//! Step-up for sudo through the PAM module: a rule asks for a hardware token (HOTP) when the
//! PAM service is `sudo`; the app's TOTP code, good for sshd, is not enough there.

use std::process::Command;

use portcullis_tests::{describe, oathtool_totp, require_tool, Algorithm, PamFixture};

const RULES: &str = r#"
[[tenants.acme.rules]]
name = "sudo-needs-token"
action = "step_up"
clients = ["sudo"]
factors = ["hotp"]
"#;

fn oathtool_hotp(secret_b32: &str, counter: u64) -> String {
    let out = Command::new(require_tool("oathtool", "oathtool"))
        .args(["--hotp", "-b", "-c", &counter.to_string(), secret_b32])
        .output()
        .expect("run oathtool");
    assert!(out.status.success(), "oathtool failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sudo_asks_for_the_hardware_token_and_refuses_the_app_code() {
    let f = PamFixture::with_config(RULES, true);
    // alice holds the app (TOTP, from the fixture) and a hardware token (HOTP).
    let token_secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let enrolled = f.env.cli_json(&[
        "factor",
        "enroll",
        "hotp",
        "--tenant",
        "acme",
        "alice",
        "--secret",
        token_secret,
        "--json",
    ]);
    assert_eq!(enrolled["state"], "confirmed", "{enrolled}");
    f.module_service("sudo", "first_factor=portcullis");
    f.module_service("sshd", "first_factor=portcullis");

    // The app's code opens sshd...
    let out = f.pamtester("sshd", "alice", &format!("{}\n{}\n", f.password, f.code()));
    assert!(out.status.success(), "{}", describe(&out));

    // ...but not sudo: three tries with app codes fail, and none of them is spent. The
    // first is valid and unused (the next step's code, inside the window).
    let unspent = oathtool_totp(&f.secret, 6, Algorithm::Sha1, 1);
    let app = f.wrong_code();
    let out = f.pamtester(
        "sudo",
        "alice",
        &format!("{}\n{unspent}\n{app}\n{app}\n", f.password),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Wrong code, try again"), "{err}");
    let rec = f.last_audit("alice");
    assert_eq!(rec["result"], "reject", "{rec}");
    assert_eq!(rec["client"], "sudo", "{rec}");
    // The valid code sudo refused was not spent: it still opens sshd.
    let out = f.pamtester("sshd", "alice", &format!("{}\n{unspent}\n", f.password));
    assert!(out.status.success(), "{}", describe(&out));

    // The token's code opens sudo; the audit names the rule and the factor.
    let out = f.pamtester(
        "sudo",
        "alice",
        &format!("{}\n{}\n", f.password, oathtool_hotp(token_secret, 0)),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let rec = f.last_audit("alice");
    assert_eq!(rec["result"], "accept", "{rec}");
    assert!(rec["factors"].to_string().contains("hotp"), "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("sudo-needs-token"),
        "{rec}"
    );
}
