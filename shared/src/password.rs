//! Password hashes: argon2id for new ones; argon2id and crypt(3) SHA-512 (`$6$`) verified,
//! so that existing hashes can be imported.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

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
    /// The hash is well formed but would cost more to verify than [`COST_LIMITS`] allow.
    #[error("the password hash costs too much to verify ({cost}): {}", COST_LIMITS)]
    TooCostly { cost: String },
}

/// The most memory an argon2 hash may ask for (KiB: 1 GiB), unless `[passwords]` asks for
/// more. Verifying takes that much memory, so a larger one could abort the daemon.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes over that memory an argon2 hash may ask for (unless `[passwords]` does).
pub const MAX_ARGON2_ITERATIONS: u32 = 16;
/// The most lanes an argon2 hash may ask for (unless `[passwords]` does).
pub const MAX_ARGON2_PARALLELISM: u32 = 16;
/// The most rounds a SHA-512 crypt hash may ask for (glibc's default is 5000; 1,000,000 take
/// about half a second of a core). The format allows 999,999,999: minutes per login.
pub const MAX_SHA512_ROUNDS: usize = 1_000_000;
/// The cost limits of imported and stored hashes, and what to do about a hash over them.
pub const COST_LIMITS: &str = "argon2 hashes may cost at most m=1048576 (KiB, 1 GiB), t=16 and p=16 (or the [passwords] cost, if higher), $6$ hashes at most rounds=1000000; have the user set a new password (portcullis user set-password), or leave the hash out";

/// The longest password that can match (bytes), as OpenSSH's limit: longer ones are wrong.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Makes and checks password hashes with the configured argon2id cost.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// A real hash of a random password, verified for unknown users so that their
    /// rejection takes as long as a wrong password's.
    dummy: String,
    /// Shared by every clone: how many hashes run at once, and argon2's memory.
    turns: Arc<Turns>,
}

/// Turns at hashing: at most `limit` hashes run at once, and the logins waiting start in
/// the order they arrived.
///
/// Without it every login's hash starts at once on its own thread and the scheduler
/// shares the cores out among all of them: each one finishes only when nearly all have,
/// so under load every login waits for the others' hashes too, and argon2id holds its
/// memory for each. In turns, a hash runs to its end on a core and the queue is served
/// first come, first served: the same throughput, and a login's wait is the work ahead
/// of it, not all the work in the server. A finished hash hands its turn straight to the
/// first waiter and wakes that thread alone (waking every waiter to let one through
/// costs more CPU than the hashes save).
///
/// A turn also lends argon2 its working memory (`m` KiB: 19 MiB at the default cost),
/// kept from an earlier turn rather than mapped, faulted in and zeroed for each hash:
/// about a fifth of a verification's time at the default cost (measured: 22 ms instead of
/// 28 ms on one core). At most one block per turn is ever kept. argon2 writes every block
/// before it reads it, so a block's old content never matters.
struct Turns {
    state: Mutex<TurnState>,
}

struct TurnState {
    /// Turns nobody holds (only while nobody waits).
    free: usize,
    waiting: VecDeque<Arc<Waiter>>,
    /// argon2 memory that no turn holds now.
    memory: Vec<Vec<Block>>,
}

struct Waiter {
    thread: std::thread::Thread,
    /// Set (before the unpark) when a finished hash hands this waiter its turn.
    admitted: AtomicBool,
}

impl Turns {
    fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(TurnState {
                free: limit.max(1),
                waiting: VecDeque::new(),
                memory: Vec::new(),
            }),
        }
    }

    /// Waits for this caller's turn; the turn ends when the guard is dropped.
    fn take(&self) -> Turn<'_> {
        let waiter = {
            let mut state = self.state.lock();
            if state.free > 0 {
                state.free -= 1;
                return Turn::new(self);
            }
            let waiter = Arc::new(Waiter {
                thread: std::thread::current(),
                admitted: AtomicBool::new(false),
            });
            state.waiting.push_back(waiter.clone());
            waiter
        };
        // park() may return early (a stray unpark); the flag says when the turn is ours.
        while !waiter.admitted.load(Ordering::Acquire) {
            std::thread::park();
        }
        Turn::new(self)
    }
}

