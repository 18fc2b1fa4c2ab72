//! The factor menu: a user with several usable ways to give a second factor picks one,
//! by number (`2`), by name (`push`), or answers the menu with a code directly.

use super::{txn_ref, AnswerRequest, Engine, EngineError, Expects, Outcome, Step};
use crate::clock::UnixTime;
use crate::delivery::mask_address;
use crate::engine::MenuChoice;
use crate::model::{Factor, FactorKind, FactorState, Tenant, Transaction, User};
use crate::policy::Decision;

/// A way to give the second factor, in the order the menu lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// A code from an app or token (TOTP, HOTP).
    App,
    Push,
    Sms,
    Email,
}

impl Method {
    /// Whether a `default_factor` name (`push`, `sms`, `email`, `totp`, `hotp`) means this.
    pub(super) fn serves(self, name: &str) -> bool {
        match self {
            Method::App => matches!(name, "totp" | "hotp" | "app"),
            m => m.id() == name,
        }
    }

    /// The id a PAM module or a user answers with.
    pub(super) fn id(self) -> &'static str {
        match self {
            Method::App => "app",
            Method::Push => "push",
            Method::Sms => "sms",
            Method::Email => "email",
        }
    }
}

/// One usable method and the factor behind it (none for `App`: any app factor counts).
pub(super) struct Usable {
    pub method: Method,
    pub factor: Option<Factor>,
    pub label: String,
}

impl Engine {
    /// The user's usable methods now, in menu order.
    pub(super) fn usable_methods(
        &self,
        tenant: &str,
        factors: &[Factor],
        d: &Decision,
    ) -> Vec<Usable> {
        let mut out = Vec::new();
        let apps: Vec<&Factor> = factors
            .iter()
            .filter(|f| {
                f.state == FactorState::Confirmed
                    && matches!(f.kind, FactorKind::Totp | FactorKind::Hotp)
                    && d.allows(f.kind.as_str())
            })
            .collect();
        if !apps.is_empty() {
            let label = if apps.iter().all(|f| f.kind == FactorKind::Hotp) {
                "code from your token"
            } else {
                "code from your app"
            };
            out.push(Usable {
                method: Method::App,
                factor: None,
                label: label.into(),
            });
        }
        if let Some(f) = self.push_factor(tenant, factors, d) {
            out.push(Usable {
                method: Method::Push,
                factor: Some(f),
                label: "push to your phone".into(),
            });
        }
        for (kind, method) in [
            (FactorKind::Sms, Method::Sms),
            (FactorKind::Email, Method::Email),
        ] {
            if let Some(f) = self.oob_factor(tenant, factors, kind, d) {
                let to = super::oob::address_of(&f)
                    .map(|a| mask_address(&a))
                    .unwrap_or_default();
                let label = match method {
                    Method::Sms => format!("text message to {to}"),
                    _ => format!("e-mail to {to}"),
                };
                out.push(Usable {
                    method,
                    factor: Some(f),
                    label,
                });
            }
        }
        out
    }

    /// An answer that picks a menu entry: start that factor. `None`: not a pick (a code).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn menu_answer(
        &self,
        tenant: &Tenant,
        user: &User,
        txn: &Transaction,
        req: &AnswerRequest,
        answer: &str,
        d: &Decision,
        now: UnixTime,
    ) -> Result<Option<Outcome>, EngineError> {
        let a = answer.trim();
        let looks_like_code = a.len() > 1 && a.bytes().all(|b| b.is_ascii_digit());
        // Duo (an external service) reads `push`, `sms`... itself.
        if a.is_empty() || a.len() > 6 || looks_like_code || self.external(&tenant.name).is_some() {
            return Ok(None);
        }
        let factors = self.store.factors_of(user.id)?;
        let methods = self.usable_methods(&tenant.name, &factors, d);
        let Some(i) = pick(&methods, a) else {
            return Ok(None);
        };
        self.start_method(
            tenant,
            user,
            (&txn.id, txn.step, txn.first_factor(), txn.expires_at),
            (req.channel.client(), &req.source, &req.prompt),
            &methods[i],
            true,
            now,
        )
        .map(Some)
    }

    /// Start `m` for transaction (id, step, first factor): push it, send its code, or ask
    /// for the app's code. `shown`: the user sees the prompt (number matching possible).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_method(
        &self,
        tenant: &Tenant,
        user: &User,
        (txn_id, step, first, txn_expires): (&str, u32, &str, UnixTime),
        (client, source, code_prompt): (&str, &str, &str),
        m: &Usable,
        shown: bool,
        now: UnixTime,
    ) -> Result<Outcome, EngineError> {
        let prompt = |text: String, reason: String| Outcome {
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
        Ok(match (m.method, &m.factor) {
            (Method::Push, Some(f)) => self.begin_push(
                tenant,
                user,
                f,
                (txn_id, step, txn_expires),
                (client, source),
                first,
                (true, shown),
                now,
            )?,
            (Method::Sms | Method::Email, Some(f)) => {
                // Asking for a code is not a wrong answer: no attempt is counted.
                let sent = self.send_code(&tenant.name, user, f)?;
                prompt(
                    format!("{} Enter the code:", sent.user_text()),
                    sent.reason(),
                )
            }
            _ => prompt(code_prompt.to_string(), "code from app asked".into()),
        })
    }
}

/// The menu entries of `methods`.
pub(super) fn choices(methods: &[Usable]) -> Vec<MenuChoice> {
    methods
        .iter()
        .map(|m| MenuChoice {
            id: m.method.id().to_string(),
            label: m.label.clone(),
        })
        .collect()
}

/// Which method an answer picks: a menu number (`1`..), an id or a common name.
/// Codes (6+ digits) and anything else pick nothing.
pub(super) fn pick(methods: &[Usable], answer: &str) -> Option<usize> {
    let a = answer.trim().to_ascii_lowercase();
    if a.len() == 1 {
        if let Some(n) = a.parse::<usize>().ok().filter(|n| *n >= 1) {
            return (n <= methods.len()).then_some(n - 1);
        }
    }
    let wanted = match a.as_str() {
        "app" | "code" | "totp" | "token" | "hotp" => Method::App,
        "push" => Method::Push,
        "sms" | "text" => Method::Sms,
        "email" | "e-mail" | "mail" => Method::Email,
        _ => return None,
    };
    methods.iter().position(|m| m.method == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(method: Method) -> Usable {
        Usable {
            method,
            factor: None,
            label: String::new(),
        }
    }

    #[test]
    fn answers_pick_by_number_or_name_and_codes_pick_nothing() {
        let menu = [m(Method::App), m(Method::Push), m(Method::Sms)];
        assert_eq!(pick(&menu, "1"), Some(0));
        assert_eq!(pick(&menu, " 2 "), Some(1));
        assert_eq!(pick(&menu, "3"), Some(2));
        assert_eq!(pick(&menu, "4"), None);
        assert_eq!(pick(&menu, "0"), None);
        assert_eq!(pick(&menu, "PUSH"), Some(1));
        assert_eq!(pick(&menu, "sms"), Some(2));
        assert_eq!(pick(&menu, "email"), None);
        assert_eq!(pick(&menu, "123456"), None);
        assert_eq!(pick(&menu, ""), None);
    }
}
