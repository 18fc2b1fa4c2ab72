//! The admin HTTP API (`/v1/`) of a real `portcullis serve`: tokens made with the CLI, users
//! and factors made over HTTP, logins over radclient with oathtool codes; tenant isolation,
//! roles, revoked and expired tokens, malformed bodies and the OpenAPI document; push enrolment against
//! a strict fake ntfy server.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use portcullis_tests::fakes::ntfy::{Behaviour, FakeNtfy};
use portcullis_tests::http::{post, request};
use portcullis_tests::radclient::radclient_waiting;
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    Server, TestEnv,
};
use serde_json::{json, Value};

const HTTP: &str = "\n[http]\nlisten = \"127.0.0.1:0\"\n";

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

/// One installation with an append-mode client of tenant `acme` and the HTTP listener.
struct Api {
    env: TestEnv,
    server: Server,
    addr: SocketAddr,
}

impl Api {
    fn start(extra: &str) -> Api {
        let env = TestEnv::with_extra_config(
            vec![ClientSpec::new(Mode::Append)],
            &format!("{HTTP}{extra}"),
        );
        let server = env.start_server();
        let addr = server
            .http_addr
            .expect("the server printed its HTTP address");
        Api { env, server, addr }
    }

    /// `portcullis token add ARGS --json`: the token, printed once.
    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "add"];
        all.extend_from_slice(args);
        all.push("--json");
        let v = self.env.cli_json(&all);
        let t = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {v}"));
        assert!(t.starts_with("pca_"), "{t}");
        t.to_string()
    }

    /// A request with `token`; the reply body parsed as JSON (Null when empty).
    fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let text = body.map(|b| b.to_string());
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, reply) = request(
            self.addr,
            method,
            path,
            &headers,
            text.as_deref().map(str::as_bytes),
        );
        let v = if reply.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("{method} {path}: reply is not JSON ({e}): {reply}"))
        };
        (status, v)
    }

    /// A request that must answer `want`.
    #[track_caller]
    fn expect(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (status, v) = self.call(Some(token), method, path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        if status >= 400 {
            assert!(
                v["error"].as_str().is_some_and(|m| !m.is_empty()),
                "{method} {path}: errors say why: {v}"
            );
        }
        v
    }

    fn login(&self, user: &str, password: &str) -> portcullis_tests::RadReply {
        radclient(
            self.server.addr,
            &self.env.client().secret,
            &[
                ("User-Name", user.to_string()),
                ("User-Password", password.to_string()),
            ],
            true,
        )
    }

    fn audit(&self, token: &str, tenant: &str) -> Vec<Value> {
        self.expect(
            token,
            "GET",
            &format!("/v1/tenants/{tenant}/audit?since=1h&limit=100"),
            None,
            200,
        )
        .as_array()
        .cloned()
        .expect("audit is an array")
    }
}

/// The base32 secret in an otpauth URI.
fn secret_of(uri: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap_or_else(|| panic!("no secret in {uri}"))
        .to_string()
}

