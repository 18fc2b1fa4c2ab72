//! HOTP (RFC 4226) for hardware tokens: a counter with a look-ahead window and resync.
//!
//! The counter lives in the factor's params and moves forward only by a compare-and-set in
//! the store, so a code is accepted once even when two nodes see it at the same moment.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::totp::TotpAlgorithm;

/// Codes ahead of the expected counter that a login accepts (a token pressed without logging in).
pub const DEFAULT_LOOK_AHEAD: u64 = 10;
/// How far `factor resync` searches for two consecutive codes.
pub const RESYNC_WINDOW: u64 = 1000;

/// The settings and state of one HOTP factor, stored as the factor's JSON `params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotpParams {
    pub algorithm: TotpAlgorithm,
    pub digits: u8,
    /// The next counter value expected.
    pub counter: u64,
    pub look_ahead: u64,
}

fn mac_of(algorithm: TotpAlgorithm, secret: &[u8], counter: u64) -> Vec<u8> {
    let msg = counter.to_be_bytes();
    macro_rules! run {
        ($h:ty) => {{
            let mut m = <Hmac<$h> as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }};
    }
    match algorithm {
        TotpAlgorithm::SHA1 => run!(sha1::Sha1),
        TotpAlgorithm::SHA256 => run!(sha2::Sha256),
        TotpAlgorithm::SHA512 => run!(sha2::Sha512),
    }
}

/// The code for `counter` (RFC 4226 §5.3 dynamic truncation).
pub fn generate(secret: &[u8], algorithm: TotpAlgorithm, digits: u8, counter: u64) -> String {
    let mac = mac_of(algorithm, secret, counter);
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let bin = ((mac[offset] as u32 & 0x7f) << 24)
        | ((mac[offset + 1] as u32) << 16)
        | ((mac[offset + 2] as u32) << 8)
        | mac[offset + 3] as u32;
    let value = bin % 10u32.pow(digits as u32);
    format!("{value:0width$}", width = digits as usize)
}

fn matches(secret: &[u8], p: &HotpParams, counter: u64, code: &str) -> bool {
    generate(secret, p.algorithm, p.digits, counter)
        .as_bytes()
        .ct_eq(code.as_bytes())
        .into()
}

/// The highest counter a code may match: the factor stores the counter after it (and a
/// resync the one after that), which must not wrap around to 0 and make every old code
/// valid again.
const LAST_COUNTER: u64 = u64::MAX - 2;

/// The counter that `code` matches within the look-ahead window, if any.
pub fn find(secret: &[u8], p: &HotpParams, code: &str) -> Option<u64> {
    if code.len() != p.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let last = p.counter.saturating_add(p.look_ahead).min(LAST_COUNTER);
    (p.counter..=last).find(|&c| matches(secret, p, c, code))
}

/// Whether `code` matches one of the `look_ahead` counters just behind the expected one:
/// a code already used, or passed over by a later one.
pub fn passed(secret: &[u8], p: &HotpParams, code: &str) -> bool {
    if code.len() != p.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    (p.counter.saturating_sub(p.look_ahead)..p.counter).any(|c| matches(secret, p, c, code))
}

/// Resync: the counter after two consecutive codes found within [`RESYNC_WINDOW`].
pub fn resync(secret: &[u8], p: &HotpParams, first: &str, second: &str) -> Option<u64> {
    let wide = HotpParams {
        look_ahead: RESYNC_WINDOW,
        ..*p
    };
    let c = find(secret, &wide, first)?;
    matches(secret, p, c + 1, second).then_some(c + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn a_counter_at_the_end_of_its_range_matches_nothing_rather_than_wrap() {
        for counter in [u64::MAX - 1, u64::MAX] {
            let p = params(counter);
            let code = generate(SECRET, p.algorithm, p.digits, counter);
            assert_eq!(find(SECRET, &p, &code), None, "counter {counter}");
        }
        let p = params(u64::MAX - 3);
        let code = generate(SECRET, p.algorithm, p.digits, u64::MAX - 2);
        assert_eq!(find(SECRET, &p, &code), Some(u64::MAX - 2));
        let next = generate(SECRET, p.algorithm, p.digits, u64::MAX - 1);
        assert_eq!(resync(SECRET, &p, &code, &next), Some(u64::MAX));
    }

    #[test]
    fn codes_just_behind_the_counter_have_passed_others_have_not() {
        let p = params(20);
        let code = |c| generate(SECRET, p.algorithm, p.digits, c);
        assert!(passed(SECRET, &p, &code(19)));
        assert!(passed(SECRET, &p, &code(10)));
        for c in [9, 20, 21] {
            assert!(!passed(SECRET, &p, &code(c)), "counter {c}");
        }
        assert!(!passed(SECRET, &params(0), &code(0)));
    }

    fn params(counter: u64) -> HotpParams {
        HotpParams {
            algorithm: TotpAlgorithm::SHA1,
            digits: 6,
            counter,
            look_ahead: DEFAULT_LOOK_AHEAD,
        }
    }

    #[test]
    fn rfc4226_appendix_d_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (c, code) in expected.iter().enumerate() {
            assert_eq!(generate(SECRET, TotpAlgorithm::SHA1, 6, c as u64), *code);
        }
    }

    #[test]
    fn look_ahead_finds_codes_ahead_but_not_behind_or_too_far() {
        assert_eq!(find(SECRET, &params(0), "755224"), Some(0));
        assert_eq!(find(SECRET, &params(0), "520489"), Some(9));
        assert_eq!(find(SECRET, &params(1), "755224"), None, "a used code");
        let mut p = params(0);
        p.look_ahead = 2;
        assert_eq!(find(SECRET, &p, "969429"), None, "beyond the window");
        assert_eq!(find(SECRET, &params(0), "75522"), None);
    }

    #[test]
    fn resync_needs_two_consecutive_codes() {
        let c500 = generate(SECRET, TotpAlgorithm::SHA1, 6, 500);
        let c501 = generate(SECRET, TotpAlgorithm::SHA1, 6, 501);
        let c502 = generate(SECRET, TotpAlgorithm::SHA1, 6, 502);
        assert_eq!(resync(SECRET, &params(0), &c500, &c501), Some(502));
        assert_eq!(resync(SECRET, &params(0), &c500, &c502), None);
    }
}
