//! A generic HTTP(S) SMS gateway: URL, method, headers and a body template with `{to}`,
//! `{code}` and `{message}`, escaped for JSON or form bodies. Any 2xx is success.

use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_core::config::{BodyEncoding, SmsConfig};
use portcullis_core::delivery::{CodeSender, DeliveryError};
use tokio::runtime::Handle;

use super::{classify, run_blocking, transport};

/// A configured gateway.
pub struct HttpGateway {
    http: reqwest::Client,
    handle: Handle,
    url: String,
    method: reqwest::Method,
    headers: Vec<(String, String)>,
    body: String,
    encoding: BodyEncoding,
    timeout: Duration,
}

impl HttpGateway {
    /// From validated config; `section` is its config key (`tenants.acme.sms`), which the
    /// errors name.
    pub fn new(
        section: &str,
        cfg: &SmsConfig,
        http: reqwest::Client,
        handle: Handle,
    ) -> Result<Self> {
        Ok(Self {
            http,
            handle,
            url: cfg.url.clone().unwrap_or_default(),
            method: reqwest::Method::from_bytes(cfg.method.to_ascii_uppercase().as_bytes())
                .with_context(|| {
                    format!("{section}.method: '{}' is not an HTTP method", cfg.method)
                })?,
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: cfg.body.clone().unwrap_or_default(),
            encoding: cfg.body_encoding,
            timeout: cfg.timeout,
        })
    }

    /// The body for one message (public for tests).
    pub fn render(&self, to: &str, code: &str, message: &str) -> String {
        let esc = |v: &str| match self.encoding {
            BodyEncoding::Json => {
                let quoted = serde_json::to_string(v).unwrap_or_default();
                quoted[1..quoted.len().saturating_sub(1)].to_string()
            }
            BodyEncoding::Form => urlencoding::encode(v).into_owned(),
        };
        self.body
            .replace("{to}", &esc(to))
            .replace("{code}", &esc(code))
            .replace("{message}", &esc(message))
    }
}

impl CodeSender for HttpGateway {
    fn channel(&self) -> &'static str {
        "sms"
    }

    fn provider(&self) -> &str {
        "http"
    }

    fn send(&self, to: &str, code: &str, message: &str) -> Result<(), DeliveryError> {
        let content_type = match self.encoding {
            BodyEncoding::Json => "application/json",
            BodyEncoding::Form => "application/x-www-form-urlencoded",
        };
        let mut req = self
            .http
            .request(self.method.clone(), &self.url)
            .header("Content-Type", content_type)
            .body(self.render(to, code, message));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        run_blocking(&self.handle, self.timeout, async move {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            Err(classify(status, "gateway refused the message".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(body: &str, encoding: BodyEncoding) -> HttpGateway {
        HttpGateway {
            http: reqwest::Client::new(),
            handle: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .handle()
                .clone(),
            url: "https://gw.example/send".into(),
            method: reqwest::Method::POST,
            headers: vec![],
            body: body.into(),
            encoding,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn json_template_escapes_values() {
        let g = gw(r#"{"to":"{to}","text":"{message}"}"#, BodyEncoding::Json);
        let body = g.render("+1555", "123456", "say \"hi\"\n{code}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["text"], "say \"hi\"\n{code}");
        assert_eq!(v["to"], "+1555");
    }

    #[test]
    fn form_template_escapes_values() {
        let g = gw("to={to}&code={code}&msg={message}", BodyEncoding::Form);
        assert_eq!(
            g.render("+1 555", "123456", "a&b"),
            "to=%2B1%20555&code=123456&msg=a%26b"
        );
    }
}
