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
//! SQLite gives a new row the largest id plus one, so ids go back if the newest rows are
//! deleted, and rows appended after that could be missed. The purge never deletes the
//! newest row; should it go anyway (deleted by hand, or by the purge of a binary from
//! before this table), the next reading, which starts at the newest row read before,
//! does not find it unchanged, and the whole table is read again.
//!
//! A code's row also carries, when it is due, its factor's last use
//! ([`crate::model::Factor::last_use_outdated`]). Written into the factors table by each
//! login, that was an update of a scattered page per login (a WAL frame, its checksum, the
//! checkpoint's copy), most of the difference between a user's first login in the hour
//! and the next ones (docs/BENCHMARKS.md). The last use stays with the code's row: undone
//! with it, and only once the row is committed is it held here ([`LastUses`]), until the
//! store writes the last uses held, many at once ([`Replay::take_last_uses`]). Until then
//! the store's readers see it over the table's value ([`Replay::last_use`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use super::group_commit::Hooks;
use super::sqlite::db;
use super::{StoreError, StoreResult};
use crate::clock::UnixTime;

/// See the module documentation. One per SQLite connection that writes the table.
#[derive(Default)]
pub(super) struct Replay {
    state: Mutex<State>,
    last_uses: Mutex<LastUses>,
}

/// How long a committed last use is held before it is written: the longer, the more of
/// them share a page of the factors table (and the more are lost with the process).
pub(super) const LAST_USE_HOLD: Duration = Duration::from_secs(1);

/// A factor's last use, to be written to `factors.last_used_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LastUse {
    /// The factor's row id in `factors`, if known: the last uses are written in row-id
    /// order, so that those on one page of the table are written together.
    pub(super) row: Option<i64>,
    pub(super) at: UnixTime,
}

/// The factors' last uses committed but not written to `factors.last_used_at` yet.
#[derive(Default)]
struct LastUses {
    /// Factor id -> its last use, the one recorded last (the clock may have gone back).
    held: HashMap<Box<str>, LastUse>,
    /// When the oldest of them was committed.
    since: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// Every row of the table up to [`State::last`], and this transaction's rows
    /// ([`State::pending`]): factor id -> (step, expiry).
    used: HashMap<Box<str>, Vec<(i64, UnixTime)>>,
    /// The newest committed row read (or written) by this connection. The next reading
    /// starts at it and finds it unchanged, or the table lost rows (see [`State::sync`]).
    last: Option<Row>,
    /// This transaction's rows, by increasing row id.
    pending: Vec<Row>,
    /// The last uses of this transaction's rows (row id, factor, time), by increasing
    /// row id: held once the transaction commits.
    stamps: Vec<(i64, Box<str>, LastUse)>,
    /// The rows appended since `last` were read in this transaction.
    synced: bool,
    /// The row ids went back under this transaction: [`State::used`] may hold rows of it
    /// that a rollback will undo; read the table again from the start in the next one.
    rebuild: bool,
}

#[derive(Clone, PartialEq, Eq)]
struct Row {
    id: i64,
    factor: Box<str>,
    counter: i64,
    expires: UnixTime,
}

impl Replay {
    /// Records `counter` of `factor` (its row expiring at `expires`) as used, and with it
    /// the factor's `last_use` if given; false if it was used before (nothing is recorded
    /// then). Inside a write transaction only.
    pub(super) fn record(
        &self,
        conn: &Connection,
        factor: &str,
        counter: i64,
        expires: UnixTime,
        last_use: Option<LastUse>,
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
        if id <= s.last_id() {
            tracing::warn!(
                row = id,
                newest_read = s.last_id(),
                "the TOTP replay cache table lost its newest rows (deleted by hand?); reading it again"
            );
            // Set first: should the reading fail, the next record reads it all again.
            s.rebuild = true;
            s.synced = false;
            s.used.clear();
            s.pending.clear();
            s.stamps.retain(|&(row, _, _)| row < id);
            s.last = None;
            s.sync(conn, id)?;
            s.synced = true;
        }
        s.forget_from(id);
        if s.contains(factor, counter, expires) {
            // The newest row, this transaction's own: as if never written.
            conn.prepare_cached("DELETE FROM used_otps WHERE id = ?1")
                .and_then(|mut st| st.execute([id]))
                .map_err(db)?;
            return Ok(false);
        }
        let row = Row {
            id,
            factor: factor.into(),
            counter,
            expires,
        };
        s.hold(&row);
        s.pending.push(row);
        if let Some(last_use) = last_use {
            s.stamps.push((id, factor.into(), last_use));
        }
        Ok(true)
    }

