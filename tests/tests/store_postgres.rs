//! The store test suite against a real PostgreSQL (the SQLite run is
//! tests/store_sqlite.rs), plus what only several nodes can show: two stores on
//! one database racing for the same code, the same attribute row and the migrations, and
//! a push decision announced from one store to another.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use portcullis_core::model::{NewUser, PushRequest, PushStatus};
use portcullis_core::store::{
    redact_url, translate_sql, PgSettings, PgStore, PushAdded, PushEvent, PushEvents, SendClaim,
    SendLimits, Store, StoreError, MIGRATIONS,
};
use portcullis_tests::postgres::PgServer;
use portcullis_tests::store_suite as suite;

fn open(url: &str) -> PgStore {
    PgStore::open(&PgSettings::new(url)).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

#[test]
fn store_suite_passes_on_postgres() {
    let pg = PgServer::start();
    let store = open(&pg.create_database());
    suite::run_all(&store);
}

/// Two nodes starting at once on an empty database: the advisory lock lets one apply the
/// migrations and the other find them done; both then work on the same schema.
#[test]
fn nodes_starting_together_migrate_once() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                PgStore::open(&PgSettings::new(&url)).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .expect("thread")
            .expect("open while another node migrates");
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let rows = client
        .query(
            "SELECT version, COUNT(*) FROM schema_version GROUP BY version HAVING COUNT(*) > 1",
            &[],
        )
        .expect("query");
    assert!(rows.is_empty(), "a migration was applied twice");
}

/// A connection to the database at `url`, migrated as a release that knew the migrations
/// before `version` left it.
fn database_before(url: &str, version: i64) -> postgres::Client {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.batch_execute(
        "CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .expect("schema_version");
    for (v, sql) in MIGRATIONS.iter().filter(|m| m.0 < version) {
        c.batch_execute(&translate_sql(sql))
            .unwrap_or_else(|e| panic!("migration {v}: {e}"));
        c.execute("INSERT INTO schema_version VALUES ($1, 0)", &[v])
            .expect("record the migration");
    }
    c
}

/// A database as the version before migration 12 left it, with a code used just before
/// the upgrade (under `window = 1`): after the upgrade that code is still used, because its
/// replay row was given the new key (an expiry from the factor's period and the step).
#[test]
fn upgrading_keeps_the_replay_cache_of_an_older_database() {
    let pg = PgServer::start();
    let url = pg.create_database();
    {
        let mut c = database_before(&url, 12);
        c.batch_execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (1, 't', 0);
             INSERT INTO users (id, tenant_id, name, created_at) VALUES (1, 1, 'u', 0);
             INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at)
                 VALUES ('f', 1, 'totp', 'confirmed', '\\x00',
                         '{\"algorithm\":\"SHA1\",\"digits\":6,\"period\":60}', 0);
             INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ('f', 7, 600);",
        )
        .expect("an older database's rows");
    }
    let store = open(&url);
    let expiry = portcullis_core::totp::replay_expiry(7, 60);
    assert!(
        !store.use_otp("f", 7, expiry, 1).unwrap(),
        "a code used before the upgrade is still used"
    );
    assert!(store
        .use_otp("f", 8, portcullis_core::totp::replay_expiry(8, 60), 1)
        .unwrap());
    assert_eq!(store.purge_expired(expiry - 1).unwrap(), 0);
    assert_eq!(
        store.purge_expired(expiry).unwrap(),
        1,
        "step 7's row, at its new expiry"
    );
}

/// A database as the version before token expiry (migration 15) left it, with a token:
/// after the upgrade the token has no expiry.
#[test]
fn upgrading_leaves_the_admin_tokens_of_an_older_database_without_expiry() {
    let pg = PgServer::start();
    let url = pg.create_database();
    {
        let mut c = database_before(&url, 15);
        c.batch_execute(suite::OLD_ADMIN_TOKEN_ROWS)
            .expect("an older database's token");
    }
    let store = open(&url);
    suite::a_token_from_before_expiry_never_expires(&store);
}

/// The same TOTP counter recorded by many "nodes" (each its own pool) at the same moment:
/// exactly one of them gets `true`.
#[test]
fn concurrent_replay_cache_accepts_exactly_one() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let stores: Vec<Arc<PgStore>> = (0..2).map(|_| Arc::new(open(&url))).collect();
    for round in 0..20i64 {
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    store
                        .record_otp_use("factor-race", round, 2_000_000_000)
                        .expect("record")
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|&won| won)
            .count();
        assert_eq!(
            wins, 1,
            "round {round}: {wins} nodes accepted the same code"
        );
    }
}

