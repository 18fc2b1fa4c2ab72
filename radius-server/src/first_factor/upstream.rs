//! `first_factor = "radius"`: forward the password to upstream RADIUS servers (NPS,
//! FreeRADIUS), like the Duo proxy's `radius_client`.
//!
//! One Access-Request per login with a random Request Authenticator and identifier and a
//! Message-Authenticator, from a socket of its own (so replies cannot be confused between
//! logins). A reply counts only when it comes from the server's address, carries the
//! request's identifier, and its Response Authenticator and Message-Authenticator verify;
//! anything else is discarded (and counted in the audit reason) while waiting goes on.
//! A reply that verifies is authentic even when an attribute is odd (a non-UTF-8
//! Reply-Message, a Session-Timeout of the wrong length): it is read leniently and logged,
//! never mistaken for a forgery (which would retransmit the password and fail over).
//! Each server is tried `1 + retries` times for `timeout` each, then the next (failover).
//! An upstream Access-Challenge is refused: multi-round upstream logins are not supported.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use portcullis_core::config::{pass_through_type, UpstreamRadiusConfig, UpstreamServerConfig};
use portcullis_core::engine::ReplyAttribute;
use portcullis_core::first_factor::{CheckContext, DirectoryInfo, FirstFactor, FirstFactorResult};
use portcullis_core::model::User;
use rand::RngCore;

use crate::radius::packet::{decode_reply, encode_access_request, DropReason, RawAttribute};

const CODE_ACCEPT: u8 = 2;
const CODE_REJECT: u8 = 3;
const CODE_CHALLENGE: u8 = 11;
const ATTR_MESSAGE_AUTHENTICATOR: u8 = 80;
const ATTR_NAS_IDENTIFIER: u8 = 32;
const ATTR_CALLING_STATION_ID: u8 = 31;

/// The upstream RADIUS backend of one tenant.
pub struct UpstreamRadius {
    cfg: UpstreamRadiusConfig,
    pass_through: Vec<u8>,
}

/// What one server said.
enum ServerOutcome {
    Verdict(FirstFactorResult),
    /// No valid reply in time; the text says what was seen.
    NoAnswer(String),
}

impl UpstreamRadius {
    /// The backend with these (validated) settings.
    pub fn new(cfg: &UpstreamRadiusConfig) -> Self {
        Self {
            pass_through: cfg
                .pass_through
                .iter()
                .filter_map(|n| pass_through_type(n))
                .collect(),
            cfg: cfg.clone(),
        }
    }

