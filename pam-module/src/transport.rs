//! The Unix-socket transport: one connection per step, every operation under a deadline.
//!
//! What `failmode=` may treat as an outage is decided here: only a connect that failed
//! ([`connect_error`]: no socket file, nobody listening, a full backlog) is
//! [`CallError::Unreachable`]. Once the connect succeeded, a failure is
//! [`CallError::NotDelivered`] (the request did not go out) or [`CallError::NoAnswer`] (it
//! did), which are refused in every failmode. A connection to a socket that someone other
//! than root, the owner of the socket's directory or `daemon_user=` made is refused as
//! [`CallError::Setup`] before anything is sent (see [`crate::peer`]).
//!
//! The deadline is wall-clock time, which runs on while the process is stopped (a user's
//! Ctrl-Z on their own sudo). So no syscall is ever skipped because the deadline passed:
//! the connect is always made, and a send or read that comes after the deadline is still
//! tried once without waiting, so that an answer already in the receive queue is taken.

use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis_core::protocol::{self, Request, Response, HEADER_LEN};
use socket2::{Domain, SockAddr, Socket, Type};
use zeroize::Zeroize;

use crate::args::{DEFAULT_SOCKET, MAX_SOCKET_PATH};
use crate::flow::{CallError, Transport};
use crate::peer;

/// Talks to `portcullis serve` over its PAM socket.
pub struct SocketTransport {
    pub path: PathBuf,
    /// The deadline of one exchange: connect, send and receive together.
    pub timeout: Duration,
    /// `daemon_user=`: its name and uid, trusted to answer on the socket besides root and
    /// the owner of the socket's directory (see [`crate::peer`]).
    pub daemon_user: Option<(String, u32)>,
}

/// How long the module looks for a frame the daemon queued before it closed the
/// connection under a request that could not be sent (see [`failed_send`]). Such a frame
/// is in the socket's receive queue already (AF_UNIX delivers a write to the peer's queue
/// at once), so this only bounds a read that finds nothing.
const QUEUED_FRAME_WAIT: Duration = Duration::from_millis(100);

/// What is left of `deadline`; `None` once it has passed: the next operation is then tried
/// once without waiting (never skipped).
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

impl SocketTransport {
    fn exchange(&self, req: &Request) -> Result<Response, CallError> {
        let deadline = Instant::now() + req.answer_within(self.timeout);
        let stream = self.connect(deadline)?;
        self.exchange_on(stream, req, deadline)
    }

    /// Send `req` on `stream` (connected to the daemon) and read the answer. A connection
    /// was made: nothing that fails from here on is an outage ([`CallError::Unreachable`]).
    fn exchange_on(
        &self,
        mut stream: UnixStream,
        req: &Request,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        // A request that cannot be framed (too large) is no outage: never failmode.
        let mut frame =
            protocol::encode(req).map_err(|e| CallError::Protocol(format!("send: {e}")))?;
        let sent = send_all(&stream, &frame, deadline);
        // The frame may hold a password.
        frame.zeroize();
        if let Err(e) = sent {
            return failed_send(&mut stream, &e, deadline);
        }
        // Read the header, then the body, each bounded by what is left of the deadline.
        // The request is out: from here on a missing answer is no outage (see NoAnswer).
        let mut header = [0u8; HEADER_LEN];
        match fill(&mut stream, &mut header, deadline) {
            (_, Filled::Full) => {}
            // A reset before any byte of the answer: the daemon closed its end with our
            // request unread (a listener closed with this connection still in its queue at
            // shutdown, or a daemon that died while reading it). A daemon that read the
            // whole request and then stopped gives end of stream instead. So the request
            // was not delivered, and may be sent again (a restart); but a connection was
            // made, so it is no outage either.
            (0, Filled::Failed(e)) if e.kind() == ErrorKind::ConnectionReset => {
                return Err(CallError::NotDelivered(format!(
                    "receive: {e} (the request was not read)"
                )))
            }
            (_, end) => return Err(CallError::NoAnswer(end.describe())),
        }
        let len =
            protocol::body_len(header).map_err(|e| CallError::Protocol(format!("receive: {e}")))?;
        let mut body = vec![0u8; len];
        match fill(&mut stream, &mut body, deadline) {
            (_, Filled::Full) => {}
            (_, end) => return Err(CallError::NoAnswer(end.describe())),
        }
        protocol::decode_response(&body).map_err(|e| CallError::Protocol(format!("receive: {e}")))
    }

