//! TOTP (RFC 6238): HOTP ([`crate::hotp`]) of the time step; SHA1/256/512, 6 or 8 digits,
//! 30 s steps, a configurable window. Returns the matched time step so that the caller can
//! refuse a replay of the same step (the replay cache lives in the store).

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::clock::UnixTime;
use crate::hotp;

/// The hash of a TOTP factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TotpAlgorithm {
    #[default]
    SHA1,
    SHA256,
    SHA512,
}

impl TotpAlgorithm {
    /// Parse `SHA1`, `sha256`, ...
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Some(Self::SHA1),
            "SHA256" => Some(Self::SHA256),
            "SHA512" => Some(Self::SHA512),
            _ => None,
        }
    }

    /// The name in otpauth URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SHA1 => "SHA1",
            Self::SHA256 => "SHA256",
            Self::SHA512 => "SHA512",
        }
    }
}

/// The settings of one TOTP factor, stored as the factor's JSON `params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpParams {
    pub algorithm: TotpAlgorithm,
    pub digits: u8,
    pub period: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::SHA1,
            digits: 6,
            period: 30,
        }
    }
}

/// Length of a newly generated secret in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_LEN: usize = 20;

/// A fresh random secret.
pub fn generate_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s
}

/// Decode a base32 secret as authenticator apps show it (case, spaces and padding forgiven).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .ok()?;
    // Below 80 bits a secret is too weak to accept, even for migration.
    (bytes.len() >= 10).then_some(bytes)
}

/// Base32 without padding, as otpauth URIs carry it.
pub fn encode_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The widest `[totp] window` the configuration accepts (steps either side of now).
pub const MAX_WINDOW: u8 = 10;

/// When the replay-cache row of a used `step` may go: once no window the configuration
/// accepts can reach that step any more. A function of the factor (its period) and the
/// step alone, never of the window in force: the row's key in the store starts with it,
/// so one step of one factor always has the same key (see `Store::use_otp`).
pub fn replay_expiry(step: u64, period: u64) -> UnixTime {
    let steps = step.saturating_add(MAX_WINDOW as u64 + 2);
    UnixTime::try_from(steps.saturating_mul(period)).unwrap_or(UnixTime::MAX)
}

/// If `code` is valid for `secret` at `now` within `window` steps either side, the matched step.
///
/// The step of `now` is tried first, then the nearest ones: a code that happens to equal a
/// neighbouring step's code too (about 1 in 10^digits) is the current step's code, and must
/// not be taken for the neighbour's (which may have been used: a false "replayed").
pub fn verify(
    secret: &[u8],
    params: &TotpParams,
    code: &str,
    now: UnixTime,
    window: u8,
) -> Option<u64> {
    if code.len() != params.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Dynamic truncation keeps 31 bits: more than 9 digits cannot be made.
    if params.period == 0 || params.digits > 9 {
        return None;
    }
    let origin = u64::try_from(now).ok()? / params.period;
    let window = u64::from(window);
    std::iter::once(origin)
        .chain(
            (1..=window)
                .flat_map(|d| [origin.checked_sub(d), origin.checked_add(d)])
                .flatten(),
        )
        .find(|&step| {
            let expected = hotp::generate(secret, params.algorithm, params.digits, step);
            bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        })
}

/// The code for `secret` at `now` (for tests and tools).
pub fn generate(secret: &[u8], params: &TotpParams, now: UnixTime) -> String {
    let step = u64::try_from(now).unwrap_or(0) / params.period.max(1);
    hotp::generate(secret, params.algorithm, params.digits.min(9), step)
}

/// The `otpauth://totp/...` URI that authenticator apps scan.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8], params: &TotpParams) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        percent_encode(issuer, b""),
        percent_encode(account, b""),
        encode_base32(secret),
        percent_encode(issuer, b""),
        params.algorithm.as_str(),
        params.digits,
        params.period
    )
}