    fn ask(
        &self,
        server: &UpstreamServerConfig,
        ctx: &CheckContext<'_>,
        password: &[u8],
    ) -> ServerOutcome {
        let mut authenticator = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut authenticator);
        let identifier = (rand::rngs::OsRng.next_u32() & 0xff) as u8;
        let mut extra = vec![RawAttribute {
            typ: ATTR_NAS_IDENTIFIER,
            value: self.cfg.nas_identifier.as_bytes().to_vec(),
        }];
        if !ctx.source.is_empty() && ctx.source.len() <= 253 {
            extra.push(RawAttribute {
                typ: ATTR_CALLING_STATION_ID,
                value: ctx.source.as_bytes().to_vec(),
            });
        }
        let packet = match encode_access_request(
            identifier,
            authenticator,
            server.secret.as_bytes(),
            ctx.username,
            password,
            None,
            &extra,
            true,
        ) {
            Ok(p) => p,
            // User-Password holds at most 128 bytes; a user name past 253 does not fit. The
            // audit reason does not repeat the encoder's lengths (a password's length).
            Err(_) => {
                return ServerOutcome::Verdict(FirstFactorResult::Rejected(
                    "cannot forward to the upstream RADIUS server: the password (at most 128 bytes) or user name (at most 253) is too long".into(),
                ))
            }
        };
        let bind: SocketAddr = if server.address.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = match UdpSocket::bind(bind) {
            Ok(s) => s,
            Err(e) => return ServerOutcome::NoAnswer(format!("cannot open a UDP socket: {e}")),
        };
        // What was thrown away while waiting: how many, and the first one's kind (a flood
        // of stray datagrams costs a counter, not memory).
        let mut discarded = Discarded::default();
        let mut buf = vec![0u8; 4096];
        for _attempt in 0..=self.cfg.retries {
            if let Err(e) = sock.send_to(&packet, server.address) {
                return ServerOutcome::NoAnswer(format!("send failed: {e}"));
            }
            let deadline = Instant::now() + self.cfg.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if sock
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .is_err()
                {
                    break;
                }
                let (len, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    // ICMP port unreachable and the like: the server is not there.
                    Err(e) => {
                        return ServerOutcome::NoAnswer(format!("receive failed: {e}"));
                    }
                };
                if from != server.address {
                    discarded.note("a datagram from another address");
                    continue;
                }
                let reply = match decode_reply(
                    &buf[..len],
                    &authenticator,
                    server.secret.as_bytes(),
                ) {
                    Ok(r) => r,
                    Err(DropReason::BadMessageAuthenticator) => {
                        discarded.note(
                            "a reply whose Response Authenticator or Message-Authenticator did not verify (forged, or a wrong secret)",
                        );
                        continue;
                    }
                    // Not a well-formed Accept, Reject or Challenge: nothing could be verified.
                    Err(_) => {
                        discarded.note("a malformed datagram that is not a RADIUS reply");
                        continue;
                    }
                };
                if reply.identifier != identifier {
                    discarded.note("a reply with another identifier");
                    continue;
                }
                let has_ma = reply
                    .attributes
                    .iter()
                    .any(|a| a.typ == ATTR_MESSAGE_AUTHENTICATOR);
                if self.cfg.require_message_authenticator && !has_ma {
                    discarded.note("a reply without Message-Authenticator (require_message_authenticator = true)");
                    continue;
                }
                // Verified but odd (e.g. a Latin-1 Reply-Message from a localised NPS): the
                // reply is authentic and counts; what was read leniently is only logged.
                if !reply.anomalies.is_empty() {
                    tracing::warn!(tenant = ctx.tenant, server = %server.address,
                        code = reply.code, anomalies = %reply.anomalies.join("; "),
                        "upstream RADIUS reply verified but had malformed attributes; read leniently");
                }
                return ServerOutcome::Verdict(match reply.code {
                    CODE_ACCEPT => FirstFactorResult::Accepted(DirectoryInfo {
                        reply_attributes: reply
                            .attributes
                            .iter()
                            .filter(|a| self.pass_through.contains(&a.typ))
                            .map(|a| ReplyAttribute {
                                typ: a.typ,
                                value: a.value.clone(),
                            })
                            .collect(),
                        ..DirectoryInfo::default()
                    }),
                    CODE_REJECT => FirstFactorResult::Rejected(format!(
                        "upstream RADIUS server {} rejected the password",
                        server.address
                    )),
                    CODE_CHALLENGE => FirstFactorResult::Rejected(format!(
                        "upstream RADIUS server {} answered with an Access-Challenge, which is not supported (configure it to accept or reject on the password alone)",
                        server.address
                    )),
                    other => FirstFactorResult::Rejected(format!(
                        "upstream RADIUS server {} answered with code {other}",
                        server.address
                    )),
                });
            }
        }
        let mut why = format!(
            "no valid reply within {} x {:?}",
            self.cfg.retries + 1,
            self.cfg.timeout
        );
        if let Some(first) = discarded.first {
            why.push_str(&format!(
                "; discarded {} datagram(s), e.g. {first}",
                discarded.count
            ));
        }
        ServerOutcome::NoAnswer(why)
    }
}

impl FirstFactor for UpstreamRadius {
    fn name(&self) -> &'static str {
        "radius"
    }

    fn check(
        &self,
        tenant: &str,
        username: &str,
        user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        let ctx = CheckContext {
            tenant,
            username,
            client: "",
            nas_identifier: None,
            source: "",
        };
        self.check_in(&ctx, user, password)
    }

    fn check_in(
        &self,
        ctx: &CheckContext<'_>,
        _user: Option<&User>,
        password: &[u8],
    ) -> FirstFactorResult {
        if password.is_empty() {
            return FirstFactorResult::Rejected("empty password".into());
        }
        let mut problems = Vec::new();
        for server in &self.cfg.servers {
            match self.ask(server, ctx, password) {
                ServerOutcome::Verdict(v) => {
                    if !problems.is_empty() {
                        tracing::warn!(tenant = ctx.tenant, failed = %problems.join("; "),
                            "upstream RADIUS failover: earlier servers did not answer");
                    }
                    return v;
                }
                ServerOutcome::NoAnswer(why) => {
                    tracing::warn!(tenant = ctx.tenant, server = %server.address, %why, "upstream RADIUS server did not answer");
                    problems.push(format!("{}: {why}", server.address));
                }
            }
        }
        FirstFactorResult::Unavailable(format!(
            "no upstream RADIUS server answered ({})",
            problems.join("; ")
        ))
    }

    fn creates_users(&self) -> bool {
        self.cfg.create_users
    }

    fn realm_forms_alike(&self) -> bool {
        true
    }
}

