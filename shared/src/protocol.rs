//! The PAM step protocol between `pam_portcullis.so` and `portcullis serve`.
//!
//! Pure: types, encoding and decoding, no I/O beyond the two blocking frame helpers the
//! module uses. A frame is a 4-byte big-endian length followed by that many bytes of JSON
//! (at most [`MAX_FRAME_LEN`]). Every request and response carries `"v": 1`
//! ([`VERSION`]); a daemon answers a request of another version with an
//! [`ErrorCode::UnsupportedVersion`] error frame.
//!
//! Each request is self-contained (it names tenant, user, service and the transaction), so
//! the module may open one connection per step and a login may continue on another node.
//!
//! ```text
//! -> {"v":1,"origin":{"tenant":"acme","user":"alice","service":"sshd","host":"web1",
//!       "rhost":"192.0.2.7","tty":"ssh"},
//!     "step":{"type":"start","first_factor":"portcullis","password":"...","unenrolled":"deny"}}
//! <- {"v":1,"step":{"type":"prompt","txn":"4f..e1.0","text":"Verification code (app): ",
//!       "echo":false,"expects":"code"}}
//! -> {"v":1,"origin":{...},"step":{"type":"answer","txn":"4f..e1.0","answer":"123456"}}
//! <- {"v":1,"step":{"type":"accept","factors":["password","totp"]}}
//! ```

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The largest frame body either side accepts, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Length of the frame header (big-endian body length).
pub const HEADER_LEN: usize = 4;

/// How long the daemon holds a [`RequestStep::Poll`] for the push decision before it
/// answers "not approved yet". A module waits this much longer than its own deadline for
/// a poll's answer, so that a held poll is never mistaken for a daemon that is gone.
pub const POLL_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

impl Request {
    /// The longest a module should wait for the answer to this request when its own
    /// deadline per exchange is `timeout`: a poll is held by the daemon (see [`POLL_HOLD`]).
    pub fn answer_within(&self, timeout: std::time::Duration) -> std::time::Duration {
        match self.step {
            RequestStep::Poll { .. } => timeout + POLL_HOLD,
            _ => timeout,
        }
    }
}

/// A password, code or other answer: zeroised on drop, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Who asks: the PAM items of the login, for policy, transaction binding and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The tenant of the module's `tenant=` argument.
    pub tenant: String,
    /// PAM_USER.
    pub user: String,
    /// PAM_SERVICE (sshd, sudo, login).
    pub service: String,
    /// The host the module runs on.
    pub host: String,
    /// PAM_RHOST: where the user comes from (sshd sets the client address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhost: Option<String>,
    /// PAM_TTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// PAM_RUSER: who asks (sudo sets the invoking user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruser: Option<String>,
}

impl Origin {
    /// Where the user is, for binding a transaction: the remote host, else the tty, else
    /// `local`.
    pub fn source(&self) -> String {
        match (&self.rhost, &self.tty) {
            (Some(r), _) if !r.is_empty() => r.clone(),
            (_, Some(t)) if !t.is_empty() => format!("tty:{t}"),
            _ => "local".into(),
        }
    }
}

/// Who checks the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstFactor {
    /// The daemon checks `password` (module argument `first_factor=portcullis`).
    Portcullis,
    /// Another PAM module checked it, or nobody does (`first_factor=stack|none`); only the
    /// second factor is asked. No password is sent.
    Delegated,
}

/// What happens to a user without a usable second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unenrolled {
    Deny,
    Allow,
    /// Enrolment during login: the prompt carries an enrolment link (the daemon needs
    /// `[http] public_url`, else it behaves as `deny`).
    Enroll,
}

/// A request from the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    pub origin: Origin,
    pub step: RequestStep,
}

/// What the module asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestStep {
    /// Begin a login.
    Start {
        first_factor: FirstFactor,
        /// The password, with `first_factor = portcullis` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Secret>,
        unenrolled: Unenrolled,
    },
    /// The user's reply to a prompt (a code, a password, or the id of a menu choice).
    Answer { txn: String, answer: Secret },
    /// After a `wait` step: has the user approved on their device?
    Poll { txn: String },
}