/// Two nodes setting different attributes of one user at once: neither change is lost.
#[test]
fn concurrent_attribute_updates_are_not_lost() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let a = Arc::new(open(&url));
    let b = Arc::new(open(&url));
    let t = a.create_tenant("acme", 1).expect("tenant");
    let u = a
        .create_user(
            &NewUser {
                tenant_id: t.id,
                name: "alice".into(),
                ..Default::default()
            },
            1,
        )
        .expect("user");
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for i in 0..25 {
                    store
                        .set_user_attribute(u.id, &format!("node{n}-{i}"), Some("x"))
                        .expect("set attribute");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let user = b.user_by_name(t.id, "alice").expect("read").expect("user");
    assert_eq!(user.attributes.len(), 50, "{:?}", user.attributes);
}

/// A wrong password or an unreachable server is an error that names the server but never
/// shows the password.
#[test]
fn connection_errors_do_not_show_the_password() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let password = pg.password().expect("a password in the test URL");
    let wrong = url.replace(&format!(":{password}@"), ":Wr0ng-Secret-pw@");
    assert_ne!(wrong, url);
    let err = PgStore::open(&PgSettings::new(&wrong)).expect_err("wrong password accepted");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, StoreError::Database(_)), "{text}");
    assert!(!text.contains("Wr0ng-Secret-pw"), "password shown: {text}");
    assert!(text.contains("***"), "{text}");

    // Nothing listens on port 1: a bounded, clear failure.
    let mut settings = PgSettings::new("postgres://u:Hidden-pw@127.0.0.1:1/p?sslmode=disable");
    settings.connect_timeout = std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = PgStore::open(&settings).expect_err("connected to nothing");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let text = format!("{err}");
    assert!(!text.contains("Hidden-pw"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");

    // This server has no TLS: sslmode=require is refused, and the error says why.
    let err = PgStore::open(&PgSettings::new(
        &url.replace("sslmode=disable", "sslmode=require"),
    ))
    .expect_err("require accepted without TLS");
    assert!(format!("{err}").contains("TLS"), "{err}");
    // An sslmode libpq does not know: refused before connecting, naming what to use.
    let err = PgStore::open(&PgSettings::new(
        &url.replace("sslmode=disable", "sslmode=on"),
    ))
    .expect_err("sslmode=on accepted");
    let text = format!("{err}");
    assert!(
        text.contains("disable, prefer, require, verify-ca, verify-full"),
        "{text}"
    );
    assert!(!text.contains(&password), "{text}");
}

/// The next event of a push feed, waiting at most `within`.
fn next_event(events: &mut PushEvents, within: Duration) -> Option<PushEvent> {
    let deadline = Instant::now() + within;
    loop {
        match events.try_recv() {
            Ok(event) => return Some(event),
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A push decided through one store is announced at once to the feed of another store on
/// the same database (LISTEN/NOTIFY), and only a decision is announced: one that comes too
/// late (already decided) is not.
#[test]
fn a_push_decided_on_one_node_is_announced_to_another() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let (a, b) = (open(&url), open(&url));
    let mut events = a
        .push_events()
        .expect("PostgreSQL announces push decisions");
    // Listening: the feed first asks its reader to read the store (nothing was announced
    // before it listened).
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)),
        Some(PushEvent::Resync)
    );
    let t = b.create_tenant("acme", 1).expect("tenant");
    let u = b
        .create_user(
            &NewUser {
                tenant_id: t.id,
                name: "pat".into(),
                ..Default::default()
            },
            1,
        )
        .expect("user");
    let push = PushRequest {
        id: "push-1".into(),
        tenant_id: t.id,
        user_id: u.id,
        txn_id: "txn-1".into(),
        factor_id: "fac-1".into(),
        token_hash: "hash-1".into(),
        number: None,
        status: PushStatus::Pending,
        detail: None,
        username: "pat".into(),
        client: "vpn".into(),
        source: "10.0.0.9".into(),
        created_at: 100,
        expires_at: 160,
        decided_at: None,
    };
    b.add_push_capped(&push, 0, u32::MAX).expect("add push");
    assert_eq!(next_event(&mut events, Duration::from_millis(300)), None);
    assert!(b
        .decide_push("push-1", PushStatus::Approved, None, 110)
        .expect("decide"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)),
        Some(PushEvent::Decided("txn-1".into()))
    );
    // Decided already: no second decision, no second announcement.
    assert!(!b
        .decide_push("push-1", PushStatus::Denied, None, 111)
        .expect("decide again"));
    assert_eq!(next_event(&mut events, Duration::from_millis(500)), None);
}

