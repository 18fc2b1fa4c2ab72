//! The TOTP replay cache of the SQLite store, checked in memory.
//!
//! Every code a login accepts is recorded (factor, step, expiry) so that it is refused the
//! next time. The table `used_otps` keeps them durably, but only as a log: rows appended in
//! row-id order, no unique key. A unique key on (factor, step) puts each login's row at a
//! random place in a B-tree and splits its pages out of order, and that was a fifth of
//! the SQLite time of a code-only login (see docs/BENCHMARKS.md). The check is made here,
//! against every row of the table held in memory.
//!
//! The memory stays exactly the table's contents although other processes (the CLI, a
//! second daemon) append to the same file, and although a login's rows are undone with its
//! savepoint or its whole transaction:
//! - rows are only ever written inside a write transaction, which holds SQLite's write
//!   lock: the first record in a transaction first reads every row appended since the
//!   last one read ([`State::last_seen`]); nobody else can append until it ends;
//! - a record inserts its row first: SQLite gives it the largest row id plus one, so every
//!   row of this transaction with that id or a larger one is gone (a savepoint rolled back
//!   since), and is forgotten before the check;
//! - just before COMMIT the table's largest row id forgets the rows rolled back after the
//!   last record ([`Replay::committing`]); a rollback forgets all of this transaction's
//!   rows ([`Replay::ended`]).
//!
//! The purge never deletes the row with the largest id, so row ids never go back (SQLite
//! would reuse them, and a row appended by another process could then be missed). Should
//! they go back anyway (rows deleted by hand), the cache is read again from the start.

use std::collections::HashMap;

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use super::group_commit::Hooks;
use super::{StoreError, StoreResult};
use crate::clock::UnixTime;

/// See the module documentation. One per SQLite connection that writes the table.
#[derive(Default)]
pub(super) struct Replay {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every row of the table up to [`State::last_seen`], and this transaction's rows
    /// ([`State::pending`]): factor id -> (step, expiry).
    used: HashMap<Box<str>, Vec<(i64, UnixTime)>>,
    /// The largest row id read from the table (committed rows).
    last_seen: i64,
    /// This transaction's rows, by increasing row id.
    pending: Vec<Pending>,
    /// The rows appended since `last_seen` were read in this transaction.
    synced: bool,
    /// The row ids went back: [`State::used`] may hold rows of this transaction that a
    /// rollback will undo; read the table again from the start in the next one.
    rebuild: bool,
}

struct Pending {
    id: i64,
    factor: Box<str>,
    counter: i64,
    expires: UnixTime,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl Replay {
    /// Records `counter` of `factor` (its row expiring at `expires`) as used; false if it
    /// was used before (nothing is recorded then). Inside a write transaction only.
    pub(super) fn record(
        &self,
        conn: &Connection,
        factor: &str,
        counter: i64,
        expires: UnixTime,
    ) -> StoreResult<bool> {
        if conn.is_autocommit() {
            return Err(StoreError::Database(
                "internal error: the TOTP replay cache is written only inside a transaction".into(),
            ));
        }
        let mut s = self.state.lock();
        if !s.synced {
            s.sync(conn, i64::MAX)?;
            s.synced = true;
        }
        conn.prepare_cached(
            "INSERT INTO used_otps (factor_id, counter, expires_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut st| st.execute(params![factor, counter, expires]))
        .map_err(db)?;
        let id = conn.last_insert_rowid();
        if id <= s.last_seen {
            tracing::warn!(
                row = id,
                last_seen = s.last_seen,
                "the TOTP replay cache table lost its newest rows (deleted by hand?); reading it again"
            );
            s.used.clear();
            s.pending.clear();
            s.last_seen = 0;
            s.sync(conn, id)?;
            s.rebuild = true;
        }
        s.forget_from(id);
        if s.contains(factor, counter, expires) {
            conn.prepare_cached("DELETE FROM used_otps WHERE id = ?1")
                .and_then(|mut st| st.execute([id]))
                .map_err(db)?;
            return Ok(false);
        }
        s.used
            .entry(factor.into())
            .or_default()
            .push((counter, expires));
        s.pending.push(Pending {
            id,
            factor: factor.into(),
            counter,
            expires,
        });
        Ok(true)
    }

    /// Forgets the codes expired at `now` (their rows are the purge's).
    pub(super) fn sweep(&self, now: UnixTime) {
        let mut s = self.state.lock();
        s.used.retain(|_, steps| {
            steps.retain(|&(_, expires)| expires > now);
            !steps.is_empty()
        });
    }

    /// Codes held (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.state.lock().used.values().map(Vec::len).sum()
    }
}

impl Hooks for Replay {
    /// Just before COMMIT, inside the transaction: forgets the rows of this transaction
    /// that a savepoint rolled back after the last record.
    fn committing(&self, conn: &Connection) -> StoreResult<()> {
        let mut s = self.state.lock();
        if s.pending.is_empty() {
            return Ok(());
        }
        let newest: Option<i64> = conn
            .prepare_cached("SELECT max(id) FROM used_otps")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(db)?;
        s.forget_from(newest.unwrap_or(0).saturating_add(1));
        Ok(())
    }

