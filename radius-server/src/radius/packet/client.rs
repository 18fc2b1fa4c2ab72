//! Client side of the packet layer, for tests and the benchmark: build requests, verify replies.

use super::wire::{
    attrs, bytes, ct_eq, message_authenticator, patch16, reply_code, response_authenticator, scan,
    Writer,
};
use super::*;

/// A reply decoded and verified by the client side ([`decode_reply`]).
#[derive(Debug, Clone)]
pub struct DecodedReply {
    /// Packet code (2, 3 or 11).
    pub code: u8,
    /// Identifier (should match the request's).
    pub identifier: u8,
    /// All Reply-Message attributes joined.
    pub reply_message: Option<String>,
    /// State (first one).
    pub state: Option<Vec<u8>>,
    /// Session-Timeout.
    pub session_timeout: Option<u32>,
    /// Every Proxy-State, in order.
    pub proxy_states: Vec<Vec<u8>>,
    /// Every attribute, in packet order (including Message-Authenticator), except a malformed
    /// Session-Timeout, which is skipped (see `anomalies`).
    pub attributes: Vec<RawAttribute>,
    /// Whether Message-Authenticator was present and the first attribute.
    pub message_authenticator_first: bool,
    /// What was odd in a reply that verified, and how it was read leniently (a non-UTF-8
    /// Reply-Message decoded lossily, a Session-Timeout not 4 bytes long skipped). Empty for a
    /// well-formed reply. These are not grounds to discard the reply: it is authentic.
    pub anomalies: Vec<&'static str>,
}

/// Client side, for tests and the benchmark: build an Access-Request (code 1).
///
/// Attributes in order: Message-Authenticator (if `with_message_authenticator`, correct and
/// first), User-Name, User-Password (RFC 2865 §5.2 hiding, at most 128 bytes), State, `extra`.
#[allow(clippy::too_many_arguments)]
pub fn encode_access_request(
    identifier: u8,
    authenticator: [u8; 16],
    secret: &[u8],
    user_name: &str,
    password: &[u8],
    state: Option<&[u8]>,
    extra: &[RawAttribute],
    with_message_authenticator: bool,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new(CODE_ACCESS_REQUEST, identifier, &authenticator);
    let ma_at = if with_message_authenticator {
        Some(w.push(ATTR_MESSAGE_AUTHENTICATOR, &[0u8; MA_LEN])?)
    } else {
        None
    };
    w.push(ATTR_USER_NAME, user_name.as_bytes())?;
    w.push_password(password, secret, &authenticator)?;
    if let Some(state) = state {
        w.push(ATTR_STATE, state)?;
    }
    for attr in extra {
        w.push_raw(attr)?;
    }
    let mut packet = w.finish()?;
    if let Some(at) = ma_at {
        let ma = message_authenticator(&packet, &authenticator, at, secret);
        patch16(&mut packet, at, &ma);
    }
    Ok(packet)
}

/// Client side: build a Status-Server (code 12) carrying only a Message-Authenticator.
pub fn encode_status_server(identifier: u8, authenticator: [u8; 16], secret: &[u8]) -> Vec<u8> {
    const LEN: u8 = (HEADER_LEN + 2 + MA_LEN) as u8;
    let mut packet = Vec::with_capacity(usize::from(LEN));
    packet.extend_from_slice(&[CODE_STATUS_SERVER, identifier, 0, LEN]);
    packet.extend_from_slice(&authenticator);
    packet.extend_from_slice(&[ATTR_MESSAGE_AUTHENTICATOR, (2 + MA_LEN) as u8]);
    packet.extend_from_slice(&[0u8; MA_LEN]);
    let ma = message_authenticator(&packet, &authenticator, HEADER_LEN + 2, secret);
    patch16(&mut packet, HEADER_LEN + 2, &ma);
    packet
}

