//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: `journal_mode = WAL` with `synchronous = NORMAL`. A killed process loses
//! nothing that was committed; an operating-system crash or power loss may lose the last
//! commits before the WAL was synced, but never corrupts the file. One connection behind a
//! mutex serves the process; statements are short and prepared once (cached).

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::group_commit::{GroupCommit, Hooks};
use super::migrations::MIGRATIONS;
use super::replay::{LastUse, Replay};
use super::{
    BatchUnits, PushAdded, Reservation, SendClaim, SendLimits, Store, StoreError, StoreResult,
    TakenTransaction, TxnBinding, SEND_WINDOW,
};
use crate::clock::UnixTime;
use crate::engine::ReplyAttribute;
use crate::model::*;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    /// The background WAL checkpoints of a file-backed store. Declared first: dropped
    /// (its connection closed) before `conn`, the last connection, which then runs
    /// SQLite's final checkpoint and removes the WAL.
    checkpointer: Option<Checkpointer>,
    /// The connection; reentrant so that a batch (see [`Store::batch`]) can hold it while
    /// the store calls made inside the batch, on the same thread, take it again.
    conn: ReentrantMutex<Connection>,
    /// The hot writes of a login (replay cache, audit, throttle, transactions) are
    /// committed in groups (see `group_commit`).
    writes: GroupCommit,
    /// The TOTP replay cache, checked in memory (see `replay`); told of the fate of every
    /// write transaction of `conn`.
    pub(super) replay: Arc<Replay>,
    /// Set by the background checkpoint when the WAL has grown large (see [`WAL_LARGE`]).
    wal_large: Arc<AtomicBool>,
    /// See [`SqliteStore::with_shared`].
    shared: bool,
}

