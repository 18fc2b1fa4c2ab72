//! Access-Requests as a NAS sends them (RFC 2865 with the RFC 3579 Message-Authenticator)
//! and the checks of a reply (Response Authenticator, Message-Authenticator if present).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// RADIUS packet codes the generator sends or expects.
pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const ACCESS_CHALLENGE: u8 = 11;

const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const MESSAGE_AUTHENTICATOR: u8 = 80;
const HEADER_LEN: usize = 20;
/// RFC 2865 limits User-Password to 128 bytes.
const MAX_PASSWORD: usize = 128;

/// Why a request cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The user name does not fit in one attribute (253 bytes).
    UserNameTooLong,
    /// The password is longer than 128 bytes.
    PasswordTooLong,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::UserNameTooLong => write!(f, "user name longer than 253 bytes"),
            BuildError::PasswordTooLong => write!(f, "password longer than 128 bytes"),
        }
    }
}

impl std::error::Error for BuildError {}

/// RFC 2865 §5.2: the password padded to 16-byte blocks, each XORed with
/// MD5(secret + previous block), the first with MD5(secret + Request Authenticator).
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut out = Vec::with_capacity(padded_len);
    let mut prev: [u8; 16] = *authenticator;
    for chunk_start in (0..padded_len).step_by(16) {
        let mut h = Md5::new();
        h.update(secret);
        h.update(prev);
        let b = h.finalize();
        let mut block = [0u8; 16];
        for (i, byte) in block.iter_mut().enumerate() {
            let p = password.get(chunk_start + i).copied().unwrap_or(0);
            *byte = p ^ b[i];
        }
        out.extend_from_slice(&block);
        prev = block;
    }
    out
}

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn push_attr(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push((value.len() + 2) as u8);
    out.extend_from_slice(value);
}

/// An Access-Request with User-Name, User-Password (hidden) and Message-Authenticator
/// (HMAC-MD5 over the packet with the attribute zeroed), in the order radclient sends them.
pub fn access_request(
    identifier: u8,
    authenticator: &[u8; 16],
    secret: &[u8],
    user: &str,
    password: &[u8],
) -> Result<Vec<u8>, BuildError> {
    if user.len() > 253 {
        return Err(BuildError::UserNameTooLong);
    }
    if password.len() > MAX_PASSWORD {
        return Err(BuildError::PasswordTooLong);
    }
    let mut p = Vec::with_capacity(HEADER_LEN + user.len() + 2 + MAX_PASSWORD + 2 + 18);
    p.extend_from_slice(&[ACCESS_REQUEST, identifier, 0, 0]);
    p.extend_from_slice(authenticator);
    push_attr(&mut p, USER_NAME, user.as_bytes());
    push_attr(
        &mut p,
        USER_PASSWORD,
        &hide_password(password, secret, authenticator),
    );
    let ma_at = p.len() + 2;
    push_attr(&mut p, MESSAGE_AUTHENTICATOR, &[0u8; 16]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = hmac_md5(secret, &p);
    p[ma_at..ma_at + 16].copy_from_slice(&mac);
    Ok(p)
}

/// What a reply said, once it proved to come from a server that knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject,
    Challenge,
}

/// Why a reply was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// Too short, a Length that does not fit, or malformed attributes.
    Malformed,
    /// The identifier belongs to another request.
    WrongIdentifier,
    /// Response Authenticator does not match (wrong secret or forged).
    WrongResponseAuthenticator,
    /// A Message-Authenticator is present and wrong.
    WrongMessageAuthenticator,
    /// Not an Accept, Reject or Challenge.
    UnexpectedCode(u8),
}

/// The identifier of a reply datagram, if it has a header.
pub fn reply_identifier(reply: &[u8]) -> Option<u8> {
    (reply.len() >= HEADER_LEN).then(|| reply[1])
}

