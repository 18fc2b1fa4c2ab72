//! First-factor backends: who checks the password. `local` (the store's hashes) is built
//! in; LDAP/AD and upstream RADIUS implement the same trait. The Engine picks the backend
//! per tenant.

use crate::engine::ReplyAttribute;
use crate::model::{User, UserId};
use crate::password::PasswordHasher;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What a backend knows of a user beyond "the password is right" (for example LDAP
/// groups, mail and mobile), used by policy, reply attributes and the SMS/e-mail factors.
/// `None` means "the backend does not say": the store keeps what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryInfo {
    pub groups: Option<Vec<String>>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Attributes the final Access-Accept must carry (upstream RADIUS `pass_through`);
    /// kept with the transaction until the second factor is done.
    pub reply_attributes: Vec<ReplyAttribute>,
}

/// Who asks, for backends that forward it (upstream RADIUS sends NAS-Identifier and
/// Calling-Station-Id).
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    /// The RADIUS client's or PAM service's configured name.
    pub client: &'a str,
    /// The NAS-Identifier the NAS sent, if any.
    pub nas_identifier: Option<&'a str>,
    /// Where the user is (Calling-Station-Id, else the NAS address).
    pub source: &'a str,
}

/// A backend's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFactorResult {
    /// The password is right.
    Accepted(DirectoryInfo),
    /// The password is wrong, or the user is unknown or disabled; the reason is audited.
    Rejected(String),
    /// The backend could not answer (directory down, timeout); the reason is audited.
    Unavailable(String),
}

/// Checks the first factor.
pub trait FirstFactor: Send + Sync + 'static {
    /// `local`, `ldap`, `radius`: the name in config and audit records.
    fn name(&self) -> &'static str;

    /// Check `password` for `username`. `user` is the store's record, if there is one.
    /// An unknown user must cost about the same time as a wrong password.
    fn check(
        &self,
        tenant: &str,
        username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult;

    /// Like [`FirstFactor::check`], with who asks; the Engine calls this one. Backends that
    /// forward the request (upstream RADIUS) override it.
    fn check_in(
        &self,
        ctx: &CheckContext<'_>,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        self.check(ctx.tenant, ctx.username, user, password)
    }

    /// Whether users it accepts but the store does not know are created on first login
    /// (the factor store follows the directory).
    fn creates_users(&self) -> bool {
        false
    }

    /// True for [`Delegated`]: the first factor was checked elsewhere, so the Engine asks
    /// for the code alone (as in `otp-only` mode).
    fn delegated(&self) -> bool {
        false
    }

    /// Whether the backend takes one account under several forms of its name, with and
    /// without a domain or realm (an upstream NPS accepts `bob`, `CORP\bob` and
    /// `bob@corp.example` alike): users it creates on first login are then told apart
    /// without those parts, so that a second form does not become a second user without
    /// the first one's factors.
    fn realm_forms_alike(&self) -> bool {
        false
    }
}

/// `name` without a Windows domain (`CORP\bob`) or a realm (`bob@corp.example`): `bob`. A
/// name that would be left empty is kept whole.
pub fn without_realm(name: &str) -> &str {
    let after_domain = name.rsplit_once('\\').map_or(name, |(_, user)| user);
    match after_domain.split_once('@') {
        Some((user, _)) if !user.is_empty() => user,
        _ if after_domain.is_empty() => name,
        _ => after_domain,
    }
}

/// `first_factor = "none"`: the first factor was checked elsewhere (the PAM stack, another
/// RADIUS server). The Engine never calls [`FirstFactor::check`] on it: logins become
/// second-factor-only and are audited as `delegated`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delegated;

impl FirstFactor for Delegated {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check(
        &self,
        _tenant: &str,
        _username: &str,
        _user: Option<&User>,
        _password: &[u8],
    ) -> FirstFactorResult {
        // Fail closed should anything call it.
        FirstFactorResult::Rejected("first factor is delegated; no password is checked here".into())
    }

    fn delegated(&self) -> bool {
        true
    }
}

/// Passwords hashed in the store (argon2id, or imported `$6$`).
#[derive(Debug, Clone)]
pub struct LocalPasswords {
    hasher: PasswordHasher,
    stand_ins: Arc<StandIns>,
}

/// Per tenant, the kinds of hash (scheme and cost, without salt and checksum) of the users
/// who logged in, how many users have each, and a stand-in hash of each kind.
///
/// A login without a hash (unknown user, no password set) verifies the stand-in of the
/// tenant's most common kind, so that it takes as long as a real user's: with one fixed
/// argon2id stand-in, a tenant of imported `$6$` hashes (a few milliseconds each) would
/// answer unknown names 20 ms later than known ones, and tell a guesser which exist.
/// Users are counted, not verifications: hammering one user's password cannot make that
/// user's kind the stand-in.
#[derive(Debug, Default)]
struct StandIns(Mutex<HashMap<String, TenantKinds>>);

