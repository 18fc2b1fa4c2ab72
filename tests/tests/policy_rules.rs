//! Policy rules end to end: radclient as the NAS, rules from the config file, decisions
//! in the audit log, and `portcullis policy test` explaining them.

use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, Server, TestEnv,
};

const RULES: &str = r#"
[[tenants.acme.rules]]
name = "contractors-never"
action = "deny"
groups = ["contractors"]

[[tenants.acme.rules]]
name = "office-lan"
action = "skip_mfa"
sources = ["10.0.0.0/8"]
groups = ["staff"]

[[tenants.acme.rules]]
name = "mfa-opt-out"
action = "skip_mfa"
attributes = { use_mfa = "false" }
"#;

struct World {
    env: TestEnv,
    server: Server,
    secret: String,
}

fn world() -> World {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let env = TestEnv::with_extra_config(vec![ClientSpec::new(Mode::Challenge)], RULES);
    env.add_tenant("acme");
    env.cli_stdin_ok(
        &[
            "user",
            "add",
            "--tenant",
            "acme",
            "alice",
            "--password-stdin",
            "--group",
            "staff",
        ],
        "pw-alice\n",
    );
    env.cli_stdin_ok(
        &[
            "user",
            "add",
            "--tenant",
            "acme",
            "carl",
            "--password-stdin",
            "--group",
            "contractors",
            "--group",
            "staff",
        ],
        "pw-carl\n",
    );
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    env.enroll_totp("acme", "carl", Some(&secret));
    let server = env.start_server();
    World {
        env,
        server,
        secret,
    }
}

fn login(w: &World, user: &str, password: &str, from: &str, state: Option<&str>) -> RadReply {
    let mut attrs = vec![
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
        ("Calling-Station-Id", from.to_string()),
    ];
    if let Some(s) = state {
        attrs.push(("State", s.to_string()));
    }
    radclient(w.server.addr, &w.env.client().secret, &attrs, true)
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

fn last_audit(w: &World) -> serde_json::Value {
    let v = w.env.cli_json(&["audit", "--tenant", "acme", "--json"]);
    v.as_array()
        .and_then(|a| a.last().cloned())
        .expect("an audit record")
}

#[test]
fn trusted_network_skips_the_second_factor_and_others_are_asked_for_it() {
    let w = world();
    expect(
        &login(&w, "alice", "pw-alice", "10.20.30.40", None),
        "Access-Accept",
        "office LAN, password only",
    );
    let rec = last_audit(&w);
    assert_eq!(rec["factors"], serde_json::json!(["password"]), "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("rule 'office-lan' (skip_mfa)"),
        "{rec}"
    );
    expect(
        &login(&w, "alice", "wrong", "10.20.30.40", None),
        "Access-Reject",
        "the password still counts",
    );

    let outside = login(&w, "alice", "pw-alice", "203.0.113.9", None);
    expect(&outside, "Access-Challenge", "from outside a code is asked");
    let code = oathtool_totp(&w.secret, 6, Algorithm::Sha1, 0);
    expect(
        &login(
            &w,
            "alice",
            &code,
            "203.0.113.9",
            outside.state_hex.as_deref(),
        ),
        "Access-Accept",
        "code",
    );
    assert!(last_audit(&w)["reason"]
        .as_str()
        .unwrap()
        .contains("default (require_mfa)"));
}

#[test]
fn denied_group_is_rejected_even_from_the_trusted_network() {
    let w = world();
    expect(
        &login(&w, "carl", "pw-carl", "10.20.30.40", None),
        "Access-Reject",
        "contractor",
    );
    assert_eq!(
        last_audit(&w)["reason"],
        "denied by rule 'contractors-never' (deny)"
    );
}

#[test]
fn policy_test_explains_the_decision() {
    let w = world();
    let v = w.env.cli_json(&[
        "policy",
        "test",
        "--tenant",
        "acme",
        "--user",
        "alice",
        "--client",
        "vpn",
        "--source",
        "203.0.113.9",
        "--json",
    ]);
    assert_eq!(v["decision"], "default (require_mfa)", "{v}");
    let why = v["explanation"].to_string();
    assert!(
        why.contains("rule 'office-lan' does not match: source '203.0.113.9' is not in"),
        "{why}"
    );
    let v = w.env.cli_json(&[
        "policy", "test", "--tenant", "acme", "--user", "alice", "--client", "vpn", "--source",
        "10.1.1.1", "--json",
    ]);
    assert_eq!(v["rule"], "office-lan", "{v}");
}

#[test]
fn a_remembered_source_skips_the_code_until_the_admin_revokes_it() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let env = TestEnv::with_extra_config(
        vec![ClientSpec::new(Mode::Challenge)],
        "[[tenants.acme.rules]]\nname = \"remember-8h\"\naction = \"require_mfa\"\nremember = \"8h\"\n",
    );
    env.add_tenant("acme");
    env.add_user("acme", "alice", "pw-alice");
    let secret = random_base32_secret();
    env.enroll_totp("acme", "alice", Some(&secret));
    let server = env.start_server();
    let w = World {
        env,
        server,
        secret,
    };

    let first = login(&w, "alice", "pw-alice", "203.0.113.9", None);
    expect(&first, "Access-Challenge", "first login from this source");
    let code = oathtool_totp(&w.secret, 6, Algorithm::Sha1, 0);
    expect(
        &login(
            &w,
            "alice",
            &code,
            "203.0.113.9",
            first.state_hex.as_deref(),
        ),
        "Access-Accept",
        "code",
    );

    expect(
        &login(&w, "alice", "pw-alice", "203.0.113.9", None),
        "Access-Accept",
        "remembered source",
    );
    assert_eq!(
        last_audit(&w)["factors"],
        serde_json::json!(["password", "remembered"])
    );
    expect(
        &login(&w, "alice", "pw-alice", "198.51.100.4", None),
        "Access-Challenge",
        "another source",
    );

    w.env
        .cli_ok(&["user", "forget", "--tenant", "acme", "alice"]);
    expect(
        &login(&w, "alice", "pw-alice", "203.0.113.9", None),
        "Access-Challenge",
        "after revocation",
    );
}

#[test]
fn a_user_attribute_set_by_the_admin_decides_the_rule() {
    let w = world();
    let from = "203.0.113.9";
    w.env.add_user("acme", "svc", "pw-svc");
    w.env.enroll_totp("acme", "svc", Some(&w.secret));
    expect(
        &login(&w, "svc", "pw-svc", from, None),
        "Access-Challenge",
        "no attribute: the default asks for a code",
    );
    w.env.cli_ok(&[
        "user", "set-attr", "--tenant", "acme", "svc", "use_mfa", "false",
    ]);
    expect(
        &login(&w, "svc", "pw-svc", from, None),
        "Access-Accept",
        "use_mfa = false: the opt-out rule skips the code",
    );
    let rec = last_audit(&w);
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("rule 'mfa-opt-out'"),
        "{rec}"
    );
    w.env.cli_ok(&[
        "user", "set-attr", "--tenant", "acme", "svc", "use_mfa", "true",
    ]);
    expect(
        &login(&w, "svc", "pw-svc", from, None),
        "Access-Challenge",
        "another value does not match",
    );
    w.env
        .cli_ok(&["user", "set-attr", "--tenant", "acme", "svc", "use_mfa"]);
    let shown = w
        .env
        .cli_json(&["user", "show", "--tenant", "acme", "svc", "--json"]);
    assert!(!shown.to_string().contains("use_mfa"), "{shown}");
    let bad = w.env.cli(&[
        "user", "set-attr", "--tenant", "acme", "svc", "bad key", "x",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("attribute name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