/// `%XX` escapes for a URI part: every byte but ASCII letters, digits, `-._~` and the
/// bytes of `keep` (the config's `sslrootcert=` rewrite keeps `/`).
pub(crate) fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_equal_to_the_previous_steps_is_this_steps() {
        // Found by the benchmark: this secret has the same code in two consecutive steps.
        let secret = decode_base32("4ZXX22EHU2Q7DYALQ7TSW33DYDUXSB5N").unwrap();
        let p = TotpParams::default();
        assert_eq!(generate(&secret, &p, 1795443630), "360198");
        assert_eq!(generate(&secret, &p, 1795443660), "360198");
        assert_eq!(
            verify(&secret, &p, "360198", 1795443665, 1),
            Some(1795443660 / 30)
        );
        assert_eq!(
            verify(&secret, &p, "360198", 1795443635, 1),
            Some(1795443630 / 30)
        );
        // The neighbours are still accepted.
        assert_eq!(
            verify(&secret, &p, "542364", 1795443635, 1),
            Some(1795443600 / 30)
        );
        assert_eq!(
            verify(&secret, &p, "774450", 1795443665, 1),
            Some(1795443690 / 30)
        );
        assert_eq!(verify(&secret, &p, "774450", 1795443665, 0), None);
    }

    // RFC 6238 Appendix B secrets and vectors.
    const SEED1: &[u8] = b"12345678901234567890";
    const SEED256: &[u8] = b"12345678901234567890123456789012";
    const SEED512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn p(algorithm: TotpAlgorithm) -> TotpParams {
        TotpParams {
            algorithm,
            digits: 8,
            period: 30,
        }
    }

    #[test]
    fn rfc6238_vectors() {
        let cases = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in cases {
            assert_eq!(
                verify(SEED1, &p(TotpAlgorithm::SHA1), c1, t, 0),
                Some((t / 30) as u64)
            );
            assert_eq!(
                verify(SEED256, &p(TotpAlgorithm::SHA256), c256, t, 0),
                Some((t / 30) as u64)
            );
            assert_eq!(
                verify(SEED512, &p(TotpAlgorithm::SHA512), c512, t, 0),
                Some((t / 30) as u64)
            );
        }
    }

    #[test]
    fn window_accepts_one_step_either_side_and_no_more() {
        let params = TotpParams::default();
        let now = 1_700_000_000;
        let code_prev = generate(SEED1, &params, now - 30);
        let code_next = generate(SEED1, &params, now + 30);
        let code_old = generate(SEED1, &params, now - 90);
        assert_eq!(
            verify(SEED1, &params, &code_prev, now, 1),
            Some((now as u64 / 30) - 1)
        );
        assert_eq!(
            verify(SEED1, &params, &code_next, now, 1),
            Some((now as u64 / 30) + 1)
        );
        assert_eq!(verify(SEED1, &params, &code_prev, now, 0), None);
        assert_eq!(verify(SEED1, &params, &code_old, now, 1), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        let params = TotpParams::default();
        for code in ["", "12345", "1234567", "12a456", " 123456", "１２３４５６"] {
            assert_eq!(verify(SEED1, &params, code, 59, 1), None, "{code:?}");
        }
    }

    #[test]
    fn base32_input_is_forgiving_but_not_weak() {
        let s = encode_base32(SEED1);
        assert_eq!(decode_base32(&s.to_lowercase()).unwrap(), SEED1);
        assert_eq!(
            decode_base32("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").unwrap(),
            SEED1
        );
        assert!(decode_base32("GEZDGNBV").is_none());
        assert!(decode_base32("not base32!").is_none());
    }

    #[test]
    fn uri_escapes_names() {
        let uri = otpauth_uri("Acme VPN", "alice@acme", SEED1, &TotpParams::default());
        assert!(
            uri.starts_with("otpauth://totp/Acme%20VPN:alice%40acme?secret="),
            "{uri}"
        );
        assert!(uri.contains("digits=6") && uri.contains("algorithm=SHA1"));
    }
}
