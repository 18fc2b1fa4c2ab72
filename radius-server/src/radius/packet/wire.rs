//! Wire helpers shared by the server and client sides: the structural walk, attribute
//! iteration, the RFC 2865 / RFC 3579 crypto, and a packet writer.

use hmac::digest::{Digest, Key, KeyInit};
use hmac::{Hmac, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::*;

type HmacMd5 = Hmac<Md5>;

// ---------------------------------------------------------------------------------------------
// Structure

/// Codes assigned in the IANA "RADIUS Packet Type Codes" registry (RFC 3575 and later).
pub(super) fn is_known_code(code: u8) -> bool {
    matches!(code, 1..=13 | 21..=34 | 40..=45 | 50..=52 | 250..=253)
}

pub(super) fn request_code(code: u8) -> Result<(), DropReason> {
    match code {
        CODE_ACCESS_REQUEST | CODE_STATUS_SERVER => Ok(()),
        c if is_known_code(c) => Err(DropReason::UnsupportedCode),
        _ => Err(DropReason::UnknownCode),
    }
}

pub(super) fn reply_code(code: u8) -> Result<(), DropReason> {
    match code {
        CODE_ACCESS_ACCEPT | CODE_ACCESS_REJECT | CODE_ACCESS_CHALLENGE => Ok(()),
        c if is_known_code(c) => Err(DropReason::UnsupportedCode),
        _ => Err(DropReason::UnknownCode),
    }
}

/// Result of one structural walk.
pub(super) struct Scan<'a> {
    pub(super) header: Header,
    /// The packet without padding (`length` bytes).
    pub(super) packet: &'a [u8],
    /// Offset of the Message-Authenticator value, if present.
    pub(super) ma_at: Option<usize>,
    pub(super) has_eap: bool,
    pub(super) has_proxy_state: bool,
}

pub(super) fn scan(
    datagram: &[u8],
    code_ok: fn(u8) -> Result<(), DropReason>,
) -> Result<Scan<'_>, DropReason> {
    let Some(head) = datagram.first_chunk::<HEADER_LEN>() else {
        return Err(DropReason::TooShort);
    };
    let length = u16::from_be_bytes([head[2], head[3]]);
    let len = usize::from(length);
    if len < HEADER_LEN {
        return Err(DropReason::BadLength);
    }
    if len > MAX_PACKET_LEN {
        return Err(DropReason::TooLong);
    }
    let packet = datagram.get(..len).ok_or(DropReason::BadLength)?;
    code_ok(head[0])?;
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&head[4..HEADER_LEN]);

    let mut ma_at = None;
    let (mut has_eap, mut has_proxy_state) = (false, false);
    let mut pos = HEADER_LEN;
    while pos < len {
        let (Some(&typ), Some(&alen)) = (packet.get(pos), packet.get(pos + 1)) else {
            return Err(DropReason::BadAttribute);
        };
        let alen = usize::from(alen);
        if typ == 0 || alen < 2 || alen > len - pos {
            return Err(DropReason::BadAttribute);
        }
        match typ {
            ATTR_MESSAGE_AUTHENTICATOR => {
                if alen != 2 + MA_LEN {
                    return Err(DropReason::BadMessageAuthenticatorLength);
                }
                if ma_at.is_some() {
                    return Err(DropReason::BadAttribute);
                }
                ma_at = Some(pos + 2);
            }
            ATTR_EAP_MESSAGE => has_eap = true,
            ATTR_PROXY_STATE => has_proxy_state = true,
            _ => {}
        }
        pos += alen;
    }
    Ok(Scan {
        header: Header {
            code: head[0],
            identifier: head[1],
            length,
            authenticator,
        },
        packet,
        ma_at,
        has_eap,
        has_proxy_state,
    })
}

/// Iterates `(type, value offset, value)` over the attributes of a packet that [`scan`]
/// accepted; stops (rather than panicking) at anything malformed.
pub(super) struct Attrs<'a> {
    packet: &'a [u8],
    pos: usize,
}

pub(super) fn attrs(packet: &[u8]) -> Attrs<'_> {
    Attrs {
        packet,
        pos: HEADER_LEN,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u8, usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let typ = *self.packet.get(self.pos)?;
        let alen = usize::from(*self.packet.get(self.pos + 1)?);
        let at = self.pos + 2;
        let value = self.packet.get(at..self.pos.checked_add(alen)?)?;
        self.pos += alen.max(2);
        Some((typ, at, value))
    }
}

// ---------------------------------------------------------------------------------------------
// Crypto helpers

pub(super) fn bytes(
    packet: &[u8],
    range: impl std::slice::SliceIndex<[u8], Output = [u8]>,
) -> &[u8] {
    packet.get(range).unwrap_or(&[])
}

/// HMAC-MD5 keyed by `secret`, built through the infallible fixed-size-key constructor (HMAC
/// zero-pads keys up to the block size and hashes longer ones first, exactly as done here).
pub(super) fn hmac_md5(secret: &[u8]) -> HmacMd5 {
    let mut key = Key::<HmacMd5>::default();
    if secret.len() <= key.len() {
        key[..secret.len()].copy_from_slice(secret);
    } else {
        let digest = Md5::digest(secret);
        key[..digest.len()].copy_from_slice(&digest);
    }
    let mac = <HmacMd5 as KeyInit>::new(&key);
    key.as_mut_slice().zeroize();
    mac
}

