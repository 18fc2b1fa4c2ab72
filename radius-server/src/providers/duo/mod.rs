//! Duo Auth API v2 client: signed requests, preauth and auth (push, phone, sms, passcode),
//! 429 backoff, and the error classes the fail mode needs: refused (any 4xx, 429 that
//! outlasts the deadline, a `stat` other than `OK`, a TLS certificate that does not verify:
//! always fail closed), unavailable (5xx, other transport errors, malformed 2xx body: may
//! fail open) and timeouts (fail closed).

pub mod sign;

use std::time::Duration;

use anyhow::Result;
use portcullis_core::config::DuoConfig;
use portcullis_core::external::{ExternalError, ExternalMfa, Method, Preauth, Verdict};
use serde::Deserialize;
use tokio::runtime::Handle;

/// Backoff after HTTP 429: 1 s doubling, capped at 32 s (and by the request's deadline).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(32);

/// The Duo client of one tenant.
pub struct Duo {
    http: reqwest::Client,
    handle: Handle,
    ikey: String,
    skey: super::secret::Secret,
    host: String,
    timeout: Duration,
    push_timeout: Duration,
}

#[derive(Deserialize)]
struct Envelope {
    stat: String,
    response: Option<serde_json::Value>,
    code: Option<i64>,
    message: Option<String>,
    message_detail: Option<String>,
}

#[derive(Deserialize)]
struct PreauthResponse {
    result: String,
    #[serde(default)]
    status_msg: String,
    #[serde(default)]
    devices: Vec<Device>,
    enroll_portal_url: Option<String>,
}

#[derive(Deserialize)]
struct Device {
    #[serde(default)]
    capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct AuthResponse {
    result: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    status_msg: String,
}

impl Duo {
    /// From validated config; reads `skey_file` and `ca_file` now. `section` is the
    /// config key of `cfg` (`tenants.acme.duo`), which the errors name.
    pub fn new(section: &str, cfg: &DuoConfig, handle: Handle) -> Result<Self> {
        let Some(skey) = super::secret::Secret::from_config(
            cfg.skey.as_ref(),
            cfg.skey_file.as_ref(),
            &format!("{section}.skey_file"),
        )?
        else {
            anyhow::bail!("{section}: skey or skey_file is required");
        };
        Ok(Self {
            http: super::client(section, cfg.ca_file.as_deref(), cfg.push_timeout)?,
            handle,
            ikey: cfg.ikey.clone(),
            skey,
            host: cfg.api_host.to_ascii_lowercase(),
            timeout: cfg.timeout,
            push_timeout: cfg.push_timeout,
        })
    }

