//! RADIUS protocol behaviour: Message-Authenticator, shared secret, retransmissions.

use std::time::Duration;

use portcullis_tests::process::Signal;
use portcullis_tests::raw::{self, code, first_attribute_type, RawClient, MESSAGE_AUTHENTICATOR};
use portcullis_tests::{radclient, require_tool, LoginFixture, Mode};

fn peers() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
}

#[test]
fn request_without_message_authenticator_gets_no_answer() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let attrs = [
        ("User-Name", f.user.clone()),
        ("User-Password", f.password.clone()),
    ];
    let bare = radclient(f.server.addr, &f.env.client().secret, &attrs, false);
    assert!(
        bare.is_no_reply(),
        "require_message_authenticator = true: a request without it must get no answer\n{}",
        bare.raw_output
    );
    // The server is alive and answers the same request with Message-Authenticator.
    let signed = radclient(f.server.addr, &f.env.client().secret, &attrs, true);
    assert!(
        signed.is_challenge(),
        "the same request with Message-Authenticator is answered\n{}",
        signed.raw_output
    );
}

#[test]
fn wrong_secret_gets_no_answer() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let attrs = [
        ("User-Name", f.user.clone()),
        ("User-Password", format!("{}{}", f.password, f.code())),
    ];
    let wrong = radclient(f.server.addr, "not-the-secret", &attrs, true);
    assert!(
        wrong.is_no_reply(),
        "a request signed with the wrong shared secret must get no answer\n{}",
        wrong.raw_output
    );
    let right = radclient(f.server.addr, &f.env.client().secret, &attrs, true);
    assert!(
        right.is_accept(),
        "the same request with the right secret is accepted (the code was not consumed)\n{}",
        right.raw_output
    );
}

/// How many lines of `log` contain `text`.
fn lines_with(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

#[test]
fn a_wrong_secret_and_an_unknown_address_are_warned_about_once_a_minute() {
    peers();
    let mut f = LoginFixture::new(Mode::Challenge);
    let attrs = [
        ("User-Name", f.user.clone()),
        ("User-Password", f.password.clone()),
    ];
    const WRONG: &str =
        "client 'vpn' (127.0.0.1): Message-Authenticator does not verify: wrong shared secret?";
    for _ in 0..3 {
        let wrong = radclient(f.server.addr, "not-the-secret", &attrs, true);
        assert!(wrong.is_no_reply(), "{}", wrong.raw_output);
    }
    let log = f.server.wait_for_stderr(WRONG, Duration::from_secs(5));
    assert_eq!(
        lines_with(&log, WRONG),
        1,
        "one warning for three requests:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(WRONG) && l.contains("WARN")),
        "at WARN, the default level shows it:\n{log}"
    );

    // An address that no client's `address` contains (127.0.0.2; the client is 127.0.0.1/32).
    const UNKNOWN: &str = "request from 127.0.0.2 which is no configured client: dropped";
    let request = RawClient::new(f.server.addr, "s3cret-vpn").access_request(
        7,
        &f.user,
        f.password.as_bytes(),
        None,
        true,
    );
    let stranger = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    for _ in 0..3 {
        stranger.send_to(&request.bytes, f.server.addr).unwrap();
    }
    f.server.wait_for_stderr(UNKNOWN, Duration::from_secs(5));
    // The three datagrams were handled (the last one's drop logged at debug only).
    std::thread::sleep(Duration::from_millis(300));
    let log = f.server.stderr();
    assert_eq!(
        lines_with(&log, UNKNOWN),
        1,
        "one warning for three requests:\n{log}"
    );
    assert_eq!(lines_with(&log, WRONG), 1, "{log}");

    // Stopped: the last line counts the drops; without [http] no HTTP listener is promised.
    f.server.signal(Signal::TERM);
    assert!(f.server.wait_exit(Duration::from_secs(15)).is_some());
    let log = f.server.stderr();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped received="))
        .unwrap_or_else(|| panic!("no stop line:\n{log}"));
    assert!(
        stopped.contains("unknown_client=3") && stopped.contains("bad_message_authenticator=3"),
        "{stopped}"
    );
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("HTTP listener"), "{log}");
}

