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
use portcullis_core::first_factor::{Delegated, FirstFactor};

use self::ldap::LdapBackend;
use self::upstream::UpstreamRadius;

/// The backends one tenant's config can name (built once, shared by tenant and clients).
#[derive(Default)]
struct TenantBackends {
    ldap: Option<Arc<dyn FirstFactor>>,
    radius: Option<Arc<dyn FirstFactor>>,
}

/// Build every configured backend and tell the Engine which tenant and client uses which.
/// Warns about lab settings (certificate checks off, clear-text LDAP).
pub fn install(engine: &mut Engine, cfg: &Config) -> Result<()> {
    for w in config_warnings(cfg) {
        tracing::warn!("{w}");
    }
    let mut built: BTreeMap<&str, TenantBackends> = BTreeMap::new();
    for (name, t) in &cfg.tenants {
        let mut b = TenantBackends::default();
        if let Some(l) = &t.ldap {
            b.ldap = Some(Arc::new(LdapBackend::new(name, l)?));
        }
        if let Some(r) = &t.radius {
            b.radius = Some(Arc::new(UpstreamRadius::new(r)));
        }
        built.insert(name, b);
    }
    let pick = |tenant: &str, kind: FirstFactorKind| -> Result<Option<Arc<dyn FirstFactor>>> {
        let b = built.get(tenant);
        Ok(match kind {
            FirstFactorKind::Local => None,
            FirstFactorKind::None => Some(Arc::new(Delegated)),
            FirstFactorKind::Ldap => Some(
                b.and_then(|b| b.ldap.clone())
                    .with_context(|| format!("tenant '{tenant}' has no [tenants.{tenant}.ldap]"))?,
            ),
            FirstFactorKind::Radius => {
                Some(b.and_then(|b| b.radius.clone()).with_context(|| {
                    format!("tenant '{tenant}' has no [tenants.{tenant}.radius]")
                })?)
            }
        })
    };
    for (name, t) in &cfg.tenants {
        if let Some(backend) = pick(name, t.first_factor)? {
            tracing::info!(tenant = %name, first_factor = t.first_factor.as_str(), "first factor");
            engine.set_first_factor(name, backend);
        }
    }
    for c in &cfg.radius.clients {
        let Some(kind) = c.first_factor else { continue };
        tracing::info!(client = %c.name, first_factor = kind.as_str(), "first factor override");
        let backend: Arc<dyn FirstFactor> = match pick(&c.tenant, kind)? {
            Some(b) => b,
            // `local` on a client overrides a tenant backend with the store's hashes.
            None => Arc::new(portcullis_core::first_factor::LocalPasswords::new(
                portcullis_core::password::PasswordHasher::new(&cfg.passwords)?,
            )),
        };
        engine.set_client_first_factor("radius", &c.name, backend);
    }
    Ok(())
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