    /// A signed POST; the `response` object of a successful reply.
    fn post(
        &self,
        path: &str,
        params: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<serde_json::Value, ExternalError> {
        let url = format!("https://{}{path}", self.host);
        let body = sign::canonical_params(params);
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (http, host, ikey, skey) = (
            self.http.clone(),
            self.host.clone(),
            self.ikey.clone(),
            // Read again if its file changed (a rotated skey is used at once).
            self.skey.current(),
        );
        let path = path.to_string();
        let deadline = timeout + BACKOFF_CAP;
        let fut = async move {
            let mut backoff = BACKOFF_START;
            let started = tokio::time::Instant::now();
            loop {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let date = sign::rfc2822(now);
                let refs: Vec<(&str, &str)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let sig =
                    sign::signature(&skey, &sign::canonical(&date, "POST", &host, &path, &refs));
                let resp = http
                    .post(&url)
                    .timeout(timeout)
                    .header("Date", &date)
                    .header("Authorization", sign::authorization(&ikey, &sig))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            ExternalError::Timeout(format!("no answer within {timeout:?}"))
                        } else if let Some(tls) = certificate_failure(&e) {
                            tracing::warn!(api_host = %host, error = %tls,
                                "Duo's TLS certificate did not verify: possible interception; refused whatever fail_mode says");
                            ExternalError::Refused(format!(
                                "TLS certificate verification of {host} failed ({tls}): possible interception, refused whatever fail_mode says"
                            ))
                        } else {
                            ExternalError::Unavailable(format!("transport error: {e}"))
                        }
                    })?;
                let status = resp.status().as_u16();
                let text = match resp.text().await {
                    Ok(text) => text,
                    // The status says whether Duo answered: a refusal stays a refusal
                    // (fail closed) even when its body cannot be read.
                    Err(e) if may_fail_open(status) => {
                        return Err(if e.is_timeout() {
                            ExternalError::Timeout(format!("no answer within {timeout:?}"))
                        } else {
                            ExternalError::Unavailable(format!(
                                "HTTP {status}: reading the reply: {e}"
                            ))
                        })
                    }
                    Err(_) => String::new(),
                };
                if status == 429 {
                    if started.elapsed() + backoff > timeout {
                        return Err(rate_limited(&text, timeout));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
                return classify(status, &text);
            }
        };
        self.handle.block_on(async move {
            match tokio::time::timeout(deadline, fut).await {
                Ok(r) => r,
                Err(_) => Err(ExternalError::Timeout(format!(
                    "no answer within {deadline:?}"
                ))),
            }
        })
    }
}

/// The certificate error under a failed request, if the TLS handshake failed because the
/// server's certificate did not verify (unknown issuer, expired, another host name, none
/// presented). That is what someone intercepting the connection looks like, not an
/// outage: it must never fail open, whatever `fail_mode` says. (An interceptor that only
/// blocks or breaks the connection gains nothing safe mode does not already give an
/// outage, so other transport errors stay `Unavailable`.)
///
/// rustls's error sits inside an `io::Error`, whose `source()` skips the error it wraps:
/// the walk steps into it instead.
fn certificate_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
                    | rustls::Error::UnsupportedNameType
            )
            .then(|| tls.to_string());
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Whether an answer with this HTTP status may count as "Duo is unavailable" (and so
/// fail open when the tenant's `fail_mode = "safe"`): a 5xx, or a 2xx whose body turns out
/// malformed. Everything else Duo answers (4xx, 429 included; 3xx; 1xx) fails closed.
fn may_fail_open(status: u16) -> bool {
    (200..300).contains(&status) || (500..600).contains(&status)
}

/// Duo's own words of a failure envelope: `code 40002 Invalid request parameters (detail)`.
fn duo_says(text: &str) -> String {
    match serde_json::from_str::<Envelope>(text) {
        Ok(env) => {
            let mut s = match env.code {
                Some(code) => format!("code {code}"),
                None => format!("stat {}", env.stat),
            };
            if let Some(m) = env.message.filter(|m| !m.is_empty()) {
                s.push(' ');
                s.push_str(&m);
            }
            if let Some(d) = env.message_detail.filter(|d| !d.is_empty()) {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        Err(_) => "not a Duo JSON reply".into(),
    }
}

/// HTTP 429 still answered when the next backoff would pass the deadline: Duo refuses
/// this integration for now. A refusal, never "unavailable": rate limiting must not
/// become a way past the second factor in `fail_mode = "safe"`.
fn rate_limited(text: &str, timeout: Duration) -> ExternalError {
    ExternalError::Refused(format!(
        "HTTP 429 {}: still rate limited by Duo after backing off for the {timeout:?} deadline",
        duo_says(text)
    ))
}

/// The `response` of a reply, or why there is none. Only a 5xx or a malformed 2xx body
/// is `Unavailable`; a 2xx whose `stat` is not `OK` and every other status are `Refused`.
fn classify(status: u16, text: &str) -> Result<serde_json::Value, ExternalError> {
    if (200..300).contains(&status) {
        let env: Envelope = serde_json::from_str(text).map_err(|_| {
            ExternalError::Unavailable(format!("malformed reply (HTTP {status}): not JSON"))
        })?;
        if env.stat == "OK" {
            return env.response.ok_or_else(|| {
                ExternalError::Unavailable(format!(
                    "malformed reply (HTTP {status}): stat OK without a response"
                ))
            });
        }
        return Err(ExternalError::Refused(format!(
            "HTTP {status} {}",
            duo_says(text)
        )));
    }
    let detail = format!("HTTP {status} {}", duo_says(text));
    Err(if may_fail_open(status) {
        ExternalError::Unavailable(detail)
    } else {
        ExternalError::Refused(detail)
    })
}

fn malformed(what: &str) -> ExternalError {
    ExternalError::Unavailable(format!("malformed {what} reply"))
}

impl ExternalMfa for Duo {
    fn name(&self) -> &'static str {
        "duo"
    }

    fn preauth(&self, username: &str, ipaddr: Option<&str>) -> Result<Preauth, ExternalError> {
        let mut params = vec![("username", username)];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr", ip));
        }
        let v = self.post("/auth/v2/preauth", &params, self.timeout)?;
        let r: PreauthResponse = serde_json::from_value(v).map_err(|_| malformed("preauth"))?;
        Ok(match r.result.as_str() {
            "auth" => {
                let mut methods: Vec<String> = Vec::new();
                for cap in r.devices.iter().flat_map(|d| d.capabilities.iter()) {
                    let m = match cap.as_str() {
                        "push" => "push",
                        "phone" => "phone",
                        "sms" => "sms",
                        "mobile_otp" => "passcode",
                        _ => continue,
                    };
                    if !methods.iter().any(|x| x == m) {
                        methods.push(m.to_string());
                    }
                }
                Preauth::Auth { methods }
            }
            "allow" => Preauth::Allow(r.status_msg),
            "deny" => Preauth::Deny(r.status_msg),
            "enroll" => Preauth::Enroll(r.enroll_portal_url.unwrap_or(r.status_msg)),
            _ => return Err(malformed("preauth")),
        })
    }

    fn auth(
        &self,
        username: &str,
        ipaddr: Option<&str>,
        method: &Method,
    ) -> Result<Verdict, ExternalError> {
        let mut params = vec![("username", username), ("device", "auto")];
        let timeout = match method {
            Method::Push => {
                params.push(("factor", "push"));
                self.push_timeout
            }
            Method::Phone => {
                params.push(("factor", "phone"));
                self.push_timeout
            }
            Method::Sms => {
                params.push(("factor", "sms"));
                self.timeout
            }
            Method::Passcode(code) => {
                params.retain(|(k, _)| *k != "device");
                params.push(("factor", "passcode"));
                params.push(("passcode", code.as_str()));
                self.timeout
            }
        };
        if let Some(ip) = ipaddr {
            params.push(("ipaddr", ip));
        }
        let v = self.post("/auth/v2/auth", &params, timeout)?;
        let r: AuthResponse = serde_json::from_value(v).map_err(|_| malformed("auth"))?;
        Ok(match (r.result.as_str(), r.status.as_str()) {
            ("allow", _) => Verdict::Allow(r.status_msg),
            ("deny", "sent") => Verdict::Sent(r.status_msg),
            ("deny", _) => {
                Verdict::Deny(format!("{} {}", r.status, r.status_msg).trim().to_string())
            }
            _ => return Err(malformed("auth")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL_40002: &str = r#"{"stat":"FAIL","code":40002,"message":"Invalid request parameters","message_detail":"username"}"#;

    #[test]
    fn only_5xx_and_malformed_2xx_are_unavailable() {
        assert_eq!(
            classify(200, r#"{"stat":"OK","response":{"time":1}}"#),
            Ok(serde_json::json!({"time": 1}))
        );
        assert!(matches!(
            classify(503, r#"{"stat":"FAIL","code":50301,"message":"Service Unavailable"}"#),
            Err(ExternalError::Unavailable(m)) if m == "HTTP 503 code 50301 Service Unavailable"
        ));
        assert!(matches!(
            classify(502, "<html>Bad Gateway</html>"),
            Err(ExternalError::Unavailable(_))
        ));
        assert!(matches!(
            classify(200, "<html>"),
            Err(ExternalError::Unavailable(_))
        ));
        assert!(matches!(
            classify(200, r#"{"stat":"OK"}"#),
            Err(ExternalError::Unavailable(_))
        ));
    }

    #[test]
    fn a_stat_other_than_ok_is_refused_whatever_the_status() {
        assert_eq!(
            classify(200, FAIL_40002),
            Err(ExternalError::Refused(
                "HTTP 200 code 40002 Invalid request parameters (username)".into()
            ))
        );
        assert!(matches!(
            classify(200, r#"{"stat":"WHATEVER","response":{}}"#),
            Err(ExternalError::Refused(m)) if m.contains("stat WHATEVER")
        ));
    }

    #[test]
    fn every_4xx_is_refused_even_without_a_duo_body() {
        assert!(matches!(
            classify(400, FAIL_40002),
            Err(ExternalError::Refused(m)) if m.contains("40002")
        ));
        assert_eq!(
            classify(403, "<html>Forbidden</html>"),
            Err(ExternalError::Refused(
                "HTTP 403 not a Duo JSON reply".into()
            ))
        );
        assert!(matches!(classify(302, ""), Err(ExternalError::Refused(_))));
    }

    #[test]
    fn only_a_certificate_that_does_not_verify_is_found_under_a_transport_error() {
        use rustls::{CertificateError, Error as Tls};
        // As tokio-rustls reports a failed handshake: an io::Error wrapping rustls's error,
        // itself under the HTTP client's errors.
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let wrapped = |tls: Tls| Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        for (tls, want) in [
            (
                Tls::InvalidCertificate(CertificateError::UnknownIssuer),
                true,
            ),
            (Tls::InvalidCertificate(CertificateError::Expired), true),
            (
                Tls::InvalidCertificate(CertificateError::NotValidForName),
                true,
            ),
            (Tls::NoCertificatesPresented, true),
            (Tls::HandshakeNotComplete, false),
            (Tls::DecryptError, false),
        ] {
            let what = format!("{tls:?}");
            let found = certificate_failure(&wrapped(tls));
            assert_eq!(found.is_some(), want, "{what}: {found:?}");
        }
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(certificate_failure(&refused), None);
    }

    #[test]
    fn rate_limiting_past_the_deadline_is_refused_and_says_so() {
        let e = rate_limited(
            r#"{"stat":"FAIL","code":42901,"message":"Too Many Requests"}"#,
            Duration::from_secs(3),
        );
        let ExternalError::Refused(m) = e else {
            panic!("429 past the deadline must be a refusal, got {e:?}");
        };
        assert!(m.contains("HTTP 429 code 42901 Too Many Requests"), "{m}");
        assert!(m.contains("3s"), "{m}");
        assert!(!may_fail_open(429));
    }
}
