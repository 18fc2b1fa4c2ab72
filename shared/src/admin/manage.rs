//! Admin operations the API adds to the CLI's: changing a user's details, resetting all of
//! a user's factors, a policy test as a value, and audit records of admin changes.

use serde::Serialize;

use super::{check_email, check_name, check_phone, Admin, AdminError};
use crate::clock::UnixTime;
use crate::model::{AuditRecord, AuditResult, User};
use crate::policy::{self, Action, Rule};

/// Changes to a user; `None` leaves a field as it is (`Some(None)` clears e-mail or phone).
#[derive(Debug, Default, Clone)]
pub struct UserUpdate {
    pub disabled: Option<bool>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub groups: Option<Vec<String>>,
}

/// What `policy test` says about a login.
#[derive(Debug, Serialize)]
pub struct PolicyTest {
    pub user: String,
    pub decision: String,
    pub action: Action,
    pub rule: Option<String>,
    pub factors: Vec<String>,
    pub groups: Vec<String>,
    pub explanation: Vec<String>,
}

/// The login a policy test imagines.
#[derive(Debug, Clone, Default)]
pub struct PolicyQuery<'a> {
    pub user: &'a str,
    pub client: &'a str,
    pub source: &'a str,
    pub host: Option<&'a str>,
    /// Default: now.
    pub at: Option<UnixTime>,
}

/// Who made an admin change (for its audit record).
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    /// How: `admin-api` or `cli`.
    pub channel: &'a str,
    /// Who: the token's name (`cli` for the command line).
    pub name: &'a str,
    /// Which credential: `token ID` (`local` for the command line).
    pub source: String,
}

impl Admin {
    /// The time on the administration's clock.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The tenant called `name` (an error that says how to create it otherwise).
    pub fn get_tenant(&self, name: &str) -> Result<crate::model::Tenant, AdminError> {
        self.tenant(name)
    }

    /// `user update`: e-mail, phone, groups, disabled; the user as it is afterwards.
    pub fn update_user(
        &self,
        tenant: &str,
        name: &str,
        up: UserUpdate,
    ) -> Result<User, AdminError> {
        let (t, u) = self.user(tenant, name)?;
        if let Some(Some(e)) = &up.email {
            check_email(e)?;
        }
        if let Some(Some(p)) = &up.phone {
            check_phone(p)?;
        }
        if let Some(groups) = &up.groups {
            for g in groups {
                check_name("group", g)?;
            }
        }
        if up.email.is_some() || up.phone.is_some() || up.groups.is_some() {
            let email = up.email.unwrap_or(u.email.clone());
            let phone = up.phone.unwrap_or(u.phone.clone());
            let groups = up.groups.unwrap_or(u.groups.clone());
            self.store
                .set_directory_info(u.id, email.as_deref(), phone.as_deref(), &groups)?;
        }
        if let Some(d) = up.disabled {
            self.store.set_user_disabled(u.id, d)?;
        }
        self.store
            .user_by_name(t.id, name)?
            .ok_or_else(|| AdminError::NoUser {
                tenant: tenant.to_string(),
                user: name.to_string(),
            })
    }

    /// Reset a user who lost everything: every factor and every recovery code is removed,
    /// and every web (`/my/`) session of the user ends (first, so that no session goes on
    /// to add a factor once the reset is done); returns how many factors there were.
    pub fn reset_factors(&self, tenant: &str, name: &str) -> Result<usize, AdminError> {
        let (_, u) = self.user(tenant, name)?;
        self.store.raise_session_epoch(u.id)?;
        let mut removed = 0;
        for f in self.store.factors_of(u.id)? {
            if self.store.remove_factor(u.id, &f.id)? {
                removed += 1;
            }
        }
        self.store
            .replace_recovery_codes(u.id, &[], self.clock.now())?;
        Ok(removed)
    }

    /// `policy test`: which of `rules` (the tenant's) a login of `q.user` would match.
    pub fn policy_test(
        &self,
        tenant: &str,
        rules: &[Rule],
        q: &PolicyQuery<'_>,
    ) -> Result<PolicyTest, AdminError> {
        let (_, u) = self.user(tenant, q.user)?;
        let d = policy::evaluate(
            rules,
            &policy::Context {
                client: q.client,
                host: q.host,
                groups: &u.groups,
                attributes: &u.attributes,
                source: q.source,
                now: q.at.unwrap_or_else(|| self.clock.now()),
            },
        );
        Ok(PolicyTest {
            user: u.name,
            decision: d.label(),
            action: d.action,
            rule: d.rule,
            factors: d.factors,
            groups: u.groups,
            explanation: d.explanation,
        })
    }

    /// One audit record of an admin change: who (the actor), what (`action`, e.g.
    /// `user.create`, with `detail`), on which tenant and user. Never give it a secret.
    pub fn record_admin_action(
        &self,
        actor: &Actor<'_>,
        tenant: &str,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), AdminError> {
        self.record_admin(actor, tenant, user, action, detail, AuditResult::Accept)
    }

    /// The audit record of an admin change that failed (result `reject`): it may have
    /// changed part of the store before failing (a factor created, its code not sent).
    pub fn record_failed_admin_action(
        &self,
        actor: &Actor<'_>,
        tenant: &str,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), AdminError> {
        self.record_admin(actor, tenant, user, action, detail, AuditResult::Reject)
    }

    fn record_admin(
        &self,
        actor: &Actor<'_>,
        tenant: &str,
        user: &str,
        action: &str,
        detail: &str,
        result: AuditResult,
    ) -> Result<(), AdminError> {
        Ok(self.store.append_audit(&AuditRecord {
            time: self.clock.now(),
            tenant: tenant.to_string(),
            username: user.to_string(),
            channel: actor.channel.to_string(),
            client: actor.name.to_string(),
            source: actor.source.clone(),
            mode: action.to_string(),
            factors: Vec::new(),
            result,
            reason: detail.to_string(),
            transaction: None,
            host: None,
        })?)
    }
}