    /// The last use of `factor` committed and not written to the table yet.
    pub(super) fn last_use(&self, factor: &str) -> Option<UnixTime> {
        let l = self.last_uses.lock();
        if l.held.is_empty() {
            return None;
        }
        l.held.get(factor).map(|u| u.at)
    }

    /// Whether [`Replay::take_last_uses`] would give any (without `all`): checked before
    /// the connection is taken, which another thread (the purge) may be holding.
    pub(super) fn last_uses_due(&self) -> bool {
        self.last_uses
            .lock()
            .since
            .is_some_and(|t| t.elapsed() >= LAST_USE_HOLD)
    }

    /// Forgets the last use held for `factor` (a newer one was written).
    pub(super) fn forget_last_use(&self, factor: &str) {
        let mut l = self.last_uses.lock();
        l.held.remove(factor);
        if l.held.is_empty() {
            l.since = None;
        }
    }

    /// Up to `max` of the last uses held, the first in row-id order (those of unknown row
    /// last), to be written now: none unless the oldest was held [`LAST_USE_HOLD`] or
    /// `all`. Those not written after all are to be given back
    /// ([`Replay::give_back_last_uses`]).
    pub(super) fn take_last_uses(&self, all: bool, max: usize) -> Vec<(Box<str>, LastUse)> {
        let mut l = self.last_uses.lock();
        let due = l.since.is_some_and(|t| all || t.elapsed() >= LAST_USE_HOLD);
        if !due {
            return Vec::new();
        }
        let mut taken: Vec<(Box<str>, LastUse)> = if l.held.len() <= max {
            l.held.drain().collect()
        } else {
            let mut first: Vec<(i64, &Box<str>)> = l
                .held
                .iter()
                .map(|(id, u)| (u.row.unwrap_or(i64::MAX), id))
                .collect();
            first.select_nth_unstable(max - 1);
            let ids: Vec<Box<str>> = first[..max].iter().map(|(_, id)| (*id).clone()).collect();
            ids.into_iter()
                .filter_map(|id| l.held.remove_entry(&id))
                .collect()
        };
        if l.held.is_empty() {
            l.since = None;
        }
        taken.sort_unstable_by(|(a, x), (b, y)| {
            (x.row.unwrap_or(i64::MAX), a).cmp(&(y.row.unwrap_or(i64::MAX), b))
        });
        taken
    }

    /// Last uses taken but not written: held again, unless a newer one came meanwhile.
    pub(super) fn give_back_last_uses(&self, uses: Vec<(Box<str>, LastUse)>) {
        if uses.is_empty() {
            return;
        }
        let mut l = self.last_uses.lock();
        for (factor, at) in uses {
            l.held.entry(factor).or_insert(at);
        }
        // Tried again after another hold, not at once.
        l.since = Some(Instant::now());
    }

    /// Reads the rows appended since the last reading, outside a write transaction (each
    /// reading one statement, one snapshot): taken as committed, which every row seen then
    /// is. The next write transaction reads on from the newest of them.
    pub(super) fn load(&self, conn: &Connection) -> StoreResult<()> {
        let mut s = self.state.lock();
        if !s.pending.is_empty() || s.synced {
            return Ok(()); // inside a write transaction: its first record reads
        }
        s.sync(conn, i64::MAX)
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
        let stamps = std::mem::take(&mut s.stamps);
        if committed && !stamps.is_empty() {
            let mut l = self.last_uses.lock();
            for (_, factor, last_use) in stamps {
                l.held.insert(factor, last_use);
            }
            l.since.get_or_insert_with(Instant::now);
        }
        if s.rebuild {
            *s = State::default();
            return;
        }
        if committed {
            if let Some(newest) = s.pending.pop() {
                s.last = Some(newest);
            }
            s.pending.clear();
        } else {
            s.forget_from(i64::MIN);
        }
        s.synced = false;
    }
}

