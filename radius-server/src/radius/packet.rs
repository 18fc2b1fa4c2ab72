//! Pure RADIUS packet layer: bytes in, typed values out.
//!
//! No sockets, no clock, no configuration types: the UDP loop and the Engine sit on top.
//! The wire format (RFC 2865) is walked by hand instead of through `radius::Packet`, because
//! that codec copies the secret into every packet, truncates User-Password at the first NUL,
//! and would need a re-encode to verify Message-Authenticator; one bounds-checked walk over the
//! received bytes is cheaper and lets us HMAC exactly what arrived.
//!
//! Security bar (see `reference/radius.md`, BlastRADIUS / CVE-2024-3596): Message-Authenticator
//! (RFC 3579 §3.2) is verified in constant time whenever present, demanded for Status-Server,
//! EAP-Message and clients that require it, and always placed first in our replies.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zeroize::Zeroizing;

use self::wire::{
    attrs, bytes, ct_eq, decrypt_password, message_authenticator, patch16, request_code,
    response_authenticator, scan, utf8_chunks, Writer,
};

pub mod accounting;
mod client;
#[cfg(test)]
mod crosscheck;
#[doc(hidden)]
pub mod roundtrip;
#[cfg(test)]
mod tests;
mod wire;

pub use self::client::{
    decode_reply, encode_access_request, encode_request, encode_status_server, DecodedReply,
};

/// Largest RADIUS packet (RFC 2865 §3); also the receive buffer size.
pub const MAX_PACKET_LEN: usize = 4096;

const HEADER_LEN: usize = 20;
const MAX_VALUE_LEN: usize = 253;
const MAX_PASSWORD_LEN: usize = 128;
const MA_LEN: usize = 16;

const CODE_ACCESS_REQUEST: u8 = 1;
const CODE_ACCESS_ACCEPT: u8 = 2;
const CODE_ACCESS_REJECT: u8 = 3;
const CODE_ACCESS_CHALLENGE: u8 = 11;
const CODE_STATUS_SERVER: u8 = 12;

const ATTR_USER_NAME: u8 = 1;
const ATTR_USER_PASSWORD: u8 = 2;
const ATTR_NAS_IP_ADDRESS: u8 = 4;
const ATTR_REPLY_MESSAGE: u8 = 18;
const ATTR_STATE: u8 = 24;
const ATTR_VENDOR_SPECIFIC: u8 = 26;
const ATTR_SESSION_TIMEOUT: u8 = 27;
const ATTR_CALLING_STATION_ID: u8 = 31;
const ATTR_NAS_IDENTIFIER: u8 = 32;
const ATTR_PROXY_STATE: u8 = 33;
const ATTR_EAP_MESSAGE: u8 = 79;
const ATTR_MESSAGE_AUTHENTICATOR: u8 = 80;
const ATTR_NAS_IPV6_ADDRESS: u8 = 95;

/// Why a datagram was dropped; `as_str()` gives a stable snake_case label for metrics/logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Datagram shorter than the 20-byte header.
    TooShort,
    /// Length field < 20, or larger than the datagram.
    BadLength,
    /// Length field > 4096.
    TooLong,
    /// A code that no RADIUS registry assigns.
    UnknownCode,
    /// A valid RADIUS code that is not a request we serve (e.g. Access-Accept, Accounting-Request).
    UnsupportedCode,
    /// Attribute type 0, attribute length 0 or 1, an attribute overflowing the packet, or a
    /// second Message-Authenticator.
    BadAttribute,
    /// Message-Authenticator attribute length != 18.
    BadMessageAuthenticatorLength,
    /// Message-Authenticator required (client policy, Status-Server, EAP-Message) but absent.
    MissingMessageAuthenticator,
    /// Message-Authenticator (or, in [`decode_reply`], Response Authenticator) mismatch:
    /// wrong secret or tampering.
    BadMessageAuthenticator,
    /// The client limits Proxy-State and the request has Proxy-State but no Message-Authenticator.
    ProxyStateWithoutMessageAuthenticator,
    /// Anything else that does not decode (bad User-Password length, non-UTF-8 User-Name,
    /// duplicated single-valued attribute, wrong-length address or integer).
    Undecodable,
}

