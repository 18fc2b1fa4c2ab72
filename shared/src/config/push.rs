//! `[tenants.NAME.push]`: push approval. Notifications go through an ntfy server (the
//! factor's unguessable topic) or a webhook URL given at enrolment; the phone answers on
//! the daemon's HTTP listener (`[http] public_url`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the push factor of one tenant.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Base URL of the ntfy server (`https://ntfy.example.com`). Without it only webhook
    /// factors can be enrolled.
    pub ntfy_url: Option<String>,
    /// Access token of the ntfy server (`tk_...`), sent as `Authorization: Bearer`.
    pub ntfy_token: Option<String>,
    /// A file holding the access token (keeps it out of the config file).
    pub ntfy_token_file: Option<PathBuf>,
    /// Key that signs webhook bodies (`X-Portcullis-Signature: sha256=HMAC`); optional.
    pub webhook_secret: Option<String>,
    /// Extra CA certificate(s) for an ntfy server or webhook with a private CA: one or
    /// more PEM `CERTIFICATE` blocks (a file with none is refused at start).
    pub ca_file: Option<PathBuf>,
    /// Bound of one notification request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The login prompt shows two digits that the user must pick on the approval page.
    #[serde(default = "default_true")]
    pub number_matching: bool,
    /// How long a push may wait for its answer.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Anti-fatigue: at most this many pushes per user per `window`.
    #[serde(default = "default_max_pushes")]
    pub max_pushes: u32,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("ntfy_url", &self.ntfy_url)
            .field(
                "ntfy_token",
                &self.ntfy_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("number_matching", &self.number_matching)
            .field("ttl", &self.ttl)
            .field("max_pushes", &self.max_pushes)
            .finish_non_exhaustive()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_max_pushes() -> u32 {
    5
}
fn default_window() -> Duration {
    Duration::from_secs(600)
}

impl PushConfig {
    /// Checks serde cannot express; `Err((key, message))`.
    pub(super) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if let Some(u) = &self.ntfy_url {
            if !u.starts_with("https://") {
                return bad("ntfy_url", "must be an https:// URL");
            }
        }
        if self.ntfy_token.is_some() && self.ntfy_token_file.is_some() {
            return bad(
                "ntfy_token_file",
                "give ntfy_token or ntfy_token_file, not both",
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad("timeout", "use a duration from 1s to 60s");
        }
        if self.ttl < Duration::from_secs(10) || self.ttl > Duration::from_secs(600) {
            return bad("ttl", "use a duration from 10s to 10m");
        }
        if self.max_pushes == 0 {
            return bad(
                "max_pushes",
                "must be at least 1 (remove [push] to turn push off)",
            );
        }
        if self.window.is_zero() || self.window > Duration::from_secs(86_400) {
            return bad("window", "use a duration from 1s to 24h");
        }
        Ok(())
    }
}
