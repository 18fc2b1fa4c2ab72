//! Push through a webhook end to end: `portcullis serve` posts to a strict local fake of a
//! webhook receiver (HTTPS with a CA made for the test, the `X-Portcullis-Signature` HMAC
//! checked on every request); the test answers as the phone would, on the daemon's HTTP
//! listener. Also what a webhook may not do: redirect a post elsewhere, and (for one that a
//! tenant's token named) have its name point inside the daemon's network after the
//! enrolment's check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use portcullis_tests::fakes::webhook::{Behaviour, FakeWebhook, Received};
use portcullis_tests::http::{post, request};
use portcullis_tests::process::run_through;
use portcullis_tests::radclient::radclient_waiting;
use portcullis_tests::{require_root, require_tool, ClientSpec, Mode, RadReply, Server, TestEnv};
use serde_json::{json, Value};

const PUBLIC: &str = "https://mfa.example.test";
const SECRET: &str = "webhook-signing-key-for-the-test-0123";

/// `[http]` with a public URL and `[tenants.acme.push]` that signs webhooks and trusts the
/// fake's CA; tenant acme with pat (password "pw").
fn env_with(client: ClientSpec, ca_file: &Path) -> TestEnv {
    require_tool("radclient", "freeradius-utils");
    let extra = format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\"\n\n[tenants.acme.push]\nwebhook_secret = \"{SECRET}\"\nca_file = \"{}\"\ntimeout = \"2s\"\nnumber_matching = false\n",
        ca_file.display()
    );
    let env = TestEnv::with_extra_config(vec![client], &extra);
    env.add_tenant("acme");
    env.add_user("acme", "pat", "pw");
    env
}

fn auto_client() -> ClientSpec {
    let mut c = ClientSpec::new(Mode::Auto);
    c.extra = "max_wait = \"20s\"\n".into();
    c
}

/// A login the server holds for a push, from a thread of its own.
fn held_login(
    server: &Server,
    env: &TestEnv,
    user: &str,
    password: &str,
) -> thread::JoinHandle<RadReply> {
    let (addr, secret) = (server.addr, env.client().secret.clone());
    let attrs = [
        ("User-Name", user.to_string()),
        ("User-Password", password.to_string()),
    ];
    thread::spawn(move || radclient_waiting(addr, &secret, &attrs, 25))
}

/// The `n`th request the fake accepted (counting from 1).
fn nth(hook: &FakeWebhook, n: usize) -> Received {
    let got = hook.wait_for(n, Duration::from_secs(10));
    assert!(
        got.len() >= n,
        "{} webhook posts arrived, not {n}; refused: {:?}",
        got.len(),
        hook.refusals()
    );
    got[n - 1].clone()
}

/// The phone's answer to a webhook notice: POST its `approve_url` (on the daemon's listener)
/// with the notice's token.
fn approve(http: SocketAddr, notice: &Value) -> (u16, String) {
    let url = notice["approve_url"].as_str().expect("approve_url");
    let path = url
        .strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("approve_url {url} is not under {PUBLIC}"));
    let bearer = format!("Bearer {}", notice["token"].as_str().expect("token"));
    post(http, path, &[("Authorization", &bearer)], b"")
}

