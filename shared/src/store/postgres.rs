//! The shared store for several nodes: PostgreSQL behind a small connection pool.
//!
//! Every node is stateless; transactions, the OTP replay cache, throttles, push decisions,
//! remembered sources and audit all live here, so a challenge started on one node can be
//! answered on another. Race-sensitive operations are single conditional statements
//! (`INSERT ... ON CONFLICT DO NOTHING`, `UPDATE ... WHERE step = $2 RETURNING`), so two
//! nodes receiving the same code at the same moment cannot both accept it.
//!
//! The schema is the one migration list shared with SQLite, translated on the fly
//! ([`translate_sql`]); migrations run under an advisory lock, so nodes starting together
//! do not race. Connections are checked on checkout: after the database was down, closed
//! connections are dropped and new ones made, with no restart.
//!
//! A push decision is announced in the statement that records it (`NOTIFY` on
//! [`PUSH_CHANNEL`], payload: the transaction id); [`Store::push_events`] gives a feed of
//! them from one dedicated `LISTEN` connection, made again with backoff when it drops.
//! TLS to the server follows libpq's `sslmode` and `sslrootcert` (see `pg_tls.rs`).
//!
//! The store is synchronous (like the SQLite one) but may be called from any thread, also
//! from inside the server's async runtime: the connections are driven by a small runtime
//! of the store's own, and a call only waits on channels to them (no nested `block_on`
//! of a tokio runtime, which would panic there).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, Client, Row, Statement};

use super::migrations::MIGRATIONS;
use super::pg_tls::PgTls;
use super::sqlite::{decode_reply_attributes, encode_reply_attributes};
use super::{
    PushAdded, PushEvent, PushEvents, Reservation, SendClaim, SendLimits, Store, StoreError,
    StoreResult, TakenTransaction, TxnBinding, SEND_WINDOW,
};
use crate::clock::UnixTime;
use crate::model::*;

/// The channel on which a decided push is announced (`NOTIFY`, payload: its transaction
/// id) and on which every node listens.
pub const PUSH_CHANNEL: &str = "portcullis_push";

/// Decisions buffered for a slow reader before they are replaced by one
/// [`PushEvent::Resync`].
const PUSH_EVENT_BUFFER: usize = 256;

/// Longest pause between two attempts to listen again after the connection dropped.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Key of the advisory lock held while migrations run ("portcull" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// How to reach PostgreSQL and how long to wait for it.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?sslmode=disable`
    pub url: String,
    /// Connections kept by this node (pool size).
    pub max_connections: u32,
    /// Bound on making a connection and on waiting for a free one.
    pub connect_timeout: Duration,
    /// Bound on one statement (server side `statement_timeout`).
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PgSettings {
    /// Settings with the defaults: 8 connections, 5 s to connect, 5 s per statement.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// The URL with its password replaced by `***`, for logs, errors and `config check`.
///
/// The password is found by the driver's own reading of the URL: everything after the
/// scheme up to the FIRST '@' is the user and password (a password may hold '/', '?', '#'
/// and ':' unescaped, and the driver still takes them as part of it), and `password=` in
/// the query. What cannot be shown for sure not to be a secret is hidden too: all of a URL
/// whose user name holds URL punctuation (the driver took more than a name for the
/// credentials: an '@' in the query, say), and all after the credentials when a second
/// '@' follows them (the rest of a password with an unescaped '@' could be anywhere).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // A SQLite file has no password, and its path is shown as given.
    if scheme.eq_ignore_ascii_case("sqlite") {
        return url.to_string();
    }
    let mut out = format!("{scheme}://");
    let after = match rest.split_once('@') {
        Some((credentials, after)) => {
            let (user, password) = match credentials.split_once(':') {
                Some((user, _)) => (user, true),
                None => (credentials, false),
            };
            if user.contains(['/', '?', '#', '&', '=']) {
                return format!("{scheme}://***");
            }
            out.push_str(user);
            if password {
                out.push_str(":***");
            }
            out.push('@');
            if after.contains('@') {
                out.push_str("***");
                return out;
            }
            after
        }
        None => rest,
    };
    // The host ends where the driver ends it: at the first '/' or '?'.
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (host, tail) = after.split_at(end);
    out.push_str(host);
    match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    // `password=`, also escaped (`pass%77ord=`), and `sslpassword=`.
                    Some((k, _))
                        if super::pg_tls::percent_decode(k)
                            .to_ascii_lowercase()
                            .contains("password") =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => out.push_str(tail),
    }
    out
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Translates the portable migration SQL to PostgreSQL: SQLite's `INTEGER PRIMARY KEY`
/// (an auto-increment row id) becomes `BIGSERIAL PRIMARY KEY`, every other `INTEGER` a
/// `BIGINT` (one integer width on the Rust side), `BLOB` becomes `BYTEA`; SQLite's
/// `WITHOUT ROWID` has no counterpart (a PostgreSQL table has no row id to leave out), and
/// the one JSON field a migration reads (a TOTP factor's period) is read the PostgreSQL way.
/// A line `-- postgres: STATEMENT` is a comment to SQLite and the statement here; a
/// migration that starts `-- sqlite only` is SQLite's alone (nothing to run here).
pub fn translate_sql(sql: &str) -> String {
    if sql.starts_with("-- sqlite only") {
        return String::new();
    }
    sql.replace("-- postgres: ", "")
        .replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
        .replace(") WITHOUT ROWID;", ");")
        .replace(
            "json_extract(f.params, '$.period')",
            "CAST(f.params::jsonb ->> 'period' AS BIGINT)",
        )
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    /// Drives the connections' socket I/O; calls only wait for their answers.
    runtime: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    /// The TLS connector (`sslmode`, `sslrootcert`); unused with `sslmode=disable`.
    tls: PgTls,
    url: String,
    pool: Mutex<PoolState>,
    freed: Condvar,
    max_connections: u32,
    connect_timeout: Duration,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<PgConn>,
    /// Connections in use or idle.
    open: u32,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Does not block: safe also when the last reference goes inside an async task.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// An error and the chain of its causes, as one line (the driver's own text names only
/// the kind of error: "db error", "error communicating with the server"). The server's
/// report of an error is given by its severity, message and SQLSTATE, never by its DETAIL
/// (which may quote row values, a password hash of a duplicate key say) or its other
/// fields.
fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    // Bounded: a chain is a few links long.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        let part = match c.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => describe_db_error(db),
            None => c.to_string(),
        };
        // Some errors repeat their source in their own text.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// The server's error without its DETAIL: `ERROR: <message> (SQLSTATE 23505)`, and what
/// to check for the errors an operator can fix.
fn describe_db_error(db: &tokio_postgres::error::DbError) -> String {
    let code = db.code();
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        code.code()
    );
    let hint = if *code == SqlState::QUERY_CANCELED && db.message().contains("statement timeout") {
        Some("the statement ran longer than store.statement_timeout: is the database overloaded, or a row locked by a stuck session?")
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        Some("check the user and password in store.url and the server's pg_hba.conf")
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        Some("the database named in store.url does not exist: create it")
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        Some("the store.url user lacks a privilege: grant it the database's schema")
    } else if *code == SqlState::TOO_MANY_CONNECTIONS {
        Some("the server is out of connections: raise its max_connections or lower store.max_connections")
    } else {
        None
    };
    if let Some(hint) = hint {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// The driver's connect error, with what to check when the server's certificate was
/// refused (the driver's text never holds the password).
fn explain_connect_error(e: tokio_postgres::Error) -> String {
    let text = describe_error(&e);
    if text.contains("invalid peer certificate") {
        format!(
            "{text} (the server's TLS certificate was refused: check that sslrootcert names \
             the CA that signed it and, with sslmode=verify-full, that it names the URL's host)"
        )
    } else {
        text
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    // The driver's messages never carry the connection password, and the server's DETAIL
    // (row values) is left out.
    StoreError::Database(describe_error(&e))
}

/// Takes the lock on a user's row that serializes the quota claims of every node for
/// that user (sent codes, pushes). `NO KEY UPDATE`: rows that only refer to the user
/// (their inserts take a key-share lock) are not held up by it.
fn lock_user(tx: &mut Tx<'_>, user: UserId) -> StoreResult<()> {
    match tx.query_opt(
        "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
        &[&user],
    )? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            what: "user",
            name: user.to_string(),
        }),
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is {v}")))
}

/// Reading a column without panicking: a value of an unexpected type is an error.
trait Col {
    fn col<'a, T: FromSql<'a>>(&'a self, idx: usize) -> StoreResult<T>;
}

impl Col for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, idx: usize) -> StoreResult<T> {
        self.try_get(idx)
            .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
    }
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// One connection and the statements prepared on it (each prepared once, then only
/// executed: one round trip per statement instead of two).
struct PgConn {
    client: Client,
    prepared: HashMap<String, Statement>,
}

/// A pooled connection; back to the pool when dropped, unless it was closed.
struct Conn<'s> {
    store: &'s PgStore,
    conn: Option<PgConn>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut pool = self.store.lock_pool();
        match self.conn.take() {
            Some(c) if !c.client.is_closed() => pool.idle.push(c),
            _ => pool.open = pool.open.saturating_sub(1),
        }
        drop(pool);
        self.store.freed.notify_one();
    }
}

