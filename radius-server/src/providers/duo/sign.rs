//! Duo request signing, v2 canonicalisation (pure; the reference's vectors are unit tests).

use hmac::{Hmac, Mac};

/// RFC 3986 unreserved characters stay; everything else is %XX (space is %20).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parameters sorted by key, values sorted within a key, `k=v` joined by `&`.
pub fn canonical_params(params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical string of a request.
pub fn canonical(
    date: &str,
    method: &str,
    host: &str,
    path: &str,
    params: &[(&str, &str)],
) -> String {
    format!(
        "{date}\n{}\n{}\n{path}\n{}",
        method.to_ascii_uppercase(),
        host.to_ascii_lowercase(),
        canonical_params(params)
    )
}

/// hex(HMAC-SHA512(skey, canonical)).
pub fn signature(skey: &str, canonical: &str) -> String {
    let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(skey.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(canonical.as_bytes());
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

/// The `Authorization` header value.
pub fn authorization(ikey: &str, signature: &str) -> String {
    format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{ikey}:{signature}").as_bytes())
    )
}

/// RFC 2822 date in UTC, as Duo wants it: `Tue, 21 Aug 2012 17:29:18 -0000`.
pub fn rfc2822(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} -0000",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_signature_vector() {
        let c = canonical(
            "Tue, 21 Aug 2012 17:29:18 -0000",
            "post",
            "api-XXXXXXXX.duosecurity.com",
            "/accounts/v1/account/list",
            &[("username", "root"), ("realname", "First Last")],
        );
        assert_eq!(
            c,
            "Tue, 21 Aug 2012 17:29:18 -0000\nPOST\napi-xxxxxxxx.duosecurity.com\n/accounts/v1/account/list\nrealname=First%20Last&username=root"
        );
        assert_eq!(
            signature("Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep", &c),
            "1bffb8924348f7db7da9e7d7d749ded93aafd02d8e904960da7b96c57510220185a64a2827ee8f24ac5d30802a9ee97e59de44b304b18242f0d596d15a8122af"
        );
    }

    #[test]
    fn reference_encoding_vector() {
        assert_eq!(
            canonical_params(&[
                ("username", "H ell?o"),
                ("password", "H-._~i"),
                ("password", "A(!'*)")
            ]),
            "password=A%28%21%27%2A%29&password=H-._~i&username=H%20ell%3Fo"
        );
    }

    #[test]
    fn dates_are_rfc2822() {
        assert_eq!(rfc2822(1_345_570_158), "Tue, 21 Aug 2012 17:29:18 -0000");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 -0000");
        assert_eq!(rfc2822(1_795_428_000), "Mon, 23 Nov 2026 10:00:00 -0000");
    }
}
