//! Sessions of the web pages: an HMAC-signed cookie value under a key derived from the
//! master key (nothing to store, so every node accepts it), valid [`SESSION_TTL`] seconds
//! from login. Each form carries a CSRF token bound to the session (an HMAC of the cookie
//! value), compared in constant time. A login form gets a short pre-session of its own, so
//! the login POST is bound too.

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use portcullis_core::model::User;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How long a session lives (from login; not extended by use).
pub const SESSION_TTL: i64 = 15 * 60;

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Before login: binds the login form's POST.
    Pre,
    /// Self-service: `subject` is the user name.
    My,
    /// Admin pages: `subject` is the admin token's id (checked again on every request).
    Admin,
}

/// Which user, exactly, a self-service session was issued to: the row's id and creation
/// time (a user deleted and made again under the same name is someone else) and the
/// user's `session_epoch` then. The pages compare it with the user as stored on every
/// request (the read they already make), so raising the epoch (factors reset or removed
/// by an administrator, password set, user disabled) ends every session issued before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBinding {
    pub id: i64,
    pub created_at: i64,
    pub epoch: i64,
}

impl UserBinding {
    pub fn of(u: &User) -> Self {
        Self {
            id: u.id,
            created_at: u.created_at,
            epoch: u.session_epoch,
        }
    }
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub kind: Kind,
    pub tenant: String,
    pub subject: String,
    pub expires_at: i64,
    nonce: String,
    /// For [`Kind::My`]: the user it was issued to ([`Session::still_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<UserBinding>,
}

impl Session {
    /// Whether this session may still act for `u` as stored now: issued to this very user
    /// under its current session epoch. A session without a binding (Pre, Admin, or a
    /// cookie from before bindings) is no one's.
    pub fn still_of(&self, u: &User) -> bool {
        self.user.is_some_and(|b| b == UserBinding::of(u))
    }
}

/// Signs and checks session values.
pub struct Signer {
    key: Zeroizing<[u8; 32]>,
}