#[test]
fn a_user_created_and_enrolled_through_the_api_logs_in_over_radius() {
    peers();
    let api = Api::start("");
    let op = api.token(&["--operator", "ops-robot"]);
    let t = api.expect(
        &op,
        "POST",
        "/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    assert_eq!(t["name"], "acme");
    let tenants = api.expect(&op, "GET", "/v1/tenants", None, 200);
    assert!(
        tenants
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "acme"),
        "{tenants}"
    );
    api.expect(
        &op,
        "POST",
        "/v1/tenants",
        Some(json!({"name": "acme"})),
        409,
    );

    let admin = api.token(&["--tenant", "acme", "--role", "admin", "acme-admin"]);
    let u = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "alice", "password": "alice pw", "groups": ["vpn"], "email": "alice@example.com"})),
        201,
    );
    assert_eq!(u["name"], "alice");
    assert!(
        u.get("password_hash").is_none() && !u.to_string().contains("alice pw"),
        "{u}"
    );

    let f = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/alice/factors",
        Some(json!({"kind": "totp"})),
        201,
    );
    assert_eq!(f["state"], "pending", "{f}");
    let uri = f["uri"].as_str().expect("the otpauth URI, once");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = secret_of(uri);
    let id = f["factor_id"].as_str().unwrap();
    // The secret is not shown again.
    let listed = api.expect(
        &admin,
        "GET",
        "/v1/tenants/acme/users/alice/factors",
        None,
        200,
    );
    assert!(!listed.to_string().contains(&secret), "{listed}");

    // A pending factor does not log in; a wrong confirmation code is refused.
    let r = api.login(
        "alice",
        &format!("alice pw{}", oathtool_totp(&secret, 6, Algorithm::Sha1, 0)),
    );
    assert!(r.is_reject(), "pending factor\n{}", r.raw_output);
    let wrong = portcullis_tests::wrong_totp(&secret, 6, Algorithm::Sha1);
    api.expect(
        &admin,
        "POST",
        &format!("/v1/tenants/acme/users/alice/factors/{id}/confirm"),
        Some(json!({"code": wrong})),
        400,
    );
    api.expect(
        &admin,
        "POST",
        &format!("/v1/tenants/acme/users/alice/factors/{id}/confirm"),
        Some(json!({"code": oathtool_totp(&secret, 6, Algorithm::Sha1, 0)})),
        200,
    );
    let r = api.login(
        "alice",
        &format!("alice pw{}", oathtool_totp(&secret, 6, Algorithm::Sha1, 1)),
    );
    assert!(
        r.is_accept(),
        "login with the API-enrolled factor\n{}",
        r.raw_output
    );

    let shown = api.expect(&admin, "GET", "/v1/tenants/acme/users/alice", None, 200);
    assert_eq!(shown["factors"][0]["state"], "confirmed", "{shown}");
    assert_eq!(shown["has_password"], true, "{shown}");

    // Patch: disable refuses logins, enable lets them in again; e-mail cleared, groups set.
    let p = api.expect(
        &admin,
        "PATCH",
        "/v1/tenants/acme/users/alice",
        Some(json!({"disabled": true, "email": null, "groups": ["vpn", "ops"]})),
        200,
    );
    assert_eq!(
        (p["disabled"].clone(), p["email"].clone()),
        (json!(true), Value::Null),
        "{p}"
    );
    assert_eq!(p["groups"], json!(["vpn", "ops"]));
    let r = api.login(
        "alice",
        &format!("alice pw{}", oathtool_totp(&secret, 6, Algorithm::Sha1, -1)),
    );
    assert!(r.is_reject(), "disabled\n{}", r.raw_output);
    api.expect(
        &admin,
        "PATCH",
        "/v1/tenants/acme/users/alice",
        Some(json!({"disabled": false})),
        200,
    );
    api.expect(
        &admin,
        "PATCH",
        "/v1/tenants/acme/users/alice",
        Some(json!({"phone": "12"})),
        400,
    );
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/alice/unlock",
        None,
        200,
    );
    // Nothing on record for this address: unblocked all the same, and said so.
    let r = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/sources/203.0.113.7/unblock",
        None,
        200,
    );
    assert_eq!(r, json!({"ok": true, "had_failures": false}));

    // Recovery codes, returned once, log in once.
    let codes = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/alice/recovery-codes",
        None,
        201,
    );
    let code = codes["codes"][0].as_str().unwrap().to_string();
    assert_eq!(codes["codes"].as_array().unwrap().len(), 10);
    let r = api.login("alice", &format!("alice pw{code}"));
    assert!(r.is_accept(), "recovery code\n{}", r.raw_output);

    // Every change is audited: who (the token's name), what, whom; no secret in it.
    let records = api.audit(&admin, "acme");
    let admin_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["channel"] == "admin-api")
        .collect();
    for action in [
        "user.create",
        "factor.enroll",
        "factor.confirm",
        "user.update",
        "user.unlock",
        "recovery.generate",
    ] {
        assert!(
            admin_records.iter().any(|r| r["mode"] == action
                && r["client"] == "acme-admin"
                && r["username"] == "alice"),
            "no audit record of {action}: {admin_records:?}"
        );
    }
    assert!(records.iter().any(|r| r["channel"] == "admin-api"
        && r["mode"] == "tenant.create"
        && r["client"] == "ops-robot"));
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&secret) && !text.contains("alice pw") && !text.contains(&code));
    assert!(
        records
            .iter()
            .any(|r| r["result"] == "accept" && r["channel"] != "admin-api"),
        "the logins are there too"
    );
    let only = api.expect(
        &admin,
        "GET",
        "/v1/tenants/acme/audit?user=nobody",
        None,
        200,
    );
    assert_eq!(only, json!([]));
    api.expect(
        &admin,
        "GET",
        "/v1/tenants/acme/audit?since=yesterday",
        None,
        400,
    );

    // Delete: gone, and its factor with it.
    api.expect(&admin, "DELETE", "/v1/tenants/acme/users/alice", None, 204);
    api.expect(&admin, "GET", "/v1/tenants/acme/users/alice", None, 404);
}

#[test]
fn a_tenant_token_never_reaches_another_tenant() {
    let api = Api::start("");
    let op = api.token(&["--operator", "ops"]);
    for t in ["acme", "globex"] {
        api.expect(&op, "POST", "/v1/tenants", Some(json!({"name": t})), 201);
    }
    api.expect(
        &op,
        "POST",
        "/v1/tenants/globex/users",
        Some(json!({"name": "bob", "password": "pw"})),
        201,
    );
    let secret = random_base32_secret();
    let f = api.expect(
        &op,
        "POST",
        "/v1/tenants/globex/users/bob/factors",
        Some(json!({"kind": "totp", "secret": secret})),
        201,
    );
    let factor = f["factor_id"].as_str().unwrap().to_string();
    assert_eq!(f["state"], "confirmed");
    let a = api.token(&["--tenant", "acme", "--role", "admin", "acme-admin"]);
    api.expect(
        &a,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "bob"})),
        201,
    );

    // Another tenant answers exactly as a tenant that does not exist.
    let (_, missing) = api.call(Some(&a), "GET", "/v1/tenants/nosuch/users", None);
    let (status, other) = api.call(Some(&a), "GET", "/v1/tenants/globex/users", None);
    assert_eq!(status, 404, "{other}");
    assert_eq!(
        other["error"].as_str().unwrap().replace("globex", "X"),
        missing["error"].as_str().unwrap().replace("nosuch", "X")
    );
    let denied: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/tenants/globex/users/bob".into(), None),
        (
            "POST",
            "/v1/tenants/globex/users".into(),
            Some(json!({"name": "mallory", "password": "x"})),
        ),
        (
            "PATCH",
            "/v1/tenants/globex/users/bob".into(),
            Some(json!({"disabled": true})),
        ),
        ("DELETE", "/v1/tenants/globex/users/bob".into(), None),
        ("GET", "/v1/tenants/globex/users/bob/factors".into(), None),
        (
            "DELETE",
            "/v1/tenants/globex/users/bob/factors".into(),
            None,
        ),
        (
            "DELETE",
            format!("/v1/tenants/globex/users/bob/factors/{factor}"),
            None,
        ),
        (
            "POST",
            "/v1/tenants/globex/users/bob/factors".into(),
            Some(json!({"kind": "totp"})),
        ),
        (
            "POST",
            "/v1/tenants/globex/users/bob/bypass-codes".into(),
            None,
        ),
        (
            "POST",
            "/v1/tenants/globex/users/bob/recovery-codes".into(),
            None,
        ),
        ("POST", "/v1/tenants/globex/users/bob/unlock".into(), None),
        (
            "POST",
            "/v1/tenants/globex/sources/203.0.113.7/unblock".into(),
            None,
        ),
        ("GET", "/v1/tenants/globex/audit".into(), None),
        ("GET", "/v1/tenants/globex/policies".into(), None),
        ("GET", "/v1/tenants/globex/clients".into(), None),
    ];
    for (method, path, body) in denied {
        api.expect(&a, method, &path, body, 404);
    }
    // acme's own bob is a different user; acme's token cannot remove globex's factor through him.
    api.expect(
        &a,
        "DELETE",
        &format!("/v1/tenants/acme/users/bob/factors/{factor}"),
        None,
        404,
    );
    // Tenant management is the operator's.
    api.expect(&a, "GET", "/v1/tenants", None, 403);
    api.expect(
        &a,
        "POST",
        "/v1/tenants",
        Some(json!({"name": "evil"})),
        403,
    );

    // Nothing of globex changed.
    let users = api.expect(&op, "GET", "/v1/tenants/globex/users", None, 200);
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    assert_eq!(users[0]["disabled"], false);
    let factors = api.expect(
        &op,
        "GET",
        "/v1/tenants/globex/users/bob/factors",
        None,
        200,
    );
    assert_eq!(factors.as_array().unwrap().len(), 1, "{factors}");
    let mine = api.expect(&a, "GET", "/v1/tenants/acme/users", None, 200);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    // The probing shows in the log (once a minute, with the count), naming the token.
    let refused = "admin API request refused: a tenant not its own";
    let log = api.server.wait_for_stderr(refused, Duration::from_secs(5));
    assert!(
        log.lines()
            .any(|l| l.contains(refused) && l.contains("name=acme-admin")),
        "{log}"
    );
    let (status, _) = api.call(Some("pca_guessed"), "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401);
    let unknown = "admin API request refused: no token, or an unknown or revoked one";
    let log = api.server.wait_for_stderr(unknown, Duration::from_secs(5));
    assert!(log.contains(unknown), "{log}");
}

