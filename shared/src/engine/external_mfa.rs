//! Logins whose second factor belongs to an external service (Duo): the service's preauth
//! decides whether to ask at all, then the user answers with a passcode or a method.

use super::{txn_ref, Engine, EngineError, Expects, Outcome, Step};
use crate::config::LoginMode;
use crate::external::{ExternalError, ExternalMfa, ExternalSettings, Method, Preauth, Verdict};
use crate::model::{Tenant, User};
use std::sync::Arc;

/// How the service's second factor appears in audit records and Accept steps.
const FACTOR: &str = "duo";

impl Engine {
    /// The tenant's external service, if it has one.
    pub(super) fn external(
        &self,
        tenant: &str,
    ) -> Option<&(Arc<dyn ExternalMfa>, ExternalSettings)> {
        self.externals.get(tenant)
    }

    fn external_username(user: &User, st: &ExternalSettings) -> String {
        if let Some(mapped) = st
            .username_attribute
            .as_ref()
            .and_then(|a| user.attributes.get(a))
        {
            return mapped.clone();
        }
        match (&user.email, st.username_is_email) {
            (Some(e), true) => e.clone(),
            _ => user.name.clone(),
        }
    }

    /// An error of the service: fail open only when configured and the service is
    /// unavailable (5xx, transport, malformed); a refusal (any 4xx, rate limiting that
    /// outlasts the deadline, a `stat` other than OK) and timeouts always fail closed, and
    /// the audit record says so when `fail_mode = "safe"` was not applied.
    fn external_failure(
        &self,
        e: &ExternalError,
        st: &ExternalSettings,
        user: &User,
        first: &str,
        svc: &str,
    ) -> Outcome {
        if st.fail_open && matches!(e, ExternalError::Unavailable(_)) {
            tracing::warn!(user = %user.name, service = svc, error = %e, "FAIL-OPEN: second factor skipped because the service is unavailable");
            return Outcome {
                step: Step::Accept {
                    factors_used: vec![first.into()],
                    groups: user.groups.clone(),
                    reply_attributes: Vec::new(),
                },
                reason: format!("FAIL-OPEN ({svc} fail_mode = safe): {e}"),
                factors: vec![first.into()],
            };
        }
        let reason = if st.fail_open {
            format!(
                "{svc}: {e}; failed closed: fail_mode = safe lets users in only when the \
                 service is unavailable (5xx, a transport error other than a certificate \
                 that does not verify, a malformed reply)"
            )
        } else {
            format!("{svc}: {e}")
        };
        Outcome::reject_with(
            reason,
            "The second-factor service could not be reached; try again later",
        )
    }

    fn external_accept(user: &User, first: &str, why: String) -> Outcome {
        Outcome {
            step: Step::Accept {
                factors_used: vec![first.into(), FACTOR.into()],
                groups: user.groups.clone(),
                reply_attributes: Vec::new(),
            },
            reason: why,
            factors: vec![first.into(), FACTOR.into()],
        }
    }