#[derive(Debug, Default)]
struct TenantKinds {
    kinds: Vec<Kind>,
    /// Each user's kind (an index into `kinds`), as last verified.
    users: HashMap<UserId, usize>,
}

#[derive(Debug)]
struct Kind {
    /// The hash up to its salt: `$6$rounds=N`, `$argon2id$v=19$m=...,t=...,p=...`.
    cost: String,
    users: u64,
    stand_in: String,
}

/// Kinds kept per tenant; hashes of further kinds are not counted.
const MAX_KINDS: usize = 8;

/// The part of a hash that sets its cost: everything before salt and checksum.
fn cost_of(hash: &str) -> &str {
    hash.rsplitn(3, '$').nth(2).unwrap_or("")
}

impl TenantKinds {
    /// Counts `user` under kind `k` (once, however often they log in). `false` if `cost`
    /// is a kind not seen yet (its stand-in must be made first).
    fn count(&mut self, user: UserId, cost: &str) -> bool {
        let Some(k) = self.kinds.iter().position(|k| k.cost == cost) else {
            return false;
        };
        match self.users.insert(user, k) {
            Some(old) if old == k => {}
            Some(old) => {
                self.kinds[old].users -= 1;
                self.kinds[k].users += 1;
            }
            None => self.kinds[k].users += 1,
        }
        true
    }
}