#[test]
fn roles_are_enforced_and_helpdesk_can_get_a_user_back_in() {
    peers();
    let api = Api::start("");
    api.env.add_tenant("acme");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "boss"]);
    let desk = api.token(&["--tenant", "acme", "--role", "helpdesk", "desk"]);
    let auditor = api.token(&["--tenant", "acme", "--role", "auditor", "auditor"]);
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "alice", "password": "alice pw"})),
        201,
    );
    let secret = random_base32_secret();
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/alice/factors",
        Some(json!({"kind": "totp", "secret": secret})),
        201,
    );

    // Helpdesk: no audit, no user changes, no enrolment or recovery codes.
    api.expect(&desk, "GET", "/v1/tenants/acme/audit", None, 403);
    api.expect(
        &desk,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "x"})),
        403,
    );
    api.expect(
        &desk,
        "PATCH",
        "/v1/tenants/acme/users/alice",
        Some(json!({"disabled": true})),
        403,
    );
    api.expect(&desk, "DELETE", "/v1/tenants/acme/users/alice", None, 403);
    api.expect(
        &desk,
        "POST",
        "/v1/tenants/acme/users/alice/recovery-codes",
        None,
        403,
    );
    api.expect(
        &desk,
        "POST",
        "/v1/tenants/acme/users/alice/factors",
        Some(json!({"kind": "totp"})),
        403,
    );
    api.expect(&desk, "GET", "/v1/tenants/acme/policies", None, 403);
    api.expect(&desk, "GET", "/v1/tenants", None, 403);
    // Auditor: reads the audit log, nothing else.
    api.expect(
        &auditor,
        "DELETE",
        "/v1/tenants/acme/users/alice/factors",
        None,
        403,
    );
    api.expect(
        &auditor,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "x"})),
        403,
    );
    api.expect(&auditor, "GET", "/v1/tenants/acme/users", None, 403);
    api.expect(
        &auditor,
        "POST",
        "/v1/tenants/acme/users/alice/bypass-codes",
        None,
        403,
    );
    api.audit(&auditor, "acme");
    // Nothing above changed alice.
    let factors = api.expect(
        &admin,
        "GET",
        "/v1/tenants/acme/users/alice/factors",
        None,
        200,
    );
    assert_eq!(factors.as_array().unwrap().len(), 1);

    // Helpdesk: alice lost her phone. Reset her factors, give her a bypass code.
    let users = api.expect(&desk, "GET", "/v1/tenants/acme/users", None, 200);
    assert_eq!(users[0]["name"], "alice");
    api.expect(&desk, "GET", "/v1/tenants/acme/users/alice", None, 200);
    let reset = api.expect(
        &desk,
        "DELETE",
        "/v1/tenants/acme/users/alice/factors",
        None,
        200,
    );
    assert_eq!(reset["removed_factors"], 1, "{reset}");
    let after = api.expect(
        &desk,
        "GET",
        "/v1/tenants/acme/users/alice/factors",
        None,
        200,
    );
    assert_eq!(after, json!([]));
    let r = api.login(
        "alice",
        &format!("alice pw{}", oathtool_totp(&secret, 6, Algorithm::Sha1, 0)),
    );
    assert!(
        r.is_reject(),
        "the old device no longer works\n{}",
        r.raw_output
    );
    api.expect(
        &desk,
        "POST",
        "/v1/tenants/acme/users/alice/bypass-codes",
        Some(json!({"uses": 0})),
        400,
    );
    let b = api.expect(
        &desk,
        "POST",
        "/v1/tenants/acme/users/alice/bypass-codes",
        Some(json!({"uses": 1, "ttl": "10m"})),
        201,
    );
    let code = b["code"]
        .as_str()
        .expect("the bypass code, once")
        .to_string();
    let r = api.login("alice", &format!("alice pw{code}"));
    assert!(
        r.is_accept(),
        "bypass code from the helpdesk\n{}",
        r.raw_output
    );
    let r = api.login("alice", &format!("alice pw{code}"));
    assert!(r.is_reject(), "one use only\n{}", r.raw_output);

    let records = api.audit(&auditor, "acme");
    assert!(
        records.iter().any(|r| r["mode"] == "factor.reset"
            && r["client"] == "desk"
            && r["username"] == "alice"),
        "{records:?}"
    );
    let issued = records
        .iter()
        .find(|r| r["mode"] == "bypass.issue" && r["client"] == "desk")
        .unwrap_or_else(|| panic!("{records:?}"));
    // Its expiry as a UTC time, as the CLI prints it, not a Unix timestamp.
    let reason = issued["reason"].as_str().unwrap_or_default();
    let until = reason
        .split("valid until ")
        .nth(1)
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        until.len() == 20 && until.ends_with('Z') && until.as_bytes()[10] == b'T',
        "{reason}"
    );
    assert!(!serde_json::to_string(&records).unwrap().contains(&code));
}