#[test]
fn retransmission_gets_byte_identical_reply() {
    peers();
    let f = LoginFixture::new(Mode::Append);
    let client = RawClient::new(f.server.addr, &f.env.client().secret);
    let password = format!("{}{}", f.password, f.code());
    let request = client.access_request(42, &f.user, password.as_bytes(), None, true);

    let first = client
        .exchange(&request, Duration::from_secs(5))
        .expect("no reply to the Access-Request");
    let decoded = client.decode(&request, &first);
    assert_eq!(
        decoded.code,
        code::ACCESS_ACCEPT,
        "password + code over raw UDP: {decoded:?}"
    );
    assert_eq!(decoded.identifier, 42);
    assert!(
        decoded.message_authenticator_first,
        "Message-Authenticator must be the first attribute of the reply: {}",
        raw::hex(&first)
    );
    assert_eq!(
        first_attribute_type(&first),
        Some(MESSAGE_AUTHENTICATOR),
        "first attribute of the reply: {}",
        raw::hex(&first)
    );

    // The NAS did not see the Accept and sends the very same datagram again: processing it
    // again would refuse the code as a replay, so only the cached reply is right.
    let second = client
        .exchange(&request, Duration::from_secs(5))
        .expect("no reply to the retransmission");
    assert_eq!(
        raw::hex(&second),
        raw::hex(&first),
        "the retransmission must get the byte-identical reply"
    );

    // Datagrams from the NAS's address with that identifier that do not verify (a forger
    // who can fake the address but has no secret) are dropped and leave the cached reply
    // in place: header only, and a whole request signed with a wrong secret.
    let mut header_only = vec![code::ACCESS_REQUEST, 42, 0, 20];
    header_only.extend_from_slice(&[0x5a; 16]);
    client.send(&header_only);
    let forger = RawClient::new(f.server.addr, "not-the-secret");
    let forged = forger.access_request(42, &f.user, b"whatever", None, true);
    client.send(&forged.bytes);
    assert_eq!(
        client.recv(Duration::from_millis(300)),
        None,
        "forged datagrams get no answer"
    );
    let again = client
        .exchange(&request, Duration::from_secs(5))
        .expect("no reply to the retransmission after the forged datagrams");
    assert_eq!(
        raw::hex(&again),
        raw::hex(&first),
        "forged datagrams must not push the answered request out of the response cache"
    );

    // A new request (new authenticator, same identifier) is a new login: the code is used.
    let fresh = client.access_request(42, &f.user, password.as_bytes(), None, true);
    let third = client
        .exchange(&fresh, Duration::from_secs(5))
        .expect("no reply to the new request");
    let decoded = client.decode(&fresh, &third);
    assert_eq!(
        decoded.code,
        code::ACCESS_REJECT,
        "a new request with the used code: {decoded:?}"
    );
    assert!(decoded.message_authenticator_first, "{}", raw::hex(&third));
}

#[test]
fn challenge_over_raw_udp_carries_state_and_message_authenticator_first() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let client = RawClient::new(f.server.addr, &f.env.client().secret);
    let request = client.access_request(7, &f.user, f.password.as_bytes(), None, true);
    let reply = client
        .exchange(&request, Duration::from_secs(5))
        .expect("no reply to the Access-Request");
    let decoded = client.decode(&request, &reply);
    assert_eq!(decoded.code, code::ACCESS_CHALLENGE, "{decoded:?}");
    assert!(decoded.message_authenticator_first, "{}", raw::hex(&reply));
    let state = decoded
        .state
        .clone()
        .expect("the challenge carries a State");
    assert!(decoded.reply_message.is_some(), "{decoded:?}");

    let answer = client.access_request(8, &f.user, f.code().as_bytes(), Some(&state), true);
    let reply = client
        .exchange(&answer, Duration::from_secs(5))
        .expect("no reply to the answer");
    let decoded = client.decode(&answer, &reply);
    assert_eq!(decoded.code, code::ACCESS_ACCEPT, "{decoded:?}");
    assert!(decoded.message_authenticator_first, "{}", raw::hex(&reply));
}

#[test]
fn raw_request_without_message_authenticator_gets_no_answer() {
    peers();
    let f = LoginFixture::new(Mode::Challenge);
    let client = RawClient::new(f.server.addr, &f.env.client().secret);
    let request = client.access_request(9, &f.user, f.password.as_bytes(), None, false);
    assert!(
        client.exchange(&request, Duration::from_secs(2)).is_none(),
        "no answer without Message-Authenticator"
    );
}
