//! Unit tests for the pure packet layer.

use super::wire::{attrs, hmac_md5, response_authenticator};
use super::*;
use hmac::digest::Digest;
use hmac::Mac;
use md5::Md5;

const SECRET: &[u8] = b"s3cret-shared";
const AUTH: [u8; 16] = [
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];
const STRICT: ClientPolicy = ClientPolicy {
    require_message_authenticator: true,
    limit_proxy_state: true,
};
const LENIENT: ClientPolicy = ClientPolicy {
    require_message_authenticator: false,
    limit_proxy_state: true,
};
const OPEN: ClientPolicy = ClientPolicy {
    require_message_authenticator: false,
    limit_proxy_state: false,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A packet with the given code and attribute bytes, Length set to the real size.
fn raw(code: u8, attrs: &[u8]) -> Vec<u8> {
    let len = (20 + attrs.len()) as u16;
    let mut p = vec![code, 7];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&AUTH);
    p.extend_from_slice(attrs);
    p
}

/// A packet whose Length field says `length`, whatever its real size.
fn with_length(mut p: Vec<u8>, length: u16) -> Vec<u8> {
    p[2..4].copy_from_slice(&length.to_be_bytes());
    p
}

fn proxy_state(v: &[u8]) -> RawAttribute {
    RawAttribute {
        typ: 33,
        value: v.to_vec(),
    }
}

fn request(secret: &[u8], extra: &[RawAttribute], ma: bool) -> Vec<u8> {
    encode_access_request(9, AUTH, secret, "alice", b"hunter2", None, extra, ma).unwrap()
}