#[test]
fn a_revoked_token_is_refused_and_no_token_is_stored_in_clear() {
    let api = Api::start("");
    api.env.add_tenant("acme");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "boss"]);
    let op = api.token(&["--operator", "root"]);
    api.expect(&admin, "GET", "/v1/tenants/acme/users", None, 200);
    let (status, v) = api.call(None, "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    let (status, _) = api.call(
        Some("pca_aaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        "GET",
        "/v1/tenants/acme/users",
        None,
    );
    assert_eq!(status, 401);
    let (status, _) = api.call(Some("garbage"), "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401);

    let list = api
        .env
        .cli_json(&["token", "list", "--tenant", "acme", "--json"]);
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["name"], "boss");
    assert!(
        entry["last_used_at"].is_number(),
        "last use recorded: {entry}"
    );
    let id = entry["id"].as_str().unwrap();
    assert!(admin.contains(id), "the token names its id");
    assert!(!list.to_string().contains(&admin));
    api.env.cli_ok(&["token", "revoke", id]);
    let (status, v) = api.call(Some(&admin), "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401, "revoked: {v}");
    api.expect(&op, "GET", "/v1/tenants/acme/users", None, 200);
    let again = api.env.cli(&["token", "revoke", id]);
    assert!(!again.status.success(), "revoking twice says so");
    // Token changes are in the tenant's audit log.
    let records = api.audit(&op, "acme");
    assert!(
        records.iter().any(|r| r["mode"] == "token.add"
            && r["channel"] == "cli"
            && r["reason"].as_str().unwrap().contains("boss")),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["mode"] == "token.revoke" && r["reason"].as_str().unwrap().contains(id)),
        "{records:?}"
    );

    // Neither token, nor its secret part, is anywhere in the database files.
    let mut db = Vec::new();
    for entry in std::fs::read_dir(api.env.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("portcullis.db")
        {
            db.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!db.is_empty());
    let db = String::from_utf8_lossy(&db);
    for t in [&admin, &op] {
        let secret = t.rsplit('_').next().unwrap();
        assert_eq!(secret.len(), 32);
        assert!(
            !db.contains(secret),
            "a token secret is in the database in clear"
        );
    }
}

/// A token made by the core's `Admin` with a clock standing `ago` seconds back and a
/// lifetime of `lifetime` seconds, in the store of `api` (the daemon's own clock is the
/// system's: with `ago > lifetime` the token is past its expiry at once, with no sleeping).
fn token_made_earlier(api: &Api, name: &str, ago: i64, lifetime: u64) -> String {
    use portcullis_core::clock::{Clock, ManualClock, SystemClock};
    use std::sync::Arc;
    let dir = api.env.dir();
    let store = portcullis_core::store::SqliteStore::open(&dir.join("portcullis.db"))
        .expect("open the daemon's store");
    let key = portcullis_core::secrets::MasterKey::load_or_create(&dir.join("master.key"))
        .expect("the daemon's master key");
    let hasher =
        portcullis_core::password::PasswordHasher::new(&portcullis_core::config::PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..Default::default()
        })
        .expect("a password hasher");
    let admin = portcullis_core::admin::Admin::new(
        Arc::new(store),
        Arc::new(ManualClock::new(SystemClock.now() - ago)),
        Arc::new(key),
        hasher,
        "Test".into(),
        1,
    );
    admin
        .add_token(
            Some("acme"),
            portcullis_core::model::AdminRole::Admin,
            name,
            Some(lifetime),
        )
        .expect("add the token")
        .token
}