impl State {
    fn last_id(&self) -> i64 {
        self.last.as_ref().map_or(0, |r| r.id)
    }

    /// Reads the rows appended since [`State::last`] (below `below`). A transaction
    /// whose end went unreported left its rows pending: forgotten first, and read back
    /// if it committed.
    ///
    /// The reading starts at the newest row read before, which must still be there: if
    /// it is gone (deleted by hand, or by the purge of a binary from before this table),
    /// SQLite may have given its id and the ones after it to rows this connection never
    /// read, and the whole table is read again.
    fn sync(&mut self, conn: &Connection, below: i64) -> StoreResult<()> {
        self.forget_from(i64::MIN);
        let mut rows = read(conn, self.last_id(), below)?;
        if let Some(last) = &self.last {
            if rows.first() != Some(last) {
                tracing::warn!(
                    row = last.id,
                    "the newest row of the TOTP replay cache table read before is gone (deleted by hand?); reading it again"
                );
                self.used.clear();
                self.last = None;
                rows = read(conn, 0, below)?;
            } else {
                rows.remove(0);
            }
        }
        for row in &rows {
            self.hold(row);
        }
        if let Some(newest) = rows.pop() {
            self.last = Some(newest);
        }
        Ok(())
    }

    fn hold(&mut self, row: &Row) {
        self.used
            .entry(row.factor.clone())
            .or_default()
            .push((row.counter, row.expires));
    }

    fn contains(&self, factor: &str, counter: i64, expires: UnixTime) -> bool {
        self.used
            .get(factor)
            .is_some_and(|steps| steps.contains(&(counter, expires)))
    }

