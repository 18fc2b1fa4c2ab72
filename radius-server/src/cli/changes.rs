//! The audit record of an admin change made on the command line: like the admin API's
//! (same action names), with channel `cli`, the local user who ran the command as its
//! name and source `local`. Described here once, for every command that changes the
//! store, and written by [`super::run`] after the command succeeds; what only the command
//! learns (the id of the factor an enrolment made) it returns, and the record of its
//! success says that instead ([`enrolled`]). Never a secret: codes, passwords and TOTP
//! secrets given on the command line are not part of any detail.

use portcullis_core::admin::{Actor, Admin, EnrolledTotp};

use super::token_cmd::TokenCmd;
use super::{Command, EnrollCmd, FactorCmd, HostCmd, RecoveryCmd, TenantCmd, UserCmd};

/// What one change is, for its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tenant: String,
    /// The user it is about ("" for a tenant-wide change).
    pub user: String,
    /// As the admin API names it: `user.unlock`, `factor.remove`, ...
    pub action: &'static str,
    pub detail: String,
}

fn change(tenant: &str, user: &str, action: &'static str, detail: String) -> Option<Change> {
    Some(Change {
        tenant: tenant.to_string(),
        user: user.to_string(),
        action,
        detail,
    })
}

/// Whether `cmd` writes to the store (and may create it).
pub fn writes(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Token(TokenCmd::Add { .. } | TokenCmd::Revoke { .. })
    ) || describe(cmd).is_some()
}

/// The change `cmd` makes when it succeeds; `None` for a command that only reads (and
/// for `token add` and `token revoke`, whose records name the token found or made: see
/// `token_cmd`).
pub fn describe(cmd: &Command) -> Option<Change> {
    match cmd {
        Command::Serve
        | Command::Config(_)
        | Command::Audit(_)
        | Command::Policy(_)
        | Command::Ldap(_)
        | Command::Token(_) => None,
        Command::Tenant(TenantCmd::Add { name }) => {
            change(name, "", "tenant.create", "tenant created".into())
        }
        Command::Tenant(TenantCmd::List) => None,
        Command::User(cmd) => user(cmd),
        Command::Factor(cmd) => factor(cmd),
        Command::Recovery(RecoveryCmd::Generate { tenant, user }) => change(
            &tenant.tenant,
            user,
            "recovery.generate",
            "new recovery codes (older ones revoked)".into(),
        ),
        Command::Bypass {
            tenant,
            user,
            uses,
            ttl,
        } => change(
            &tenant.tenant,
            user,
            "bypass.issue",
            format!("bypass code for {uses} use(s), valid for {ttl}"),
        ),
        Command::Unblock { tenant, address } => change(
            &tenant.tenant,
            "",
            "source.unblock",
            format!("wrong passwords from {address} forgotten"),
        ),
        Command::Host(HostCmd::Add { tenant, name }) => {
            change(&tenant.tenant, "", "host.add", format!("PAM host {name}"))
        }
        Command::Host(HostCmd::Remove { tenant, name }) => change(
            &tenant.tenant,
            "",
            "host.remove",
            format!("PAM host {name}"),
        ),
        Command::Host(HostCmd::List { .. }) => None,
    }
}

fn user(cmd: &UserCmd) -> Option<Change> {
    match cmd {
        UserCmd::Add { tenant, name, .. } => {
            change(&tenant.tenant, name, "user.create", "user created".into())
        }
        UserCmd::Disable { tenant, name } => change(
            &tenant.tenant,
            name,
            "user.update",
            "changed disabled (now disabled)".into(),
        ),
        UserCmd::Enable { tenant, name } => change(
            &tenant.tenant,
            name,
            "user.update",
            "changed disabled (now enabled)".into(),
        ),
        UserCmd::Delete { tenant, name } => change(
            &tenant.tenant,
            name,
            "user.delete",
            "user deleted with factors and codes".into(),
        ),
        UserCmd::SetPassword {
            tenant,
            name,
            password,
        } => change(
            &tenant.tenant,
            name,
            "user.set_password",
            if password.password_hash_stdin {
                "password set from a hash".into()
            } else {
                "password set".into()
            },
        ),
        UserCmd::Forget {
            tenant,
            name,
            source,
        } => change(
            &tenant.tenant,
            name,
            "sources.forget",
            match source {
                Some(s) => format!("remembered source {s} forgotten"),
                None => "all remembered sources forgotten".into(),
            },
        ),
        UserCmd::SetAttr {
            tenant,
            name,
            key,
            value,
        } => change(
            &tenant.tenant,
            name,
            "user.update",
            match value {
                Some(v) => format!("changed attribute {key} (set to \"{v}\")"),
                None => format!("changed attribute {key} (removed)"),
            },
        ),
        UserCmd::Unlock { tenant, name } => change(
            &tenant.tenant,
            name,
            "user.unlock",
            "failed codes and lock cleared".into(),
        ),
        UserCmd::Import {
            tenant,
            file,
            update,
        } => change(
            &tenant.tenant,
            "",
            "user.import",
            format!(
                "users imported from {}{}",
                file.display(),
                if *update { " (--update)" } else { "" }
            ),
        ),
        UserCmd::List { .. } | UserCmd::Show { .. } | UserCmd::Export { .. } => None,
    }
}

