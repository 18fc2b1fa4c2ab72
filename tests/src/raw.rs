//! Raw RADIUS datagrams over UDP, built and checked with the project's own packet layer
//! (`portcullis_server::radius::packet`), for what radclient cannot show: byte-identical
//! retransmissions and attribute order.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use portcullis_server::radius::packet::{decode_reply, encode_access_request, DecodedReply};
use rand::RngCore;

/// An encoded Access-Request and what is needed to check its reply.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub bytes: Vec<u8>,
}

/// A UDP socket connected to the server, with the client's shared secret.
pub struct RawClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub secret: Vec<u8>,
}

/// A UDP socket bound to `ip` on a free port and connected to `server`: datagrams from
/// another loopback address (127.0.0.2, ...) come from another client, or from none.
pub fn socket_from(ip: &str, server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    socket.connect(server).expect("connect UDP socket");
    socket
}

impl RawClient {
    /// Binds 127.0.0.1 on a free port and connects it to `server`.
    pub fn new(server: SocketAddr, secret: &str) -> RawClient {
        RawClient::from_ip("127.0.0.1", server, secret)
    }

    /// Like [`RawClient::new`], sending from `ip` (another client's address).
    pub fn from_ip(ip: &str, server: SocketAddr, secret: &str) -> RawClient {
        RawClient {
            socket: socket_from(ip, server),
            server,
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// Encodes an Access-Request with a random Request Authenticator.
    pub fn access_request(
        &self,
        identifier: u8,
        user_name: &str,
        password: &[u8],
        state: Option<&[u8]>,
        with_message_authenticator: bool,
    ) -> RawRequest {
        let mut authenticator = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut authenticator);
        let bytes = encode_access_request(
            identifier,
            authenticator,
            &self.secret,
            user_name,
            password,
            state,
            &[],
            with_message_authenticator,
        )
        .unwrap_or_else(|e| panic!("encode_access_request: {e:?}"));
        RawRequest {
            identifier,
            authenticator,
            bytes,
        }
    }

    /// Sends one datagram.
    pub fn send(&self, datagram: &[u8]) {
        let n = self.socket.send(datagram).expect("send datagram");
        assert_eq!(n, datagram.len(), "short UDP send");
    }

    /// Waits up to `timeout` for one datagram; `None` if nothing came. A wait interrupted
    /// (EINTR: Linux fails a `recv` with a receive timeout so when the process was stopped
    /// and continued, even without a signal handler, see signal(7)) goes on for the time
    /// left.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(e) => panic!("recv from {}: {e}", self.server),
            }
        }
    }

    /// Sends `request` and waits up to `timeout` for the reply bytes.
    pub fn exchange(&self, request: &RawRequest, timeout: Duration) -> Option<Vec<u8>> {
        self.send(&request.bytes);
        self.recv(timeout)
    }

    /// Checks (Response Authenticator, Message-Authenticator) and decodes a reply to
    /// `request`; fails the test if the reply does not verify.
    /// Our server's replies must also be well formed (a UTF-8 Reply-Message, a 4-byte
    /// Session-Timeout), which the lenient decoder only notes.
    pub fn decode(&self, request: &RawRequest, reply: &[u8]) -> DecodedReply {
        let decoded =
            decode_reply(reply, &request.authenticator, &self.secret).unwrap_or_else(|e| {
                panic!(
                    "the reply to request id {} does not verify: {e:?}\nreply bytes: {}",
                    request.identifier,
                    hex(reply)
                )
            });
        assert!(
            decoded.anomalies.is_empty(),
            "the reply to request id {} is malformed: {:?}\nreply bytes: {}",
            request.identifier,
            decoded.anomalies,
            hex(reply)
        );
        decoded
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex digits (an optional `0x` prefix is ignored).
pub fn unhex(text: &str) -> Vec<u8> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    assert!(
        text.len().is_multiple_of(2),
        "odd number of hex digits: {text}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|_| panic!("not hex: {text}"))
        })
        .collect()
}

/// RADIUS codes.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const ACCESS_CHALLENGE: u8 = 11;
}

/// The type of the first attribute of a RADIUS packet, if it has any.
pub fn first_attribute_type(packet: &[u8]) -> Option<u8> {
    let length = u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]) as usize;
    if length > 20 && packet.len() > 20 {
        Some(packet[20])
    } else {
        None
    }
}

/// Attribute type 80.
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
