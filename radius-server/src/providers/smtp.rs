//! E-mail codes over SMTP (lettre): STARTTLS (required) or implicit TLS, optional AUTH,
//! certificate verification always on, bounded timeouts.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use portcullis_core::config::{EmailConfig, SmtpTls};
use portcullis_core::delivery::{CodeSender, DeliveryError};
use zeroize::Zeroizing;

use super::ca_certificates;
use super::secret::Secret;

/// The SMTP sender of one tenant.
pub struct Smtp {
    section: String,
    cfg: EmailConfig,
    /// With `username`: the password (from `password_file`, read again when it changes).
    password: Option<Secret>,
    /// The transport, made with the password it was made with (made again when the
    /// password file changed).
    transport: Mutex<(Option<Arc<Zeroizing<String>>>, SmtpTransport)>,
    from: Mailbox,
    subject: String,
}

/// The transport `cfg` describes, logging in with `password` when it names a user.
fn transport(section: &str, cfg: &EmailConfig, password: Option<&str>) -> Result<SmtpTransport> {
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
        b = b.credentials(Credentials::new(
            user.clone(),
            password.unwrap_or_default().to_string(),
        ));
    }
    Ok(b.build())
}

impl Smtp {
    /// From validated config; reads `password_file` and `ca_file` now. `section` is the
    /// config key of `cfg` (`tenants.acme.email`), which the errors name.
    pub fn new(section: &str, cfg: &EmailConfig) -> Result<Self> {
        let password = match &cfg.username {
            Some(_) => Secret::from_config(
                cfg.password.as_ref(),
                cfg.password_file.as_ref(),
                &format!("{section}.password_file"),
            )?,
            None => None,
        };
        let current = password.as_ref().map(Secret::current);
        let made = transport(section, cfg, current.as_ref().map(|p| p.as_str()))?;
        Ok(Self {
            section: section.to_string(),
            cfg: cfg.clone(),
            password,
            transport: Mutex::new((current, made)),
            from: cfg.from.parse().with_context(|| {
                format!("{section}.from: '{}' is not an e-mail address", cfg.from)
            })?,
            subject: cfg.subject.clone(),
        })
    }

    /// The transport to send with now: made again if the password file changed.
    fn current_transport(&self) -> Result<SmtpTransport, DeliveryError> {
        let mut held = self
            .transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read under the lock: two sends at once never make the transport again with an
        // older password than the one in use.
        let password = self.password.as_ref().map(Secret::current);
        let same = match (&held.0, &password) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let made = transport(
                &self.section,
                &self.cfg,
                password.as_ref().map(|p| p.as_str()),
            )
            .map_err(|e| DeliveryError::Unavailable(format!("{e:#}")))?;
            *held = (password, made);
        }
        Ok(held.1.clone())
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
        match self.current_transport()?.send(&email) {
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