/// Client side: verify a reply to a request we sent and decode it.
///
/// Checks structure (codes 2, 3, 11 only), the Response Authenticator and, if present, the
/// Message-Authenticator; either mismatch is `BadMessageAuthenticator`. Once both verify the
/// reply is authentic, and its attributes are decoded leniently so that an odd but genuine
/// reply (e.g. a Latin-1 Reply-Message from a localised NPS) is not mistaken for a forged one:
/// Reply-Messages are joined and decoded lossily (invalid UTF-8 becomes U+FFFD), and a
/// Session-Timeout not 4 bytes long is skipped; each is noted in `anomalies`.
/// The identifier is returned, not checked.
pub fn decode_reply(
    reply: &[u8],
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<DecodedReply, DropReason> {
    let s = scan(reply, reply_code)?;
    let expected = response_authenticator(s.packet, request_authenticator, secret);
    if !ct_eq(&expected, &s.header.authenticator) {
        return Err(DropReason::BadMessageAuthenticator);
    }
    if let Some(at) = s.ma_at {
        let ma = message_authenticator(s.packet, request_authenticator, at, secret);
        if !ct_eq(&ma, bytes(s.packet, at..at + MA_LEN)) {
            return Err(DropReason::BadMessageAuthenticator);
        }
    }
    let mut out = DecodedReply {
        code: s.header.code,
        identifier: s.header.identifier,
        reply_message: None,
        state: None,
        session_timeout: None,
        proxy_states: Vec::new(),
        attributes: Vec::new(),
        message_authenticator_first: s.ma_at == Some(HEADER_LEN + 2),
        anomalies: Vec::new(),
    };
    let mut message: Option<Vec<u8>> = None;
    for (typ, _, value) in attrs(s.packet) {
        match typ {
            ATTR_REPLY_MESSAGE => message
                .get_or_insert_with(Vec::new)
                .extend_from_slice(value),
            ATTR_STATE => {
                out.state.get_or_insert_with(|| value.to_vec());
            }
            ATTR_SESSION_TIMEOUT => match <[u8; 4]>::try_from(value) {
                Ok(v) => out.session_timeout = Some(u32::from_be_bytes(v)),
                Err(_) => {
                    out.anomalies
                        .push("a Session-Timeout not 4 bytes long (skipped)");
                    continue;
                }
            },
            ATTR_PROXY_STATE => out.proxy_states.push(value.to_vec()),
            _ => {}
        }
        out.attributes.push(RawAttribute {
            typ,
            value: value.to_vec(),
        });
    }
    if let Some(m) = message {
        out.reply_message = Some(match String::from_utf8(m) {
            Ok(text) => text,
            Err(e) => {
                out.anomalies
                    .push("a Reply-Message that is not UTF-8 (decoded lossily)");
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        });
    }
    Ok(out)
}

/// Encode a decoded [`Request`] again (the inverse of [`decode_request`] for the attributes it
/// keeps), for round-trip tests and the fuzz target.
///
/// Order: Message-Authenticator (if `request.has_message_authenticator`; computed, first),
/// User-Name, User-Password, State, Calling-Station-Id, NAS-Identifier, NAS-IP-Address or
/// NAS-IPv6-Address, then every Proxy-State in order.
pub fn encode_request(request: &Request, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let code = match request.kind {
        RequestKind::AccessRequest => CODE_ACCESS_REQUEST,
        RequestKind::StatusServer => CODE_STATUS_SERVER,
    };
    let auth = request.authenticator;
    let mut w = Writer::new(code, request.identifier, &auth);
    let ma_at = if request.has_message_authenticator {
        Some(w.push(ATTR_MESSAGE_AUTHENTICATOR, &[0u8; MA_LEN])?)
    } else {
        None
    };
    if let Some(name) = &request.user_name {
        w.push(ATTR_USER_NAME, name.as_bytes())?;
    }
    if let Some(password) = &request.user_password {
        w.push_password(password, secret, &auth)?;
    }
    if let Some(state) = &request.state {
        w.push(ATTR_STATE, state)?;
    }
    if let Some(id) = &request.calling_station_id {
        w.push(ATTR_CALLING_STATION_ID, id.as_bytes())?;
    }
    if let Some(id) = &request.nas_identifier {
        w.push(ATTR_NAS_IDENTIFIER, id.as_bytes())?;
    }
    match request.nas_ip_address {
        Some(IpAddr::V4(v4)) => {
            w.push(ATTR_NAS_IP_ADDRESS, &v4.octets())?;
        }
        Some(IpAddr::V6(v6)) => {
            w.push(ATTR_NAS_IPV6_ADDRESS, &v6.octets())?;
        }
        None => {}
    }
    for ps in &request.proxy_states {
        w.push(ATTR_PROXY_STATE, ps)?;
    }
    let mut packet = w.finish()?;
    if let Some(at) = ma_at {
        let ma = message_authenticator(&packet, &auth, at, secret);
        patch16(&mut packet, at, &ma);
    }
    Ok(packet)
}