/// One running hash's turn (see [`Turns`]).
struct Turn<'a> {
    turns: &'a Turns,
    /// argon2 memory borrowed for this turn, if it needed any.
    memory: Option<Vec<Block>>,
}

impl<'a> Turn<'a> {
    fn new(turns: &'a Turns) -> Self {
        Self {
            turns,
            memory: None,
        }
    }

    /// At least `len` blocks of argon2 memory, kept from an earlier turn if there is one.
    fn memory(&mut self, len: usize) -> &mut [Block] {
        let turns = self.turns;
        let blocks = self
            .memory
            .get_or_insert_with(|| turns.state.lock().memory.pop().unwrap_or_default());
        if blocks.len() < len {
            blocks.resize(len, Block::default());
        }
        &mut blocks[..len]
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.turns.state.lock();
        if let Some(blocks) = self.memory.take() {
            state.memory.push(blocks);
        }
        match state.waiting.pop_front() {
            Some(next) => {
                next.admitted.store(true, Ordering::Release);
                next.thread.unpark();
            }
            None => state.free += 1,
        }
    }
}

/// An argon2 PHC hash, with the parameters recorded in it, computed in the memory the
/// turn lends (see [`Turns`]).
fn verify_argon2(hash: &PasswordHash<'_>, password: &[u8], turn: &mut Turn<'_>) -> bool {
    let (Ok(algorithm), Some(expected), Some(salt)) =
        (Algorithm::try_from(hash.algorithm), hash.hash, hash.salt)
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = zeroize::Zeroizing::new(vec![0u8; expected.len()]);
    let memory = turn.memory(params.block_count());
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, memory)
        .is_ok();
    computed && bool::from(subtle::ConstantTimeEq::ct_eq(&out[..], expected.as_bytes()))
}

/// What a stored hash costs to verify, as its text says (`None` when it is malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    Sha512 { rounds: usize },
    Argon2 { m: u32, t: u32, p: u32 },
}

impl Cost {
    fn of(stored: &str) -> Option<Cost> {
        if let Some(rest) = stored.strip_prefix("$6$") {
            // As sha512_crypt::parse reads it: an optional `rounds=N` field, else the default
            // 5000 (here without its range, so that a hash over the limit names its cost).
            let rounds = match rest.split('$').next()?.strip_prefix("rounds=") {
                Some(r) => r.parse().ok()?,
                None => 5000,
            };
            return Some(Cost::Sha512 { rounds });
        }
        let parsed = PasswordHash::new(stored).ok()?;
        let p = Params::try_from(&parsed).ok()?;
        Some(Cost::Argon2 {
            m: p.m_cost(),
            t: p.t_cost(),
            p: p.p_cost(),
        })
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cost::Sha512 { rounds } => write!(f, "rounds={rounds}"),
            Cost::Argon2 { m, t, p } => write!(f, "m={m},t={t},p={p}"),
        }
    }
}

