//! Accounting (RFC 2866), only as far as NAS software needs it to go on: verify an
//! Accounting-Request and acknowledge it with an Accounting-Response. Portcullis records no
//! accounting data; some NAS (openvpn-auth-radius) refuse a session whose accounting start
//! is not acknowledged.

use super::wire::{attrs, ct_eq, response_authenticator, scan, Writer};
use super::*;

const CODE_ACCOUNTING_REQUEST: u8 = 4;
const CODE_ACCOUNTING_RESPONSE: u8 = 5;

fn accounting_code(code: u8) -> Result<(), DropReason> {
    match code {
        CODE_ACCOUNTING_REQUEST => Ok(()),
        c if wire::is_known_code(c) => Err(DropReason::UnsupportedCode),
        _ => Err(DropReason::UnknownCode),
    }
}

/// Structure only, without the secret (for the client lookup).
pub fn check_accounting_structure(datagram: &[u8]) -> Result<Header, DropReason> {
    scan(datagram, accounting_code).map(|s| s.header)
}

/// A verified Accounting-Request: what the response needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingRequest {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    /// Every Proxy-State, in order (echoed in the response).
    pub proxy_states: Vec<Vec<u8>>,
}

/// Verify the Request Authenticator, MD5(Code + Identifier + Length + 16 zero octets +
/// attributes + secret), in constant time; a mismatch is `BadMessageAuthenticator`.
pub fn decode_accounting_request(
    datagram: &[u8],
    secret: &[u8],
) -> Result<AccountingRequest, DropReason> {
    let s = scan(datagram, accounting_code)?;
    let expected = response_authenticator(s.packet, &[0u8; 16], secret);
    if !ct_eq(&expected, &s.header.authenticator) {
        return Err(DropReason::BadMessageAuthenticator);
    }
    Ok(AccountingRequest {
        identifier: s.header.identifier,
        authenticator: s.header.authenticator,
        proxy_states: attrs(s.packet)
            .filter(|(typ, _, _)| *typ == ATTR_PROXY_STATE)
            .map(|(_, _, v)| v.to_vec())
            .collect(),
    })
}

/// The Accounting-Response: Proxy-States echoed, Response Authenticator computed.
pub fn encode_accounting_response(
    request: &AccountingRequest,
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new(
        CODE_ACCOUNTING_RESPONSE,
        request.identifier,
        &request.authenticator,
    );
    for ps in &request.proxy_states {
        w.push(ATTR_PROXY_STATE, ps)?;
    }
    let mut packet = w.finish()?;
    let ra = response_authenticator(&packet, &request.authenticator, secret);
    wire::patch16(&mut packet, 4, &ra);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Accounting-Request signed the RFC 2866 way.
    fn request(secret: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut p = vec![CODE_ACCOUNTING_REQUEST, 9, 0, 0];
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&[40, 6, 0, 0, 0, 1]); // Acct-Status-Type = Start
        p.extend_from_slice(extra);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let ra = response_authenticator(&p, &[0u8; 16], secret);
        p[4..20].copy_from_slice(&ra);
        p
    }

    #[test]
    fn signed_request_is_acknowledged_with_proxy_state() {
        let p = request(b"s", &[33, 4, b'p', b's']);
        let req = decode_accounting_request(&p, b"s").unwrap();
        assert_eq!(req.proxy_states, vec![b"ps".to_vec()]);
        let r = encode_accounting_response(&req, b"s").unwrap();
        assert_eq!(r[0], CODE_ACCOUNTING_RESPONSE);
        assert_eq!(r[1], 9);
        assert_eq!(&r[20..], &[33, 4, b'p', b's']);
        let want = response_authenticator(&r, &req.authenticator, b"s");
        assert_eq!(&r[4..20], &want);
    }

    #[test]
    fn wrong_secret_and_other_codes_are_dropped() {
        let p = request(b"s", &[]);
        assert_eq!(
            decode_accounting_request(&p, b"other"),
            Err(DropReason::BadMessageAuthenticator)
        );
        let mut q = p.clone();
        q[0] = 1;
        assert_eq!(
            check_accounting_structure(&q),
            Err(DropReason::UnsupportedCode)
        );
        assert_eq!(
            check_accounting_structure(&p[..10]),
            Err(DropReason::TooShort)
        );
    }
}