#[test]
fn an_expired_token_is_refused_like_a_revoked_one_and_the_log_says_it_expired() {
    let api = Api::start("");
    api.env.add_tenant("acme");
    let live = api.token(&[
        "--tenant",
        "acme",
        "--role",
        "admin",
        "--expires",
        "90d",
        "live",
    ]);
    // Two hours ago, for an hour: expired an hour ago.
    let stale = token_made_earlier(&api, "stale", 7200, 3600);
    let revoked = api.token(&["--tenant", "acme", "--role", "admin", "gone"]);
    let gone_id = revoked.split('_').nth(1).unwrap().to_string();
    api.env.cli_ok(&["token", "revoke", &gone_id]);

    api.expect(&live, "GET", "/v1/tenants/acme/users", None, 200);
    let (status, expired) = api.call(Some(&stale), "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401, "expired: {expired}");
    let (status, was_revoked) = api.call(Some(&revoked), "GET", "/v1/tenants/acme/users", None);
    assert_eq!(status, 401, "revoked: {was_revoked}");
    assert_eq!(
        expired, was_revoked,
        "an expired token is answered exactly as a revoked one"
    );
    assert!(!expired.to_string().contains("expire"), "{expired}");
    // Refused for everything, also what its role would allow elsewhere.
    let (status, _) = api.call(Some(&stale), "GET", "/v1/tenants/acme/audit", None);
    assert_eq!(status, 401);

    // The daemon's log says it expired and names it (never with its secret).
    let said = "admin API request refused: the token expired";
    let log = api.server.wait_for_stderr(said, Duration::from_secs(5));
    let line = log
        .lines()
        .find(|l| l.contains(said))
        .unwrap_or_else(|| panic!("no warning that the token expired: {log}"));
    let stale_id = stale.split('_').nth(1).unwrap();
    assert!(
        line.contains("WARN") && line.contains(stale_id) && line.contains("name=stale"),
        "{line}"
    );
    assert!(
        line.contains("portcullis token add"),
        "says what to do: {line}"
    );
    let secret = |t: &str| t.rsplit('_').next().unwrap().to_string();
    assert!(
        !log.contains(&secret(&stale)) && !log.contains(&secret(&live)),
        "no token secret in the log"
    );

    // `token list` shows each expiry, and "expired" for the stale one.
    let list = api
        .env
        .cli_json(&["token", "list", "--tenant", "acme", "--json"]);
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {list}"))
    };
    let now = portcullis_core::clock::Clock::now(&portcullis_core::clock::SystemClock);
    let live_until = by_name("live")["expires_at"].as_i64().expect("an expiry");
    assert!(
        (live_until - (now + 90 * 86400)).abs() < 120,
        "90 days from now: {live_until}"
    );
    assert!(by_name("gone")["expires_at"].is_null());
    assert!(
        by_name("stale")["last_used_at"].is_null(),
        "an expired token's use is not recorded"
    );
    assert_eq!(by_name("stale")["state"], "expired", "{list}");
    assert_eq!(by_name("live")["state"], "active", "{list}");
    let out = api.env.cli_ok(&["token", "list", "--tenant", "acme"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |n: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(n))
            .unwrap_or_else(|| panic!("no row of {n}: {text}"))
            .to_string()
    };
    assert!(text.contains("EXPIRES"), "{text}");
    assert!(row("stale").trim_end().ends_with("expired"), "{text}");
    assert!(row("live").trim_end().ends_with("active"), "{text}");
    assert!(row("gone").trim_end().ends_with("revoked"), "{text}");
    assert!(row("gone").contains("never"), "no expiry: {text}");

    // Lifetimes the CLI refuses, with a hint; no token is made.
    for bad in ["0s", "3651d", "soon"] {
        let out = api.env.cli(&[
            "token",
            "add",
            "--tenant",
            "acme",
            "--role",
            "admin",
            "--expires",
            bad,
            "x",
        ]);
        assert!(!out.status.success(), "--expires {bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "--expires {bad}: says why");
    }
    let out = api
        .env
        .cli(&["token", "add", "--operator", "--expires", "0s", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3650d"),
        "the hint names the range: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Parts of a second are not cut off silently (1s 500ms is not a 1 s token).
    for fraction in ["500ms", "1s 500ms"] {
        let out = api
            .env
            .cli(&["token", "add", "--operator", "--expires", fraction, "x"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("whole seconds"),
            "--expires {fraction}: {err}"
        );
    }
    let count = api
        .env
        .cli_json(&["token", "list", "--json"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 3);
    // The live token still works after all this.
    api.expect(&live, "GET", "/v1/tenants/acme/users", None, 200);
}

#[test]
fn malformed_bodies_get_400_with_a_message_and_the_server_keeps_serving() {
    let api = Api::start("");
    api.env.add_tenant("acme");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "boss"]);
    let auth = format!("Bearer {admin}");
    let send = |body: &[u8], content_type: &str| {
        request(
            api.addr,
            "POST",
            "/v1/tenants/acme/users",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            Some(body),
        )
    };
    for (body, hint) in [
        (&b"{\"name\": "[..], "invalid JSON"),
        (b"{\"name\": 5}", "invalid type"),
        (b"{\"name\": \"x\", \"admin\": true}", "unknown field"),
        (b"{}", "missing field"),
        (b"\xff\xfe", "invalid JSON"),
    ] {
        let (status, reply) = send(body, "application/json");
        assert_eq!(status, 400, "{reply}");
        let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
        assert!(v["error"].as_str().unwrap().contains(hint), "{hint}: {v}");
    }
    let (status, reply) = send(b"name=x", "application/x-www-form-urlencoded");
    assert_eq!(status, 415, "{reply}");
    assert!(reply.contains("application/json"), "{reply}");
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(100_000));
    let (status, reply) = send(big.as_bytes(), "application/json");
    assert_eq!(status, 413, "{reply}");
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "bad name!"})),
        400,
    );
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "ok", "email": "nope"})),
        400,
    );
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/ok/factors",
        Some(json!({"kind": "carrier-pigeon"})),
        400,
    );
    // Still serving, RADIUS too.
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "ok"})),
        201,
    );
    api.expect(&admin, "GET", "/v1/tenants/acme/users/ok", None, 200);
    api.expect(&admin, "GET", "/v1/tenants/acme/users/nobody", None, 404);
    assert!(api.server.stdout().contains("radius: listening"));
}

