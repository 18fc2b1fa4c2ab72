//! Several nodes on one PostgreSQL: two real `portcullis serve` processes, each with its
//! own config file and RADIUS port, sharing `store.url` and the master key (copied). What
//! one node starts or uses, the other sees: challenges, the OTP replay cache (also for two
//! requests at the same moment), push decisions (announced at once by LISTEN/NOTIFY, also
//! after the database was away). A database that goes away makes logins fail closed with a
//! clear log line, and they work again when it is back, no restart. A node reaches a
//! database with TLS (`sslmode=verify-full` and `sslrootcert`) and refuses a foreign one.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use portcullis_tests::fakes::ntfy::FakeNtfy;
use portcullis_tests::fakes::tls::TestTls;
use portcullis_tests::http::post;
use portcullis_tests::postgres::{PgServer, TEST_PASSWORD};
use portcullis_tests::radclient::radclient_waiting;
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, ClientSpec, Mode,
    RadReply, Server, TestEnv,
};

struct Node {
    // Declared first: the server stops before its directory goes.
    server: Server,
    env: TestEnv,
}

impl Node {
    fn login(&self, user: &str, password: &str, state: Option<&str>) -> RadReply {
        let mut attrs = vec![
            ("User-Name", user.to_string()),
            ("User-Password", password.to_string()),
        ];
        if let Some(s) = state {
            attrs.push(("State", s.to_string()));
        }
        radclient(self.server.addr, &self.env.client().secret, &attrs, true)
    }
}

struct Cluster {
    a: Node,
    b: Node,
    /// user -> TOTP secret
    secrets: Vec<(String, String)>,
    // Last: the database outlives the nodes.
    pg: PgServer,
}

impl Cluster {
    fn code(&self, user: &str) -> String {
        let secret = &self
            .secrets
            .iter()
            .find(|(u, _)| u == user)
            .expect("known user")
            .1;
        oathtool_totp(secret, 6, Algorithm::Sha1, 0)
    }
}

/// Two nodes, users with TOTP (password "pw-<user>"), created through node A's CLI on the
/// shared database; `extra` is more config for both nodes.
fn cluster(
    client: ClientSpec,
    users: &[&str],
    extra: &str,
    setup: impl FnOnce(&TestEnv),
) -> Cluster {
    cluster_on(PgServer::start(), client, users, "", extra, setup)
}

/// [`cluster`] on the given database server; `store_extra` is more of `[store]`.
fn cluster_on(
    pg: PgServer,
    client: ClientSpec,
    users: &[&str],
    store_extra: &str,
    extra: &str,
    setup: impl FnOnce(&TestEnv),
) -> Cluster {
    require_tool("radclient", "freeradius-utils");
    let url = pg.create_database();
    // Short bounds, so that a test of the database going away does not wait long.
    let store = format!(
        "url = \"{url}\"\nmax_connections = 4\nconnect_timeout = \"3s\"\nstatement_timeout = \"3s\"\n{store_extra}"
    );
    let env_a = TestEnv::with_store(vec![client.clone()], &store, extra);
    env_a.add_tenant("acme");
    let mut secrets = Vec::new();
    for user in users {
        env_a.add_user("acme", user, &format!("pw-{user}"));
        let secret = random_base32_secret();
        let f = env_a.enroll_totp("acme", user, Some(&secret));
        assert_eq!(f.state, "confirmed", "{:?}", f.json);
        secrets.push((user.to_string(), secret));
    }
    setup(&env_a);
    let env_b = TestEnv::with_store(vec![client], &store, extra);
    // The same master key on every node: factor secrets are sealed with it.
    std::fs::copy(
        env_a.dir().join("master.key"),
        env_b.dir().join("master.key"),
    )
    .expect("copy the master key to node B");
    // Node B sees what was created on A: it shares the database, not a copy.
    let users_b = env_b.cli_json(&["user", "list", "--tenant", "acme", "--json"]);
    for user in users {
        assert!(users_b.to_string().contains(user), "{users_b}");
    }
    let a = Node {
        server: env_a.start_server(),
        env: env_a,
    };
    let b = Node {
        server: env_b.start_server(),
        env: env_b,
    };
    assert_ne!(a.server.addr, b.server.addr);
    Cluster { a, b, secrets, pg }
}