impl Conn<'_> {
    fn pg(&mut self) -> StoreResult<&mut PgConn> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Database("connection already returned".into()))
    }

    fn client(&mut self) -> StoreResult<&mut Client> {
        Ok(&mut self.pg()?.client)
    }

    /// The prepared statement for `sql` on this connection, and the client to run it.
    fn prepared(&mut self, sql: &str) -> StoreResult<(Statement, &Client)> {
        let pg = self.pg()?;
        let statement = match pg.prepared.get(sql) {
            Some(st) => st.clone(),
            None => {
                let st = block_on(pg.client.prepare(sql)).map_err(db)?;
                pg.prepared.insert(sql.to_string(), st.clone());
                st
            }
        };
        Ok((statement, &pg.client))
    }

    fn execute(&mut self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        let (st, c) = self.prepared(sql)?;
        block_on(c.execute(&st, params)).map_err(db)
    }

    fn query(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        let (st, c) = self.prepared(sql)?;
        block_on(c.query(&st, params)).map_err(db)
    }

    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        let (st, c) = self.prepared(sql)?;
        block_on(c.query_opt(&st, params)).map_err(db)
    }

    fn query_one(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Row> {
        let (st, c) = self.prepared(sql)?;
        block_on(c.query_one(&st, params)).map_err(db)
    }

    fn try_query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> StoreResult<Result<Row, tokio_postgres::Error>> {
        let (st, c) = self.prepared(sql)?;
        Ok(block_on(c.query_one(&st, params)))
    }

    fn try_execute(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> StoreResult<Result<u64, tokio_postgres::Error>> {
        let (st, c) = self.prepared(sql)?;
        Ok(block_on(c.execute(&st, params)))
    }

    fn transaction(&mut self) -> StoreResult<Tx<'_>> {
        let c = self.client()?;
        Ok(Tx {
            tx: block_on(c.transaction()).map_err(db)?,
        })
    }
}

/// An open transaction; rolled back when dropped without [`Tx::commit`].
struct Tx<'c> {
    tx: tokio_postgres::Transaction<'c>,
}

impl Tx<'_> {
    fn execute(&mut self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        block_on(self.tx.execute(sql, params)).map_err(db)
    }

    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        block_on(self.tx.query_opt(sql, params)).map_err(db)
    }

    fn query_all(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        block_on(self.tx.query(sql, params)).map_err(db)
    }

    fn query_one(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Row> {
        block_on(self.tx.query_one(sql, params)).map_err(db)
    }

    fn batch_execute(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        block_on(self.tx.batch_execute(sql))
    }

    fn try_query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, tokio_postgres::Error> {
        block_on(self.tx.query_one(sql, params))
    }

    fn commit(self) -> StoreResult<()> {
        block_on(self.tx.commit()).map_err(db)
    }
}

impl PgStore {
    /// Connects, checks the schema and applies pending migrations.
    pub fn open(settings: &PgSettings) -> StoreResult<Self> {
        let shown = redact_url(&settings.url);
        let (mut config, tls) = super::pg_tls::parse_url(&settings.url)
            .map_err(|e| StoreError::Database(format!("store.url {shown}: {e}")))?;
        let tls = PgTls::new(&tls)
            .map_err(|e| StoreError::Database(format!("store.url {shown}: {e}")))?;
        config.connect_timeout(settings.connect_timeout);
        // A server that vanishes without closing the socket: unacknowledged data for longer
        // than this closes the connection instead of hanging the login.
        config.tcp_user_timeout(settings.statement_timeout + settings.connect_timeout);
        config.keepalives_idle(Duration::from_secs(30));
        let ms = settings.statement_timeout.as_millis().max(1);
        let options = match config.get_options() {
            Some(o) => format!("{o} -c statement_timeout={ms}"),
            None => format!("-c statement_timeout={ms}"),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("portcullis");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("portcullis-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Database(format!("cannot start the database I/O threads: {e}"))
            })?;
        let store = Self {
            runtime: Some(runtime),
            config,
            tls,
            url: settings.url.clone(),
            pool: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            max_connections: settings.max_connections.max(1),
            connect_timeout: settings.connect_timeout,
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock_pool(&self) -> MutexGuard<'_, PoolState> {
        // The state is two fields updated together; a panic cannot leave it half-changed.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Database(format!(
            "cannot reach PostgreSQL at {}: {why}",
            redact_url(&self.url)
        ))
    }

    /// A new connection, its I/O driven by the store's runtime.
    fn connect(&self) -> StoreResult<Client> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| self.unreachable("the store is shutting down"))?;
        let config = self.config.clone();
        let tls = self.tls.clone();
        let limit = self.connect_timeout;
        let task = runtime.spawn(async move {
            let (client, connection) = tokio::time::timeout(limit, config.connect(tls))
                .await
                .map_err(|_| format!("no connection within {limit:?}"))?
                .map_err(explain_connect_error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection closed");
                }
            });
            Ok::<_, String>(client)
        });
        match block_on(task) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// A connection from the pool: an idle open one, a new one while fewer than
    /// `max_connections` exist, or the next one freed within `connect_timeout`.
    fn conn(&self) -> StoreResult<Conn<'_>> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut pool = self.lock_pool();
        loop {
            while let Some(conn) = pool.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(Conn {
                        store: self,
                        conn: Some(conn),
                    });
                }
                pool.open = pool.open.saturating_sub(1);
            }
            if pool.open < self.max_connections {
                pool.open += 1;
                drop(pool);
                return match self.connect() {
                    Ok(client) => Ok(Conn {
                        store: self,
                        conn: Some(PgConn {
                            client,
                            prepared: HashMap::new(),
                        }),
                    }),
                    Err(e) => {
                        let mut pool = self.lock_pool();
                        pool.open = pool.open.saturating_sub(1);
                        drop(pool);
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unreachable(format!(
                    "all {} connections busy for {:?}",
                    self.max_connections, self.connect_timeout
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Held until commit: a second node starting at the same moment waits here.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        let exists: bool = tx
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
            .col(0)?;
        if !exists {
            tx.batch_execute(
                "CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .map_err(db)?;
        }
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
            .col(0)?;
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(&translate_sql(sql)).map_err(|e| {
                StoreError::Database(format!("migration {version}: {}", describe_error(&e)))
            })?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)",
                &[version],
            )?;
            tracing::debug!(version, "applied store migration");
            applied.push(*version);
        }
        tx.commit()?;
        super::migrations::log_migrated(current, &applied);
        Ok(())
    }

    fn execute(&self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        self.conn()?.execute(sql, params)
    }

    fn query(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        self.conn()?.query(sql, params)
    }

    fn query_opt(&self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        self.conn()?.query_opt(sql, params)
    }

    fn query_one(&self, sql: &str, params: Params<'_>) -> StoreResult<Row> {
        self.conn()?.query_one(sql, params)
    }
}

/// The dedicated connection on which a node listens for push decisions (LISTEN), made
/// again with a growing pause whenever it drops. Ends when the receiver is dropped.
struct PushListener {
    config: tokio_postgres::Config,
    tls: PgTls,
    /// Redacted: for logs.
    url: String,
    connect_timeout: Duration,
    tx: tokio::sync::mpsc::Sender<PushEvent>,
    /// An event could not be buffered: a [`PushEvent::Resync`] is owed.
    missed: bool,
}

impl PushListener {
    async fn run(mut self) {
        let mut pause = Duration::from_millis(500);
        // Said once per outage; later failed attempts are debug lines.
        let mut outage_logged = false;
        loop {
            let mut listening = false;
            let Err(e) = self.listen(&mut listening).await else {
                return;
            };
            if listening {
                pause = Duration::from_millis(500);
                outage_logged = false;
            }
            if outage_logged {
                tracing::debug!(url = %self.url, error = %e, retry_in = ?pause,
                    "still cannot listen for push decisions");
            } else {
                tracing::warn!(url = %self.url, error = %e, retry_in = ?pause,
                    "push decisions of other nodes are not announced to this one: cannot \
                     LISTEN on PostgreSQL; held requests see them only by reading the \
                     database (store.push_poll_interval) until this connection is back");
                outage_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.tx.closed() => return,
            }
            pause = (pause * 2).min(LISTEN_BACKOFF_MAX);
        }
    }

    /// One connection: LISTEN, then pass notifications on until it drops (Err) or the
    /// receiver is gone (Ok).
    async fn listen(&mut self, listening: &mut bool) -> Result<(), String> {
        let limit = self.connect_timeout;
        let (client, mut connection) =
            tokio::time::timeout(limit, self.config.connect(self.tls.clone()))
                .await
                .map_err(|_| format!("no connection within {limit:?}"))?
                .map_err(explain_connect_error)?;
        let sql = format!("LISTEN {PUSH_CHANNEL}");
        let listen = client.batch_execute(&sql);
        tokio::pin!(listen);
        // Bounded: a server that accepts the connection but never answers LISTEN.
        let answered = tokio::time::sleep(limit);
        tokio::pin!(answered);
        loop {
            tokio::select! {
                r = &mut listen, if !*listening => {
                    r.map_err(|e| format!("LISTEN {PUSH_CHANNEL}: {}", describe_error(&e)))?;
                    *listening = true;
                    tracing::info!(url = %self.url, channel = PUSH_CHANNEL,
                        "listening for push decisions on PostgreSQL");
                    // Decisions made while not listening are read from the store now.
                    self.send(PushEvent::Resync);
                }
                _ = &mut answered, if !*listening => {
                    return Err(format!("LISTEN not answered within {limit:?}"));
                }
                m = std::future::poll_fn(|cx| connection.poll_message(cx)) => match m {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        self.send(PushEvent::Decided(n.payload().to_string()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(describe_error(&e)),
                    None => return Err("the server closed the connection".into()),
                },
                _ = self.tx.closed() => return Ok(()),
            }
        }
    }

    /// Passes an event on without waiting; when the buffer is full, the reader is owed a
    /// [`PushEvent::Resync`] instead.
    fn send(&mut self, event: PushEvent) {
        if self.missed {
            if self.tx.try_send(PushEvent::Resync).is_err() {
                return;
            }
            self.missed = false;
        }
        if self.tx.try_send(event).is_err() {
            self.missed = true;
        }
    }
}

fn tenant_from_row(r: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: r.col(0)?,
        name: r.col(1)?,
        created_at: r.col(2)?,
    })
}

const USER_COLS: &str =
    "id, tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at, attributes_json, session_epoch";

/// A JSON column of a user row. Unreadable is an error, not "none": the user's groups
/// choose their policy, and a user whose groups were lost must not fall to the default.
fn user_json<T: serde::de::DeserializeOwned>(text: &str, column: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("users.{column} is not valid JSON: {e}")))
}

