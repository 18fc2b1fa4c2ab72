//! `portcullis ldap test --tenant T USER`: check a tenant's directory settings by hand.

use std::path::Path;

use anyhow::{bail, Result};
use portcullis_core::config::{Config, FirstFactorKind};
use portcullis_core::first_factor::FirstFactorResult;
use serde_json::json;

use super::admin_cmds::read_stdin_line;
use super::output::emit;
use super::LdapCmd;
use crate::first_factor::ldap::LdapBackend;

/// Run an `ldap` subcommand; fails (exit 1) unless the directory accepts the password.
pub fn run(config_path: &Path, cmd: LdapCmd, json: bool) -> Result<()> {
    let LdapCmd::Test { tenant, user } = cmd;
    let cfg = Config::load(config_path)?;
    let t = cfg.tenants.get(&tenant.tenant);
    let Some(ldap) = t.and_then(|t| t.ldap.as_ref()) else {
        let name = &tenant.tenant;
        let first = match t {
            Some(t) => t.first_factor.as_str(),
            None => FirstFactorKind::default().as_str(),
        };
        bail!(
            "tenant '{name}' has no [tenants.{name}.ldap] section in {}; its first factor is {first}{}",
            config_path.display(),
            if t.is_none() { " (the default)" } else { "" }
        );
    };
    let backend = LdapBackend::new(&tenant.tenant, ldap)?;
    if !ldap.tls_verify {
        eprintln!("warning: tls_verify = false: the directory's certificate is not checked");
    }
    if backend.is_plaintext() {
        eprintln!("warning: ldap:// with starttls = false: the password crosses the network in clear text");
    }
    let password = read_stdin_line("password")?;
    let check = backend.verify(&user, password.as_bytes());
    let (result, reason, info) = match &check.result {
        FirstFactorResult::Accepted(info) => ("accepted", String::new(), Some(info)),
        FirstFactorResult::Rejected(r) => ("rejected", r.clone(), None),
        FirstFactorResult::Unavailable(r) => ("unavailable", r.clone(), None),
    };
    let value = json!({
        "tenant": tenant.tenant,
        "user": user,
        "result": result,
        "reason": reason,
        "dn": check.dn,
        "groups": info.and_then(|i| i.groups.clone()),
        "email": info.and_then(|i| i.email.clone()),
        "phone": info.and_then(|i| i.phone.clone()),
    });
    emit(json, &value, || {
        let mut out = format!("{result}: {user} (tenant {})\n", tenant.tenant);
        if let Some(dn) = &check.dn {
            out.push_str(&format!("  dn:     {dn}\n"));
        }
        if !reason.is_empty() {
            out.push_str(&format!("  reason: {reason}\n"));
        }
        if let Some(i) = info {
            let groups = i.groups.clone().unwrap_or_default().join(", ");
            out.push_str(&format!("  groups: {groups}\n"));
            out.push_str(&format!(
                "  email:  {}\n",
                i.email.as_deref().unwrap_or("-")
            ));
            out.push_str(&format!(
                "  phone:  {}\n",
                i.phone.as_deref().unwrap_or("-")
            ));
        }
        out
    });
    match &check.result {
        FirstFactorResult::Accepted(_) => {}
        FirstFactorResult::Rejected(_) => {
            bail!("the directory did not accept the password: {reason}")
        }
        // It never saw the password.
        FirstFactorResult::Unavailable(_) => bail!("{reason} (the password was not checked)"),
    }
    Ok(())
}