/// A reply of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub step: ResponseStep,
}

impl Response {
    pub fn new(step: ResponseStep) -> Self {
        Response { v: VERSION, step }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::new(ResponseStep::Error {
            code,
            message: message.into(),
        })
    }
}

/// What the module must do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseStep {
    /// Let the user in; `factors` names what was used (`password`, `totp`, ...).
    Accept { factors: Vec<String> },
    /// Refuse, showing `message` to the user.
    Reject { message: String },
    /// Ask the user and answer with [`RequestStep::Answer`] quoting `txn`.
    Prompt {
        txn: String,
        text: String,
        echo: bool,
        expects: Expects,
        /// With `expects = choice`: the menu. The answer is the chosen `id`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<Choice>,
    },
    /// An out-of-band factor (push) was started: tell the user (a prompt they answer with
    /// Enter, since sshd holds info messages back), then [`RequestStep::Poll`].
    Wait { txn: String, text: String },
    /// The request could not be served; nobody gets in because of it.
    Error { code: ErrorCode, message: String },
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expects {
    Password,
    Code,
    Choice,
}

/// One entry of a factor menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// Why a request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a request of this version's shape.
    Malformed,
    /// The frame is longer than [`MAX_FRAME_LEN`].
    TooLarge,
    /// The request's `v` is not one this daemon speaks.
    UnsupportedVersion,
    /// The peer may not use this socket (its uid is not in `pam.allowed_uids`).
    Forbidden,
    /// A step this daemon does not implement (yet).
    Unsupported,
    /// Too many connections at once.
    Busy,
    /// The daemon failed (store error); see its log.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A frame or message that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("frame of {len} bytes is larger than the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge { len: usize },
    #[error("empty frame: a frame holds one JSON request")]
    Empty,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("protocol version {got} is not supported (this side speaks version {VERSION}); install matching versions of pam_portcullis and portcullis")]
    UnsupportedVersion { got: u32 },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// The error code of the frame that answers this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::Malformed,
        }
    }
}

/// The body length announced by a frame header.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(ProtocolError::Empty);
    }
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::TooLarge { len });
    }
    Ok(len)
}

/// A message as one frame (header and body).
/// The body is serialised in place after the header (a request may hold a password: no
/// second copy is made; room is reserved so that small frames are not reallocated).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = Vec::with_capacity(2048);
    frame.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut frame, msg) {
        frame.zeroize();
        return Err(ProtocolError::Malformed(e.to_string()));
    }
    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        frame.zeroize();
        return Err(ProtocolError::TooLarge { len });
    }
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// serde_json's message, unless it could quote a value of the input (a password sent in
/// the wrong field must not end up in a log or an error frame).
fn safe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let names_a_field = text.starts_with("unknown field") || text.starts_with("missing field");
    if !names_a_field && text.contains(['"', '\'', '`']) {
        format!(
            "a field has the wrong type or value at line {} column {}",
            e.line(),
            e.column()
        )
    } else {
        text
    }
}

#[derive(Deserialize)]
struct Probe {
    v: Option<serde_json::Value>,
}

fn check_version(body: &[u8]) -> Result<(), ProtocolError> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(safe_json_error(&e)))?;
    match probe.v {
        None => Err(ProtocolError::Malformed(
            "no \"v\" (protocol version) field".into(),
        )),
        Some(v) => match v.as_u64() {
            Some(n) if n == VERSION as u64 => Ok(()),
            Some(n) => Err(ProtocolError::UnsupportedVersion {
                got: n.min(u32::MAX as u64) as u32,
            }),
            None => Err(ProtocolError::Malformed(
                "\"v\" must be a whole number".into(),
            )),
        },
    }
}

/// A request from a frame body.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    check_version(body)?;
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(safe_json_error(&e)))
}

/// A response from a frame body.
pub fn decode_response(body: &[u8]) -> Result<Response, ProtocolError> {
    check_version(body)?;
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(safe_json_error(&e)))
}