    /// Connect to the daemon: every failure here means the daemon could not be asked;
    /// whether that is an outage (failmode decides) or this host's setup (always
    /// refused) is told by [`connect_error`].
    fn connect(&self, deadline: Instant) -> Result<UnixStream, CallError> {
        let shown = self.path.display();
        // Whoever may create files beside the socket may put a socket of their own there
        // while the daemon is down, and answer accept: such a directory is a setup error.
        if let Some(dir) = self.path.parent() {
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o002 != 0) {
                return Err(CallError::Setup(format!(
                    "socket={shown} is in {}, which every user may write: anyone could put a socket of their own there while the daemon is down; keep the daemon's socket in a directory only it and root may write (the default {DEFAULT_SOCKET})",
                    dir.display()
                )));
            }
        }
        // Args::parse refuses a path too long for sun_path; this catches what it cannot.
        let addr = SockAddr::unix(&self.path).map_err(|e| {
            CallError::Setup(format!(
                "socket={shown} cannot be a Unix socket address ({e}); use an absolute path of at most {MAX_SOCKET_PATH} bytes"
            ))
        })?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)
            .map_err(|e| CallError::Setup(format!("cannot create a Unix socket: {e}")))?;
        // Non-blocking connect: a daemon that stopped accepting must not hang the login
        // (Linux answers at once for a Unix socket: connected, ECONNREFUSED, ENOENT or, for
        // a full backlog, EAGAIN). timeout= at most, even for a poll (whose deadline
        // includes the daemon's hold). Made even when the deadline has passed (the process
        // was stopped): a connect that was never tried is no evidence of an outage.
        let budget = time_left(deadline)
            .unwrap_or(MIN_CONNECT_WAIT)
            .max(MIN_CONNECT_WAIT)
            .min(self.timeout);
        sock.connect_timeout(&addr, budget)
            .map_err(|e| connect_error(&self.path, &e))?;
        let stream = UnixStream::from(std::os::fd::OwnedFd::from(sock));
        self.check_peer(&stream)?;
        Ok(stream)
    }

    /// Who made the socket we are connected to: root, the owner of the socket's directory
    /// or `daemon_user=`, else a setup error (refused in every failmode: a socket someone
    /// else put there would answer accept; see [`crate::peer`]). Nothing was sent yet.
    fn check_peer(&self, stream: &UnixStream) -> Result<(), CallError> {
        use std::os::unix::fs::MetadataExt;
        let peer = peer::peer_of(stream).map_err(|e| {
            CallError::Setup(format!(
                "socket={}: cannot tell who answers on it (SO_PEERCRED: {e})",
                self.path.display()
            ))
        })?;
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let expected = peer::Expected {
            dir,
            dir_owner: std::fs::metadata(dir).ok().map(|m| m.uid()),
            daemon_user: self
                .daemon_user
                .as_ref()
                .map(|(name, uid)| (name.as_str(), *uid)),
        };
        peer::check(&self.path, peer, &expected).map_err(CallError::Setup)
    }
}

/// The shortest wait a connect gets, even when it starts after the deadline (a process
/// stopped before it, a slow machine): the connect is always tried, and its answer, not
/// the clock, says whether the daemon is there.
const MIN_CONNECT_WAIT: Duration = Duration::from_secs(1);