fn mac(key: &[u8; 32], label: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(label);
    m.update(&[0]);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

impl Signer {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key }
    }

    /// A new session's cookie value (a login form's, or the admin pages').
    pub fn issue(&self, kind: Kind, tenant: &str, subject: &str, now: i64) -> String {
        self.issue_bound(kind, tenant, subject, None, now)
    }

    /// A new self-service session of user `u` of `tenant`, bound to it as it is now.
    pub fn issue_my(&self, tenant: &str, u: &User, now: i64) -> String {
        self.issue_bound(Kind::My, tenant, &u.name, Some(UserBinding::of(u)), now)
    }

    fn issue_bound(
        &self,
        kind: Kind,
        tenant: &str,
        subject: &str,
        user: Option<UserBinding>,
        now: i64,
    ) -> String {
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let s = Session {
            kind,
            tenant: tenant.to_string(),
            subject: subject.to_string(),
            expires_at: now + SESSION_TTL,
            nonce: data_encoding::HEXLOWER.encode(&nonce),
            user,
        };
        let payload = data_encoding::BASE64URL_NOPAD
            .encode(serde_json::to_string(&s).unwrap_or_default().as_bytes());
        let sig =
            data_encoding::BASE64URL_NOPAD.encode(&mac(&self.key, b"session", payload.as_bytes()));
        format!("{payload}.{sig}")
    }

    /// The session of `value` if its signature is ours, its kind is `kind` and it has not
    /// expired.
    pub fn verify(&self, value: &str, kind: Kind, now: i64) -> Option<Session> {
        let (payload, sig) = value.split_once('.')?;
        let sig = data_encoding::BASE64URL_NOPAD.decode(sig.as_bytes()).ok()?;
        let expected = mac(&self.key, b"session", payload.as_bytes());
        if !bool::from(expected.ct_eq(&sig)) {
            return None;
        }
        let json = data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .ok()?;
        let s: Session = serde_json::from_slice(&json).ok()?;
        (s.kind == kind && s.expires_at > now).then_some(s)
    }

    /// The CSRF token of the session whose cookie value is `value`.
    pub fn csrf(&self, value: &str) -> String {
        data_encoding::BASE64URL_NOPAD.encode(&mac(&self.key, b"csrf", value.as_bytes()))
    }

    /// Whether `presented` is the CSRF token of the session `value` (constant time).
    pub fn check_csrf(&self, value: &str, presented: &str) -> bool {
        let expected = self.csrf(value);
        expected.len() == presented.len()
            && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure when the pages are served over
/// https; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, path: &str, secure: bool, max_age: i64) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(b: u8) -> Signer {
        Signer::new(Zeroizing::new([b; 32]))
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_only_for_its_kind() {
        let s = signer(1);
        let v = s.issue(Kind::My, "acme", "alice", 1000);
        let got = s.verify(&v, Kind::My, 1000).unwrap();
        assert_eq!(
            (got.tenant.as_str(), got.subject.as_str()),
            ("acme", "alice")
        );
        assert!(s.verify(&v, Kind::My, 1000 + SESSION_TTL - 1).is_some());
        assert!(
            s.verify(&v, Kind::My, 1000 + SESSION_TTL).is_none(),
            "expired"
        );
        assert!(s.verify(&v, Kind::Admin, 1000).is_none(), "other kind");
        assert!(signer(2).verify(&v, Kind::My, 1000).is_none(), "other key");
    }

    #[test]
    fn a_changed_session_is_refused() {
        let s = signer(1);
        let v = s.issue(Kind::My, "acme", "alice", 1000);
        let (payload, sig) = v.split_once('.').unwrap();
        // Another user in the same signature: refused.
        let forged = data_encoding::BASE64URL_NOPAD.encode(
            String::from_utf8(
                data_encoding::BASE64URL_NOPAD
                    .decode(payload.as_bytes())
                    .unwrap(),
            )
            .unwrap()
            .replace("alice", "admin")
            .as_bytes(),
        );
        assert!(s
            .verify(&format!("{forged}.{sig}"), Kind::My, 1000)
            .is_none());
        assert!(s.verify(payload, Kind::My, 1000).is_none());
        assert!(s.verify("", Kind::My, 1000).is_none());
        assert!(s.verify("a.b.c", Kind::My, 1000).is_none());
    }

    fn user(id: i64, created_at: i64, epoch: i64) -> User {
        User {
            id,
            tenant_id: 1,
            name: "alice".into(),
            password_hash: None,
            email: None,
            phone: None,
            groups: Vec::new(),
            disabled: false,
            created_at,
            attributes: Default::default(),
            session_epoch: epoch,
        }
    }

    #[test]
    fn a_my_session_is_only_of_the_user_and_epoch_it_was_issued_to() {
        let s = signer(1);
        let u = user(7, 500, 3);
        let v = s.issue_my("acme", &u, 1000);
        let got = s.verify(&v, Kind::My, 1000).unwrap();
        assert_eq!(got.subject, "alice");
        assert!(got.still_of(&u));
        assert!(!got.still_of(&user(7, 500, 4)), "epoch raised");
        assert!(!got.still_of(&user(8, 500, 3)), "another row");
        assert!(!got.still_of(&user(7, 501, 3)), "made again");
        // Sessions without a binding are no one's.
        let plain = s.issue(Kind::My, "acme", "alice", 1000);
        assert!(!s.verify(&plain, Kind::My, 1000).unwrap().still_of(&u));
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let s = signer(1);
        let a = s.issue(Kind::My, "acme", "alice", 1000);
        let b = s.issue(Kind::My, "acme", "alice", 1000);
        assert_ne!(a, b, "every login is a new session");
        let t = s.csrf(&a);
        assert!(s.check_csrf(&a, &t));
        assert!(!s.check_csrf(&b, &t), "another session's token");
        assert!(!s.check_csrf(&a, ""));
        assert!(!s.check_csrf(&a, &t[1..]));
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "x=1; pc_my=abc.def; y=2".parse().unwrap());
        assert_eq!(cookie(&h, "pc_my").as_deref(), Some("abc.def"));
        assert_eq!(cookie(&h, "pc"), None);
        let c = set_cookie("pc_my", "v", "/my", true, 900);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("pc_my", "v", "/my", false, 900).contains("Secure"));
    }
}