#[test]
fn an_operators_webhook_gets_the_signed_code_and_the_login_notice() {
    let dir = tempfile::tempdir().unwrap();
    let hook = FakeWebhook::start(dir.path(), Some(SECRET));
    let env = env_with(auto_client(), &hook.ca_file);
    // The operator's CLI may name a webhook on this host.
    let url = hook.url("/mfa/pat");
    let enrolled = env.cli_json(&[
        "factor",
        "enroll",
        "push",
        "--tenant",
        "acme",
        "pat",
        "--webhook",
        &url,
        "--json",
    ]);
    let id = enrolled["factor_id"]
        .as_str()
        .expect("factor id")
        .to_string();
    let code_post = nth(&hook, 1);
    assert_eq!(code_post.path, "/mfa/pat");
    assert_eq!(code_post.body["type"], "message", "{}", code_post.body);
    env.cli_ok(&[
        "factor",
        "confirm",
        "--tenant",
        "acme",
        "pat",
        &id,
        &hook.last_code(),
    ]);
    let listed = env.cli_json(&["factor", "list", "--tenant", "acme", "pat", "--json"]);
    assert!(
        !listed.to_string().contains("public_only"),
        "an operator's webhook is not limited to public addresses: {listed}"
    );

    let server = env.start_server();
    let login = held_login(&server, &env, "pat", "pw");
    let notice = nth(&hook, 2).body;
    assert_eq!(notice["type"], "push", "{notice}");
    assert_eq!(notice["user"], "pat", "{notice}");
    assert_eq!(notice["client"], "vpn", "{notice}");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !login.is_finished(),
        "the request is held while the push waits"
    );
    let (status, body) = approve(server.http_addr.expect("http listener"), &notice);
    assert_eq!(status, 200, "{body}");
    let reply = login.join().unwrap();
    assert!(reply.is_accept(), "{}", reply.raw_output);
    assert!(hook.refusals().is_empty(), "{:?}", hook.refusals());
}

#[test]
fn a_webhook_that_redirects_is_not_followed_and_the_factor_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    let elsewhere = FakeWebhook::start(&b, Some(SECRET));
    let hook = FakeWebhook::start(&a, Some(SECRET));
    hook.set_behaviour(Behaviour::Redirect {
        status: 307,
        location: elsewhere.url("/taken"),
    });
    // Both fakes' certificates must verify: the redirect, not the CA, is what stops it.
    let both = dir.path().join("both.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&hook.ca_file).unwrap()
            + &std::fs::read_to_string(&elsewhere.ca_file).unwrap(),
    )
    .unwrap();
    let env = env_with(auto_client(), &both);
    let out = env.cli(&[
        "factor",
        "enroll",
        "push",
        "--tenant",
        "acme",
        "pat",
        "--webhook",
        &hook.url("/mfa"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("HTTP 307") && err.contains("redirect") && err.contains("not kept"),
        "{err}"
    );
    assert_eq!(hook.hits(), 1, "the webhook was asked once");
    assert_eq!(elsewhere.hits(), 0, "the redirect was not followed");
    let listed = env.cli_json(&["factor", "list", "--tenant", "acme", "pat", "--json"]);
    assert_eq!(listed, json!([]), "{listed}");
}

/// An address of TEST-NET-1 (RFC 5737) put on the loopback interface for one test: public
/// to the daemon's checks, local to this machine.
const OUTSIDE: &str = "192.0.2.77";

/// `ip addr add OUTSIDE/32 dev lo`, undone when dropped.
struct LoopbackAlias;

impl LoopbackAlias {
    fn add() -> LoopbackAlias {
        let ip = require_tool("ip", "iproute2");
        // A leftover of a run that was killed is taken over.
        let _ = Command::new(&ip)
            .args(["addr", "del", &format!("{OUTSIDE}/32"), "dev", "lo"])
            .output();
        let out = Command::new(&ip)
            .args(["addr", "add", &format!("{OUTSIDE}/32"), "dev", "lo"])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip addr add {OUTSIDE}/32 dev lo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopbackAlias
    }
}

impl Drop for LoopbackAlias {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{OUTSIDE}/32"), "dev", "lo"])
            .output();
    }
}