impl DropReason {
    /// Every variant, in declaration order (for pre-registering metrics).
    pub const ALL: [DropReason; 11] = [
        DropReason::TooShort,
        DropReason::BadLength,
        DropReason::TooLong,
        DropReason::UnknownCode,
        DropReason::UnsupportedCode,
        DropReason::BadAttribute,
        DropReason::BadMessageAuthenticatorLength,
        DropReason::MissingMessageAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::ProxyStateWithoutMessageAuthenticator,
        DropReason::Undecodable,
    ];

    /// Stable snake_case label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadLength => "bad_length",
            DropReason::TooLong => "too_long",
            DropReason::UnknownCode => "unknown_code",
            DropReason::UnsupportedCode => "unsupported_code",
            DropReason::BadAttribute => "bad_attribute",
            DropReason::BadMessageAuthenticatorLength => "bad_message_authenticator_length",
            DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
            DropReason::ProxyStateWithoutMessageAuthenticator => {
                "proxy_state_without_message_authenticator"
            }
            DropReason::Undecodable => "undecodable",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fixed header fields, read without the secret (for finding the client, the duplicate cache
/// key, and counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet code (1 Access-Request, 12 Status-Server, ...).
    pub code: u8,
    /// Identifier chosen by the client.
    pub identifier: u8,
    /// The Length field (bytes after it are padding).
    pub length: u16,
    /// Request (or Response) Authenticator.
    pub authenticator: [u8; 16],
}

/// Per-client BlastRADIUS policy (defaults are the secure ones: both true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Drop Access-Requests without Message-Authenticator.
    pub require_message_authenticator: bool,
    /// Drop requests that carry Proxy-State but no Message-Authenticator.
    pub limit_proxy_state: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            require_message_authenticator: true,
            limit_proxy_state: true,
        }
    }
}

/// Which request we received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Code 1.
    AccessRequest,
    /// Code 12 (RFC 5997).
    StatusServer,
}

/// A validated, authenticated request. User-Password is already decrypted (zeroized on drop).
///
/// Only structure and authenticity are checked here; whether the attributes make sense for a
/// login (e.g. User-Password or State present) is the Engine's call.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Access-Request or Status-Server.
    pub kind: RequestKind,
    /// Identifier to copy into the reply.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
    /// User-Name; a non-UTF-8 User-Name drops the packet as [`DropReason::Undecodable`].
    pub user_name: Option<String>,
    /// Decrypted User-Password, trailing NUL padding removed.
    pub user_password: Option<Zeroizing<Vec<u8>>>,
    /// State, as sent.
    pub state: Option<Vec<u8>>,
    /// Every Proxy-State, in request order (echoed in the reply).
    pub proxy_states: Vec<Vec<u8>>,
    /// Calling-Station-Id (first one); `None` if absent or not UTF-8.
    pub calling_station_id: Option<String>,
    /// NAS-Identifier (first one); `None` if absent or not UTF-8.
    pub nas_identifier: Option<String>,
    /// NAS-IP-Address, else NAS-IPv6-Address.
    pub nas_ip_address: Option<IpAddr>,
    /// Whether a (verified) Message-Authenticator was present.
    pub has_message_authenticator: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("identifier", &self.identifier)
            .field("authenticator", &self.authenticator)
            .field("user_name", &self.user_name)
            .field(
                "user_password",
                &self.user_password.as_ref().map(|_| "<redacted>"),
            )
            .field("state", &self.state)
            .field("proxy_states", &self.proxy_states)
            .field("calling_station_id", &self.calling_station_id)
            .field("nas_identifier", &self.nas_identifier)
            .field("nas_ip_address", &self.nas_ip_address)
            .field("has_message_authenticator", &self.has_message_authenticator)
            .finish()
    }
}

/// Reply packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// Access-Accept (2).
    Accept,
    /// Access-Reject (3).
    Reject,
    /// Access-Challenge (11).
    Challenge,
}

impl ReplyCode {
    fn wire(self) -> u8 {
        match self {
            ReplyCode::Accept => CODE_ACCESS_ACCEPT,
            ReplyCode::Reject => CODE_ACCESS_REJECT,
            ReplyCode::Challenge => CODE_ACCESS_CHALLENGE,
        }
    }
}

/// What to send back. Attributes are emitted in this order: Message-Authenticator (always
/// first), Reply-Message(s), State, Session-Timeout, `attributes` in order, then every
/// Proxy-State of the request in order.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Accept, Reject or Challenge (ignored for Status-Server, which is always answered Accept).
    pub code: ReplyCode,
    /// Split into Reply-Message attributes of <= 253 bytes on UTF-8 char boundaries; an empty
    /// string emits none.
    pub reply_message: Option<String>,
    /// State for a challenge.
    pub state: Option<Vec<u8>>,
    /// Session-Timeout in seconds (for a challenge: how long the prompt may wait).
    pub session_timeout: Option<u32>,
    /// Extra attributes, emitted as given.
    pub attributes: Vec<RawAttribute>,
}

