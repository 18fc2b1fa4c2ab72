//! Latency percentiles and the outcome counts of a run.

use std::time::Duration;

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub sent: u64,
    pub accepts: u64,
    pub rejects: u64,
    pub challenges: u64,
    /// No (believable) reply within the timeout: a loss.
    pub timeouts: u64,
    /// Replies that failed the authenticator checks or were malformed.
    pub bad_replies: u64,
    /// Replies to requests already counted as lost (after the timeout) or to unknown ids.
    pub late_replies: u64,
    /// Replies without a Message-Authenticator.
    pub replies_without_ma: u64,
    /// Open loop: sends more than 5 ms late (the generator fell behind).
    pub late_sends: u64,
    /// Requests sent once more to the next server after no reply within the failover time.
    pub failovers: u64,
    /// Of those, answered by the server they failed over to.
    pub failover_answers: u64,
    /// Answered requests per server (in the order the servers were given).
    pub answered_by: Vec<u64>,
    /// Latency of each answered request, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn merge(&mut self, o: Outcome) {
        self.sent += o.sent;
        self.accepts += o.accepts;
        self.rejects += o.rejects;
        self.challenges += o.challenges;
        self.timeouts += o.timeouts;
        self.bad_replies += o.bad_replies;
        self.late_replies += o.late_replies;
        self.replies_without_ma += o.replies_without_ma;
        self.late_sends += o.late_sends;
        self.failovers += o.failovers;
        self.failover_answers += o.failover_answers;
        if self.answered_by.len() < o.answered_by.len() {
            self.answered_by.resize(o.answered_by.len(), 0);
        }
        for (mine, theirs) in self.answered_by.iter_mut().zip(o.answered_by) {
            *mine += theirs;
        }
        self.latencies_us.extend(o.latencies_us);
    }
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds with three decimals.
pub fn ms(us: u32) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Requests per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.99), Some(7));
    }
}
