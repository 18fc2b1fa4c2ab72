//! `first_factor = "none"` on a RADIUS client: the password was checked elsewhere, the user
//! gives the code alone, and the audit says the first factor was delegated.

use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, TestEnv,
};

#[test]
fn client_with_first_factor_none_accepts_the_code_alone_and_audits_it_as_delegated() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    // The tenant's own first factor is an upstream that does not exist; the client
    // overrides it: its users already passed a first factor elsewhere.
    let env = TestEnv::with_extra_config(
        vec![],
        "[[radius.clients]]\nname = \"second-gate\"\naddress = \"127.0.0.1/32\"\nsecret = \"s3cret-gate\"\n\
         tenant = \"acme\"\nfirst_factor = \"none\"\n\n\
         [tenants.acme]\nfirst_factor = \"radius\"\n[tenants.acme.radius]\ntimeout = \"1s\"\nretries = 0\n\
         [[tenants.acme.radius.servers]]\naddress = \"127.0.0.1:9\"\nsecret = \"x\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
    );
    env.add_tenant("acme");
    env.add_user("acme", "carol", "unused");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "carol", Some(&secret));
    let server = env.start_server();
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let ask = |pw: &str| {
        radclient(
            server.addr,
            "s3cret-gate",
            &[("User-Name", "carol".into()), ("User-Password", pw.into())],
            true,
        )
    };
    let r = ask("unused");
    assert!(r.is_reject(), "a password is not a code\n{}", r.raw_output);
    let r = ask(&code);
    assert!(r.is_accept(), "the code alone\n{}", r.raw_output);
    let v = env.cli_json(&["audit", "--tenant", "acme", "--user", "carol", "--json"]);
    let last = v.as_array().and_then(|a| a.last()).expect("audit record");
    assert_eq!(last["mode"], "otp-only", "{last}");
    assert_eq!(
        last["factors"],
        serde_json::json!(["delegated", "totp"]),
        "{last}"
    );
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("first factor delegated")),
        "{last}"
    );
    let r = ask(&code);
    assert!(r.is_reject(), "the same code again\n{}", r.raw_output);
    // Code-only logins are decided in batches (the embedded store): all three were.
    let m = server.metrics();
    assert!(
        m.lines().any(|l| l == "portcullis_login_batched_total 3"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "portcullis_login_batch_declined_total 0"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "portcullis_login_batches_redone_total 0"),
        "{m}"
    );
}
