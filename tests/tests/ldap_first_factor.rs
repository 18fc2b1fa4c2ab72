//! First factor from a real OpenLDAP directory (slapd started by the test on 127.0.0.1 with
//! a private config, a test CA and an LDIF of users and groups), second factor TOTP from
//! oathtool, NAS = radclient.

use portcullis_tests::slapd::{group, person, posix_group, Slapd, ADMIN_DN, ADMIN_PASSWORD};
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, TestEnv,
};
use serde_json::Value;

const ALICE_PW: &str = "alice directory pw";
const BOB_PW: &str = "bob directory pw";

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    require_tool("ldapadd", "ldap-utils");
    require_tool("openssl", "openssl");
}

/// alice is in vpn-users, bob only in staff.
fn directory() -> Slapd {
    let ldif = format!(
        "{}{}{}{}",
        person("alice", ALICE_PW, "alice@example.org", "+15550100"),
        person("bob", BOB_PW, "bob@example.org", "+15550101"),
        group("vpn-users", &["alice"]),
        group("staff", &["alice", "bob"]),
    );
    Slapd::start(&ldif)
}

/// Tenant `acme` checks passwords with the directory over ldaps:// with the test CA and
/// certificate verification on; users outside vpn-users are refused.
fn ldap_config(slapd: &Slapd, url: &str) -> String {
    format!(
        "[tenants.acme]\nfirst_factor = \"ldap\"\n\n[tenants.acme.ldap]\nurl = \"{url}\"\n\
         ca_file = \"{ca}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password = \"{ADMIN_PASSWORD}\"\n\
         base_dn = \"ou=people,dc=example,dc=org\"\n\
         user_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}}))\"\n\
         required_group = \"vpn-users\"\ntimeout = \"3s\"\n",
        ca = slapd.ca_file().display()
    )
}

fn env_for(slapd: &Slapd) -> TestEnv {
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &ldap_config(slapd, &slapd.ldaps_url),
    );
    env.add_tenant("acme");
    env
}

fn login(
    env: &TestEnv,
    addr: std::net::SocketAddr,
    user: &str,
    pw: &str,
    state: Option<&str>,
) -> RadReply {
    let mut attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", pw.to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    radclient(addr, &env.client().secret, &attrs, true)
}

/// The newest audit record of `user`.
fn last_audit(env: &TestEnv, user: &str) -> Value {
    let v = env.cli_json(&["audit", "--tenant", "acme", "--user", user, "--json"]);
    v.as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or_else(|| panic!("no audit record for {user}: {v}"))
}

