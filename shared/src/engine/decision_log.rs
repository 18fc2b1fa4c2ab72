//! The log line of a login decision (`login decision`, INFO), written once the decision's
//! audit record is in the store.
//!
//! Outside a batch the line is written as soon as the audit record is stored. Inside a
//! batch ([`LoginBatcher`](super::LoginBatcher)) the record is stored only when the batch
//! commits, and the batch may still fail (every decision in it is then void and the login
//! rejected): so the lines of a unit are held, dropped with a unit that is undone, and
//! handed out with the decision ([`DecisionLogs`]) after the commit. Whoever receives them
//! drops them where the lines should be written, which keeps the formatting and the write
//! off the batch thread, the one part of a code-only login that cannot use both cores.

use std::cell::RefCell;

use crate::model::AuditRecord;

thread_local! {
    /// Set while this thread decides a unit of a batch: the unit's decision lines.
    static HELD: RefCell<Option<Vec<AuditRecord>>> = const { RefCell::new(None) };
}

/// The decision lines of one login decided in a batch, written when this is dropped.
#[must_use = "the log lines are written when this is dropped: drop it where they belong"]
#[derive(Debug, Default)]
pub struct DecisionLogs(Vec<AuditRecord>);

impl DecisionLogs {
    /// How many lines are held (one per decision; none for a step that is no decision).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Leaves the lines unwritten: their decisions did not stand (a unit undone, a batch
    /// that did not commit).
    pub(super) fn discard(mut self) {
        self.0.clear();
    }
}

impl Drop for DecisionLogs {
    fn drop(&mut self) {
        for record in self.0.drain(..) {
            write(&record);
        }
    }
}

/// Writes the line of a decision whose audit record is stored (or, in a batch, will be
/// once the batch commits).
pub(super) fn log_decision(record: AuditRecord) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let record = HELD.with(|held| match held.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(record);
            None
        }
        None => Some(record),
    });
    if let Some(record) = record {
        write(&record);
    }
}

/// Runs `f` with this thread's decision lines held; returns them with its result.
pub(super) fn holding_logs<T>(f: impl FnOnce() -> T) -> (T, DecisionLogs) {
    struct Restore(Option<Vec<AuditRecord>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            HELD.with(|held| *held.borrow_mut() = outer);
        }
    }
    let restore = Restore(HELD.with(|held| held.borrow_mut().replace(Vec::new())));
    let result = f();
    let lines = HELD
        .with(|held| held.borrow_mut().take())
        .unwrap_or_default();
    drop(restore);
    (result, DecisionLogs(lines))
}

/// The lines' target, as before they moved here: what operators filter on
/// (`PORTCULLIS_LOG=portcullis_core::engine=warn`).
const TARGET: &str = "portcullis_core::engine";

fn write(record: &AuditRecord) {
    tracing::info!(
        target: TARGET,
        tenant = %record.tenant,
        user = %record.username,
        client = %record.client,
        source = %record.source,
        result = record.result.as_str(),
        reason = %record.reason,
        factors = %record.factors.join(","),
        "login decision"
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::AuditResult;
    use std::sync::{Arc, Mutex};

    /// Collects the `user` field of every `login decision` event.
    #[derive(Clone, Default)]
    pub(crate) struct Lines(pub(crate) Arc<Mutex<Vec<String>>>);

    impl tracing::Subscriber for Lines {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct User(Option<String>);
            impl tracing::field::Visit for User {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "user" {
                        self.0 = Some(format!("{v:?}"));
                    }
                }
            }
            let mut user = User(None);
            event.record(&mut user);
            if let Some(u) = user.0 {
                self.0.lock().unwrap().push(u);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// Makes `lines` this thread's subscriber until the guard is dropped (and that of the
    /// batch thread started meanwhile, which takes its starter's). A second subscriber is
    /// kept alive beside it: with a single scoped subscriber alive, tracing-core lets a
    /// thread that meets a callsite first decide its interest from its own subscriber
    /// alone, so another test's thread without one would turn these lines off at random.
    pub(crate) fn capture(lines: &Lines) -> (tracing::subscriber::DefaultGuard, tracing::Dispatch) {
        let beside = tracing::Dispatch::new(Lines::default());
        (tracing::subscriber::set_default(lines.clone()), beside)
    }

    fn record(user: &str) -> AuditRecord {
        AuditRecord {
            time: 0,
            tenant: "acme".into(),
            username: user.into(),
            channel: "radius".into(),
            client: "vpn".into(),
            source: "192.0.2.1".into(),
            mode: "otp-only".into(),
            factors: vec!["totp".into()],
            result: AuditResult::Accept,
            reason: "totp ok".into(),
            transaction: None,
            host: None,
        }
    }

    #[test]
    fn held_lines_are_written_when_dropped_and_not_before() {
        let lines = Lines::default();
        let scope = capture(&lines);
        {
            log_decision(record("outside"));
            let ((), held) = holding_logs(|| {
                log_decision(record("alice"));
                log_decision(record("bob"));
            });
            assert_eq!(*lines.0.lock().unwrap(), ["outside"]);
            drop(held);
            assert_eq!(*lines.0.lock().unwrap(), ["outside", "alice", "bob"]);
            // Held no more: written at once again.
            log_decision(record("carol"));
        }
        drop(scope);
        assert_eq!(
            *lines.0.lock().unwrap(),
            ["outside", "alice", "bob", "carol"]
        );
    }

    #[test]
    fn lines_of_an_undone_unit_can_be_left_unwritten() {
        let lines = Lines::default();
        let _scope = capture(&lines);
        let ((), held) = holding_logs(|| log_decision(record("undone")));
        held.discard();
        assert!(lines.0.lock().unwrap().is_empty());
    }
}
