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
        /// Logins this host let in without a second factor (`failmode=safe`) while the
        /// daemon could not be reached, not reported yet: the daemon audits each one
        /// (at most [`MAX_FAIL_OPENS`]; see [`FailOpenReport`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fail_opens: Vec<FailOpenReport>,
    },
    /// The user's reply to a prompt (a code, a password, or the id of a menu choice).
    Answer { txn: String, answer: Secret },
    /// After a `wait` step: has the user approved on their device?
    Poll { txn: String },
}

/// The most fail-open reports one request may carry.
pub const MAX_FAIL_OPENS: usize = 64;
/// The longest `user` of a fail-open report, in bytes.
pub const MAX_REPORT_USER: usize = 128;
/// The longest `service` of a fail-open report, in bytes.
pub const MAX_REPORT_SERVICE: usize = 64;
/// The longest `rhost` of a fail-open report, in bytes.
pub const MAX_REPORT_RHOST: usize = 128;
/// The longest `why` of a fail-open report, in bytes.
pub const MAX_REPORT_WHY: usize = 300;
/// The longest `id` of a fail-open report.
pub const MAX_REPORT_ID: usize = 64;

/// A tenant's `pam_fail_mode`: whether its hosts' `failmode=safe` may let a login in
/// without a second factor when the daemon cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Never (the default): `failmode=safe` on a host refuses like `failmode=secure`.
    Secure,
    /// A host with `failmode=safe` may let a login in during an outage; it reports each
    /// such login to the daemon afterwards, which audits it.
    Safe,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Secure => "secure",
            FailMode::Safe => "safe",
        }
    }
}

/// One login a host let in without a second factor (`failmode=safe`) because the daemon
/// could not be reached, reported with the next `start` that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailOpenReport {
    /// The report's own name, made by the module when it kept the report (at most
    /// [`MAX_REPORT_ID`] bytes of `[A-Za-z0-9._-]`): a report sent again (its answer was
    /// lost, its sender died before removing it) is recorded once. Reports of older
    /// modules have none, and are recorded each time they arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When (Unix seconds, the host's clock).
    pub at: u64,
    /// PAM_USER.
    pub user: String,
    /// PAM_SERVICE.
    pub service: String,
    /// PAM_RHOST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhost: Option<String>,
    /// Why the daemon could not be reached (the module's words: the failed connect).
    pub why: String,
}

impl FailOpenReport {
    /// Whether the report is within the protocol's limits; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("user", self.user.as_str(), MAX_REPORT_USER),
            ("service", self.service.as_str(), MAX_REPORT_SERVICE),
            (
                "rhost",
                self.rhost.as_deref().unwrap_or(""),
                MAX_REPORT_RHOST,
            ),
            ("why", self.why.as_str(), MAX_REPORT_WHY),
        ];
        for (name, value, max) in fields {
            if value.len() > max {
                return Err(format!(
                    "fail_opens: \"{name}\" of {} bytes is longer than the limit of {max}",
                    value.len()
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("fail_opens: \"{name}\" holds a control character"));
            }
        }
        if let Some(id) = &self.id {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if id.is_empty() || id.len() > MAX_REPORT_ID || !id.chars().all(allowed) {
                return Err(format!(
                    "fail_opens: \"id\" must be 1 to {MAX_REPORT_ID} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
                ));
            }
        }
        Ok(())
    }
}

/// A reply of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub step: ResponseStep,
    /// The tenant's `pam_fail_mode`, on every answer to a request whose tenant exists: a
    /// host with `failmode=safe` keeps the last one it got and fails open only if it is
    /// `safe`. Absent from older daemons (and then never `safe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailMode>,
}

