//! `portcullis token`: admin API tokens (shown once, stored hashed).

use anyhow::{bail, Result};
use clap::{Subcommand, ValueEnum};
use portcullis_core::admin::Admin;
use portcullis_core::clock::UnixTime;
use portcullis_core::model::{AdminRole, AdminToken};

use super::output::{emit, table, time};
use super::Opened;

/// The role of a tenant's token.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TenantRole {
    /// Everything inside the tenant.
    Admin,
    /// List and show users, reset factors, issue bypass codes.
    Helpdesk,
    /// Read the tenant's audit log.
    Auditor,
}

impl From<TenantRole> for AdminRole {
    fn from(r: TenantRole) -> Self {
        match r {
            TenantRole::Admin => AdminRole::Admin,
            TenantRole::Helpdesk => AdminRole::Helpdesk,
            TenantRole::Auditor => AdminRole::Auditor,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a token for the admin API (printed once): `--tenant T --role R NAME` or
    /// `--operator NAME`; with `--expires 90d` it stops working after that long.
    Add {
        /// The tenant the token is confined to.
        #[arg(long, conflicts_with = "operator", requires = "role")]
        tenant: Option<String>,
        /// What a tenant's token may do.
        #[arg(long, value_enum, requires = "tenant")]
        role: Option<TenantRole>,
        /// A global token: tenant management and everything in every tenant.
        #[arg(long)]
        operator: bool,
        /// How long the token works, from now (e.g. 90d, 12h, 30m; at most 3650d).
        /// Without it the token works until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<humantime::Duration>,
        /// Who or what uses the token (shown in audit records).
        name: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Only the tokens confined to this tenant (default: every token, operators'
        /// too).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token: it stops working at once.
    Revoke { id: String },
}

/// Token changes are admin changes: audited like the API's (the record holds no secret;
/// it names the token made or found, which only the command knows: see `changes`).
fn audit(admin: &Admin, tenant: &str, action: &str, detail: &str) {
    super::changes::record(admin, tenant, "", action, detail);
}

/// A token's state for `token list`: revoked outweighs expired.
fn state(t: &AdminToken, now: UnixTime) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.is_expired(now) {
        "expired"
    } else {
        "active"
    }
}

/// Run a `token` subcommand.
pub fn run(o: &Opened, cmd: TokenCmd, json: bool) -> Result<()> {
    let admin = o.admin();
    match cmd {
        TokenCmd::Add {
            tenant,
            role,
            operator,
            expires,
            name,
        } => {
            let (tenant, role) = match (operator, tenant, role) {
                (true, None, None) => (None, AdminRole::Operator),
                (false, Some(t), Some(r)) => (Some(t), AdminRole::from(r)),
                _ => bail!("give either --operator or --tenant T --role admin|helpdesk|auditor"),
            };
            let lifetime = match expires.map(std::time::Duration::from) {
                Some(d) if d.subsec_nanos() != 0 => bail!(
                    "--expires {}: give whole seconds (e.g. 90d, 12h, 30m, 45s)",
                    humantime::format_duration(d)
                ),
                d => d.map(|d| d.as_secs()),
            };
            let t = admin.add_token(tenant.as_deref(), role, &name, lifetime)?;
            let until = t
                .expires_at
                .map(|at| format!(", expires {}", time(at)))
                .unwrap_or_default();
            audit(
                &admin,
                t.tenant.as_deref().unwrap_or(""),
                "token.add",
                &format!(
                    "admin token '{}' (id {}, role {}{until})",
                    t.name,
                    t.id,
                    t.role.as_str()
                ),
            );
            emit(json, &t, || {
                format!(
                    "{}\n\ntoken '{}' (id {}, role {}{}{until}). It is not shown again: store it now.\nUse it as: Authorization: Bearer TOKEN",
                    t.token,
                    t.name,
                    t.id,
                    t.role.as_str(),
                    t.tenant
                        .as_deref()
                        .map(|t| format!(", tenant {t}"))
                        .unwrap_or_default(),
                )
            });
        }
        TokenCmd::List { tenant } => {
            let tokens = admin.list_tokens(tenant.as_deref())?;
            let now = admin.now();
            // The JSON says the state too (expired is not in the token's own fields).
            let listed: Vec<serde_json::Value> = tokens
                .iter()
                .map(|t| {
                    let mut v = serde_json::to_value(t).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("state".into(), state(t, now).into());
                    }
                    v
                })
                .collect();
            emit(json, &listed, || {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.role.as_str().into(),
                            t.tenant.clone().unwrap_or_else(|| "-".into()),
                            time(t.created_at),
                            t.last_used_at.map(time).unwrap_or_else(|| "never".into()),
                            t.expires_at.map(time).unwrap_or_else(|| "never".into()),
                            state(t, now).into(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "NAME",
                        "ROLE",
                        "TENANT",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES",
                        "STATE",
                    ],
                    &rows,
                )
            });
        }
        TokenCmd::Revoke { id } => {
            let t = admin.revoke_token(&id)?;
            audit(
                &admin,
                t.tenant.as_deref().unwrap_or(""),
                "token.revoke",
                &format!("admin token '{}' (id {id}) revoked", t.name),
            );
            emit(
                json,
                &serde_json::json!({"ok": true, "message": format!("token {id} revoked")}),
                || format!("token {id} revoked"),
            );
        }
    }
    Ok(())
}