fn reason(record: &Value) -> String {
    record
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[track_caller]
fn expect(reply: &RadReply, code: &str, what: &str) {
    assert_eq!(
        reply.code.as_deref(),
        Some(code),
        "{what}\n{}",
        reply.raw_output
    );
}

fn store_user(env: &TestEnv, name: &str) -> Option<Value> {
    let v = env.cli_json(&["user", "list", "--tenant", "acme", "--json"]);
    v.as_array().and_then(|a| {
        a.iter()
            .find(|u| u.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    })
}

#[test]
fn ldap_first_login_creates_the_user_then_password_and_totp_are_accepted() {
    peers();
    let slapd = directory();
    let env = env_for(&slapd);
    let server = env.start_server();
    assert!(store_user(&env, "alice").is_none());

    // First login: the directory accepts, the store follows it; no factor yet -> refused.
    let r = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(&r, "Access-Reject", "no second factor enrolled yet");
    assert!(reason(&last_audit(&env, "alice")).contains("no confirmed second factor"));
    let alice = store_user(&env, "alice").expect("alice was created on first login");
    assert_eq!(alice["email"], "alice@example.org", "{alice}");
    assert_eq!(alice["phone"], "+15550100", "{alice}");
    let groups: Vec<&str> = alice["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(groups, ["staff", "vpn-users"], "{alice}");

    // Enrol TOTP, then: directory password -> challenge -> code -> Accept.
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let first = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(&first, "Access-Challenge", "right directory password");
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let second = login(
        &env,
        server.addr,
        "alice",
        &code,
        Some(&first.state_for_radclient()),
    );
    expect(&second, "Access-Accept", "directory password + TOTP");

    // A wrong directory password is refused before any code is asked.
    let r = login(&env, server.addr, "alice", "not her password", None);
    expect(&r, "Access-Reject", "wrong directory password");
    let rec = last_audit(&env, "alice");
    assert!(reason(&rec).contains("wrong password"), "{rec}");
}

#[test]
fn ldap_user_outside_required_group_is_refused() {
    peers();
    let slapd = directory();
    let env = env_for(&slapd);
    let server = env.start_server();
    let r = login(&env, server.addr, "bob", BOB_PW, None);
    expect(&r, "Access-Reject", "bob is not in vpn-users");
    let rec = last_audit(&env, "bob");
    assert!(reason(&rec).contains("required group 'vpn-users'"), "{rec}");
    assert!(
        store_user(&env, "bob").is_none(),
        "a refused user is not created"
    );
}

#[test]
fn ldap_filter_metacharacters_in_user_names_are_escaped_and_refused() {
    peers();
    let slapd = directory();
    let env = env_for(&slapd);
    let server = env.start_server();
    // Unescaped, each of these filters would find alice's entry, and her password would
    // then log in a user with a forged name.
    for name in ["al*", "*", "alice)(uid=*", "alice\\", "alice)(|(uid=*"] {
        let r = login(&env, server.addr, name, ALICE_PW, None);
        expect(&r, "Access-Reject", &format!("user name {name:?}"));
        let rec = last_audit(&env, name);
        assert!(
            reason(&rec).contains("user not found in the directory"),
            "{name:?}: {rec}"
        );
        assert!(store_user(&env, name).is_none());
    }
    // The same through `portcullis ldap test`.
    let out = env.cli_stdin(
        &["ldap", "test", "--tenant", "acme", "al*", "--json"],
        &format!("{ALICE_PW}\n"),
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["result"], "rejected", "{v}");
}

#[test]
fn ldap_directory_down_is_a_reject_with_a_clear_audit_reason() {
    peers();
    let mut slapd = directory();
    let env = env_for(&slapd);
    let server = env.start_server();
    // One login while it is up leaves a pooled service connection behind.
    let r = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(&r, "Access-Reject", "no factor yet");
    assert!(reason(&last_audit(&env, "alice")).contains("no confirmed second factor"));
    slapd.stop();
    let started = std::time::Instant::now();
    let r = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(&r, "Access-Reject", "directory down");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "bounded by the timeout"
    );
    let rec = last_audit(&env, "alice");
    let why = reason(&rec);
    assert!(why.contains("first factor (ldap) unavailable"), "{rec}");
    assert!(
        why.contains("unreachable") || why.contains("timed out"),
        "{rec}"
    );
}

#[test]
fn ldap_test_command_checks_starttls_with_certificate_verification() {
    peers();
    let slapd = directory();
    // StartTLS on the ldap:// port, CA from ca_file, verification on.
    let env = TestEnv::with_extra_config(vec![], &ldap_config(&slapd, &slapd.ldap_url));
    let out = env.cli_stdin(
        &["ldap", "test", "--tenant", "acme", "alice", "--json"],
        &format!("{ALICE_PW}\n"),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{v}");
    assert_eq!(v["result"], "accepted", "{v}");
    assert_eq!(v["dn"], "uid=alice,ou=people,dc=example,dc=org", "{v}");
    assert_eq!(v["email"], "alice@example.org");
    // Without the test CA the certificate does not verify: unavailable, not accepted.
    let text = ldap_config(&slapd, &slapd.ldaps_url).replace(
        &format!("ca_file = \"{}\"\n", slapd.ca_file().display()),
        "",
    );
    let env = TestEnv::with_extra_config(vec![], &text);
    let out = env.cli_stdin(
        &["ldap", "test", "--tenant", "acme", "alice", "--json"],
        &format!("{ALICE_PW}\n"),
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["result"], "unavailable", "{v}");
}

fn ldap_test(env: &TestEnv, user: &str, pw: &str) -> (bool, Value) {
    let out = env.cli_stdin(
        &["ldap", "test", "--tenant", "acme", user, "--json"],
        &format!("{pw}\n"),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

#[test]
fn ldap_direct_bind_and_group_search_work_without_a_service_account_or_memberof() {
    peers();
    let slapd = directory();
    let ca = slapd.ca_file().display().to_string();
    // Direct bind with a DN template: no service account; memberOf read as the user.
    let env = TestEnv::with_extra_config(
        vec![],
        &format!(
            "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"{}\"\nca_file = \"{ca}\"\n\
             user_dn_template = \"uid={{username}},ou=people,dc=example,dc=org\"\nrequired_group = \"vpn-users\"\n",
            slapd.ldaps_url
        ),
    );
    let (ok, v) = ldap_test(&env, "alice", ALICE_PW);
    assert!(ok, "{v}");
    assert_eq!(
        v["groups"],
        serde_json::json!(["staff", "vpn-users"]),
        "{v}"
    );
    let (ok, v) = ldap_test(&env, "alice", "wrong");
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("wrong password"),
        "{v}"
    );
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("required group"),
        "{v}"
    );
    // A DN-injection attempt in direct-bind mode is escaped (RFC 4514) and refused.
    let (ok, v) = ldap_test(&env, "alice,ou=people", ALICE_PW);
    assert!(!ok, "{v}");

    // Group search instead of memberOf.
    let env = TestEnv::with_extra_config(
        vec![],
        &format!(
            "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"{}\"\nca_file = \"{ca}\"\n\
             bind_dn = \"{ADMIN_DN}\"\nbind_password = \"{ADMIN_PASSWORD}\"\nbase_dn = \"ou=people,dc=example,dc=org\"\n\
             group_attribute = \"description\"\n\
             group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n\
             group_base_dn = \"ou=groups,dc=example,dc=org\"\nrequired_group = \"staff\"\n",
            slapd.ldaps_url
        ),
    );
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(ok, "{v}");
    assert_eq!(v["groups"], serde_json::json!(["staff"]), "{v}");
    assert_eq!(v["phone"], "+15550101", "{v}");
}

/// alice and bob as in [`directory`], plus the RFC 2307 group `ops` with `memberUid: bob`
/// (memberUid is compared exactly; uid ignores case).
fn directory_with_posix_group() -> Slapd {
    let ldif = format!(
        "{}{}{}{}{}",
        person("alice", ALICE_PW, "alice@example.org", "+15550100"),
        person("bob", BOB_PW, "bob@example.org", "+15550101"),
        group("vpn-users", &["alice"]),
        group("staff", &["alice", "bob"]),
        posix_group("ops", 5000, &["bob"]),
    );
    Slapd::start(&ldif)
}

/// Search mode with memberOf plus a memberUid group search, no required group; `extra` is
/// appended to the ldap table, `after` to the file.
fn memberuid_config(slapd: &Slapd, extra: &str, after: &str) -> String {
    format!(
        "[tenants.acme]\nfirst_factor = \"ldap\"\n\n[tenants.acme.ldap]\nurl = \"{}\"\n\
         ca_file = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password = \"{ADMIN_PASSWORD}\"\n\
         base_dn = \"ou=people,dc=example,dc=org\"\n\
         user_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}}))\"\n\
         group_filter = \"(&(objectClass=posixGroup)(memberUid={{username}}))\"\n\
         group_base_dn = \"ou=groups,dc=example,dc=org\"\ntimeout = \"3s\"\n{extra}\n{after}",
        slapd.ldaps_url,
        slapd.ca_file().display()
    )
}

fn groups_of(v: &Value) -> Vec<String> {
    v["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

#[test]
fn ldap_other_spellings_of_a_name_are_refused_so_memberuid_groups_and_their_rules_apply() {
    peers();
    let slapd = directory_with_posix_group();
    // Members of ops may not use the VPN.
    let deny_ops =
        "[[tenants.acme.rules]]\nname = \"no-ops\"\naction = \"deny\"\ngroups = [\"ops\"]\n";
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        &memberuid_config(&slapd, "", deny_ops),
    );
    env.add_tenant("acme");
    let server = env.start_server();

    // uid matches BOB, and his password binds; but (memberUid=BOB) would match no group, and
    // a store user BOB would escape the rule. Refused, with the spelling to use.
    for typed in ["BOB", "Bob", "bob "] {
        let r = login(&env, server.addr, typed, BOB_PW, None);
        expect(
            &r,
            "Access-Reject",
            &format!("{typed:?} is not the directory's spelling"),
        );
        let rec = last_audit(&env, typed);
        let why = reason(&rec);
        assert!(why.contains("log in as 'bob'"), "{typed:?}: {rec}");
        assert!(
            why.contains("uid of 'uid=bob,ou=people,dc=example,dc=org'"),
            "{rec}"
        );
        assert!(!why.contains(BOB_PW), "{rec}");
        assert!(
            store_user(&env, typed).is_none(),
            "{typed:?} was not created"
        );
    }

    // As bob: the memberUid group is found (with the entry's spelling), so the rule applies.
    let r = login(&env, server.addr, "bob", BOB_PW, None);
    expect(&r, "Access-Reject", "bob is in ops");
    let rec = last_audit(&env, "bob");
    assert!(reason(&rec).contains("denied by rule 'no-ops'"), "{rec}");
    // The server stops cleanly with service connections in its pool.
    let mut server = server;
    server.stop();
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{log}");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(ok, "{v}");
    assert_eq!(groups_of(&v), ["ops", "staff"], "{v}");
    let (ok, v) = ldap_test(&env, "BOB", BOB_PW);
    assert!(!ok, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("log in as 'bob'"),
        "{v}"
    );
    // A wrong password under another spelling says "wrong password", not the spelling.
    let (ok, v) = ldap_test(&env, "BOB", "not his password");
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("wrong password"),
        "{v}"
    );

    // Direct bind: slapd binds uid=BOB,... as bob's entry; the same check applies.
    let env = TestEnv::with_extra_config(
        vec![],
        &format!(
            "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"{}\"\nca_file = \"{}\"\n\
             user_dn_template = \"uid={{username}},ou=people,dc=example,dc=org\"\n\
             bind_dn = \"{ADMIN_DN}\"\nbind_password = \"{ADMIN_PASSWORD}\"\n\
             group_filter = \"(memberUid={{username}})\"\ngroup_base_dn = \"ou=groups,dc=example,dc=org\"\n",
            slapd.ldaps_url,
            slapd.ca_file().display()
        ),
    );
    let (ok, v) = ldap_test(&env, "BOB", BOB_PW);
    assert!(!ok, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("log in as 'bob'"),
        "{v}"
    );
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(ok, "{v}");
    assert_eq!(groups_of(&v), ["ops", "staff"], "{v}");
    assert_eq!(v["dn"], "uid=bob,ou=people,dc=example,dc=org", "{v}");
}

#[test]
fn ldap_username_attribute_names_where_the_login_name_is() {
    peers();
    let slapd = directory_with_posix_group();
    // The filter finds the entry by uid or mail, but one entry has one login name, the
    // first attribute's (uid): a second name would be a second store user, without the
    // first one's factors. The group search uses the uid.
    let either = |extra: &str| {
        memberuid_config(&slapd, extra, "").replace(
            "(&(objectClass=inetOrgPerson)(uid={username}))",
            "(|(uid={username})(mail={username}))",
        )
    };
    let env = TestEnv::with_extra_config(vec![], &either(""));
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(ok, "{v}");
    let mut groups = groups_of(&v);
    groups.sort();
    assert_eq!(groups, ["ops", "staff"], "{v}");
    for alias in ["bob@example.org", "BOB@example.org"] {
        let (ok, v) = ldap_test(&env, alias, BOB_PW);
        assert!(!ok, "{v}");
        assert!(
            v["reason"].as_str().unwrap().contains("log in as 'bob'"),
            "{v}"
        );
    }

    // username_attribute = "mail": the mail address is the name (memberUid then finds no
    // group named by it, but memberOf still gives staff).
    let env = TestEnv::with_extra_config(vec![], &either("username_attribute = \"mail\"\n"));
    let (ok, v) = ldap_test(&env, "bob@example.org", BOB_PW);
    assert!(ok, "{v}");
    assert_eq!(groups_of(&v), ["staff"], "{v}");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(!ok, "{v}");
    let why = v["reason"].as_str().unwrap();
    assert!(
        why.contains("log in as 'bob@example.org'") && why.contains("mail of"),
        "{v}"
    );

    // An attribute the entries lack: refused, naming the setting to fix.
    let env = TestEnv::with_extra_config(
        vec![],
        &memberuid_config(&slapd, "username_attribute = \"sAMAccountName\"\n", ""),
    );
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(!ok, "{v}");
    let why = v["reason"].as_str().unwrap();
    assert!(
        why.contains("'sAMAccountName'") && why.contains("tenants.acme.ldap.username_attribute"),
        "{v}"
    );
}

#[test]
fn ldap_required_group_may_be_a_dn_from_memberof_or_the_group_search() {
    peers();
    let slapd = directory();
    let ca = slapd.ca_file().display().to_string();
    // memberOf: the DN written with other case and spaces still names vpn-users.
    let text = ldap_config(&slapd, &slapd.ldaps_url).replace(
        "required_group = \"vpn-users\"",
        "required_group = \" CN=VPN-Users , OU=Groups,DC=Example, dc=org\"",
    );
    let env = TestEnv::with_extra_config(vec![], &text);
    let (ok, v) = ldap_test(&env, "alice", ALICE_PW);
    assert!(ok, "{v}");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("required group"),
        "{v}"
    );

    // Group search without memberOf: the DNs of the groups found count.
    let search = |required: &str| {
        TestEnv::with_extra_config(
            vec![],
            &format!(
                "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"{}\"\nca_file = \"{ca}\"\n\
                 bind_dn = \"{ADMIN_DN}\"\nbind_password = \"{ADMIN_PASSWORD}\"\nbase_dn = \"ou=people,dc=example,dc=org\"\n\
                 group_attribute = \"description\"\n\
                 group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n\
                 group_base_dn = \"ou=groups,dc=example,dc=org\"\nrequired_group = \"{required}\"\n",
                slapd.ldaps_url
            ),
        )
    };
    let env = search("cn=Staff, ou=groups, dc=example, dc=org");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(ok, "{v}");
    assert_eq!(groups_of(&v), ["staff"], "{v}");
    // Same cn, another place: not that group.
    let env = search("cn=staff,ou=people,dc=example,dc=org");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("required group"),
        "{v}"
    );
    let env = search("cn=vpn-users,ou=groups,dc=example,dc=org");
    let (ok, v) = ldap_test(&env, "alice", ALICE_PW);
    assert!(ok, "{v}");
    let (ok, v) = ldap_test(&env, "bob", BOB_PW);
    assert!(!ok, "{v}");
}

#[test]
fn ldap_another_name_of_an_enrolled_users_entry_is_no_way_around_the_code() {
    // With `(|(uid={username})(mail={username}))` the directory binds bob by his mail too.
    // That must not make a second store user, without bob's factors, that `unenrolled =
    // "allow"` would let in on the password alone (or `enroll` would let enrol its own).
    peers();
    let slapd = directory();
    let extra = ldap_config(&slapd, &slapd.ldaps_url)
        .replace(
            "(&(objectClass=inetOrgPerson)(uid={username}))",
            "(|(uid={username})(mail={username}))",
        )
        .replace("required_group = \"vpn-users\"\n", "");
    let mut client = ClientSpec::new(Mode::Challenge);
    client.extra = "unenrolled = \"allow\"\n".into();
    let env = TestEnv::with_extra_config(vec![client], &extra);
    env.add_tenant("acme");
    let server = env.start_server();
    // bob's first login makes his store user; he enrols an authenticator app.
    let r = login(&env, server.addr, "bob", BOB_PW, None);
    expect(&r, "Access-Accept", "bob, not enrolled, unenrolled = allow");
    env.enroll_totp("acme", "bob", Some(&random_base32_secret()));
    let r = login(&env, server.addr, "bob", BOB_PW, None);
    expect(&r, "Access-Challenge", "bob now needs his code");
    // His mail, with his password: refused, and no second user.
    let r = login(&env, server.addr, "bob@example.org", BOB_PW, None);
    expect(&r, "Access-Reject", "bob's mail as the user name");
    assert!(store_user(&env, "bob@example.org").is_none());
    let why = reason(&last_audit(&env, "bob@example.org"));
    assert!(
        why.contains("is the mail of the directory entry") && why.contains("log in as 'bob'"),
        "{why}"
    );
}

#[test]
fn ldap_ca_file_bundle_trusts_every_certificate_not_only_the_first() {
    // A CA bundle during a rollover: an unrelated CA first, the CA that signed slapd's
    // certificate second. Every certificate must be trusted, not only the first block.
    peers();
    let slapd = directory();
    let other = tempfile::tempdir().expect("tempdir");
    let unrelated = portcullis_tests::fakes::tls::TestTls::new(other.path());
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read a CA file");
    let bundle = other.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!(
            "# old CA\n{}# new CA\n{}",
            read(&unrelated.ca_file),
            read(&slapd.ca_file())
        ),
    )
    .expect("write the bundle");
    let with_ca = |ca: &std::path::Path| {
        ldap_config(&slapd, &slapd.ldaps_url).replace(
            &format!("ca_file = \"{}\"\n", slapd.ca_file().display()),
            &format!("ca_file = \"{}\"\n", ca.display()),
        )
    };
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], &with_ca(&bundle));
    env.add_tenant("acme");
    let server = env.start_server();
    // The first login makes alice's store user (no factor yet); she then enrols TOTP.
    let r = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(&r, "Access-Reject", "no second factor enrolled yet");
    let why = reason(&last_audit(&env, "alice"));
    assert!(why.contains("no confirmed second factor"), "{why}");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let first = login(&env, server.addr, "alice", ALICE_PW, None);
    expect(
        &first,
        "Access-Challenge",
        "directory over TLS trusted through the bundle",
    );
    let code = oathtool_totp(&secret, 6, Algorithm::Sha1, 0);
    let second = login(
        &env,
        server.addr,
        "alice",
        &code,
        Some(&first.state_for_radclient()),
    );
    expect(&second, "Access-Accept", "bundle CA + TOTP");
    drop(server);

    // A ca_file without any certificate (here only a private key) is refused up front.
    let keys = other.path().join("keys.pem");
    std::fs::write(&keys, &unrelated.key_pem).expect("write keys.pem");
    let env = TestEnv::with_extra_config(vec![], &with_ca(&keys));
    let out = env.cli_stdin(
        &["ldap", "test", "--tenant", "acme", "alice", "--json"],
        &format!("{ALICE_PW}\n"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no PEM certificate") && err.contains(&keys.display().to_string()),
        "{err}"
    );
}
