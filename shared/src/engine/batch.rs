//! Code-only logins decided in batches, on one thread, in one store transaction.
//!
//! A code-only login (mode `otp-only`, or a delegated first factor) with a TOTP, HOTP or
//! recovery code hashes no password and waits for no network: it reads the user with their
//! factors and the throttle, checks the code, and writes the replay-cache row and the
//! audit record. Handed to a thread of its own and committed on its own, such a login
//! costs more in thread hand-offs and commits than in work. The batcher's thread takes
//! every login that is waiting, decides each in its own unit of one store transaction
//! ([`Store::batch`](crate::store::Store::batch)), commits once, and only then hands the
//! answers out: nothing is answered before it is durable.
//!
//! A login that turns out to need the network or a password hash (the word `push`, an
//! SMS, Duo, an unknown tenant's dummy hash) stops at its first blocking point: its unit is
//! undone and it is handed back ([`Batched::Declined`]) to run the usual way.
//!
//! A unit that can be undone alone costs (SQLite: a savepoint, and a copy of every page a
//! login changes), and code-only logins rarely need one: a batch is first decided without
//! units, and only if one of its logins fails or must be handed back is the whole
//! transaction rolled back and the batch decided again, a unit per login. After that the
//! next [`GUARDED_AFTER_UNDO`] batches start with units: a queue where such logins keep
//! coming does not pay twice.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;

use super::decision_log::{holding_logs, DecisionLogs};
use super::{without_blocking, Engine, EngineError, LoginRequest, Step};
use crate::store::StoreError;

/// At most this many logins share one transaction (a bound on the time the others wait).
const MAX_BATCH: usize = 128;

/// Batches decided with a unit per login from the start after one had to be decided again
/// (see the module).
const GUARDED_AFTER_UNDO: u32 = 32;

/// What became of a login handed to the [`LoginBatcher`].
pub enum Batched {
    /// Decided, and the decision is committed (or the error that lost it), with the
    /// decision's log line, written where the receiver drops it (see [`DecisionLogs`]).
    Decided(Result<Step, EngineError>, DecisionLogs),
    /// Not decided here: it needs the network or a password hash. Nothing of it was kept;
    /// run it again where blocking is allowed.
    Declined(LoginRequest),
}

/// Receives a login's outcome, where the [`HandOut`] calls it (by default on the
/// batcher's thread: keep it short).
pub type Done = Box<dyn FnOnce(Batched) + Send>;

/// Takes the outcomes of one batch, all at once, from the batcher's thread, and has each
/// given to its [`Done`]: the daemon hands them to its runtime in one move (one wake-up of
/// a runtime thread a batch, not one a login), so that the batcher's thread, the one part
/// of a code-only login that cannot use both cores, does no more than it must.
pub type HandOut = Box<dyn Fn(Vec<(Done, Batched)>) + Send>;

/// The [`HandOut`] of [`LoginBatcher::start`]: each outcome given where it was decided.
fn in_place(outcomes: Vec<(Done, Batched)>) {
    for (done, outcome) in outcomes {
        done(outcome);
    }
}

struct Job {
    req: LoginRequest,
    done: Done,
}

/// What a [`LoginBatcher`] has done (for `/metrics`).
#[derive(Debug, Default)]
pub struct BatchCounts {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Logins decided in committed batches.
    pub decided: AtomicU64,
    /// Logins handed back: they needed the network or a password hash.
    pub declined: AtomicU64,
    /// Batches decided a second time, a unit per login, because a login of theirs failed
    /// or was handed back.
    pub redone: AtomicU64,
}

/// Decides code-only logins in batches on a thread of its own (see the module). Dropping
/// it lets the thread finish the logins queued and waits for it: the Engine (and its
/// store, whose last connection closes the database cleanly) is then released.
pub struct LoginBatcher {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<BatchCounts>,
}

impl std::fmt::Debug for LoginBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBatcher").finish_non_exhaustive()
    }
}

