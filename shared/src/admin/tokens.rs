//! Admin API tokens: `pca_<id>_<secret>`. The id (10 base32 characters) names the token in
//! lists, revocation and audit records; the secret (160 random bits) is stored only as an
//! HMAC under a key derived from the master key and compared in constant time.

use rand::RngCore;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{check_name, Admin, AdminError};
use crate::codes::hash_code;
use crate::model::{AdminRole, AdminToken};

/// The recognisable start of every admin token (secret scanners can look for it).
pub const TOKEN_PREFIX: &str = "pca_";
/// Derivation label of the key under which token secrets are hashed.
pub const ADMIN_TOKEN_PEPPER_LABEL: &str = "portcullis admin tokens v1";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 20;

/// A freshly made token: `token` is shown once and never stored.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub tenant: Option<String>,
    pub role: AdminRole,
    pub name: String,
}

fn random_base32(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    data_encoding::BASE32_NOPAD
        .encode(&raw)
        .to_ascii_lowercase()
}

/// (id, secret) of a presented token, if it has the token's shape.
fn split_token(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    };
    (ok(id, 10) && ok(secret, 32)).then_some((id, secret))
}

impl Admin {
    fn token_hash(&self, id: &str, secret: &str) -> String {
        hash_code(
            &self.key.derive(ADMIN_TOKEN_PEPPER_LABEL),
            &format!("{id}:{secret}"),
        )
    }

    /// `token add`: an operator token (no tenant) or a tenant's admin, helpdesk or
    /// auditor token.
    pub fn add_token(
        &self,
        tenant: Option<&str>,
        role: AdminRole,
        name: &str,
    ) -> Result<IssuedToken, AdminError> {
        check_name("token name", name)?;
        let tenant = match (tenant, role) {
            (None, AdminRole::Operator) => None,
            (Some(t), AdminRole::Admin | AdminRole::Helpdesk | AdminRole::Auditor) => {
                Some(self.tenant(t)?)
            }
            (Some(_), AdminRole::Operator) => {
                return Err(AdminError::Invalid {
                    what: "role",
                    value: "operator".into(),
                    hint: "an operator token is global: give --operator without --tenant",
                })
            }
            (None, r) => {
                return Err(AdminError::Invalid {
                    what: "role",
                    value: r.as_str().into(),
                    hint: "admin, helpdesk and auditor tokens belong to a tenant: give --tenant T",
                })
            }
        };
        let id = random_base32(ID_BYTES);
        let secret = zeroize::Zeroizing::new(random_base32(SECRET_BYTES));
        self.store.add_admin_token(&AdminToken {
            id: id.clone(),
            tenant_id: tenant.as_ref().map(|t| t.id),
            tenant: None,
            role,
            name: name.to_string(),
            hash: self.token_hash(&id, &secret),
            created_at: self.clock.now(),
            last_used_at: None,
            revoked: false,
        })?;
        Ok(IssuedToken {
            token: format!("{TOKEN_PREFIX}{id}_{}", secret.as_str()),
            id,
            tenant: tenant.map(|t| t.name),
            role,
            name: name.to_string(),
        })
    }

    /// `token list`: every token, or one tenant's.
    pub fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<AdminToken>, AdminError> {
        let tenant_id = match tenant {
            Some(t) => Some(self.tenant(t)?.id),
            None => None,
        };
        Ok(self.store.list_admin_tokens(tenant_id)?)
    }

    /// `token revoke`: the token stops working at once; returns it as it was.
    pub fn revoke_token(&self, id: &str) -> Result<AdminToken, AdminError> {
        let token = self
            .store
            .admin_token(id)?
            .ok_or_else(|| AdminError::NoToken(id.to_string()))?;
        if self.store.revoke_admin_token(id)? {
            Ok(token)
        } else {
            Err(AdminError::NoToken(id.to_string()))
        }
    }

    /// The unrevoked token `presented` is, if any (its last use is recorded).
    pub fn authenticate_token(&self, presented: &str) -> Result<Option<AdminToken>, AdminError> {
        let Some((id, secret)) = split_token(presented.trim()) else {
            return Ok(None);
        };
        let Some(token) = self.store.admin_token(id)? else {
            return Ok(None);
        };
        let expected = self.token_hash(id, secret);
        let same: bool = expected.as_bytes().ct_eq(token.hash.as_bytes()).into();
        if !same || token.revoked {
            return Ok(None);
        }
        self.store.touch_admin_token(id, self.clock.now())?;
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Admin;
    use crate::clock::ManualClock;
    use crate::secrets::MasterKey;
    use crate::store::{SqliteStore, Store};
    use std::sync::Arc;

    fn admin() -> Admin {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let hasher = crate::password::cheap();
        Admin::new(
            store,
            Arc::new(ManualClock::new(1_800_000_000)),
            Arc::new(MasterKey::from_bytes([9; 32])),
            hasher,
            "Test".into(),
            1,
        )
    }

    #[test]
    fn a_token_authenticates_until_revoked_and_only_whole() {
        let a = admin();
        a.add_tenant("acme").unwrap();
        let t = a
            .add_token(Some("acme"), AdminRole::Helpdesk, "desk")
            .unwrap();
        assert!(t.token.starts_with("pca_"), "{}", t.token);
        assert!(t.token.len() >= 4 + 10 + 1 + 32);
        let got = a.authenticate_token(&t.token).unwrap().unwrap();
        assert_eq!(got.role, AdminRole::Helpdesk);
        assert_eq!(got.tenant.as_deref(), Some("acme"));
        assert_eq!(got.last_used_at, None, "the row read before the touch");
        assert_eq!(
            a.list_tokens(Some("acme")).unwrap()[0].last_used_at,
            Some(1_800_000_000)
        );
        // A changed secret character, another id, garbage: not a token.
        let mut wrong = t.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert!(a.authenticate_token(&wrong).unwrap().is_none());
        assert!(a.authenticate_token("pca_").unwrap().is_none());
        assert!(a.authenticate_token("Bearer x").unwrap().is_none());
        let other = a.add_token(None, AdminRole::Operator, "root").unwrap();
        let (_, secret) = split_token(&other.token).unwrap();
        let swapped = format!("pca_{}_{secret}", t.id);
        assert!(a.authenticate_token(&swapped).unwrap().is_none());
        // The store holds neither the token nor its secret.
        for k in a.list_tokens(None).unwrap() {
            assert!(
                !t.token.contains(&k.hash) && !k.hash.contains(split_token(&t.token).unwrap().1)
            );
        }
        a.revoke_token(&t.id).unwrap();
        assert!(a.authenticate_token(&t.token).unwrap().is_none());
        assert!(matches!(a.revoke_token(&t.id), Err(AdminError::NoToken(_))));
    }

    #[test]
    fn roles_and_tenants_must_fit() {
        let a = admin();
        a.add_tenant("acme").unwrap();
        assert!(a.add_token(None, AdminRole::Admin, "x").is_err());
        assert!(a.add_token(Some("acme"), AdminRole::Operator, "x").is_err());
        assert!(matches!(
            a.add_token(Some("nope"), AdminRole::Admin, "x"),
            Err(AdminError::NoTenant(_))
        ));
        assert!(a
            .add_token(Some("acme"), AdminRole::Auditor, "bad name!")
            .is_err());
    }
}
