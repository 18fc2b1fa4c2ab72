//! Group commit for the SQLite store.
//!
//! Every login writes (the replay cache, the audit record, ...), and a SQLite commit costs
//! a WAL append of every page it touched plus a round of file locks. Writes that arrive
//! while another thread holds the connection wait in a queue; the next thread to get the
//! connection (the "leader") commits all of them in one transaction. Under load one commit
//! then carries many logins' writes (the audit table's last page is written once, not once
//! per login); alone, a write is committed at once, as before.
//!
//! Each write runs inside its own `SAVEPOINT`, so one that fails (a unique key, say) is
//! undone alone. A caller gets its answer only after the `COMMIT` that made its write
//! durable, or the error that lost it: nothing is acknowledged before it is committed.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use parking_lot::ReentrantMutex;
use rusqlite::Connection;

use super::sqlite::run_sql;
use super::{StoreError, StoreResult};

/// What the store keeps beside the connection's transactions (the TOTP replay cache, see
/// `replay`): told just before a transaction commits, and how it ended.
pub(super) trait Hooks: Sync {
    /// Inside the transaction, just before COMMIT; an error rolls it back.
    fn committing(&self, conn: &Connection) -> StoreResult<()>;
    /// The transaction ended: committed, or rolled back.
    fn ended(&self, committed: bool);
}

/// Delivers a write's answer once the fate of its transaction is known.
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Runs a write; says whether it succeeded (else its savepoint is rolled back).
type Run = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// A queued write.
struct Job {
    run: Run,
    /// Answers without running (the transaction could not begin).
    fail: Box<dyn FnOnce(&StoreError) + Send>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A thread is committing a batch.
    leading: bool,
}

/// The write queue of one SQLite connection.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Signalled when a leader finishes a batch.
    done: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The queue holds no invariant a panic could break half-way.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// Runs `write` on `conn` inside a transaction (shared with other writers waiting at
    /// the same time) and returns its result once that transaction is committed.
    /// `write` must not begin or end transactions itself; `hooks` are told of each.
    pub(super) fn write<T, F>(
        &self,
        conn: &ReentrantMutex<Connection>,
        hooks: &dyn Hooks,
        write: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<StoreResult<T>>>> = Arc::default();
        let (run_slot, fail_slot) = (slot.clone(), slot.clone());
        let job = Job {
            run: Box::new(move |c| {
                let result = write(c);
                let ok = result.is_ok();
                let finish: Finish = Box::new(move |commit| {
                    *lock(&run_slot) = Some(match (result, commit) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Ok(_), Err(e)) => Err(StoreError::Database(e.to_string())),
                        (Err(e), _) => Err(e),
                    });
                });
                (ok, finish)
            }),
            fail: Box::new(move |e| {
                *lock(&fail_slot) = Some(Err(StoreError::Database(e.to_string())));
            }),
        };
        let mut queue = lock(&self.queue);
        queue.jobs.push(job);
        loop {
            if let Some(result) = lock(&slot).take() {
                return result;
            }
            if queue.leading {
                queue = self
                    .done
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let jobs = std::mem::take(&mut queue.jobs);
            if jobs.is_empty() {
                // Only if a leader panicked with this write in its batch.
                return Err(StoreError::Database(
                    "a write was lost: the store thread committing it panicked".into(),
                ));
            }
            queue.leading = true;
            drop(queue);
            let lead = Leading(self);
            commit_batch(&conn.lock(), hooks, jobs);
            drop(lead);
            queue = lock(&self.queue);
        }
    }
}

/// Ends a leader's turn (also when the batch panicked) and wakes the waiting writers.
struct Leading<'a>(&'a GroupCommit);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).leading = false;
        self.0.done.notify_all();
    }
}

/// The transaction of a batch being committed: rolled back when dropped still open (a
/// job panicked, or COMMIT failed), so that the shared connection is never left inside a
/// transaction that the next batch's `BEGIN` would trip over (or that would keep a write
/// lock on the file). The writes of the batch are then lost, and their writers, never
/// answered, are told so (see [`GroupCommit::write`]).
///
/// The hooks are told how it ended, also when SQLite rolled it back itself (a full disk)
/// and a job panicked after.
struct Open<'a> {
    conn: &'a Connection,
    hooks: &'a dyn Hooks,
    committed: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.hooks.ended(self.committed);
    }
}

