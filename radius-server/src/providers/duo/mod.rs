//! Duo Auth API v2 client: signed requests, preauth and auth (push, phone, sms, passcode),
//! 429 backoff, and the error classes the fail mode needs (4xx refused, 5xx/transport/
//! malformed unavailable, timeouts).

pub mod sign;

use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_core::config::DuoConfig;
use portcullis_core::external::{ExternalError, ExternalMfa, Method, Preauth, Verdict};
use serde::Deserialize;
use tokio::runtime::Handle;
use zeroize::Zeroizing;

/// Backoff after HTTP 429: 1 s doubling, capped at 32 s (and by the request's deadline).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(32);

/// The Duo client of one tenant.
pub struct Duo {
    http: reqwest::Client,
    handle: Handle,
    ikey: String,
    skey: Zeroizing<String>,
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
    /// From validated config; reads `skey_file` and `ca_file` now.
    pub fn new(cfg: &DuoConfig, handle: Handle) -> Result<Self> {
        let skey = match (&cfg.skey, &cfg.skey_file) {
            (Some(k), _) => Zeroizing::new(k.clone()),
            (None, Some(path)) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading skey_file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => anyhow::bail!("skey or skey_file is required"),
        };
        Ok(Self {
            http: super::client(cfg.ca_file.as_deref(), cfg.push_timeout)?,
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
            self.skey.clone(),
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
                        } else {
                            ExternalError::Unavailable(format!("transport error: {e}"))
                        }
                    })?;
                let status = resp.status();
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    if started.elapsed() + backoff > timeout {
                        return Err(ExternalError::Unavailable(
                            "rate limited (HTTP 429) past the deadline".into(),
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
                let text = resp
                    .text()
                    .await
                    .map_err(|e| ExternalError::Unavailable(format!("reading the reply: {e}")))?;
                let env: Envelope = serde_json::from_str(&text).map_err(|_| {
                    ExternalError::Unavailable(format!(
                        "malformed reply (HTTP {})",
                        status.as_u16()
                    ))
                })?;
                if env.stat == "OK" && status.is_success() {
                    return env.response.ok_or_else(|| {
                        ExternalError::Unavailable("malformed reply: no response".into())
                    });
                }
                let detail = format!(
                    "HTTP {} code {} {}{}",
                    status.as_u16(),
                    env.code.unwrap_or_default(),
                    env.message.unwrap_or_default(),
                    env.message_detail
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
                return Err(if status.is_client_error() {
                    ExternalError::Refused(detail)
                } else {
                    ExternalError::Unavailable(detail)
                });
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
