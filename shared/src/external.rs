//! An external second-factor service that owns the user's devices (Duo): the Engine asks
//! it after the first factor instead of checking its own factors. The client (signing,
//! HTTP) lives in the server crate.

/// What the service says before any authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preauth {
    /// The user must authenticate; `methods` are the ones their devices offer
    /// (`push`, `phone`, `sms`, `passcode`).
    Auth { methods: Vec<String> },
    /// The service lets the user in without a second factor (bypass status); the text says why.
    Allow(String),
    /// The service refuses the user.
    Deny(String),
    /// The user has no device yet; enrol at this URL.
    Enroll(String),
}

/// How the user answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Push,
    Phone,
    Sms,
    Passcode(String),
}

impl Method {
    /// Read what a user typed: a passcode (digits) or a method name.
    pub fn parse(answer: &str) -> Option<Method> {
        let a = answer.trim();
        match a.to_ascii_lowercase().as_str() {
            "push" | "1" => Some(Method::Push),
            "phone" | "call" => Some(Method::Phone),
            "sms" => Some(Method::Sms),
            _ if !a.is_empty() && a.len() <= 16 && a.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Method::Passcode(a.to_string()))
            }
            _ => None,
        }
    }

    /// Name for audit records (never the passcode).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Push => "push",
            Method::Phone => "phone",
            Method::Sms => "sms",
            Method::Passcode(_) => "passcode",
        }
    }
}

/// The service's verdict on one authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    /// Passcodes were sent (Duo's `sms` factor); the user answers with one.
    Sent(String),
}

/// Why the service could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExternalError {
    /// 4xx (bad credentials, bad request): always fails closed.
    #[error("refused by the service: {0}")]
    Refused(String),
    /// 5xx, transport error or malformed reply: may fail open if configured.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// No answer in time: always denies.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// An external second-factor service.
pub trait ExternalMfa: Send + Sync + 'static {
    /// `duo`
    fn name(&self) -> &'static str;
    fn preauth(&self, username: &str, ipaddr: Option<&str>) -> Result<Preauth, ExternalError>;
    fn auth(
        &self,
        username: &str,
        ipaddr: Option<&str>,
        method: &Method,
    ) -> Result<Verdict, ExternalError>;
}

/// Per-tenant behaviour around the service.
#[derive(Debug, Clone, Default)]
pub struct ExternalSettings {
    /// Fail open (let the user in on the first factor) when the service is unavailable:
    /// only for 5xx, transport errors and malformed replies; never for 4xx or timeouts.
    pub fail_open: bool,
    /// Send the user's e-mail instead of the user name.
    pub username_is_email: bool,
    /// Send this user attribute (`portcullis user set-attr`) when the user has it: the
    /// optional mapping for users the service knows by another name.
    pub username_attribute: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn answers_parse_to_methods() {
        assert_eq!(Method::parse("PUSH"), Some(Method::Push));
        assert_eq!(Method::parse("1"), Some(Method::Push));
        assert_eq!(
            Method::parse(" 123456 "),
            Some(Method::Passcode("123456".into()))
        );
        assert_eq!(Method::parse("hello"), None);
        assert_eq!(Method::parse(""), None);
    }
}