/// Datagrams discarded while waiting for an upstream reply.
#[derive(Debug, Default)]
struct Discarded {
    count: u64,
    first: Option<&'static str>,
}

impl Discarded {
    fn note(&mut self, what: &'static str) {
        self.count += 1;
        self.first.get_or_insert(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};
    use portcullis_core::config::Config;

    /// A fake upstream answering one request with `reply(request) -> datagram`.
    fn fake_upstream(
        reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&reply(&buf[..n]), from);
            }
        });
        (addr, h)
    }

    /// A reply with a correct Response Authenticator and no Message-Authenticator.
    fn signed_reply(req: &[u8], code: u8, identifier: u8, attrs: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![code, identifier, 0, 0];
        p.extend_from_slice(&req[4..20]);
        for (t, v) in attrs {
            p.push(*t);
            p.push((v.len() + 2) as u8);
            p.extend_from_slice(v);
        }
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let mut h = Md5::new();
        h.update(&p);
        h.update(b"s3cret");
        let auth = h.finalize();
        p[4..20].copy_from_slice(&auth);
        p
    }

    fn backend(addr: SocketAddr, require_ma: bool) -> UpstreamRadius {
        let text = format!(
            "[tenants.t]\nfirst_factor = \"radius\"\n[tenants.t.radius]\ntimeout = \"300ms\"\nretries = 0\n\
             require_message_authenticator = {require_ma}\npass_through = [\"Filter-Id\"]\n\
             [[tenants.t.radius.servers]]\naddress = \"{addr}\"\nsecret = \"s3cret\"\n"
        );
        let cfg = Config::from_toml_str(&text, std::path::Path::new("t.toml")).unwrap();
        UpstreamRadius::new(cfg.tenants["t"].radius.as_ref().unwrap())
    }

    fn ctx() -> CheckContext<'static> {
        CheckContext {
            tenant: "t",
            username: "bob",
            client: "vpn",
            nas_identifier: None,
            source: "192.0.2.7",
        }
    }

    #[test]
    fn a_reply_without_message_authenticator_is_discarded_by_default() {
        let (addr, h) = fake_upstream(|req| signed_reply(req, CODE_ACCEPT, req[1], &[]));
        let r = backend(addr, true).check_in(&ctx(), None, b"pw");
        h.join().unwrap();
        match r {
            FirstFactorResult::Unavailable(why) => {
                assert!(why.contains("without Message-Authenticator"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn with_the_opt_out_a_signed_accept_passes_its_pass_through_attributes() {
        let (addr, h) = fake_upstream(|req| {
            // The request carries a Message-Authenticator first, then User-Name.
            assert_eq!(req[20], ATTR_MESSAGE_AUTHENTICATOR);
            signed_reply(
                req,
                CODE_ACCEPT,
                req[1],
                &[(11, b"filter-1"), (25, b"not passed")],
            )
        });
        let r = backend(addr, false).check_in(&ctx(), None, b"pw");
        h.join().unwrap();
        match r {
            FirstFactorResult::Accepted(info) => assert_eq!(
                info.reply_attributes,
                [ReplyAttribute {
                    typ: 11,
                    value: b"filter-1".to_vec()
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_with_another_identifier_is_discarded() {
        let (addr, h) =
            fake_upstream(|req| signed_reply(req, CODE_ACCEPT, req[1].wrapping_add(1), &[]));
        let r = backend(addr, false).check_in(&ctx(), None, b"pw");
        h.join().unwrap();
        assert!(
            matches!(&r, FirstFactorResult::Unavailable(w) if w.contains("another identifier")),
            "{r:?}"
        );
    }

    #[test]
    fn an_upstream_challenge_is_a_reject() {
        let (addr, h) = fake_upstream(|req| signed_reply(req, CODE_CHALLENGE, req[1], &[]));
        let r = backend(addr, false).check_in(&ctx(), None, b"pw");
        h.join().unwrap();
        assert!(
            matches!(&r, FirstFactorResult::Rejected(w) if w.contains("Access-Challenge")),
            "{r:?}"
        );
    }

    /// A fake upstream answering every request it receives within `window` with
    /// `reply(request)`; joining it gives how many requests arrived.
    fn counting_upstream(
        window: Duration,
        reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let end = Instant::now() + window;
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return seen;
                }
                sock.set_read_timeout(Some(left)).unwrap();
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    seen += 1;
                    let _ = sock.send_to(&reply(&buf[..n]), from);
                }
            }
        });
        (addr, h)
    }

    /// A genuine reply as a strict upstream sends it: Message-Authenticator first (HMAC-MD5
    /// keyed with the secret over the reply holding the Request Authenticator), then `attrs`,
    /// then the Response Authenticator over the whole.
    fn signed_reply_with_ma(req: &[u8], code: u8, attrs: &[(u8, &[u8])]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut p = vec![code, req[1], 0, 0];
        p.extend_from_slice(&req[4..20]);
        p.extend_from_slice(&[ATTR_MESSAGE_AUTHENTICATOR, 18]);
        p.extend_from_slice(&[0u8; 16]);
        for (t, v) in attrs {
            p.push(*t);
            p.push((v.len() + 2) as u8);
            p.extend_from_slice(v);
        }
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = Hmac::<Md5>::new_from_slice(b"s3cret").unwrap();
        mac.update(&p);
        let ma = mac.finalize().into_bytes();
        p[22..38].copy_from_slice(&ma);
        let mut h = Md5::new();
        h.update(&p);
        h.update(b"s3cret");
        let auth = h.finalize();
        p[4..20].copy_from_slice(&auth);
        p
    }

    /// Two tries per server, Message-Authenticator required, Filter-Id and Session-Timeout
    /// passed through.
    fn strict_backend(addr: SocketAddr) -> UpstreamRadius {
        let text = format!(
            "[tenants.t]\nfirst_factor = \"radius\"\n[tenants.t.radius]\ntimeout = \"300ms\"\nretries = 1\n\
             pass_through = [\"Filter-Id\", \"Session-Timeout\"]\n\
             [[tenants.t.radius.servers]]\naddress = \"{addr}\"\nsecret = \"s3cret\"\n"
        );
        let cfg = Config::from_toml_str(&text, std::path::Path::new("t.toml")).unwrap();
        UpstreamRadius::new(cfg.tenants["t"].radius.as_ref().unwrap())
    }

    /// A genuine Reject from a German NPS whose Reply-Message is Windows-1252, not UTF-8, is a
    /// wrong password at once: not a forgery, so not retransmitted nor an outage.
    #[test]
    fn a_signed_reject_with_a_latin1_reply_message_is_rejected_after_one_request() {
        let (addr, h) = counting_upstream(Duration::from_millis(900), |req| {
            signed_reply_with_ma(req, CODE_REJECT, &[(18, b"Kennwort ung\xfcltig")])
        });
        let r = strict_backend(addr).check_in(&ctx(), None, b"pw");
        let requests = h.join().unwrap();
        assert!(
            matches!(&r, FirstFactorResult::Rejected(w) if w.contains("rejected the password")),
            "{r:?}"
        );
        assert_eq!(requests, 1, "the password was sent again");
    }

    /// A genuine Accept with a Session-Timeout of the wrong length counts; the malformed
    /// attribute is skipped (not passed through), the others are.
    #[test]
    fn a_signed_accept_with_a_malformed_session_timeout_is_accepted_after_one_request() {
        let (addr, h) = counting_upstream(Duration::from_millis(900), |req| {
            signed_reply_with_ma(
                req,
                CODE_ACCEPT,
                &[
                    (27, &[0, 1, 0]),
                    (11, b"filter-1"),
                    (18, b"Willkommen \xe4"),
                ],
            )
        });
        let r = strict_backend(addr).check_in(&ctx(), None, b"pw");
        let requests = h.join().unwrap();
        match r {
            FirstFactorResult::Accepted(info) => assert_eq!(
                info.reply_attributes,
                [ReplyAttribute {
                    typ: 11,
                    value: b"filter-1".to_vec()
                }]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(requests, 1, "the password was sent again");
    }

    /// A reply that does not verify is still discarded as a forgery (and retransmitted for).
    #[test]
    fn a_tampered_reply_with_a_latin1_message_is_still_discarded_as_forged() {
        let (addr, h) = counting_upstream(Duration::from_millis(900), |req| {
            let mut p = signed_reply_with_ma(req, CODE_REJECT, &[(18, b"Kennwort ung\xfcltig")]);
            p[30] ^= 1; // neither authenticator verifies any more
            p
        });
        let r = strict_backend(addr).check_in(&ctx(), None, b"pw");
        let requests = h.join().unwrap();
        assert!(
            matches!(&r, FirstFactorResult::Unavailable(w) if w.contains("forged")),
            "{r:?}"
        );
        assert_eq!(requests, 2);
    }

    #[test]
    fn an_empty_password_is_not_forwarded() {
        let r = backend("127.0.0.1:9".parse().unwrap(), true).check_in(&ctx(), None, b"");
        assert!(matches!(r, FirstFactorResult::Rejected(_)));
    }
}