/// Message-Authenticator (RFC 3579 §3.2) over `packet` with `authenticator` in bytes 4..20
/// and the Message-Authenticator value at `ma_at` taken as zero.
pub(super) fn message_authenticator(
    packet: &[u8],
    authenticator: &[u8; 16],
    ma_at: usize,
    secret: &[u8],
) -> [u8; 16] {
    let mut mac = hmac_md5(secret);
    mac.update(bytes(packet, ..4));
    mac.update(authenticator);
    mac.update(bytes(packet, HEADER_LEN..ma_at));
    mac.update(&[0u8; MA_LEN]);
    mac.update(bytes(packet, ma_at + MA_LEN..));
    mac.finalize().into_bytes().into()
}

/// Response Authenticator: MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
pub(super) fn response_authenticator(
    packet: &[u8],
    request_auth: &[u8; 16],
    secret: &[u8],
) -> [u8; 16] {
    Md5::new()
        .chain_update(bytes(packet, ..4))
        .chain_update(request_auth)
        .chain_update(bytes(packet, HEADER_LEN..))
        .chain_update(secret)
        .finalize()
        .into()
}

pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// RFC 2865 §5.2 User-Password decryption; 16..=128 bytes in 16-byte blocks.
pub(super) fn decrypt_password(
    cipher: &[u8],
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Zeroizing<Vec<u8>>, DropReason> {
    if cipher.is_empty() || !cipher.len().is_multiple_of(16) || cipher.len() > MAX_PASSWORD_LEN {
        return Err(DropReason::Undecodable);
    }
    // Full capacity up front: a reallocation would leave an unzeroized copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(cipher.len()));
    let keyed = Md5::new_with_prefix(secret);
    let mut prev: &[u8] = authenticator;
    for block in cipher.chunks_exact(16) {
        let mut pad: [u8; 16] = keyed.clone().chain_update(prev).finalize().into();
        out.extend(block.iter().zip(pad.iter()).map(|(c, k)| c ^ k));
        pad.zeroize();
        prev = block;
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Builds a packet: header, then attributes, length patched at the end.
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn new(code: u8, identifier: u8, authenticator: &[u8; 16]) -> Writer {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[code, identifier, 0, 0]);
        buf.extend_from_slice(authenticator);
        Writer { buf }
    }

    fn attr_header(&mut self, typ: u8, len: usize) -> Result<(), EncodeError> {
        let total = u8::try_from(len + 2)
            .ok()
            .filter(|_| len <= MAX_VALUE_LEN)
            .ok_or(EncodeError::AttributeTooLong { typ, len })?;
        self.buf.extend_from_slice(&[typ, total]);
        Ok(())
    }

    /// Appends one attribute; returns the offset of its value.
    pub(super) fn push(&mut self, typ: u8, value: &[u8]) -> Result<usize, EncodeError> {
        self.attr_header(typ, value.len())?;
        let at = self.buf.len();
        self.buf.extend_from_slice(value);
        Ok(at)
    }

    /// Appends a caller-supplied attribute, refusing types the encoder owns.
    pub(super) fn push_raw(&mut self, attr: &RawAttribute) -> Result<(), EncodeError> {
        if attr.typ == 0 || attr.typ == ATTR_MESSAGE_AUTHENTICATOR {
            return Err(EncodeError::ReservedAttribute { typ: attr.typ });
        }
        self.push(attr.typ, &attr.value).map(drop)
    }

    /// Appends a hidden User-Password (RFC 2865 §5.2), NUL-padded to a multiple of 16.
    pub(super) fn push_password(
        &mut self,
        password: &[u8],
        secret: &[u8],
        authenticator: &[u8; 16],
    ) -> Result<(), EncodeError> {
        if password.len() > MAX_PASSWORD_LEN {
            return Err(EncodeError::AttributeTooLong {
                typ: ATTR_USER_PASSWORD,
                len: password.len(),
            });
        }
        let blocks = password.len().div_ceil(16).max(1);
        self.attr_header(ATTR_USER_PASSWORD, blocks * 16)?;
        let keyed = Md5::new_with_prefix(secret);
        let mut prev = *authenticator;
        for i in 0..blocks {
            let mut block = [0u8; 16];
            let plain = bytes(password, i * 16..password.len().min(i * 16 + 16));
            block[..plain.len()].copy_from_slice(plain);
            let mut pad: [u8; 16] = keyed.clone().chain_update(prev).finalize().into();
            block.iter_mut().zip(pad.iter()).for_each(|(b, k)| *b ^= k);
            pad.zeroize();
            self.buf.extend_from_slice(&block);
            prev = block;
        }
        Ok(())
    }

    /// Patches the Length field.
    pub(super) fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        let len = self.buf.len();
        let length = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_PACKET_LEN)
            .ok_or(EncodeError::TooLarge(len))?;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
        Ok(self.buf)
    }
}

/// Splits `msg` into pieces of at most `max` bytes, never inside a UTF-8 char (`max` >= 4).
pub(super) fn utf8_chunks(msg: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = msg;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at_checked(cut.max(1)).unwrap_or((rest, ""));
        rest = tail;
        Some(head)
    })
}

pub(super) fn patch16(packet: &mut [u8], at: usize, value: &[u8; 16]) {
    if let Some(dst) = packet.get_mut(at..at + 16) {
        dst.copy_from_slice(value);
    }
}
