//! Delivering push notifications: ntfy (JSON publish with action buttons) and a generic
//! JSON webhook (optionally signed). HTTPS only, certificates verified, no redirects,
//! bounded in time. A webhook that a tenant's token named goes only to public addresses,
//! checked at every connection ([`PublicOnly`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hmac::{Hmac, Mac};
use portcullis_core::config::PushConfig;
use portcullis_core::delivery::DeliveryError;
use portcullis_core::push::{PushChannel, PushNotice, PushParams, PushSender};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::runtime::Handle;
use zeroize::Zeroizing;

use crate::providers::secret::Secret;
use crate::providers::{classify, client, client_with, run_blocking, transport};

/// The push channels of one tenant.
pub struct PushClient {
    http: reqwest::Client,
    /// For the webhooks a tenant's token named ([`PushParams::public_only`]).
    public_http: reqwest::Client,
    handle: Handle,
    ntfy_url: Option<String>,
    ntfy_token: Option<Secret>,
    webhook_secret: Option<Zeroizing<Vec<u8>>>,
    timeout: Duration,
}

impl PushClient {
    /// From validated config; reads `ntfy_token_file` and `ca_file` now. `section` is the
    /// config key of `cfg` (`tenants.acme.push`), which the errors name.
    pub fn new(section: &str, cfg: &PushConfig, handle: Handle) -> Result<Self> {
        let ntfy_token = Secret::from_config(
            cfg.ntfy_token.as_ref(),
            cfg.ntfy_token_file.as_ref(),
            &format!("{section}.ntfy_token_file"),
        )?;
        Ok(Self {
            http: client(section, cfg.ca_file.as_deref(), cfg.timeout)?,
            // No idle connections kept: every post resolves and checks the name anew. No
            // proxy from the environment either: a proxy would resolve the name itself.
            public_http: client_with(section, cfg.ca_file.as_deref(), cfg.timeout, |b| {
                b.dns_resolver(Arc::new(PublicOnly))
                    .pool_max_idle_per_host(0)
                    .no_proxy()
            })?,
            handle,
            ntfy_url: cfg
                .ntfy_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            ntfy_token,
            webhook_secret: cfg
                .webhook_secret
                .as_ref()
                .map(|s| Zeroizing::new(s.as_bytes().to_vec())),
            timeout: cfg.timeout,
        })
    }

    /// POST `body` as JSON to `url` (with the ntfy token for ntfy, a signature for webhooks).
    fn post(&self, params: &PushParams, url: &str, body: &Value) -> Result<(), DeliveryError> {
        let channel = params.channel;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| DeliveryError::Refused(format!("cannot encode the message: {e}")))?;
        let http = match channel {
            PushChannel::Webhook if params.public_only => {
                // An address in the URL is never resolved: checked here, as the client
                // reads the URL (the enrolment checked it too, with an older reading).
                if portcullis_core::admin::webhook_host_is_internal(url) {
                    return Err(DeliveryError::Refused(
                        "a tenant's webhook is posted to public addresses only, and this one names an internal address".into(),
                    ));
                }
                &self.public_http
            }
            _ => &self.http,
        };
        let mut req = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        match channel {
            PushChannel::Ntfy => {
                if let Some(t) = &self.ntfy_token {
                    req = req.bearer_auth(t.current().as_str());
                }
            }
            PushChannel::Webhook => {
                if let Some(key) = &self.webhook_secret {
                    req = req.header("X-Portcullis-Signature", sign(key, &bytes));
                }
            }
        }
        let req = req.body(bytes);
        run_blocking(&self.handle, self.timeout, async move {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            // A webhook is a tenant admin's URL: what it answers is not shown back (the
            // daemon must not be a way to read services only it can reach).
            let detail: String = match channel {
                PushChannel::Ntfy => {
                    let text = resp.text().await.unwrap_or_default();
                    text.chars().take(200).collect()
                }
                PushChannel::Webhook => "(the webhook's answer is not shown)".into(),
            };
            Err(classify(status, detail))
        })
    }

    fn ntfy_base(&self) -> Result<&str, DeliveryError> {
        self.ntfy_url.as_deref().ok_or_else(|| {
            DeliveryError::Refused(
                "the tenant's [push] has no ntfy_url for this ntfy factor".into(),
            )
        })
    }
}

/// `sha256=HEX` of HMAC-SHA256(key, body): lets the receiver check who sent the webhook.
fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!(
        "sha256={}",
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    )
}

/// The ntfy publish body: with number matching, Approve opens the page (the number is
/// picked there); without it, Approve and Deny are HTTP actions carrying the token.
fn ntfy_body(topic: &str, n: &PushNotice) -> Value {
    let bearer = format!("Bearer {}", n.token);
    let deny = json!({
        "action": "http", "label": "Deny", "url": n.deny_url, "method": "POST",
        "headers": {"Authorization": bearer}, "clear": true
    });
    let approve = if n.number_matching {
        json!({"action": "view", "label": "Approve…", "url": n.page_url, "clear": true})
    } else {
        json!({
            "action": "http", "label": "Approve", "url": n.approve_url, "method": "POST",
            "headers": {"Authorization": bearer}, "clear": true
        })
    };
    json!({
        "topic": topic,
        "title": n.title,
        "message": n.message,
        "priority": 5,
        "tags": ["lock"],
        "click": n.page_url,
        "actions": [approve, deny],
    })
}

