//! Our codec checked against an independent one: the `radius` crate decodes what we
//! encode (replies, and requests as a NAS would send them) and must read the same values,
//! and its User-Password hiding must decrypt with ours.

use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::rfc2865;

use super::*;

const SECRET: &[u8] = b"cross-check-secret";

fn request(password: &[u8], state: Option<&[u8]>) -> (Vec<u8>, Request) {
    let auth = [7u8; 16];
    let bytes = encode_access_request(42, auth, SECRET, "alice", password, state, &[], true)
        .expect("encode request");
    let policy = ClientPolicy::default();
    let req = decode_request(&bytes, SECRET, &policy).expect("our decoder accepts our request");
    (bytes, req)
}

#[test]
fn the_radius_crate_reads_our_requests_and_their_password() {
    for pw in [&b"x"[..], b"hunter2", b"exactly-16-bytes", &[b'p'; 100]] {
        let (bytes, ours) = request(pw, Some(b"state-1"));
        let theirs = Packet::decode(&bytes, SECRET).expect("radius crate decodes our request");
        assert_eq!(theirs.get_code(), Code::AccessRequest);
        assert_eq!(theirs.get_identifier(), ours.identifier);
        let their_pw = rfc2865::lookup_user_password(&theirs)
            .expect("User-Password present")
            .expect("radius crate decrypts it");
        assert_eq!(their_pw, pw, "password of {} bytes", pw.len());
        assert_eq!(
            ours.user_password.as_deref().map(|p| p.as_slice()),
            Some(pw)
        );
        assert_eq!(
            rfc2865::lookup_state(&theirs).as_deref(),
            Some(&b"state-1"[..])
        );
    }
}

#[test]
fn the_radius_crate_reads_our_replies() {
    let (_, req) = request(b"hunter2", None);
    let long = "é".repeat(200); // 400 bytes: two Reply-Message attributes
    let mut reply = Reply::challenge(long.clone(), b"txn.0".to_vec());
    reply.session_timeout = Some(120);
    let bytes = encode_reply(&req, &reply, SECRET).expect("encode reply");
    let theirs = Packet::decode(&bytes, SECRET).expect("radius crate decodes our reply");
    assert_eq!(theirs.get_code(), Code::AccessChallenge);
    assert_eq!(theirs.get_identifier(), req.identifier);
    let messages = rfc2865::lookup_all_reply_message(&theirs).expect("Reply-Messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages.concat(), long);
    assert_eq!(
        rfc2865::lookup_state(&theirs).as_deref(),
        Some(&b"txn.0"[..])
    );
    assert_eq!(
        rfc2865::lookup_session_timeout(&theirs).map(|r| r.ok()),
        Some(Some(120))
    );
    // And its Response Authenticator check agrees with ours.
    let (req_bytes, _) = request(b"hunter2", None);
    assert!(Packet::is_authentic_response(&bytes, &req_bytes, SECRET));
}