/// How often the background thread copies the WAL back into the database.
///
/// Each checkpoint that copies the whole WAL makes the next commit start the WAL over, and
/// SQLite syncs the new WAL header inside that commit: an `fsync` on the login path, which
/// waits for the checkpoint's own writes to reach the disk. Every 100 ms that was up to ten
/// such commits a second, the batch thread blocked 6-13 ms in some (off the CPU, not in the
/// run queue): row a's p99 at half peak (37,000 logins/s) was 4.9-9.3 ms, median 8.2; once a
/// second it is 2.7-5.6 ms, median 2.9, at the same CPU (five alternating rounds,
/// docs/BENCHMARKS.md). The WAL is then at most about a second of commits larger.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// A thread with its own connection that runs passive WAL checkpoints. A checkpoint run by
/// a commit (SQLite's automatic one) holds up that commit, and with group commit every
/// login waiting on it, for the time it takes to copy megabytes and sync the file: the
/// tail latency of logins. A passive checkpoint on another connection runs beside the
/// writer (WAL lets it) and never blocks it.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// None (the commit-time checkpoint then does the work) if it cannot start.
    fn start(path: &Path, wal_large: Arc<AtomicBool>) -> Option<Self> {
        let conn = match Connection::open(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no background WAL checkpoints (commits will checkpoint)");
                return None;
            }
        };
        let _ = conn.busy_timeout(Duration::from_secs(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Copying the WAL back is never urgent, logins are: on a busy machine this
                // thread gives way to them rather than take a core's time slice in turn
                // (it still runs at a tenth of their weight, so the WAL keeps being copied).
                if let Err(e) = rustix::process::nice(10) {
                    tracing::debug!(error = %e, "checkpoint thread keeps the normal priority");
                }
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::park_timeout(CHECKPOINT_EVERY);
                    match checkpoint(&conn) {
                        Ok(large) => {
                            if large {
                                wal_large.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "background WAL checkpoint failed; retried")
                        }
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no background WAL checkpoint thread"))
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Factors' last uses written per transaction (see `replay`): a few milliseconds of the
/// connection at most.
const LAST_USE_CHUNK: usize = 256;

/// Rows deleted per statement by [`Store::purge_expired`] (about a millisecond's work),
/// and the shortest pause between two such statements, in which logins have the
/// connection.
const PURGE_CHUNK: usize = 100;
const PURGE_PAUSE: Duration = Duration::from_millis(1);

/// The oldest rows of the TOTP replay cache a purge statement looks at (see
/// `purge_used_otps`).
const PURGE_SCAN: usize = 10 * PURGE_CHUNK;

/// After a purge chunk that began at `started`: the purge holds the connection a fifth of
/// the time at most. A burst of logins expires as a burst of rows, and deleting them must
/// not stall the logins of that moment.
fn purge_pause(started: std::time::Instant) {
    std::thread::sleep((started.elapsed() * 4).max(PURGE_PAUSE));
}

/// A passive checkpoint; says whether the WAL has grown past [`WAL_LARGE`] frames.
fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    Ok(log >= WAL_LARGE)
}

/// WAL frames (pages) beyond which the writer finishes a checkpoint itself: 64 MiB.
///
/// A WAL starts over from its beginning only when a writer begins after a checkpoint that
/// copied all of it. Under a steady stream of commits (batches of logins back to back) the
/// background checkpoint never quite catches up, and the WAL would grow until SQLite's
/// automatic checkpoint ran in every commit. So once the WAL is this large, the writer runs
/// one passive checkpoint between two of its transactions: it copies only what the
/// background one has not copied yet, and the next transaction starts the WAL over.
///
/// That restart holds the writer for two `fsync`s (6-10 ms on the development VM under
/// load), and every login arriving meanwhile waits: the tail of code-only logins. The
/// copying is the background thread's either way, so the size only sets how often the
/// writer stalls: at 16 MiB about every 0.65 s at 9,400 logins/s (p99 there 4.6-10.7 ms,
/// median 9.3), at 64 MiB a quarter as often (p99 3.9-5.5 ms, median 4.6; nine open-loop
/// runs each, alternating; docs/BENCHMARKS.md). SQLite's own checkpoint in a commit
/// ([`AUTOCHECKPOINT`]) must stay above it.
const WAL_LARGE: i64 = 16_384;

/// The automatic checkpoint inside a commit, in WAL frames (about 160 MiB): only a safety
/// net should the background thread and the writer's restart both fall behind.
const AUTOCHECKPOINT: i64 = 40_000;
const _: () = assert!(WAL_LARGE < AUTOCHECKPOINT);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The last uses still held (see `replay`), before the connection closes.
        if let Err(e) = self.write_last_uses(true, usize::MAX) {
            tracing::warn!(error = %e, "the factors' last uses of the last moments could not be written");
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    // SQLite reports a full disk as SQLITE_FULL ("database or disk is full") when a page
    // cannot be appended, but as a bare "disk I/O error" when the -shm file cannot be
    // extended (a start on a full disk) or another write fails: name the likely cause.
    let hint = match &e {
        rusqlite::Error::SqliteFailure(err, _)
            if err.code == rusqlite::ErrorCode::SystemIoFailure =>
        {
            let what = match err.extended_code {
                ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ => {
                    "reading the database failed"
                }
                _ => "writing the database, its -wal or its -shm file failed",
            };
            format!(
                " (extended code {}: {what}; is the disk full or failing?)",
                err.extended_code
            )
        }
        _ => String::new(),
    };
    StoreError::Database(format!("{e}{hint}"))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(err, _)
            if err.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

thread_local! {
    /// The store (its address) whose batch this thread runs, 0 if none: see
    /// [`Store::batch`]. Store calls of this thread on that store run in the batch.
    static BATCH_OF: Cell<usize> = const { Cell::new(0) };

    /// The row ids of the factors this thread read last with [`Store::user_with_factors`]
    /// (factor id, row id): a login's factor's last use is then written by row id, in
    /// row-id order with others (see `replay`), without a lookup of its own. Only a hint:
    /// the write checks the factor id of the row.
    static FACTOR_ROWS: std::cell::RefCell<Vec<(Box<str>, i64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` atomically: in a transaction of its own, or, inside a transaction (a batch),
/// in a savepoint that is undone alone if `f` fails.
fn atomically<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    run_sql(conn, "SAVEPOINT a").map_err(db)?;
    let result = f(conn);
    let end = match &result {
        Ok(_) => run_sql(conn, "RELEASE a"),
        Err(_) => Err(rusqlite::Error::InvalidQuery),
    };
    if let Err(e) = end {
        // Undo (a failed RELEASE of the outermost savepoint is a failed COMMIT: a full
        // disk, say), so that the connection is left as it was found.
        let _ = run_sql(conn, "ROLLBACK TO a");
        let _ = run_sql(conn, "RELEASE a");
        if result.is_ok() {
            return Err(db(e));
        }
    }
    result
}

/// Runs one statement without parameters, prepared once.
pub(super) fn run_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A batch in progress on this thread (see [`Store::batch`]); leaving it (also by a
/// panic) ends the batch mode and undoes a transaction left open.
struct Batch<'a> {
    conn: &'a Connection,
    replay: &'a Replay,
    /// Set once COMMIT succeeded; the replay cache is told how the batch ended.
    committed: bool,
}

impl<'a> Batch<'a> {
    fn enter(store: &'a SqliteStore, conn: &'a Connection) -> StoreResult<Self> {
        run_sql(conn, "BEGIN IMMEDIATE").map_err(db)?;
        BATCH_OF.with(|b| b.set(store.id()));
        Ok(Self {
            conn,
            replay: &store.replay,
            committed: false,
        })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        BATCH_OF.with(|b| b.set(0));
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        // Also when SQLite rolled the transaction back itself (a full disk) and a panic
        // followed: every end is reported.
        self.replay.ended(self.committed);
    }
}

impl BatchUnits for Batch<'_> {
    fn begin_unit(&self) -> StoreResult<()> {
        run_sql(self.conn, "SAVEPOINT u").map_err(db)
    }

    fn end_unit(&self, keep: bool) -> StoreResult<()> {
        if keep {
            run_sql(self.conn, "RELEASE u").map_err(db)
        } else {
            run_sql(self.conn, "ROLLBACK TO u")
                .and_then(|()| run_sql(self.conn, "RELEASE u"))
                .map_err(db)
        }
    }
}

/// The store's file at `path`, open: made anew (0600, never through a symbolic link: a
/// dangling link there is refused, not followed), or the file already there, checked by
/// [`existing_store_file`].
fn store_file(path: &Path) -> StoreResult<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let created = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    );
    match created {
        Ok(fd) => Ok(fd.into()),
        Err(rustix::io::Errno::EXIST) => existing_store_file(path)?.ok_or_else(|| {
            StoreError::Database(format!(
                "{} was removed while the store was being opened; try again",
                path.display()
            ))
        }),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create {}: {}",
            path.display(),
            std::io::Error::from(e)
        ))),
    }
}

/// Checks the store's file (or its `-wal` or `-shm`) at `path` when there is one: a
/// symbolic link or anything but a regular file is refused; a file that its group or others
/// may read or write (`mode & 0o077`: made by an older version with the umask's 0644, or a
/// restored backup) is narrowed to 0600, with a warning. SQLite gives the `-wal` and `-shm`
/// files it makes the database's mode: narrowing it first keeps them private too.
/// `Ok(None)`: nothing is there (only a side file may be missing).
fn existing_store_file(path: &Path) -> StoreResult<Option<std::fs::File>> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = path.display();
    let fail = |e: std::io::Error| StoreError::Database(format!("cannot open {shown}: {e}"));
    let refused = |what: &str| {
        StoreError::Database(format!(
            "{shown} is {what}: the store and SQLite's -wal and -shm files beside it must be \
             regular files (not symbolic links); move it away, or set store.url to the file itself"
        ))
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(refused("a symbolic link"));
    }
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    // Without following a link swapped in since, and without waiting on a FIFO.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        match file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                "{shown} had mode {mode:04o}: its group or others could read the store (password hashes, \
                 addresses, the audit); its mode is now 0600"
            ),
            Err(e) => tracing::warn!(
                "{shown} has mode {mode:04o}: its group or others may read the store (password hashes, \
                 addresses, the audit), and it cannot be narrowed here ({e}); chmod 600 {shown} as its owner"
            ),
        }
    }
    Ok(Some(file))
}

/// Whether `path` still names `file` (the same device and inode, not a symbolic link).
fn same_file(path: &Path, file: &std::fs::File) -> StoreResult<()> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let fail = |e: std::io::Error| StoreError::Database(format!("cannot open {shown}: {e}"));
    let named = std::fs::symlink_metadata(path).map_err(fail)?;
    let opened = file.metadata().map_err(fail)?;
    if named.dev() != opened.dev() || named.ino() != opened.ino() {
        return Err(StoreError::Database(format!(
            "{shown} was replaced while the store was being opened; try again"
        )));
    }
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        use std::os::unix::fs::DirBuilderExt;
        // The store holds password hashes, addresses and the audit: a directory made here
        // is the owner's alone (0700), and so is a new database file (0600; SQLite gives
        // its -wal and -shm files the database's mode), whatever the umask says.
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        StoreError::Database(format!("cannot create {}: {e}", dir.display()))
                    })?;
            }
        }
        let file = store_file(path)?;
        // SQLite's own files beside it: a loose -wal or -shm (left by a crash of an older
        // version) is tightened too, before SQLite opens them.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            existing_store_file(Path::new(&side))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        // The name still leads to the file checked above (not swapped meanwhile for a
        // symbolic link, which SQLite would have followed).
        same_file(path, &file)?;
        drop(file);
        let mut store = Self::setup(conn)?;
        store.checkpointer = Checkpointer::start(path, store.wal_large.clone());
        Ok(store)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::setup(Connection::open_in_memory().map_err(db)?)
    }

    /// Says that several nodes (Engines, processes) share this store ([`Store::shared`]):
    /// each check then reserves its failure in the store first, as on PostgreSQL. One
    /// node needs none of that (the default); tests use it to run what several nodes do.
    pub fn with_shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    fn setup(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        // A file-backed store copies the WAL back into the database from a thread of its
        // own (`Checkpointer`), off the login path. The automatic checkpoint in a commit
        // stays as a safety net (see AUTOCHECKPOINT), should that thread fall behind.
        // Durability is the same either way (every commit is in the WAL).
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT)
            .map_err(db)?;
        // The page cache of the one connection that serves every login: 64 MiB at most (it
        // grows as pages are read), so that a large user table is read from memory rather
        // than from the file (SQLite's default is 2 MiB).
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        let store = Self {
            conn: ReentrantMutex::new(conn),
            writes: GroupCommit::default(),
            replay: Arc::default(),
            wal_large: Arc::default(),
            checkpointer: None,
            shared: false,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> StoreResult<()> {
        let conn = self.lock();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .map_err(db)?;
        let current: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            // IMMEDIATE: two processes starting at once do not both apply a migration.
            let tx = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(db)?;
            let again: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if again >= *version {
                continue;
            }
            tx.execute_batch(sql).map_err(db)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, strftime('%s','now'))",
                params![version],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            tracing::debug!(version, "applied store migration");
            applied.push(*version);
        }
        super::migrations::log_migrated(current, &applied);
        Ok(())
    }

    /// Runs `write` in the next group commit; its result once that is committed. Inside
    /// this thread's batch it runs at once, in the batch's transaction; the batch's commit
    /// makes it durable, and a failed write is undone with the unit it belongs to (the
    /// Engine never carries on after a failed write: the login fails, and the batcher
    /// undoes its unit).
    fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.batching() {
            return write(&self.lock());
        }
        let result = self.writes.write(&self.conn, &*self.replay, write);
        if self.wal_large.load(Ordering::Relaxed) {
            if let Some(conn) = self.conn.try_lock() {
                self.finish_checkpoint(&conn);
            }
        }
        result
    }

    /// Between two transactions of the writer: see [`WAL_LARGE`].
    fn finish_checkpoint(&self, conn: &Connection) {
        if self.wal_large.swap(false, Ordering::Relaxed) {
            if let Err(e) = checkpoint(conn) {
                tracing::debug!(error = %e, "WAL checkpoint failed; retried later");
            }
        }
    }

    fn lock(&self) -> ReentrantMutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// The expired rows of the TOTP replay cache, [`PURGE_CHUNK`] at a time from the
    /// oldest (smallest row id). Rows are appended in about the order they expire; a row
    /// that expires later than the ones after it (a factor with a longer period) is
    /// passed over, within the first [`PURGE_SCAN`] rows. The newest row stays: row ids
    /// must never go back (see `replay`).
    fn purge_used_otps(&self, now: UnixTime) -> StoreResult<u64> {
        // Expired codes only: a code just recorded expires 12 steps after now or later.
        self.replay.sweep(now);
        self.purge_in_chunks(|conn| {
            let n = conn
                .prepare_cached(&format!(
                    "DELETE FROM used_otps WHERE id IN (
                         SELECT id FROM (SELECT id, expires_at FROM used_otps ORDER BY id LIMIT {PURGE_SCAN})
                         WHERE expires_at <= ?1 AND id < (SELECT max(id) FROM used_otps)
                         LIMIT {PURGE_CHUNK})"
                ))?
                .execute(params![now])?;
            Ok((n, n == PURGE_CHUNK))
        })
    }

    /// Runs `chunk` (one statement's worth of deletes; it says how many rows went and
    /// whether more may be left) until nothing is left, each chunk its own transaction: the
    /// one connection, and every login waiting for it, is held for a few milliseconds at
    /// most, not for the whole purge of a busy minute's rows. Between chunks the connection
    /// goes to a waiting login first, and the purge rests (see [`purge_pause`]).
    fn purge_in_chunks(
        &self,
        mut chunk: impl FnMut(&Connection) -> rusqlite::Result<(usize, bool)>,
    ) -> StoreResult<u64> {
        let mut purged = 0u64;
        loop {
            let started = std::time::Instant::now();
            let conn = self.lock();
            let (n, more) = chunk(&conn).map_err(db)?;
            ReentrantMutexGuard::unlock_fair(conn);
            purged += n as u64;
            if !more {
                return Ok(purged);
            }
            purge_pause(started);
        }
    }

    /// Writes the factors' last uses that the replay cache holds (see `replay`): those held
    /// [`super::replay::LAST_USE_HOLD`] or longer (all of them if `all`), up to `chunks` times
    /// [`LAST_USE_CHUNK`], each chunk its own transaction. A chunk not written is held
    /// again (and the error returned).
    pub(super) fn write_last_uses(&self, all: bool, chunks: usize) -> StoreResult<()> {
        for _ in 0..chunks {
            let conn = self.lock();
            let uses = self.replay.take_last_uses(all, LAST_USE_CHUNK);
            if uses.is_empty() {
                return Ok(());
            }
            let full = uses.len() == LAST_USE_CHUNK;
            let written = atomically(&conn, |c| {
                for (factor, u) in &uses {
                    let by_row = match u.row {
                        Some(row) => c
                            .prepare_cached(
                                "UPDATE factors SET last_used_at = ?3 WHERE rowid = ?1 AND id = ?2",
                            )
                            .and_then(|mut st| st.execute(params![row, &**factor, u.at]))
                            .map_err(db)?,
                        None => 0,
                    };
                    if by_row == 0 {
                        c.prepare_cached("UPDATE factors SET last_used_at = ?2 WHERE id = ?1")
                            .and_then(|mut st| st.execute(params![&**factor, u.at]))
                            .map_err(db)?;
                    }
                }
                Ok(())
            });
            if let Err(e) = written {
                self.replay.give_back_last_uses(uses);
                return Err(e);
            }
            ReentrantMutexGuard::unlock_fair(conn);
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// `factors` with the last uses held in memory (see `replay`) over the table's.
    fn with_held_last_uses(&self, factors: &mut [Factor]) {
        for f in factors {
            if let Some(at) = self.replay.last_use(&f.id) {
                f.last_used_at = Some(at);
            }
        }
    }

    /// This store's identity for [`BATCH_OF`].
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether this thread runs a batch on this store.
    fn batching(&self) -> bool {
        BATCH_OF.with(Cell::get) == self.id()
    }
}

fn insert_audit(conn: &Connection, a: &AuditRecord) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached(
            "INSERT INTO audit (time, tenant, username, channel, client, source, mode, factors, result, reason, transaction_id, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(db)?;
    st.execute(params![
        a.time,
        a.tenant,
        a.username,
        a.channel,
        a.client,
        a.source,
        a.mode,
        a.factors.join(","),
        a.result.as_str(),
        a.reason,
        a.transaction,
        a.host
    ])
    .map(|_| ())
    .map_err(db)
}

/// The columns [`factor_from_row`] reads, in its order.
macro_rules! factor_cols {
    () => {
        "id, user_id, kind, state, sealed_secret, params, created_at, confirmed_at, last_used_at"
    };
}

/// The columns [`user_from_row`] reads, in its order (a macro, so that the statements
/// that use them are literals: no `format!` per login).
macro_rules! user_cols {
    () => {
        "id, tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at, attributes_json, session_epoch"
    };
}
/// Inserts `u` on `conn` (see [`Store::create_user`]).
fn create_user_on(conn: &Connection, u: &NewUser, now: UnixTime) -> StoreResult<User> {
    let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
    match conn.execute(
        "INSERT INTO users (tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
        params![u.tenant_id, u.name, u.password_hash, u.email, u.phone, groups, now],
    ) {
        Ok(_) => Ok(u.stored(conn.last_insert_rowid(), now)),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
            what: "user",
            name: u.name.clone(),
        }),
        Err(e) => Err(db(e)),
    }
}

fn user_by_name_on(conn: &Connection, tenant: TenantId, name: &str) -> StoreResult<Option<User>> {
    let mut st = conn
        .prepare_cached(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE tenant_id = ?1 AND name = ?2"
        ))
        .map_err(db)?;
    st.query_row(params![tenant, name], user_from_row)
        .optional()
        .map_err(db)
}

fn factors_of_on(conn: &Connection, user: UserId) -> StoreResult<Vec<Factor>> {
    let mut st = conn
        .prepare_cached(concat!(
            "SELECT ",
            factor_cols!(),
            " FROM factors WHERE user_id = ?1 ORDER BY created_at, id"
        ))
        .map_err(db)?;
    let rows = st.query_map(params![user], factor_from_row).map_err(db)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r.map_err(db)??);
    }
    Ok(out)
}

/// A JSON column of a user row. Unreadable is an error, not "none": the user's groups
/// choose their policy, and a user whose groups were lost must not fall to the default.
fn user_json<T: serde::de::DeserializeOwned>(r: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let text: String = r.get(col)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        password_hash: r.get(3)?,
        email: r.get(4)?,
        phone: r.get(5)?,
        groups: user_json(r, 6)?,
        disabled: r.get::<_, i64>(7)? != 0,
        created_at: r.get(8)?,
        attributes: user_json(r, 9)?,
        session_epoch: r.get(10)?,
    })
}

fn factor_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Factor, StoreError>> {
    factor_from_row_at(r, 0)
}

/// A factor from the row's columns `at`.. (see [`factor_from_row`]).
fn factor_from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Result<Factor, StoreError>> {
    let kind: String = r.get(at + 2)?;
    let state: String = r.get(at + 3)?;
    let (Some(kind), Some(state)) = (FactorKind::parse(&kind), FactorState::parse(&state)) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "factor {} has kind '{kind}' / state '{state}'",
            r.get::<_, String>(at)?
        ))));
    };
    Ok(Ok(Factor {
        id: r.get(at)?,
        user_id: r.get(at + 1)?,
        kind,
        state,
        sealed_secret: r.get(at + 4)?,
        params: r.get(at + 5)?,
        created_at: r.get(at + 6)?,
        confirmed_at: r.get(at + 7)?,
        last_used_at: r.get(at + 8)?,
    }))
}

/// The user named `name` and their factors (oldest first) in one statement: the user's
/// columns ([`user_cols!`], prefixed) once per factor, or once with NULLs for a user
/// without factors.
const USER_WITH_FACTORS: &str = "SELECT u.id, u.tenant_id, u.name, u.password_hash, u.email, u.phone, u.groups_json, u.disabled, u.created_at, u.attributes_json, u.session_epoch,
        f.id, f.user_id, f.kind, f.state, f.sealed_secret, f.params, f.created_at, f.confirmed_at, f.last_used_at, f.rowid
     FROM users u LEFT JOIN factors f ON f.user_id = u.id
     WHERE u.tenant_id = ?1 AND u.name = ?2 ORDER BY f.created_at, f.id";
/// Where the factor's columns start in [`USER_WITH_FACTORS`].
const FACTOR_AT: usize = 11;
/// Where the factor's row id is in [`USER_WITH_FACTORS`] (after [`factor_cols!`]).
const FACTOR_ROW_AT: usize = FACTOR_AT + 9;

/// Transaction reply attributes as stored: JSON `[[type, "hex"], ...]`.
pub(super) fn encode_reply_attributes(attrs: &[ReplyAttribute]) -> String {
    let pairs: Vec<(u8, String)> = attrs
        .iter()
        .map(|a| (a.typ, data_encoding::HEXLOWER.encode(&a.value)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

pub(super) fn decode_reply_attributes(text: &str) -> Option<Vec<ReplyAttribute>> {
    let pairs: Vec<(u8, String)> = serde_json::from_str(text).ok()?;
    pairs
        .into_iter()
        .map(|(typ, hex)| {
            Some(ReplyAttribute {
                typ,
                value: data_encoding::HEXLOWER.decode(hex.as_bytes()).ok()?,
            })
        })
        .collect()
}

fn txn_from_row(r: &Row<'_>) -> rusqlite::Result<Transaction> {
    let attrs: String = r.get(11)?;
    // Fail closed: a transaction whose attributes cannot be read is not continued
    // (an Accept without its Filter-Id could grant more than the upstream meant).
    let reply_attributes = decode_reply_attributes(&attrs).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            11,
            rusqlite::types::Type::Text,
            "transactions.reply_attributes is not valid JSON of [type, hex] pairs".into(),
        )
    })?;
    Ok(Transaction {
        reply_attributes,
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        user_id: r.get(2)?,
        username: r.get(3)?,
        client: r.get(4)?,
        source: r.get(5)?,
        first_factor: r.get(6)?,
        step: r.get(7)?,
        attempts: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
    })
}

const PUSH_COLUMNS: &str = "id, tenant_id, user_id, txn_id, factor_id, token_hash, number, status, detail, username, client, source, created_at, expires_at, decided_at";

fn push_from_row(r: &Row<'_>) -> rusqlite::Result<Result<PushRequest, StoreError>> {
    let status: String = r.get(7)?;
    let Some(status) = PushStatus::parse(&status) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "push request has an unknown status '{status}'"
        ))));
    };
    let number: Option<i64> = r.get(6)?;
    Ok(Ok(PushRequest {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        user_id: r.get(2)?,
        txn_id: r.get(3)?,
        factor_id: r.get(4)?,
        token_hash: r.get(5)?,
        number: number.and_then(|n| u8::try_from(n).ok()),
        status,
        detail: r.get(8)?,
        username: r.get(9)?,
        client: r.get(10)?,
        source: r.get(11)?,
        created_at: r.get(12)?,
        expires_at: r.get(13)?,
        decided_at: r.get(14)?,
    }))
}

/// `record_draining_failure` (?7 NULL) and `reserve_draining_failures` (?7 the limit):
/// the source's level drained by the time since its last failure (?4 per ?5 seconds),
/// plus ?6 new failures; with a limit, counted only if that stays within it and the row
/// is not locked.
const DRAINING_FAILURES: &str =
    "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
     VALUES (?1, ?2, ?6, ?3)
     ON CONFLICT (tenant_id, throttle_key)
     DO UPDATE SET failures = MAX(0, throttles.failures
         - MAX(0, excluded.last_failure_at - throttles.last_failure_at) * ?4 / ?5) + ?6,
       last_failure_at = CASE WHEN throttles.failures
         > MAX(0, excluded.last_failure_at - throttles.last_failure_at) * ?4 / ?5
       THEN throttles.last_failure_at
         + (MAX(0, excluded.last_failure_at - throttles.last_failure_at) * ?4 / ?5) * ?5 / ?4
       ELSE excluded.last_failure_at END
     WHERE ?7 IS NULL
       OR (MAX(0, throttles.failures
             - MAX(0, excluded.last_failure_at - throttles.last_failure_at) * ?4 / ?5) + ?6 <= ?7
           AND (throttles.locked_until IS NULL OR throttles.locked_until <= ?3))
     RETURNING failures, last_failure_at, locked_until";

fn throttle_from_row(r: &Row<'_>) -> rusqlite::Result<Throttle> {
    Ok(Throttle {
        failures: r.get(0)?,
        last_failure_at: r.get(1)?,
        locked_until: r.get(2)?,
    })
}

/// The throttle row of `key` (empty if there is none), read on `conn`.
fn throttle_in(conn: &Connection, tenant: TenantId, key: &str) -> StoreResult<Throttle> {
    let mut st = conn
        .prepare_cached(
            "SELECT failures, last_failure_at, locked_until FROM throttles
             WHERE tenant_id = ?1 AND throttle_key = ?2",
        )
        .map_err(db)?;
    st.query_row(params![tenant, key], throttle_from_row)
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(db)
}

const PAM_HOST_SELECT: &str =
    "SELECT h.id, h.tenant_id, t.name, h.name, h.created_at, h.last_seen_at, h.revoked
     FROM pam_hosts h JOIN tenants t ON t.id = h.tenant_id";

fn pam_host_from_row(r: &Row<'_>) -> rusqlite::Result<PamHost> {
    Ok(PamHost {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        tenant: r.get(2)?,
        name: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        revoked: r.get::<_, i64>(6)? != 0,
    })
}

impl Store for SqliteStore {
    fn can_batch(&self) -> bool {
        true
    }

    fn batch(&self, work: &mut dyn FnMut(&dyn BatchUnits) -> StoreResult<()>) -> StoreResult<()> {
        if self.batching() {
            return Err(StoreError::Database(
                "a batch is already open on this thread".into(),
            ));
        }
        let conn = self.lock();
        let mut batch = Batch::enter(self, &conn)?;
        let committed = work(&batch)
            .and_then(|()| self.replay.committing(&conn))
            .and_then(|()| run_sql(&conn, "COMMIT").map_err(db));
        batch.committed = committed.is_ok();
        drop(batch); // rolls back unless committed
        committed
    }

    fn after_batch(&self) {
        if self.wal_large.load(Ordering::Relaxed) {
            self.finish_checkpoint(&self.lock());
        }
        // Only when some are due: the batch thread does not wait for the connection (the
        // purge's, say) after every batch for nothing.
        if self.replay.last_uses_due() {
            if let Err(e) = self.write_last_uses(false, 1) {
                tracing::warn!(error = %e, "writing factors' last uses failed; tried again in a second");
            }
        }
    }

    fn warm(&self) -> StoreResult<()> {
        self.replay.load(&self.lock())
    }

    fn create_tenant(&self, name: &str, now: UnixTime) -> StoreResult<Tenant> {
        let conn = self.lock();
        match conn.execute(
            "INSERT INTO tenants (name, created_at) VALUES (?1, ?2)",
            params![name, now],
        ) {
            Ok(_) => Ok(Tenant {
                id: conn.last_insert_rowid(),
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
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT id, name, created_at FROM tenants WHERE name = ?1")
            .map_err(db)?;
        st.query_row(params![name], |r| {
            Ok(Tenant {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })
        .optional()
        .map_err(db)
    }

    fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT id, name, created_at FROM tenants ORDER BY name")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok(Tenant {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn create_user(&self, u: &NewUser, now: UnixTime) -> StoreResult<User> {
        create_user_on(&self.lock(), u, now)
    }

    fn create_user_unless_alike(
        &self,
        u: &NewUser,
        now: UnixTime,
        fold: &dyn Fn(&str) -> String,
    ) -> StoreResult<Result<User, String>> {
        // The check and the insert under one hold of the connection: no other login of
        // this process can create a user in between (SQLite stores are one node's).
        let conn = self.lock();
        let typed = fold(&u.name);
        {
            let mut st = conn
                .prepare_cached("SELECT name FROM users WHERE tenant_id = ?1")
                .map_err(db)?;
            let mut rows = st.query(params![u.tenant_id]).map_err(db)?;
            while let Some(r) = rows.next().map_err(db)? {
                let name: String = r.get(0).map_err(db)?;
                if fold(&name) == typed {
                    return Ok(Err(name));
                }
            }
        }
        create_user_on(&conn, u, now).map(Ok)
    }

    fn user_by_name(&self, tenant: TenantId, name: &str) -> StoreResult<Option<User>> {
        user_by_name_on(&self.lock(), tenant, name)
    }
    fn user_with_factors(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> StoreResult<Option<(User, Vec<Factor>)>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(USER_WITH_FACTORS).map_err(db)?;
        let mut rows = st.query(params![tenant, name]).map_err(db)?;
        let mut found: Option<(User, Vec<Factor>)> = None;
        let mut factor_rows = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let (_, factors) = match &mut found {
                Some(f) => f,
                None => found.insert((user_from_row(r).map_err(db)?, Vec::new())),
            };
            if r.get_ref(FACTOR_AT).map_err(db)? != rusqlite::types::ValueRef::Null {
                let factor = factor_from_row_at(r, FACTOR_AT).map_err(db)??;
                factor_rows.push((factor.id.as_str().into(), r.get(FACTOR_ROW_AT).map_err(db)?));
                factors.push(factor);
            }
        }
        FACTOR_ROWS.with(|rows| *rows.borrow_mut() = factor_rows);
        if let Some((_, factors)) = &mut found {
            self.with_held_last_uses(factors);
        }
        Ok(found)
    }

    fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<User>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE tenant_id = ?1 ORDER BY name"
            ))
            .map_err(db)?;
        let rows = st.query_map(params![tenant], user_from_row).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn user_names(&self, tenant: TenantId) -> StoreResult<Vec<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT name FROM users WHERE tenant_id = ?1 ORDER BY name")
            .map_err(db)?;
        let rows = st.query_map(params![tenant], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<()> {
        self.lock()
            .execute(
                "UPDATE users SET disabled = ?2,
                        session_epoch = session_epoch + CASE WHEN ?2 <> 0 THEN 1 ELSE 0 END
                 WHERE id = ?1",
                params![user, disabled as i64],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn set_password_hash(&self, user: UserId, hash: Option<&str>) -> StoreResult<()> {
        self.lock()
            .execute(
                "UPDATE users SET password_hash = ?2, session_epoch = session_epoch + 1
                 WHERE id = ?1",
                params![user, hash],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn raise_session_epoch(&self, user: UserId) -> StoreResult<bool> {
        self.lock()
            .execute(
                "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?1",
                params![user],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn set_user_attribute(&self, user: UserId, key: &str, value: Option<&str>) -> StoreResult<()> {
        // Read, change and write in one transaction that holds the write lock from its
        // first statement: another process on the file (the CLI beside the daemon) cannot
        // write in between, so neither change is lost.
        let conn = self.lock();
        atomically(&conn, |conn| {
            let n = conn
                .execute(
                    "UPDATE users SET attributes_json = attributes_json WHERE id = ?1",
                    params![user],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "user",
                    name: user.to_string(),
                });
            }
            let text: String = conn
                .query_row(
                    "SELECT attributes_json FROM users WHERE id = ?1",
                    params![user],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let mut attrs: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("user {user} attributes: {e}")))?;
            match value {
                Some(v) => attrs.insert(key.to_string(), v.to_string()),
                None => attrs.remove(key),
            };
            let text = serde_json::to_string(&attrs).unwrap_or_else(|_| "{}".into());
            conn.execute(
                "UPDATE users SET attributes_json = ?2 WHERE id = ?1",
                params![user, text],
            )
            .map(|_| ())
            .map_err(db)
        })
    }

    fn set_directory_info(
        &self,
        user: UserId,
        email: Option<&str>,
        phone: Option<&str>,
        groups: &[String],
    ) -> StoreResult<()> {
        let groups = serde_json::to_string(groups).unwrap_or_else(|_| "[]".into());
        self.lock()
            .execute(
                "UPDATE users SET email = ?2, phone = ?3, groups_json = ?4 WHERE id = ?1",
                params![user, email, phone, groups],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn delete_user(&self, user: UserId) -> StoreResult<()> {
        let conn = self.lock();
        atomically(&conn, |tx| {
            let tenant: Option<i64> = tx
                .query_row(
                    "SELECT tenant_id FROM users WHERE id = ?1",
                    params![user],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if let Some(t) = tenant {
                tx.execute(
                    "DELETE FROM throttles WHERE tenant_id = ?1 AND throttle_key LIKE ?2",
                    params![t, format!("user:{user}:%")],
                )
                .map_err(db)?;
            }
            tx.execute("DELETE FROM users WHERE id = ?1", params![user])
                .map_err(db)?;
            Ok(())
        })
    }

    fn add_factor(&self, f: &Factor) -> StoreResult<()> {
        self.lock()
            .execute(
                "INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at, confirmed_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    f.id,
                    f.user_id,
                    f.kind.as_str(),
                    f.state.as_str(),
                    f.sealed_secret,
                    f.params,
                    f.created_at,
                    f.confirmed_at,
                    f.last_used_at
                ],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn factors_of(&self, user: UserId) -> StoreResult<Vec<Factor>> {
        let mut factors = factors_of_on(&self.lock(), user)?;
        self.with_held_last_uses(&mut factors);
        Ok(factors)
    }

    fn confirm_factor(&self, user: UserId, factor_id: &str, now: UnixTime) -> StoreResult<bool> {
        self.lock()
            .execute(
                "UPDATE factors SET state = 'confirmed', confirmed_at = ?3
                 WHERE id = ?2 AND user_id = ?1 AND state = 'pending'",
                params![user, factor_id, now],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn confirm_first_factor(
        &self,
        user: UserId,
        factor_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        // One statement under the one writer: nothing confirms in between.
        self.lock()
            .execute(
                "UPDATE factors SET state = 'confirmed', confirmed_at = ?3
                 WHERE id = ?2 AND user_id = ?1 AND state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM factors
                                   WHERE user_id = ?1 AND state = 'confirmed')",
                params![user, factor_id, now],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn remove_factor(&self, user: UserId, factor_id: &str) -> StoreResult<bool> {
        self.lock()
            .execute(
                "DELETE FROM factors WHERE id = ?2 AND user_id = ?1",
                params![user, factor_id],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn touch_factor(&self, factor_id: &str, now: UnixTime) -> StoreResult<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("UPDATE factors SET last_used_at = ?2 WHERE id = ?1")
            .map_err(db)?;
        st.execute(params![factor_id, now]).map_err(db)?;
        // Newer than a last use held (see `replay`), which must not be written over it.
        self.replay.forget_last_use(factor_id);
        Ok(())
    }

    fn update_factor_params(&self, factor_id: &str, old: &str, new: &str) -> StoreResult<bool> {
        self.lock()
            .execute(
                "UPDATE factors SET params = ?3 WHERE id = ?1 AND params = ?2",
                params![factor_id, old, new],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn add_bypass_code(
        &self,
        user: UserId,
        hash: &str,
        uses: u32,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.lock()
            .execute(
                "INSERT INTO bypass_codes (user_id, code_hash, uses_left, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user, hash, uses, expires_at, now],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn use_bypass_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE bypass_codes SET uses_left = uses_left - 1
                 WHERE user_id = ?1 AND code_hash = ?2 AND uses_left > 0 AND expires_at > ?3",
            )
            .map_err(db)?;
        st.execute(params![user, hash, now])
            .map(|n| n == 1)
            .map_err(db)
    }

    fn has_bypass_code(&self, user: UserId, now: UnixTime) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM bypass_codes WHERE user_id = ?1 AND uses_left > 0 AND expires_at > ?2)",
            )
            .map_err(db)?;
        st.query_row(params![user, now], |r| r.get::<_, i64>(0))
            .map(|n| n != 0)
            .map_err(db)
    }

    fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        now: UnixTime,
    ) -> StoreResult<()> {
        let conn = self.lock();
        atomically(&conn, |tx| {
            tx.execute(
                "DELETE FROM recovery_codes WHERE user_id = ?1",
                params![user],
            )
            .map_err(db)?;
            for h in hashes {
                tx.execute(
                "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES (?1, ?2, ?3)",
                params![user, h, now],
            )
            .map_err(db)?;
            }
            Ok(())
        })
    }

    fn use_recovery_code(&self, user: UserId, hash: &str, now: UnixTime) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE recovery_codes SET used_at = ?3
                 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL",
            )
            .map_err(db)?;
        st.execute(params![user, hash, now])
            .map(|n| n == 1)
            .map_err(db)
    }

    fn unused_recovery_codes(&self, user: UserId) -> StoreResult<u32> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL",
            )
            .map_err(db)?;
        st.query_row(params![user], |r| r.get(0)).map_err(db)
    }

    fn add_sent_code(
        &self,
        user: UserId,
        factor_id: &str,
        hash: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.lock()
            .execute(
                "INSERT INTO sent_codes (user_id, factor_id, code_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user, factor_id, hash, now, expires_at],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn use_sent_code(
        &self,
        user: UserId,
        hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE sent_codes SET used_at = ?3
                 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL AND expires_at > ?3
                 RETURNING factor_id",
            )
            .map_err(db)?;
        let mut rows = st
            .query_map(params![user, hash, now], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.next().transpose().map_err(db)
    }

    fn sent_codes_since(
        &self,
        user: UserId,
        since: UnixTime,
    ) -> StoreResult<(u32, Option<UnixTime>)> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT COUNT(*), MAX(created_at) FROM sent_codes WHERE user_id = ?1 AND created_at >= ?2")
            .map_err(db)?;
        st.query_row(params![user, since], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)
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
        // One statement decides (also against another process on the same file): the
        // reservation is inserted only while the limits allow one more send. It is spent
        // (`used_at`) and expired from the start, so it can never be used as a code.
        for _ in 0..3 {
            let inserted = {
                let conn = self.lock();
                let mut st = conn
                    .prepare_cached(
                        "INSERT INTO sent_codes (user_id, factor_id, code_hash, created_at, expires_at, used_at)
                         SELECT ?1, ?2, ?3, ?4, ?4, ?4
                         WHERE NOT EXISTS (SELECT 1 FROM sent_codes
                                           WHERE user_id = ?1 AND created_at >= ?5 AND created_at > ?6)
                           AND (SELECT COUNT(*) FROM sent_codes
                                WHERE user_id = ?1 AND created_at >= ?5) < ?7",
                    )
                    .map_err(db)?;
                st.execute(params![
                    user,
                    factor_id,
                    reservation,
                    now,
                    since,
                    now - limits.resend_after,
                    i64::from(limits.max_per_hour)
                ])
                .map_err(db)?
            };
            if inserted == 1 {
                return Ok(SendClaim::Claimed);
            }
            // Refused: read why (a row removed in between lets the claim try again).
            let (count, last) = self.sent_codes_since(user, since)?;
            if let Some(refusal) = limits.refusal(count, last, now) {
                return Ok(refusal);
            }
        }
        Ok(SendClaim::QuotaExceeded)
    }

    fn confirm_code_send(
        &self,
        user: UserId,
        reservation: &str,
        hash: &str,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE sent_codes SET code_hash = ?3, expires_at = ?4, used_at = NULL
                 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NOT NULL",
            )
            .map_err(db)?;
        st.execute(params![user, reservation, hash, expires_at])
            .map(|n| n == 1)
            .map_err(db)
    }

    fn release_code_send(&self, user: UserId, reservation: &str) -> StoreResult<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "DELETE FROM sent_codes WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NOT NULL",
            )
            .map_err(db)?;
        st.execute(params![user, reservation])
            .map(|_| ())
            .map_err(db)
    }

    fn remember_source(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.lock()
            .execute(
                "INSERT INTO remembered_sources (user_id, source, rule, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, source) DO UPDATE SET rule = excluded.rule, created_at = excluded.created_at, expires_at = excluded.expires_at",
                params![user, source, rule, now, expires_at],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn remembered_until(
        &self,
        user: UserId,
        source: &str,
        rule: &str,
        now: UnixTime,
    ) -> StoreResult<Option<UnixTime>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT expires_at FROM remembered_sources WHERE user_id = ?1 AND source = ?2 AND rule = ?3 AND expires_at > ?4",
            )
            .map_err(db)?;
        st.query_row(params![user, source, rule, now], |r| r.get(0))
            .optional()
            .map_err(db)
    }

    fn forget_sources(&self, user: UserId, source: Option<&str>) -> StoreResult<u64> {
        self.lock()
            .execute(
                "DELETE FROM remembered_sources WHERE user_id = ?1 AND (?2 IS NULL OR source = ?2)",
                params![user, source],
            )
            .map(|n| n as u64)
            .map_err(db)
    }

    fn record_otp_use(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        // A hot write of a login (the Engine's check of a code whose factor's last use is
        // not due): committed in groups, as `use_otp`.
        let factor_id = factor_id.to_string();
        let replay = self.replay.clone();
        self.write(move |c| replay.record(c, &factor_id, counter, expires_at, None))
    }

    fn use_otp(
        &self,
        factor_id: &str,
        counter: i64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let row = FACTOR_ROWS.with(|rows| {
            rows.borrow()
                .iter()
                .find(|(id, _)| **id == *factor_id)
                .map(|&(_, row)| row)
        });
        let factor_id = factor_id.to_string();
        let replay = self.replay.clone();
        // The last use goes with the code's row, and is written later with others
        // (see `replay`); readers of this store see it at once.
        let last_use = LastUse { row, at: now };
        self.write(move |c| replay.record(c, &factor_id, counter, expires_at, Some(last_use)))
    }

    fn put_transaction(&self, t: &Transaction) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |conn| {
        let mut st = conn
            .prepare_cached(
                "INSERT INTO transactions (id, tenant_id, user_id, username, client, source, first_factor, step, attempts, created_at, expires_at, reply_attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(db)?;
        st.execute(params![
            t.id,
            t.tenant_id,
            t.user_id,
            t.username,
            t.client,
            t.source,
            t.first_factor,
            t.step,
            t.attempts,
            t.created_at,
            t.expires_at,
            encode_reply_attributes(&t.reply_attributes)
        ])
        .map(|_| ())
        .map_err(db)
        })
    }

    fn take_transaction(
        &self,
        id: &str,
        step: u32,
        binding: &TxnBinding<'_>,
        now: UnixTime,
    ) -> StoreResult<TakenTransaction> {
        let id = id.to_string();
        let (tenant, username, client, source) = (
            binding.tenant_id,
            binding.username.to_string(),
            binding.client.to_string(),
            binding.source.to_string(),
        );
        self.write(move |conn| {
            let taken = conn
                .prepare_cached(
                    "UPDATE transactions SET step = step + 1
                     WHERE id = ?1 AND step = ?2 AND expires_at > ?3
                       AND tenant_id = ?4 AND username = ?5 AND client = ?6 AND source = ?7
                     RETURNING id, tenant_id, user_id, username, client, source, first_factor, step, attempts, created_at, expires_at, reply_attributes",
                )
                .and_then(|mut st| {
                    st.query_row(
                        params![id, step, now, tenant, username, client, source],
                        txn_from_row,
                    )
                    .optional()
                })
                .map_err(db)?;
            if let Some(txn) = taken {
                return Ok(TakenTransaction::Taken(txn));
            }
            // Not taken: say whether the step is open for someone else (nothing changed).
            let open = conn
                .prepare_cached(
                    "SELECT 1 FROM transactions WHERE id = ?1 AND step = ?2 AND expires_at > ?3",
                )
                .and_then(|mut st| st.exists(params![id, step, now]))
                .map_err(db)?;
            Ok(if open {
                TakenTransaction::OtherBinding
            } else {
                TakenTransaction::Gone
            })
        })
    }

    fn add_transaction_attempt(&self, id: &str) -> StoreResult<u32> {
        let id = id.to_string();
        self.write(move |conn| {
            let mut st = conn
            .prepare_cached(
                "UPDATE transactions SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts",
            )
            .map_err(db)?;
            st.query_row(params![id], |r| r.get(0))
                .optional()
                .map(|a| a.unwrap_or(u32::MAX))
                .map_err(db)
        })
    }

    fn delete_transaction(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |conn| {
            let mut st = conn
                .prepare_cached("DELETE FROM transactions WHERE id = ?1")
                .map_err(db)?;
            st.execute(params![id]).map(|_| ()).map_err(db)
        })
    }

    fn push_by_id(&self, id: &str) -> StoreResult<Option<PushRequest>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {PUSH_COLUMNS} FROM push_requests WHERE id = ?1"
            ))
            .map_err(db)?;
        st.query_row(params![id], push_from_row)
            .optional()
            .map_err(db)?
            .transpose()
    }

    fn push_of_transaction(&self, txn_id: &str) -> StoreResult<Option<PushRequest>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {PUSH_COLUMNS} FROM push_requests WHERE txn_id = ?1
                 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ))
            .map_err(db)?;
        st.query_row(params![txn_id], push_from_row)
            .optional()
            .map_err(db)?
            .transpose()
    }

    fn decide_push(
        &self,
        id: &str,
        status: PushStatus,
        detail: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE push_requests SET status = ?2, detail = ?3, decided_at = ?4
                 WHERE id = ?1 AND status = 'pending' AND expires_at > ?4",
            )
            .map_err(db)?;
        st.execute(params![id, status.as_str(), detail, now])
            .map(|n| n == 1)
            .map_err(db)
    }

    fn pushes_since(&self, user: UserId, since: UnixTime) -> StoreResult<u32> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM push_requests WHERE user_id = ?1 AND created_at >= ?2",
            )
            .map_err(db)?;
        st.query_row(params![user, since], |r| r.get(0)).map_err(db)
    }

    fn add_push_capped(
        &self,
        p: &PushRequest,
        since: UnixTime,
        max: u32,
    ) -> StoreResult<PushAdded> {
        // One statement decides (also against another process on the same file).
        let inserted = {
            let conn = self.lock();
            let mut st = conn
                .prepare_cached(&format!(
                    "INSERT INTO push_requests ({PUSH_COLUMNS})
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
                     WHERE (SELECT COUNT(*) FROM push_requests
                            WHERE user_id = ?3 AND created_at >= ?16) < ?17"
                ))
                .map_err(db)?;
            st.execute(params![
                p.id,
                p.tenant_id,
                p.user_id,
                p.txn_id,
                p.factor_id,
                p.token_hash,
                p.number.map(i64::from),
                p.status.as_str(),
                p.detail,
                p.username,
                p.client,
                p.source,
                p.created_at,
                p.expires_at,
                p.decided_at,
                since,
                i64::from(max)
            ])
            .map_err(db)?
        };
        if inserted == 1 {
            return Ok(PushAdded::Added);
        }
        Ok(PushAdded::CapReached {
            sent: self.pushes_since(p.user_id, since)?,
        })
    }

    fn shared(&self) -> bool {
        self.shared
    }

    fn throttle(&self, tenant: TenantId, key: &str) -> StoreResult<Throttle> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT failures, last_failure_at, locked_until FROM throttles
                 WHERE tenant_id = ?1 AND throttle_key = ?2",
            )
            .map_err(db)?;
        st.query_row(params![tenant, key], throttle_from_row)
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(db)
    }

    fn record_failure(&self, tenant: TenantId, key: &str, now: UnixTime) -> StoreResult<Throttle> {
        let key = key.to_string();
        self.write(move |conn| {
        let mut st = conn
            .prepare_cached(
                "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
                 VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (tenant_id, throttle_key)
                 DO UPDATE SET failures = throttles.failures + 1, last_failure_at = excluded.last_failure_at
                 RETURNING failures, last_failure_at, locked_until",
            )
            .map_err(db)?;
        st.query_row(params![tenant, key, now], throttle_from_row)
            .map_err(db)
        })
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
        let key = key.to_string();
        let (per_window, window) = (per_window.max(1), window.max(1));
        let failures = failures.max(1);
        self.write(move |conn| {
            let mut st = conn.prepare_cached(DRAINING_FAILURES).map_err(db)?;
            st.query_row(
                params![tenant, key, now, per_window, window, failures, None::<i64>],
                throttle_from_row,
            )
            .map_err(db)
        })
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
        let key = key.to_string();
        self.write(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "INSERT INTO throttles (tenant_id, throttle_key, failures, last_failure_at)
                     VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (tenant_id, throttle_key)
                     DO UPDATE SET failures = throttles.failures + 1
                     WHERE throttles.failures < ?4
                       AND (throttles.locked_until IS NULL OR throttles.locked_until <= ?3)
                     RETURNING failures, last_failure_at, locked_until",
                )
                .map_err(db)?;
            match st
                .query_row(params![tenant, key, now, limit], throttle_from_row)
                .optional()
                .map_err(db)?
            {
                Some(th) => Ok(Reservation::Reserved(th)),
                None => Ok(Reservation::Refused(throttle_in(conn, tenant, &key)?)),
            }
        })
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
        let (per_window, window) = (per_window.max(1), window.max(1));
        let failures = failures.max(1);
        if failures > limit {
            return Ok(Reservation::Refused(self.throttle(tenant, key)?));
        }
        let key = key.to_string();
        self.write(move |conn| {
            // `record_draining_failure`, with the drained level plus the new failures
            // compared with `limit` before anything is counted.
            let mut st = conn.prepare_cached(DRAINING_FAILURES).map_err(db)?;
            match st
                .query_row(
                    params![tenant, key, now, per_window, window, failures, Some(limit)],
                    throttle_from_row,
                )
                .optional()
                .map_err(db)?
            {
                Some(th) => Ok(Reservation::Reserved(th)),
                None => Ok(Reservation::Refused(throttle_in(conn, tenant, &key)?)),
            }
        })
    }

    fn release_failures(
        &self,
        tenant: TenantId,
        key: &str,
        failures: u32,
    ) -> StoreResult<Throttle> {
        let key = key.to_string();
        self.write(move |conn| {
            // One write of the writer's: the two statements are not parted.
            let gone = conn
                .prepare_cached(
                    "DELETE FROM throttles WHERE tenant_id = ?1 AND throttle_key = ?2
                     AND failures <= ?3 AND locked_until IS NULL",
                )
                .and_then(|mut st| st.execute(params![tenant, key, failures]))
                .map_err(db)?;
            if gone > 0 {
                return Ok(Throttle::default());
            }
            let mut st = conn
                .prepare_cached(
                    "UPDATE throttles SET failures = MAX(0, failures - ?3)
                     WHERE tenant_id = ?1 AND throttle_key = ?2
                     RETURNING failures, last_failure_at, locked_until",
                )
                .map_err(db)?;
            st.query_row(params![tenant, key, failures], throttle_from_row)
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(db)
        })
    }

    fn keep_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        lock_at: u32,
        until: UnixTime,
    ) -> StoreResult<Throttle> {
        let key = key.to_string();
        self.write(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "UPDATE throttles SET last_failure_at = MAX(last_failure_at, ?3),
                       locked_until = CASE WHEN failures >= ?4 THEN ?5 ELSE locked_until END
                     WHERE tenant_id = ?1 AND throttle_key = ?2
                     RETURNING failures, last_failure_at, locked_until",
                )
                .map_err(db)?;
            st.query_row(params![tenant, key, now, lock_at, until], throttle_from_row)
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(db)
        })
    }

    fn lock_until(&self, tenant: TenantId, key: &str, until: UnixTime) -> StoreResult<()> {
        self.lock()
            .execute(
                "UPDATE throttles SET locked_until = ?3 WHERE tenant_id = ?1 AND throttle_key = ?2",
                params![tenant, key, until],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn clear_throttle(&self, tenant: TenantId, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.write(move |conn| {
            let mut st = conn
                .prepare_cached("DELETE FROM throttles WHERE tenant_id = ?1 AND throttle_key = ?2")
                .map_err(db)?;
            st.execute(params![tenant, key]).map(|_| ()).map_err(db)
        })
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
        let key = key.to_string();
        let (failures, last) = (seen.failures, seen.last_failure_at);
        self.write(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "DELETE FROM throttles WHERE tenant_id = ?1 AND throttle_key = ?2
                     AND locked_until = ?3 AND failures = ?4 AND last_failure_at = ?5",
                )
                .map_err(db)?;
            st.execute(params![tenant, key, until, failures, last])
                .map(|n| n == 1)
                .map_err(db)
        })
    }

    fn append_audit(&self, a: &AuditRecord) -> StoreResult<()> {
        if self.batching() {
            // Inside this thread's batch: written at once, no copy for another thread.
            return insert_audit(&self.lock(), a);
        }
        let a = a.clone();
        self.write(move |conn| insert_audit(conn, &a))
    }

    fn record_fail_opens(
        &self,
        reports: &[super::FailOpenRecord],
        now: UnixTime,
    ) -> StoreResult<usize> {
        let reports = reports.to_vec();
        self.write(move |conn| {
            atomically(conn, |conn| {
                let fresh = super::new_fail_open_ids(&reports, |r, id| {
                    conn.prepare_cached(
                        "INSERT INTO fail_open_reports (tenant, host, id, received_at)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            r.audit.tenant,
                            r.audit.host.as_deref().unwrap_or(""),
                            id,
                            now
                        ])
                    })
                    .map(|n| n == 1)
                    .map_err(db)
                })?;
                let mut recorded = 0;
                for (r, fresh) in reports.iter().zip(fresh) {
                    if fresh {
                        insert_audit(conn, &r.audit)?;
                        recorded += 1;
                    }
                }
                Ok(recorded)
            })
        })
    }

    fn list_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let conn = self.lock();
        let limit = if f.limit == 0 { 1000 } else { f.limit };
        let mut st = conn
            .prepare_cached(
                "SELECT time, tenant, username, channel, client, source, mode, factors, result, reason, transaction_id, host
                 FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR username = ?2) AND (?3 IS NULL OR time >= ?3)
                 ORDER BY id DESC LIMIT ?4",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![f.tenant, f.username, f.since, limit], |r| {
                let factors: String = r.get(7)?;
                let result: String = r.get(8)?;
                Ok(AuditRecord {
                    time: r.get(0)?,
                    tenant: r.get(1)?,
                    username: r.get(2)?,
                    channel: r.get(3)?,
                    client: r.get(4)?,
                    source: r.get(5)?,
                    mode: r.get(6)?,
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
                    reason: r.get(9)?,
                    transaction: r.get(10)?,
                    host: r.get(11)?,
                })
            })
            .map_err(db)?;
        let mut out: Vec<AuditRecord> = rows.collect::<Result<_, _>>().map_err(db)?;
        out.reverse();
        Ok(out)
    }

    fn purge_expired(&self, now: UnixTime) -> StoreResult<u64> {
        use super::SOURCE_ROWS_KEPT;
        // Where no batch writes them (a daemon without code-only logins, another
        // process), within a purge's interval. A failure leaves them held (and the purge
        // goes on: it frees space, which may be what the write lacked).
        if let Err(e) = self.write_last_uses(false, usize::MAX) {
            tracing::warn!(error = %e, "writing factors' last uses failed; tried again at the next purge");
        }
        let mut purged = self.purge_used_otps(now)?;
        // (table, which rows, the time they are compared with)
        let purges: [(&str, &str, UnixTime); 8] = [
            ("transactions", "expires_at <= ?1", now),
            ("bypass_codes", "expires_at <= ?1 OR uses_left <= 0", now),
            // Sent codes stay an hour past expiry: the hourly send quota counts them.
            ("sent_codes", "expires_at <= ?1", now - 3600),
            ("remembered_sources", "expires_at <= ?1", now),
            // Pushes stay a day past expiry: the anti-fatigue window counts them.
            ("push_requests", "expires_at <= ?1", now - 86_400),
            ("enrollments", "expires_at <= ?1", now),
            (
                "fail_open_reports",
                "received_at <= ?1",
                now - super::FAIL_OPEN_IDS_KEPT,
            ),
            // A source's bucket two days after its last failure has drained (windows are
            // at most a day) and any block has ended.
            (
                "throttles",
                "throttle_key LIKE 'source:%' AND last_failure_at <= ?1 AND COALESCE(locked_until, 0) <= ?1",
                now - SOURCE_ROWS_KEPT,
            ),
        ];
        for (table, rows, at) in purges {
            let sql = format!(
                "DELETE FROM {table} WHERE rowid IN
                 (SELECT rowid FROM {table} WHERE {rows} LIMIT {PURGE_CHUNK})"
            );
            purged += self.purge_in_chunks(|conn| {
                let n = conn.execute(&sql, params![at])?;
                Ok((n, n == PURGE_CHUNK))
            })?;
        }
        Ok(purged)
    }

    fn add_enrollment(&self, e: &Enrollment) -> StoreResult<()> {
        self.lock()
            .execute(
                &format!("INSERT INTO enrollments ({ENROLL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    e.token_hash,
                    e.tenant_id,
                    e.tenant,
                    e.user_id,
                    e.username,
                    e.txn_id,
                    e.factor_id,
                    e.created_at,
                    e.expires_at,
                    e.opened_at
                ],
            )
            .map(|_| ())
            .map_err(|err| {
                if is_unique_violation(&err) {
                    StoreError::AlreadyExists {
                        what: "enrolment link",
                        name: "(hash)".into(),
                    }
                } else {
                    db(err)
                }
            })
    }

    fn open_enrollment(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<Enrollment>> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE enrollments SET opened_at = ?2
                 WHERE token_hash = ?1 AND opened_at IS NULL AND expires_at > ?2",
            )
            .map_err(db)?
            .execute(params![token_hash, now])
            .map_err(db)?;
        if n != 1 {
            return Ok(None);
        }
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ENROLL_COLUMNS} FROM enrollments WHERE token_hash = ?1"
            ))
            .map_err(db)?;
        st.query_row(params![token_hash], enrollment_from_row)
            .optional()
            .map_err(db)
    }

    fn set_enrollment_factor(&self, token_hash: &str, factor_id: &str) -> StoreResult<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE enrollments SET factor_id = ?2
                 WHERE token_hash = ?1 AND factor_id IS NULL AND opened_at IS NOT NULL",
            )
            .map_err(db)?;
        st.execute(params![token_hash, factor_id])
            .map(|n| n == 1)
            .map_err(db)
    }

    fn enrollment_of_transaction(&self, txn_id: &str) -> StoreResult<Option<Enrollment>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ENROLL_COLUMNS} FROM enrollments WHERE txn_id = ?1
                 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ))
            .map_err(db)?;
        st.query_row(params![txn_id], enrollment_from_row)
            .optional()
            .map_err(db)
    }

    fn add_admin_token(&self, t: &AdminToken) -> StoreResult<()> {
        self.lock()
            .execute(
                "INSERT INTO admin_tokens (id, tenant_id, role, name, token_hash, created_at, last_used_at, revoked, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    t.id,
                    t.tenant_id,
                    t.role.as_str(),
                    t.name,
                    t.hash,
                    t.created_at,
                    t.last_used_at,
                    t.revoked as i64,
                    t.expires_at
                ],
            )
            .map(|_| ())
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists {
                        what: "token",
                        name: t.id.clone(),
                    }
                } else {
                    db(e)
                }
            })
    }

    fn admin_token(&self, id: &str) -> StoreResult<Option<AdminToken>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!("{ADMIN_TOKEN_SELECT} WHERE k.id = ?1"))
            .map_err(db)?;
        st.query_row(params![id], admin_token_from_row)
            .optional()
            .map_err(db)?
            .transpose()
    }

    fn list_admin_tokens(&self, tenant: Option<TenantId>) -> StoreResult<Vec<AdminToken>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "{ADMIN_TOKEN_SELECT} WHERE (?1 IS NULL OR k.tenant_id = ?1) ORDER BY k.created_at, k.id"
            ))
            .map_err(db)?;
        let rows = st
            .query_map(params![tenant], admin_token_from_row)
            .map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn revoke_admin_token(&self, id: &str) -> StoreResult<bool> {
        self.lock()
            .execute(
                "UPDATE admin_tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                params![id],
            )
            .map(|n| n == 1)
            .map_err(db)
    }

    fn touch_admin_token(&self, id: &str, now: UnixTime) -> StoreResult<()> {
        self.lock()
            .execute(
                "UPDATE admin_tokens SET last_used_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn create_pam_host(
        &self,
        tenant: TenantId,
        name: &str,
        token_hash: &str,
        now: UnixTime,
    ) -> StoreResult<PamHost> {
        let conn = self.lock();
        // One statement: a live host is never replaced, a revoked one is.
        let changed = conn
            .execute(
                "INSERT INTO pam_hosts (tenant_id, name, token_hash, created_at, last_seen_at, revoked)
                 VALUES (?1, ?2, ?3, ?4, NULL, 0)
                 ON CONFLICT (tenant_id, name) DO UPDATE
                 SET token_hash = excluded.token_hash, created_at = excluded.created_at,
                     last_seen_at = NULL, revoked = 0
                 WHERE pam_hosts.revoked <> 0",
                params![tenant, name, token_hash, now],
            )
            .map_err(db)?;
        if changed == 0 {
            return Err(StoreError::AlreadyExists {
                what: "host",
                name: name.to_string(),
            });
        }
        let mut st = conn
            .prepare_cached(&format!(
                "{PAM_HOST_SELECT} WHERE h.tenant_id = ?1 AND h.name = ?2"
            ))
            .map_err(db)?;
        st.query_row(params![tenant, name], pam_host_from_row)
            .map_err(db)
    }

    fn list_pam_hosts(&self, tenant: TenantId) -> StoreResult<Vec<PamHost>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "{PAM_HOST_SELECT} WHERE h.tenant_id = ?1 ORDER BY h.name"
            ))
            .map_err(db)?;
        let rows = st
            .query_map(params![tenant], pam_host_from_row)
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn revoke_pam_host(&self, tenant: TenantId, name: &str) -> StoreResult<bool> {
        let n = self
            .lock()
            .execute(
                "UPDATE pam_hosts SET revoked = 1 WHERE tenant_id = ?1 AND name = ?2 AND revoked = 0",
                params![tenant, name],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn pam_host_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<PamHost>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!("{PAM_HOST_SELECT} WHERE h.token_hash = ?1"))
            .map_err(db)?;
        st.query_row(params![token_hash], pam_host_from_row)
            .optional()
            .map_err(db)
    }

    fn touch_pam_host(&self, host: i64, now: UnixTime) -> StoreResult<()> {
        self.lock()
            .execute(
                "UPDATE pam_hosts SET last_seen_at = ?2
                 WHERE id = ?1 AND (last_seen_at IS NULL OR last_seen_at <= ?2 - 60)",
                params![host, now],
            )
            .map_err(db)?;
        Ok(())
    }

    fn import_users(&self, users: &[ImportUser], now: UnixTime) -> StoreResult<(u64, u64)> {
        let conn = self.lock();
        atomically(&conn, |tx| {
            let (mut created, mut updated) = (0u64, 0u64);
            {
                let mut insert_user = tx
                .prepare_cached(
                    "INSERT INTO users (tenant_id, name, password_hash, email, phone, groups_json, disabled, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7)",
                )
                .map_err(db)?;
                let mut insert_factor = tx
                .prepare_cached(
                    "INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at, confirmed_at, last_used_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db)?;
                for entry in users {
                    match entry {
                        ImportUser::Create {
                            user: u,
                            factor,
                            disabled,
                        } => {
                            let groups =
                                serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
                            match insert_user.execute(params![
                                u.tenant_id,
                                u.name,
                                u.password_hash,
                                u.email,
                                u.phone,
                                groups,
                                now,
                                *disabled as i64
                            ]) {
                                Ok(_) => {}
                                Err(e) if is_unique_violation(&e) => {
                                    return Err(StoreError::AlreadyExists {
                                        what: "user",
                                        name: u.name.clone(),
                                    })
                                }
                                Err(e) => return Err(db(e)),
                            }
                            let user_id = tx.last_insert_rowid();
                            if let Some(f) = factor {
                                insert_factor
                                    .execute(params![
                                        f.id,
                                        user_id,
                                        f.kind.as_str(),
                                        f.state.as_str(),
                                        f.sealed_secret,
                                        f.params,
                                        f.created_at,
                                        f.confirmed_at,
                                        f.last_used_at
                                    ])
                                    .map_err(db)?;
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
                            let n = tx
                                .execute(
                                    "UPDATE users SET
                                   email = CASE WHEN ?2 THEN ?3 ELSE email END,
                                   phone = CASE WHEN ?4 THEN ?5 ELSE phone END,
                                   groups_json = COALESCE(?6, groups_json),
                                   password_hash = COALESCE(?7, password_hash),
                                   disabled = COALESCE(?8, disabled),
                                   session_epoch = session_epoch
                                       + CASE WHEN ?7 IS NOT NULL OR ?8 = 1 THEN 1 ELSE 0 END
                                 WHERE id = ?1",
                                    params![
                                        user,
                                        email.is_some(),
                                        email.as_ref().and_then(|e| e.as_deref()),
                                        phone.is_some(),
                                        phone.as_ref().and_then(|p| p.as_deref()),
                                        groups.as_ref().map(|g| serde_json::to_string(g)
                                            .unwrap_or_else(|_| "[]".into())),
                                        password_hash,
                                        disabled.map(i64::from)
                                    ],
                                )
                                .map_err(db)?;
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
            }
            Ok((created, updated))
        })
    }
}

const ADMIN_TOKEN_SELECT: &str =
    "SELECT k.id, k.tenant_id, t.name, k.role, k.name, k.token_hash, k.created_at, k.last_used_at, k.revoked, k.expires_at
     FROM admin_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id";

fn admin_token_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AdminToken, StoreError>> {
    let role: String = r.get(3)?;
    let Some(role) = AdminRole::parse(&role) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "admin token {} has role '{role}'",
            r.get::<_, String>(0)?
        ))));
    };
    Ok(Ok(AdminToken {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        tenant: r.get(2)?,
        role,
        name: r.get(4)?,
        hash: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked: r.get::<_, i64>(8)? != 0,
        expires_at: r.get(9)?,
    }))
}

const ENROLL_COLUMNS: &str = "token_hash, tenant_id, tenant, user_id, username, txn_id, factor_id, created_at, expires_at, opened_at";

fn enrollment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Enrollment> {
    Ok(Enrollment {
        token_hash: r.get(0)?,
        tenant_id: r.get(1)?,
        tenant: r.get(2)?,
        user_id: r.get(3)?,
        username: r.get(4)?,
        txn_id: r.get(5)?,
        factor_id: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        opened_at: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_with_factors_reads_the_columns_the_rows_are_read_with() {
        let select = USER_WITH_FACTORS
            .strip_prefix("SELECT ")
            .and_then(|s| s.split_once(" FROM "))
            .unwrap()
            .0;
        let cols: Vec<&str> = select.split(',').map(str::trim).collect();
        let user: Vec<String> = user_cols!().split(", ").map(|c| format!("u.{c}")).collect();
        let factor: Vec<String> = factor_cols!()
            .split(", ")
            .map(|c| format!("f.{c}"))
            .collect();
        assert_eq!(cols[..FACTOR_AT], user[..]);
        assert_eq!(cols[FACTOR_AT..FACTOR_ROW_AT], factor[..]);
        assert_eq!(cols[FACTOR_ROW_AT..], ["f.rowid"]);
    }

    #[test]
    fn attributes_set_by_two_processes_at_once_are_all_kept() {
        // The daemon and the CLI each have their own connection to the file: a read, then a
        // write, without the write lock in between lost the other's change.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let a = Arc::new(SqliteStore::open(&path).unwrap());
        let t = a.create_tenant("acme", 1).unwrap();
        let user = a
            .create_user(
                &NewUser {
                    tenant_id: t.id,
                    name: "alice".into(),
                    password_hash: None,
                    email: None,
                    phone: None,
                    groups: Vec::new(),
                },
                1,
            )
            .unwrap();
        let b = Arc::new(SqliteStore::open(&path).unwrap());
        let threads: Vec<_> = [a.clone(), b]
            .into_iter()
            .enumerate()
            .map(|(n, s)| {
                std::thread::spawn(move || {
                    for i in 0..40 {
                        s.set_user_attribute(user.id, &format!("k{n}-{i}"), Some("v"))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let kept = a.user_by_name(t.id, "alice").unwrap().unwrap().attributes;
        assert_eq!(kept.len(), 80, "{kept:?}");
    }

    #[test]
    fn a_new_store_is_readable_by_its_owner_only_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("state/p.db");
        let s = SqliteStore::open(&path).unwrap();
        s.create_tenant("acme", 1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state/p.db-wal")), 0o600);
    }

    #[test]
    fn a_store_is_never_made_or_opened_through_a_symbolic_link_nor_in_a_non_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let error = |path: &Path| match SqliteStore::open(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        };
        // A dangling link (another user's, say, in a shared directory): its target is not
        // made.
        let target = dir.path().join("elsewhere.db");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = error(&path);
        assert!(
            e.contains(&format!("{} is a symbolic link", path.display())),
            "{e}"
        );
        assert!(!target.exists());
        // A link to an existing store is refused too.
        SqliteStore::open(&target).unwrap();
        let e = error(&path);
        assert!(e.contains("is a symbolic link"), "{e}");
        // A directory, a FIFO: not a store (and no wait on the FIFO).
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = error(&path);
        assert!(e.contains("is not a regular file"), "{e}");
        let fifo = dir.path().join("fifo.db");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = error(&fifo);
        assert!(e.contains("is not a regular file"), "{e}");
        // SQLite's files beside the store: a link there is refused as well.
        let wal = dir.path().join("elsewhere.db-wal");
        let _ = std::fs::remove_file(&wal);
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &wal).unwrap();
        let e = error(&target);
        assert!(
            e.contains(&format!("{} is a symbolic link", wal.display())),
            "{e}"
        );
    }

    #[test]
    fn a_store_that_group_or_others_may_read_is_narrowed_to_0600_with_its_wal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let wal = dir.path().join("p.db-wal");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // A store of an older version, or a restored backup: 0644.
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_tenant("acme", 1).unwrap();
        }
        chmod(&path, 0o644);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // The -wal SQLite makes takes the database's mode: narrowed before it was made.
        s.create_tenant("globex", 1).unwrap();
        assert_eq!(mode(&wal), 0o600);
        assert!(s.tenant_by_name("acme").unwrap().is_some());
        // A loose -wal left by a crash is narrowed too (while another connection has it).
        chmod(&wal, 0o664);
        chmod(&path, 0o640);
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!((mode(&path), mode(&wal)), (0o600, 0o600));
        assert!(again.tenant_by_name("globex").unwrap().is_some());
    }

    #[test]
    fn file_store_survives_reopen_and_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_tenant("acme", 1).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.tenant_by_name("acme").unwrap().is_some());
        let mode: String = s
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_user_whose_groups_cannot_be_read_is_an_error_not_groupless() {
        let s = SqliteStore::open_in_memory().unwrap();
        let t = s.create_tenant("acme", 1).unwrap();
        let new = NewUser {
            tenant_id: t.id,
            name: "alice".into(),
            password_hash: None,
            email: None,
            phone: None,
            groups: vec!["contractors".into()],
        };
        s.create_user(&new, 1).unwrap();
        for (column, garbage) in [("groups_json", "[\"contr"), ("attributes_json", "nope")] {
            let before = s.user_by_name(t.id, "alice").unwrap().unwrap();
            assert_eq!(before.groups, ["contractors"]);
            s.lock()
                .execute(
                    &format!("UPDATE users SET {column} = ?1 WHERE name = 'alice'"),
                    [garbage],
                )
                .unwrap();
            assert!(s.user_by_name(t.id, "alice").is_err(), "{column}");
            assert!(s.user_with_factors(t.id, "alice").is_err(), "{column}");
            let repaired = if column == "groups_json" {
                "[\"contractors\"]"
            } else {
                "{}"
            };
            s.lock()
                .execute(
                    &format!("UPDATE users SET {column} = ?1 WHERE name = 'alice'"),
                    [repaired],
                )
                .unwrap();
        }
    }

    /// Whether `counter` of `factor` is free (true) or was used before (false): the
    /// question is itself a use, so ask each once.
    fn free(s: &SqliteStore, factor: &str, counter: i64) -> bool {
        s.use_otp(factor, counter, 100, 1).unwrap()
    }

    #[test]
    fn a_large_wal_starts_over_after_a_batch_has_been_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let s = SqliteStore::open(&path).unwrap();
        // Rows of about 2 KiB: a batch of 200 fills about 100 pages of WAL.
        let long = "f".repeat(2000);
        let frames = || -> i64 {
            let c = Connection::open(&path).unwrap();
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        };
        let mut counter = 0i64;
        let mut batch = |s: &SqliteStore| {
            s.batch(&mut |units| {
                units.begin_unit()?;
                for i in 0..200 {
                    counter += 1;
                    s.use_otp(&format!("{long}{i}"), counter, 100, 1)?;
                }
                units.end_unit(true)
            })
            .unwrap();
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !s.wal_large.load(Ordering::Relaxed) {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL never grew large"
            );
            batch(&s);
            std::thread::sleep(Duration::from_millis(5));
        }
        // A batch leaves the restart to after_batch: its answers go out first.
        batch(&s);
        assert!(
            s.wal_large.load(Ordering::Relaxed),
            "a batch checkpointed before its answers"
        );
        s.after_batch();
        batch(&s);
        let after = frames();
        assert!(after < 1000, "the WAL did not start over: {after} frames");
    }

    #[test]
    fn upgrading_keeps_the_replay_cache_of_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // A store as the version before migration 12 left it, with a used code.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .unwrap();
            for (v, sql) in MIGRATIONS.iter().filter(|m| m.0 < 12) {
                c.execute_batch(sql).unwrap();
                c.execute("INSERT INTO schema_version VALUES (?1, 0)", params![v])
                    .unwrap();
            }
            c.execute_batch(
                "INSERT INTO tenants (id, name, created_at) VALUES (1, 't', 0);
                 INSERT INTO users (id, tenant_id, name, created_at) VALUES (1, 1, 'u', 0);
                 INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at)
                     VALUES ('f', 1, 'totp', 'confirmed', x'00',
                             '{\"algorithm\":\"SHA1\",\"digits\":6,\"period\":60}', 0);",
            )
            .unwrap();
            // Step 7 used under `window = 1`: the old expiry was (7 + 1 + 2) x 60. A row
            // of a factor that is gone keeps its expiry.
            c.execute_batch(
                "INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ('f', 7, 600);
                 INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ('gone', 7, 900);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let expiry = crate::totp::replay_expiry(7, 60);
        assert_eq!(expiry, (7 + 12) * 60);
        assert!(
            !s.use_otp("f", 7, expiry, 1).unwrap(),
            "a code used before the upgrade is still used"
        );
        assert!(s
            .use_otp("f", 8, crate::totp::replay_expiry(8, 60), 1)
            .unwrap());
        assert!(!s.use_otp("gone", 7, 900, 1).unwrap());
        assert_eq!(s.purge_expired(899).unwrap(), 0);
        assert_eq!(s.purge_expired(expiry).unwrap(), 2);
    }

    #[test]
    fn purge_deletes_every_expired_row_in_chunks_and_keeps_the_rest() {
        let s = SqliteStore::open_in_memory().unwrap();
        let expired = 3 * PURGE_CHUNK + 7;
        for i in 0..expired {
            assert!(s.use_otp("f1", i as i64, 50, 1).unwrap());
        }
        for i in 0..5 {
            assert!(s.use_otp("f2", i, 500, 1).unwrap());
        }
        assert_eq!(s.purge_expired(100).unwrap(), expired as u64);
        assert!(
            s.use_otp("f1", 0, 50, 1).unwrap(),
            "an expired row was kept"
        );
        assert!(
            (0..5).all(|i| !s.use_otp("f2", i, 500, 1).unwrap()),
            "a live row was purged"
        );
        // The newest row stays, expired or not: row ids never go back (see `replay`).
        assert_eq!(
            s.purge_expired(100).unwrap(),
            0,
            "the newest row was purged"
        );
        assert!(s.use_otp("f2", 5, 500, 1).unwrap());
        assert_eq!(s.purge_expired(100).unwrap(), 1, "the row added again");
        assert_eq!(s.purge_expired(1000).unwrap(), 5);
        let rows: i64 = s
            .lock()
            .query_row("SELECT count(*) FROM used_otps", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(s.replay.len(), 0, "expired codes stay in memory");
    }

    #[test]
    fn a_batch_keeps_its_kept_units_and_undoes_the_others() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut order = Vec::new();
        s.batch(&mut |units| {
            units.begin_unit()?;
            order.push(s.use_otp("f1", 1, 100, 1)?);
            units.end_unit(true)?;
            units.begin_unit()?;
            order.push(s.use_otp("f2", 1, 100, 1)?);
            // Seen inside the batch at once: the same code again is a replay.
            order.push(s.use_otp("f2", 1, 100, 1)?);
            units.end_unit(false)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(order, [true, true, false]);
        assert!(!free(&s, "f1", 1), "a kept unit was not committed");
        assert!(free(&s, "f2", 1), "an undone unit left its write behind");
    }

    #[test]
    fn a_failed_batch_keeps_nothing_and_the_store_works_after_it() {
        let s = SqliteStore::open_in_memory().unwrap();
        let r = s.batch(&mut |units| {
            units.begin_unit()?;
            s.use_otp("f1", 1, 100, 1)?;
            units.end_unit(true)?;
            Err(StoreError::Database("stop".into()))
        });
        assert!(matches!(r, Err(StoreError::Database(m)) if m == "stop"));
        // A panic inside a batch also leaves nothing and no open transaction behind.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.batch(&mut |_| {
                s.use_otp("f3", 1, 100, 1).unwrap();
                panic!("a bug in a login");
            });
        }));
        assert!(panicked.is_err());
        assert!(free(&s, "f1", 1));
        assert!(free(&s, "f3", 1));
        // Outside a batch, writes are committed on their own again (group commit).
        assert!(!s.batching());
        assert!(!free(&s, "f1", 1));
        assert!(s.lock().is_autocommit());
    }

    #[test]
    fn other_threads_wait_for_the_batch_and_see_it_committed() {
        let s = std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
        let reader = std::sync::Mutex::new(None);
        s.batch(&mut |units| {
            units.begin_unit()?;
            s.use_otp("f1", 7, 100, 1)?;
            units.end_unit(true)?;
            let other = s.clone();
            // Its write waits for the connection until this batch has committed.
            *reader.lock().unwrap() =
                Some(std::thread::spawn(move || other.use_otp("f1", 7, 100, 1)));
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        })
        .unwrap();
        let other = reader.lock().unwrap().take().unwrap().join().unwrap();
        assert!(
            !other.unwrap(),
            "another thread used a code that this batch had used"
        );
    }
}
