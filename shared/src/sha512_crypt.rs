//! SHA-512 crypt (`$6$`, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512", as glibc
//! and libxcrypt implement it) on ring's SHA-512.
//!
//! Imported `/etc/shadow` hashes are verified here on every password login that has one, and
//! 5000 rounds of SHA-512 are most of such a login's CPU. ring's SHA-512 (assembly with
//! AVX2 where the CPU has it) does the rounds in about 85% of the time of the portable
//! `sha2` crate that the `sha-crypt` crate builds on (measured side by side on the 2-core
//! machine: 2.7 ms against 3.2 ms per 5000-round hash), and the algorithm is short enough
//! to keep here, checked against the specification's vectors, OpenSSL's `passwd -6` and the
//! `sha-crypt` crate (see the tests).

use ring::digest::{Context, SHA512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Rounds when the hash names none.
pub const ROUNDS_DEFAULT: usize = 5000;
/// The fewest rounds a hash may name (glibc raises fewer to this; here such a hash is
/// malformed, as the `sha-crypt` crate reads it).
pub const ROUNDS_MIN: usize = 1000;
/// The most rounds the format allows.
pub const ROUNDS_MAX: usize = 999_999_999;
/// The salt's longest length: longer salts are cut to it, as glibc does.
pub const SALT_MAX: usize = 16;

/// crypt(3)'s base-64 alphabet.
const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The digest's bytes in the order the encoding takes them, three at a time (the last one
/// alone), as the specification lists them.
const ORDER: [[usize; 3]; 21] = [
    [0, 21, 42],
    [22, 43, 1],
    [44, 2, 23],
    [3, 24, 45],
    [25, 46, 4],
    [47, 5, 26],
    [6, 27, 48],
    [28, 49, 7],
    [50, 8, 29],
    [9, 30, 51],
    [31, 52, 10],
    [53, 11, 32],
    [12, 33, 54],
    [34, 55, 13],
    [56, 14, 35],
    [15, 36, 57],
    [37, 58, 16],
    [59, 17, 38],
    [18, 39, 60],
    [40, 61, 19],
    [62, 20, 41],
];

/// The parts of a `$6$[rounds=N$]salt$checksum` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub rounds: usize,
    /// Whether the string names its rounds (then the output names them too).
    pub named_rounds: bool,
    /// At most [`SALT_MAX`] bytes (a longer salt is cut).
    pub salt: &'a [u8],
    pub checksum: &'a str,
}

/// Reads a `$6$` hash as the `sha-crypt` crate does: `rounds=` must be a number within
/// [`ROUNDS_MIN`]..=[`ROUNDS_MAX`], and nothing may follow the checksum. `None` when it is
/// malformed (it then matches no password).
pub fn parse(stored: &str) -> Option<Parsed<'_>> {
    let rest = stored.strip_prefix("$6$")?;
    let mut fields = rest.split('$');
    let mut salt = fields.next()?;
    let mut rounds = ROUNDS_DEFAULT;
    let mut named_rounds = false;
    if let Some(n) = salt.strip_prefix("rounds=") {
        rounds = n.parse().ok()?;
        named_rounds = true;
        salt = fields.next()?;
    }
    let checksum = fields.next()?;
    if fields.next().is_some() || !(ROUNDS_MIN..=ROUNDS_MAX).contains(&rounds) {
        return None;
    }
    let salt = &salt.as_bytes()[..salt.len().min(SALT_MAX)];
    Some(Parsed {
        rounds,
        named_rounds,
        salt,
        checksum,
    })
}

/// Whether `password` matches the `$6$` hash `stored` (compared in constant time). A
/// malformed hash matches nothing.
pub fn verify(password: &[u8], stored: &str) -> bool {
    let Some(p) = parse(stored) else {
        return false;
    };
    let computed = Zeroizing::new(encode(&digest(password, p.salt, p.rounds)));
    computed.len() == p.checksum.len() && bool::from(computed.ct_eq(p.checksum.as_bytes()))
}

/// The full `$6$` string of `password` with `salt` (ASCII without `$`, cut to [`SALT_MAX`]
/// bytes) and `rounds` (named in the string unless they are the default). `None` when the
/// rounds are out of range or the salt is not such text.
pub fn hash(password: &[u8], salt: &[u8], rounds: usize) -> Option<String> {
    if !(ROUNDS_MIN..=ROUNDS_MAX).contains(&rounds) || salt.contains(&b'$') || !salt.is_ascii() {
        return None;
    }
    let salt = &salt[..salt.len().min(SALT_MAX)];
    let checksum = encode(&digest(password, salt, rounds));
    let salt = String::from_utf8_lossy(salt);
    Some(if rounds == ROUNDS_DEFAULT {
        format!("$6${salt}${}", String::from_utf8_lossy(&checksum[..]))
    } else {
        format!(
            "$6$rounds={rounds}${salt}${}",
            String::from_utf8_lossy(&checksum[..])
        )
    })
}

