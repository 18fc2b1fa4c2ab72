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
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.send(req, deadline).map_err(CallError::Unreachable)?;
        let left = self.deadline_left(deadline);
        // Read the header, then the body, each bounded by what is left of the deadline.
        let mut header = [0u8; HEADER_LEN];
        read_until(&mut stream, &mut header, &left).map_err(CallError::Unreachable)?;
        let len =
            protocol::body_len(header).map_err(|e| CallError::Protocol(format!("receive: {e}")))?;
        let mut body = vec![0u8; len];
        read_until(&mut stream, &mut body, &left).map_err(CallError::Unreachable)?;
        protocol::decode_response(&body).map_err(|e| CallError::Protocol(format!("receive: {e}")))
    }

    /// What is left of `deadline`, or an error naming `what` timed out.
    fn deadline_left(&self, deadline: Instant) -> impl Fn(&str) -> Result<Duration, String> {
        let timeout = self.timeout;
        move |what: &str| {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{what}: no answer within {timeout:?}"))
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
