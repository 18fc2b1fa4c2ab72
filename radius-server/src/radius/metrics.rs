//! Counters of the RADIUS front end (exported on /metrics with the HTTP listener later;
//! logged on shutdown now).

use std::sync::atomic::{AtomicU64, Ordering};

use super::packet::DropReason;

/// Why a datagram got no answer, beyond [`DropReason`]'s packet classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    Packet(DropReason),
    UnknownClient,
    Duplicate,
    Shed,
}

impl DropCause {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::Packet(r) => r.as_str(),
            DropCause::UnknownClient => "unknown_client",
            DropCause::Duplicate => "duplicate_in_progress",
            DropCause::Shed => "shed_overload",
        }
    }
}

/// Process-wide RADIUS counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub accepts: AtomicU64,
    pub rejects: AtomicU64,
    pub challenges: AtomicU64,
    pub cached_replies: AtomicU64,
    pub status_server: AtomicU64,
    drops: [AtomicU64; 32],
}

impl Metrics {
    fn slot(d: DropCause) -> usize {
        match d {
            DropCause::UnknownClient => 0,
            DropCause::Duplicate => 1,
            DropCause::Shed => 2,
            DropCause::Packet(r) => 3 + DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0),
        }
    }

    /// Count one dropped datagram.
    pub fn count_drop(&self, d: DropCause) {
        if let Some(c) = self.drops.get(Self::slot(d)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many datagrams were dropped for `d`.
    pub fn dropped(&self, d: DropCause) -> u64 {
        self.drops
            .get(Self::slot(d))
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Every drop reason with its count, for logs and /metrics.
    pub fn drop_counts(&self) -> Vec<(&'static str, u64)> {
        let mut all = vec![
            DropCause::UnknownClient,
            DropCause::Duplicate,
            DropCause::Shed,
        ];
        all.extend(DropReason::ALL.iter().map(|r| DropCause::Packet(*r)));
        all.into_iter()
            .map(|d| (d.as_str(), self.dropped(d)))
            .collect()
    }
}
