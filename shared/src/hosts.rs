//! Remote PAM hosts of a fleet: `portcullis host add` registers a host and prints its
//! bearer token once; `POST /v1/pam/step` finds the host (and so its tenant) by the token.
//!
//! A token is `pch_` followed by 52 base32 characters (32 random bytes, 256 bits). Only its
//! HMAC-SHA256 under a sub-key of the master key is stored, so a copy of the database does
//! not let anyone log a host in, and the token is looked up by that keyed hash.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::model::PamHost;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// What every host token starts with (recognisable in a leaked-secret scan).
pub const TOKEN_PREFIX: &str = "pch_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// The sub-key label of the token hashes.
const TOKEN_PEPPER_LABEL: &str = "portcullis pam host tokens v1";

/// Why a host command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("tenant '{0}' does not exist; create it with: portcullis tenant add {0}")]
    NoTenant(String),
    #[error("host '{host}' of tenant '{tenant}' does not exist or was already removed; list hosts with: portcullis host list --tenant {tenant}")]
    NoHost { tenant: String, host: String },
    #[error("host '{host}' of tenant '{tenant}' is already registered; remove it first (portcullis host remove --tenant {tenant} {host}) to issue a new token")]
    Exists { tenant: String, host: String },
    #[error("invalid host name '{0}': use 1-253 letters, digits or . _ -")]
    InvalidName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly registered host and its token (shown once, never stored).
#[derive(Debug)]
pub struct NewHost {
    pub host: PamHost,
    pub token: Zeroizing<String>,
}

/// Host registration and token checks over a store.
pub struct Hosts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    pepper: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hosts")
    }
}

fn check_host_name(name: &str) -> Result<(), HostError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(HostError::InvalidName(name.to_string()))
    }
}

impl Hosts {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, key: &MasterKey) -> Self {
        Self {
            store,
            clock,
            pepper: key.derive(TOKEN_PEPPER_LABEL),
        }
    }

    fn hash(&self, token: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.pepper.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(token.as_bytes());
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    }

    fn tenant_id(&self, tenant: &str) -> Result<i64, HostError> {
        self.store
            .tenant_by_name(tenant)?
            .map(|t| t.id)
            .ok_or_else(|| HostError::NoTenant(tenant.to_string()))
    }

    /// `host add`: register `name` in `tenant` and make its token.
    pub fn add(&self, tenant: &str, name: &str) -> Result<NewHost, HostError> {
        check_host_name(name)?;
        let tenant_id = self.tenant_id(tenant)?;
        let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let token = Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(raw.as_ref())
                .to_ascii_lowercase()
        ));
        let host =
            match self
                .store
                .create_pam_host(tenant_id, name, &self.hash(&token), self.clock.now())
            {
                Ok(h) => h,
                Err(StoreError::AlreadyExists { .. }) => {
                    return Err(HostError::Exists {
                        tenant: tenant.to_string(),
                        host: name.to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
        Ok(NewHost { host, token })
    }

    /// `host list`
    pub fn list(&self, tenant: &str) -> Result<Vec<PamHost>, HostError> {
        let tenant_id = self.tenant_id(tenant)?;
        Ok(self.store.list_pam_hosts(tenant_id)?)
    }

    /// `host remove`: the token stops working at once.
    pub fn remove(&self, tenant: &str, name: &str) -> Result<(), HostError> {
        let tenant_id = self.tenant_id(tenant)?;
        if self.store.revoke_pam_host(tenant_id, name)? {
            Ok(())
        } else {
            Err(HostError::NoHost {
                tenant: tenant.to_string(),
                host: name.to_string(),
            })
        }
    }

    /// The live host holding `token`, with its last-seen time updated; `None` for an
    /// unknown, malformed or revoked token.
    pub fn authenticate(&self, token: &str) -> Result<Option<PamHost>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        // The token is found by its keyed hash (HMAC under a sub-key of the master key): an
        // index lookup whose timing tells a caller nothing about stored tokens, since they
        // cannot compute the hash of a guess; no secret is compared byte by byte here.
        let Some(host) = self.store.pam_host_by_token_hash(&self.hash(token))? else {
            return Ok(None);
        };
        if host.revoked {
            return Ok(None);
        }
        self.store.touch_pam_host(host.id, self.clock.now())?;
        Ok(Some(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::SqliteStore;

    fn hosts() -> Hosts {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        store.create_tenant("acme", 1).unwrap();
        store.create_tenant("beta", 1).unwrap();
        Hosts::new(
            store,
            Arc::new(ManualClock::new(1_000)),
            &MasterKey::from_bytes([3; 32]),
        )
    }

    #[test]
    fn a_token_names_its_host_until_removed() {
        let h = hosts();
        let web1 = h.add("acme", "web1").unwrap();
        assert!(web1.token.starts_with(TOKEN_PREFIX));
        // 256 bits in base32: 52 characters after the prefix.
        assert_eq!(web1.token.len(), TOKEN_PREFIX.len() + 52);
        let other = h.add("beta", "web1").unwrap();
        assert_ne!(*web1.token, *other.token);
        let found = h.authenticate(&web1.token).unwrap().unwrap();
        assert_eq!(
            (found.tenant.as_str(), found.name.as_str()),
            ("acme", "web1")
        );
        assert_eq!(found.last_seen_at, None, "the value read before the touch");
        assert_eq!(h.list("acme").unwrap()[0].last_seen_at, Some(1_000));
        assert_eq!(
            h.authenticate(&other.token).unwrap().unwrap().tenant,
            "beta"
        );
        h.remove("acme", "web1").unwrap();
        assert!(h.authenticate(&web1.token).unwrap().is_none());
        assert!(h.authenticate(&other.token).unwrap().is_some());
        assert!(matches!(
            h.remove("acme", "web1"),
            Err(HostError::NoHost { .. })
        ));
    }

    #[test]
    fn wrong_tokens_and_names_are_refused() {
        let h = hosts();
        let web1 = h.add("acme", "web1").unwrap();
        let mut tampered = web1.token.to_string();
        tampered.pop();
        tampered.push('x');
        assert!(h.authenticate(&tampered).unwrap().is_none());
        assert!(h.authenticate("").unwrap().is_none());
        assert!(h
            .authenticate(&web1.token[TOKEN_PREFIX.len()..])
            .unwrap()
            .is_none());
        assert!(matches!(
            h.add("acme", "web1"),
            Err(HostError::Exists { .. })
        ));
        assert!(matches!(h.add("nope", "x"), Err(HostError::NoTenant(_))));
        for bad in ["", "a b", "web/1", "x;y"] {
            assert!(matches!(h.add("acme", bad), Err(HostError::InvalidName(_))));
        }
    }

    #[test]
    fn tokens_are_stored_only_as_keyed_hashes() {
        let h = hosts();
        let web1 = h.add("acme", "web1").unwrap();
        assert!(h
            .store
            .pam_host_by_token_hash(&web1.token)
            .unwrap()
            .is_none());
        assert!(h
            .store
            .pam_host_by_token_hash(&h.hash(&web1.token))
            .unwrap()
            .is_some());
    }
}