/// HMAC-MD5 written out from RFC 2104, independent of the `hmac` crate.
fn hmac_md5_by_hand(key: &[u8], msg: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..16].copy_from_slice(&Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Md5::new().chain_update(&ipad).chain_update(msg).finalize();
    Md5::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn every_malformed_class_is_dropped_with_its_reason() {
    use DropReason::*;
    let ma_zero = {
        let mut a = vec![80, 18];
        a.extend_from_slice(&[0; 16]);
        a
    };
    let mut ma_short = vec![80, 17];
    ma_short.extend_from_slice(&[0; 15]);
    let mut two_mas = ma_zero.clone();
    two_mas.extend_from_slice(&ma_zero);
    let mut eap = vec![79, 6, 2, 0, 0, 4];
    eap.extend_from_slice(&[1, 7, b'b', b'o', b'b', b'b', b'y']);

    let mut tampered = request(SECRET, &[], true);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;

    // (name, datagram, policy, expected, whether check_structure alone already catches it)
    let rows: Vec<(&str, Vec<u8>, ClientPolicy, DropReason, bool)> = vec![
        ("datagram < 20 bytes", vec![1; 19], OPEN, TooShort, true),
        ("empty datagram", vec![], OPEN, TooShort, true),
        (
            "Length < 20",
            with_length(raw(1, &[]), 19),
            OPEN,
            BadLength,
            true,
        ),
        (
            "Length 0",
            with_length(raw(1, &[]), 0),
            OPEN,
            BadLength,
            true,
        ),
        (
            "Length > datagram",
            with_length(raw(1, &[1, 3, b'a']), 24),
            OPEN,
            BadLength,
            true,
        ),
        (
            "Length > 4096",
            with_length(vec![1; 5000], 4097),
            OPEN,
            TooLong,
            true,
        ),
        (
            "Length > 4096, short datagram",
            with_length(raw(1, &[]), 65535),
            OPEN,
            TooLong,
            true,
        ),
        ("unknown code 0", raw(0, &[]), OPEN, UnknownCode, true),
        ("unknown code 200", raw(200, &[]), OPEN, UnknownCode, true),
        ("unknown code 255", raw(255, &[]), OPEN, UnknownCode, true),
        (
            "unsupported Access-Accept",
            raw(2, &[]),
            OPEN,
            UnsupportedCode,
            true,
        ),
        (
            "unsupported Accounting-Request",
            raw(4, &[]),
            OPEN,
            UnsupportedCode,
            true,
        ),
        (
            "unsupported CoA-Request",
            raw(43, &[]),
            OPEN,
            UnsupportedCode,
            true,
        ),
        (
            "attribute type 0",
            raw(1, &[0, 3, b'a']),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "attribute length 0",
            raw(1, &[1, 0]),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "attribute length 1",
            raw(1, &[1, 1]),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "attribute overflowing",
            raw(1, &[1, 10, b'a', b'b']),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "lone trailing type byte",
            raw(1, &[1, 3, b'a', 5]),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "two Message-Authenticators",
            raw(1, &two_mas),
            OPEN,
            BadAttribute,
            true,
        ),
        (
            "MA length 17",
            raw(1, &ma_short),
            OPEN,
            BadMessageAuthenticatorLength,
            true,
        ),
        (
            "Status-Server without MA",
            raw(12, &[]),
            OPEN,
            MissingMessageAuthenticator,
            false,
        ),
        (
            "EAP-Message without MA",
            raw(1, &eap),
            OPEN,
            MissingMessageAuthenticator,
            false,
        ),
        (
            "required MA missing",
            request(SECRET, &[], false),
            STRICT,
            MissingMessageAuthenticator,
            false,
        ),
        (
            "wrong MA (wrong secret)",
            request(b"other", &[], true),
            OPEN,
            BadMessageAuthenticator,
            false,
        ),
        (
            "zeroed MA",
            raw(1, &ma_zero),
            OPEN,
            BadMessageAuthenticator,
            false,
        ),
        (
            "tampered after MA",
            tampered,
            OPEN,
            BadMessageAuthenticator,
            false,
        ),
        (
            "Proxy-State without MA under limit_proxy_state",
            request(SECRET, &[proxy_state(b"p1")], false),
            LENIENT,
            ProxyStateWithoutMessageAuthenticator,
            false,
        ),
        (
            "User-Password of 15 bytes",
            raw(1, &[2, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            OPEN,
            Undecodable,
            false,
        ),
        (
            "non-UTF-8 User-Name",
            raw(1, &[1, 4, 0xff, 0xfe]),
            OPEN,
            Undecodable,
            false,
        ),
        (
            "two User-Names",
            raw(1, &[1, 3, b'a', 1, 3, b'b']),
            OPEN,
            Undecodable,
            false,
        ),
        (
            "two States",
            raw(1, &[24, 3, b'a', 24, 3, b'b']),
            OPEN,
            Undecodable,
            false,
        ),
        (
            "NAS-IP-Address of 3 bytes",
            raw(1, &[4, 5, 1, 2, 3]),
            OPEN,
            Undecodable,
            false,
        ),
    ];
    for (name, datagram, policy, expected, structural) in &rows {
        let got = decode_request(datagram, SECRET, policy).map(|r| r.identifier);
        assert_eq!(got, Err(*expected), "decode_request: {name}");
        let structure = check_structure(datagram);
        if *structural {
            assert_eq!(structure, Err(*expected), "check_structure: {name}");
        } else {
            assert!(structure.is_ok(), "check_structure should pass: {name}");
        }
    }
}

#[test]
fn padding_after_length_is_ignored() {
    let mut p = request(SECRET, &[proxy_state(b"ps")], true);
    let length = p.len();
    p.extend_from_slice(&[0xff, 0x00, 0x13, 0x37, 0, 1]);
    let header = check_structure(&p).unwrap();
    assert_eq!(usize::from(header.length), length);
    assert_eq!(
        (header.code, header.identifier, header.authenticator),
        (1, 9, AUTH)
    );
    let r = decode_request(&p, SECRET, &STRICT).unwrap();
    assert_eq!(r.user_name.as_deref(), Some("alice"));
    assert_eq!(
        r.user_password.as_deref().map(Vec::as_slice),
        Some(&b"hunter2"[..])
    );
    assert_eq!(r.proxy_states, vec![b"ps".to_vec()]);
}

#[test]
fn access_request_round_trips_user_password_state_and_proxy_states() {
    for len in [0usize, 1, 15, 16, 17, 31, 32, 100, 127, 128] {
        let password: Vec<u8> = (0..len).map(|i| b'!' + (i % 90) as u8).collect();
        let extra = [
            proxy_state(b"first"),
            RawAttribute {
                typ: 31,
                value: b"00-11-22".to_vec(),
            },
            RawAttribute {
                typ: 32,
                value: b"vpn-1".to_vec(),
            },
            RawAttribute {
                typ: 4,
                value: vec![192, 0, 2, 7],
            },
            proxy_state(b"second"),
        ];
        let p = encode_access_request(
            42,
            AUTH,
            SECRET,
            "bob@example",
            &password,
            Some(b"st-01"),
            &extra,
            true,
        )
        .unwrap();
        let r = decode_request(&p, SECRET, &STRICT).unwrap();
        assert_eq!(r.kind, RequestKind::AccessRequest);
        assert_eq!(r.identifier, 42);
        assert_eq!(r.authenticator, AUTH);
        assert_eq!(r.user_name.as_deref(), Some("bob@example"));
        assert_eq!(
            r.user_password.as_deref().map(Vec::as_slice),
            Some(&password[..]),
            "len {len}"
        );
        assert_eq!(r.state.as_deref(), Some(&b"st-01"[..]));
        assert_eq!(r.proxy_states, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(r.calling_station_id.as_deref(), Some("00-11-22"));
        assert_eq!(r.nas_identifier.as_deref(), Some("vpn-1"));
        assert_eq!(r.nas_ip_address, Some("192.0.2.7".parse().unwrap()));
        assert!(r.has_message_authenticator);
        // The hidden password occupies whole 16-byte blocks (at least one).
        let hidden = attrs(&p).find(|a| a.0 == 2).unwrap().2;
        assert_eq!(hidden.len(), len.div_ceil(16).max(1) * 16);
        if len > 0 {
            assert_ne!(&hidden[..len.min(16)], &password[..len.min(16)]);
        }
    }
}

#[test]
fn password_longer_than_128_bytes_is_refused_at_encode() {
    let err =
        encode_access_request(1, AUTH, SECRET, "u", &[b'x'; 129], None, &[], true).unwrap_err();
    assert!(
        matches!(err, EncodeError::AttributeTooLong { typ: 2, len: 129 }),
        "{err}"
    );
}

#[test]
fn requests_without_message_authenticator_pass_only_when_the_client_opts_out() {
    let plain = request(SECRET, &[], false);
    let r = decode_request(&plain, SECRET, &LENIENT).unwrap();
    assert!(!r.has_message_authenticator);
    assert_eq!(
        r.user_password.as_deref().map(Vec::as_slice),
        Some(&b"hunter2"[..])
    );

    let with_ps = request(SECRET, &[proxy_state(b"x")], false);
    assert!(decode_request(&with_ps, SECRET, &OPEN).is_ok());
    assert_eq!(
        decode_request(&with_ps, SECRET, &LENIENT).unwrap_err(),
        DropReason::ProxyStateWithoutMessageAuthenticator
    );
}

#[test]
fn nas_ipv6_address_is_used_when_no_ipv4_is_given() {
    let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let extra = [RawAttribute {
        typ: 95,
        value: v6.octets().to_vec(),
    }];
    let p = encode_access_request(1, AUTH, SECRET, "u", b"p", None, &extra, true).unwrap();
    let r = decode_request(&p, SECRET, &STRICT).unwrap();
    assert_eq!(r.nas_ip_address, Some(IpAddr::V6(v6)));
}

#[test]
fn request_debug_never_shows_the_password() {
    let p =
        encode_access_request(1, AUTH, SECRET, "alice", b"SuperSecretPw", None, &[], true).unwrap();
    let r = decode_request(&p, SECRET, &STRICT).unwrap();
    let shown = format!("{r:?}");
    assert!(!shown.contains("SuperSecretPw"));
    assert!(!shown.contains(&format!("{:?}", b"SuperSecretPw".to_vec())));
    assert!(shown.contains("<redacted>") && shown.contains("alice"));
}

#[test]
fn reply_verifies_with_message_authenticator_first_and_proxy_states_in_order() {
    let p = request(
        SECRET,
        &[proxy_state(b"ps-1"), proxy_state(b""), proxy_state(b"ps-3")],
        true,
    );
    let req = decode_request(&p, SECRET, &STRICT).unwrap();
    let mut reply = Reply::challenge("Enter code:".into(), b"state-xyz".to_vec());
    reply.session_timeout = Some(60);
    reply
        .attributes
        .push(RawAttribute::vendor(9, 1, b"shell:priv-lvl=15"));
    let bytes = encode_reply(&req, &reply, SECRET).unwrap();
    assert_eq!((bytes[0], bytes[1]), (11, 9));
    assert_eq!(
        usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        bytes.len()
    );

    let d = decode_reply(&bytes, &AUTH, SECRET).unwrap();
    assert_eq!((d.code, d.identifier), (11, 9));
    assert!(d.message_authenticator_first);
    assert_eq!(d.reply_message.as_deref(), Some("Enter code:"));
    assert_eq!(d.state.as_deref(), Some(&b"state-xyz"[..]));
    assert_eq!(d.session_timeout, Some(60));
    assert_eq!(
        d.proxy_states,
        vec![b"ps-1".to_vec(), b"".to_vec(), b"ps-3".to_vec()]
    );
    let order: Vec<u8> = d.attributes.iter().map(|a| a.typ).collect();
    assert_eq!(order, vec![80, 18, 24, 27, 26, 33, 33, 33]);
    assert_eq!(d.attributes[4].value, {
        let mut v = vec![0, 0, 0, 9, 1, 19];
        v.extend_from_slice(b"shell:priv-lvl=15");
        v
    });
}

#[test]
fn accept_and_reject_carry_message_authenticator_first() {
    let req = decode_request(&request(SECRET, &[], true), SECRET, &STRICT).unwrap();
    for (reply, code) in [
        (Reply::accept(), 2),
        (Reply::reject(None), 3),
        (Reply::reject(Some("no".into())), 3),
    ] {
        let bytes = encode_reply(&req, &reply, SECRET).unwrap();
        assert_eq!(&bytes[20..22], &[80, 18]);
        let d = decode_reply(&bytes, &AUTH, SECRET).unwrap();
        assert_eq!(d.code, code);
        assert!(d.message_authenticator_first);
    }
}

#[test]
fn long_reply_message_is_split_on_char_boundaries() {
    let msg: String = "aé€🦀".repeat(60) + "tail"; // 600 + 4 bytes, mixed widths
    let req = decode_request(&request(SECRET, &[], true), SECRET, &STRICT).unwrap();
    let bytes = encode_reply(&req, &Reply::reject(Some(msg.clone())), SECRET).unwrap();
    let d = decode_reply(&bytes, &AUTH, SECRET).unwrap();
    assert_eq!(d.reply_message.as_deref(), Some(msg.as_str()));
    let parts: Vec<&RawAttribute> = d.attributes.iter().filter(|a| a.typ == 18).collect();
    assert_eq!(parts.len(), 3);
    for part in &parts {
        assert!(part.value.len() <= 253);
        assert!(
            std::str::from_utf8(&part.value).is_ok(),
            "split inside a char"
        );
    }
    assert!(parts[0].value.len() >= 250);
}

#[test]
fn empty_reply_message_emits_no_attribute() {
    let req = decode_request(&request(SECRET, &[], true), SECRET, &STRICT).unwrap();
    let bytes = encode_reply(&req, &Reply::reject(Some(String::new())), SECRET).unwrap();
    let d = decode_reply(&bytes, &AUTH, SECRET).unwrap();
    assert_eq!(d.reply_message, None);
    assert_eq!(d.attributes.len(), 1);
}

#[test]
fn reply_fails_verification_with_wrong_authenticator_secret_or_tampering() {
    let req = decode_request(&request(SECRET, &[], true), SECRET, &STRICT).unwrap();
    let bytes = encode_reply(&req, &Reply::accept(), SECRET).unwrap();
    let mut other = AUTH;
    other[0] ^= 0x80;
    let bad = DropReason::BadMessageAuthenticator;
    assert_eq!(decode_reply(&bytes, &other, SECRET).unwrap_err(), bad);
    assert_eq!(decode_reply(&bytes, &AUTH, b"wrong").unwrap_err(), bad);
    let mut tampered = bytes.clone();
    tampered[1] ^= 1;
    assert_eq!(decode_reply(&tampered, &AUTH, SECRET).unwrap_err(), bad);
    // A forged MA with a recomputed Response Authenticator is still caught by the MA.
    let mut forged = bytes;
    forged[22] ^= 1;
    let ra = response_authenticator(&forged, &AUTH, SECRET);
    forged[4..20].copy_from_slice(&ra);
    assert_eq!(decode_reply(&forged, &AUTH, SECRET).unwrap_err(), bad);
}

#[test]
fn status_server_is_answered_with_access_accept() {
    let p = encode_status_server(77, AUTH, SECRET);
    let req = decode_request(&p, SECRET, &OPEN).unwrap();
    assert_eq!(req.kind, RequestKind::StatusServer);
    assert!(req.has_message_authenticator);
    assert_eq!(
        decode_request(&p, b"nope", &OPEN).unwrap_err(),
        DropReason::BadMessageAuthenticator
    );
    let bytes = encode_reply(&req, &Reply::reject(None), SECRET).unwrap();
    let d = decode_reply(&bytes, &AUTH, SECRET).unwrap();
    assert_eq!((d.code, d.identifier), (2, 77));
    assert!(d.message_authenticator_first);
}

#[test]
fn oversized_or_reserved_reply_attributes_are_refused() {
    let req = decode_request(&request(SECRET, &[], true), SECRET, &STRICT).unwrap();
    let mut reply = Reply::accept();
    reply.attributes.push(RawAttribute {
        typ: 25,
        value: vec![0; 254],
    });
    assert!(matches!(
        encode_reply(&req, &reply, SECRET),
        Err(EncodeError::AttributeTooLong { typ: 25, len: 254 })
    ));
    reply.attributes = vec![
        RawAttribute {
            typ: 25,
            value: vec![0; 253]
        };
        17
    ];
    assert!(matches!(
        encode_reply(&req, &reply, SECRET),
        Err(EncodeError::TooLarge(4373))
    ));
    reply.attributes = vec![RawAttribute {
        typ: 80,
        value: vec![0; 16],
    }];
    assert!(matches!(
        encode_reply(&req, &reply, SECRET),
        Err(EncodeError::ReservedAttribute { typ: 80 })
    ));
    reply.attributes = vec![RawAttribute::vendor(311, 1, &[0; 248])];
    assert!(matches!(
        encode_reply(&req, &reply, SECRET),
        Err(EncodeError::AttributeTooLong { typ: 26, .. })
    ));
}

#[test]
fn hmac_md5_matches_rfc_2202_and_a_hand_written_hmac() {
    // RFC 2202 test cases 2 and 6 (key longer than the block size).
    let mut mac = hmac_md5(b"Jefe");
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        hex("750c783e6ab0b503eaa86e310a5db738")
    );
    assert_eq!(
        hmac_md5_by_hand(b"Jefe", b"what do ya want for nothing?").to_vec(),
        hex("750c783e6ab0b503eaa86e310a5db738")
    );
    let long_key = [0xaa; 80];
    let msg = b"Test Using Larger Than Block-Size Key - Hash Key First";
    let mut mac = hmac_md5(&long_key);
    mac.update(msg);
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        hex("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd")
    );
    assert_eq!(
        hmac_md5_by_hand(&long_key, msg).to_vec(),
        hex("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd")
    );
}

#[test]
fn message_authenticator_known_answer_over_fixed_bytes() {
    for secret in [&b"xyzzy5461"[..], &[0x5a; 100][..]] {
        let p = encode_status_server(0xda, AUTH, secret);
        let mut zeroed = p.clone();
        zeroed[22..38].fill(0);
        assert_eq!(&p[22..38], &hmac_md5_by_hand(secret, &zeroed));

        let req = decode_request(&p, secret, &STRICT).unwrap();
        let reply = encode_reply(&req, &Reply::accept(), secret).unwrap();
        // MA over the reply with the Request Authenticator in 4..20 and MA zeroed.
        let mut m = reply.clone();
        m[4..20].copy_from_slice(&AUTH);
        m[22..38].fill(0);
        assert_eq!(&reply[22..38], &hmac_md5_by_hand(secret, &m));
        // Response Authenticator over the patched packet.
        let mut r = reply.clone();
        r[4..20].copy_from_slice(&AUTH);
        r.extend_from_slice(secret);
        assert_eq!(&reply[4..20], Md5::digest(&r).as_slice());
    }
}

#[test]
fn rfc_5997_status_server_example_verifies() {
    let p = hex("0cda00268a54f4686fb394c52866e302185d06235012 5a665e2e1e8411f3e243822097c84fa3");
    let req = decode_request(&p, b"xyzzy5461", &STRICT).unwrap();
    assert_eq!(
        (req.kind, req.identifier),
        (RequestKind::StatusServer, 0xda)
    );
    assert_eq!(
        decode_request(&p, b"xyzzy5462", &STRICT).unwrap_err(),
        DropReason::BadMessageAuthenticator
    );
}

#[test]
fn rfc_2865_access_request_and_accept_examples() {
    // RFC 2865 §7.1: user "nemo", password "arctangent", secret "xyzzy5461".
    let request = hex(
        "0100 0038 0f40 3f94 7397 8057 bd83 d5cb 98f4 227a 0106 6e65 6d6f 0212 0dbe 708d
         93d4 13ce 3196 e43f 782a 0aee 0406 c0a8 0110 0506 0000 0003",
    );
    let auth: [u8; 16] = request[4..20].try_into().unwrap();
    let r = decode_request(&request, b"xyzzy5461", &LENIENT).unwrap();
    assert_eq!(r.user_name.as_deref(), Some("nemo"));
    assert_eq!(
        r.user_password.as_deref().map(Vec::as_slice),
        Some(&b"arctangent"[..])
    );
    assert_eq!(r.nas_ip_address, Some("192.168.1.16".parse().unwrap()));
    let extra = [
        RawAttribute {
            typ: 4,
            value: vec![192, 168, 1, 16],
        },
        RawAttribute {
            typ: 5,
            value: vec![0, 0, 0, 3],
        },
    ];
    let ours = encode_access_request(
        0,
        auth,
        b"xyzzy5461",
        "nemo",
        b"arctangent",
        None,
        &extra,
        false,
    )
    .unwrap();
    assert_eq!(ours, request);

    let accept = hex(
        "0200 0026 86fe 220e 7624 ba2a 1005 f6bf 9b55 e0b2 0606 0000 0001 0f06 0000 0000
         0e06 c0a8 0103",
    );
    let d = decode_reply(&accept, &auth, b"xyzzy5461").unwrap();
    assert_eq!(d.code, 2);
    assert!(!d.message_authenticator_first);
    assert_eq!(d.attributes.len(), 3);
}

#[test]
fn reply_decoder_rejects_requests_and_unknown_codes() {
    assert_eq!(
        decode_reply(&raw(1, &[]), &AUTH, SECRET).unwrap_err(),
        DropReason::UnsupportedCode
    );
    assert_eq!(
        decode_reply(&raw(99, &[]), &AUTH, SECRET).unwrap_err(),
        DropReason::UnknownCode
    );
}

#[test]
fn drop_reason_labels_are_unique_snake_case() {
    let labels: std::collections::HashSet<&str> =
        DropReason::ALL.iter().map(DropReason::as_str).collect();
    assert_eq!(labels.len(), DropReason::ALL.len());
    for l in labels {
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
    }
}

#[test]
fn arbitrary_and_mutated_bytes_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = request(SECRET, &[proxy_state(b"p")], true);
    for _ in 0..20_000 {
        let mut p = if next() % 2 == 0 {
            valid.clone()
        } else {
            let n = (next() % 120) as usize;
            let mut p: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if p.len() >= 4 && next() % 2 == 0 {
                p[0] = [1, 12][(next() % 2) as usize];
                p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            }
            p
        };
        if !p.is_empty() {
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % p.len();
                p[i] = next() as u8;
            }
        }
        let _ = check_structure(&p);
        let _ = decode_request(&p, SECRET, &OPEN);
        let _ = decode_reply(&p, &AUTH, SECRET);
    }
}

/// Every seed of the fuzz corpus and every saved fuzz finding (`fuzz/regressions/`) keeps the
/// round-trip property the fuzz target checks.
#[test]
fn fuzz_seeds_and_regressions_round_trip() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut checked = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            if let Err(v) = roundtrip::check_roundtrip(&data) {
                panic!("{}: {v}", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 9,
        "fuzz/seeds is missing (run fuzz/make_seeds.py)"
    );
}

#[test]
fn decoded_requests_encode_to_the_same_value() {
    let extra = [
        proxy_state(b"first"),
        proxy_state(b"second"),
        RawAttribute {
            typ: 4,
            value: vec![192, 0, 2, 1],
        },
        RawAttribute {
            typ: 32,
            value: b"nas".to_vec(),
        },
    ];
    for ma in [true, false] {
        let p = encode_access_request(
            3,
            AUTH,
            SECRET,
            "zoe",
            b"pw,123456",
            Some(b"st"),
            &extra,
            ma,
        )
        .unwrap();
        let req = decode_request(&p, SECRET, &OPEN).unwrap();
        let again = decode_request(&encode_request(&req, SECRET).unwrap(), SECRET, &OPEN).unwrap();
        assert_eq!(again, req);
    }
}