    /// After the first factor. `code`: what append mode carried (`None` in challenge
    /// mode, where the user is prompted). `txn` makes the prompt's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn external_start(
        &self,
        tenant: &Tenant,
        user: &User,
        first: &'static str,
        source: &str,
        mode: LoginMode,
        code: Option<&str>,
        prompt: &str,
        txn: &dyn Fn() -> Result<String, EngineError>,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some((svc, st)) = self.external(&tenant.name) else {
            return Ok(None);
        };
        let name = Self::external_username(user, st);
        let ip = Some(source).filter(|s| s.parse::<std::net::IpAddr>().is_ok());
        super::blocking_point()?;
        let methods = match svc.preauth(&name, ip) {
            Ok(Preauth::Allow(msg)) => {
                return Ok(Some(Self::external_accept(
                    user,
                    first,
                    format!("{} preauth allow (bypass): {msg}", svc.name()),
                )))
            }
            Ok(Preauth::Deny(msg)) => {
                return Ok(Some(Outcome::reject(format!(
                    "{} preauth deny: {msg}",
                    svc.name()
                ))))
            }
            Ok(Preauth::Enroll(url)) => {
                return Ok(Some(Outcome::reject_with(
                    format!("{}: user has no device enrolled", svc.name()),
                    &format!("Enrol a device first: {url}"),
                )))
            }
            Ok(Preauth::Auth { methods }) => methods,
            Err(e) => return Ok(Some(self.external_failure(&e, st, user, first, svc.name()))),
        };
        let method = match (mode, code) {
            (_, Some(c)) => match Method::parse(c) {
                Some(m) => m,
                None => {
                    return Ok(Some(Outcome::reject(format!(
                        "{}: no passcode or method after the password",
                        svc.name()
                    ))))
                }
            },
            (LoginMode::Auto, None) if methods.iter().any(|m| m == "push") => Method::Push,
            (_, None) => {
                let offered: Vec<&str> = methods
                    .iter()
                    .map(String::as_str)
                    .filter(|m| *m != "passcode")
                    .collect();
                let text = if offered.is_empty() {
                    format!("{prompt} (Duo passcode)")
                } else {
                    format!("Duo passcode, or type {}:", offered.join(" / "))
                };
                return Ok(Some(Outcome {
                    step: Step::Prompt {
                        txn: txn()?,
                        text,
                        echo: false,
                        expects: Expects::Code,
                        choices: Vec::new(),
                    },
                    reason: format!("first factor ok; {} asked", svc.name()),
                    factors: vec![first.into()],
                }));
            }
        };
        Ok(Some(
            self.external_auth(tenant, user, first, &name, ip, &method, svc.as_ref(), st)?
                .0,
        ))
    }

    /// One authentication with the service; the bool says whether the login may go on
    /// (a wrong passcode or sent SMS passcodes) with another prompt.
    #[allow(clippy::too_many_arguments)]
    fn external_auth(
        &self,
        tenant: &Tenant,
        user: &User,
        first: &str,
        name: &str,
        ip: Option<&str>,
        method: &Method,
        svc: &dyn ExternalMfa,
        st: &ExternalSettings,
    ) -> Result<(Outcome, bool), EngineError> {
        super::blocking_point()?;
        let now = self.clock.now();
        Ok(match svc.auth(name, ip, method) {
            Ok(Verdict::Allow(msg)) => {
                self.clear_failures(tenant, user)?;
                (
                    Self::external_accept(
                        user,
                        first,
                        format!("{} {} allow: {msg}", svc.name(), method.name()),
                    ),
                    false,
                )
            }
            Ok(Verdict::Sent(msg)) => (
                Outcome::reject_with(
                    format!("{} sms passcodes sent: {msg}", svc.name()),
                    "Passcodes were sent by SMS; log in again with one",
                ),
                true,
            ),
            Ok(Verdict::Deny(msg)) => {
                if matches!(method, Method::Passcode(_)) {
                    self.count_failure(tenant, user, now)?;
                }
                (
                    Outcome::reject(format!("{} {} deny: {msg}", svc.name(), method.name())),
                    true,
                )
            }
            Err(e) => (
                self.external_failure(&e, st, user, first, svc.name()),
                false,
            ),
        })
    }

    /// The answer to a prompt of an external service. `Ok(None)`: not such a tenant.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn external_answer(
        &self,
        tenant: &Tenant,
        user: &User,
        first: &str,
        source: &str,
        answer: &str,
        txn_id: &str,
        step: u32,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some((svc, st)) = self.external(&tenant.name) else {
            return Ok(None);
        };
        let name = Self::external_username(user, st);
        let ip = Some(source).filter(|s| s.parse::<std::net::IpAddr>().is_ok());
        let reprompt = |text: String, reason: String| Outcome {
            step: Step::Prompt {
                txn: txn_ref(txn_id, step),
                text,
                echo: false,
                expects: Expects::Code,
                choices: Vec::new(),
            },
            reason,
            factors: vec![first.to_string()],
        };
        let Some(method) = Method::parse(answer) else {
            return Ok(Some(reprompt(
                "Type a Duo passcode, or push / phone / sms:".into(),
                "answer is neither a passcode nor a method".into(),
            )));
        };
        let (outcome, may_continue) =
            self.external_auth(tenant, user, first, &name, ip, &method, svc.as_ref(), st)?;
        if let (Step::Reject { .. }, true) = (&outcome.step, may_continue) {
            let text = if method == Method::Sms {
                "Passcodes were sent by SMS; enter one:".to_string()
            } else {
                "Denied; enter a Duo passcode, or push / phone / sms:".to_string()
            };
            return Ok(Some(reprompt(text, outcome.reason)));
        }
        Ok(Some(outcome))
    }
}