#[test]
fn policies_clients_and_the_openapi_document_are_served() {
    let api = Api::start(
        "\n[[tenants.acme.rules]]\nname = \"office-lan\"\naction = \"skip_mfa\"\nsources = [\"10.0.0.0/8\"]\ngroups = [\"staff\"]\n",
    );
    api.env.add_tenant("acme");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "boss"]);
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users",
        Some(json!({"name": "sam", "groups": ["staff"]})),
        201,
    );
    let p = api.expect(&admin, "GET", "/v1/tenants/acme/policies", None, 200);
    assert_eq!(p["rules"][0]["name"], "office-lan", "{p}");
    let inside = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/policies/test",
        Some(json!({"user": "sam", "client": "vpn", "source": "10.1.2.3"})),
        200,
    );
    assert_eq!(inside["rule"], "office-lan", "{inside}");
    assert_eq!(inside["action"], "skip_mfa", "{inside}");
    let outside = api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/policies/test",
        Some(json!({"user": "sam", "client": "vpn", "source": "192.0.2.1"})),
        200,
    );
    assert_eq!(outside["action"], "require_mfa", "{outside}");
    assert!(!outside["explanation"].as_array().unwrap().is_empty());
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/policies/test",
        Some(json!({"user": "nobody", "client": "vpn"})),
        404,
    );

    let clients = api.expect(&admin, "GET", "/v1/tenants/acme/clients", None, 200);
    assert_eq!(clients[0]["name"], "vpn", "{clients}");
    assert_eq!(clients[0]["mode"], "append");
    assert!(
        !clients.to_string().contains(&api.env.client().secret),
        "no secrets: {clients}"
    );

    let (status, doc) = api.call(None, "GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/tenants",
        "/v1/tenants/{tenant}/users/{user}/factors",
        "/v1/tenants/{tenant}/audit",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert!(paths["/v1/tenants/{tenant}/users/{user}"]["patch"].is_object());
}

#[test]
fn pam_hosts_are_managed_through_the_api_per_tenant_and_role() {
    let api = Api::start("");
    let op = api.token(&["--operator", "ops"]);
    for t in ["acme", "globex"] {
        api.expect(&op, "POST", "/v1/tenants", Some(json!({"name": t})), 201);
    }
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "acme-admin"]);
    let helpdesk = api.token(&["--tenant", "acme", "--role", "helpdesk", "acme-hd"]);
    let other = api.token(&["--tenant", "globex", "--role", "admin", "globex-admin"]);
    let path = "/v1/tenants/acme/pam-hosts";
    let created = api.expect(&admin, "POST", path, Some(json!({"name": "web-a"})), 201);
    let token = created["token"]
        .as_str()
        .expect("the token, once")
        .to_string();
    assert!(token.starts_with("pch_"), "{created}");
    assert_eq!(created["host"]["name"], "web-a");
    // The CLI sees the same host; no listing shows the token.
    let cli = api
        .env
        .cli_json(&["host", "list", "--tenant", "acme", "--json"]);
    assert!(cli.to_string().contains("web-a"), "{cli}");
    let listed = api.expect(&admin, "GET", path, None, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(!listed.to_string().contains(&token), "{listed}");
    // A second registration of a live host is a conflict; bad names are refused.
    api.expect(&admin, "POST", path, Some(json!({"name": "web-a"})), 409);
    api.expect(&admin, "POST", path, Some(json!({"name": "bad name"})), 400);
    // Help desk may not; another tenant's admin sees nothing here.
    api.expect(&helpdesk, "GET", path, None, 403);
    api.expect(&other, "GET", path, None, 404);
    api.expect(
        &other,
        "DELETE",
        "/v1/tenants/acme/pam-hosts/web-a",
        None,
        404,
    );
    // Removed: revoked at once, and the change is audited.
    api.expect(
        &admin,
        "DELETE",
        "/v1/tenants/acme/pam-hosts/web-a",
        None,
        204,
    );
    let listed = api.expect(&admin, "GET", path, None, 200);
    assert_eq!(listed[0]["revoked"], true, "{listed}");
    api.expect(
        &admin,
        "DELETE",
        "/v1/tenants/acme/pam-hosts/web-a",
        None,
        404,
    );
    let audit = api.expect(&admin, "GET", "/v1/tenants/acme/audit", None, 200);
    assert!(audit.to_string().contains("host.remove"), "{audit}");
}

/// (push id, token) from a login notification: its click URL is the approval page.
fn push_link(msg: &Value) -> (String, String) {
    let click = msg["click"].as_str().expect("click URL");
    let rest = click
        .strip_prefix(&format!("{PUBLIC}/v1/push/"))
        .unwrap_or_else(|| panic!("unexpected click URL {click}"));
    let (id, token) = rest.split_once("?t=").expect("token in the link");
    (id.to_string(), token.to_string())
}

const PUBLIC: &str = "https://mfa.example.test";