fn commit_batch(conn: &Connection, hooks: &dyn Hooks, jobs: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::Database(e.to_string());
        for job in jobs {
            (job.fail)(&e);
        }
        return;
    }
    let mut open = Open {
        conn,
        hooks,
        committed: false,
    };
    // A batch of one needs no savepoint: its failure rolls back the whole transaction.
    let alone = jobs.len() == 1;
    let mut finishes = Vec::with_capacity(jobs.len());
    let mut failed_alone = false;
    for job in jobs {
        if !alone && run_sql(conn, "SAVEPOINT w").is_err() {
            (job.fail)(&StoreError::Database("cannot open a savepoint".into()));
            continue;
        }
        let (ok, finish) = (job.run)(conn);
        if !alone {
            let end = if ok {
                run_sql(conn, "RELEASE w")
            } else {
                run_sql(conn, "ROLLBACK TO w").and_then(|()| run_sql(conn, "RELEASE w"))
            };
            if let Err(e) = end {
                tracing::error!(error = %e, "cannot end a savepoint of a group commit");
            }
        }
        failed_alone = alone && !ok;
        finishes.push(finish);
    }
    let commit = if failed_alone {
        run_sql(conn, "ROLLBACK").map_err(|e| StoreError::Database(e.to_string()))
    } else {
        hooks
            .committing(conn)
            .and_then(|()| run_sql(conn, "COMMIT").map_err(|e| StoreError::Database(e.to_string())))
            .inspect_err(|_| {
                // The transaction may still be open after a failed COMMIT (SQLITE_BUSY, a
                // full disk): undo it so that the next batch starts clean.
                let _ = conn.execute_batch("ROLLBACK");
            })
    };
    open.committed = !failed_alone && commit.is_ok();
    drop(open);
    for finish in finishes {
        finish(commit.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Hooks for () {
        fn committing(&self, _: &Connection) -> StoreResult<()> {
            Ok(())
        }
        fn ended(&self, _: bool) {}
    }

    fn table() -> ReentrantMutex<Connection> {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        ReentrantMutex::new(c)
    }

    fn insert(c: &Connection, k: i64) -> StoreResult<usize> {
        c.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    /// Many writers at once: every write gets its own answer, a failing write (here a
    /// duplicate key, after a first insert of its own) is undone alone, and everything
    /// answered Ok is in the table.
    #[test]
    fn concurrent_writes_get_their_own_answers_and_failures_undo_only_themselves() {
        let conn = table();
        let gc = GroupCommit::default();
        let (conn, gc) = (&conn, &gc);
        let results: Vec<(i64, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    s.spawn(move || {
                        (0..100)
                            .map(|i| {
                                let k = t * 1000 + i;
                                // Every fifth write also inserts key 0, which exists after
                                // the first: that write must fail and leave no trace.
                                let dup = i % 5 == 4;
                                let r = gc.write(conn, &(), move |c| {
                                    insert(c, k)?;
                                    if dup {
                                        insert(c, -1)?;
                                        insert(c, -1)?;
                                    }
                                    Ok(())
                                });
                                (k, r.is_ok())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let c = conn.lock();
        for (k, ok) in &results {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM t WHERE k = ?1", [k], |r| r.get(0))
                .unwrap();
            assert_eq!(n, i64::from(*ok), "key {k}: answered ok={ok}");
            assert_eq!(*ok, k % 1000 % 5 != 4, "key {k}");
        }
        let stray: i64 = c
            .query_row("SELECT COUNT(*) FROM t WHERE k = -1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stray, 0, "a failed write left a row behind");
    }

    /// A write that panics takes its batch down with it, but never leaves the shared
    /// connection inside the batch's transaction: the panic's batch is undone, and later
    /// writes are committed (and durable, seen from another connection).
    #[test]
    fn a_panicking_write_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        )
        .unwrap();
        let conn = ReentrantMutex::new(conn);
        let gc = GroupCommit::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: StoreResult<()> = gc.write(&conn, &(), |c| {
                insert(c, 1)?;
                panic!("a bug in a write");
            });
        }));
        assert!(panicked.is_err(), "the write's panic reaches its caller");
        assert!(
            conn.lock().is_autocommit(),
            "the connection is left inside the panicked batch's transaction"
        );
        gc.write(&conn, &(), |c| insert(c, 2))
            .expect("a later write");
        let other = Connection::open(&path).unwrap();
        let keys: Vec<i64> = other
            .prepare("SELECT k FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            keys,
            [2],
            "the panicked write is undone, the later one committed"
        );
    }

    #[test]
    fn a_write_that_cannot_begin_is_answered_with_the_error() {
        let conn = table();
        // An open transaction makes BEGIN IMMEDIATE fail.
        conn.lock().execute_batch("BEGIN").unwrap();
        let gc = GroupCommit::default();
        let r = gc.write(&conn, &(), |c| insert(c, 1));
        assert!(
            matches!(&r, Err(StoreError::Database(m)) if m.contains("within a transaction")),
            "{r:?}"
        );
    }
}
