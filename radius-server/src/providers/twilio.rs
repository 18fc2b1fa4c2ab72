//! Twilio Programmable Messaging: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form body, HTTP Basic `AccountSid:AuthToken`; success is 201 with the message's `sid`.

use std::time::Duration;

use anyhow::{bail, Result};
use portcullis_core::config::SmsConfig;
use portcullis_core::delivery::{CodeSender, DeliveryError};
use serde::Deserialize;
use tokio::runtime::Handle;

use super::secret::Secret;
use super::{classify, run_blocking, transport};

/// The Twilio SMS sender of one tenant.
pub struct Twilio {
    http: reqwest::Client,
    handle: Handle,
    url: String,
    account_sid: String,
    auth_token: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Created {
    sid: String,
    status: String,
}

#[derive(Deserialize)]
struct Failure {
    code: Option<i64>,
    message: Option<String>,
}

impl Twilio {
    /// From validated config; reads `auth_token_file` now. `section` is the config key of
    /// `cfg` (`tenants.acme.sms`), which the errors name.
    pub fn new(
        section: &str,
        cfg: &SmsConfig,
        http: reqwest::Client,
        handle: Handle,
    ) -> Result<Self> {
        let Some(auth_token) = Secret::from_config(
            cfg.auth_token.as_ref(),
            cfg.auth_token_file.as_ref(),
            &format!("{section}.auth_token_file"),
        )?
        else {
            bail!("{section}: auth_token or auth_token_file is required");
        };
        let account_sid = cfg.account_sid.clone().unwrap_or_default();
        Ok(Self {
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                cfg.base_url.trim_end_matches('/'),
                urlencoding::encode(&account_sid)
            ),
            http,
            handle,
            account_sid,
            auth_token,
            from: cfg.from.clone(),
            messaging_service_sid: cfg.messaging_service_sid.clone(),
            timeout: cfg.timeout,
        })
    }
}

impl CodeSender for Twilio {
    fn channel(&self) -> &'static str {
        "sms"
    }

    fn provider(&self) -> &str {
        "twilio"
    }

    fn send(&self, to: &str, _code: &str, message: &str) -> Result<(), DeliveryError> {
        let mut form: Vec<(&str, &str)> = vec![("To", to), ("Body", message)];
        if let Some(from) = &self.from {
            form.push(("From", from));
        }
        if let Some(sid) = &self.messaging_service_sid {
            form.push(("MessagingServiceSid", sid));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencoding::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .http
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.auth_token.current().as_str()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        run_blocking(&self.handle, self.timeout, async move {
            let resp = request.send().await.map_err(transport)?;
            let status = resp.status();
            let text = resp.text().await.map_err(transport)?;
            if status == reqwest::StatusCode::CREATED || status == reqwest::StatusCode::OK {
                let created: Created = serde_json::from_str(&text).map_err(|_| {
                    DeliveryError::Uncertain("malformed reply: no message sid".into())
                })?;
                if created.status == "failed" || created.status == "undelivered" {
                    return Err(DeliveryError::Refused(format!(
                        "message {} {}",
                        created.sid, created.status
                    )));
                }
                tracing::debug!(sid = %created.sid, status = %created.status, "twilio accepted the message");
                return Ok(());
            }
            let detail = match serde_json::from_str::<Failure>(&text) {
                Ok(f) => format!(
                    "code {} {}",
                    f.code.map(|c| c.to_string()).unwrap_or_default(),
                    f.message.unwrap_or_default()
                ),
                Err(_) => "unreadable error body".into(),
            };
            Err(classify(status, detail))
        })
    }
}