fn user_from_row(r: &Row) -> StoreResult<User> {
    let groups: String = r.col(6)?;
    let attrs: String = r.col(9)?;
    Ok(User {
        id: r.col(0)?,
        tenant_id: r.col(1)?,
        name: r.col(2)?,
        password_hash: r.col(3)?,
        email: r.col(4)?,
        phone: r.col(5)?,
        groups: user_json(&groups, "groups_json")?,
        disabled: r.col::<i64>(7)? != 0,
        created_at: r.col(8)?,
        attributes: user_json(&attrs, "attributes_json")?,
        session_epoch: r.col(10)?,
    })
}

const FACTOR_COLS: &str =
    "id, user_id, kind, state, sealed_secret, params, created_at, confirmed_at, last_used_at";

fn factor_from_row(r: &Row) -> StoreResult<Factor> {
    factor_from_row_at(r, 0)
}

/// A factor from the columns of [`FACTOR_COLS`] starting at column `at`.
fn factor_from_row_at(r: &Row, at: usize) -> StoreResult<Factor> {
    let id: String = r.col(at)?;
    let kind: String = r.col(at + 2)?;
    let state: String = r.col(at + 3)?;
    let (Some(kind), Some(state)) = (FactorKind::parse(&kind), FactorState::parse(&state)) else {
        return Err(StoreError::Corrupt(format!(
            "factor {id} has kind '{kind}' / state '{state}'"
        )));
    };
    Ok(Factor {
        id,
        user_id: r.col(at + 1)?,
        kind,
        state,
        sealed_secret: r.col(at + 4)?,
        params: r.col(at + 5)?,
        created_at: r.col(at + 6)?,
        confirmed_at: r.col(at + 7)?,
        last_used_at: r.col(at + 8)?,
    })
}

const TXN_COLS: &str = "id, tenant_id, user_id, username, client, source, first_factor, step, attempts, created_at, expires_at, reply_attributes";

const INSERT_AUDIT: &str = "INSERT INTO audit (time, tenant, username, channel, client, source, mode, factors, result, reason, transaction_id, host)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Runs `f` with the parameters of [`INSERT_AUDIT`] for `a`.
fn with_audit_params<T>(a: &AuditRecord, f: impl FnOnce(Params<'_>) -> T) -> T {
    let (factors, result) = (a.factors.join(","), a.result.as_str());
    f(&[
        &a.time,
        &a.tenant,
        &a.username,
        &a.channel,
        &a.client,
        &a.source,
        &a.mode,
        &factors,
        &result,
        &a.reason,
        &a.transaction,
        &a.host,
    ])
}

fn txn_from_row(r: &Row) -> StoreResult<Transaction> {
    let attrs: String = r.col(11)?;
    // Fail closed: a transaction whose attributes cannot be read is not continued.
    let reply_attributes = decode_reply_attributes(&attrs).ok_or_else(|| {
        StoreError::Corrupt(
            "transactions.reply_attributes is not valid JSON of [type, hex] pairs".into(),
        )
    })?;
    Ok(Transaction {
        reply_attributes,
        id: r.col(0)?,
        tenant_id: r.col(1)?,
        user_id: r.col(2)?,
        username: r.col(3)?,
        client: r.col(4)?,
        source: r.col(5)?,
        first_factor: r.col(6)?,
        step: to_u32(r.col(7)?, "transaction step")?,
        attempts: to_u32(r.col(8)?, "transaction attempts")?,
        created_at: r.col(9)?,
        expires_at: r.col(10)?,
    })
}

const PUSH_COLUMNS: &str = "id, tenant_id, user_id, txn_id, factor_id, token_hash, number, status, detail, username, client, source, created_at, expires_at, decided_at";

fn push_from_row(r: &Row) -> StoreResult<PushRequest> {
    let status: String = r.col(7)?;
    let Some(status) = PushStatus::parse(&status) else {
        return Err(StoreError::Corrupt(format!(
            "push request has an unknown status '{status}'"
        )));
    };
    let number: Option<i64> = r.col(6)?;
    Ok(PushRequest {
        id: r.col(0)?,
        tenant_id: r.col(1)?,
        user_id: r.col(2)?,
        txn_id: r.col(3)?,
        factor_id: r.col(4)?,
        token_hash: r.col(5)?,
        number: number.and_then(|n| u8::try_from(n).ok()),
        status,
        detail: r.col(8)?,
        username: r.col(9)?,
        client: r.col(10)?,
        source: r.col(11)?,
        created_at: r.col(12)?,
        expires_at: r.col(13)?,
        decided_at: r.col(14)?,
    })
}

/// `record_draining_failure` ($7 NULL) and `reserve_draining_failures` ($7 the limit):
/// the source's level drained by the time since its last failure ($4 per $5 seconds),
/// plus $6 new failures; with a limit, counted only if that stays within it and the row
/// is not locked (the upsert's WHERE is re-checked on the newest row version).
const DRAINING_FAILURES: &str = "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
     VALUES ($1, $2, $6, $3)
     ON CONFLICT (tenant_id, throttle_key)
     DO UPDATE SET failures = GREATEST(0, throttles.failures
         - GREATEST(0, excluded.last_failure_at - throttles.last_failure_at) * $4 / $5) + $6,
       last_failure_at = CASE WHEN throttles.failures
         > GREATEST(0, excluded.last_failure_at - throttles.last_failure_at) * $4 / $5
       THEN throttles.last_failure_at
         + (GREATEST(0, excluded.last_failure_at - throttles.last_failure_at) * $4 / $5) * $5 / $4
       ELSE excluded.last_failure_at END
     WHERE $7::BIGINT IS NULL
       OR (GREATEST(0, throttles.failures
             - GREATEST(0, excluded.last_failure_at - throttles.last_failure_at) * $4 / $5) + $6 <= $7
           AND (throttles.locked_until IS NULL OR throttles.locked_until <= $3))
     RETURNING failures, last_failure_at, locked_until";

/// A new user's row (`create_user`, `create_user_unless_alike`): $1 tenant, $2 name,
/// $3 hash, $4 e-mail, $5 phone, $6 groups (JSON), $7 now.
const INSERT_USER: &str = "INSERT INTO users (tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, 0, $7) RETURNING id";

/// The id [`INSERT_USER`] gave `u`, or the error: a name taken already is `AlreadyExists`.
fn inserted_user(u: &NewUser, inserted: Result<Row, tokio_postgres::Error>) -> StoreResult<UserId> {
    match inserted {
        Ok(row) => row.col(0),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
            what: "user",
            name: u.name.clone(),
        }),
        Err(e) => Err(db(e)),
    }
}

fn throttle_from_row(r: &Row) -> StoreResult<Throttle> {
    Ok(Throttle {
        failures: to_u32(r.col(0)?, "throttle failures")?,
        last_failure_at: r.col(1)?,
        locked_until: r.col(2)?,
    })
}

const ENROLL_COLUMNS: &str = "token_hash, tenant_id, tenant, user_id, username, txn_id, factor_id, created_at, expires_at, opened_at";

fn enrollment_from_row(r: &Row) -> StoreResult<Enrollment> {
    Ok(Enrollment {
        token_hash: r.col(0)?,
        tenant_id: r.col(1)?,
        tenant: r.col(2)?,
        user_id: r.col(3)?,
        username: r.col(4)?,
        txn_id: r.col(5)?,
        factor_id: r.col(6)?,
        created_at: r.col(7)?,
        expires_at: r.col(8)?,
        opened_at: r.col(9)?,
    })
}

