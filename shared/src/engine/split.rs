//! `append` mode: where the password ends and the code begins.
//!
//! The candidates depend only on the typed string, never on the user, so that an unknown
//! user costs as many password checks as a known one (no enumeration by timing). There are
//! at most [`MAX_READINGS`] of them: with the whole string as a password after them, one
//! request checks at most [`MAX_PASSWORD_CHECKS`] passwords, and each one refused counts
//! against the source's limit of wrong passwords. Only their order follows the user
//! ([`prefer_code_lengths`]): a good login then checks no wrong reading first, which a
//! directory would count towards the account's lockout.

use zeroize::Zeroizing;

use crate::codes::{normalize_recovery_code, RECOVERY_CODE_LEN};
use crate::engine::oob::SENT_CODE_LEN;
use crate::hotp::HotpParams;
use crate::model::{Factor, FactorKind, FactorState};
use crate::totp::TotpParams;

/// One way to read `password` + code.
pub struct Candidate {
    pub password: Zeroizing<Vec<u8>>,
    pub code: Zeroizing<String>,
}

/// The most readings of one credential that are tried (the most specific ones).
pub const MAX_READINGS: usize = 3;

/// The most passwords one `append` request checks: its readings, then the whole string.
pub const MAX_PASSWORD_CHECKS: usize = MAX_READINGS + 1;

/// Code lengths tried as a digit suffix: 6- and 8-digit one-time passwords, 9-digit bypass codes.
const CODE_LENGTHS: [usize; 3] = [6, 8, 9];

/// The readings of `credential`, most specific first: `password<delim>code`, then a 6-,
/// 8- or 9-digit suffix, then a recovery-code suffix (with or without its dash); the first
/// [`MAX_READINGS`] of them.
pub fn append_candidates(credential: &[u8], delimiter: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut push = |pw: &[u8], code: &[u8]| {
        if pw.is_empty() {
            return;
        }
        if let Ok(code) = std::str::from_utf8(code) {
            out.push(Candidate {
                password: Zeroizing::new(pw.to_vec()),
                code: Zeroizing::new(code.to_string()),
            });
        }
    };
    let delim = delimiter.as_bytes();
    if !delim.is_empty() {
        if let Some(pos) = rfind(credential, delim) {
            let code = &credential[pos + delim.len()..];
            if is_code_shaped(code) {
                push(&credential[..pos], code);
            }
        }
    }
    for len in CODE_LENGTHS {
        if credential.len() > len {
            let (pw, code) = credential.split_at(credential.len() - len);
            if code.iter().all(u8::is_ascii_digit) {
                push(pw, code);
            }
        }
    }
    for len in [RECOVERY_CODE_LEN, RECOVERY_CODE_LEN + 1] {
        if credential.len() > len {
            let (pw, code) = credential.split_at(credential.len() - len);
            if std::str::from_utf8(code)
                .ok()
                .and_then(normalize_recovery_code)
                .is_some()
                && (len == RECOVERY_CODE_LEN || code.get(RECOVERY_CODE_LEN / 2) == Some(&b'-'))
            {
                push(pw, code);
            }
        }
    }
    out.truncate(MAX_READINGS);
    out
}

/// The lengths of the codes `factors` make (their confirmed TOTP and HOTP factors' digits,
/// the sent codes of SMS and e-mail factors).
pub fn code_lengths(factors: &[Factor]) -> Vec<usize> {
    factors
        .iter()
        .filter(|f| f.state == FactorState::Confirmed)
        .filter_map(|f| match f.kind {
            FactorKind::Totp => serde_json::from_str::<TotpParams>(&f.params)
                .ok()
                .map(|p| usize::from(p.digits)),
            FactorKind::Hotp => serde_json::from_str::<HotpParams>(&f.params)
                .ok()
                .map(|p| usize::from(p.digits)),
            FactorKind::Sms | FactorKind::Email => Some(SENT_CODE_LEN),
            FactorKind::Push => None,
        })
        .collect()
}

/// Puts the readings whose code is digits of one of `lengths` first, keeping the order
/// otherwise: `Winter2024` + an 8-digit code is then not first tried as the password
/// `Winter202412` with a 6-digit code. Nothing moves when `lengths` is empty.
pub fn prefer_code_lengths(candidates: &mut [Candidate], lengths: &[usize]) {
    if lengths.is_empty() {
        return;
    }
    candidates.sort_by_key(|c| {
        let fits = c.code.bytes().all(|b| b.is_ascii_digit()) && lengths.contains(&c.code.len());
        !fits
    });
}

/// Names of out-of-band factors a user may type after the delimiter (`hunter2,push`).
const FACTOR_WORDS: [&str; 4] = ["push", "phone", "sms", "email"];