impl LoginBatcher {
    /// Starts the batcher's thread; None when the Engine's store cannot run batches
    /// (PostgreSQL: there every login runs on its own). Each outcome is given to its
    /// [`Done`] on the batcher's thread.
    pub fn start(engine: Arc<Engine>) -> std::io::Result<Option<Self>> {
        Self::start_with(engine, Box::new(in_place))
    }

    /// [`LoginBatcher::start`], with each batch's outcomes given to `hand_out`.
    pub fn start_with(engine: Arc<Engine>, hand_out: HandOut) -> std::io::Result<Option<Self>> {
        if !engine.store().can_batch() {
            return Ok(None);
        }
        let (jobs, queue) = mpsc::channel();
        let counts = Arc::new(BatchCounts::default());
        let counting = counts.clone();
        // The thread logs where its starter logs (the global subscriber in the daemon; a
        // scoped one in tests).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let thread = std::thread::Builder::new()
            .name("login-batch".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    run(&engine, &queue, &counting, &hand_out)
                })
            })?;
        Ok(Some(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            counts,
        }))
    }

    /// What it has done so far.
    pub fn counts(&self) -> &BatchCounts {
        &self.counts
    }

    /// Queues a login; `done` gets its outcome. Should the batcher's thread be gone (it
    /// stops only if its store panicked), the login is handed back at once.
    pub fn submit(&self, req: LoginRequest, done: Done) {
        let Some(jobs) = &self.jobs else {
            return done(Batched::Declined(req));
        };
        if let Err(mpsc::SendError(Job { req, done })) = jobs.send(Job { req, done }) {
            done(Batched::Declined(req));
        }
    }
}