/// The default of `[passwords] max_parallel_hashes`: two per CPU. Exactly one per CPU
/// leaves a core idle whenever a hashing thread waits to be scheduled or the scheduler puts
/// two of them on one core (measured: a fifth fewer `$6$` logins per second on two cores);
/// two per CPU keep every core busy and still bound the queue and argon2id's memory.
fn default_parallel_hashes() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
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
        let parallel = match cfg.max_parallel_hashes {
            0 => default_parallel_hashes(),
            n => n as usize,
        };
        let mut me = Self {
            argon,
            dummy: String::new(),
            turns: Arc::new(Turns::new(parallel)),
        };
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        me.dummy = me.hash(&random)?;
        Ok(me)
    }

    /// A new argon2id PHC string for `password`.
    pub fn hash(&self, password: &[u8]) -> Result<String, PasswordError> {
        if password.len() > MAX_PASSWORD_LEN {
            return Err(PasswordError::Hash(format!(
                "a password may have at most {MAX_PASSWORD_LEN} bytes"
            )));
        }
        let salt = SaltString::generate(&mut OsRng);
        let _turn = self.turns.take();
        self.argon
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches `stored` (argon2id or `$6$`). Malformed hashes never match,
    /// nor does a password longer than [`MAX_PASSWORD_LEN`]: SHA-512 crypt's cost grows
    /// with the square of the length (a 60 KB password over PAM would hold a hashing turn
    /// for seconds). Such a password costs what one of the longest allowed does.
    ///
    /// A hash that costs more than the limits (see [`PasswordHasher::excess_cost`]) never
    /// matches either, and is not computed: it could take minutes, or more memory than
    /// there is.
    pub fn verify(&self, stored: &str, password: &[u8]) -> bool {
        if self.excess_cost(stored).is_some() {
            return false;
        }
        let too_long = password.len() > MAX_PASSWORD_LEN;
        let password = &password[..password.len().min(MAX_PASSWORD_LEN)];
        let mut turn = self.turns.take();
        let matched = if stored.starts_with("$6$") {
            crate::sha512_crypt::verify(password, stored)
        } else {
            match PasswordHash::new(stored) {
                Ok(parsed) => verify_argon2(&parsed, password, &mut turn),
                Err(_) => false,
            }
        };
        matched && !too_long
    }

    /// Spend the time of one verification without a user (unknown user, no password set).
    pub fn verify_dummy(&self, password: &[u8]) {
        let _ = self.verify(&self.dummy, password);
    }

    /// A hash of a random password with the scheme and cost of `stored` (rounds of a `$6$`
    /// hash; algorithm, version, memory, passes, lanes and output length of an argon2 one),
    /// for logins that have no hash of their own to take as long as those that do. `None`
    /// when `stored` is malformed or costs more than the limits (nothing is hashed then).
    pub fn stand_in_for(&self, stored: &str) -> Option<String> {
        if self.excess_cost(stored).is_some() {
            return None;
        }
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let password: String = random.iter().map(|b| char::from(b'a' + b % 26)).collect();
        let _turn = self.turns.take();
        if stored.starts_with("$6$") {
            let rounds = crate::sha512_crypt::parse(stored)?.rounds;
            let salt: Vec<u8> = (0..crate::sha512_crypt::SALT_MAX)
                .map(|_| b'a' + rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..26u8))
                .collect();
            return crate::sha512_crypt::hash(password.as_bytes(), &salt, rounds);
        }
        let parsed = PasswordHash::new(stored).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let length = parsed.hash?.len();
        let p = Params::try_from(&parsed).ok()?;
        let params = Params::new(p.m_cost(), p.t_cost(), p.p_cost(), Some(length)).ok()?;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes(), &salt)
            .ok()
            .map(|h| h.to_string())
    }

    /// The cost of `stored` (`rounds=N` or `m=..,t=..,p=..`: no secret) when it is more
    /// than this hasher verifies: argon2 over [`MAX_ARGON2_MEMORY_KIB`],
    /// [`MAX_ARGON2_ITERATIONS`] or [`MAX_ARGON2_PARALLELISM`] (each raised to the
    /// configured cost where that is higher, so that the hasher's own hashes always
    /// verify), `$6$` over [`MAX_SHA512_ROUNDS`]. `None` for a hash within the limits,
    /// and for one too malformed to have a cost (it never matches, and is not computed).
    pub fn excess_cost(&self, stored: &str) -> Option<String> {
        let own = self.argon.params();
        let cost = Cost::of(stored)?;
        let over = match cost {
            Cost::Sha512 { rounds } => rounds > MAX_SHA512_ROUNDS,
            Cost::Argon2 { m, t, p } => {
                m > MAX_ARGON2_MEMORY_KIB.max(own.m_cost())
                    || t > MAX_ARGON2_ITERATIONS.max(own.t_cost())
                    || p > MAX_ARGON2_PARALLELISM.max(own.p_cost())
            }
        };
        over.then(|| cost.to_string())
    }

    /// Check a hash given for import or to be set (`--password-hash-stdin`, `user import`,
    /// the admin API): argon2id or `$6$`, well formed, and within the cost limits
    /// ([`PasswordError::TooCostly`] names its cost and the limits).
    pub fn check_importable(&self, hash: &str) -> Result<(), PasswordError> {
        if hash.starts_with("$6$") {
            // A well-formed $6$ hash reads as verify reads it (rounds within
            // 1000..=999999999, no extra field) and has an 86-character checksum; else
            // its user could never log in. Rounds over the limit are named below.
            let checksum_ok = hash.rsplit('$').next().is_some_and(|c| c.len() == 86);
            let over_limit = matches!(Cost::of(hash), Some(Cost::Sha512 { rounds }) if rounds > crate::sha512_crypt::ROUNDS_MAX);
            if !checksum_ok || (crate::sha512_crypt::parse(hash).is_none() && !over_limit) {
                return Err(PasswordError::UnsupportedHash);
            }
        } else {
            match PasswordHash::new(hash) {
                Ok(p) if p.algorithm.as_str() == "argon2id" && p.hash.is_some() => {}
                _ => return Err(PasswordError::UnsupportedHash),
            }
        }
        if Cost::of(hash).is_none() {
            // A rounds field that is no number; argon2 parameters out of argon2's own range.
            return Err(PasswordError::UnsupportedHash);
        }
        match self.excess_cost(hash) {
            Some(cost) => Err(PasswordError::TooCostly { cost }),
            None => Ok(()),
        }
    }
}

