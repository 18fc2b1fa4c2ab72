//! The tenant's policy rules applied to a login (the rules themselves are in `policy.rs`).

use super::{Channel, Engine, Outcome, Step};
use crate::clock::UnixTime;
use crate::model::{Tenant, User};
use crate::policy::{self, Action, Context, Decision};

impl Engine {
    /// The decision of `tenant`'s rules for this login.
    pub(super) fn decide(
        &self,
        tenant: &Tenant,
        user: &User,
        channel: &Channel,
        source: &str,
        now: UnixTime,
    ) -> Decision {
        let host = match channel {
            Channel::Pam { host, .. } => Some(host.as_str()),
            Channel::Radius { .. } => None,
        };
        let rules = self
            .policies
            .get(&tenant.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        policy::evaluate(
            rules,
            &Context {
                client: channel.client(),
                host,
                groups: &user.groups,
                source,
                now,
            },
        )
    }
}

/// Deny and skip end the login after the first factor; the other actions go on to the
/// second factor.
pub(super) fn stop_after_first_factor(d: &Decision, user: &User, first: &str) -> Option<Outcome> {
    match d.action {
        Action::Deny => Some(Outcome::reject(format!("denied by {}", d.label()))),
        Action::SkipMfa => Some(Outcome {
            step: Step::Accept {
                factors_used: vec![first.into()],
                groups: user.groups.clone(),
                reply_attributes: Vec::new(),
            },
            reason: format!("{first} ok; second factor skipped by {}", d.label()),
            factors: vec![first.into()],
        }),
        Action::RequireMfa | Action::StepUp => None,
    }
}
