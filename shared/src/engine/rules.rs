//! The tenant's policy rules applied to a login (the rules themselves are in `policy.rs`).

use super::{Channel, Engine, EngineError, Outcome, Step};
use crate::clock::UnixTime;
use crate::model::{Tenant, User};
use crate::policy::{self, Action, Context, Decision};

impl Engine {
    /// The decision of `tenant`'s rules for this login. `source_limited` is the request's
    /// (false when the client says its source is the same for all its users).
    pub(super) fn decide(
        &self,
        tenant: &Tenant,
        user: &User,
        channel: &Channel,
        source: &str,
        source_limited: bool,
        now: UnixTime,
    ) -> Decision {
        let host = match channel {
            Channel::Pam { host, .. } => Some(host.as_str()),
            Channel::Radius { .. } | Channel::Web { .. } => None,
        };
        let rules = self
            .policies
            .get(&tenant.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut d = policy::evaluate(
            rules,
            &Context {
                client: channel.client(),
                host,
                groups: &user.groups,
                attributes: &user.attributes,
                source,
                now,
            },
        );
        if let Some(allowed) = self.allowed_factors.get(&tenant.name) {
            d.restrict_to(allowed);
        }
        if d.default_factor.is_none() {
            d.default_factor = self.default_factors.get(&tenant.name).cloned();
        }
        if d.remember_secs > 0 && !may_remember(channel, source, source_limited) {
            // A remembered source stands for one user's device or address. One shared by
            // many users (a NAS's own address, a terminal name, a proxy) would let anyone
            // with the password in after its owner's second factor; and the self-service
            // pages always ask for a second factor, whatever VPN or SSH logins remembered.
            d.remember_secs = 0;
        }
        d
    }
}

impl Engine {
    /// [`Engine::decide`] for a login being started.
    pub(super) fn decide_login(
        &self,
        tenant: &Tenant,
        user: &User,
        req: &super::LoginRequest,
        now: UnixTime,
    ) -> Decision {
        self.decide(
            tenant,
            user,
            &req.channel,
            &req.source,
            req.source_limited,
            now,
        )
    }

    /// Deny and skip end the login after the first factor, and so does a source the rule
    /// remembers for this user; otherwise the login goes on to the second factor.
    pub(super) fn stop_after_first_factor(
        &self,
        d: &Decision,
        user: &User,
        first: &str,
        source: &str,
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        if d.action == Action::RequireMfa && d.remember_secs > 0 {
            if let Some(rule) = &d.rule {
                if let Some(until) = self.store.remembered_until(user.id, source, rule, now)? {
                    return Ok(Some(Outcome {
                        step: Step::Accept {
                            factors_used: vec![first.into(), "remembered".into()],
                            groups: user.groups.clone(),
                            reply_attributes: Vec::new(),
                        },
                        reason: format!(
                            "{first} ok; second factor remembered for source '{source}' for {} s more by {}",
                            until - now,
                            d.label()
                        ),
                        factors: vec![first.into(), "remembered".into()],
                    }));
                }
            }
        }
        Ok(stop_after_first_factor(d, user, first))
    }

    /// After a good second factor: remember the source if the rule says so.
    pub(super) fn remember_if_asked(
        &self,
        d: &Decision,
        user: &User,
        source: &str,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        if let (Some(rule), true) = (&d.rule, d.remember_secs > 0) {
            self.store
                .remember_source(user.id, source, rule, now + d.remember_secs, now)?;
        }
        Ok(())
    }
}

/// Whether a rule's `remember` may hold for `source` on `channel`: never on the web pages,
/// nor for a source many users share.
fn may_remember(channel: &Channel, source: &str, source_limited: bool) -> bool {
    !matches!(channel, Channel::Web { .. })
        && source_limited
        && !super::throttle::shared_source(channel, source)
}

fn stop_after_first_factor(d: &Decision, user: &User, first: &str) -> Option<Outcome> {
    match d.action {
        Action::Deny => Some(Outcome::reject(d.deny_reason())),
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
