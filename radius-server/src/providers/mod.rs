//! Outbound providers of second factors (SMS, e-mail): HTTPS clients with certificate
//! verification always on and bounded timeouts. The Engine calls them from its blocking
//! threads; the requests run on the daemon's (or the CLI's) async runtime through a handle.

mod ca_file;
pub mod duo;
mod http_gateway;
pub(crate) mod secret;
mod smtp;
mod twilio;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_core::config::{Config, SmsConfig, SmsProvider};
use portcullis_core::delivery::{CodeSender, DeliveryError, DeliverySettings};
use portcullis_core::engine::Engine;
use tokio::runtime::Handle;

pub(crate) use ca_file::ca_certificates;
pub use http_gateway::HttpGateway;
pub use smtp::Smtp;
pub use twilio::Twilio;

/// An HTTPS client for the provider of config section `section` (`tenants.acme.sms`),
/// trusting the public CAs and, if given, the certificates of its `ca_file`.
pub(crate) fn client(
    section: &str,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client> {
    client_with(section, ca_file, timeout, |b| b)
}

/// [`client`], its builder adjusted by `adjust` first (a resolver of its own).
pub(crate) fn client_with(
    section: &str,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client> {
    // Redirects are not followed: no provider's API redirects a POST, and a redirect
    // could lead a request (with its token or signature) to another host, one inside the
    // daemon's network too. `classify` says what to configure instead.
    let mut b = adjust(reqwest::Client::builder())
        .timeout(timeout)
        .connect_timeout(timeout)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        for der in ca_certificates(&format!("{section}.ca_file"), path)? {
            let cert = reqwest::Certificate::from_der(&der)
                .with_context(|| format!("{section}.ca_file: {}", path.display()))?;
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .with_context(|| format!("{section}: building the HTTPS client"))
}

/// Run a provider request to completion from a blocking thread, bounded by `timeout`.
pub(crate) fn run_blocking<T>(
    handle: &Handle,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, DeliveryError>>,
) -> Result<T, DeliveryError> {
    // The Engine runs only on blocking threads (tokio's blocking pool in the daemon, the
    // main thread in the CLI), where Handle::block_on is allowed; `handle` belongs to a
    // multi-thread runtime whose workers drive the I/O.
    handle.block_on(async {
        match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::Uncertain(format!(
                "no answer within {timeout:?}"
            ))),
        }
    })
}

/// Sort an HTTP failure into refused (4xx except 429, and a redirect, which is not
/// followed: not worth retrying) or unavailable.
pub(crate) fn classify(status: reqwest::StatusCode, detail: String) -> DeliveryError {
    if status.is_redirection() {
        return DeliveryError::Refused(format!(
            "HTTP {}: the server answered with a redirect, which is not followed; configure the address it redirects to{}",
            status.as_u16(),
            if detail.is_empty() { String::new() } else { format!(" ({detail})") }
        ));
    }
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        DeliveryError::Refused(format!("HTTP {}: {detail}", status.as_u16()))
    } else {
        DeliveryError::Unavailable(format!("HTTP {}: {detail}", status.as_u16()))
    }
}

pub(crate) fn transport(e: reqwest::Error) -> DeliveryError {
    // reqwest's error text names the whole URL, and a URL may be a secret (a push
    // factor's ntfy topic, a gateway's key in the query): the text goes to logs and audit
    // records, so only the host is named.
    let host = e
        .url()
        .and_then(|u| u.host_str())
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    // No connection: nothing was sent. Once connected, the request may have gone out
    // whatever happened to its answer.
    if e.is_connect() {
        let why = with_causes(e.without_url());
        return DeliveryError::Unavailable(format!("cannot connect{host}: {why}"));
    }
    DeliveryError::Uncertain(if e.is_timeout() {
        format!("timed out{host}")
    } else {
        format!("transport error{host}: {}", with_causes(e.without_url()))
    })
}

/// `e` and what caused it (reqwest's own text says only "error sending request"): the
/// DNS, TLS or connection error the operator can act on.
fn with_causes(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// The sender a tenant's `[tenants.NAME.sms]` describes; `section` is that key, which
/// the errors name.
pub fn sms_sender(section: &str, cfg: &SmsConfig, handle: Handle) -> Result<Arc<dyn CodeSender>> {
    let http = client(section, cfg.ca_file.as_deref(), cfg.timeout)?;
    Ok(match cfg.provider {
        SmsProvider::Twilio => Arc::new(Twilio::new(section, cfg, http, handle)?),
        SmsProvider::Http => Arc::new(HttpGateway::new(section, cfg, http, handle)?),
    })
}

/// Give the Engine every tenant's providers.
pub fn configure(engine: &mut Engine, config: &Config, handle: &Handle) -> Result<()> {
    for (tenant, t) in &config.tenants {
        if let Some(duo) = &t.duo {
            let client = duo::Duo::new(&format!("tenants.{tenant}.duo"), duo, handle.clone())?;
            engine.set_external(
                tenant,
                Arc::new(client),
                portcullis_core::external::ExternalSettings {
                    fail_open: duo.fail_mode == portcullis_core::config::FailMode::Safe,
                    username_is_email: duo.username == portcullis_core::config::DuoUsername::Email,
                    username_attribute: duo.username_attribute.clone(),
                },
            );
        }
        if let Some(push) = &t.push {
            let sender = crate::push::PushClient::new(
                &format!("tenants.{tenant}.push"),
                push,
                handle.clone(),
            )?;
            let public_url = config
                .http
                .as_ref()
                .and_then(|h| h.public_url.clone())
                .context("push needs [http] public_url")?;
            engine.set_push(
                tenant,
                Arc::new(sender),
                portcullis_core::push::PushSettings {
                    public_url,
                    number_matching: push.number_matching,
                    ttl: push.ttl.as_secs() as i64,
                    max_pushes: push.max_pushes,
                    window: push.window.as_secs() as i64,
                    issuer: config.issuer.clone(),
                    ntfy_url: push
                        .ntfy_url
                        .as_ref()
                        .map(|u| u.trim_end_matches('/').to_string()),
                },
            );
        }
        if let Some(email) = &t.email {
            let sender = Smtp::new(&format!("tenants.{tenant}.email"), email)?;
            engine.set_sender(
                tenant,
                Arc::new(sender),
                DeliverySettings {
                    template: email.message.clone(),
                    code_ttl: email.code_ttl.as_secs() as i64,
                    resend_after: email.resend_after.as_secs() as i64,
                    max_per_hour: email.max_per_hour,
                    issuer: config.issuer.clone(),
                },
            );
        }
        if let Some(sms) = &t.sms {
            let sender = sms_sender(&format!("tenants.{tenant}.sms"), sms, handle.clone())?;
            engine.set_sender(
                tenant,
                sender,
                DeliverySettings {
                    template: sms.message.clone(),
                    code_ttl: sms.code_ttl.as_secs() as i64,
                    resend_after: sms.resend_after.as_secs() as i64,
                    max_per_hour: sms.max_per_hour,
                    issuer: config.issuer.clone(),
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transport_error_names_the_host_not_the_url() {
        // Nothing listens on port 1 of loopback: the connection is refused.
        let e = reqwest::Client::new()
            .get("http://127.0.0.1:1/secret-topic-k3y?key=api-k3y")
            .send()
            .await
            .expect_err("nothing listens there");
        let text = transport(e).to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(
            !text.contains("k3y"),
            "the URL's path or query leaked: {text}"
        );
    }
}
