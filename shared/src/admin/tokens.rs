//! Admin API tokens: `pca_<id>_<secret>`. The id (10 base32 characters) names the token in
//! lists, revocation and audit records; the secret (160 random bits) is stored only as an
//! HMAC under a key derived from the master key and compared in constant time. A token may
//! have a lifetime (`token add --expires 90d`): from its `expires_at` on it is refused like a
//! revoked one, and the caller learns it expired (for the operator's log, never the client).

use rand::RngCore;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{check_name, Admin, AdminError};
use crate::clock::UnixTime;
use crate::codes::hash_code;
use crate::model::{AdminRole, AdminToken};

/// The recognisable start of every admin token (secret scanners can look for it).
pub const TOKEN_PREFIX: &str = "pca_";
/// Derivation label of the key under which token secrets are hashed.
pub const ADMIN_TOKEN_PEPPER_LABEL: &str = "portcullis admin tokens v1";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 20;
/// The longest lifetime a token can be given (3650 days); without one it never expires.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 3650 * 24 * 3600;

/// A freshly made token: `token` is shown once and never stored.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub tenant: Option<String>,
    pub role: AdminRole,
    pub name: String,
    /// When it stops working; None: never.
    pub expires_at: Option<UnixTime>,
}

/// What a presented admin token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A token that works (its use has been recorded).
    Valid(AdminToken),
    /// The whole token, secret included, but past its `expires_at` (and not revoked). It
    /// must be refused exactly like an unknown one; only the log says why.
    Expired(AdminToken),
    /// Not a token: malformed, unknown, a wrong secret, or revoked.
    Refused,
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
    /// auditor token; with `lifetime_secs` it stops working that long from now (1 s up to
    /// [`MAX_TOKEN_LIFETIME_SECS`]), without it never.
    pub fn add_token(
        &self,
        tenant: Option<&str>,
        role: AdminRole,
        name: &str,
        lifetime_secs: Option<u64>,
    ) -> Result<IssuedToken, AdminError> {
        check_name("token name", name)?;
        if let Some(secs) = lifetime_secs.filter(|s| *s == 0 || *s > MAX_TOKEN_LIFETIME_SECS) {
            return Err(AdminError::Invalid {
                what: "token lifetime",
                value: format!("{secs}s"),
                hint: "use a duration from 1s to 3650d, like 90d or 12h; leave it out for a token that never expires",
            });
        }
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
        let now = self.clock.now();
        // At most 3650 days: no overflow.
        let expires_at = lifetime_secs.map(|secs| now.saturating_add(secs as i64));
        let id = random_base32(ID_BYTES);
        let secret = zeroize::Zeroizing::new(random_base32(SECRET_BYTES));
        self.store.add_admin_token(&AdminToken {
            id: id.clone(),
            tenant_id: tenant.as_ref().map(|t| t.id),
            tenant: None,
            role,
            name: name.to_string(),
            hash: self.token_hash(&id, &secret),
            created_at: now,
            last_used_at: None,
            revoked: false,
            expires_at,
        })?;
        Ok(IssuedToken {
            token: format!("{TOKEN_PREFIX}{id}_{}", secret.as_str()),
            id,
            tenant: tenant.map(|t| t.name),
            role,
            name: name.to_string(),
            expires_at,
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

    /// Which token `presented` is: a valid one (its last use is recorded), an expired one,
    /// or none. "Expired" needs the whole token: a guessed id with a wrong secret is no token.
    pub fn authenticate_token(&self, presented: &str) -> Result<TokenCheck, AdminError> {
        let Some((id, secret)) = split_token(presented.trim()) else {
            return Ok(TokenCheck::Refused);
        };
        let Some(token) = self.store.admin_token(id)? else {
            return Ok(TokenCheck::Refused);
        };
        let expected = self.token_hash(id, secret);
        let same: bool = expected.as_bytes().ct_eq(token.hash.as_bytes()).into();
        if !same || token.revoked {
            return Ok(TokenCheck::Refused);
        }
        let now = self.clock.now();
        if token.is_expired(now) {
            return Ok(TokenCheck::Expired(token));
        }
        self.store.touch_admin_token(id, now)?;
        Ok(TokenCheck::Valid(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Admin;
    use crate::clock::{Clock, ManualClock};
    use crate::secrets::MasterKey;
    use crate::store::{SqliteStore, Store};
    use std::sync::Arc;

    fn admin() -> Admin {
        admin_and_clock().0
    }

    /// An admin whose clock the test moves.
    fn admin_and_clock() -> (Admin, Arc<ManualClock>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let hasher = crate::password::cheap();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let admin = Admin::new(
            store,
            clock.clone(),
            Arc::new(MasterKey::from_bytes([9; 32])),
            hasher,
            "Test".into(),
            1,
        );
        (admin, clock)
    }

    /// The token of a valid check; fails the test otherwise.
    #[track_caller]
    fn valid(check: TokenCheck) -> AdminToken {
        match check {
            TokenCheck::Valid(t) => t,
            other => panic!("not valid: {other:?}"),
        }
    }

    #[test]
    fn a_token_authenticates_until_revoked_and_only_whole() {
        let a = admin();
        a.add_tenant("acme").unwrap();
        let t = a
            .add_token(Some("acme"), AdminRole::Helpdesk, "desk", None)
            .unwrap();
        assert_eq!(t.expires_at, None);
        assert!(t.token.starts_with("pca_"), "{}", t.token);
        assert!(t.token.len() >= 4 + 10 + 1 + 32);
        let got = valid(a.authenticate_token(&t.token).unwrap());
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
        assert_eq!(a.authenticate_token(&wrong).unwrap(), TokenCheck::Refused);
        assert_eq!(a.authenticate_token("pca_").unwrap(), TokenCheck::Refused);
        assert_eq!(
            a.authenticate_token("Bearer x").unwrap(),
            TokenCheck::Refused
        );
        let other = a
            .add_token(None, AdminRole::Operator, "root", None)
            .unwrap();
        let (_, secret) = split_token(&other.token).unwrap();
        let swapped = format!("pca_{}_{secret}", t.id);
        assert_eq!(a.authenticate_token(&swapped).unwrap(), TokenCheck::Refused);
        // The store holds neither the token nor its secret.
        for k in a.list_tokens(None).unwrap() {
            assert!(
                !t.token.contains(&k.hash) && !k.hash.contains(split_token(&t.token).unwrap().1)
            );
        }
        a.revoke_token(&t.id).unwrap();
        assert_eq!(a.authenticate_token(&t.token).unwrap(), TokenCheck::Refused);
        assert!(matches!(a.revoke_token(&t.id), Err(AdminError::NoToken(_))));
    }

    #[test]
    fn roles_and_tenants_must_fit() {
        let a = admin();
        a.add_tenant("acme").unwrap();
        assert!(a.add_token(None, AdminRole::Admin, "x", None).is_err());
        assert!(a
            .add_token(Some("acme"), AdminRole::Operator, "x", None)
            .is_err());
        assert!(matches!(
            a.add_token(Some("nope"), AdminRole::Admin, "x", None),
            Err(AdminError::NoTenant(_))
        ));
        assert!(a
            .add_token(Some("acme"), AdminRole::Auditor, "bad name!", None)
            .is_err());
    }

    #[test]
    fn a_token_with_a_lifetime_works_until_it_expires() {
        let (a, clock) = admin_and_clock();
        let start = 1_800_000_000;
        let t = a
            .add_token(None, AdminRole::Operator, "robot", Some(3600))
            .unwrap();
        assert_eq!(t.expires_at, Some(start + 3600));
        let forever = a.add_token(None, AdminRole::Operator, "ops", None).unwrap();
        assert_eq!(
            valid(a.authenticate_token(&t.token).unwrap()).expires_at,
            Some(start + 3600)
        );
        clock.advance(3599);
        valid(a.authenticate_token(&t.token).unwrap());
        clock.advance(1);
        match a.authenticate_token(&t.token).unwrap() {
            TokenCheck::Expired(k) => {
                assert_eq!(
                    (k.id.as_str(), k.expires_at),
                    (t.id.as_str(), Some(start + 3600))
                );
            }
            other => panic!("not expired: {other:?}"),
        }
        let listed = a.list_tokens(None).unwrap();
        let k = listed.iter().find(|k| k.id == t.id).unwrap();
        assert!(k.is_expired(clock.now()) && !k.revoked);
        assert_eq!(
            k.last_used_at,
            Some(start + 3599),
            "an expired token's use is not recorded"
        );
        // Only the whole token is "expired": a wrong secret is no token at all.
        let mut wrong = t.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(a.authenticate_token(&wrong).unwrap(), TokenCheck::Refused);
        // Revoked and expired: revoked, like any revoked token.
        a.revoke_token(&t.id).unwrap();
        assert_eq!(a.authenticate_token(&t.token).unwrap(), TokenCheck::Refused);
        // A token without a lifetime does not expire.
        clock.advance(10 * 365 * 24 * 3600);
        assert_eq!(
            valid(a.authenticate_token(&forever.token).unwrap()).expires_at,
            None
        );
    }

    #[test]
    fn a_token_lifetime_must_be_from_a_second_to_ten_years() {
        let a = admin();
        for bad in [0, MAX_TOKEN_LIFETIME_SECS + 1, u64::MAX] {
            assert!(
                matches!(
                    a.add_token(None, AdminRole::Operator, "x", Some(bad)),
                    Err(AdminError::Invalid {
                        what: "token lifetime",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(a.list_tokens(None).unwrap().is_empty(), "nothing was made");
        let t = a
            .add_token(
                None,
                AdminRole::Operator,
                "x",
                Some(MAX_TOKEN_LIFETIME_SECS),
            )
            .unwrap();
        assert_eq!(
            t.expires_at,
            Some(1_800_000_000 + MAX_TOKEN_LIFETIME_SECS as i64)
        );
    }
}
