//! Out-of-band code delivery (SMS today; e-mail later): the Engine makes a code, keeps its
//! hash, and hands the message to the tenant's [`CodeSender`]. Providers (Twilio, a generic
//! HTTP gateway) implement the trait in the server crate, where the HTTP client lives.

/// Why a provider did not take the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The provider refused the request (4xx): wrong credentials, bad number... Not retried.
    #[error("provider refused the message: {0}")]
    Refused(String),
    /// The provider did not take the message: down, rate limiting, or no connection
    /// (5xx, 429, connection refused or timed out).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request went out but its answer did not come (timed out, connection lost, an
    /// answer that cannot be read): the message may have been sent.
    #[error("provider did not confirm the message, which may have been sent: {0}")]
    Uncertain(String),
}

impl DeliveryError {
    /// Whether the message may have reached the user: only a refusal or an answer saying
    /// so means it did not.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, DeliveryError::Uncertain(_))
    }
}

/// Sends a short text to a user's address (a phone number for SMS).
pub trait CodeSender: Send + Sync + 'static {
    /// `sms`, `email`: the factor kind this sender serves.
    fn channel(&self) -> &'static str;
    /// Provider name for logs and audit (`twilio`, `http`).
    fn provider(&self) -> &str;
    /// Deliver `message` (which contains `code`) to `to`. Must be bounded in time.
    fn send(&self, to: &str, code: &str, message: &str) -> Result<(), DeliveryError>;
}

/// Per-tenant settings of code delivery that the Engine needs.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The message, with `{code}` (required) and `{issuer}`.
    pub template: String,
    /// How long a sent code is valid, in seconds.
    pub code_ttl: i64,
    /// The shortest time between two sends to the same user, in seconds.
    pub resend_after: i64,
    /// Sends per user per hour.
    pub max_per_hour: u32,
    pub issuer: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            template: "Your {issuer} verification code is {code}".into(),
            code_ttl: 300,
            resend_after: 30,
            max_per_hour: 5,
            issuer: "Portcullis".into(),
        }
    }
}

/// `+4915112345678` -> `••••5678`, `alice@example.com` -> `a•••@example.com`: enough for
/// the user to recognise, not enough to leak.
pub fn mask_address(to: &str) -> String {
    if let Some((local, domain)) = to.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}•••@{domain}");
    }
    let tail: String = to
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("••••{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_all_but_the_last_four() {
        assert_eq!(super::mask_address("+4915112345678"), "••••5678");
        assert_eq!(super::mask_address("12"), "••••12");
        assert_eq!(super::mask_address("alice@example.com"), "a•••@example.com");
    }
}