fn webhook_body(n: &PushNotice) -> Value {
    json!({
        "type": "push",
        "title": n.title,
        "message": n.message,
        "user": n.username,
        "client": n.client,
        "source": n.source,
        "time": n.time,
        "page_url": n.page_url,
        "approve_url": n.approve_url,
        "deny_url": n.deny_url,
        "token": n.token,
        "number_matching": n.number_matching,
    })
}

impl PushSender for PushClient {
    fn provider(&self, channel: PushChannel) -> &'static str {
        match channel {
            PushChannel::Ntfy => "ntfy",
            PushChannel::Webhook => "webhook",
        }
    }

    fn send(
        &self,
        params: &PushParams,
        address: &str,
        notice: &PushNotice,
    ) -> Result<(), DeliveryError> {
        match params.channel {
            PushChannel::Ntfy => {
                let base = self.ntfy_base()?;
                self.post(params, &format!("{base}/"), &ntfy_body(address, notice))
            }
            PushChannel::Webhook => self.post(params, address, &webhook_body(notice)),
        }
    }

    fn send_text(
        &self,
        params: &PushParams,
        address: &str,
        title: &str,
        message: &str,
    ) -> Result<(), DeliveryError> {
        match params.channel {
            PushChannel::Ntfy => {
                let base = self.ntfy_base()?;
                let body =
                    json!({"topic": address, "title": title, "message": message, "priority": 4});
                self.post(params, &format!("{base}/"), &body)
            }
            PushChannel::Webhook => {
                let body = json!({"type": "message", "title": title, "message": message});
                self.post(params, address, &body)
            }
        }
    }
}

/// The resolver of the webhooks a tenant's token named: the system's answer for the name
/// (as any connection gets it), of which only the public addresses are used (see
/// [`portcullis_core::admin::address_is_internal`]). The enrolment refused a name that
/// resolved inside; this refuses one whose answer changed since (a DNS record pointed at
/// the daemon's host, its network or a metadata address afterwards). A URL with an
/// address instead of a name is never resolved: `post` checks it.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (inside, public): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|a| portcullis_core::admin::address_is_internal(a.ip()));
            if public.is_empty() {
                let inside: Vec<String> = inside.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves to {} now: a tenant's webhook is posted to public addresses only",
                    if inside.is_empty() { "nothing".to_string() } else { inside.join(", ") }
                )
                .into());
            }
            if !inside.is_empty() {
                tracing::warn!(host = %host, "a tenant's webhook name resolves to internal addresses too; only its public ones are used");
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(number_matching: bool) -> PushNotice {
        PushNotice {
            title: "t".into(),
            message: "m".into(),
            username: "alice".into(),
            client: "vpn".into(),
            source: "10.0.0.1".into(),
            time: 1,
            page_url: "https://mfa/v1/push/ab?t=tok".into(),
            approve_url: "https://mfa/v1/push/ab/approve".into(),
            deny_url: "https://mfa/v1/push/ab/deny".into(),
            token: "tok".into(),
            number_matching,
        }
    }

    /// The resolver of tenants' webhooks: the system's answer without its internal
    /// addresses, and an error that says what the name resolved to when nothing is left.
    #[test]
    fn a_tenants_webhook_name_is_used_only_at_public_addresses() {
        use reqwest::dns::Resolve;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let resolve = |host: &str| rt.block_on(PublicOnly.resolve(host.parse().unwrap()));
        let e = match resolve("localhost") {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("localhost resolves to"), "{e}");
        assert!(e.contains("127.0.0.1") || e.contains("::1"), "{e}");
        assert!(e.contains("public addresses only"), "{e}");
        assert!(resolve("no-such-host.invalid").is_err());
    }

    #[test]
    fn a_redirect_is_refused_with_what_to_configure() {
        let e = crate::providers::classify(reqwest::StatusCode::TEMPORARY_REDIRECT, String::new());
        assert!(
            matches!(&e, DeliveryError::Refused(m)
            if m.contains("HTTP 307") && m.contains("not followed")),
            "{e:?}"
        );
    }

    #[test]
    fn number_matching_approves_on_the_page_only() {
        let b = ntfy_body("topic1", &notice(true));
        assert_eq!(b["topic"], "topic1");
        assert_eq!(b["actions"][0]["action"], "view");
        assert_eq!(b["actions"][0]["url"], "https://mfa/v1/push/ab?t=tok");
        assert_eq!(b["actions"][1]["url"], "https://mfa/v1/push/ab/deny");
        assert_eq!(b["actions"][1]["headers"]["Authorization"], "Bearer tok");
        let b = ntfy_body("topic1", &notice(false));
        assert_eq!(b["actions"][0]["action"], "http");
        assert_eq!(b["actions"][0]["url"], "https://mfa/v1/push/ab/approve");
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