impl Reply {
    /// A bare Access-Accept.
    pub fn accept() -> Self {
        Reply {
            code: ReplyCode::Accept,
            reply_message: None,
            state: None,
            session_timeout: None,
            attributes: Vec::new(),
        }
    }

    /// An Access-Reject with an optional Reply-Message.
    pub fn reject(msg: Option<String>) -> Self {
        Reply {
            code: ReplyCode::Reject,
            reply_message: msg,
            ..Reply::accept()
        }
    }

    /// An Access-Challenge with a prompt and the State the NAS must echo.
    pub fn challenge(msg: String, state: Vec<u8>) -> Self {
        Reply {
            code: ReplyCode::Challenge,
            reply_message: Some(msg),
            state: Some(state),
            ..Reply::accept()
        }
    }
}

/// A raw attribute (type, value); the value must be <= 253 bytes, checked at encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    /// Attribute type.
    pub typ: u8,
    /// Attribute value (without the type and length bytes).
    pub value: Vec<u8>,
}

impl RawAttribute {
    /// A Vendor-Specific (26) attribute holding one sub-attribute in the RFC 2865 §5.26 layout
    /// (Vendor-Id, Vendor-Type, Vendor-Length, value). Values over 247 bytes fail at encode.
    pub fn vendor(vendor_id: u32, vendor_type: u8, value: &[u8]) -> RawAttribute {
        let mut v = Vec::with_capacity(6 + value.len());
        v.extend_from_slice(&vendor_id.to_be_bytes());
        v.push(vendor_type);
        v.push(u8::try_from(value.len() + 2).unwrap_or(u8::MAX));
        v.extend_from_slice(value);
        RawAttribute {
            typ: ATTR_VENDOR_SPECIFIC,
            value: v,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// An attribute value does not fit in one attribute.
    #[error("attribute {typ} value is {len} bytes; at most 253 fit (128 for User-Password)")]
    AttributeTooLong {
        /// Attribute type.
        typ: u8,
        /// Offending value length.
        len: usize,
    },
    /// The whole packet would exceed 4096 bytes.
    #[error("reply would be {0} bytes; at most 4096")]
    TooLarge(usize),
    /// Type 0 is invalid and Message-Authenticator (80) is added by the encoder itself.
    #[error("attribute type {typ} cannot be passed as a raw attribute; remove it")]
    ReservedAttribute {
        /// Attribute type.
        typ: u8,
    },
}

/// Structural validation without the secret: header plus a walk of every attribute.
///
/// Bytes after Length are padding and ignored. Accepts only codes 1 (Access-Request) and 12
/// (Status-Server); other assigned codes give `UnsupportedCode`, the rest `UnknownCode`.
pub fn check_structure(datagram: &[u8]) -> Result<Header, DropReason> {
    scan(datagram, request_code).map(|s| s.header)
}

// ---------------------------------------------------------------------------------------------
// Request decoding

/// Full decode + validation + Message-Authenticator verification (RFC 3579 §3.2: HMAC-MD5
/// keyed by the shared secret over the packet with the MA value zeroed; constant-time compare).
///
/// Rules: MA present -> must verify (else `BadMessageAuthenticator`); MA absent ->
/// `MissingMessageAuthenticator` if `policy.require_message_authenticator`, or the packet is
/// Status-Server, or it carries EAP-Message; absent and allowed but Proxy-State present under
/// `policy.limit_proxy_state` -> `ProxyStateWithoutMessageAuthenticator`. Authenticity is
/// settled before any attribute (User-Password included) is decoded. User-Name,
/// User-Password and State may each appear at most once (else `Undecodable`).
pub fn decode_request(
    datagram: &[u8],
    secret: &[u8],
    policy: &ClientPolicy,
) -> Result<Request, DropReason> {
    let s = scan(datagram, request_code)?;
    let kind = if s.header.code == CODE_STATUS_SERVER {
        RequestKind::StatusServer
    } else {
        RequestKind::AccessRequest
    };
    let auth = s.header.authenticator;
    match s.ma_at {
        Some(at) => {
            let expected = message_authenticator(s.packet, &auth, at, secret);
            if !ct_eq(&expected, bytes(s.packet, at..at + MA_LEN)) {
                return Err(DropReason::BadMessageAuthenticator);
            }
        }
        None => {
            if policy.require_message_authenticator
                || kind == RequestKind::StatusServer
                || s.has_eap
            {
                return Err(DropReason::MissingMessageAuthenticator);
            }
            if policy.limit_proxy_state && s.has_proxy_state {
                return Err(DropReason::ProxyStateWithoutMessageAuthenticator);
            }
        }
    }

    let mut req = Request {
        kind,
        identifier: s.header.identifier,
        authenticator: auth,
        user_name: None,
        user_password: None,
        state: None,
        proxy_states: Vec::new(),
        calling_station_id: None,
        nas_identifier: None,
        nas_ip_address: None,
        has_message_authenticator: s.ma_at.is_some(),
    };
    let mut nas_ipv6 = None;
    for (typ, _, value) in attrs(s.packet) {
        match typ {
            ATTR_USER_NAME => {
                let name = std::str::from_utf8(value).map_err(|_| DropReason::Undecodable)?;
                set_once(&mut req.user_name, name.to_owned())?;
            }
            ATTR_USER_PASSWORD => {
                set_once(
                    &mut req.user_password,
                    decrypt_password(value, secret, &auth)?,
                )?;
            }
            ATTR_STATE => set_once(&mut req.state, value.to_vec())?,
            ATTR_PROXY_STATE => req.proxy_states.push(value.to_vec()),
            ATTR_CALLING_STATION_ID => first_text(&mut req.calling_station_id, value),
            ATTR_NAS_IDENTIFIER => first_text(&mut req.nas_identifier, value),
            ATTR_NAS_IP_ADDRESS => {
                let octets: [u8; 4] = value.try_into().map_err(|_| DropReason::Undecodable)?;
                req.nas_ip_address
                    .get_or_insert(IpAddr::V4(Ipv4Addr::from(octets)));
            }
            ATTR_NAS_IPV6_ADDRESS => {
                let octets: [u8; 16] = value.try_into().map_err(|_| DropReason::Undecodable)?;
                nas_ipv6.get_or_insert(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            _ => {}
        }
    }
    if req.nas_ip_address.is_none() {
        req.nas_ip_address = nas_ipv6;
    }
    Ok(req)
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DropReason> {
    if slot.is_some() {
        return Err(DropReason::Undecodable);
    }
    *slot = Some(value);
    Ok(())
}

fn first_text(slot: &mut Option<String>, value: &[u8]) {
    if slot.is_none() {
        *slot = std::str::from_utf8(value).ok().map(str::to_owned);
    }
}

// ---------------------------------------------------------------------------------------------
// Reply encoding

/// Encode a reply to `request`.
///
/// Message-Authenticator goes first: it is computed over the packet with the Request
/// Authenticator in bytes 4..20 and the MA zeroed, patched in, and then the Response
/// Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret) is computed over the
/// result. Status-Server is always answered with Access-Accept (RFC 5997), whatever
/// `reply.code` says.
pub fn encode_reply(
    request: &Request,
    reply: &Reply,
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let code = match request.kind {
        RequestKind::StatusServer => CODE_ACCESS_ACCEPT,
        RequestKind::AccessRequest => reply.code.wire(),
    };
    let auth = &request.authenticator;
    let mut w = Writer::new(code, request.identifier, auth);
    let ma_at = w.push(ATTR_MESSAGE_AUTHENTICATOR, &[0u8; MA_LEN])?;
    if let Some(msg) = &reply.reply_message {
        for chunk in utf8_chunks(msg, MAX_VALUE_LEN) {
            w.push(ATTR_REPLY_MESSAGE, chunk.as_bytes())?;
        }
    }
    if let Some(state) = &reply.state {
        w.push(ATTR_STATE, state)?;
    }
    if let Some(t) = reply.session_timeout {
        w.push(ATTR_SESSION_TIMEOUT, &t.to_be_bytes())?;
    }
    for attr in &reply.attributes {
        w.push_raw(attr)?;
    }
    for ps in &request.proxy_states {
        w.push(ATTR_PROXY_STATE, ps)?;
    }
    let mut packet = w.finish()?;
    let ma = message_authenticator(&packet, auth, ma_at, secret);
    patch16(&mut packet, ma_at, &ma);
    let ra = response_authenticator(&packet, auth, secret);
    patch16(&mut packet, 4, &ra);
    Ok(packet)
}