    /// Forgets this transaction's rows with row id `id` or larger, and their last uses.
    fn forget_from(&mut self, id: i64) {
        while self.stamps.last().is_some_and(|s| s.0 >= id) {
            self.stamps.pop();
        }
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

/// The rows from id `from` on, below `below`, in id order.
fn read(conn: &Connection, from: i64, below: i64) -> StoreResult<Vec<Row>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, factor_id, counter, expires_at FROM used_otps
             WHERE id >= ?1 AND id < ?2 ORDER BY id",
        )
        .map_err(db)?;
    let rows = st
        .query_map(params![from, below], |r| {
            Ok(Row {
                id: r.get(0)?,
                factor: r.get::<_, String>(1)?.into_boxed_str(),
                counter: r.get(2)?,
                expires: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::sqlite::SqliteStore;
    use super::super::{Store, StoreError};
    use crate::model::{Factor, FactorKind, FactorState, NewUser, UserId};

    /// A store file's path, in a directory removed when the first value is dropped.
    fn file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        (dir, path)
    }

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
        let (_dir, path) = file();
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
    fn a_cache_read_ahead_reads_on_from_where_it_stopped() {
        let (_dir, path) = file();
        let a = open(&path);
        for step in 0..3 {
            assert!(free(&a, "f", step));
        }
        let b = open(&path);
        b.warm().unwrap();
        assert_eq!(b.replay.len(), 3);
        assert!(free(&a, "f", 3), "written after the reading ahead");
        assert!(
            !free(&b, "f", 3),
            "a row written after the reading ahead was missed"
        );
        assert!(!free(&b, "f", 0));
        b.warm().unwrap();
        assert_eq!(b.replay.len(), 4);
    }

    #[test]
    fn rows_undone_after_the_last_record_are_forgotten_before_the_commit() {
        // An undone unit frees its row id; another process's next row takes it. Were the
        // undone row taken as committed, that row would never be read.
        let (_dir, path) = file();
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
        let (_dir, path) = file();
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
        let (_dir, path) = file();
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
        let (_dir, path) = file();
        let (a, b) = (open(&path), open(&path));
        let by_hand = |sql: &str| {
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute(sql, [])
                .unwrap()
        };
        for step in 0..3 {
            assert!(free(&a, "f", step));
        }
        // The newest row goes, and another process's rows take its id and the next.
        by_hand("DELETE FROM used_otps WHERE id = (SELECT max(id) FROM used_otps)");
        assert!(free(&b, "g", 1));
        assert!(free(&b, "g", 2));
        assert!(free(&a, "x", 1));
        assert!(!free(&a, "g", 1), "a row of another process was missed");
        assert!(!free(&a, "g", 2));
        assert!(free(&a, "f", 2), "the operator freed that code");
        assert!(!free(&a, "f", 1));
        // Every row goes: this process's next row shows the ids went back.
        by_hand("DELETE FROM used_otps");
        assert!(free(&b, "h", 1));
        assert!(free(&a, "h", 2));
        assert!(!free(&a, "h", 1), "a row of another process was missed");
        assert!(!free(&a, "h", 2));
        assert!(free(&b, "h", 3));
        assert!(!free(&a, "h", 3), "a row of another process was missed");
        assert!(free(&a, "f", 0), "the operator freed that code");
    }

    #[test]
    fn a_table_that_cannot_be_read_refuses_every_code() {
        let (_dir, path) = file();
        let a = open(&path);
        for step in 0..3 {
            assert!(free(&a, "f", step));
        }
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DELETE FROM used_otps;
             INSERT INTO used_otps (factor_id, counter, expires_at) VALUES (x'ff', 1, 100);",
        )
        .unwrap();
        // The ids went back; reading the table again fails on the unreadable row. No
        // code is taken for unused meanwhile, in this batch nor after it.
        a.batch(&mut |units| {
            for _ in 0..2 {
                units.begin_unit()?;
                assert!(a.use_otp("f", 0, 100, 1).is_err());
                units.end_unit(false)?;
            }
            Ok(())
        })
        .unwrap();
        assert!(a.use_otp("f", 1, 100, 1).is_err());
        c.execute("DELETE FROM used_otps WHERE factor_id = x'ff'", [])
            .unwrap();
        assert!(free(&a, "f", 1));
        assert!(!free(&a, "f", 1));
    }

    /// A store at `path` with a user "u" of tenant "t" who has the TOTP factors `ids`.
    fn with_factors(path: &Path, ids: &[&str]) -> (SqliteStore, UserId) {
        let s = open(path);
        let t = s.create_tenant("t", 1).unwrap();
        let u = s
            .create_user(
                &NewUser {
                    tenant_id: t.id,
                    name: "u".into(),
                    password_hash: None,
                    email: None,
                    phone: None,
                    groups: vec![],
                },
                1,
            )
            .unwrap();
        for id in ids {
            s.add_factor(&Factor {
                id: (*id).into(),
                user_id: u.id,
                kind: FactorKind::Totp,
                state: FactorState::Confirmed,
                sealed_secret: vec![1],
                params: "{}".into(),
                created_at: 1,
                confirmed_at: Some(1),
                last_used_at: None,
            })
            .unwrap();
        }
        (s, u.id)
    }

    /// `factor`'s last use as the table has it, and as the store shows it.
    fn last_used(path: &Path, s: &SqliteStore, user: UserId, factor: &str) -> [Option<i64>; 2] {
        let in_table = rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT last_used_at FROM factors WHERE id = ?1",
                [factor],
                |r| r.get(0),
            )
            .unwrap();
        let shown = s
            .factors_of(user)
            .unwrap()
            .into_iter()
            .find(|f| f.id == factor)
            .unwrap()
            .last_used_at;
        let (_, read) = s.user_with_factors(1, "u").unwrap().unwrap();
        let read = read.into_iter().find(|f| f.id == factor).unwrap();
        assert_eq!(read.last_used_at, shown, "the two readings of {factor}");
        [in_table, shown]
    }

    #[test]
    fn a_last_use_is_seen_at_once_and_written_with_others_later() {
        let (_dir, path) = file();
        let (s, u) = with_factors(&path, &["f1", "f2"]);
        s.user_with_factors(1, "u").unwrap(); // the row ids
        assert!(s.use_otp("f1", 1, 100, 50).unwrap());
        assert!(s.use_otp("f2", 1, 100, 60).unwrap());
        assert!(!s.use_otp("f2", 1, 100, 70).unwrap(), "a refused code");
        assert_eq!(last_used(&path, &s, u, "f1"), [None, Some(50)]);
        assert_eq!(last_used(&path, &s, u, "f2"), [None, Some(60)]);
        s.write_last_uses(false, usize::MAX).unwrap();
        assert_eq!(
            last_used(&path, &s, u, "f1"),
            [None, Some(50)],
            "held a while"
        );
        s.write_last_uses(true, usize::MAX).unwrap();
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(50), Some(50)]);
        assert_eq!(last_used(&path, &s, u, "f2"), [Some(60), Some(60)]);
        // Those left when the store closes are written then.
        assert!(s.use_otp("f1", 2, 100, 80).unwrap());
        drop(s);
        let s = open(&path);
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(80), Some(80)]);
    }

    #[test]
    fn after_the_hold_the_batch_thread_writes_them() {
        let (_dir, path) = file();
        let (s, u) = with_factors(&path, &["f1"]);
        s.batch(&mut |_| s.use_otp("f1", 1, 100, 50).map(|_| ()))
            .unwrap();
        s.after_batch();
        assert_eq!(last_used(&path, &s, u, "f1"), [None, Some(50)]);
        std::thread::sleep(super::LAST_USE_HOLD);
        s.after_batch();
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(50), Some(50)]);
    }

    #[test]
    fn undone_units_and_failed_batches_leave_no_last_use() {
        let (_dir, path) = file();
        let (s, u) = with_factors(&path, &["f1", "f2", "f3"]);
        s.batch(&mut |units| {
            units.begin_unit()?;
            assert!(s.use_otp("f1", 1, 100, 50)?);
            units.end_unit(false)?;
            units.begin_unit()?;
            assert!(s.use_otp("f2", 1, 100, 50)?);
            units.end_unit(true)?;
            Ok(())
        })
        .unwrap();
        let failed = s.batch(&mut |_| {
            assert!(s.use_otp("f3", 1, 100, 50)?);
            Err(StoreError::Database("stop".into()))
        });
        assert!(failed.is_err());
        s.write_last_uses(true, usize::MAX).unwrap();
        assert_eq!(
            last_used(&path, &s, u, "f1"),
            [None, None],
            "an undone unit"
        );
        assert_eq!(last_used(&path, &s, u, "f2"), [Some(50), Some(50)]);
        assert_eq!(
            last_used(&path, &s, u, "f3"),
            [None, None],
            "a failed batch"
        );
    }

    #[test]
    fn a_last_use_not_written_is_held_again_and_a_factor_moved_is_found() {
        let (_dir, path) = file();
        let (s, u) = with_factors(&path, &["f1", "f2"]);
        s.user_with_factors(1, "u").unwrap(); // f1's row id, soon out of date
        s.remove_factor(u, "f2").unwrap();
        s.remove_factor(u, "f1").unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        // f1 again, at another row id, and another factor at its old one.
        c.execute_batch(
            "INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at)
                 VALUES ('other', 1, 'totp', 'confirmed', x'01', '{}', 1);
             INSERT INTO factors (id, user_id, kind, state, sealed_secret, params, created_at)
                 VALUES ('f1', 1, 'totp', 'confirmed', x'01', '{}', 1);",
        )
        .unwrap();
        assert!(s.use_otp("f1", 1, 100, 50).unwrap());
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON factors BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        assert!(s.write_last_uses(true, usize::MAX).is_err());
        assert_eq!(
            last_used(&path, &s, u, "f1"),
            [None, Some(50)],
            "held again"
        );
        c.execute_batch("DROP TRIGGER refuse").unwrap();
        s.write_last_uses(true, usize::MAX).unwrap();
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(50), Some(50)]);
        assert_eq!(last_used(&path, &s, u, "other"), [None, None]);
    }

    #[test]
    fn a_last_use_written_directly_is_not_written_over() {
        let (_dir, path) = file();
        let (s, u) = with_factors(&path, &["f1"]);
        assert!(s.use_otp("f1", 1, 100, 50).unwrap());
        s.touch_factor("f1", 90).unwrap();
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(90), Some(90)]);
        s.write_last_uses(true, usize::MAX).unwrap();
        assert_eq!(last_used(&path, &s, u, "f1"), [Some(90), Some(90)]);
    }

    #[test]
    fn the_migration_keeps_the_codes_used_before_it() {
        let (_dir, path) = file();
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