const PAM_HOST_SELECT: &str =
    "SELECT h.id, h.tenant_id, t.name, h.name, h.created_at, h.last_seen_at, h.revoked
     FROM pam_hosts h JOIN tenants t ON t.id = h.tenant_id";

fn pam_host_from_row(r: &Row) -> StoreResult<PamHost> {
    Ok(PamHost {
        id: r.col(0)?,
        tenant_id: r.col(1)?,
        tenant: r.col(2)?,
        name: r.col(3)?,
        created_at: r.col(4)?,
        last_seen_at: r.col(5)?,
        revoked: r.col::<i64>(6)? != 0,
    })
}

const ADMIN_TOKEN_SELECT: &str =
    "SELECT k.id, k.tenant_id, t.name, k.role, k.name, k.token_hash, k.created_at, k.last_used_at, k.revoked, k.expires_at
     FROM admin_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id";

fn admin_token_from_row(r: &Row) -> StoreResult<AdminToken> {
    let id: String = r.col(0)?;
    let role: String = r.col(3)?;
    let Some(role) = AdminRole::parse(&role) else {
        return Err(StoreError::Corrupt(format!(
            "admin token {id} has role '{role}'"
        )));
    };
    Ok(AdminToken {
        id,
        tenant_id: r.col(1)?,
        tenant: r.col(2)?,
        role,
        name: r.col(4)?,
        hash: r.col(5)?,
        created_at: r.col(6)?,
        last_used_at: r.col(7)?,
        revoked: r.col::<i64>(8)? != 0,
        expires_at: r.col(9)?,
    })
}