/// Whether `code` names a factor or method (`push`, `phone`, `sms`, `email`) instead of
/// being a code.
pub fn is_factor_word(code: &str) -> bool {
    FACTOR_WORDS.iter().any(|w| code.eq_ignore_ascii_case(w))
}

fn is_code_shaped(code: &[u8]) -> bool {
    if std::str::from_utf8(code).is_ok_and(is_factor_word) {
        return true;
    }
    let digits = CODE_LENGTHS.contains(&code.len()) && code.iter().all(u8::is_ascii_digit);
    digits
        || std::str::from_utf8(code)
            .ok()
            .and_then(normalize_recovery_code)
            .is_some()
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(s: &str) -> Vec<(String, String)> {
        append_candidates(s.as_bytes(), ",")
            .into_iter()
            .map(|c| {
                (
                    String::from_utf8(c.password.to_vec()).unwrap(),
                    c.code.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn six_digit_suffix() {
        assert_eq!(
            readings("hunter2123456"),
            [("hunter2".into(), "123456".into())]
        );
    }

    #[test]
    fn eight_digit_suffix_also_offers_six() {
        let r = readings("pw12345678");
        assert_eq!(r[0], ("pw12".into(), "345678".into()));
        assert_eq!(r[1], ("pw".into(), "12345678".into()));
    }

    #[test]
    fn delimiter_comes_first_and_password_may_contain_it() {
        let r = readings("a,b,123456");
        assert_eq!(r[0], ("a,b".into(), "123456".into()));
        assert_eq!(r[1], ("a,b,".into(), "123456".into()));
    }

    #[test]
    fn recovery_code_suffix() {
        let r = readings("hunter2abcde-fghjk");
        assert_eq!(r, [("hunter2".into(), "abcde-fghjk".into())]);
        let r = readings("hunter2,abcdefghjk");
        assert_eq!(r[0], ("hunter2".into(), "abcdefghjk".into()));
    }

    #[test]
    fn method_keywords_follow_the_delimiter() {
        for kw in ["sms", "email", "push", "phone", "PUSH"] {
            assert_eq!(
                readings(&format!("pw,{kw}")),
                [("pw".into(), kw.into())],
                "{kw}"
            );
        }
        assert!(readings("pwpush").is_empty(), "keywords need the delimiter");
    }

    #[test]
    fn factor_word_after_the_delimiter() {
        assert_eq!(
            readings("hunter2,push"),
            [("hunter2".into(), "push".into())]
        );
        assert_eq!(readings("hunter2,SMS"), [("hunter2".into(), "SMS".into())]);
        assert!(
            readings("hunter2push").iter().all(|(_, c)| c != "push"),
            "words need the delimiter"
        );
    }

    #[test]
    fn at_most_three_readings_the_most_specific_first() {
        // Delimiter, 6-, 8-, 9-digit suffix and a recovery-code suffix: five readings.
        assert_eq!(
            readings("pw,2345678923"),
            [
                ("pw".into(), "2345678923".into()),
                ("pw,2345".into(), "678923".into()),
                ("pw,23".into(), "45678923".into()),
            ]
        );
        assert_eq!(readings("Winter123456789").len(), MAX_READINGS);
        assert_eq!(MAX_PASSWORD_CHECKS, 4);
    }

    #[test]
    fn no_code_no_candidates() {
        assert!(readings("justapassword").is_empty());
        assert!(
            readings("123456").is_empty(),
            "a code alone has no password"
        );
    }

    #[test]
    fn the_users_code_length_is_tried_first_and_the_readings_stay_the_strings() {
        let order = |s: &str, lengths: &[usize]| {
            let mut c = append_candidates(s.as_bytes(), ",");
            prefer_code_lengths(&mut c, lengths);
            c.into_iter()
                .map(|c| String::from_utf8(c.password.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        let s = "Winter202412345678";
        assert_eq!(order(s, &[]), ["Winter202412", "Winter2024", "Winter202"]);
        assert_eq!(order(s, &[8]), ["Winter2024", "Winter202412", "Winter202"]);
        assert_eq!(
            order(s, &[6, 8]),
            ["Winter202412", "Winter2024", "Winter202"]
        );
        assert_eq!(order(s, &[9]), ["Winter202", "Winter202412", "Winter2024"]);
        // A recovery-code reading is not moved before a fitting one, nor dropped.
        let mut c = append_candidates(b"pw,ABCD-EFGH", ",");
        let n = c.len();
        prefer_code_lengths(&mut c, &[6]);
        assert_eq!(c.len(), n);
    }
}