/// Checks a reply to the request that had `identifier` and `request_authenticator`:
/// Response Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret), and the
/// Message-Authenticator when the reply carries one. Returns also whether it carried one.
pub fn check_reply(
    reply: &[u8],
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<(Verdict, bool), BadReply> {
    if reply.len() < HEADER_LEN {
        return Err(BadReply::Malformed);
    }
    let len = u16::from_be_bytes([reply[2], reply[3]]) as usize;
    if !(HEADER_LEN..=reply.len()).contains(&len) {
        return Err(BadReply::Malformed);
    }
    let reply = &reply[..len];
    if reply[1] != identifier {
        return Err(BadReply::WrongIdentifier);
    }
    let mut h = Md5::new();
    h.update(&reply[..4]);
    h.update(request_authenticator);
    h.update(&reply[HEADER_LEN..]);
    h.update(secret);
    let expected = h.finalize();
    if !bool::from(expected.as_slice().ct_eq(&reply[4..HEADER_LEN])) {
        return Err(BadReply::WrongResponseAuthenticator);
    }
    // Walk the attributes; find the Message-Authenticator.
    let mut at = HEADER_LEN;
    let mut ma = None;
    while at < len {
        if at + 2 > len {
            return Err(BadReply::Malformed);
        }
        let (kind, alen) = (reply[at], reply[at + 1] as usize);
        if alen < 2 || at + alen > len {
            return Err(BadReply::Malformed);
        }
        if kind == MESSAGE_AUTHENTICATOR {
            if alen != 18 {
                return Err(BadReply::Malformed);
            }
            ma = Some(at + 2);
        }
        at += alen;
    }
    if let Some(ma) = ma {
        let mut copy = reply.to_vec();
        copy[4..HEADER_LEN].copy_from_slice(request_authenticator);
        copy[ma..ma + 16].fill(0);
        let mac = hmac_md5(secret, &copy);
        if !bool::from(mac.ct_eq(&reply[ma..ma + 16])) {
            return Err(BadReply::WrongMessageAuthenticator);
        }
    }
    let verdict = match reply[0] {
        ACCESS_ACCEPT => Verdict::Accept,
        ACCESS_REJECT => Verdict::Reject,
        ACCESS_CHALLENGE => Verdict::Challenge,
        other => return Err(BadReply::UnexpectedCode(other)),
    };
    Ok((verdict, ma.is_some()))
}

/// Builds a reply as a server would (tests): code, identifier, the attributes, a
/// Message-Authenticator first when `with_ma`, and the Response Authenticator.
pub fn server_reply(
    code: u8,
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
    attributes: &[(u8, &[u8])],
    with_ma: bool,
) -> Vec<u8> {
    let mut p = vec![code, identifier, 0, 0];
    p.extend_from_slice(request_authenticator);
    if with_ma {
        push_attr(&mut p, MESSAGE_AUTHENTICATOR, &[0u8; 16]);
    }
    for (kind, value) in attributes {
        push_attr(&mut p, *kind, value);
    }
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    if with_ma {
        let mac = hmac_md5(secret, &p);
        p[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&mac);
    }
    let mut h = Md5::new();
    h.update(&p);
    h.update(secret);
    let ra = h.finalize();
    p[4..HEADER_LEN].copy_from_slice(&ra);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::code::Code;
    use radius::core::packet::Packet;
    use radius::core::rfc2865;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Captured from FreeRADIUS's radclient 3.2.1 (Debian 12):
    /// `echo 'User-Name=alice,User-Password=hunter2123456,Message-Authenticator=0x00'
    ///  | radclient 127.0.0.1:18999 auth bench-secret`, the datagram as received.
    const RADCLIENT_REQUEST: &str = "0187003f696b2a7fcc77cec432cec478df0c9b370107616c69636502126e8494539544f1c1477ca57fb8972f0c5012e99f55dcc8a7608506240b471f693b28";

    #[test]
    fn the_request_is_byte_identical_to_radclients() {
        let theirs = unhex(RADCLIENT_REQUEST);
        let mut auth = [0u8; 16];
        auth.copy_from_slice(&theirs[4..20]);
        let ours =
            access_request(theirs[1], &auth, b"bench-secret", "alice", b"hunter2123456").unwrap();
        assert_eq!(
            ours, theirs,
            "same password hiding and Message-Authenticator as radclient"
        );
    }

    #[test]
    fn the_radius_crate_reads_our_request_and_its_password() {
        let secret = b"s3cret-vpn";
        for pw in [
            &b"1"[..],
            b"123456",
            b"exactly-16-bytes",
            b"a-longer-password-123456",
            &[b'x'; 128],
        ] {
            let auth = [9u8; 16];
            let bytes = access_request(200, &auth, secret, "bob", pw).unwrap();
            let p = Packet::decode(&bytes, secret).expect("radius crate decodes it");
            assert_eq!(p.get_code(), Code::AccessRequest);
            assert_eq!(p.get_identifier(), 200);
            assert_eq!(rfc2865::lookup_user_name(&p).unwrap().unwrap(), "bob");
            assert_eq!(
                rfc2865::lookup_user_password(&p).unwrap().unwrap(),
                pw,
                "password of {} bytes",
                pw.len()
            );
        }
        assert_eq!(
            access_request(1, &[0; 16], secret, "bob", &[b'x'; 129]),
            Err(BuildError::PasswordTooLong)
        );
    }

    #[test]
    fn replies_are_checked_with_both_authenticators() {
        let secret = b"s3cret-vpn";
        let auth = [3u8; 16];
        let request = access_request(7, &auth, secret, "bob", b"123456").unwrap();
        let accept = server_reply(ACCESS_ACCEPT, 7, &auth, secret, &[(18, b"hi")], true);
        // The radius crate agrees that the Response Authenticator is right.
        assert!(Packet::is_authentic_response(&accept, &request, secret));
        assert_eq!(
            check_reply(&accept, 7, &auth, secret),
            Ok((Verdict::Accept, true))
        );
        let reject = server_reply(ACCESS_REJECT, 7, &auth, secret, &[], false);
        assert_eq!(
            check_reply(&reject, 7, &auth, secret),
            Ok((Verdict::Reject, false))
        );
        assert_eq!(
            check_reply(&accept, 8, &auth, secret),
            Err(BadReply::WrongIdentifier)
        );
        assert_eq!(
            check_reply(&accept, 7, &auth, b"other-secret"),
            Err(BadReply::WrongResponseAuthenticator)
        );
        // A forged Message-Authenticator under a recomputed Response Authenticator.
        let mut forged = accept.clone();
        forged[22] ^= 1;
        let mut h = Md5::new();
        h.update(&forged[..4]);
        h.update(auth);
        h.update(&forged[20..]);
        h.update(secret);
        let ra = h.finalize();
        forged[4..20].copy_from_slice(&ra);
        assert_eq!(
            check_reply(&forged, 7, &auth, secret),
            Err(BadReply::WrongMessageAuthenticator)
        );
        assert_eq!(
            check_reply(&accept[..10], 7, &auth, secret),
            Err(BadReply::Malformed)
        );
    }
}