/// Two nodes (each its own pool) claiming sends of codes and adding pushes for one user at
/// the same moment: the user's quota and cap hold across them, as on one node.
#[test]
fn quotas_hold_across_nodes_claiming_at_once() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let nodes: Vec<Arc<PgStore>> = (0..2).map(|_| Arc::new(open(&url))).collect();
    let t = nodes[0].create_tenant("acme", 1).expect("tenant");
    let u = nodes[0]
        .create_user(
            &NewUser {
                tenant_id: t.id,
                name: "sam".into(),
                ..Default::default()
            },
            1,
        )
        .expect("user");
    let limits = SendLimits {
        max_per_hour: 3,
        resend_after: 0,
    };
    for round in 0..5i64 {
        let now = 10_000 + round * 10_000;
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let code = store
                        .claim_code_send(
                            u.id,
                            "fac-sms",
                            &format!("reserved:{round}-{i}"),
                            limits,
                            now,
                        )
                        .expect("claim");
                    let push = PushRequest {
                        id: format!("push-{round}-{i}"),
                        tenant_id: t.id,
                        user_id: u.id,
                        txn_id: format!("txn-{round}-{i}"),
                        factor_id: "fac-push".into(),
                        token_hash: "hash".into(),
                        number: None,
                        status: PushStatus::Pending,
                        detail: None,
                        username: "sam".into(),
                        client: "vpn".into(),
                        source: "10.0.0.9".into(),
                        created_at: now,
                        expires_at: now + 60,
                        decided_at: None,
                    };
                    let pushed = store
                        .add_push_capped(&push, now - 600, 2)
                        .expect("add push");
                    (code, pushed)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let claimed = results.iter().filter(|r| r.0 == SendClaim::Claimed).count();
        let pushed = results.iter().filter(|r| r.1 == PushAdded::Added).count();
        assert_eq!(claimed, 3, "round {round}: {results:?}");
        assert_eq!(pushed, 2, "round {round}: {results:?}");
    }
}

/// A database error says what the server said (its message and SQLSTATE), not only "db
/// error", but never the DETAIL, which quotes row values (here a code's hash).
#[test]
fn database_errors_name_the_cause_but_not_the_rows() {
    let pg = PgServer::start();
    let store = open(&pg.create_database());
    let t = store.create_tenant("acme", 1).expect("tenant");
    let u = store
        .create_user(
            &NewUser {
                tenant_id: t.id,
                name: "bo".into(),
                ..Default::default()
            },
            1,
        )
        .expect("user");
    store
        .add_bypass_code(u.id, "secret-code-hash-77", 1, 1_000, 1)
        .expect("first code");
    let err = store
        .add_bypass_code(u.id, "secret-code-hash-77", 1, 1_000, 1)
        .expect_err("the same code twice");
    let text = format!("{err} {err:?}");
    assert!(text.contains("SQLSTATE 23505"), "{text}");
    assert!(
        text.contains("duplicate key value violates unique constraint"),
        "{text}"
    );
    assert!(
        !text.contains("secret-code-hash-77"),
        "a row value shown: {text}"
    );
    assert!(!text.contains("DETAIL"), "{text}");
}

/// A password with '/', '?', '#' and ':' in it, unescaped: the driver takes all up to the
/// first '@' as the credentials, so the URL connects, and the password is shown nowhere:
/// not in the settings' or the store's Debug, nor in the error of a wrong one.
#[test]
fn a_password_with_url_punctuation_connects_and_is_never_shown() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let (_, host_and_db) = url.split_once('@').expect("the test URL has credentials");
    let db = host_and_db
        .split_once('/')
        .and_then(|(_, rest)| rest.split_once('?'))
        .map(|(db, _)| db.to_string())
        .expect("a database name");
    let role = format!("pc_punct_{:08x}", rand::random::<u32>());
    let password = "Ab/9x?Qz#w:1";
    {
        let mut c = postgres::Client::connect(pg.admin_url(), postgres::NoTls).expect("connect");
        c.batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}'; ALTER DATABASE {db} OWNER TO {role}"
        ))
        .expect("create the role");
    }
    let punctuated = format!("postgres://{role}:{password}@{host_and_db}");
    let settings = PgSettings::new(&punctuated);
    let store = PgStore::open(&settings).expect("the punctuated password connects");
    store.create_tenant("acme", 1).expect("and works");
    let shown = format!("{} {settings:?} {store:?}", redact_url(&punctuated));
    for part in ["Ab/9x", "9x?Qz", "Qz#w", "#w:1"] {
        assert!(!shown.contains(part), "password shown: {shown}");
    }
    assert!(shown.contains(&format!("{role}:***@")), "{shown}");

    let wrong = format!("postgres://{role}:Xy/8w?Zz#q:2@{host_and_db}");
    let err = PgStore::open(&PgSettings::new(&wrong)).expect_err("a wrong password accepted");
    let text = format!("{err} {err:?}");
    for part in ["Xy/8w", "8w?Zz", "Zz#q", "#q:2"] {
        assert!(!text.contains(part), "password shown: {text}");
    }
    assert!(text.contains("***"), "{text}");
    assert!(
        text.contains("SQLSTATE 28P01"),
        "the server's reason: {text}"
    );
}
