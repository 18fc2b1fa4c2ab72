//! Second-factor failures per user: growing delays, then a lock.

use super::{Engine, EngineError, Outcome};
use crate::clock::UnixTime;
use crate::model::{Tenant, User};

/// The throttle key of a user's second-factor attempts.
pub fn second_factor_key(user: &User) -> String {
    format!("user:{}:second_factor", user.id)
}

/// The delay owed after `failures` failures, if any.
pub(crate) fn delay_after(failures: u32, throttle_after: u32, base: u64, cap: u64) -> u64 {
    if failures < throttle_after {
        return 0;
    }
    let doublings = (failures - throttle_after).min(30);
    base.saturating_mul(1u64 << doublings).min(cap)
}

/// The user's failure streak as the throttle check saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Streak {
    /// Failures are on record: a good code must clear them.
    pub failures_on_record: bool,
}

impl Engine {
    /// A Reject if the user is locked or must still wait; `None` if they may try.
    pub(super) fn throttle_blocks(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        Ok(self.throttle_gate(tenant, user, now)?.err())
    }

    /// `Err(reject)` if the user is locked or must still wait; else the streak on record.
    pub(super) fn throttle_gate(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<Result<Streak, Outcome>, EngineError> {
        let key = second_factor_key(user);
        let th = self.store.throttle(tenant.id, &key)?;
        if let Some(until) = th.locked_until {
            if until > now {
                return Ok(Err(Outcome::reject_with(
                    format!("user is locked for {} s more after {} failed codes", until - now, th.failures),
                    "Too many failed attempts: this account is locked. Try again later or ask your administrator",
                )));
            }
            // The lock ran out: start afresh.
            self.store.clear_throttle(tenant.id, &key)?;
            return Ok(Ok(Streak {
                failures_on_record: false,
            }));
        }
        let lock = &self.settings.lockout;
        let delay = delay_after(
            th.failures,
            lock.throttle_after,
            lock.base_delay.as_secs(),
            lock.duration.as_secs(),
        ) as i64;
        if delay > 0 && now < th.last_failure_at + delay {
            let wait = th.last_failure_at + delay - now;
            return Ok(Err(Outcome::reject_with(
                format!(
                    "throttled: {} failed codes, next try allowed in {wait} s",
                    th.failures
                ),
                "Too many failed attempts: wait a little, then try again",
            )));
        }
        Ok(Ok(Streak {
            failures_on_record: th.failures > 0,
        }))
    }

    /// Count a wrong code; lock the user when the limit is reached.
    pub(super) fn count_failure(
        &self,
        tenant: &Tenant,
        user: &User,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        let key = second_factor_key(user);
        let th = self.store.record_failure(tenant.id, &key, now)?;
        if th.failures >= self.settings.lockout.lock_after {
            let until = now + self.settings.lockout.duration.as_secs() as i64;
            self.store.lock_until(tenant.id, &key, until)?;
            tracing::warn!(tenant = %tenant.name, user = %user.name, failures = th.failures, "user locked after repeated wrong codes");
        }
        Ok(())
    }

    /// A good code ends the user's failure streak.
    pub(super) fn clear_failures(&self, tenant: &Tenant, user: &User) -> Result<(), EngineError> {
        self.store
            .clear_throttle(tenant.id, &second_factor_key(user))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::delay_after;

    #[test]
    fn delays_start_at_the_threshold_and_double() {
        assert_eq!(delay_after(4, 5, 2, 1800), 0);
        assert_eq!(delay_after(5, 5, 2, 1800), 2);
        assert_eq!(delay_after(6, 5, 2, 1800), 4);
        assert_eq!(delay_after(9, 5, 2, 1800), 32);
        assert_eq!(delay_after(40, 5, 2, 1800), 1800);
    }
}
