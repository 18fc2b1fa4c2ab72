//! Push approval: the types the Engine and the notification channels share.
//!
//! A login that uses push stores a [`PushRequest`](crate::model::PushRequest), sends a
//! [`PushNotice`] to the factor's channel (an ntfy topic or a webhook URL, sealed in the
//! factor), and waits for the phone's answer on the daemon's HTTP listener. The answer link
//! carries the push id and a single-use random token; only the token's keyed hash is kept.
//! Channels (ntfy, webhook) implement [`PushSender`] in the server crate.

use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryError;

/// Where a push factor's notifications go, stored as the factor's JSON `params`; the
/// address itself (topic or URL, a secret) is sealed in the factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushChannel {
    /// An unguessable topic on the tenant's ntfy server.
    Ntfy,
    /// A URL that receives a JSON POST.
    Webhook,
}

/// The JSON `params` of a push factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushParams {
    pub channel: PushChannel,
    /// A webhook that a tenant's token named: posted to only at public addresses, checked
    /// again at every connection (its name's DNS answer may change after the enrolment's
    /// check) and never through a redirect. Webhooks of the operator may be internal.
    #[serde(default, skip_serializing_if = "is_false")]
    pub public_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A webhook to enrol: its URL, and whether it must stay on public addresses (one named by
/// a tenant's token, see [`PushParams::public_only`]).
#[derive(Debug, Clone, Copy)]
pub struct WebhookTarget<'a> {
    pub url: &'a str,
    pub public_only: bool,
}

/// One notification: the login's context and the links that answer it.
#[derive(Clone)]
pub struct PushNotice {
    pub title: String,
    /// Login context for the user: who, where from, through what, when.
    pub message: String,
    pub username: String,
    pub client: String,
    pub source: String,
    pub time: i64,
    /// The approval page (GET shows context and Approve/Deny).
    pub page_url: String,
    /// `POST` with `Authorization: Bearer {token}` approves (only without number matching).
    pub approve_url: String,
    /// `POST` with `Authorization: Bearer {token}` denies.
    pub deny_url: String,
    /// The single-use answer token.
    pub token: String,
    /// With number matching the approval must pick the prompt's number on the page.
    pub number_matching: bool,
}

impl std::fmt::Debug for PushNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushNotice")
            .field("title", &self.title)
            .field("username", &self.username)
            .field("client", &self.client)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Delivers push notifications of one tenant.
pub trait PushSender: Send + Sync + 'static {
    /// Provider name for logs and audit (`ntfy`, `webhook`).
    fn provider(&self, channel: PushChannel) -> &'static str;
    /// Send `notice` to `address` (the ntfy topic or the webhook URL) of a factor with
    /// `params`. Bounded in time.
    fn send(
        &self,
        params: &PushParams,
        address: &str,
        notice: &PushNotice,
    ) -> Result<(), DeliveryError>;
    /// Send a plain message without answer links (the enrolment code). Bounded in time.
    fn send_text(
        &self,
        params: &PushParams,
        address: &str,
        title: &str,
        message: &str,
    ) -> Result<(), DeliveryError>;
}

/// Per-tenant push settings the Engine needs.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Base of the answer links: `[http] public_url`.
    pub public_url: String,
    pub number_matching: bool,
    /// Seconds a push may wait for its answer.
    pub ttl: i64,
    /// At most this many pushes per user per `window` seconds.
    pub max_pushes: u32,
    pub window: i64,
    pub issuer: String,
    /// Base URL of the ntfy server phones subscribe to (`ntfy_url`, no trailing `/`); without
    /// it only webhook factors can be enrolled.
    pub ntfy_url: Option<String>,
}

/// What the phone answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    /// Approve; with number matching, the number the user picked.
    Approve {
        number: Option<u8>,
    },
    Deny,
}

/// What became of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDecision {
    Approved,
    Denied,
    /// Number matching: the wrong number was picked, which denies the login.
    WrongNumber,
    /// Number matching is on and no number was given: nothing was decided.
    NumberRequired,
    /// Answered before (or by another node): nothing changed.
    AlreadyDecided,
    /// Too late: the push expired.
    Expired,
    /// No such push, or the token does not match: nothing was decided.
    NotFound,
}

impl PushDecision {
    /// Short text for the approval page and JSON answers.
    pub fn as_str(self) -> &'static str {
        match self {
            PushDecision::Approved => "approved",
            PushDecision::Denied => "denied",
            PushDecision::WrongNumber => "wrong_number",
            PushDecision::NumberRequired => "number_required",
            PushDecision::AlreadyDecided => "already_decided",
            PushDecision::Expired => "expired",
            PushDecision::NotFound => "not_found",
        }
    }
}

/// What the approval page shows (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushView {
    pub username: String,
    pub client: String,
    pub source: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// `pending`, `approved`, `denied`, or `expired`.
    pub status: String,
    /// With number matching: the numbers to pick from (one of them is the prompt's).
    pub choices: Vec<u8>,
}

/// Three numbers to pick from, one of them `right`, the order and the others derived from
/// `seed` (a secret of the push, never its public id) so that reloading the page shows
/// the same ones.
pub fn number_choices(right: u8, seed: &[u8]) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut next = || {
        for b in seed {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut out = vec![right];
    while out.len() < 3 {
        let n = 10 + (next() % 90) as u8;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    let pos = (next() % 3) as usize;
    out.swap(0, pos);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn choices_hold_the_right_number_once_and_are_stable() {
        for right in [10u8, 42, 99] {
            let a = super::number_choices(right, b"abc");
            assert_eq!(a.len(), 3);
            assert_eq!(a.iter().filter(|n| **n == right).count(), 1);
            assert!(a.iter().all(|n| (10..=99).contains(n)));
            assert_eq!(a, super::number_choices(right, b"abc"));
        }
    }
}