/// Writes all of `frame` with MSG_NOSIGNAL: a daemon that closed the connection is an
/// EPIPE error here, never a SIGPIPE, which would kill an application that does not
/// ignore it. (std's UnixStream sends with MSG_NOSIGNAL on Linux too, but does not
/// promise it.) Each send waits no longer than what is left of `deadline`; one that
/// starts after it is still made, without waiting (MSG_DONTWAIT): a request fits the
/// socket's buffer, so a daemon that is there takes it.
fn send_all(stream: &UnixStream, frame: &[u8], deadline: Instant) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let mut sent = 0;
    while sent < frame.len() {
        let flags = match time_left(deadline) {
            Some(left) => {
                stream.set_write_timeout(Some(left))?;
                libc::MSG_NOSIGNAL
            }
            None => libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        };
        match sock.send_with_flags(&frame[sent..], flags) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("{e}: the request was not taken in time (timeout=)"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How [`fill`] ended.
#[derive(Debug)]
enum Filled {
    /// The buffer is full.
    Full,
    /// The peer closed the connection first.
    Closed,
    /// Nothing more came before the deadline (and a last read without waiting found
    /// nothing either).
    Late,
    /// A read failed.
    Failed(std::io::Error),
}

impl Filled {
    /// For the log.
    fn describe(&self) -> String {
        match self {
            Filled::Full => "receive: complete".into(),
            Filled::Closed => "receive: the daemon closed the connection".into(),
            Filled::Late => "receive: no answer in time (timeout=)".into(),
            Filled::Failed(e) => format!("receive: {e}"),
        }
    }
}

/// Reads into `buf` until it is full, the stream ends or fails, or `until` has passed;
/// how many bytes were read and why it stopped.
///
/// Each read waits no longer than what is left of `until`. A read that comes after it is
/// still made, without waiting: bytes already in the receive queue are taken (an answer
/// the daemon wrote while the process was stopped); only when none are there does it end
/// with [`Filled::Late`]. So the deadline never stands for a read that was not made.
fn fill(stream: &mut UnixStream, buf: &mut [u8], until: Instant) -> (usize, Filled) {
    let mut filled = 0;
    while filled < buf.len() {
        let left = time_left(until);
        let set = match left {
            Some(left) => stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_read_timeout(Some(left))),
            None => stream.set_nonblocking(true),
        };
        if let Err(e) = set {
            return (filled, Filled::Failed(e));
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return (filled, Filled::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A read timeout that fired (EAGAIN): the deadline has passed; the loop reads
            // once more without waiting. Without waiting already: nothing is queued.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if left.is_none() {
                    return (filled, Filled::Late);
                }
            }
            Err(e) => return (filled, Filled::Failed(e)),
        }
    }
    (filled, Filled::Full)
}

/// What a request that could not be sent on a connection that was made means.
///
/// A daemon may answer a connection without reading the request: `forbidden` (a peer uid
/// not in `pam.allowed_uids`) and `busy` (past `pam.max_connections`) did so before the
/// daemon read the request first, and still do past its limit of refused peers it waits
/// for; `too_large` does. It writes its error frame and closes; a send that comes after
/// the close fails (EPIPE, ECONNRESET), while the frame is still in this socket's receive
/// queue. That frame is the daemon's answer and wins: a `forbidden` taken for an outage
/// would let a peer the daemon refuses in without a second factor under `failmode=safe`.
/// So the module reads what is queued first, and uses a whole frame, or calls bytes that
/// are no frame a protocol error (a daemon that is there and broken: refused whatever
/// failmode says).
///
/// Nothing queued: the connection was closed (or the send timed out) without a word from
/// the daemon. Every refusal of the daemon comes with a frame, so this is a daemon that
/// is stopping or crashed: a daemon stopping closes its listening socket with our
/// connection still in its backlog (the connect had succeeded, nobody ever accepted it),
/// or ends its connection tasks. Part of the request at most went out, and the daemon
/// cannot act on part of a frame, so the request was not delivered: `NotDelivered`, safe
/// to send again later in a login while the daemon restarts (`flow::call_waiting`).
/// Still no outage: the connect succeeded, so something listens on the socket, and a
/// peer that closes connections it accepted must not open `failmode=safe`; the login is
/// refused in every failmode. `NoAnswer` would claim the daemon may have acted on the
/// request, and would refuse a login that a restart of the daemon interrupted at the
/// send instead of waiting for it.
fn failed_send(
    stream: &mut UnixStream,
    e: &std::io::Error,
    deadline: Instant,
) -> Result<Response, CallError> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(10), QUEUED_FRAME_WAIT);
    match queued_frame(stream, Instant::now() + wait) {
        Queued::Nothing => Err(CallError::NotDelivered(format!(
            "send: {e} (the daemon closed the connection before it took the request, without an answer: stopping?)"
        ))),
        Queued::Frame(body) => protocol::decode_response(&body).map_err(|err| {
            CallError::Protocol(format!(
                "send: {e}; the daemon closed the connection after a frame that is no response: {err}"
            ))
        }),
        Queued::Broken(what) => Err(CallError::Protocol(format!(
            "send: {e}; the daemon closed the connection after {what}"
        ))),
    }
}