impl LocalPasswords {
    /// The local backend with this hasher.
    pub fn new(hasher: PasswordHasher) -> Self {
        Self {
            hasher,
            stand_ins: Arc::default(),
        }
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantKinds>> {
        self.stand_ins
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Count the kind of `user`'s hash in `tenant`. The first user of a kind makes its
    /// stand-in (one hash of that cost, once per kind).
    fn note(&self, tenant: &str, user: UserId, hash: &str) {
        let cost = cost_of(hash);
        {
            let mut map = self.kinds();
            if let Some(t) = map.get_mut(tenant) {
                if t.count(user, cost) || t.kinds.len() >= MAX_KINDS {
                    return;
                }
            }
        }
        let Some(stand_in) = self.hasher.stand_in_for(hash) else {
            return;
        };
        let mut map = self.kinds();
        let t = map.entry(tenant.to_string()).or_default();
        // Another login may have added the kind meanwhile.
        if !t.kinds.iter().any(|k| k.cost == cost) {
            if t.kinds.len() >= MAX_KINDS {
                return;
            }
            t.kinds.push(Kind {
                cost: cost.to_string(),
                users: 0,
                stand_in,
            });
        }
        t.count(user, cost);
    }

    /// The stand-in hash for `tenant`'s logins without one: of its most common kind.
    fn stand_in(&self, tenant: &str) -> Option<String> {
        let map = self.kinds();
        let kind = map.get(tenant)?.kinds.iter().max_by_key(|k| k.users)?;
        Some(kind.stand_in.clone())
    }

    /// Spend the time of one of `tenant`'s verifications without a hash.
    fn verify_stand_in(&self, tenant: &str, password: &[u8]) {
        match self.stand_in(tenant) {
            Some(hash) => {
                let _ = self.hasher.verify(&hash, password);
            }
            None => self.hasher.verify_dummy(password),
        }
    }
}

impl FirstFactor for LocalPasswords {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(
        &self,
        tenant: &str,
        _username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        let Some(u) = user else {
            self.verify_stand_in(tenant, password);
            return FirstFactorResult::Rejected("unknown user".into());
        };
        let Some(hash) = &u.password_hash else {
            self.verify_stand_in(tenant, password);
            return FirstFactorResult::Rejected("user has no password set".into());
        };
        if let Some(cost) = self.hasher.excess_cost(hash) {
            // Never computed (it could take minutes, or more memory than there is): the
            // login costs what one without a hash does. The cost is no secret.
            self.verify_stand_in(tenant, password);
            tracing::warn!(tenant, user = %u.name, %cost,
                "the user's password hash costs more than Portcullis verifies; the login is refused: set a new password with portcullis user set-password");
            return FirstFactorResult::Rejected(format!(
                "the stored password hash costs too much to verify ({cost}): set a new password with portcullis user set-password"
            ));
        }
        self.note(tenant, u.id, hash);
        // Verify before looking at `disabled`, so that both cost the same time.
        let ok = self.hasher.verify(hash, password);
        if u.disabled {
            FirstFactorResult::Rejected("user is disabled".into())
        } else if ok {
            FirstFactorResult::Accepted(DirectoryInfo::default())
        } else {
            FirstFactorResult::Rejected("wrong password".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_or_realm_is_taken_off_a_name() {
        assert_eq!(without_realm("bob"), "bob");
        assert_eq!(without_realm("CORP\\bob"), "bob");
        assert_eq!(without_realm("bob@corp.example"), "bob");
        assert_eq!(without_realm("CORP\\bob@corp.example"), "bob");
        assert_eq!(without_realm("@corp.example"), "@corp.example");
        assert_eq!(without_realm("CORP\\"), "CORP\\");
    }
    use crate::config::PasswordConfig;
    use crate::password::cheap as hasher;

    fn user_with(id: UserId, hash: &str) -> User {
        User {
            id,
            tenant_id: 1,
            name: format!("user{id}"),
            password_hash: Some(hash.to_string()),
            email: None,
            phone: None,
            groups: Vec::new(),
            disabled: false,
            created_at: 0,
            attributes: Default::default(),
            session_epoch: 0,
        }
    }

    fn sha512(rounds: usize) -> String {
        let params = sha_crypt::Sha512Params::new(rounds).unwrap();
        sha_crypt::sha512_simple("secret", &params).unwrap()
    }

    #[test]
    fn the_cost_of_a_hash_is_all_before_its_salt() {
        assert_eq!(cost_of("$6$rounds=1000$salt$sum"), "$6$rounds=1000");
        assert_eq!(cost_of("$6$salt$sum"), "$6");
        assert_eq!(
            cost_of("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA"),
            "$argon2id$v=19$m=1024,t=1,p=1"
        );
    }

    #[test]
    fn a_stand_in_has_the_cost_of_its_model_and_matches_nothing_typed() {
        let h = hasher();
        let argon = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 2048,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            ..PasswordConfig::default()
        })
        .unwrap()
        .hash(b"secret")
        .unwrap();
        for model in [sha512(1000), sha512(5000), argon] {
            let stand_in = h.stand_in_for(&model).unwrap();
            assert_eq!(cost_of(&stand_in), cost_of(&model), "{stand_in}");
            assert_eq!(stand_in.len(), model.len(), "{stand_in}");
            h.check_importable(&stand_in).unwrap();
            assert!(!h.verify(&stand_in, b"secret"));
        }
        assert_eq!(h.stand_in_for("$6$rounds=many$salt$sum"), None);
        assert_eq!(h.stand_in_for("plain text"), None);
    }

    #[test]
    fn unknown_users_verify_a_stand_in_of_the_kind_most_users_have() {
        let local = LocalPasswords::new(hasher());
        // Before any login the tenant's stand-in is the default argon2id one.
        assert_eq!(local.stand_in("imported"), None);
        let argon = hasher().hash(b"secret").unwrap();
        let check = |tenant: &str, id: UserId, hash: &str, password: &[u8]| {
            local.check(tenant, "someone", Some(&user_with(id, hash)), password)
        };
        let six = sha512(1000);
        for (tenant, id, hash) in [
            ("imported", 1, &six),
            ("imported", 2, &argon),
            ("imported", 3, &six),
            ("native", 1, &argon),
            ("native", 4, &argon),
        ] {
            assert!(matches!(
                check(tenant, id, hash, b"secret"),
                FirstFactorResult::Accepted(_)
            ));
        }
        let imported = local.stand_in("imported").unwrap();
        assert_eq!(cost_of(&imported), "$6$rounds=1000");
        assert_eq!(cost_of(&local.stand_in("native").unwrap()), cost_of(&argon));
        // Users are counted, not verifications: guessing one user's password many times
        // does not make that user's kind the stand-in.
        for _ in 0..10 {
            check("native", 2, &six, b"guess");
        }
        assert_eq!(cost_of(&local.stand_in("native").unwrap()), cost_of(&argon));
        check("native", 3, &six, b"guess");
        check("native", 5, &six, b"guess");
        assert_eq!(
            cost_of(&local.stand_in("native").unwrap()),
            "$6$rounds=1000"
        );
        // A user whose hash changed kind moves with it.
        check("native", 3, &argon, b"guess");
        assert_eq!(cost_of(&local.stand_in("native").unwrap()), cost_of(&argon));
        // An unknown user is rejected after verifying that stand-in.
        let result = local.check("imported", "nobody", None, b"secret");
        assert!(matches!(result, FirstFactorResult::Rejected(r) if r == "unknown user"));
    }

    #[test]
    fn a_stored_hash_over_the_cost_limits_is_refused_without_computing_it() {
        let local = LocalPasswords::new(hasher());
        // Computing either would abort (4 TiB of memory) or take minutes of a core.
        let argon = hasher().hash(b"secret").unwrap();
        let huge = argon.replacen("m=1024,", "m=4294967295,", 1);
        let slow = sha512(1000).replacen("rounds=1000", "rounds=999999999", 1);
        for (id, stored, cost) in [
            (1, &huge, "m=4294967295,t=1,p=1"),
            (2, &slow, "rounds=999999999"),
        ] {
            let started = std::time::Instant::now();
            let result = local.check("t", "big", Some(&user_with(id, stored)), b"secret");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{stored} was computed"
            );
            match result {
                FirstFactorResult::Rejected(r) => {
                    assert!(r.contains(cost) && r.contains("set-password"), "{r}")
                }
                other => panic!("{stored}: {other:?}"),
            }
        }
        assert_eq!(local.stand_in("t"), None, "no kind to model stand-ins on");
    }
}
