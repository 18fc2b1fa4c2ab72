//! Push approval in the Engine: starting a push for a transaction, reading its decision
//! when the front end polls, and taking the phone's answer (from the HTTP listener).
//!
//! The wait itself is not here: the Engine returns [`Step::Wait`] and the front end either
//! holds the request until the decision lands (RADIUS `auto`) or lets the user poll.

use std::sync::Arc;

use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;

use super::{
    accepted, second_factor::factor_context, txn_ref, Engine, EngineError, Expects, Outcome,
    SendOutcome, Step,
};
use crate::clock::UnixTime;
use crate::codes::hash_code;
use crate::delivery::DeliveryError;
use crate::model::{Factor, FactorKind, FactorState, PushRequest, PushStatus, Tenant, User};
use crate::policy::Decision;
use crate::push::{
    number_choices, PushAnswer, PushDecision, PushNotice, PushParams, PushSender, PushSettings,
    PushView,
};
use crate::store::PushAdded;

/// The detail of a push whose notification never left: it decides nothing.
pub(super) const NOT_SENT: &str = "notification not sent";

/// How long a front end should wait before polling again, in milliseconds.
pub const POLL_AFTER_MS: u32 = 1000;

/// Seconds a push ends before its login: a poll interval and some clock skew between
/// nodes, so that an approval in the push's last second still finds the login.
const PUSH_ENDS_BEFORE_LOGIN: i64 = 3;

/// The shortest push worth sending, in seconds.
const MIN_PUSH_TIME: i64 = 5;

/// Where a transaction's push stands, for the Engine's answer path.
pub(super) enum PushPoll {
    /// Decided or expired: the login ends with this.
    Done(Outcome),
    /// Still waiting and the user gave no code: wait again with this text.
    Waiting(String),
    /// Still waiting, but the user typed something: treat it as a code or a choice.
    Typed,
}

impl Engine {
    /// Send the pushes of `tenant` through `sender`.
    pub fn set_push(&mut self, tenant: &str, sender: Arc<dyn PushSender>, settings: PushSettings) {
        self.pushes.insert(tenant.to_string(), (sender, settings));
    }

    /// Whether `tenant` can push; then the ntfy server a new ntfy factor subscribes to
    /// (None: only webhook factors can be enrolled).
    pub fn push_enrolment_target(&self, tenant: &str) -> Option<Option<&str>> {
        self.pushes
            .get(tenant)
            .map(|(_, settings)| settings.ntfy_url.as_deref())
    }

    /// The user's confirmed push factor, if the tenant can push and `d` allows it.
    pub(super) fn push_factor(
        &self,
        tenant: &str,
        factors: &[Factor],
        d: &Decision,
    ) -> Option<Factor> {
        if !self.pushes.contains_key(tenant) || !d.allows("push") {
            return None;
        }
        factors
            .iter()
            .find(|f| f.kind == FactorKind::Push && f.state == FactorState::Confirmed)
            .cloned()
    }