/// What the daemon left in the receive queue of a connection it closed.
#[derive(Debug)]
enum Queued {
    /// Not a byte.
    Nothing,
    /// One whole frame: its body.
    Frame(Vec<u8>),
    /// Bytes that are no whole frame (what, for the log).
    Broken(String),
}

/// Reads the frame the daemon may have queued before it closed the connection, waiting
/// until `until` at most.
fn queued_frame(stream: &mut UnixStream, until: Instant) -> Queued {
    let mut header = [0u8; HEADER_LEN];
    match read_before(stream, &mut header, until) {
        0 => return Queued::Nothing,
        n if n < HEADER_LEN => return Queued::Broken(format!("{n} bytes of a frame header")),
        _ => {}
    }
    let len = match protocol::body_len(header) {
        Ok(len) => len,
        Err(e) => return Queued::Broken(format!("a frame header that is not one: {e}")),
    };
    let mut body = vec![0u8; len];
    match read_before(stream, &mut body, until) {
        n if n == len => Queued::Frame(body),
        n => Queued::Broken(format!("{n} of the {len} bytes of a frame")),
    }
}

/// Fills `buf` from `stream` until it is full, the stream ends or fails, or `until`
/// passes (read at least once, see [`fill`]); how many bytes were read. ECONNRESET (the
/// daemon closed with our request unread) comes only once the queued bytes are read; a
/// timeout: nothing (more) is queued.
fn read_before(stream: &mut UnixStream, buf: &mut [u8], until: Instant) -> usize {
    fill(stream, buf, until).0
}

/// What a failed connect to the socket at `path` means. Only what a daemon that is down,
/// restarting or overloaded causes is an outage (`failmode=` decides): no socket file in
/// its directory (ENOENT, see [`missing_socket`]), nobody listening on it (ECONNREFUSED),
/// a full backlog (EAGAIN) or no answer in time. Anything else is this host's setup (a
/// path that is not a socket, a directory that does not exist, a mode or owner that keeps
/// the module out) and is refused whatever `failmode=` says: otherwise a typo or a `chmod`
/// would let logins in without a second factor.
fn connect_error(path: &Path, e: &std::io::Error) -> CallError {
    use std::io::ErrorKind;
    let shown = path.display();
    match e.raw_os_error() {
        // Linux answers ECONNREFUSED for a path that is not a socket at all, too.
        Some(libc::ECONNREFUSED | libc::ENOTSOCK) => match std::fs::metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => CallError::Setup(format!(
                "socket={shown} is {}, not a socket; point socket= at the daemon's socket ([pam] socket in portcullis.toml)",
                file_kind(&meta.file_type())
            )),
            _ if e.raw_os_error() == Some(libc::ENOTSOCK) => CallError::Setup(format!(
                "connect to {shown}: {e}; point socket= at the daemon's socket ([pam] socket in portcullis.toml)"
            )),
            _ => CallError::Unreachable(format!(
                "connect to {shown}: {e} (portcullis serve is not listening on it)"
            )),
        },
        Some(libc::ENOENT) => missing_socket(path, e),
        Some(libc::ETIMEDOUT) => CallError::Unreachable(format!("connect to {shown}: {e}")),
        _ if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            CallError::Unreachable(format!("connect to {shown}: {e} (within timeout=)"))
        }
        Some(libc::EACCES | libc::EPERM) => CallError::Setup(format!(
            "connect to {shown}: {e}; the module may not open the socket or a directory above it: check their owner and mode (the daemon's [pam] socket_mode and allowed_uids)"
        )),
        Some(libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP | libc::EINVAL) => {
            CallError::Setup(format!(
                "connect to {shown}: {e}; socket= is not a usable socket path"
            ))
        }
        _ => CallError::Setup(format!(
            "connect to {shown}: {e}; check socket= and the socket's owner and mode"
        )),
    }
}