    /// After the transaction ended, committed or not.
    fn ended(&self, committed: bool) {
        let mut s = self.state.lock();
        if s.rebuild {
            *s = State::default();
            return;
        }
        if committed {
            if let Some(last) = s.pending.last() {
                s.last_seen = last.id;
            }
            s.pending.clear();
        } else {
            s.forget_from(i64::MIN);
        }
        s.synced = false;
    }
}

impl State {
    /// Reads the rows appended since [`State::last_seen`] (below `below`). A transaction
    /// whose end went unreported left its rows pending: forgotten first, and read back
    /// if it committed.
    fn sync(&mut self, conn: &Connection, below: i64) -> StoreResult<()> {
        self.forget_from(i64::MIN);
        let mut st = conn
            .prepare_cached(
                "SELECT id, factor_id, counter, expires_at FROM used_otps
                 WHERE id > ?1 AND id < ?2 ORDER BY id",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![self.last_seen, below], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, UnixTime>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db)?;
        for (id, factor, counter, expires) in rows {
            self.used
                .entry(factor.into_boxed_str())
                .or_default()
                .push((counter, expires));
            self.last_seen = self.last_seen.max(id);
        }
        Ok(())
    }

    fn contains(&self, factor: &str, counter: i64, expires: UnixTime) -> bool {
        self.used
            .get(factor)
            .is_some_and(|steps| steps.contains(&(counter, expires)))
    }

    /// Forgets this transaction's rows with row id `id` or larger.
    fn forget_from(&mut self, id: i64) {
        while self.pending.last().is_some_and(|p| p.id >= id) {
            let Some(p) = self.pending.pop() else { break };
            if let Some(steps) = self.used.get_mut(&p.factor) {
                if let Some(i) = steps.iter().rposition(|&s| s == (p.counter, p.expires)) {
                    steps.swap_remove(i);
                }
                if steps.is_empty() {
                    self.used.remove(&p.factor);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::sqlite::SqliteStore;
    use super::super::{Store, StoreError};

    fn open(path: &Path) -> SqliteStore {
        SqliteStore::open(path).unwrap()
    }

    /// Whether `counter` of `factor` was free (it is used now).
    fn free(s: &SqliteStore, factor: &str, counter: i64) -> bool {
        s.use_otp(factor, counter, 100, 1).unwrap()
    }

    fn rows(path: &Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM used_otps", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_code_used_by_another_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let (a, b) = (open(&path), open(&path));
        for step in 0..50 {
            let (first, second) = if step % 3 == 0 { (&a, &b) } else { (&b, &a) };
            assert!(free(first, "f", step), "step {step}");
            assert!(!free(second, "f", step), "step {step} used twice");
            assert!(!free(first, "f", step), "step {step} used twice");
        }
        // And after a restart, from the table.
        drop((a, b));
        let c = open(&path);
        assert!(!free(&c, "f", 0));
        assert!(!free(&c, "f", 49));
        assert!(free(&c, "f", 50));
        assert_eq!(rows(&path), 51, "a refused code left a row");
    }

    #[test]
    fn rows_undone_after_the_last_record_are_forgotten_before_the_commit() {
        // An undone unit frees its row id; another process's next row takes it. Were the
        // undone row taken as committed, that row would never be read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let (a, b) = (open(&path), open(&path));
        a.batch(&mut |units| {
            units.begin_unit()?;
            assert!(a.use_otp("f", 1, 100, 1)?);
            units.end_unit(true)?;
            units.begin_unit()?;
            assert!(a.use_otp("f", 2, 100, 1)?);
            assert!(a.use_otp("g", 2, 100, 1)?);
            units.end_unit(false)?;
            Ok(())
        })
        .unwrap();
        // Past the undone ids: the ids alone do not show that rows were missed.
        for step in 1..=3 {
            assert!(
                free(&b, "h", step),
                "another process's row takes a freed id"
            );
        }
        assert!(!free(&a, "h", 1), "a row of another process was missed");
        assert!(free(&a, "f", 2), "an undone unit's code stays used");
        assert!(free(&a, "g", 2), "an undone unit's code stays used");
        assert!(!free(&b, "f", 2));
        assert!(!free(&a, "f", 1));
    }

    #[test]
    fn rows_undone_between_records_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let a = open(&path);
        a.batch(&mut |units| {
            units.begin_unit()?;
            assert!(a.use_otp("f", 1, 100, 1)?);
            units.end_unit(false)?;
            units.begin_unit()?;
            // Takes the undone row's id.
            assert!(a.use_otp("f", 2, 100, 1)?);
            assert!(a.use_otp("f", 1, 100, 1)?, "an undone unit's code is used");
            assert!(!a.use_otp("f", 2, 100, 1)?);
            units.end_unit(true)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(rows(&path), 2);
        let b = open(&path);
        assert!(!free(&b, "f", 1));
        assert!(!free(&b, "f", 2));
        assert!(!free(&a, "f", 1));
    }

    #[test]
    fn a_failed_batch_or_write_forgets_its_codes_and_the_rows_after_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let (a, b) = (open(&path), open(&path));
        assert!(free(&a, "f", 0));
        let r = a.batch(&mut |units| {
            units.begin_unit()?;
            a.use_otp("f", 1, 100, 1)?;
            units.end_unit(true)?;
            Err(StoreError::Database("stop".into()))
        });
        assert!(r.is_err());
        // A panic inside a batch too.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.batch(&mut |_| {
                a.use_otp("f", 2, 100, 1).unwrap();
                panic!("a bug in a login");
            });
        }));
        assert!(panicked.is_err());
        assert!(free(&b, "g", 1), "another process's row takes the freed id");
        assert!(!free(&a, "g", 1), "a row of another process was missed");
        assert!(free(&a, "f", 1));
        assert!(free(&a, "f", 2));
        assert!(!free(&b, "f", 1));
        assert!(!free(&b, "f", 2));
    }

