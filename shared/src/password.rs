//! Password hashes: argon2id for new ones; argon2id and crypt(3) SHA-512 (`$6$`) verified,
//! so that existing hashes can be imported.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordConfig;

/// A hash that cannot be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    #[error("unsupported password hash: give an argon2id PHC string ($argon2id$...) or a SHA-512 crypt hash ($6$...)")]
    UnsupportedHash,
    #[error("argon2 cost settings are invalid: {0}")]
    Params(String),
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// Makes and checks password hashes with the configured argon2id cost.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// A real hash of a random password, verified for unknown users so that their
    /// rejection takes as long as a wrong password's.
    dummy: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the cost of `[passwords]`.
    pub fn new(cfg: &PasswordConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut me = Self {
            argon,
            dummy: String::new(),
        };
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        me.dummy = me.hash(&random)?;
        Ok(me)
    }

    /// A new argon2id PHC string for `password`.
    pub fn hash(&self, password: &[u8]) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches `stored` (argon2id or `$6$`). Malformed hashes never match.
    pub fn verify(&self, stored: &str, password: &[u8]) -> bool {
        if stored.starts_with("$6$") {
            return match std::str::from_utf8(password) {
                Ok(pw) => sha_crypt::sha512_check(pw, stored).is_ok(),
                Err(_) => false,
            };
        }
        match PasswordHash::new(stored) {
            // verify_password uses the parameters recorded in the hash itself.
            Ok(parsed) => self.argon.verify_password(password, &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Spend the time of one verification without a user (unknown user, no password set).
    pub fn verify_dummy(&self, password: &[u8]) {
        let _ = self.verify(&self.dummy, password);
    }

    /// Check a hash given for import (`--password-hash-stdin`).
    pub fn check_importable(hash: &str) -> Result<(), PasswordError> {
        if hash.starts_with("$6$") {
            // A well-formed $6$ hash has salt and a 86-character checksum.
            let parts: Vec<&str> = hash.split('$').collect();
            let checksum_ok = parts.last().is_some_and(|c| c.len() == 86);
            return if parts.len() >= 4 && checksum_ok {
                Ok(())
            } else {
                Err(PasswordError::UnsupportedHash)
            };
        }
        match PasswordHash::new(hash) {
            Ok(p) if p.algorithm.as_str() == "argon2id" && p.hash.is_some() => Ok(()),
            _ => Err(PasswordError::UnsupportedHash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn argon2id_round_trip() {
        let h = cheap();
        let stored = h.hash(b"hunter2").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify(&stored, b"hunter2"));
        assert!(!h.verify(&stored, b"hunter3"));
        PasswordHasher::check_importable(&stored).unwrap();
    }

    #[test]
    fn sha512_crypt_hashes_verify() {
        // The SHA-crypt specification's vector; `openssl passwd -6 -salt saltstring 'Hello world!'`
        // prints the same string.
        let stored = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let h = cheap();
        assert!(h.verify(stored, b"Hello world!"));
        assert!(!h.verify(stored, b"Hello world"));
        PasswordHasher::check_importable(stored).unwrap();
    }

    #[test]
    fn garbage_hashes_never_match_and_are_not_importable() {
        let h = cheap();
        assert!(!h.verify("plaintext", b"plaintext"));
        assert!(!h.verify("$6$short", b"x"));
        assert!(PasswordHasher::check_importable("plaintext").is_err());
        assert!(PasswordHasher::check_importable("$1$abc$def").is_err());
        assert!(
            PasswordHasher::check_importable("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA")
                .is_err()
        );
    }
}