impl Response {
    pub fn new(step: ResponseStep) -> Self {
        Response {
            v: VERSION,
            step,
            fail_mode: None,
        }
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

/// A request from a frame body. Fail-open reports beyond [`MAX_FAIL_OPENS`] or the field
/// limits make it malformed.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    check_version(body)?;
    let req: Request =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(safe_json_error(&e)))?;
    if let RequestStep::Start { fail_opens, .. } = &req.step {
        if fail_opens.len() > MAX_FAIL_OPENS {
            return Err(ProtocolError::Malformed(format!(
                "fail_opens: {} reports, more than the limit of {MAX_FAIL_OPENS} per request",
                fail_opens.len()
            )));
        }
        for report in fail_opens {
            report.check().map_err(ProtocolError::Malformed)?;
        }
    }
    Ok(req)
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
                fail_opens: vec![],
            },
        };
        let frame = encode(&req).unwrap();
        assert_eq!(
            body_len(frame[..4].try_into().unwrap()).unwrap(),
            frame.len() - 4
        );
        assert_eq!(decode_request(body(&frame)).unwrap(), req);
    }

    fn report(i: u64) -> FailOpenReport {
        FailOpenReport {
            id: Some(format!("0123456789abcdef0123456789abcdef-{i}")),
            at: 1_800_000_000 + i,
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.7".into()),
            why: "connect to /run/portcullis/pam.sock: connection refused".into(),
        }
    }

    fn start_with(fail_opens: Vec<FailOpenReport>) -> Request {
        Request {
            v: VERSION,
            origin: origin(),
            step: RequestStep::Start {
                first_factor: FirstFactor::Delegated,
                password: None,
                unenrolled: Unenrolled::Deny,
                fail_opens,
            },
        }
    }

    #[test]
    fn a_start_without_fail_open_reports_is_what_older_daemons_read() {
        // Older daemons refuse unknown fields of a start: none is sent when there is
        // nothing to report, and a start of an older module (no field) decodes.
        let json = serde_json::to_string(&start_with(vec![])).unwrap();
        assert!(!json.contains("fail_opens"), "{json}");
        let old = r#"{"v":1,"origin":{"tenant":"acme","user":"alice","service":"sshd","host":"web1"},
            "step":{"type":"start","first_factor":"delegated","unenrolled":"deny"}}"#;
        match decode_request(old.as_bytes()).unwrap().step {
            RequestStep::Start { fail_opens, .. } => assert!(fail_opens.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fail_open_reports_round_trip_and_are_bounded() {
        let req = start_with((0..MAX_FAIL_OPENS as u64).map(report).collect());
        let frame = encode(&req).unwrap();
        assert_eq!(decode_request(body(&frame)).unwrap(), req);
        // Without rhost.
        let mut r = report(0);
        r.rhost = None;
        let req = start_with(vec![r]);
        let json = serde_json::to_string(&req).unwrap();
        assert!(!json.contains("rhost\":null"), "{json}");
        assert_eq!(decode_request(json.as_bytes()).unwrap(), req);

        // One report too many.
        let req = start_with((0..=MAX_FAIL_OPENS as u64).map(report).collect());
        let e = decode_request(body(&encode(&req).unwrap())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        assert!(e.to_string().contains("more than the limit of 64"), "{e}");
        // An over-long field, a control character.
        for (field, bad) in [
            ("user", {
                let mut r = report(0);
                r.user = "u".repeat(MAX_REPORT_USER + 1);
                r
            }),
            ("service", {
                let mut r = report(0);
                r.service = "s".repeat(MAX_REPORT_SERVICE + 1);
                r
            }),
            ("rhost", {
                let mut r = report(0);
                r.rhost = Some("h".repeat(MAX_REPORT_RHOST + 1));
                r
            }),
            ("why", {
                let mut r = report(0);
                r.why = "w".repeat(MAX_REPORT_WHY + 1);
                r
            }),
            ("why", {
                let mut r = report(0);
                r.why = "a\nforged log line".into();
                r
            }),
            ("id", {
                let mut r = report(0);
                r.id = Some("i".repeat(MAX_REPORT_ID + 1));
                r
            }),
            ("id", {
                let mut r = report(0);
                r.id = Some("a b".into());
                r
            }),
            ("id", {
                let mut r = report(0);
                r.id = Some(String::new());
                r
            }),
        ] {
            let e = decode_request(body(&encode(&start_with(vec![bad])).unwrap())).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Malformed, "{field}");
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        // At the limits: fine.
        let mut r = report(0);
        r.user = "u".repeat(MAX_REPORT_USER);
        r.why = "w".repeat(MAX_REPORT_WHY);
        r.id = Some("i".repeat(MAX_REPORT_ID));
        assert!(decode_request(body(&encode(&start_with(vec![r])).unwrap())).is_ok());
        // A report of an older module has no id.
        let mut r = report(0);
        r.id = None;
        let json = serde_json::to_string(&start_with(vec![r.clone()])).unwrap();
        assert!(!json.contains("\"id\""), "{json}");
        assert_eq!(
            decode_request(json.as_bytes()).unwrap(),
            start_with(vec![r])
        );
        // Unknown fields of a report are malformed.
        let text = r#"{"v":1,"origin":{"tenant":"a","user":"u","service":"s","host":"h"},
            "step":{"type":"start","first_factor":"delegated","unenrolled":"deny",
            "fail_opens":[{"at":1,"user":"u","service":"s","why":"w","tty":"x"}]}}"#;
        let e = decode_request(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("tty"), "{e}");
    }

    #[test]
    fn the_tenants_fail_mode_travels_with_responses_and_older_sides_still_decode() {
        // A new daemon's response: the field is there.
        let mut r = Response::new(ResponseStep::Accept {
            factors: vec!["totp".into()],
        });
        r.fail_mode = Some(FailMode::Safe);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""fail_mode":"safe""#), "{json}");
        assert_eq!(decode_response(json.as_bytes()).unwrap(), r);
        r.fail_mode = Some(FailMode::Secure);
        assert_eq!(decode_response(body(&encode(&r).unwrap())).unwrap(), r);
        // An older module (a Response without the field) decodes it.
        #[derive(Deserialize)]
        struct OldResponse {
            v: u32,
            step: ResponseStep,
        }
        let old: OldResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(old.v, VERSION);
        assert!(matches!(old.step, ResponseStep::Accept { .. }));
        // An older daemon's response: no field, None; and None is not sent.
        let old = r#"{"v":1,"step":{"type":"reject","message":"no"}}"#;
        let r = decode_response(old.as_bytes()).unwrap();
        assert_eq!(r.fail_mode, None);
        assert!(!serde_json::to_string(&r).unwrap().contains("fail_mode"));
        // Something else than secure or safe is malformed.
        let bad = r#"{"v":1,"step":{"type":"reject","message":"no"},"fail_mode":"open"}"#;
        assert!(decode_response(bad.as_bytes()).is_err());
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