#[test]
fn push_is_enrolled_over_the_api_confirmed_with_the_pushed_code_and_approves_a_login() {
    peers();
    let ca_dir = tempfile::tempdir().unwrap();
    let ntfy = FakeNtfy::start(ca_dir.path());
    // acme pushes through the fake ntfy; beta has no push channel.
    let api = Api::start(&format!(
        "public_url = \"{PUBLIC}\"\n{}",
        ntfy.config("acme", "")
    ));
    api.env.add_tenant("acme");
    api.env.add_tenant("beta");
    api.env.add_user("acme", "pat", "pw");
    api.env.add_user("beta", "bea", "pw");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "acme-admin"]);
    let factors = "/v1/tenants/acme/users/pat/factors";

    // Fields of other kinds are refused, and nothing is pushed for them.
    for body in [
        json!({"kind": "push", "digits": 8}),
        json!({"kind": "push", "secret": "JBSWY3DPEHPK3PXP"}),
        json!({"kind": "totp", "webhook": "https://hooks.example.test/x"}),
    ] {
        api.expect(&admin, "POST", factors, Some(body), 400);
    }
    assert!(ntfy.messages().is_empty());

    let f = api.expect(&admin, "POST", factors, Some(json!({"kind": "push"})), 201);
    assert_eq!(
        (f["kind"].as_str(), f["state"].as_str()),
        (Some("push"), Some("pending")),
        "{f}"
    );
    assert_eq!(f["code_sent_via"], "ntfy", "{f}");
    let id = f["factor_id"].as_str().expect("factor id").to_string();
    let url = f["subscribe_url"]
        .as_str()
        .expect("the topic to subscribe to");
    let msgs = ntfy.wait_for(1, Duration::from_secs(5));
    assert_eq!(
        msgs.len(),
        1,
        "the confirmation code is pushed; refusals: {:?}",
        ntfy.refusals()
    );
    assert_eq!(
        format!("{}/{}", ntfy.base_url(), msgs[0]["topic"].as_str().unwrap()),
        url,
        "the code goes to the topic the user subscribes to"
    );
    let qr = f["subscribe_qr_svg"]
        .as_str()
        .expect("a QR code of the topic");
    assert!(qr.starts_with("<svg") && !qr.contains("script"), "{qr}");
    let code = ntfy.last_code();
    assert!(
        !f.to_string().contains(&code),
        "the code only goes to the phone: {f}"
    );

    // Pending: push is not offered yet. A wrong code is refused, the pushed one confirms.
    let r = api.login("pat", "pw,push");
    assert!(r.is_reject(), "pending push factor\n{}", r.raw_output);
    assert_eq!(
        ntfy.messages().len(),
        1,
        "no login push for a pending factor"
    );
    // A tenant's admin may not make the daemon post to its own host or a private network
    // (the cloud metadata address, say); nothing is made.
    let before = api.expect(&admin, "GET", factors, None, 200);
    for internal in [
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1:8443/x",
        "https://[fd00::5]/x",
        // Read as the HTTP client reads it: the host is 127.0.0.1, not what follows '@'.
        "https://127.0.0.1\\@hooks.example.test/x",
        "https://0x7f.1/x",
    ] {
        let e = api.expect(
            &admin,
            "POST",
            factors,
            Some(json!({"kind": "push", "webhook": internal})),
            400,
        );
        assert!(e["error"].as_str().unwrap().contains("private"), "{e}");
    }
    // Nor by a name that resolves there: this machine's own name (Debian's /etc/hosts
    // gives it 127.0.1.1, a container's its private address), or one that does not resolve.
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let own = own.trim();
    let resolved: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&(own, 443))
        .unwrap_or_else(|e| panic!("this machine's name {own} does not resolve: {e}"))
        .collect();
    assert!(
        resolved.iter().all(|a| a.ip().is_loopback()
            || match a.ip() {
                std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
            }),
        "the test needs {own} to resolve to this host or a private address: {resolved:?}"
    );
    let e = api.expect(
        &admin,
        "POST",
        factors,
        Some(json!({"kind": "push", "webhook": format!("https://{own}:8443/hook")})),
        400,
    );
    let m = e["error"].as_str().unwrap();
    assert!(
        m.contains("private") && m.contains(&format!("{own} resolves to")),
        "{m}"
    );
    let e = api.expect(
        &admin,
        "POST",
        factors,
        Some(json!({"kind": "push", "webhook": "https://no-such-host.invalid/hook"})),
        400,
    );
    let m = e["error"].as_str().unwrap();
    assert!(m.contains("no-such-host.invalid"), "{m}");
    assert_eq!(api.expect(&admin, "GET", factors, None, 200), before);
    let confirm = format!("{factors}/{id}/confirm");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    api.expect(&admin, "POST", &confirm, Some(json!({"code": wrong})), 400);
    let c = api.expect(&admin, "POST", &confirm, Some(json!({"code": code})), 200);
    assert_eq!(c["state"], "confirmed", "{c}");

    // `password,push`: the phone gets the login, approves, the login is accepted.
    let (addr, secret) = (api.server.addr, api.env.client().secret.clone());
    let login = thread::spawn(move || {
        radclient_waiting(
            addr,
            &secret,
            &[
                ("User-Name", "pat".to_string()),
                ("User-Password", "pw,push".to_string()),
            ],
            25,
        )
    });
    let msgs = ntfy.wait_for(2, Duration::from_secs(10));
    assert_eq!(
        msgs.len(),
        2,
        "a login push; refusals: {:?}",
        ntfy.refusals()
    );
    assert_eq!(msgs[1]["topic"], msgs[0]["topic"]);
    let (push, token) = push_link(&msgs[1]);
    let (status, body) = post(
        api.addr,
        &format!("/v1/push/{push}/approve"),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let reply = login.join().unwrap();
    assert!(reply.is_accept(), "{}", reply.raw_output);

    // Audited like the other enrolments, without the topic or the code.
    let records = api.audit(&admin, "acme");
    for action in ["factor.enroll", "factor.confirm"] {
        assert!(
            records.iter().any(|r| r["channel"] == "admin-api"
                && r["mode"] == action
                && r["client"] == "acme-admin"
                && r["username"] == "pat"),
            "no audit record of {action}: {records:?}"
        );
    }
    let text = serde_json::to_string(&records).unwrap();
    let topic = msgs[0]["topic"].as_str().unwrap();
    assert!(!text.contains(topic) && !text.contains(&code), "{text}");

    // A tenant without a push channel: the error says what to configure; no factor is made.
    let op = api.token(&["--operator", "ops"]);
    let beta = "/v1/tenants/beta/users/bea/factors";
    for body in [
        json!({"kind": "push"}),
        json!({"kind": "push", "webhook": "https://hooks.example.test/mfa"}),
    ] {
        let e = api.expect(&op, "POST", beta, Some(body), 409);
        let m = e["error"].as_str().unwrap();
        assert!(m.contains("[tenants.beta.push]"), "{m}");
    }
    assert_eq!(api.expect(&op, "GET", beta, None, 200), json!([]));
    assert_eq!(ntfy.messages().len(), 2, "nothing pushed for beta");
    // An unknown user is still a 404, whatever the configuration.
    api.expect(
        &op,
        "POST",
        "/v1/tenants/beta/users/nobody/factors",
        Some(json!({"kind": "push"})),
        404,
    );

    // The push server refuses: 502, and the factor is not kept.
    ntfy.set_behaviour(Behaviour::ServerError);
    let e = api.expect(&admin, "POST", factors, Some(json!({"kind": "push"})), 502);
    assert!(e["error"].as_str().unwrap().contains("not kept"), "{e}");
    let listed = api.expect(&admin, "GET", factors, None, 200);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "only the confirmed one: {listed}"
    );
}