/// ENOENT from connect: no socket file at `path`, or a directory on the way to it missing.
///
/// The daemon's socket directory outlives the daemon (it is there while the daemon is
/// installed and configured), so a directory holding no socket file is a daemon that is
/// down: an outage. A directory that does not exist is a `socket=` that names the wrong
/// place (`/run/portcullsi/pam.sock`): a setup error, whatever `failmode=` says. The one
/// exception is the packaged directory, `/run/portcullis` of [`DEFAULT_SOCKET`]: systemd
/// removes a unit's RuntimeDirectory when the daemon stops, and `/run` is empty after a
/// boot until the daemon first starts, so its absence is an outage too (a typo in the
/// directory of `socket=` does not name it; one in the file name looks like a daemon that
/// is down in any directory).
fn missing_socket(path: &Path, e: &std::io::Error) -> CallError {
    let shown = path.display();
    let down = || CallError::Unreachable(format!("connect to {shown}: {e}"));
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return down();
    };
    match std::fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if is_default_runtime_dir(dir) {
                return CallError::Unreachable(format!(
                    "connect to {shown}: {e} (its directory {} is gone too: portcullis serve is stopped)",
                    dir.display()
                ));
            }
            let gone = dir
                .ancestors()
                .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
                .last()
                .unwrap_or(dir);
            let missing = if gone == dir {
                String::new()
            } else {
                format!(" ({} is missing)", gone.display())
            };
            CallError::Setup(format!(
                "socket={shown}: the directory {}{missing} does not exist, so this is no daemon's socket; point socket= at the daemon's socket ([pam] socket in portcullis.toml)",
                dir.display()
            ))
        }
        // The directory is there (or cannot be looked at, which connect would have said):
        // the socket file is missing from it, as when the daemon is down.
        _ => down(),
    }
}

/// Whether `dir` is the directory of [`DEFAULT_SOCKET`] (`/run/portcullis`), also when
/// written through a symlink above it (`/var/run/portcullis`).
fn is_default_runtime_dir(dir: &Path) -> bool {
    let Some(default) = Path::new(DEFAULT_SOCKET).parent() else {
        return false;
    };
    if dir == default {
        return true;
    }
    match (dir.parent(), dir.file_name()) {
        (Some(above), Some(name)) => std::fs::canonicalize(above)
            .map(|above| above.join(name) == default)
            .unwrap_or(false),
        _ => false,
    }
}