/// Reads one frame body (blocking; the caller sets the stream's timeouts).
pub fn read_frame<R: Read>(r: &mut R) -> Result<Vec<u8>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = body_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Writes one message as a frame (blocking; the caller sets the stream's timeouts).
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let mut frame = encode(msg)?;
    let result = w.write_all(&frame).and_then(|()| w.flush());
    frame.zeroize();
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            tenant: "acme".into(),
            user: "alice".into(),
            service: "sshd".into(),
            host: "web1".into(),
            rhost: Some("192.0.2.7".into()),
            tty: Some("ssh".into()),
            ruser: None,
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        &frame[HEADER_LEN..]
    }

    #[test]
    fn start_request_round_trips() {
        let req = Request {
            v: VERSION,
            origin: origin(),
            step: RequestStep::Start {
                first_factor: FirstFactor::Portcullis,
                password: Some(Secret::new("hunter2".into())),
                unenrolled: Unenrolled::Deny,
            },
        };
        let frame = encode(&req).unwrap();
        assert_eq!(
            body_len(frame[..4].try_into().unwrap()).unwrap(),
            frame.len() - 4
        );
        assert_eq!(decode_request(body(&frame)).unwrap(), req);
    }

    #[test]
    fn responses_round_trip() {
        for step in [
            ResponseStep::Accept {
                factors: vec!["password".into(), "totp".into()],
            },
            ResponseStep::Reject {
                message: "no".into(),
            },
            ResponseStep::Prompt {
                txn: "t.0".into(),
                text: "Code: ".into(),
                echo: false,
                expects: Expects::Choice,
                choices: vec![Choice {
                    id: "push".into(),
                    label: "Push to phone".into(),
                }],
            },
            ResponseStep::Wait {
                txn: "t.1".into(),
                text: "Approve".into(),
            },
            ResponseStep::Error {
                code: ErrorCode::Busy,
                message: "later".into(),
            },
        ] {
            let r = Response::new(step);
            assert_eq!(decode_response(body(&encode(&r).unwrap())).unwrap(), r);
        }
    }

    #[test]
    fn the_documented_wire_form_decodes() {
        let text = r#"{"v":1,"origin":{"tenant":"acme","user":"alice","service":"sshd","host":"web1"},
            "step":{"type":"answer","txn":"ab.0","answer":"123456"}}"#;
        let req = decode_request(text.as_bytes()).unwrap();
        assert_eq!(req.origin.source(), "local");
        assert!(matches!(req.step, RequestStep::Answer { .. }));
    }

    #[test]
    fn other_versions_are_refused_with_their_own_code() {
        let e = decode_request(br#"{"v":2,"whatever":true}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        let e = decode_request(br#"{"origin":{}}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        let e = decode_request(br#"{"v":"1"}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
    }

    #[test]
    fn garbage_and_unknown_fields_are_malformed() {
        assert!(matches!(
            decode_request(b"\xff\x00not json"),
            Err(ProtocolError::Malformed(_))
        ));
        let text = r#"{"v":1,"origin":{"tenant":"a","user":"u","service":"s","host":"h","colour":1},
            "step":{"type":"poll","txn":"x"}}"#;
        let e = decode_request(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_misplaced_secret_is_not_quoted_in_the_error() {
        let text = r#"{"v":1,"origin":{"tenant":"a","user":"u","service":"s","host":"h"},
            "step":{"type":"start","first_factor":"hunter2-secret","unenrolled":"deny"}}"#;
        let e = decode_request(text.as_bytes()).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn oversize_and_empty_headers_are_refused() {
        assert!(matches!(
            body_len(((MAX_FRAME_LEN + 1) as u32).to_be_bytes()),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(body_len([0; 4]), Err(ProtocolError::Empty)));
        assert_eq!(
            body_len((MAX_FRAME_LEN as u32).to_be_bytes()).unwrap(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let s = Secret::new("123456".into());
        assert!(!format!("{s:?}").contains("123456"));
    }

    #[test]
    fn blocking_helpers_read_what_they_write() {
        let r = Response::new(ResponseStep::Reject {
            message: "bye".into(),
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &r).unwrap();
        let body = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(decode_response(&body).unwrap(), r);
    }
}