    /// Send a push for transaction `txn_id` (whose next step is `step`). Returns a Wait,
    /// or, when the push cannot go out, a prompt for a code (`fallback`) or a Reject.
    /// `shown`: the user sees the wait's text (challenge, PAM), so number matching can
    /// apply; a held RADIUS request (`auto`, `append`) shows nothing until it ends.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin_push(
        &self,
        tenant: &Tenant,
        user: &User,
        factor: &Factor,
        (txn_id, step, txn_expires): (&str, u32, UnixTime),
        (client, source): (&str, &str),
        first: &str,
        (fallback, shown): (bool, bool),
        now: UnixTime,
    ) -> Result<Outcome, EngineError> {
        let refuse = |reason: String, user_text: &str| -> Result<Outcome, EngineError> {
            if fallback {
                Ok(Outcome {
                    step: Step::Prompt {
                        txn: txn_ref(txn_id, step),
                        text: format!("{user_text} Enter a code instead:"),
                        echo: false,
                        expects: Expects::Code,
                        choices: Vec::new(),
                    },
                    reason,
                    factors: vec![first.to_string()],
                })
            } else {
                self.store.delete_transaction(txn_id)?;
                Ok(Outcome::reject_with(reason, user_text))
            }
        };
        let Some((sender, settings)) = self.pushes.get(&tenant.name) else {
            return refuse(
                "push not configured for the tenant".into(),
                "Push is not available.",
            );
        };
        // The push ends a little before its login: an approval must reach a poll (on any
        // node) while the login can still take it. Too little left: no push at all.
        let until = txn_expires - PUSH_ENDS_BEFORE_LOGIN;
        if until - now < MIN_PUSH_TIME {
            return refuse(
                format!(
                    "only {} s of the login left: no push sent",
                    txn_expires - now
                ),
                "This login is about to expire.",
            );
        }
        let params: PushParams = match serde_json::from_str(&factor.params) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(factor = %factor.id, error = %e, "push factor params unreadable");
                return refuse(
                    format!("push factor {} is unreadable", factor.id),
                    "Push is not available.",
                );
            }
        };
        let address = match self
            .key
            .open(factor_context(&factor.id).as_bytes(), &factor.sealed_secret)
        {
            Ok(a) => String::from_utf8_lossy(&a).into_owned(),
            Err(e) => {
                tracing::error!(factor = %factor.id, error = %e, "cannot decrypt push address");
                return refuse(
                    format!("push factor {} cannot be decrypted", factor.id),
                    "Push is not available.",
                );
            }
        };
        let mut rng = rand::rngs::OsRng;
        let mut raw = [0u8; 16];
        rng.fill_bytes(&mut raw);
        let id = data_encoding::HEXLOWER.encode(&raw);
        let mut tok = [0u8; 32];
        rng.fill_bytes(&mut tok);
        let token = data_encoding::BASE64URL_NOPAD.encode(&tok);
        let number = (settings.number_matching && shown).then(|| rng.gen_range(10..=99u8));
        let ttl = settings.ttl.min(self.settings.transaction_ttl);
        // Added only under the anti-fatigue cap, in one atomic step: pushes started at the
        // same moment (on any node) never go past it together.
        let added = self.store.add_push_capped(
            &PushRequest {
                id: id.clone(),
                tenant_id: tenant.id,
                user_id: user.id,
                txn_id: txn_id.to_string(),
                factor_id: factor.id.clone(),
                token_hash: hash_code(&self.push_pepper, &token),
                number,
                status: PushStatus::Pending,
                detail: None,
                username: user.name.clone(),
                client: client.to_string(),
                source: source.to_string(),
                created_at: now,
                // Never past the login's own end: an approval after it would be for nothing.
                expires_at: (now + ttl).min(until),
                decided_at: None,
            },
            now - settings.window,
            settings.max_pushes,
        )?;
        if let PushAdded::CapReached { sent } = added {
            return refuse(
                format!(
                    "push refused: {sent} pushes in the last {} s (anti-fatigue cap max_pushes = {})",
                    settings.window, settings.max_pushes
                ),
                "Too many push requests were sent; wait a few minutes.",
            );
        }
        let base = settings.public_url.trim_end_matches('/');
        let notice = PushNotice {
            title: format!("{}: approve login?", settings.issuer),
            message: format!(
                "{} is logging in to {client} from {source}. Not you? Deny.",
                user.name
            ),
            username: user.name.clone(),
            client: client.to_string(),
            source: source.to_string(),
            time: now,
            page_url: format!("{base}/v1/push/{id}?t={token}"),
            approve_url: format!("{base}/v1/push/{id}/approve"),
            deny_url: format!("{base}/v1/push/{id}/deny"),
            token,
            number_matching: number.is_some(),
        };
        super::blocking_point()?;
        if let Err(e) = sender.send(&params, &address, &notice) {
            tracing::warn!(tenant = %tenant.name, user = %user.name,
                provider = sender.provider(params.channel), error = %e, "push not sent");
            self.store
                .decide_push(&id, PushStatus::Denied, Some(NOT_SENT), now)?;
            return refuse(
                format!("push not sent: {e}"),
                "Push is unavailable right now.",
            );
        }
        Ok(Outcome {
            step: Step::Wait {
                txn: txn_ref(txn_id, step),
                text: wait_text(number, false),
                poll_after_ms: POLL_AFTER_MS,
                started: true,
            },
            reason: format!("push sent via {}", sender.provider(params.channel)),
            factors: vec![first.to_string()],
        })
    }

    /// The newest push of a transaction being answered: its decision ends the login.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn poll_push(
        &self,
        user: &User,
        push: &PushRequest,
        typed: &str,
        first: &str,
        source: &str,
        d: &Decision,
        now: UnixTime,
    ) -> Result<PushPoll, EngineError> {
        Ok(match push.status {
            PushStatus::Approved => {
                self.store.delete_transaction(&push.txn_id)?;
                // The phone may be the one just reported lost: its factor removed, or push
                // no longer allowed by the rules, since the push went out.
                let factor_kept = self.store.factors_of(user.id)?.iter().any(|f| {
                    f.id == push.factor_id
                        && f.kind == FactorKind::Push
                        && f.state == FactorState::Confirmed
                });
                if !factor_kept || !d.allows("push") {
                    return Ok(PushPoll::Done(Outcome::reject(format!(
                        "push approved, but {} since it was sent",
                        if factor_kept {
                            "the rules no longer allow push"
                        } else {
                            "its factor was removed"
                        }
                    ))));
                }
                self.remember_if_asked(d, user, source, now)?;
                PushPoll::Done(accepted(user, first, "push", d))
            }
            PushStatus::Denied => {
                self.store.delete_transaction(&push.txn_id)?;
                let detail = push.detail.as_deref().unwrap_or("denied on the device");
                PushPoll::Done(Outcome::reject_with(
                    format!("push {detail}"),
                    "The login was denied on the phone.",
                ))
            }
            // A code typed instead of waiting for the phone. One or two digits are no code:
            // the number the prompt said to pick, typed here by mistake, is a poll (not a
            // wrong code counted toward the lockout).
            PushStatus::Pending if !typed.trim().is_empty() && !is_match_number(typed) => {
                PushPoll::Typed
            }
            PushStatus::Pending if now >= push.expires_at => {
                self.store.delete_transaction(&push.txn_id)?;
                PushPoll::Done(Outcome::reject_with(
                    format!(
                        "push not answered within {} s",
                        push.expires_at - push.created_at
                    ),
                    "The push was not approved in time; start again.",
                ))
            }
            PushStatus::Pending => PushPoll::Waiting(wait_text(push.number, true)),
        })
    }

    /// The phone's answer to push `id`, proven by its single-use `token`. Returns what
    /// became of it and the transaction to wake.
    pub fn answer_push(
        &self,
        id: &str,
        token: &str,
        answer: PushAnswer,
    ) -> Result<(PushDecision, Option<String>), EngineError> {
        let now = self.clock.now();
        let Some(push) = self.checked_push(id, token)? else {
            return Ok((PushDecision::NotFound, None));
        };
        let txn = Some(push.txn_id.clone());
        if push.status != PushStatus::Pending {
            return Ok((PushDecision::AlreadyDecided, txn));
        }
        if now >= push.expires_at {
            return Ok((PushDecision::Expired, txn));
        }
        let (status, detail, decision) = match (answer, push.number) {
            (PushAnswer::Deny, _) => (
                PushStatus::Denied,
                "denied on the device",
                PushDecision::Denied,
            ),
            (PushAnswer::Approve { number: None }, Some(_)) => {
                return Ok((PushDecision::NumberRequired, None))
            }
            (PushAnswer::Approve { number: Some(n) }, Some(right)) if n != right => (
                PushStatus::Denied,
                "denied: wrong number picked on the device",
                PushDecision::WrongNumber,
            ),
            (PushAnswer::Approve { .. }, _) => (
                PushStatus::Approved,
                "approved on the device",
                PushDecision::Approved,
            ),
        };
        if !self.store.decide_push(id, status, Some(detail), now)? {
            return Ok((PushDecision::AlreadyDecided, txn));
        }
        tracing::info!(user = %push.username, client = %push.client, source = %push.source,
            decision = decision.as_str(), "push answered");
        Ok((decision, txn))
    }

    /// Send the confirmation code of a pending push factor through its channel
    /// (`factor enroll push`): the user reads it on the phone and `factor confirm`s it,
    /// which proves the notifications arrive.
    pub fn send_push_enrolment_code(
        &self,
        tenant: &str,
        username: &str,
        factor_id: &str,
    ) -> Result<SendOutcome, EngineError> {
        self.push_enrolment_code(tenant, username, factor_id, None)
    }

    /// [`Engine::send_push_enrolment_code`] at most once per `pause` seconds for the user
    /// (the self-service button): the send is claimed before the push server is asked, so
    /// two clicks at once send one code (`TooSoon` for the other).
    pub fn resend_push_enrolment_code(
        &self,
        tenant: &str,
        username: &str,
        factor_id: &str,
        pause: i64,
    ) -> Result<SendOutcome, EngineError> {
        let limits = crate::store::SendLimits {
            max_per_hour: u32::MAX,
            resend_after: pause,
        };
        self.push_enrolment_code(tenant, username, factor_id, Some(limits))
    }

    fn push_enrolment_code(
        &self,
        tenant: &str,
        username: &str,
        factor_id: &str,
        limits: Option<crate::store::SendLimits>,
    ) -> Result<SendOutcome, EngineError> {
        let Some((sender, settings)) = self.pushes.get(tenant) else {
            return Ok(SendOutcome::NotConfigured);
        };
        let refused = |m: String| Ok(SendOutcome::Failed(DeliveryError::Refused(m)));
        let Some(t) = self.tenant(tenant)? else {
            return refused(format!("tenant '{tenant}' does not exist"));
        };
        let Some(user) = self.store.user_by_name(t.id, username)? else {
            return refused(format!("user '{username}' does not exist"));
        };
        let Some(factor) = self
            .store
            .factors_of(user.id)?
            .into_iter()
            .find(|f| f.id == factor_id && f.kind == FactorKind::Push)
        else {
            return refused(format!("no push factor '{factor_id}'"));
        };
        let (Ok(params), Ok(address)) = (
            serde_json::from_str::<PushParams>(&factor.params),
            self.key
                .open(factor_context(&factor.id).as_bytes(), &factor.sealed_secret),
        ) else {
            return refused(format!("push factor {factor_id} is unreadable"));
        };
        let address = String::from_utf8_lossy(&address).into_owned();
        let mut rng = rand::rngs::OsRng;
        let code: String = (0..super::oob::SENT_CODE_LEN)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let now = self.clock.now();
        let message = format!(
            "Your {} enrolment code is {code}. Give it to whoever is enrolling this phone.",
            settings.issuer
        );
        let title = format!("{}: confirm push enrolment", settings.issuer);
        let hash = super::sent_code_hash(&self.sent_pepper, &factor.id, &code);
        let Some(limits) = limits else {
            super::blocking_point()?;
            if let Err(e) = sender.send_text(&params, &address, &title, &message) {
                return Ok(SendOutcome::Failed(e));
            }
            self.store
                .add_sent_code(user.id, &factor.id, &hash, now + 600, now)?;
            return Ok(SendOutcome::Sent {
                kind: FactorKind::Push,
                to: sender.provider(params.channel).to_string(),
            });
        };
        let mut raw = [0u8; 16];
        rng.fill_bytes(&mut raw);
        let reservation = format!("reserved:{}", data_encoding::HEXLOWER.encode(&raw));
        match self
            .store
            .claim_code_send(user.id, &factor.id, &reservation, limits, now)?
        {
            crate::store::SendClaim::Claimed => {}
            crate::store::SendClaim::TooSoon { last } => {
                return Ok(SendOutcome::TooSoon {
                    wait: last + limits.resend_after - now,
                })
            }
            crate::store::SendClaim::QuotaExceeded => return Ok(SendOutcome::QuotaExceeded),
        }
        if let Err(e) = super::blocking_point() {
            self.store.release_code_send(user.id, &reservation)?;
            return Err(e);
        }
        let sent = sender.send_text(&params, &address, &title, &message);
        match sent {
            Err(e) if !e.may_have_been_sent() => {
                self.store.release_code_send(user.id, &reservation)?;
                return Ok(SendOutcome::Failed(e));
            }
            _ => {}
        }
        // Perhaps sent (no answer): counted, as in `send_code`, and it works if it arrives.
        self.store
            .confirm_code_send(user.id, &reservation, &hash, now + 600)?;
        if let Err(e) = sent {
            return Ok(SendOutcome::Failed(e));
        }
        Ok(SendOutcome::Sent {
            kind: FactorKind::Push,
            to: sender.provider(params.channel).to_string(),
        })
    }

    /// What the approval page shows for push `id`, if `token` is its token.
    pub fn push_view(&self, id: &str, token: &str) -> Result<Option<PushView>, EngineError> {
        let now = self.clock.now();
        let Some(push) = self.checked_push(id, token)? else {
            return Ok(None);
        };
        let status = match push.status {
            PushStatus::Pending if now >= push.expires_at => "expired",
            s => s.as_str(),
        };
        Ok(Some(PushView {
            username: push.username,
            client: push.client,
            source: push.source,
            created_at: push.created_at,
            expires_at: push.expires_at,
            status: status.to_string(),
            choices: push
                .number
                // Seeded by the token's keyed hash, which only the server can compute: the
                // push id is in the page's URL, and decoys derived from it alone would let
                // a program find the right number without seeing the login prompt.
                .map(|n| number_choices(n, push.token_hash.as_bytes()))
                .unwrap_or_default(),
        }))
    }

    /// The push `id` if `token` is its token (compared in constant time).
    fn checked_push(&self, id: &str, token: &str) -> Result<Option<PushRequest>, EngineError> {
        if id.len() != 32 || token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let Some(push) = self.store.push_by_id(id)? else {
            return Ok(None);
        };
        let given = hash_code(&self.push_pepper, token);
        if bool::from(given.as_bytes().ct_eq(push.token_hash.as_bytes())) {
            Ok(Some(push))
        } else {
            Ok(None)
        }
    }
}

/// What the user is told while a push waits.
fn wait_text(number: Option<u8>, again: bool) -> String {
    let lead = if again { "Not approved yet. " } else { "" };
    match number {
        Some(n) => format!(
            "{lead}Approve the request on your phone and pick {n}, then press Enter (or type a code):"
        ),
        None => {
            format!("{lead}Approve the request on your phone, then press Enter (or type a code):")
        }
    }
}

/// One or two digits: what number matching asks the user to pick on the phone, never a
/// code (codes have six digits or more).
fn is_match_number(typed: &str) -> bool {
    let t = typed.trim();
    (1..=2).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
}