/// "a regular file", "a directory", ... for a message.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "another kind of file"
    }
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
            daemon_user: None,
        };
        let got = t.call(&poll());
        assert!(matches!(got, Err(CallError::Unreachable(_))), "{got:?}");
    }

    #[test]
    fn a_socket_path_that_is_not_a_socket_is_a_setup_error_not_an_outage() {
        // connect(2) says ECONNREFUSED here, as for a socket nobody listens on.
        let file = socket_path("regular");
        std::fs::write(&file, b"").unwrap();
        let dir = socket_path("dir");
        std::fs::create_dir(&dir).unwrap();
        for (path, kind) in [(file, "a regular file"), (dir, "a directory")] {
            let mut t = SocketTransport {
                path: path.clone(),
                timeout: Duration::from_secs(1),
                daemon_user: None,
            };
            let got = t.call(&poll());
            assert!(
                matches!(&got, Err(CallError::Setup(m)) if m.contains(kind) && m.contains("socket=")),
                "{}: {got:?}",
                path.display()
            );
        }
        // A component of the path that is a file: ENOTDIR.
        let under_file = socket_path("component").with_file_name("f");
        std::fs::write(&under_file, b"").unwrap();
        let mut t = SocketTransport {
            path: under_file.join("pam.sock"),
            timeout: Duration::from_secs(1),
            daemon_user: None,
        };
        assert!(matches!(t.call(&poll()), Err(CallError::Setup(_))));
        for name in ["regular", "dir", "component"] {
            let _ = std::fs::remove_dir_all(socket_path(name).parent().unwrap());
        }
    }

    #[test]
    fn a_stale_socket_file_is_unreachable() {
        // A socket file nobody listens on, as a crashed daemon leaves it.
        let path = socket_path("stale");
        drop(UnixListener::bind(&path).unwrap());
        let mut t = SocketTransport {
            path: path.clone(),
            timeout: Duration::from_secs(1),
            daemon_user: None,
        };
        let got = t.call(&poll());
        assert!(matches!(got, Err(CallError::Unreachable(_))), "{got:?}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_socket_in_a_directory_every_user_may_write_is_a_setup_error() {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path("shared-dir");
        let dir = path.parent().unwrap().to_path_buf();
        let _daemon = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut t = SocketTransport {
            path: path.clone(),
            timeout: Duration::from_secs(1),
            daemon_user: None,
        };
        let got = t.call(&poll());
        assert!(
            matches!(&got, Err(CallError::Setup(m)) if m.contains("every user may write")),
            "{got:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_in_a_directory_that_does_not_exist_is_a_setup_error() {
        // A typo in the directory of socket=: no daemon puts its socket there.
        let dir = socket_path("typo").parent().unwrap().to_path_buf();
        let _ = std::fs::remove_dir_all(&dir);
        for path in [dir.join("pam.sock"), dir.join("deeper").join("pam.sock")] {
            let mut t = SocketTransport {
                path: path.clone(),
                timeout: Duration::from_secs(1),
                daemon_user: None,
            };
            let got = t.call(&poll());
            let parent = path.parent().unwrap().display().to_string();
            assert!(
                matches!(&got, Err(CallError::Setup(m)) if m.contains("socket=") && m.contains(&format!("the directory {parent}")) && m.contains("does not exist")),
                "{}: {got:?}",
                path.display()
            );
        }
        // The first directory that is missing is named too.
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        let got = connect_error(&dir.join("a").join("pam.sock"), &e);
        assert!(
            matches!(&got, CallError::Setup(m) if m.contains(&format!("({} is missing)", dir.display()))),
            "{got:?}"
        );
        // The same directory present and empty: the daemon is down.
        std::fs::create_dir_all(&dir).unwrap();
        let got = connect_error(&dir.join("pam.sock"), &e);
        assert!(matches!(got, CallError::Unreachable(_)), "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_packaged_socket_directory_gone_is_an_outage() {
        // systemd removes /run/portcullis (RuntimeDirectory) when the daemon stops, and a
        // boot empties /run: a missing /run/portcullis is a daemon that is not running.
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        let mut paths = vec![
            PathBuf::from(DEFAULT_SOCKET),
            PathBuf::from("/run/portcullis/other.sock"),
        ];
        if std::fs::canonicalize("/var/run").is_ok_and(|p| p == Path::new("/run")) {
            paths.push(PathBuf::from("/var/run/portcullis/pam.sock"));
        }
        for path in paths {
            let got = connect_error(&path, &e);
            assert!(
                matches!(got, CallError::Unreachable(_)),
                "{}: {got:?}",
                path.display()
            );
        }
        assert!(is_default_runtime_dir(Path::new("/run/portcullis")));
        assert!(!is_default_runtime_dir(Path::new("/run/portcullsi")));
        assert!(!is_default_runtime_dir(Path::new("/run/portcullis/sub")));
        assert!(!is_default_runtime_dir(Path::new("/portcullis")));
    }

    #[test]
    fn a_path_too_long_for_sun_path_is_a_setup_error() {
        let mut t = SocketTransport {
            path: PathBuf::from(format!("/{}", "s".repeat(200))),
            timeout: Duration::from_secs(1),
            daemon_user: None,
        };
        let got = t.call(&poll());
        assert!(matches!(got, Err(CallError::Setup(_))), "{got:?}");
    }

    #[test]
    fn only_outages_are_unreachable() {
        let path = Path::new("/run/portcullis/pam.sock");
        for errno in [
            libc::ENOENT,
            libc::ETIMEDOUT,
            libc::EAGAIN,
            libc::EWOULDBLOCK,
        ] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(
                matches!(connect_error(path, &e), CallError::Unreachable(_)),
                "{e}"
            );
        }
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(matches!(
            connect_error(path, &timed_out),
            CallError::Unreachable(_)
        ));
        // The module runs as root in the tests, which no file mode keeps out: EACCES and
        // EPERM are checked here rather than with a real socket.
        for (errno, needle) in [
            (libc::EACCES, "mode"),
            (libc::EPERM, "mode"),
            (libc::ENOTSOCK, "socket="),
            (libc::ENAMETOOLONG, "socket="),
            (libc::EINVAL, "socket="),
            (libc::EPROTOTYPE, "socket="),
        ] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(
                matches!(connect_error(path, &e), CallError::Setup(ref m) if m.contains(needle)),
                "{e}: {:?}",
                connect_error(path, &e)
            );
        }
    }

    #[test]
    fn a_daemon_that_took_the_request_and_stays_silent_is_no_answer() {
        let path = socket_path("silent");
        let d = daemon(&path, None);
        let mut t = SocketTransport {
            path,
            timeout: Duration::from_secs(1),
            daemon_user: None,
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

    fn forbidden() -> Response {
        Response::error(
            protocol::ErrorCode::Forbidden,
            "uid 65534 may not use this socket (pam.allowed_uids)",
        )
    }

    fn is_forbidden(got: &Result<Response, CallError>) -> bool {
        matches!(
            got,
            Ok(Response {
                step: ResponseStep::Error {
                    code: protocol::ErrorCode::Forbidden,
                    ..
                },
                ..
            })
        )
    }

    fn start() -> Request {
        request(RequestStep::Start {
            first_factor: protocol::FirstFactor::Delegated,
            password: None,
            unenrolled: protocol::Unenrolled::Deny,
            fail_opens: vec![],
        })
    }

    /// A connection whose daemon end has already said `queued` and closed: the module's
    /// send on it fails (EPIPE) every time, not only when it loses a race.
    fn closed_after(queued: &[u8]) -> UnixStream {
        let (module, mut daemon) = UnixStream::pair().unwrap();
        daemon.write_all(queued).unwrap();
        drop(daemon);
        module
    }

    fn exchange_on(stream: UnixStream, req: &Request) -> Result<Response, CallError> {
        let t = SocketTransport {
            path: PathBuf::from("/unused"),
            timeout: Duration::from_secs(1),
            daemon_user: None,
        };
        t.exchange_on(stream, req, Instant::now() + Duration::from_secs(1))
    }

    #[test]
    fn a_request_left_in_the_queue_of_a_listener_that_closed_is_not_delivered() {
        // At shutdown the daemon closes its listener; a connection still in its queue,
        // request and all, is reset unread: safe to send again, so NotDelivered (a later
        // step waits for the restart), not NoAnswer (never sent again). Both are refused
        // by failmode=safe: the connect had succeeded.
        let path = socket_path("queued");
        let listener = UnixListener::bind(&path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let closer = std::thread::spawn(move || {
            rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(listener);
        });
        tx.send(()).unwrap();
        let got = exchange_on(stream, &start());
        closer.join().unwrap();
        match got {
            Err(CallError::NotDelivered(detail)) => {
                assert!(detail.contains("not read"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // A daemon that read the request and then closed gives end of stream: NoAnswer.
        let (mine, theirs) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut theirs = theirs;
            let mut header = [0u8; HEADER_LEN];
            theirs.read_exact(&mut header).unwrap();
            let mut body = vec![0u8; protocol::body_len(header).unwrap()];
            theirs.read_exact(&mut body).unwrap();
        });
        let got = exchange_on(mine, &start());
        reader.join().unwrap();
        assert!(matches!(got, Err(CallError::NoAnswer(_))), "{got:?}");
    }

    #[test]
    fn a_frame_the_daemon_queued_before_it_closed_wins_over_the_failed_send() {
        // The daemon refused the peer (forbidden) and closed before the request went out:
        // the send fails with EPIPE, and that must not look like an outage, or
        // failmode=safe would let a refused peer in without a second factor.
        let frame = protocol::encode(&forbidden()).unwrap();
        let probe = closed_after(&frame);
        let e = send_all(&probe, b"x", Instant::now() + Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
        let got = exchange_on(closed_after(&frame), &start());
        assert!(is_forbidden(&got), "{got:?}");
        // Any frame: busy (past pam.max_connections) too.
        let busy = Response::error(protocol::ErrorCode::Busy, "the daemon is busy; try again");
        let got = exchange_on(closed_after(&protocol::encode(&busy).unwrap()), &poll());
        assert_eq!(got, Ok(busy));
    }

    #[test]
    fn a_connection_closed_under_the_request_without_a_frame_is_not_delivered_and_no_outage() {
        // A daemon stopping with the connection in its backlog, or ending its tasks: the
        // request was not delivered (a part of a frame is nothing to the daemon), so later
        // in a login it is safe to send again; but the connect succeeded, so it is no
        // outage for failmode=safe either.
        let got = exchange_on(closed_after(b""), &start());
        assert!(
            matches!(&got, Err(CallError::NotDelivered(m)) if m.starts_with("send: ")),
            "{got:?}"
        );
    }

    #[test]
    fn bytes_that_are_no_frame_before_the_close_are_a_protocol_error() {
        let mut truncated = protocol::encode(&forbidden()).unwrap();
        truncated.truncate(HEADER_LEN + 3);
        let mut not_json = 5u32.to_be_bytes().to_vec();
        not_json.extend_from_slice(b"hello");
        for queued in [&b"\0\0"[..], &truncated, &not_json, &u32::MAX.to_be_bytes()] {
            let got = exchange_on(closed_after(queued), &start());
            assert!(
                matches!(&got, Err(CallError::Protocol(m)) if m.starts_with("send: ")),
                "{queued:?}: {got:?}"
            );
        }
    }

    #[test]
    fn a_daemon_that_refuses_without_reading_the_request_is_heard_every_time() {
        // As the daemon did: accept, write forbidden, close without reading. Whether the
        // module's send comes before or after the close, it gets the forbidden frame.
        let path = socket_path("refusing");
        let listener = UnixListener::bind(&path).unwrap();
        const LOGINS: usize = 50;
        let d = std::thread::spawn(move || {
            for _ in 0..LOGINS {
                let (mut conn, _) = listener.accept().unwrap();
                protocol::write_frame(&mut conn, &forbidden()).unwrap();
            }
        });
        let mut t = SocketTransport {
            path: path.clone(),
            timeout: Duration::from_secs(2),
            daemon_user: None,
        };
        for i in 0..LOGINS {
            let got = t.call(&start());
            assert!(is_forbidden(&got), "login {i}: {got:?}");
        }
        d.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_poll_waits_for_the_daemons_hold_past_timeout() {
        let path = socket_path("held");
        // Answered after 1.5 s: beyond timeout=1, within timeout + the hold.
        let d = daemon(&path, Some(Duration::from_millis(1500)));
        let mut t = SocketTransport {
            path,
            timeout: Duration::from_secs(1),
            daemon_user: None,
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
