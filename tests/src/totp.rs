//! TOTP codes from `oathtool`, an implementation independent of ours.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::tools::require_tool;

/// The HMAC of a TOTP factor, spelled as the CLI's `--algorithm` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// `SHA1`, `SHA256`, `SHA512`.
    pub fn cli_name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// The `--totp[=MODE]` argument of oathtool.
    fn oathtool_flag(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "--totp",
            Algorithm::Sha256 => "--totp=sha256",
            Algorithm::Sha512 => "--totp=sha512",
        }
    }
}

/// 20 random bytes in RFC 4648 base32 without padding (32 characters).
pub fn random_base32_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// The TOTP code of `secret_b32` for the step `offset_steps` away from now (30 s steps).
pub fn oathtool_totp(
    secret_b32: &str,
    digits: u32,
    algorithm: Algorithm,
    offset_steps: i64,
) -> String {
    oathtool_totp_at(
        secret_b32,
        digits,
        algorithm,
        now_unix() + offset_steps * 30,
    )
}

/// The TOTP code of `secret_b32` at the Unix time `unix_time`.
pub fn oathtool_totp_at(
    secret_b32: &str,
    digits: u32,
    algorithm: Algorithm,
    unix_time: i64,
) -> String {
    let oathtool = require_tool("oathtool", "oathtool");
    let out = Command::new(oathtool)
        .arg(algorithm.oathtool_flag())
        .arg("-b")
        .arg("-d")
        .arg(digits.to_string())
        .arg("--now")
        .arg(format!("@{unix_time}"))
        .arg(secret_b32)
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).expect("oathtool output is UTF-8");
    let code = code.trim().to_string();
    assert!(
        code.len() == digits as usize && code.bytes().all(|b| b.is_ascii_digit()),
        "unexpected oathtool output {code:?}"
    );
    code
}

/// A well-formed code that is definitely wrong now: not the code of any step within
/// +-3 steps of the current time (the server accepts +-1).
pub fn wrong_totp(secret_b32: &str, digits: u32, algorithm: Algorithm) -> String {
    let now = now_unix();
    let near: Vec<String> = (-3..=3)
        .map(|k| oathtool_totp_at(secret_b32, digits, algorithm, now + k * 30))
        .collect();
    // Start from the code of 2000-01-01 00:00:00 UTC and step until it differs from all.
    let modulus = 10u64.pow(digits);
    let mut value: u64 = oathtool_totp_at(secret_b32, digits, algorithm, 946_684_800)
        .parse()
        .expect("digits");
    loop {
        let candidate = format!("{value:0width$}", width = digits as usize);
        if !near.contains(&candidate) {
            return candidate;
        }
        value = (value + 1) % modulus;
    }
}
