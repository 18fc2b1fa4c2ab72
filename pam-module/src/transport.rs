//! The Unix-socket transport: one connection per step, every operation under a deadline.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use portcullis_core::protocol::{self, Request, Response, HEADER_LEN};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::flow::{CallError, Transport};

/// Talks to `portcullis serve` over its PAM socket.
pub struct SocketTransport {
    pub path: PathBuf,
    /// The deadline of one exchange: connect, send and receive together.
    pub timeout: Duration,
}

impl SocketTransport {
    fn exchange(&self, req: &Request) -> Result<Response, CallError> {
        let deadline = Instant::now() + req.answer_within(self.timeout);
        let mut stream = self.send(req, deadline).map_err(CallError::Unreachable)?;
        let left = self.deadline_left(deadline);
        // Read the header, then the body, each bounded by what is left of the deadline.
        // The request is out: from here on a missing answer is no outage (see NoAnswer).
        let mut header = [0u8; HEADER_LEN];
        read_until(&mut stream, &mut header, &left).map_err(CallError::NoAnswer)?;
        let len =
            protocol::body_len(header).map_err(|e| CallError::Protocol(format!("receive: {e}")))?;
        let mut body = vec![0u8; len];
        read_until(&mut stream, &mut body, &left).map_err(CallError::NoAnswer)?;
        protocol::decode_response(&body).map_err(|e| CallError::Protocol(format!("receive: {e}")))
    }

    /// What is left of `deadline`, or an error naming `what` timed out.
    fn deadline_left(&self, deadline: Instant) -> impl Fn(&str) -> Result<Duration, String> {
        move |what: &str| {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{what}: no answer in time (timeout=)"))
        }
    }

    /// Connect and send the request: every failure here means the daemon could not be
    /// asked.
    fn send(
        &self,
        req: &Request,
        deadline: Instant,
    ) -> Result<std::os::unix::net::UnixStream, String> {
        let addr = SockAddr::unix(&self.path)
            .map_err(|e| format!("socket path {}: {e}", self.path.display()))?;
        let sock =
            Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
        // Non-blocking connect: a daemon that stopped accepting must not hang the login.
        sock.connect_timeout(&addr, self.timeout)
            .map_err(|e| format!("connect to {}: {e}", self.path.display()))?;
        let mut stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(sock));
        let left = self.deadline_left(deadline);
        stream
            .set_write_timeout(Some(left("send")?))
            .map_err(|e| format!("socket: {e}"))?;
        protocol::write_frame(&mut stream, req).map_err(|e| format!("send: {e}"))?;
        Ok(stream)
    }
}

fn read_until(
    stream: &mut std::os::unix::net::UnixStream,
    buf: &mut [u8],
    left: &dyn Fn(&str) -> Result<Duration, String>,
) -> Result<(), String> {
    let mut filled = 0;
    while filled < buf.len() {
        stream
            .set_read_timeout(Some(left("receive")?))
            .map_err(|e| format!("socket: {e}"))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err("receive: the daemon closed the connection".into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(())
}

impl Transport for SocketTransport {
    fn call(&mut self, req: &Request) -> Result<Response, CallError> {
        self.exchange(req)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    use portcullis_core::protocol::{RequestStep, ResponseStep, VERSION};

    use super::*;

    fn request(step: RequestStep) -> Request {
        Request {
            v: VERSION,
            origin: crate::flow::tests::origin(),
            step,
        }
    }

    fn poll() -> Request {
        request(RequestStep::Poll { txn: "t.0".into() })
    }

    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pam-transport-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("pam.sock")
    }

    /// A daemon that takes one request and answers `reply` after `delay` (never, if None).
    fn daemon(path: &PathBuf, delay: Option<Duration>) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = protocol::read_frame(&mut conn).unwrap();
            match delay {
                Some(d) => {
                    std::thread::sleep(d);
                    let still = Response::new(ResponseStep::Reject {
                        message: "not approved yet".into(),
                    });
                    protocol::write_frame(&mut conn, &still).unwrap();
                    conn.flush().unwrap();
                }
                // Holds the connection, says nothing, until the module gives up.
                None => {
                    let mut rest = Vec::new();
                    let _ = conn.read_to_end(&mut rest);
                }
            }
        })
    }

    #[test]
    fn no_daemon_is_unreachable() {
        let mut t = SocketTransport {
            path: socket_path("absent"),
            timeout: Duration::from_secs(1),
        };
        let got = t.call(&poll());
        assert!(matches!(got, Err(CallError::Unreachable(_))), "{got:?}");
    }

    #[test]
    fn a_daemon_that_took_the_request_and_stays_silent_is_no_answer() {
        let path = socket_path("silent");
        let d = daemon(&path, None);
        let mut t = SocketTransport {
            path,
            timeout: Duration::from_secs(1),
        };
        let got = t.call(&request(RequestStep::Answer {
            txn: "t.0".into(),
            answer: protocol::Secret::new("123456".into()),
        }));
        // Never Unreachable: failmode=safe must not let this login in.
        assert!(matches!(got, Err(CallError::NoAnswer(_))), "{got:?}");
        drop(t);
        d.join().unwrap();
    }

    #[test]
    fn a_poll_waits_for_the_daemons_hold_past_timeout() {
        let path = socket_path("held");
        // Answered after 1.5 s: beyond timeout=1, within timeout + the hold.
        let d = daemon(&path, Some(Duration::from_millis(1500)));
        let mut t = SocketTransport {
            path,
            timeout: Duration::from_secs(1),
        };
        let got = t.call(&poll());
        assert!(
            matches!(
                got,
                Ok(Response {
                    step: ResponseStep::Reject { .. },
                    ..
                })
            ),
            "{got:?}"
        );
        d.join().unwrap();
    }
}