#[test]
fn sms_is_enrolled_over_the_api_and_confirmed_with_the_sent_code() {
    peers();
    let ca_dir = tempfile::tempdir().unwrap();
    let twilio = portcullis_tests::fakes::twilio::FakeTwilio::start(ca_dir.path());
    // acme sends SMS through the fake Twilio; beta sends nothing.
    let api = Api::start(&format!(
        "[tenants.acme.sms]\nprovider = \"twilio\"\naccount_sid = \"{}\"\nauth_token = \"{}\"\nfrom = \"+15559990000\"\nbase_url = \"{}\"\nca_file = \"{}\"\ntimeout = \"3s\"\nresend_after = \"2s\"\n",
        twilio.account_sid,
        twilio.auth_token,
        twilio.base_url(),
        twilio.ca_file.display()
    ));
    api.env.add_tenant("acme");
    api.env.add_tenant("beta");
    api.env.add_user("acme", "sam", "pw");
    api.env.add_user("beta", "bea", "pw");
    let admin = api.token(&["--tenant", "acme", "--role", "admin", "acme-admin"]);
    let factors = "/v1/tenants/acme/users/sam/factors";

    // Fields of other kinds, and a malformed number, are refused; nothing is sent.
    for body in [
        json!({"kind": "sms", "email": "sam@example.test"}),
        json!({"kind": "sms", "digits": 8}),
        json!({"kind": "totp", "phone": "+15550001234"}),
        json!({"kind": "sms", "phone": "not a number"}),
        json!({"kind": "sms"}),
    ] {
        api.expect(&admin, "POST", factors, Some(body), 400);
    }
    assert!(twilio.messages().is_empty());

    let f = api.expect(
        &admin,
        "POST",
        factors,
        Some(json!({"kind": "sms", "phone": "+15550001234"})),
        201,
    );
    assert_eq!(
        (f["kind"].as_str(), f["state"].as_str()),
        (Some("sms"), Some("pending")),
        "{f}"
    );
    let to = f["code_sent_to"].as_str().expect("where the code went");
    assert!(
        to.ends_with("34") && !to.contains("5550001234"),
        "masked: {f}"
    );
    assert_eq!(twilio.messages().len(), 1);
    assert_eq!(twilio.messages()[0].to, "+15550001234");
    let first = twilio.last_code();
    assert!(
        !f.to_string().contains(&first),
        "the code only goes to the phone"
    );
    let id = f["factor_id"].as_str().unwrap().to_string();

    // Again at once: too soon (the tenant's resend delay); after it, a new code.
    let again = format!("{factors}/{id}/send-code");
    api.expect(&admin, "POST", &again, None, 429);
    thread::sleep(Duration::from_millis(2100));
    let r = api.expect(&admin, "POST", &again, None, 200);
    assert_eq!(r["code_sent_to"], to, "{r}");
    assert_eq!(twilio.messages().len(), 2);
    let code = twilio.last_code();
    let c = api.expect(
        &admin,
        "POST",
        &format!("{factors}/{id}/confirm"),
        Some(json!({"code": code})),
        200,
    );
    assert_eq!(c["state"], "confirmed", "{c}");
    // A confirmed factor gets no more confirmation codes.
    api.expect(&admin, "POST", &again, None, 409);

    // The enrolment and the resend are in the audit log, without the codes.
    let audit = api.audit(&admin, "acme");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        text.contains("factor.enroll") && text.contains("factor.send_code"),
        "{text}"
    );
    assert!(!text.contains(&code) && !text.contains(&first), "{text}");

    // A tenant without an SMS sender: 409 naming the setting, and no factor is kept.
    let op = api.token(&["--operator", "ops"]);
    let r = api.expect(
        &op,
        "POST",
        "/v1/tenants/beta/users/bea/factors",
        Some(json!({"kind": "sms", "phone": "+15550009999"})),
        409,
    );
    assert!(r.to_string().contains("[tenants.beta.sms]"), "{r}");
    let left = api.expect(&op, "GET", "/v1/tenants/beta/users/bea/factors", None, 200);
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
    assert_eq!(twilio.messages().len(), 2, "nothing sent for beta");

    // The provider refuses: 502 and no factor kept.
    twilio.set_behaviour(portcullis_tests::fakes::twilio::Behaviour::ServerError);
    thread::sleep(Duration::from_millis(2100));
    api.expect(
        &admin,
        "POST",
        factors,
        Some(json!({"kind": "email", "email": "sam@example.test"})),
        409,
    );
    let before = api.expect(&admin, "GET", factors, None, 200);
    api.env.add_user("acme", "sue", "pw");
    api.expect(
        &admin,
        "POST",
        "/v1/tenants/acme/users/sue/factors",
        Some(json!({"kind": "sms", "phone": "+15550002222"})),
        502,
    );
    let sue = api.expect(
        &admin,
        "GET",
        "/v1/tenants/acme/users/sue/factors",
        None,
        200,
    );
    assert_eq!(sue.as_array().map(Vec::len), Some(0), "{sue}");
    assert_eq!(api.expect(&admin, "GET", factors, None, 200), before);
}
