//! Tenants are isolated: the same user name in two tenants are two users; a RADIUS client
//! of one tenant never authenticates another tenant's users; the CLI never reaches another
//! tenant's factors or codes.

use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    TestEnv,
};

#[test]
fn same_name_in_two_tenants_are_two_users_and_clients_stay_in_their_tenant() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let env = TestEnv::new(vec![ClientSpec::new(Mode::Append)]); // client of tenant acme
    env.add_tenant("acme");
    env.add_tenant("globex");
    env.add_user("acme", "alice", "acme-pw");
    env.add_user("globex", "alice", "globex-pw");
    let (acme_secret, globex_secret) = (random_base32_secret(), random_base32_secret());
    env.enroll_totp("acme", "alice", Some(&acme_secret));
    let globex_factor = env.enroll_totp("globex", "alice", Some(&globex_secret));
    let server = env.start_server();
    let login = |pw: &str| {
        radclient(
            server.addr,
            &env.client().secret,
            &[
                ("User-Name", "alice".to_string()),
                ("User-Password", pw.to_string()),
            ],
            true,
        )
    };
    let globex_code = oathtool_totp(&globex_secret, 6, Algorithm::Sha1, 0);
    let r = login(&format!("globex-pw{globex_code}"));
    assert_eq!(
        r.code.as_deref(),
        Some("Access-Reject"),
        "globex credentials through acme's client\n{}",
        r.raw_output
    );
    let acme_code = oathtool_totp(&acme_secret, 6, Algorithm::Sha1, 0);
    let r = login(&format!("acme-pw{acme_code}"));
    assert_eq!(r.code.as_deref(), Some("Access-Accept"), "{}", r.raw_output);

    // The CLI: acme's alice does not see or own globex's factor.
    let acme_factors = env.list_factors("acme", "alice");
    assert!(acme_factors
        .iter()
        .all(|f| f.factor_id != globex_factor.factor_id));
    let out = env.cli(&[
        "factor",
        "remove",
        "--tenant",
        "acme",
        "alice",
        &globex_factor.factor_id,
    ]);
    assert!(
        !out.status.success(),
        "removing another tenant's factor must fail"
    );
    assert_eq!(
        env.list_factors("globex", "alice").len(),
        1,
        "globex's factor is still there"
    );
    // Audit records are per tenant: globex's are the CLI's changes, none a login.
    let logins = |tenant: &str| {
        let audit = env.cli_json(&["audit", "--tenant", tenant, "--json"]);
        let all = audit.as_array().unwrap().clone();
        assert!(all.iter().all(|r| r["tenant"] == tenant), "{audit}");
        all.into_iter()
            .filter(|r| r["channel"] != "cli")
            .collect::<Vec<_>>()
    };
    assert_eq!(logins("globex").len(), 0);
    assert_eq!(logins("acme").len(), 2);
    // Recovery codes of one tenant's alice do not work for the other's.
    let codes = env.generate_recovery_codes("globex", "alice");
    let r = login(&format!("acme-pw{}", codes[0]));
    assert_eq!(r.code.as_deref(), Some("Access-Reject"), "{}", r.raw_output);
}