impl Store for PgStore {
    fn create_tenant(&self, name: &str, now: UnixTime) -> StoreResult<Tenant> {
        match self.conn()?.try_query_one(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) RETURNING id",
            &[&name, &now],
        )? {
            Ok(row) => Ok(Tenant {
                id: row.col(0)?,
                name: name.to_string(),
                created_at: now,
            }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                what: "tenant",
                name: name.to_string(),
            }),
            Err(e) => Err(db(e)),
        }
    }

    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        self.query_opt(
            "SELECT id, name, created_at FROM tenants WHERE name = $1",
            &[&name],
        )?
        .map(|r| tenant_from_row(&r))
        .transpose()
    }

    fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.query(
            "SELECT id, name, created_at FROM tenants ORDER BY name",
            &[],
        )?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    fn create_user(&self, u: &NewUser, now: UnixTime) -> StoreResult<User> {
        let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
        let inserted = self.conn()?.try_query_one(
            INSERT_USER,
            &[
                &u.tenant_id,
                &u.name,
                &u.password_hash,
                &u.email,
                &u.phone,
                &groups,
                &now,
            ],
        )?;
        Ok(u.stored(inserted_user(u, inserted)?, now))
    }

    fn create_user_unless_alike(
        &self,
        u: &NewUser,
        now: UnixTime,
        fold: &dyn Fn(&str) -> String,
    ) -> StoreResult<Result<User, String>> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The tenant's row lock serializes these creations of every node; the names read
        // after it include every user they committed.
        tx.query_opt(
            "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
            &[&u.tenant_id],
        )?;
        let typed = fold(&u.name);
        for r in tx.query_all(
            "SELECT name FROM users WHERE tenant_id = $1",
            &[&u.tenant_id],
        )? {
            let name: String = r.col(0)?;
            if fold(&name) == typed {
                return Ok(Err(name));
            }
        }
        let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
        let inserted = tx.try_query_one(
            INSERT_USER,
            &[
                &u.tenant_id,
                &u.name,
                &u.password_hash,
                &u.email,
                &u.phone,
                &groups,
                &now,
            ],
        );
        let id = inserted_user(u, inserted)?;
        tx.commit()?;
        Ok(Ok(u.stored(id, now)))
    }

    fn user_by_name(&self, tenant: TenantId, name: &str) -> StoreResult<Option<User>> {
        self.query_opt(
            &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND name = $2"),
            &[&tenant, &name],
        )?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<User>> {
        self.query(
            &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 ORDER BY name"),
            &[&tenant],
        )?
        .iter()
        .map(user_from_row)
        .collect()
    }

    fn user_names(&self, tenant: TenantId) -> StoreResult<Vec<String>> {
        self.query(
            "SELECT name FROM users WHERE tenant_id = $1 ORDER BY name",
            &[&tenant],
        )?
        .iter()
        .map(|r| r.col::<String>(0))
        .collect()
    }

    fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET disabled = $2::BIGINT,
                    session_epoch = session_epoch + CASE WHEN $2::BIGINT <> 0 THEN 1 ELSE 0 END
             WHERE id = $1",
            &[&user, &(disabled as i64)],
        )
        .map(|_| ())
    }

    fn set_password_hash(&self, user: UserId, hash: Option<&str>) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1
             WHERE id = $1",
            &[&user, &hash],
        )
        .map(|_| ())
    }

    fn raise_session_epoch(&self, user: UserId) -> StoreResult<bool> {
        self.execute(
            "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1",
            &[&user],
        )
        .map(|n| n == 1)
    }

    fn set_user_attribute(&self, user: UserId, key: &str, value: Option<&str>) -> StoreResult<()> {
        // Read under a row lock and write in the same transaction: two nodes setting
        // different keys at once both keep their change.
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let Some(row) = tx.query_opt(
            "SELECT attributes_json FROM users WHERE id = $1 FOR UPDATE",
            &[&user],
        )?
        else {
            return Err(StoreError::NotFound {
                what: "user",
                name: user.to_string(),
            });
        };
        let text: String = row.col(0)?;
        let mut attrs: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("user {user} attributes: {e}")))?;
        match value {
            Some(v) => attrs.insert(key.to_string(), v.to_string()),
            None => attrs.remove(key),
        };
        let text = serde_json::to_string(&attrs).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "UPDATE users SET attributes_json = $2 WHERE id = $1",
            &[&user, &text],
        )?;
        tx.commit()
    }

    fn set_directory_info(
        &self,
        user: UserId,
        email: Option<&str>,
        phone: Option<&str>,
        groups: &[String],
    ) -> StoreResult<()> {
        let groups = serde_json::to_string(groups).unwrap_or_else(|_| "[]".into());
        self.execute(
            "UPDATE users SET email = $2, phone = $3, groups_json = $4 WHERE id = $1",
            &[&user, &email, &phone, &groups],
        )
        .map(|_| ())
    }

    fn delete_user(&self, user: UserId) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let tenant: Option<i64> = tx
            .query_opt("SELECT tenant_id FROM users WHERE id = $1", &[&user])?
            .map(|r| r.col(0))
            .transpose()?;
        if let Some(t) = tenant {
            tx.execute(
                "DELETE FROM throttles WHERE tenant_id = $1 AND throttle_key LIKE $2",
                &[&t, &format!("user:{user}:%")],
            )?;
        }
        tx.execute("DELETE FROM users WHERE id = $1", &[&user])?;
        tx.commit()
    }

    fn add_factor(&self, f: &Factor) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO factors ({FACTOR_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                &f.id,
                &f.user_id,
                &f.kind.as_str(),
                &f.state.as_str(),
                &f.sealed_secret,
                &f.params,
                &f.created_at,
                &f.confirmed_at,
                &f.last_used_at,
            ],
        )
        .map(|_| ())
    }

    fn user_with_factors(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> StoreResult<Option<(User, Vec<Factor>)>> {
        // One round trip: the user's row once per factor (or once with NULLs). The SQL is
        // made once (it is also the key of the connections' prepared statements).
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let prefixed = |cols: &str, t: &str| {
                cols.split(", ")
                    .map(|c| format!("{t}.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "SELECT {}, {} FROM users u LEFT JOIN factors f ON f.user_id = u.id
                 WHERE u.tenant_id = $1 AND u.name = $2 ORDER BY f.created_at, f.id",
                prefixed(USER_COLS, "u"),
                prefixed(FACTOR_COLS, "f")
            )
        });
        let rows = self.query(&SQL, &[&tenant, &name])?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let user = user_from_row(first)?;
        let factor_at = USER_COLS.matches(", ").count() + 1;
        let mut factors = Vec::new();
        for r in &rows {
            if r.col::<Option<String>>(factor_at)?.is_some() {
                factors.push(factor_from_row_at(r, factor_at)?);
            }
        }
        Ok(Some((user, factors)))
    }

    fn factors_of(&self, user: UserId) -> StoreResult<Vec<Factor>> {
        self.query(
            &format!(
                "SELECT {FACTOR_COLS} FROM factors WHERE user_id = $1 ORDER BY created_at, id"
            ),
            &[&user],
        )?
        .iter()
        .map(factor_from_row)
        .collect()
    }

    fn confirm_factor(&self, user: UserId, factor_id: &str, now: UnixTime) -> StoreResult<bool> {
        self.execute(
            "UPDATE factors SET state = 'confirmed', confirmed_at = $3
             WHERE id = $2 AND user_id = $1 AND state = 'pending'",
            &[&user, &factor_id, &now],
        )
        .map(|n| n == 1)
    }

    fn confirm_first_factor(
        &self,
        user: UserId,
        factor_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        // Under the user's row lock: a confirmation of another node that committed first
        // is seen by the NOT EXISTS (READ COMMITTED reads after the lock is taken).
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        lock_user(&mut tx, user)?;
        let n = tx.execute(
            "UPDATE factors SET state = 'confirmed', confirmed_at = $3
             WHERE id = $2 AND user_id = $1 AND state = 'pending'
               AND NOT EXISTS (SELECT 1 FROM factors WHERE user_id = $1 AND state = 'confirmed')",
            &[&user, &factor_id, &now],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn remove_factor(&self, user: UserId, factor_id: &str) -> StoreResult<bool> {
        self.execute(
            "DELETE FROM factors WHERE id = $2 AND user_id = $1",
            &[&user, &factor_id],
        )
        .map(|n| n == 1)
    }

    fn touch_factor(&self, factor_id: &str, now: UnixTime) -> StoreResult<()> {
        self.execute(
            "UPDATE factors SET last_used_at = $2 WHERE id = $1",
            &[&factor_id, &now],
        )
        .map(|_| ())
    }

    fn update_factor_params(&self, factor_id: &str, old: &str, new: &str) -> StoreResult<bool> {
        self.execute(
            "UPDATE factors SET params = $3 WHERE id = $1 AND params = $2",
            &[&factor_id, &old, &new],
        )
        .map(|n| n == 1)
    }

    fn add_bypass_code(
        &self,
        user: UserId,
        hash: &str,
        uses: u32,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO bypass_codes (user_id, code_hash, uses_left, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&user, &hash, &i64::from(uses), &expires_at, &now],
        )
        .map(|_| ())
    }

    fn use_bypass_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool> {
        self.execute(
            "UPDATE bypass_codes SET uses_left = uses_left - 1
             WHERE user_id = $1 AND code_hash = $2 AND uses_left > 0 AND expires_at > $3",
            &[&user, &hash, &now],
        )
        .map(|n| n == 1)
    }

    fn has_bypass_code(&self, user: UserId, now: UnixTime) -> StoreResult<bool> {
        self.query_one(
            "SELECT EXISTS (SELECT 1 FROM bypass_codes WHERE user_id = $1 AND uses_left > 0 AND expires_at > $2)",
            &[&user, &now],
        )?
        .col(0)
    }

    fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        now: UnixTime,
    ) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user])?;
        for h in hashes {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
                &[&user, h, &now],
            )?;
        }
        tx.commit()
    }

    fn use_recovery_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool> {
        self.execute(
            "UPDATE recovery_codes SET used_at = $3
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            &[&user, &hash, &now],
        )
        .map(|n| n == 1)
    }

    fn unused_recovery_codes(&self, user: UserId) -> StoreResult<u32> {
        let n: i64 = self
            .query_one(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                &[&user],
            )?
            .col(0)?;
        to_u32(n, "recovery code count")
    }

    fn add_sent_code(
        &self,
        user: UserId,
        factor_id: &str,
        hash: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sent_codes (user_id, factor_id, code_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&user, &factor_id, &hash, &now, &expires_at],
        )
        .map(|_| ())
    }

    fn use_sent_code(
        &self,
        user: UserId,
        hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        let rows = self.query(
            "UPDATE sent_codes SET used_at = $3
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING factor_id",
            &[&user, &hash, &now],
        )?;
        rows.first().map(|r| r.col(0)).transpose()
    }

    fn sent_codes_since(
        &self,
        user: UserId,
        since: UnixTime,
    ) -> StoreResult<(u32, Option<UnixTime>)> {
        let r = self.query_one(
            "SELECT COUNT(*), MAX(created_at) FROM sent_codes WHERE user_id = $1 AND created_at >= $2",
            &[&user, &since],
        )?;
        Ok((to_u32(r.col(0)?, "sent code count")?, r.col(1)?))
    }

    fn claim_code_send(
        &self,
        user: UserId,
        factor_id: &str,
        reservation: &str,
        limits: SendLimits,
        now: UnixTime,
    ) -> StoreResult<SendClaim> {
        let since = now - SEND_WINDOW;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The user's row lock serializes the claims of every node for this user; each
        // statement after it sees the rows the claims before it committed.
        lock_user(&mut tx, user)?;
        let r = tx.query_one(
            "SELECT COUNT(*), MAX(created_at) FROM sent_codes WHERE user_id = $1 AND created_at >= $2",
            &[&user, &since],
        )?;
        let (count, last) = (to_u32(r.col(0)?, "sent code count")?, r.col(1)?);
        if let Some(refusal) = limits.refusal(count, last, now) {
            return Ok(refusal);
        }
        // Spent (`used_at`) and expired from the start: never usable as a code.
        tx.execute(
            "INSERT INTO sent_codes (user_id, factor_id, code_hash, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $4, $4)",
            &[&user, &factor_id, &reservation, &now],
        )?;
        tx.commit()?;
        Ok(SendClaim::Claimed)
    }

    fn confirm_code_send(
        &self,
        user: UserId,
        reservation: &str,
        hash: &str,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        self.execute(
            "UPDATE sent_codes SET code_hash = $3, expires_at = $4, used_at = NULL
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NOT NULL",
            &[&user, &reservation, &hash, &expires_at],
        )
        .map(|n| n == 1)
    }

    fn release_code_send(&self, user: UserId, reservation: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM sent_codes WHERE user_id = $1 AND code_hash = $2 AND used_at IS NOT NULL",
            &[&user, &reservation],
        )
        .map(|_| ())
    }

    fn remember_source(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO remembered_sources (user_id, source, rule, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, source) DO UPDATE SET rule = excluded.rule, created_at = excluded.created_at, expires_at = excluded.expires_at",
            &[&user, &source, &rule, &now, &expires_at],
        )
        .map(|_| ())
    }

    fn remembered_until(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        now: UnixTime,
    ) -> StoreResult<Option<UnixTime>> {
        self
            .query_opt(
                "SELECT expires_at FROM remembered_sources WHERE user_id = $1 AND source = $2 AND rule = $3 AND expires_at > $4",
                &[&user, &source, &rule, &now],
            )?
            .map(|r| r.col(0))
            .transpose()
    }

    fn forget_sources(&self, user: UserId, source: Option<&str>) -> StoreResult<u64> {
        self.execute(
            "DELETE FROM remembered_sources WHERE user_id = $1 AND ($2::TEXT IS NULL OR source = $2)",
            &[&user, &source],
        )
    }

    fn record_otp_use(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        // The primary key decides: of two nodes inserting the same counter at once, one
        // inserts a row and the other waits for it, then inserts nothing.
        self.execute(
            "INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (expires_at, factor_id, counter) DO NOTHING",
            &[&factor_id, &counter, &expires_at],
        )
        .map(|n| n == 1)
    }

    fn use_otp(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<bool> {
        // One statement, one round trip: the insert under the primary key decides (as in
        // record_otp_use), and the factor is touched only when it inserted a row.
        let row = self.query_opt(
            "WITH ins AS (
                 INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (expires_at, factor_id, counter) DO NOTHING
                 RETURNING factor_id
             ), touched AS (
                 UPDATE factors SET last_used_at = $4 WHERE id IN (SELECT factor_id FROM ins)
             )
             SELECT COUNT(*) FROM ins",
            &[&factor_id, &counter, &expires_at, &now],
        )?;
        Ok(row.map(|r| r.get::<_, i64>(0)).unwrap_or(0) == 1)
    }

    fn put_transaction(&self, t: &Transaction) -> StoreResult<()> {
        self.execute(
            &format!("INSERT INTO transactions ({TXN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
            &[
                &t.id,
                &t.tenant_id,
                &t.user_id,
                &t.username,
                &t.client,
                &t.source,
                &t.first_factor,
                &i64::from(t.step),
                &i64::from(t.attempts),
                &t.created_at,
                &t.expires_at,
                &encode_reply_attributes(&t.reply_attributes),
            ],
        )
        .map(|_| ())
    }

    fn take_transaction(
        &self,
        id: &str,
        step: u32,
        binding: &TxnBinding<'_>,
        now: UnixTime,
    ) -> StoreResult<TakenTransaction> {
        let step = i64::from(step);
        let taken = self.query_opt(
            &format!(
                "UPDATE transactions SET step = step + 1
                 WHERE id = $1 AND step = $2 AND expires_at > $3
                   AND tenant_id = $4 AND username = $5 AND client = $6 AND source = $7
                 RETURNING {TXN_COLS}"
            ),
            &[
                &id,
                &step,
                &now,
                &binding.tenant_id,
                &binding.username,
                &binding.client,
                &binding.source,
            ],
        )?;
        if let Some(row) = taken {
            return txn_from_row(&row).map(TakenTransaction::Taken);
        }
        // Not taken: say whether the step is open for someone else (nothing changed).
        let open = self
            .query_opt(
                "SELECT 1 FROM transactions WHERE id = $1 AND step = $2 AND expires_at > $3",
                &[&id, &step, &now],
            )?
            .is_some();
        Ok(if open {
            TakenTransaction::OtherBinding
        } else {
            TakenTransaction::Gone
        })
    }

    fn add_transaction_attempt(&self, id: &str) -> StoreResult<u32> {
        match self.query_opt(
            "UPDATE transactions SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
            &[&id],
        )? {
            Some(r) => to_u32(r.col(0)?, "transaction attempts"),
            None => Ok(u32::MAX),
        }
    }

    fn delete_transaction(&self, id: &str) -> StoreResult<()> {
        self.execute("DELETE FROM transactions WHERE id = $1", &[&id])
            .map(|_| ())
    }

    fn push_by_id(&self, id: &str) -> StoreResult<Option<PushRequest>> {
        self.query_opt(
            &format!("SELECT {PUSH_COLUMNS} FROM push_requests WHERE id = $1"),
            &[&id],
        )?
        .as_ref()
        .map(push_from_row)
        .transpose()
    }

    fn push_of_transaction(&self, txn_id: &str) -> StoreResult<Option<PushRequest>> {
        // `seq` (migration 14) is the order they were added in, as SQLite's row id.
        self.query_opt(
            &format!(
                "SELECT {PUSH_COLUMNS} FROM push_requests WHERE txn_id = $1
                 ORDER BY seq DESC LIMIT 1"
            ),
            &[&txn_id],
        )?
        .as_ref()
        .map(push_from_row)
        .transpose()
    }

    fn decide_push(
        &self,
        id: &str,
        status: PushStatus,
        detail: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        // One statement: the decision and its announcement commit together, and every
        // node listening on the channel wakes the request it holds for this transaction.
        let rows = self.query(
            &format!(
                "WITH decided AS (
                   UPDATE push_requests SET status = $2, detail = $3, decided_at = $4
                   WHERE id = $1 AND status = 'pending' AND expires_at > $4
                   RETURNING txn_id)
                 SELECT pg_notify('{PUSH_CHANNEL}', txn_id) FROM decided"
            ),
            &[&id, &status.as_str(), &detail, &now],
        )?;
        Ok(rows.len() == 1)
    }

    fn pushes_since(&self, user: UserId, since: UnixTime) -> StoreResult<u32> {
        let n: i64 = self
            .query_one(
                "SELECT COUNT(*) FROM push_requests WHERE user_id = $1 AND created_at >= $2",
                &[&user, &since],
            )?
            .col(0)?;
        to_u32(n, "push count")
    }

    fn add_push_capped(
        &self,
        p: &PushRequest,
        since: UnixTime,
        max: u32,
    ) -> StoreResult<PushAdded> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // As for sent codes: the user's row lock serializes the nodes' pushes to the user.
        lock_user(&mut tx, p.user_id)?;
        let n: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM push_requests WHERE user_id = $1 AND created_at >= $2",
                &[&p.user_id, &since],
            )?
            .col(0)?;
        let sent = to_u32(n, "push count")?;
        if sent >= max {
            return Ok(PushAdded::CapReached { sent });
        }
        tx.execute(
            &format!("INSERT INTO push_requests ({PUSH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"),
            &[
                &p.id,
                &p.tenant_id,
                &p.user_id,
                &p.txn_id,
                &p.factor_id,
                &p.token_hash,
                &p.number.map(i64::from),
                &p.status.as_str(),
                &p.detail,
                &p.username,
                &p.client,
                &p.source,
                &p.created_at,
                &p.expires_at,
                &p.decided_at,
            ],
        )?;
        tx.commit()?;
        Ok(PushAdded::Added)
    }

    fn push_events(&self) -> Option<PushEvents> {
        let runtime = self.runtime.as_ref()?;
        let (tx, rx) = tokio::sync::mpsc::channel(PUSH_EVENT_BUFFER);
        let listener = PushListener {
            config: self.config.clone(),
            tls: self.tls.clone(),
            url: redact_url(&self.url),
            connect_timeout: self.connect_timeout,
            tx,
            missed: false,
        };
        runtime.spawn(listener.run());
        Some(rx)
    }

    fn shared(&self) -> bool {
        true
    }

    fn throttle(&self, tenant: TenantId, key: &str) -> StoreResult<Throttle> {
        match self.query_opt(
            "SELECT failures, last_failure_at, locked_until FROM throttles
             WHERE tenant_id = $1 AND throttle_key = $2",
            &[&tenant, &key],
        )? {
            Some(r) => throttle_from_row(&r),
            None => Ok(Throttle::default()),
        }
    }

    fn record_failure(&self, tenant: TenantId, key: &str, now: UnixTime) -> StoreResult<Throttle> {
        throttle_from_row(&self.query_one(
            "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (tenant_id, throttle_key)
             DO UPDATE SET failures = throttles.failures + 1, last_failure_at = excluded.last_failure_at
             RETURNING failures, last_failure_at, locked_until",
            &[&tenant, &key, &now],
        )?)
    }

    fn record_draining_failure(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
        now: UnixTime,
        per_window: u32,
        window: i64,
    ) -> StoreResult<Throttle> {
        let per_window = i64::from(per_window.max(1));
        let window = window.max(1);
        let failures = i64::from(failures.max(1));
        throttle_from_row(&self.query_one(
            DRAINING_FAILURES,
            &[
                &tenant,
                &key,
                &now,
                &per_window,
                &window,
                &failures,
                &None::<i64>,
            ],
        )?)
    }

    fn reserve_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        limit: u32,
    ) -> StoreResult<Reservation> {
        if limit == 0 {
            return Ok(Reservation::Refused(self.throttle(tenant, key)?));
        }
        // One statement: the row's lock is taken for the conflict, and the condition is
        // checked against the row as the last commit left it (READ COMMITTED re-checks an
        // upsert's WHERE on the newest version), so reservations of several nodes at the
        // same moment never pass `limit` together.
        match self.query_opt(
            "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (tenant_id, throttle_key)
             DO UPDATE SET failures = throttles.failures + 1
             WHERE throttles.failures < $4
               AND (throttles.locked_until IS NULL OR throttles.locked_until <= $3)
             RETURNING failures, last_failure_at, locked_until",
            &[&tenant, &key, &now, &i64::from(limit)],
        )? {
            Some(r) => Ok(Reservation::Reserved(throttle_from_row(&r)?)),
            None => Ok(Reservation::Refused(self.throttle(tenant, key)?)),
        }
    }

    fn reserve_draining_failures(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
        now: UnixTime,
        per_window: u32,
        window: i64,
        limit: u32,
    ) -> StoreResult<Reservation> {
        let failures = failures.max(1);
        if failures > limit {
            return Ok(Reservation::Refused(self.throttle(tenant, key)?));
        }
        let per_window = i64::from(per_window.max(1));
        let window = window.max(1);
        let (failures, limit) = (i64::from(failures), i64::from(limit));
        // `record_draining_failure`, with the drained level plus the new failures compared
        // with `limit` before anything is counted (see `reserve_failure`).
        match self.query_opt(
            DRAINING_FAILURES,
            &[
                &tenant,
                &key,
                &now,
                &per_window,
                &window,
                &failures,
                &Some(limit),
            ],
        )? {
            Some(r) => Ok(Reservation::Reserved(throttle_from_row(&r)?)),
            None => Ok(Reservation::Refused(self.throttle(tenant, key)?)),
        }
    }

    fn release_failures(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
    ) -> StoreResult<Throttle> {
        // A row left with nothing is deleted, else updated: one statement (the UPDATE
        // skips the row the DELETE took). The count the DELETE goes by is read under the
        // row's lock (`cur`), i.e. as the last release on another node left it: read from
        // the statement's snapshot, releases at the same moment each saw more than their
        // own and the last one left a row of 0 failures behind.
        match self.query_opt(
            "WITH cur AS (
               SELECT failures FROM throttles WHERE tenant_id = $1 AND throttle_key = $2
               FOR UPDATE),
             gone AS (
               DELETE FROM throttles WHERE tenant_id = $1 AND throttle_key = $2
               AND (SELECT failures FROM cur) <= $3 AND locked_until IS NULL
               RETURNING 1)
             UPDATE throttles SET failures = GREATEST(0, failures - $3)
             WHERE tenant_id = $1 AND throttle_key = $2 AND NOT EXISTS (SELECT 1 FROM gone)
             RETURNING failures, last_failure_at, locked_until",
            &[&tenant, &key, &i64::from(failures)],
        )? {
            Some(r) => throttle_from_row(&r),
            None => Ok(Throttle::default()),
        }
    }

    fn keep_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        lock_at: u32,
        until: UnixTime,
    ) -> StoreResult<Throttle> {
        match self.query_opt(
            "UPDATE throttles SET last_failure_at = GREATEST(last_failure_at, $3),
               locked_until = CASE WHEN failures >= $4 THEN $5 ELSE locked_until END
             WHERE tenant_id = $1 AND throttle_key = $2
             RETURNING failures, last_failure_at, locked_until",
            &[&tenant, &key, &now, &i64::from(lock_at), &until],
        )? {
            Some(r) => throttle_from_row(&r),
            None => Ok(Throttle::default()),
        }
    }

    fn lock_until(&self, tenant: TenantId, key: &str, until: UnixTime) -> StoreResult<()> {
        self.execute(
            "UPDATE throttles SET locked_until = $3 WHERE tenant_id = $1 AND throttle_key = $2",
            &[&tenant, &key, &until],
        )
        .map(|_| ())
    }

    fn clear_throttle(&self, tenant: TenantId, key: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM throttles WHERE tenant_id = $1 AND throttle_key = $2",
            &[&tenant, &key],
        )
        .map(|_| ())
    }

    fn clear_expired_lock(
        &self,
        tenant: TenantId,
        key: &str,
        seen: &Throttle,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let Some(until) = seen.locked_until.filter(|&until| until <= now) else {
            return Ok(false);
        };
        // The row as it was read, and nothing newer: a lock another node set since (or a
        // failure it counted) makes this delete nothing.
        self.execute(
            "DELETE FROM throttles WHERE tenant_id = $1 AND throttle_key = $2
             AND locked_until = $3 AND failures = $4 AND last_failure_at = $5",
            &[
                &tenant,
                &key,
                &until,
                &i64::from(seen.failures),
                &seen.last_failure_at,
            ],
        )
        .map(|n| n == 1)
    }

    fn append_audit(&self, a: &AuditRecord) -> StoreResult<()> {
        with_audit_params(a, |p| self.execute(INSERT_AUDIT, p)).map(|_| ())
    }

    fn record_fail_opens(
        &self,
        reports: &[super::FailOpenRecord],
        now: UnixTime,
    ) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let fresh = super::new_fail_open_ids(reports, |r, id| {
            tx.execute(
                "INSERT INTO fail_open_reports (tenant, host, id, received_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &r.audit.tenant,
                    &r.audit.host.as_deref().unwrap_or(""),
                    &id,
                    &now,
                ],
            )
            .map(|n| n == 1)
        })?;
        let mut recorded = 0;
        for (r, fresh) in reports.iter().zip(fresh) {
            if fresh {
                with_audit_params(&r.audit, |p| tx.execute(INSERT_AUDIT, p))?;
                recorded += 1;
            }
        }
        tx.commit()?;
        Ok(recorded)
    }

    fn list_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::from(if f.limit == 0 { 1000 } else { f.limit });
        let rows = self.query(
            "SELECT time, tenant, username, channel, client, source, mode, factors, result, reason, transaction_id, host
             FROM audit
             WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR username = $2)
               AND ($3::BIGINT IS NULL OR time >= $3)
             ORDER BY id DESC LIMIT $4",
            &[&f.tenant, &f.username, &f.since, &limit],
        )?;
        let mut out: Vec<AuditRecord> = rows
            .iter()
            .map(|r| -> StoreResult<AuditRecord> {
                let factors: String = r.col(7)?;
                let result: String = r.col(8)?;
                Ok(AuditRecord {
                    time: r.col(0)?,
                    tenant: r.col(1)?,
                    username: r.col(2)?,
                    channel: r.col(3)?,
                    client: r.col(4)?,
                    source: r.col(5)?,
                    mode: r.col(6)?,
                    factors: factors
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    result: if result == "accept" {
                        AuditResult::Accept
                    } else {
                        AuditResult::Reject
                    },
                    reason: r.col(9)?,
                    transaction: r.col(10)?,
                    host: r.col(11)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        out.reverse();
        Ok(out)
    }

    fn purge_expired(&self, now: UnixTime) -> StoreResult<u64> {
        let mut conn = self.conn()?;
        let mut n = 0;
        n += conn.execute("DELETE FROM transactions WHERE expires_at <= $1", &[&now])?;
        n += conn.execute("DELETE FROM used_otps WHERE expires_at <= $1", &[&now])?;
        n += conn.execute(
            "DELETE FROM bypass_codes WHERE expires_at <= $1 OR uses_left <= 0",
            &[&now],
        )?;
        // Sent codes stay an hour past expiry: the hourly send quota counts them.
        n += conn.execute(
            "DELETE FROM sent_codes WHERE expires_at <= $1",
            &[&(now - 3600)],
        )?;
        n += conn.execute(
            "DELETE FROM remembered_sources WHERE expires_at <= $1",
            &[&now],
        )?;
        // Pushes stay a day past expiry: the anti-fatigue window counts them.
        n += conn.execute(
            "DELETE FROM push_requests WHERE expires_at <= $1",
            &[&(now - 86_400)],
        )?;
        n += conn.execute("DELETE FROM enrollments WHERE expires_at <= $1", &[&now])?;
        n += conn.execute(
            "DELETE FROM fail_open_reports WHERE received_at <= $1",
            &[&(now - super::FAIL_OPEN_IDS_KEPT)],
        )?;
        // A source's bucket two days after its last failure has drained (windows are at
        // most a day) and any block has ended.
        n += conn.execute(
            "DELETE FROM throttles WHERE throttle_key LIKE 'source:%'
             AND last_failure_at <= $1 AND COALESCE(locked_until, 0) <= $1",
            &[&(now - super::SOURCE_ROWS_KEPT)],
        )?;
        Ok(n)
    }

    fn add_admin_token(&self, t: &AdminToken) -> StoreResult<()> {
        match self.conn()?.try_execute(
            "INSERT INTO admin_tokens (id, tenant_id, role, name, token_hash, created_at, last_used_at, revoked, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &t.id,
                &t.tenant_id,
                &t.role.as_str(),
                &t.name,
                &t.hash,
                &t.created_at,
                &t.last_used_at,
                &(t.revoked as i64),
                &t.expires_at,
            ],
        )? {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                what: "token",
                name: t.id.clone(),
            }),
            Err(e) => Err(db(e)),
        }
    }

    fn admin_token(&self, id: &str) -> StoreResult<Option<AdminToken>> {
        self.query_opt(&format!("{ADMIN_TOKEN_SELECT} WHERE k.id = $1"), &[&id])?
            .as_ref()
            .map(admin_token_from_row)
            .transpose()
    }

    fn list_admin_tokens(&self, tenant: Option<TenantId>) -> StoreResult<Vec<AdminToken>> {
        self.query(
            &format!(
                "{ADMIN_TOKEN_SELECT} WHERE ($1::BIGINT IS NULL OR k.tenant_id = $1) ORDER BY k.created_at, k.id"
            ),
            &[&tenant],
        )?
        .iter()
        .map(admin_token_from_row)
        .collect()
    }

    fn revoke_admin_token(&self, id: &str) -> StoreResult<bool> {
        self.execute(
            "UPDATE admin_tokens SET revoked = 1 WHERE id = $1 AND revoked = 0",
            &[&id],
        )
        .map(|n| n == 1)
    }

    fn touch_admin_token(&self, id: &str, now: UnixTime) -> StoreResult<()> {
        self.execute(
            "UPDATE admin_tokens SET last_used_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .map(|_| ())
    }

    fn import_users(&self, users: &[ImportUser], now: UnixTime) -> StoreResult<(u64, u64)> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (mut created, mut updated) = (0u64, 0u64);
        for entry in users {
            match entry {
                ImportUser::Create {
                    user: u,
                    factor,
                    disabled,
                } => {
                    let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
                    let disabled = i64::from(*disabled);
                    let row = match tx.try_query_one(
                        "INSERT INTO users (tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $8, $7) RETURNING id",
                        &[&u.tenant_id, &u.name, &u.password_hash, &u.email, &u.phone, &groups, &now, &disabled],
                    ) {
                        Ok(row) => row,
                        Err(e) if is_unique_violation(&e) => {
                            return Err(StoreError::AlreadyExists {
                                what: "user",
                                name: u.name.clone(),
                            })
                        }
                        Err(e) => return Err(db(e)),
                    };
                    let user_id: i64 = row.col(0)?;
                    if let Some(f) = factor {
                        tx.execute(
                            &format!("INSERT INTO factors ({FACTOR_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                            &[
                                &f.id,
                                &user_id,
                                &f.kind.as_str(),
                                &f.state.as_str(),
                                &f.sealed_secret,
                                &f.params,
                                &f.created_at,
                                &f.confirmed_at,
                                &f.last_used_at,
                            ],
                        )?;
                    }
                    created += 1;
                }
                ImportUser::Update {
                    user,
                    email,
                    phone,
                    groups,
                    password_hash,
                    disabled,
                } => {
                    let disabled = disabled.map(i64::from);
                    let groups = groups
                        .as_ref()
                        .map(|g| serde_json::to_string(g).unwrap_or_else(|_| "[]".into()));
                    let n = tx.execute(
                        "UPDATE users SET
                           email = CASE WHEN $2::BOOLEAN THEN $3::TEXT ELSE email END,
                           phone = CASE WHEN $4::BOOLEAN THEN $5::TEXT ELSE phone END,
                           groups_json = COALESCE($6::TEXT, groups_json),
                           password_hash = COALESCE($7::TEXT, password_hash),
                           disabled = COALESCE($8::BIGINT, disabled),
                           session_epoch = session_epoch
                               + CASE WHEN $7::TEXT IS NOT NULL OR $8::BIGINT = 1 THEN 1 ELSE 0 END
                         WHERE id = $1",
                        &[
                            user,
                            &email.is_some(),
                            &email.as_ref().and_then(|e| e.as_deref()),
                            &phone.is_some(),
                            &phone.as_ref().and_then(|p| p.as_deref()),
                            &groups,
                            password_hash,
                            &disabled,
                        ],
                    )?;
                    if n != 1 {
                        return Err(StoreError::NotFound {
                            what: "user",
                            name: user.to_string(),
                        });
                    }
                    updated += 1;
                }
            }
        }
        tx.commit()?;
        Ok((created, updated))
    }

    fn add_enrollment(&self, e: &Enrollment) -> StoreResult<()> {
        match self.conn()?.try_execute(
            &format!("INSERT INTO enrollments ({ENROLL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &e.token_hash,
                &e.tenant_id,
                &e.tenant,
                &e.user_id,
                &e.username,
                &e.txn_id,
                &e.factor_id,
                &e.created_at,
                &e.expires_at,
                &e.opened_at,
            ],
        )? {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyExists {
                what: "enrolment link",
                name: "(hash)".into(),
            }),
            Err(err) => Err(db(err)),
        }
    }

    fn open_enrollment(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<Enrollment>> {
        // One conditional UPDATE claims the link: of two nodes opening it at once, one wins.
        self.query_opt(
            &format!(
                "UPDATE enrollments SET opened_at = $2
                 WHERE token_hash = $1 AND opened_at IS NULL AND expires_at > $2
                 RETURNING {ENROLL_COLUMNS}"
            ),
            &[&token_hash, &now],
        )?
        .as_ref()
        .map(enrollment_from_row)
        .transpose()
    }

    fn set_enrollment_factor(&self, token_hash: &str, factor_id: &str) -> StoreResult<bool> {
        self.execute(
            "UPDATE enrollments SET factor_id = $2
             WHERE token_hash = $1 AND factor_id IS NULL AND opened_at IS NOT NULL",
            &[&token_hash, &factor_id],
        )
        .map(|n| n == 1)
    }

    fn enrollment_of_transaction(&self, txn_id: &str) -> StoreResult<Option<Enrollment>> {
        // No row id here: within one second the link expiring last is the newest.
        self.query_opt(
            &format!(
                "SELECT {ENROLL_COLUMNS} FROM enrollments WHERE txn_id = $1
                 ORDER BY created_at DESC, expires_at DESC, token_hash DESC LIMIT 1"
            ),
            &[&txn_id],
        )?
        .as_ref()
        .map(enrollment_from_row)
        .transpose()
    }

    fn create_pam_host(
        &self,
        tenant: TenantId,
        name: &str,
        token_hash: &str,
        now: UnixTime,
    ) -> StoreResult<PamHost> {
        let mut conn = self.conn()?;
        // One statement: a live host is never replaced, a revoked one is.
        let changed = conn.execute(
            "INSERT INTO pam_hosts (tenant_id, name, token_hash, created_at, last_seen_at, revoked)
             VALUES ($1, $2, $3, $4, NULL, 0)
             ON CONFLICT (tenant_id, name) DO UPDATE
             SET token_hash = excluded.token_hash, created_at = excluded.created_at,
                 last_seen_at = NULL, revoked = 0
             WHERE pam_hosts.revoked <> 0",
            &[&tenant, &name, &token_hash, &now],
        )?;
        if changed == 0 {
            return Err(StoreError::AlreadyExists {
                what: "host",
                name: name.to_string(),
            });
        }
        pam_host_from_row(&conn.query_one(
            &format!("{PAM_HOST_SELECT} WHERE h.tenant_id = $1 AND h.name = $2"),
            &[&tenant, &name],
        )?)
    }

    fn list_pam_hosts(&self, tenant: TenantId) -> StoreResult<Vec<PamHost>> {
        self.query(
            &format!("{PAM_HOST_SELECT} WHERE h.tenant_id = $1 ORDER BY h.name"),
            &[&tenant],
        )?
        .iter()
        .map(pam_host_from_row)
        .collect()
    }

    fn revoke_pam_host(&self, tenant: TenantId, name: &str) -> StoreResult<bool> {
        self.execute(
            "UPDATE pam_hosts SET revoked = 1 WHERE tenant_id = $1 AND name = $2 AND revoked = 0",
            &[&tenant, &name],
        )
        .map(|n| n > 0)
    }

    fn pam_host_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<PamHost>> {
        self.query_opt(
            &format!("{PAM_HOST_SELECT} WHERE h.token_hash = $1"),
            &[&token_hash],
        )?
        .as_ref()
        .map(pam_host_from_row)
        .transpose()
    }

    fn touch_pam_host(&self, host: i64, now: UnixTime) -> StoreResult<()> {
        self.execute(
            "UPDATE pam_hosts SET last_seen_at = $2::BIGINT
             WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at <= $2::BIGINT - 60)",
            &[&host, &now],
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db.example:5432/p?sslmode=disable"),
            "postgres://app:***@***"
        );
        assert_eq!(
            redact_url("postgresql://app@db/p?password=hunter2&sslmode=prefer"),
            "postgresql://app@db/p?password=***&sslmode=prefer"
        );
        assert_eq!(
            redact_url("postgres://app@db/p?pass%77ord=hunter2&sslpassword=x"),
            "postgres://app@db/p?pass%77ord=***&sslpassword=***"
        );
        assert_eq!(redact_url("postgres://db/p"), "postgres://db/p");
        assert_eq!(
            redact_url("sqlite:///var/lib/portcullis/p@1.db"),
            "sqlite:///var/lib/portcullis/p@1.db"
        );
    }

    /// Passwords holding '/', '?', '#', ':' or '@': the driver takes all up to the first
    /// '@' as the credentials (the URL connects), and none of it is ever shown.
    #[test]
    fn passwords_with_url_punctuation_are_redacted_as_the_driver_reads_them() {
        let cases = [
            (
                "postgres://portcullis:Ab/9x+Qz@db.internal/portcullis",
                "Ab/9x+Qz",
                "postgres://portcullis:***@db.internal/portcullis",
            ),
            (
                "postgres://portcullis:Ab?9x=Qz@db.internal:5432/portcullis?sslmode=disable",
                "Ab?9x=Qz",
                "postgres://portcullis:***@db.internal:5432/portcullis?sslmode=disable",
            ),
            (
                "postgresql://portcullis:Ab#9x/Qz@db.internal/portcullis",
                "Ab#9x/Qz",
                "postgresql://portcullis:***@db.internal/portcullis",
            ),
            (
                "postgres://portcullis:a:b/c?d#e@db.internal/p",
                "a:b/c?d#e",
                "postgres://portcullis:***@db.internal/p",
            ),
            (
                "postgres://portcullis:Ab%409x@db.internal/p",
                "Ab%409x",
                "postgres://portcullis:***@db.internal/p",
            ),
        ];
        for (url, password, shown) in cases {
            // The driver reads the password as the test means it (the URL works) ...
            let (config, _) = crate::store::parse_postgres_url(url).expect(url);
            assert_eq!(
                config
                    .get_password()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                Some(super::super::pg_tls::percent_decode(password)),
                "{url}"
            );
            // ... and it is never shown, also not in the Debug of the settings.
            assert_eq!(redact_url(url), shown);
            let debug = format!("{:?}", PgSettings::new(url));
            assert!(!debug.contains(password), "{debug}");
            assert!(debug.contains(shown), "{debug}");
        }
        // An '@' in the password, unescaped: the driver ends the password at the first one
        // (and the URL is refused by `config check`), but the rest is not shown either.
        assert_eq!(
            redact_url("postgres://portcullis:Ab@9/x@db.internal/p"),
            "postgres://portcullis:***@***"
        );
        // No user and password before the host, but a password in the query with an '@':
        // the driver takes the text before that '@' for the credentials.
        assert_eq!(
            redact_url("postgres://db.internal/p?sslmode=disable&password=se@cret&x=1"),
            "postgres://***"
        );
    }

    /// A driver error is shown with its causes (here a connection string the driver
    /// refuses, which the driver's own text calls only "invalid connection string").
    #[test]
    fn driver_errors_are_shown_with_their_cause() {
        let e = "postgres://u@db/p?connect_timeout=soon"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        let text = describe_error(&e);
        assert!(text.starts_with("invalid connection string: "), "{text}");
        assert!(text.contains("connect_timeout"), "{text}");
        let StoreError::Database(m) = db(e) else {
            panic!("not a database error")
        };
        assert_eq!(m, text);
    }

    #[test]
    fn migrations_translate_to_postgres_types() {
        for (v, sql) in MIGRATIONS {
            let t = translate_sql(sql);
            assert!(!t.contains("INTEGER"), "migration {v}: {t}");
            assert!(!t.contains("BLOB"), "migration {v}: {t}");
        }
        assert!(translate_sql(MIGRATIONS[0].1).contains("id          BIGSERIAL PRIMARY KEY"));
        let t = translate_sql(
            MIGRATIONS
                .iter()
                .find(|m| m.0 == 12)
                .expect("migration 12")
                .1,
        );
        assert!(
            !t.contains("WITHOUT ROWID") && !t.contains("json_extract"),
            "{t}"
        );
        // The old table is locked before it is copied (a comment to SQLite).
        assert!(
            t.trim_start()
                .starts_with("LOCK TABLE used_otps IN EXCLUSIVE MODE;"),
            "{t}"
        );
        // SQLite's replay log is SQLite's alone: PostgreSQL keeps its keyed table.
        let m18 = MIGRATIONS
            .iter()
            .find(|m| m.0 == 18)
            .expect("migration 18")
            .1;
        assert!(m18.contains("DROP TABLE used_otps"));
        assert_eq!(translate_sql(m18), "");
    }
}