impl Drop for LoginBatcher {
    fn drop(&mut self) {
        // The thread ends once the queue is closed and empty.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // Not when the last owner is a login finished on that very thread.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The batcher's thread: every login waiting becomes one batch. Ends when the batcher is
/// dropped.
fn run(engine: &Engine, queue: &mpsc::Receiver<Job>, counts: &BatchCounts, hand_out: &HandOut) {
    let mut guarded_left = 0;
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outcomes = if guarded_left > 0 {
            guarded_left -= 1;
            decide_in_units(engine, jobs, counts)
        } else {
            match decide_without_units(engine, jobs, counts) {
                Ok(outcomes) => outcomes,
                Err(jobs) => {
                    counts.redone.fetch_add(1, Relaxed);
                    guarded_left = GUARDED_AFTER_UNDO;
                    decide_in_units(engine, jobs, counts)
                }
            }
        };
        hand_out(outcomes);
        // The answers are out: now the store may hold itself up (a WAL restart) without
        // making this batch's logins wait for it.
        engine.store().after_batch();
    }
}

/// One login decided where nothing may block, with its log lines held (a panic of the
/// Engine is an internal error of this login alone).
fn decide_one(engine: &Engine, req: &LoginRequest) -> (Result<Step, EngineError>, DecisionLogs) {
    holding_logs(|| {
        catch_unwind(AssertUnwindSafe(|| without_blocking(|| engine.start(req))))
            .unwrap_or_else(|_| Err(EngineError::Internal("the Engine panicked".into())))
    })
}

/// Decides the batch in one transaction without a unit per login. If a login fails or
/// must be handed back, nothing of the batch is kept (its writes cannot be undone alone)
/// and the jobs are returned, undecided, to be decided again in units; otherwise every
/// login's outcome, for after the commit (a rejection, if the commit failed).
fn decide_without_units(
    engine: &Engine,
    jobs: Vec<Job>,
    counts: &BatchCounts,
) -> Result<Vec<(Done, Batched)>, Vec<Job>> {
    let mut outcomes: Vec<(Step, DecisionLogs)> = Vec::with_capacity(jobs.len());
    let mut undo = false;
    let committed = engine.store().batch(&mut |_units| {
        for job in &jobs {
            match decide_one(engine, &job.req) {
                (Ok(step), logs) => outcomes.push((step, logs)),
                (Err(_), logs) => {
                    logs.discard();
                    undo = true;
                    return Err(StoreError::Database(
                        "a login of the batch is to be undone alone".into(),
                    ));
                }
            }
        }
        Ok(())
    });
    if undo {
        for (_, logs) in outcomes {
            logs.discard();
        }
        return Err(jobs);
    }
    Ok(match committed {
        Ok(()) => {
            counts.batches.fetch_add(1, Relaxed);
            counts.decided.fetch_add(jobs.len() as u64, Relaxed);
            jobs.into_iter()
                .zip(outcomes)
                .map(|(job, (step, logs))| (job.done, Batched::Decided(Ok(step), logs)))
                .collect()
        }
        Err(e) => {
            // Nothing of the batch was kept: every decision in it is void (fail closed).
            tracing::error!(error = %e, logins = jobs.len(), "a batch of logins could not be committed; they are rejected");
            for (_, logs) in outcomes {
                logs.discard();
            }
            jobs.into_iter()
                .map(|job| (job.done, lost_batch(&e)))
                .collect()
        }
    })
}

/// What a login of a batch that could not be committed gets.
fn lost_batch(e: &StoreError) -> Batched {
    Batched::Decided(
        Err(EngineError::Store(StoreError::Database(e.to_string()))),
        DecisionLogs::default(),
    )
}

/// Decides the batch with a unit per login: a login that fails or is handed back is
/// undone alone, the others are kept. Every login's outcome, for after the commit.
fn decide_in_units(engine: &Engine, jobs: Vec<Job>, counts: &BatchCounts) -> Vec<(Done, Batched)> {
    let mut waiting = jobs.into_iter();
    let mut decided: Vec<(Done, Result<Step, EngineError>, DecisionLogs)> = Vec::new();
    let mut declined: Vec<Job> = Vec::new();
    let committed = engine.store().batch(&mut |units| {
        for job in waiting.by_ref() {
            if let Err(e) = units.begin_unit() {
                // Answered with the batch's error below.
                let failed = Err(EngineError::Internal("batch failed".into()));
                decided.push((job.done, failed, DecisionLogs::default()));
                return Err(e);
            }
            let (result, logs) = decide_one(engine, &job.req);
            // A login that failed is undone below: what it logged did not stand.
            let logs = if result.is_ok() {
                logs
            } else {
                logs.discard();
                DecisionLogs::default()
            };
            // A login that failed keeps nothing: it is rejected (fail closed), so nothing
            // it wrote may stand (a code marked used, a failure counted).
            if let Err(e) = units.end_unit(result.is_ok()) {
                // Answered with the batch's error below.
                logs.discard();
                let failed = Err(EngineError::Internal("batch failed".into()));
                decided.push((job.done, failed, DecisionLogs::default()));
                return Err(e);
            }
            match result {
                Err(EngineError::WouldBlock) => declined.push(job),
                result => decided.push((job.done, result, logs)),
            }
        }
        Ok(())
    });
    let mut outcomes = Vec::with_capacity(decided.len() + declined.len());
    match committed {
        Ok(()) => {
            counts.batches.fetch_add(1, Relaxed);
            counts.decided.fetch_add(decided.len() as u64, Relaxed);
            for (done, result, logs) in decided {
                outcomes.push((done, Batched::Decided(result, logs)));
            }
        }
        Err(e) => {
            // Nothing of the batch was kept: every decision in it is void (fail closed).
            tracing::error!(error = %e, logins = decided.len(), "a batch of logins could not be committed; they are rejected");
            for (done, _, logs) in decided {
                logs.discard();
                outcomes.push((done, lost_batch(&e)));
            }
            for job in waiting {
                outcomes.push((job.done, lost_batch(&e)));
            }
        }
    }
    counts.declined.fetch_add(declined.len() as u64, Relaxed);
    for job in declined {
        outcomes.push((job.done, Batched::Declined(job.req)));
    }
    outcomes
}