/// A hasher with the cheapest argon2id cost (1 MiB, one pass), for tests.
#[cfg(test)]
pub(crate) fn cheap() -> PasswordHasher {
    PasswordHasher::new(&PasswordConfig {
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        argon2_parallelism: 1,
        ..PasswordConfig::default()
    })
    .expect("a valid cost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_longer_than_the_limit_never_match_and_stay_cheap() {
        let h = cheap();
        let long = vec![b'x'; MAX_PASSWORD_LEN + 1];
        assert!(h.hash(&long).is_err(), "not set either");
        let max = vec![b'x'; MAX_PASSWORD_LEN];
        let argon = h.hash(&max).unwrap();
        assert!(h.verify(&argon, &max));
        assert!(
            !h.verify(&argon, &long),
            "a longer password is not its prefix"
        );
        let params = sha_crypt::Sha512Params::new(1000).unwrap();
        let crypt = sha_crypt::sha512_simple(std::str::from_utf8(&max).unwrap(), &params).unwrap();
        assert!(h.verify(&crypt, &max));
        assert!(!h.verify(&crypt, &long));
        // 60 KB, a PAM frame's worth: only its first MAX_PASSWORD_LEN bytes are hashed.
        assert!(!h.verify(&crypt, &vec![b'x'; 60_000]));
    }

    #[test]
    fn argon2id_round_trip() {
        let h = cheap();
        let stored = h.hash(b"hunter2").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify(&stored, b"hunter2"));
        assert!(!h.verify(&stored, b"hunter3"));
        h.check_importable(&stored).unwrap();
    }

    #[test]
    fn argon2_verification_in_kept_memory_agrees_with_the_library() {
        use argon2::password_hash::PasswordVerifier;
        let h = cheap();
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        // Larger, smaller and other variants in turn: the kept memory is reused and grown.
        for (algorithm, m, t) in [
            (Algorithm::Argon2id, 2048, 1),
            (Algorithm::Argon2id, 1024, 2),
            (Algorithm::Argon2i, 1536, 1),
            (Algorithm::Argon2d, 1024, 1),
        ] {
            let library = Argon2::new(
                algorithm,
                Version::V0x13,
                Params::new(m, t, 1, None).unwrap(),
            );
            let stored = library.hash_password(b"right", &salt).unwrap().to_string();
            let parsed = PasswordHash::new(&stored).unwrap();
            for (password, expected) in [(&b"right"[..], true), (&b"wrong"[..], false)] {
                assert_eq!(
                    library.verify_password(password, &parsed).is_ok(),
                    expected,
                    "{stored}"
                );
                assert_eq!(h.verify(&stored, password), expected, "{stored}");
            }
        }
        // A hash without its output, or with a salt that is not base64, never matches.
        assert!(!h.verify(
            "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA",
            b"right"
        ));
        assert_eq!(
            h.turns.state.lock().memory.len(),
            1,
            "one block kept, reused"
        );
    }

    #[test]
    fn sha512_crypt_hashes_verify() {
        // The SHA-crypt specification's vector; `openssl passwd -6 -salt saltstring 'Hello world!'`
        // prints the same string.
        let stored = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let h = cheap();
        assert!(h.verify(stored, b"Hello world!"));
        assert!(!h.verify(stored, b"Hello world"));
        h.check_importable(stored).unwrap();
        // A password that is not UTF-8 (Latin-1 "caf\xe9", as a terminal in that charset
        // sends it) is hashed as its bytes, as crypt(3) does:
        // `printf 'caf\xe9\n' | openssl passwd -6 -salt latin1salt -stdin`.
        let latin1 = "$6$latin1salt$sGAU1t266wN2aIH9uVkoC6jG8e7smgYuPgC3OQlSjEM3x7L5PwJIp2bO.bepZVmS/nBpykXiIvPrrigxri6r91";
        assert!(h.verify(latin1, b"caf\xe9"));
        assert!(!h.verify(latin1, "café".as_bytes()));
    }

    #[test]
    fn hashes_take_turns_in_order_of_arrival() {
        use std::sync::atomic::AtomicUsize;
        let turns = Arc::new(Turns::new(1));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        // The one turn taken: everyone after this waits.
        let first = turns.take();
        let mut threads = Vec::new();
        for i in 0..6 {
            let (mine, running, most, order) =
                (turns.clone(), running.clone(), most.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = mine.take();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                order.lock().push(i);
                std::thread::sleep(std::time::Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            }));
            // The next thread arrives only once this one holds its ticket.
            while turns.state.lock().waiting.len() < 1 + i {
                std::thread::yield_now();
            }
        }
        assert!(
            order.lock().is_empty(),
            "no one runs while the turn is held"
        );
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *order.lock(),
            vec![0, 1, 2, 3, 4, 5],
            "first come, first served"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "never more than the limit at once"
        );
    }

    #[test]
    fn no_more_hashes_at_once_than_the_limit() {
        use std::sync::atomic::AtomicUsize;
        let h = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            max_parallel_hashes: 2,
            ..PasswordConfig::default()
        })
        .unwrap();
        let stored = h.hash(b"pw").unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (h, stored, running, most) =
                    (h.clone(), stored.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let turn = h.turns.take();
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        running.fetch_sub(1, Ordering::SeqCst);
                        drop(turn);
                        // And the hasher's own calls still work between turns.
                        assert!(h.verify(&stored, b"pw"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Never more than the limit (whether two ever overlapped here depends on the
        // scheduler: that the limit lets two run at once is checked below, without it).
        assert!(most.load(Ordering::SeqCst) <= 2);
        let first = h.turns.take();
        let _second = h.turns.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let third = {
            let h = h.clone();
            std::thread::spawn(move || {
                let _turn = h.turns.take();
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "a third hash started while two held their turns"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("a freed turn goes to the waiting hash");
        third.join().unwrap();
    }

    #[test]
    fn garbage_hashes_never_match_and_are_not_importable() {
        let h = cheap();
        assert!(!h.verify("plaintext", b"plaintext"));
        assert!(!h.verify("$6$short", b"x"));
        assert!(h.check_importable("plaintext").is_err());
        assert!(h.check_importable("$1$abc$def").is_err());
        assert!(h
            .check_importable("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA")
            .is_err());
        let checksum = "x".repeat(86);
        // Hashes that verify could never match: refused when imported, not accepted for a
        // user who then cannot log in.
        for bad in [
            format!("$6$rounds=many$salt${checksum}"),
            format!("$6$rounds=999$salt${checksum}"),
            format!("$6$rounds=0$salt${checksum}"),
            format!("$6$a$b${checksum}"),
        ] {
            assert!(
                matches!(
                    h.check_importable(&bad),
                    Err(PasswordError::UnsupportedHash)
                ),
                "{bad}"
            );
        }
    }

    /// A SHA-512 crypt hash of `password` with `rounds` (cheap to make only for few rounds).
    fn sha512(password: &str, rounds: usize) -> String {
        let params = sha_crypt::Sha512Params::new(rounds).unwrap();
        sha_crypt::sha512_simple(password, &params).unwrap()
    }

    /// `model` (a real hash) with its cost field replaced by `cost`: the checksum no longer
    /// matches, but the cost is what verifying it would spend.
    fn with_cost(model: &str, cost: &str) -> String {
        let mut parts: Vec<&str> = model.split('$').collect();
        let at = parts.len() - 3;
        parts[at] = cost;
        parts.join("$")
    }

    #[test]
    fn hashes_over_the_cost_limits_are_not_importable_and_name_their_cost() {
        let h = cheap();
        let argon = h.hash(b"pw").unwrap();
        for cost in [
            "m=1048577,t=1,p=1",
            "m=4294967295,t=1,p=1",
            "m=1024,t=17,p=1",
            "m=1024,t=4294967295,p=1",
            "m=2048,t=1,p=17",
        ] {
            let over = with_cost(&argon, cost);
            let e = h.check_importable(&over).unwrap_err();
            assert!(
                matches!(&e, PasswordError::TooCostly { cost: c } if c == cost),
                "{over}: {e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains(cost) && text.contains("m=1048576") && text.contains("t=16"),
                "{text}"
            );
            assert!(!text.contains(over.rsplit('$').next().unwrap()), "{text}");
        }
        let six = sha512("pw", 1000);
        for rounds in [1_000_001, 999_999_999] {
            let over = six.replacen("rounds=1000", &format!("rounds={rounds}"), 1);
            let e = h.check_importable(&over).unwrap_err();
            assert!(
                e.to_string().contains(&format!("rounds={rounds}"))
                    && e.to_string().contains("rounds=1000000"),
                "{e}"
            );
        }
        // At the limits, and the usual costs, they are.
        h.check_importable(&with_cost(&argon, "m=1048576,t=16,p=16"))
            .unwrap();
        h.check_importable(&six.replacen("rounds=1000", "rounds=1000000", 1))
            .unwrap();
        h.check_importable(&six.replacen("rounds=1000$", "", 1))
            .unwrap();
    }

    #[test]
    fn hashes_over_the_cost_limits_are_neither_verified_nor_modelled() {
        let h = cheap();
        // Verifying either would take minutes (or 4 TiB of memory): the test would not end.
        let argon = with_cost(&h.hash(b"pw").unwrap(), "m=4294967295,t=1,p=1");
        let six = sha512("pw", 1000).replacen("rounds=1000", "rounds=999999999", 1);
        for stored in [&argon, &six] {
            let started = std::time::Instant::now();
            assert!(!h.verify(stored, b"pw"), "{stored}");
            assert_eq!(h.stand_in_for(stored), None, "{stored}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{stored} was computed"
            );
            assert!(h.excess_cost(stored).is_some());
        }
        assert!(h.turns.state.lock().memory.is_empty(), "no memory taken");
        // Within the limits they are verified as before.
        let six = sha512("pw", 1000);
        assert_eq!(h.excess_cost(&six), None);
        assert!(h.verify(&six, b"pw"));
        assert!(h.stand_in_for(&six).is_some());
    }

    #[test]
    fn a_configured_cost_over_the_limits_still_verifies_its_own_hashes() {
        let h = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: MAX_ARGON2_ITERATIONS + 1,
            argon2_parallelism: 1,
            ..PasswordConfig::default()
        })
        .unwrap();
        let stored = h.hash(b"pw").unwrap();
        assert_eq!(h.excess_cost(&stored), None);
        assert!(h.verify(&stored, b"pw"));
        h.check_importable(&stored).unwrap();
        // Another hasher, at the default cost, does not.
        assert!(cheap().excess_cost(&stored).is_some());
        assert!(!cheap().verify(&stored, b"pw"));
    }
}
