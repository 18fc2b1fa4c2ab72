//! E-mail codes over SMTP (lettre): STARTTLS (required) or implicit TLS, optional AUTH,
//! certificate verification always on, bounded timeouts.

use anyhow::{Context, Result};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use portcullis_core::config::{EmailConfig, SmtpTls};
use portcullis_core::delivery::{CodeSender, DeliveryError};

use super::ca_certificates;

/// The SMTP sender of one tenant.
pub struct Smtp {
    transport: SmtpTransport,
    from: Mailbox,
    subject: String,
}

impl Smtp {
    /// From validated config; reads `password_file` and `ca_file` now. `section` is the
    /// config key of `cfg` (`tenants.acme.email`), which the errors name.
    pub fn new(section: &str, cfg: &EmailConfig) -> Result<Self> {
        let mut tls = TlsParameters::builder(cfg.host.clone());
        if let Some(path) = &cfg.ca_file {
            for der in ca_certificates(&format!("{section}.ca_file"), path)? {
                let cert = Certificate::from_der(der.to_vec())
                    .with_context(|| format!("{section}.ca_file: {}", path.display()))?;
                tls = tls.add_root_certificate(cert);
            }
        }
        let tls = tls
            .build_rustls()
            .with_context(|| format!("{section}: setting up TLS for SMTP"))?;
        let mut b = SmtpTransport::builder_dangerous(cfg.host.as_str())
            .port(cfg.port())
            .timeout(Some(cfg.timeout))
            .tls(match cfg.tls {
                SmtpTls::Starttls => Tls::Required(tls),
                SmtpTls::Implicit => Tls::Wrapper(tls),
            });
        if let Some(user) = &cfg.username {
            let password = match (&cfg.password, &cfg.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("{section}.password_file: reading {}", path.display())
                    })?
                    .trim()
                    .to_string(),
                (None, None) => String::new(),
            };
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: b.build(),
            from: cfg.from.parse().with_context(|| {
                format!("{section}.from: '{}' is not an e-mail address", cfg.from)
            })?,
            subject: cfg.subject.clone(),
        })
    }
}

impl CodeSender for Smtp {
    fn channel(&self) -> &'static str {
        "email"
    }

    fn provider(&self) -> &str {
        "smtp"
    }

    fn send(&self, to: &str, _code: &str, message: &str) -> Result<(), DeliveryError> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| DeliveryError::Refused(format!("'{to}' is not an e-mail address")))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&self.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(message.to_string())
            .map_err(|e| DeliveryError::Refused(format!("cannot build the message: {e}")))?;
        match self.transport.send(&email) {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                Err(DeliveryError::Refused(format!("SMTP server refused: {e}")))
            }
            // The message may have been handed over before the answer timed out.
            Err(e) if e.is_timeout() => Err(DeliveryError::Uncertain("SMTP timed out".into())),
            Err(e) => Err(DeliveryError::Unavailable(format!("SMTP: {e}"))),
        }
    }
}
