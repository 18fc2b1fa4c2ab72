//! Recovery codes: random, shown once, stored only as keyed hashes (HMAC-SHA256 under a
//! sub-key of the master key), each usable once.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// How many codes `recovery generate` makes.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters of one code, without the dash.
pub const RECOVERY_CODE_LEN: usize = 10;
/// Digits of an admin-issued bypass code: 9, so that it is never taken for a 6- or
/// 8-digit one-time password.
pub const BYPASS_CODE_LEN: usize = 9;

/// A new bypass code.
pub fn generate_bypass_code() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..BYPASS_CODE_LEN)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// No 0/o, 1/l/i: codes are read off paper.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A new code, as `abcde-fghjk` (about 49 bits), with at least one letter: typed without
/// its dash, a code of digits alone would be taken for a one-time password.
pub fn generate_recovery_code() -> String {
    let mut rng = rand::rngs::OsRng;
    loop {
        let mut s = String::with_capacity(RECOVERY_CODE_LEN + 1);
        for i in 0..RECOVERY_CODE_LEN {
            if i == RECOVERY_CODE_LEN / 2 {
                s.push('-');
            }
            s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
        }
        if s.bytes().any(|b| b.is_ascii_alphabetic()) {
            return s;
        }
    }
}

/// The canonical form of what a user typed, if it can be a recovery code:
/// case, dashes and spaces are forgiven.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (s.len() == RECOVERY_CODE_LEN && s.bytes().all(|b| ALPHABET.contains(&b))).then_some(s)
}

/// The stored form of a normalized recovery or bypass code (HMAC-SHA256 under a pepper).
pub fn hash_code(pepper: &[u8; 32], normalized: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(normalized.as_bytes());
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_normalize_to_themselves() {
        for _ in 0..100 {
            let c = generate_recovery_code();
            assert_eq!(c.len(), RECOVERY_CODE_LEN + 1);
            let n = normalize_recovery_code(&c).unwrap();
            assert_eq!(n, c.replace('-', ""));
            assert_eq!(normalize_recovery_code(&c.to_uppercase()).unwrap(), n);
            // Typed without its dash it is still no one-time password.
            assert!(n.bytes().any(|b| b.is_ascii_alphabetic()), "{c}");
        }
    }

    #[test]
    fn digits_only_and_wrong_lengths_are_not_recovery_codes() {
        assert!(normalize_recovery_code("123456").is_none());
        assert!(normalize_recovery_code("abcde-fghj").is_none());
        assert!(normalize_recovery_code("abcde-fghj0").is_none());
    }

    #[test]
    fn hash_depends_on_pepper() {
        assert_ne!(
            hash_code(&[1; 32], "abcdefghjk"),
            hash_code(&[2; 32], "abcdefghjk")
        );
    }
}