    #[test]
    fn rows_deleted_by_hand_make_the_cache_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let (a, b) = (open(&path), open(&path));
        for step in 0..5 {
            assert!(free(&a, "f", step));
        }
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM used_otps", [])
            .unwrap();
        // Row ids start over: the first record sees it and reads the table again.
        assert!(free(&b, "g", 1));
        assert!(free(&a, "h", 1));
        assert!(!free(&a, "g", 1), "a row of another process was missed");
        assert!(!free(&a, "h", 1));
        assert!(free(&b, "g", 2));
        assert!(!free(&a, "g", 2), "a row of another process was missed");
        // What was deleted is deleted: the operator freed those codes.
        assert!(free(&a, "f", 0));
    }

    #[test]
    fn the_migration_keeps_the_codes_used_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .unwrap();
            for (v, sql) in super::super::MIGRATIONS.iter().filter(|m| m.0 < 18) {
                c.execute_batch(sql).unwrap();
                c.execute("INSERT INTO schema_version VALUES (?1, 0)", [v])
                    .unwrap();
            }
            c.execute_batch(
                "INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ('f', 2, 300);
                 INSERT INTO used_otps (factor_id, counter, expires_at) VALUES ('f', 1, 200);",
            )
            .unwrap();
        }
        let s = open(&path);
        assert!(!s.use_otp("f", 1, 200, 1).unwrap());
        assert!(!s.use_otp("f", 2, 300, 1).unwrap());
        assert!(s.use_otp("f", 3, 400, 1).unwrap());
        let order: Vec<i64> = rusqlite::Connection::open(&path)
            .unwrap()
            .prepare("SELECT counter FROM used_otps ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(order, [1, 2, 3], "copied oldest expiry first");
    }
}