fn factor(cmd: &FactorCmd) -> Option<Change> {
    let enroll =
        |tenant: &str, user: &str, detail: String| change(tenant, user, "factor.enroll", detail);
    match cmd {
        FactorCmd::Enroll(
            EnrollCmd::Totp {
                tenant,
                user,
                secret,
                secret_stdin,
                ..
            }
            | EnrollCmd::Hotp {
                tenant,
                user,
                secret,
                secret_stdin,
                ..
            },
        ) => {
            let kind = match cmd {
                FactorCmd::Enroll(EnrollCmd::Totp { .. }) => "totp",
                _ => "hotp",
            };
            let state = if secret.is_some() || *secret_stdin {
                "enrolled from a given secret (confirmed)"
            } else {
                "enrolled (pending)"
            };
            enroll(&tenant.tenant, user, format!("{kind} factor {state}"))
        }
        FactorCmd::Enroll(EnrollCmd::Sms { tenant, user, .. }) => enroll(
            &tenant.tenant,
            user,
            "sms factor enrolled (pending), code sent".into(),
        ),
        FactorCmd::Enroll(EnrollCmd::Email { tenant, user, .. }) => enroll(
            &tenant.tenant,
            user,
            "email factor enrolled (pending), code sent".into(),
        ),
        FactorCmd::Enroll(EnrollCmd::Push { tenant, user, .. }) => enroll(
            &tenant.tenant,
            user,
            "push factor enrolled (pending), code sent".into(),
        ),
        FactorCmd::Confirm {
            tenant,
            user,
            factor_id,
            ..
        } => change(
            &tenant.tenant,
            user,
            "factor.confirm",
            format!("factor {factor_id} confirmed"),
        ),
        FactorCmd::Resync {
            tenant,
            user,
            factor_id,
            ..
        } => change(
            &tenant.tenant,
            user,
            "factor.resync",
            format!("factor {factor_id} resynchronised"),
        ),
        FactorCmd::Remove {
            tenant,
            user,
            factor_id,
        } => change(
            &tenant.tenant,
            user,
            "factor.remove",
            format!("factor {factor_id} removed"),
        ),
        FactorCmd::List { .. } => None,
    }
}

/// The detail of a successful enrolment's record, naming the factor made as the admin
/// API's records do: `sms factor 7kq2mz4d enrolled (pending), code sent to +1•••1234`.
pub fn enrolled(kind: &str, factor_id: &str, state: &str, how: Option<&str>) -> String {
    match how {
        Some(how) => format!("{kind} factor {factor_id} enrolled ({state}), {how}"),
        None => format!("{kind} factor {factor_id} enrolled ({state})"),
    }
}

/// [`enrolled`] for a TOTP or HOTP factor, made from a secret given on the command line
/// (`given_secret`, never named) or from one made here.
pub fn otp_enrolled(e: &EnrolledTotp, given_secret: bool) -> String {
    enrolled(
        e.kind,
        &e.factor_id,
        e.state,
        given_secret.then_some("from a given secret"),
    )
}

/// One audit record of this command, with the local user who ran it as its actor.
fn write(admin: &Admin, tenant: &str, user: &str, action: &str, detail: &str, failed: bool) {
    let name = super::local::actor_name();
    let actor = Actor {
        channel: "cli",
        name: &name,
        source: "local".into(),
    };
    let written = if failed {
        admin.record_failed_admin_action(&actor, tenant, user, action, detail)
    } else {
        admin.record_admin_action(&actor, tenant, user, action, detail)
    };
    if let Err(e) = written {
        tracing::error!(error = %e, action, tenant, user, failed,
            "cannot write the audit record of an admin change");
    }
}

/// Write the audit record of a command-line change by the local user who ran it. A
/// failure is logged: the change is done.
pub fn record(admin: &Admin, tenant: &str, user: &str, action: &str, detail: &str) {
    write(admin, tenant, user, action, detail, false);
}

/// The record of a change whose command failed (result `reject`, the error's first line
/// in the detail): it may have changed part of the store first (an SMS factor created
/// whose code could not be sent), and an attempt is worth a trace too.
pub fn record_failed(admin: &Admin, change: &Change, error: &anyhow::Error) {
    let why: String = error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    let detail = format!("failed: {why} (the change: {})", change.detail);
    write(
        admin,
        &change.tenant,
        &change.user,
        change.action,
        &detail,
        true,
    );
}