/// `portcullis serve` in a private mount namespace whose `/etc/hosts` is `hosts` (a bind
/// mount: the test rewrites the file in place and the daemon's next lookup reads it).
fn serve_with_hosts(env: &TestEnv, hosts: &Path) -> Server {
    require_root("a private mount namespace");
    let unshare = require_tool("unshare", "util-linux");
    require_tool("mount", "mount");
    let inner = env.command();
    // Names from that file first (systemd-resolved's NSS module, where configured, would
    // answer from the host's own /etc/hosts); nscd, if it runs, kept out too.
    let nsswitch = hosts.with_file_name("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
    let script = r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf || exit 97
if [ -S /run/nscd/socket ]; then mount --bind /dev/null /run/nscd/socket || exit 97; fi
shift 2
exec "$@""#;
    let mut cmd = Command::new(unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(hosts)
    .arg(&nsswitch);
    Server::start(run_through(cmd, &inner))
}

fn write_hosts(path: &PathBuf, hook_address: &str) {
    // In place (same inode): the bind mount shows the new text.
    std::fs::write(
        path,
        format!("127.0.0.1 localhost\n{hook_address} hook.portcullis.test\n"),
    )
    .unwrap();
}

#[test]
fn a_tenants_webhook_whose_name_turns_internal_is_not_posted_to() {
    let dir = tempfile::tempdir().unwrap();
    let _alias = LoopbackAlias::add();
    // Listening on every address of this machine: OUTSIDE and 127.0.0.1 reach the same fake.
    let hook = FakeWebhook::start_on(
        dir.path(),
        Some(SECRET),
        "0.0.0.0:0",
        &["hook.portcullis.test"],
    );
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, OUTSIDE);
    let env = env_with(ClientSpec::new(Mode::Append), &hook.ca_file);
    let mut server = serve_with_hosts(&env, &hosts);
    let http = server.http_addr.expect("http listener");
    let token = env.cli_json(&[
        "token",
        "add",
        "--tenant",
        "acme",
        "--role",
        "admin",
        "acme-admin",
        "--json",
    ]);
    let bearer = format!("Bearer {}", token["token"].as_str().expect("token"));
    let call = |method: &str, path: &str, body: Value| -> (u16, Value) {
        let text = body.to_string();
        let (status, reply) = request(
            http,
            method,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            Some(text.as_bytes()),
        );
        (status, serde_json::from_str(&reply).unwrap_or(Value::Null))
    };

    // Set while the name resolves to a public address: checked, posted to, confirmed.
    let url = hook.url_for("hook.portcullis.test", "/mfa");
    let factors = "/v1/tenants/acme/users/pat/factors";
    let (status, enrolled) = call("POST", factors, json!({"kind": "push", "webhook": url}));
    assert_eq!(status, 201, "{enrolled}\n{}", server.stderr());
    let code_post = nth(&hook, 1);
    assert_eq!(code_post.peer.ip().to_string(), OUTSIDE, "{code_post:?}");
    let id = enrolled["factor_id"].as_str().expect("factor id");
    let listed = env.cli_json(&["factor", "list", "--tenant", "acme", "pat", "--json"]);
    assert_eq!(listed[0]["details"]["public_only"], true, "{listed}");
    let (status, body) = call(
        "POST",
        &format!("{factors}/{id}/confirm"),
        json!({"code": hook.last_code()}),
    );
    assert_eq!(status, 200, "{body}");

    // The name now points at the daemon's own host: no post at all, and the log says why.
    write_hosts(&hosts, "127.0.0.1");
    let before = hook.hits();
    let reply = held_login(&server, &env, "pat", "pw,push").join().unwrap();
    assert!(reply.is_reject(), "{}", reply.raw_output);
    assert_eq!(hook.hits(), before, "the daemon posted to 127.0.0.1");
    let log = server.stderr();
    assert!(
        log.contains("hook.portcullis.test resolves to 127.0.0.1 now")
            && log.contains("public addresses only"),
        "{log}"
    );

    // Back on the public address: the next push goes out and is approved.
    write_hosts(&hosts, OUTSIDE);
    let held = held_login(&server, &env, "pat", "pw,push");
    let notice = nth(&hook, 2);
    assert_eq!(notice.peer.ip().to_string(), OUTSIDE, "{notice:?}");
    let (status, body) = approve(http, &notice.body);
    assert_eq!(status, 200, "{body}");
    let reply = held.join().unwrap();
    assert!(reply.is_accept(), "{}", reply.raw_output);
    server.stop();
}