#[test]
fn a_challenge_started_on_node_a_is_answered_on_node_b() {
    let c = cluster(ClientSpec::new(Mode::Challenge), &["alice"], "", |_| {});
    let first = c.a.login("alice", "pw-alice", None);
    assert!(first.is_challenge(), "{}", first.raw_output);
    let state = first.state_for_radclient();
    let second = c.b.login("alice", &c.code("alice"), Some(&state));
    assert!(
        second.is_accept(),
        "node B must continue the transaction node A started\n{}\n--- node B log ---\n{}",
        second.raw_output,
        c.b.server.stderr()
    );
    // The step was taken: the same State cannot be answered again, on either node.
    let again = c.a.login("alice", &c.code("alice"), Some(&state));
    assert!(!again.is_accept(), "{}", again.raw_output);
    // `config check` names the shared store, its password hidden.
    let out = c.b.env.cli_ok(&["config", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let password = c.pg.password().expect("a password in the test URL");
    assert!(
        text.contains("store: postgres://") && text.contains(":***@"),
        "{text}"
    );
    assert!(!text.contains(&password), "{text}");
    let json = c.b.env.cli_json(&["config", "check", "--json"]);
    assert!(!json.to_string().contains(&password), "{json}");
    // Both nodes wrote to the one audit trail.
    let audit =
        c.b.env
            .cli_json(&["audit", "--tenant", "acme", "--user", "alice", "--json"]);
    assert!(audit.to_string().contains("accept"), "{audit}");
}

#[test]
fn a_code_used_on_node_a_is_refused_on_node_b() {
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    let c = cluster(ClientSpec::new(Mode::Append), &users, "", |_| {});
    // One after the other.
    let pass = format!("pw-u0{}", c.code("u0"));
    let on_a = c.a.login("u0", &pass, None);
    assert!(on_a.is_accept(), "{}", on_a.raw_output);
    let on_b = c.b.login("u0", &pass, None);
    assert!(
        on_b.is_reject(),
        "the code used on node A must be refused on node B\n{}",
        on_b.raw_output
    );

    // At the same moment: the same fresh code to both nodes from two threads, for
    // several users; exactly one of each pair is accepted.
    let c = Arc::new(c);
    for user in &users[1..] {
        let pass = format!("pw-{user}{}", c.code(user));
        let barrier = Arc::new(Barrier::new(2));
        let replies: Vec<RadReply> = [true, false]
            .into_iter()
            .map(|on_a| {
                let (c, barrier, pass, user) =
                    (c.clone(), barrier.clone(), pass.clone(), user.to_string());
                thread::spawn(move || {
                    let node = if on_a { &c.a } else { &c.b };
                    barrier.wait();
                    node.login(&user, &pass, None)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("login thread"))
            .collect();
        let accepts = replies.iter().filter(|r| r.is_accept()).count();
        let rejects = replies.iter().filter(|r| r.is_reject()).count();
        assert_eq!(
            (accepts, rejects),
            (1, 1),
            "{user}: one code sent to two nodes at once must be accepted exactly once\n{}\n{}",
            replies[0].raw_output,
            replies[1].raw_output
        );
    }
}

const PUBLIC: &str = "https://mfa.example.test";

/// A store poll far longer than the time allowed for node A to release the request: only
/// the announcement of the decision (LISTEN/NOTIFY) can release it in time.
const SLOW_POLL: &str = "push_poll_interval = \"10s\"\n";
/// How soon node A must answer after node B took the approval.
const RELEASED_WITHIN: Duration = Duration::from_secs(3);

/// Two nodes whose user `pat` (password "pw") has a confirmed push factor on a fake ntfy;
/// RADIUS `auto` mode, and a store poll of 10 s.
fn push_cluster(pg: PgServer, ntfy: &FakeNtfy) -> Cluster {
    let extra = format!(
        "\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\"\n\n{}",
        ntfy.config("acme", "")
    );
    let mut client = ClientSpec::new(Mode::Auto);
    client.extra = "max_wait = \"20s\"\n".into();
    cluster_on(pg, client, &[], SLOW_POLL, &extra, |env| {
        env.add_user("acme", "pat", "pw");
        env.enroll_push_confirmed("acme", "pat", ntfy);
    })
}

/// Node A holds pat's login for the push it sent (the `nth` notification of the fake
/// ntfy, from 1); the phone's approval lands on node B. Node A must accept well before
/// its next read of the store.
fn push_held_on_a_is_released_by_approval_on_b(c: &Cluster, ntfy: &FakeNtfy, nth: usize) {
    let (addr, secret) = (c.a.server.addr, c.a.env.client().secret.clone());
    let login = thread::spawn(move || {
        radclient_waiting(
            addr,
            &secret,
            &[
                ("User-Name", "pat".to_string()),
                ("User-Password", "pw".to_string()),
            ],
            25,
        )
    });
    let msgs = ntfy.wait_for(nth, Duration::from_secs(10));
    assert!(
        msgs.len() >= nth,
        "no push; refusals: {:?}",
        ntfy.refusals()
    );
    let click = msgs[nth - 1]["click"]
        .as_str()
        .expect("click URL")
        .to_string();
    let rest = click
        .strip_prefix(&format!("{PUBLIC}/v1/push/"))
        .unwrap_or_else(|| panic!("unexpected click URL {click}"));
    let (id, token) = rest.split_once("?t=").expect("token in the link");
    thread::sleep(Duration::from_millis(300));
    assert!(!login.is_finished(), "node A holds the request");
    // The phone's answer lands on node B.
    let approved_at = Instant::now();
    let (status, body) = post(
        c.b.server.http_addr.expect("node B http listener"),
        &format!("/v1/push/{id}/approve"),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let reply = login.join().expect("login thread");
    assert!(
        reply.is_accept(),
        "{}\n--- node A log ---\n{}",
        reply.raw_output,
        c.a.server.stderr()
    );
    assert!(
        approved_at.elapsed() < RELEASED_WITHIN,
        "node A released the request {:?} after node B took the approval (its store poll \
         is 10 s: the decision must arrive by NOTIFY)\n--- node A log ---\n{}",
        approved_at.elapsed(),
        c.a.server.stderr()
    );
}

#[test]
fn a_push_approved_on_node_b_releases_the_request_held_by_node_a_at_once() {
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ntfy = FakeNtfy::start(ca_dir.path());
    let c = push_cluster(PgServer::start(), &ntfy);
    // Enrolment code first, then the login's notification (sent by node A).
    push_held_on_a_is_released_by_approval_on_b(&c, &ntfy, 2);
    let log = c.a.server.stderr();
    assert!(
        log.contains("listening for push decisions on PostgreSQL"),
        "{log}"
    );
}

#[test]
fn push_decisions_are_announced_again_after_the_database_was_away() {
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ntfy = FakeNtfy::start(ca_dir.path());
    // Its own database server, whatever PORTCULLIS_TEST_POSTGRES says: it is stopped here.
    let mut c = push_cluster(PgServer::start_own(), &ntfy);
    let listening = |c: &Cluster| {
        c.a.server
            .stderr()
            .matches("listening for push decisions on PostgreSQL")
            .count()
    };
    let wait_for = |c: &Cluster, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while listening(c) < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(listening(c), n, "{}", c.a.server.stderr());
    };
    wait_for(&c, 1);
    c.pg.stop();
    c.pg.restart();
    // Node A says it lost the feed, and listens again on its own (backoff, no restart).
    wait_for(&c, 2);
    let log = c.a.server.stderr();
    assert!(
        log.contains("push decisions of other nodes are not announced to this one"),
        "the log says the feed was lost\n{log}"
    );
    assert!(!log.contains(TEST_PASSWORD), "{log}");
    push_held_on_a_is_released_by_approval_on_b(&c, &ntfy, 2);
}

#[test]
fn logins_fail_closed_while_the_database_is_down_and_work_again_when_it_is_back() {
    // Its own database server, whatever PORTCULLIS_TEST_POSTGRES says: it is stopped here.
    let mut c = cluster_on(
        PgServer::start_own(),
        ClientSpec::new(Mode::Append),
        &["before", "during", "after"],
        "",
        "",
        |_| {},
    );
    let ok =
        c.a.login("before", &format!("pw-before{}", c.code("before")), None);
    assert!(ok.is_accept(), "{}", ok.raw_output);

    c.pg.stop();
    for node in [&c.a, &c.b] {
        let pass = format!("pw-during{}", c.code("during"));
        let started = Instant::now();
        let reply = radclient_waiting(
            node.server.addr,
            &node.env.client().secret,
            &[("User-Name", "during".to_string()), ("User-Password", pass)],
            15,
        );
        assert!(
            reply.is_reject(),
            "a login while the database is down is rejected (not dropped, not accepted)\n{}",
            reply.raw_output
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(c.a.server.is_running(), "node A survived the outage");
    let log = c.a.server.stderr();
    assert!(
        log.contains("cannot reach PostgreSQL"),
        "the log says why logins fail\n{log}"
    );
    assert!(
        !log.contains(TEST_PASSWORD),
        "the log shows the database password\n{log}"
    );

    c.pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        let pass = format!("pw-after{}", c.code("after"));
        let reply = radclient(
            c.a.server.addr,
            &c.a.env.client().secret,
            &[("User-Name", "after".to_string()), ("User-Password", pass)],
            true,
        );
        if reply.is_accept() || Instant::now() > deadline {
            break reply;
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert!(
        reply.is_accept(),
        "logins work again without a restart\n{}\n{}",
        reply.raw_output,
        c.a.server.stderr()
    );
    // And node B too, with the code node A did not use.
    let pass = format!("pw-during{}", c.code("during"));
    let reply = c.b.login("during", &pass, None);
    assert!(
        reply.is_accept(),
        "{}\n{}",
        reply.raw_output,
        c.b.server.stderr()
    );
}

/// The database's connections that this test's node holds: (with TLS, without).
fn connections_by_tls(pg: &PgServer, database: &str) -> (i64, i64) {
    let mut admin =
        postgres::Client::connect(pg.admin_url(), postgres::NoTls).expect("connect as admin");
    let row = admin
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
            &[&database],
        )
        .expect("read pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[test]
fn a_node_logs_in_over_verified_tls_to_postgresql_and_refuses_a_foreign_certificate() {
    require_tool("radclient", "freeradius-utils");
    let ca_dir = tempfile::tempdir().expect("temp dir");
    // The server's certificate names 127.0.0.1 only (not `localhost`).
    let tls = TestTls::for_names(ca_dir.path(), &["127.0.0.1"]);
    let other_dir = tempfile::tempdir().expect("temp dir");
    let foreign = TestTls::new(other_dir.path());
    // Its own server with ssl=on, whatever PORTCULLIS_TEST_POSTGRES says.
    let pg = PgServer::start_own_tls(&tls.cert_pem, &tls.key_pem);
    let plain = pg.create_database();
    let base = plain
        .strip_suffix("?sslmode=disable")
        .expect("a test URL ends with sslmode=disable");
    let database = base.rsplit('/').next().expect("database name").to_string();
    let store = |query: &str| format!("url = \"{base}?{query}\"\n");

    // verify-full: the chain leads to our CA and the certificate names 127.0.0.1. SCRAM
    // is bound to this TLS channel (tls-server-end-point): required here, so a wrong or
    // missing binding fails the login.
    let verified = store(&format!(
        "sslmode=verify-full&sslrootcert={}&channel_binding=require",
        tls.ca_file.display()
    ));
    let env = TestEnv::with_store(vec![ClientSpec::new(Mode::Append)], &verified, "");
    env.cli_ok(&["config", "check"]);
    env.add_tenant("acme");
    env.add_user("acme", "tess", "pw-tess");
    let secret = random_base32_secret();
    let f = env.enroll_totp("acme", "tess", Some(&secret));
    assert_eq!(f.state, "confirmed", "{:?}", f.json);
    let node = Node {
        server: env.start_server(),
        env,
    };
    let pass = format!("pw-tess{}", oathtool_totp(&secret, 6, Algorithm::Sha1, 0));
    let reply = node.login("tess", &pass, None);
    assert!(
        reply.is_accept(),
        "{}\n--- node log ---\n{}",
        reply.raw_output,
        node.server.stderr()
    );
    // The node's pooled connections really are TLS ones.
    let (with_tls, without) = connections_by_tls(&pg, &database);
    assert!(
        with_tls >= 1 && without == 0,
        "{with_tls} connections with TLS, {without} without"
    );

    // Every node of this database needs its master key (a node without one is refused).
    let share_key = |env: &TestEnv| {
        std::fs::copy(
            node.env.dir().join("master.key"),
            env.dir().join("master.key"),
        )
        .expect("copy the master key");
    };
    // require: encrypted, the certificate not checked (as libpq without sslrootcert).
    let env = TestEnv::with_store(
        vec![ClientSpec::new(Mode::Append)],
        &store("sslmode=require"),
        "",
    );
    share_key(&env);
    let users = env.cli_json(&["user", "list", "--tenant", "acme", "--json"]);
    assert!(users.to_string().contains("tess"), "{users}");

    // A root certificate that did not sign the server's: refused, and the error says so.
    for mode in ["verify-full", "verify-ca"] {
        let env = TestEnv::with_store(
            vec![ClientSpec::new(Mode::Append)],
            &store(&format!(
                "sslmode={mode}&sslrootcert={}",
                foreign.ca_file.display()
            )),
            "",
        );
        let out = env.cli(&["user", "list", "--tenant", "acme"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{mode} with a foreign CA must fail\n{err}"
        );
        assert!(
            err.contains("certificate") && err.contains("sslrootcert"),
            "the error says that the server's certificate was refused\n{err}"
        );
        assert!(!err.contains(TEST_PASSWORD), "{err}");
    }

    // The same server reached as `localhost`, a name its certificate does not hold:
    // verify-ca (the chain only) works, verify-full refuses it.
    let by_name = |mode: &str| {
        let env = TestEnv::with_store(
            vec![ClientSpec::new(Mode::Append)],
            &format!(
                "url = \"{}?sslmode={mode}&sslrootcert={}\"\n",
                base.replace("@127.0.0.1:", "@localhost:"),
                tls.ca_file.display()
            ),
            "",
        );
        share_key(&env);
        env.cli(&["user", "list", "--tenant", "acme"])
    };
    let out = by_name("verify-ca");
    assert!(
        out.status.success(),
        "verify-ca does not compare the host name\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = by_name("verify-full");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "verify-full accepted a certificate for another name"
    );
    assert!(
        err.contains("not valid for name \"localhost\"") && err.contains("verify-full"),
        "{err}"
    );

    // verify-full without a root certificate: `config check` says what to add.
    let env = TestEnv::with_store(
        vec![ClientSpec::new(Mode::Append)],
        &store("sslmode=verify-full"),
        "",
    );
    let out = env.cli(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("store.url") && err.contains("sslrootcert"),
        "{err}"
    );
}