fn sha512(parts: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    let mut c = Context::new(&SHA512);
    for p in parts {
        c.update(p);
    }
    finish(c)
}

fn finish(c: Context) -> Zeroizing<[u8; 64]> {
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// `len` bytes of `digest` repeated (the specification's P and S sequences).
fn repeat(digest: &[u8; 64], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    while out.len() < len {
        let take = (len - out.len()).min(64);
        out.extend_from_slice(&digest[..take]);
    }
    out
}

/// The 64-byte result of the specification's steps 1-21 (`salt` already cut).
fn digest(password: &[u8], salt: &[u8], rounds: usize) -> Zeroizing<[u8; 64]> {
    let p = password;
    // Steps 4-8: digest B.
    let b = sha512(&[p, salt, p]);
    // Steps 1-3, 9-12: digest A.
    let mut a = Context::new(&SHA512);
    a.update(p);
    a.update(salt);
    let mut left = p.len();
    while left > 64 {
        a.update(&b[..]);
        left -= 64;
    }
    a.update(&b[..left]);
    let mut bits = p.len();
    while bits > 0 {
        if bits & 1 == 1 {
            a.update(&b[..]);
        } else {
            a.update(p);
        }
        bits >>= 1;
    }
    let a = finish(a);
    // Steps 13-16: the P sequence, from digest DP of the password repeated once per byte.
    let mut dp = Context::new(&SHA512);
    for _ in 0..p.len() {
        dp.update(p);
    }
    let p_seq = repeat(&finish(dp), p.len());
    // Steps 17-20: the S sequence, from digest DS of the salt repeated 16 + A[0] times.
    let mut ds = Context::new(&SHA512);
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let s_seq = repeat(&finish(ds), salt.len());
    // Step 21: the rounds.
    let mut c = a;
    for i in 0..rounds {
        let mut r = Context::new(&SHA512);
        if i % 2 == 1 {
            r.update(&p_seq);
        } else {
            r.update(&c[..]);
        }
        if i % 3 != 0 {
            r.update(&s_seq);
        }
        if i % 7 != 0 {
            r.update(&p_seq);
        }
        if i % 2 == 1 {
            r.update(&c[..]);
        } else {
            r.update(&p_seq);
        }
        c.copy_from_slice(r.finish().as_ref());
    }
    c
}

/// Step 22: the 86 characters of the checksum.
fn encode(digest: &[u8; 64]) -> Zeroizing<[u8; 86]> {
    let mut out = Zeroizing::new([0u8; 86]);
    let mut at = 0;
    let mut put = |mut w: u32, n: usize| {
        for _ in 0..n {
            out[at] = ALPHABET[(w & 0x3f) as usize];
            at += 1;
            w >>= 6;
        }
    };
    for [x, y, z] in ORDER {
        put(
            u32::from(digest[x]) << 16 | u32::from(digest[y]) << 8 | u32::from(digest[z]),
            4,
        );
    }
    put(u32::from(digest[63]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own vectors for SHA-512 (akkadia.org/drepper/SHA-crypt.txt),
    /// each also made by OpenSSL 3's `openssl passwd -6` where it accepts the setting.
    const SPEC: &[(&str, &str, &str)] = &[
        (
            "$6$saltstring",
            "Hello world!",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
        ),
        (
            "$6$rounds=10000$saltstringsaltstring",
            "Hello world!",
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
        ),
        (
            "$6$rounds=5000$toolongsaltstring",
            "This is just a test",
            "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
        ),
        (
            "$6$rounds=1400$anotherlongsaltstring",
            "a very much longer text to encrypt.  This one even stretches over morethan one line.",
            "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
        ),
        (
            "$6$rounds=77777$short",
            "we have a short salt string but not a short password",
            "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0",
        ),
        (
            "$6$rounds=123456$asaltof16chars..",
            "a short string",
            "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
        ),
    ];

    /// Made by the system's libxcrypt (what glibc's crypt(3) and FreeRADIUS's `pap` use),
    /// through Python's `crypt` module: a password past two SHA-512 blocks with a byte
    /// that is not ASCII, and the empty password.
    const LIBXCRYPT: &[(&str, &[u8], &str)] = &[
        (
            "$6$rounds=1000$XyZ.09/abcdEFGHI",
            "ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppé".as_bytes(),
            "$6$rounds=1000$XyZ.09/abcdEFGHI$G1NB/b2Nh9tJWK/2NBv5aa5oRy3nE1Pql9ZcDgzPZYXcRopPim4lERP9qclnMIo7OKDYbCpBPwaHmruPKT5BA.",
        ),
        (
            "$6$emptypw",
            b"",
            "$6$emptypw$TWmzQ8/uLn1BFSZ5Lkfum8lAba5vixF9Nl3Aiof.Praatq9nh0kkPuTdoVrIL6du0L6LAoadbPq.q.D7keveg/",
        ),
    ];

    fn setting(s: &str) -> (usize, &[u8]) {
        let rest = s.strip_prefix("$6$").unwrap();
        match rest.strip_prefix("rounds=") {
            Some(r) => {
                let (n, salt) = r.split_once('$').unwrap();
                (n.parse().unwrap(), salt.as_bytes())
            }
            None => (ROUNDS_DEFAULT, rest.as_bytes()),
        }
    }

    #[test]
    fn the_specification_vectors_hash_and_verify() {
        for (set, password, expected) in SPEC {
            let (rounds, salt) = setting(set);
            let made = hash(password.as_bytes(), salt, rounds).unwrap();
            // The specification names "rounds=5000" when the setting did; this module, as
            // the sha-crypt crate, leaves the default out. Both verify.
            let expected_here = expected.replace("$rounds=5000$", "$");
            assert_eq!(made, expected_here, "{set}");
            assert!(verify(password.as_bytes(), expected), "{set}");
            assert!(!verify(b"Hello world?", expected), "{set}");
        }
        for (set, password, expected) in LIBXCRYPT {
            let (rounds, salt) = setting(set);
            assert_eq!(hash(password, salt, rounds).unwrap(), *expected, "{set}");
            assert!(verify(password, expected), "{set}");
        }
    }

    #[test]
    fn it_agrees_with_the_sha_crypt_crate_on_random_inputs() {
        use rand::{Rng, RngCore};
        let mut rng = rand::thread_rng();
        // Lengths around the 64- and 128-byte edges of SHA-512's blocks and of the
        // specification's loops, salts of every length up to and past 16.
        for case in 0..60 {
            let len = [0, 1, 7, 63, 64, 65, 100, 127, 128, 129, 200][case % 11];
            let mut password = vec![0u8; len];
            for b in &mut password {
                *b = rng.gen_range(b' '..=b'~');
            }
            let salt: Vec<u8> = (0..rng.gen_range(0..=20))
                .map(|_| ALPHABET[rng.gen_range(0..64)])
                .collect();
            let rounds = [1000, 1001, 1234, 5000][case % 4];
            let ours = hash(&password, &salt, rounds).unwrap();
            let params = sha_crypt::Sha512Params::new(rounds).unwrap();
            let theirs = sha_crypt::sha512_crypt_b64(&password, &salt, &params).unwrap();
            assert!(ours.ends_with(&format!("${theirs}")), "{ours} vs {theirs}");
            let text = std::str::from_utf8(&password).unwrap();
            assert!(sha_crypt::sha512_check(text, &ours).is_ok(), "{ours}");
            assert!(verify(&password, &ours));
            password.push(b'x');
            assert!(!verify(&password, &ours));
        }
        // Bytes that are not UTF-8 hash as bytes (glibc takes them; the crate's check
        // takes only text).
        let mut raw = [0u8; 24];
        rng.fill_bytes(&mut raw);
        let ours = hash(&raw, b"rawbytes", 1000).unwrap();
        let params = sha_crypt::Sha512Params::new(1000).unwrap();
        let theirs = sha_crypt::sha512_crypt_b64(&raw, b"rawbytes", &params).unwrap();
        assert!(ours.ends_with(&theirs));
        assert!(verify(&raw, &ours));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        let good = hash(b"pw", b"salt", 1000).unwrap();
        assert!(verify(b"pw", &good));
        let checksum = good.rsplit('$').next().unwrap();
        for bad in [
            format!("$6$rounds=999$salt${checksum}"),
            format!("$6$rounds=1000000000$salt${checksum}"),
            format!("$6$rounds=x$salt${checksum}"),
            format!("$6$rounds=1000$salt${checksum}$"),
            format!("$6$rounds=1000$salt${}", &checksum[..85]),
            format!("$6$rounds=1000$salt${checksum}."),
            format!("$5$rounds=1000$salt${checksum}"),
            "$6$rounds=1000$salt".to_string(),
            "$6$".to_string(),
            String::new(),
        ] {
            assert!(!verify(b"pw", &bad), "{bad}");
        }
        assert_eq!(hash(b"pw", b"sa$lt", 5000), None);
        assert_eq!(hash(b"pw", "sälz".as_bytes(), 5000), None);
        assert_eq!(hash(b"pw", b"salt", 999), None);
    }
}
