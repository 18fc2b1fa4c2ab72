//! First-factor backends of the daemon: LDAP/AD ([`ldap`]) and upstream RADIUS
//! ([`upstream`]), built from `[tenants.NAME]` and installed into the Engine per tenant and
//! per RADIUS client. `local` and `none` come from the core.

pub mod ldap;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use portcullis_core::config::{Config, FirstFactorKind};
use portcullis_core::engine::Engine;
use portcullis_core::first_factor::{Delegated, FirstFactor, LocalPasswords};
use portcullis_core::password::PasswordHasher;

use self::ldap::LdapBackend;
use self::upstream::UpstreamRadius;

/// The backends one tenant's config can name (built once, shared by tenant and clients).
#[derive(Default)]
struct TenantBackends {
    ldap: Option<Arc<dyn FirstFactor>>,
    radius: Option<Arc<dyn FirstFactor>>,
}

/// Every configured backend, built once: tenants, RADIUS clients and PAM services that name
/// the same tenant's `ldap` or `radius` share one instance (and its connection pool).
pub struct Backends {
    by_tenant: BTreeMap<String, TenantBackends>,
    local: Arc<dyn FirstFactor>,
}

impl Backends {
    /// Build the backends of every `[tenants.NAME]`.
    pub fn build(cfg: &Config) -> Result<Self> {
        let mut by_tenant = BTreeMap::new();
        for (name, t) in &cfg.tenants {
            let mut b = TenantBackends::default();
            if let Some(l) = &t.ldap {
                b.ldap = Some(Arc::new(LdapBackend::new(name, l)?) as Arc<dyn FirstFactor>);
            }
            if let Some(r) = &t.radius {
                b.radius = Some(Arc::new(UpstreamRadius::new(r)) as Arc<dyn FirstFactor>);
            }
            by_tenant.insert(name.clone(), b);
        }
        Ok(Self {
            by_tenant,
            local: Arc::new(LocalPasswords::new(PasswordHasher::new(&cfg.passwords)?)),
        })
    }

    /// The backend `kind` of `tenant` (`local` is the store's hashes, `none` delegated).
    pub fn get(&self, tenant: &str, kind: FirstFactorKind) -> Result<Arc<dyn FirstFactor>> {
        let b = self.by_tenant.get(tenant);
        Ok(match kind {
            FirstFactorKind::Local => self.local.clone(),
            FirstFactorKind::None => Arc::new(Delegated),
            FirstFactorKind::Ldap => b
                .and_then(|b| b.ldap.clone())
                .with_context(|| format!("tenant '{tenant}' has no [tenants.{tenant}.ldap]"))?,
            FirstFactorKind::Radius => b
                .and_then(|b| b.radius.clone())
                .with_context(|| format!("tenant '{tenant}' has no [tenants.{tenant}.radius]"))?,
        })
    }

    /// Make `client` of `channel_kind` (`radius`, `pam`) use `kind` of `tenant`, whatever
    /// the tenant itself uses (the per-client / per-service `first_factor` override).
    pub fn override_client(
        &self,
        engine: &mut Engine,
        channel_kind: &str,
        client: &str,
        tenant: &str,
        kind: FirstFactorKind,
    ) -> Result<()> {
        tracing::info!(
            channel = channel_kind,
            client,
            first_factor = kind.as_str(),
            "first factor override"
        );
        engine.set_client_first_factor(channel_kind, client, self.get(tenant, kind)?);
        Ok(())
    }
}

/// Build every configured backend and tell the Engine which tenant and RADIUS client uses
/// which; returns the backends for other front ends' overrides (PAM services). Warns about
/// lab settings (certificate checks off, clear-text LDAP).
pub fn install(engine: &mut Engine, cfg: &Config) -> Result<Backends> {
    for w in config_warnings(cfg) {
        tracing::warn!("{w}");
    }
    let backends = Backends::build(cfg)?;
    for (name, t) in &cfg.tenants {
        if t.first_factor != FirstFactorKind::Local {
            tracing::info!(tenant = %name, first_factor = t.first_factor.as_str(), "first factor");
            engine.set_first_factor(name, backends.get(name, t.first_factor)?);
        }
    }
    for c in &cfg.radius.clients {
        if let Some(kind) = c.first_factor {
            backends.override_client(engine, "radius", &c.name, &c.tenant, kind)?;
        }
    }
    Ok(backends)
}

/// Lab-only first-factor settings in `cfg`, for the start-up log and `config check`.
pub fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, t) in &cfg.tenants {
        if let Some(l) = &t.ldap {
            if !l.tls_verify {
                out.push(format!(
                    "tenants.{name}.ldap.tls_verify = false: the directory's certificate is NOT checked (labs only)"
                ));
            }
            if l.url.starts_with("ldap://") && !l.starttls {
                out.push(format!(
                    "tenants.{name}.ldap: ldap:// with starttls = false sends passwords in clear text (labs only)"
                ));
            }
        }
        if let (Some(_), Some(duo)) = (&t.ldap, &t.duo) {
            if duo.username == portcullis_core::config::DuoUsername::Email
                && duo.username_attribute.is_none()
            {
                out.push(format!(
                    "tenants.{name}.duo.username = \"email\" with an LDAP directory: the Duo user is the entry's e-mail address (ldap.email_attribute, default mail) as the directory gives it at each login; a user who may change their own address could log in as another Duo user: let only administrators write it, or use username = \"username\""
                ));
            }
        }
        if let Some(r) = &t.radius {
            if !r.require_message_authenticator {
                out.push(format!(
                    "tenants.{name}.radius.require_message_authenticator = false: upstream replies are accepted without Message-Authenticator (BlastRADIUS exposure)"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::config_warnings;

    #[test]
    fn duo_users_named_by_a_directory_address_are_warned_about() {
        let cfg = |duo: &str| {
            portcullis_core::config::Config::from_toml_str(
                &format!(
                    "[tenants.acme]\nfirst_factor = \"ldap\"\n[tenants.acme.ldap]\nurl = \"ldaps://dc1\"\nbase_dn = \"dc=x\"\n\
                     [tenants.acme.duo]\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\nskey = \"0123456789012345678901234567890123456789\"\napi_host = \"api-x.duosecurity.com\"\n{duo}"
                ),
                std::path::Path::new("t.toml"),
            )
            .unwrap()
        };
        let warned = |c| {
            config_warnings(&c)
                .iter()
                .any(|w| w.contains("tenants.acme.duo.username"))
        };
        assert!(warned(cfg("username = \"email\"\n")));
        assert!(!warned(cfg("")));
        assert!(!warned(cfg(
            "username = \"email\"\nusername_attribute = \"duo_name\"\n"
        )));
    }
}
