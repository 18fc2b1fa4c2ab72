//! The HTTPS transport (`url=` + `token_file=` [+ `ca_file=`]): one `POST /v1/pam/step` per
//! step, on a fresh connection, every operation under the `timeout=` deadline.
//!
//! Small and synchronous on purpose: std's TCP stream, rustls (ring, statically linked: no
//! OpenSSL, no async runtime) and a minimal HTTP/1.1 exchange (`Connection: close`, a
//! `Content-Length` or chunked body). The certificate is always verified, against
//! `ca_file=` or the system's trust store.
//!
//! What `failmode=` may treat as an outage: only a lookup that fails for now or a TCP
//! connect that fails (refused, no route, timed out) is [`CallError::Unreachable`]. Once
//! the TCP connection is up, a peer that closes or resets it during the TLS handshake, a
//! request that cannot be sent and an answer that does not come are
//! [`CallError::NotDelivered`] or [`CallError::NoAnswer`], refused in every failmode: a
//! daemon past its connection limits (which closes new connections at once) or an on-path
//! attacker with a RST must not switch hosts to no second factor.
//!
//! The deadline is wall-clock time, which runs on while the process is stopped (a user's
//! Ctrl-Z on their own sudo). No operation is skipped because it passed: the lookup and
//! the connect always get a minimum wait, and a read or write after the deadline is still
//! made once without waiting (see [`Deadlined`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::protocol::Secret;
use portcullis_core::protocol::{self, ErrorCode, Request, Response, HEADER_LEN, MAX_FRAME_LEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use zeroize::Zeroize;

use crate::args::HttpsUrl;
use crate::flow::{CallError, Transport};

/// Where Debian, Fedora/RHEL and SUSE keep the system's trust store.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// The most a response head (status line and headers) may take.
const MAX_HEAD_LEN: usize = 16 * 1024;

/// A host token read from `token_file=`.
pub fn read_token_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    // O_NOFOLLOW: a symlink planted in the token's place is refused, not followed.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("token_file={shown}: cannot open it ({e}); write the token of `portcullis host add` there"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("token_file={shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "token_file={shown} is not a regular file; put the token in a plain file"
        ));
    }
    if meta.uid() != 0 {
        return Err(format!(
            "token_file={shown} is owned by uid {}, not root; chown root:root {shown}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "token_file={shown} has mode {mode:04o}: group or others may read the token; chmod 600 {shown}"
        ));
    }
    let mut text = String::new();
    let read = file.read_to_string(&mut text);
    let token = text.trim().to_string();
    text.zeroize();
    if let Err(e) = read {
        return Err(format!("token_file={shown}: cannot read it ({e})"));
    }
    let token = Secret::new(token);
    if token.is_empty() {
        return Err(format!(
            "token_file={shown} is empty; write the token of `portcullis host add` there"
        ));
    }
    if token.expose().len() > 512 || !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token_file={shown} does not hold a token (one line of printable characters from `portcullis host add`)"
        ));
    }
    Ok(token)
}

/// `ca_file=` decides whom the module trusts to answer for the daemon: someone who may
/// write it (or the file it links to) could let a daemon of their own say accept. Like
/// `token_file=`, it must be root's and written by root alone (readable by all: it is no
/// secret).
fn ca_file_is_roots(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("ca_file={shown}: {e}"))?;
    if meta.uid() != 0 {
        return Err(format!(
            "ca_file={shown} is owned by uid {}, not root: whoever may write it decides which daemon the module trusts; chown root:root {shown}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "ca_file={shown} has mode {mode:04o}: group or others may write it; chmod 644 {shown}"
        ));
    }
    Ok(())
}

/// The TLS settings: `ca_file` alone when given, else the system's trust store.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let (path, what): (PathBuf, &str) = match ca_file {
        Some(p) => (p.to_path_buf(), "ca_file="),
        None => match SYSTEM_CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
        {
            Some(p) => (p.to_path_buf(), "the system trust store "),
            None => {
                return Err(format!(
                    "no system trust store ({}); give the daemon's CA with ca_file=",
                    SYSTEM_CA_BUNDLES.join(", ")
                ))
            }
        },
    };
    if ca_file.is_some() {
        ca_file_is_roots(&path)?;
    }
    let pem = std::fs::read(&path)
        .map_err(|e| format!("{what}{}: cannot read it ({e})", path.display()))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("{what}{}: not PEM certificates ({e})", path.display()))?;
        // A bundle may hold certificates this verifier cannot use; a given ca_file may not.
        if let Err(e) = roots.add(cert) {
            if ca_file.is_some() {
                return Err(format!(
                    "{what}{}: unusable certificate ({e})",
                    path.display()
                ));
            }
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "{what}{} holds no CA certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Talks to `portcullis serve` of a fleet over HTTPS.
pub struct HttpsTransport {
    pub url: HttpsUrl,
    pub token: Secret,
    pub tls: Arc<ClientConfig>,
    /// The deadline of one exchange: resolve (best effort), connect, handshake, send, receive.
    pub timeout: Duration,
}

/// What is left of `deadline` for a connect, never less than [`MIN_CONNECT_WAIT`]: a
/// connect that starts after the deadline (the process was stopped before it, or the
/// lookup took the time) is still made, and its answer, not the clock, says whether the
/// daemon is there.
fn connect_budget(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_CONNECT_WAIT)
}

/// The shortest wait of a connect.
const MIN_CONNECT_WAIT: Duration = Duration::from_secs(1);

/// The resolver is waited for in slices of this length, each counting toward the budget
/// no more than its own length: a process stopped while it waits (its resolver thread
/// stopped with it) does not spend the budget, and goes on waiting when it resumes.
const RESOLVE_SLICE: Duration = Duration::from_millis(50);

/// Why getaddrinfo(3) found no address: its `EAI_*` code and what it means, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LookupError {
    code: libc::c_int,
    /// errno, for EAI_SYSTEM.
    errno: Option<libc::c_int>,
    detail: String,
}

impl LookupError {
    /// The error of `code`, described by gai_strerror(3) (and errno for EAI_SYSTEM).
    fn new(code: libc::c_int, errno: Option<std::io::Error>) -> LookupError {
        // SAFETY: gai_strerror takes any int and returns a pointer to a static,
        // NUL-terminated string (glibc and musl never return null, checked anyway); it is
        // only read here, never freed or written.
        let text = unsafe {
            let p = libc::gai_strerror(code);
            if p.is_null() {
                format!("getaddrinfo error {code}")
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let errno = errno.filter(|_| code == libc::EAI_SYSTEM);
        let detail = match &errno {
            Some(e) => format!("{text}: {e}"),
            None => text,
        };
        LookupError {
            code,
            errno: errno.and_then(|e| e.raw_os_error()),
            detail,
        }
    }
}

/// What a failed lookup of `host` means. Only a definite answer that the name has no
/// address (EAI_NONAME: NXDOMAIN, or a name in no database of nsswitch.conf; EAI_NODATA:
/// the name exists without an address) is this host's setup: a misspelled `url=` host,
/// refused whatever `failmode=` says, or a typo would let logins in without a second
/// factor. A resolver that is down, unreachable or slow, or answers SERVFAIL (EAI_AGAIN),
/// and anything else getaddrinfo says about the resolver (EAI_FAIL, EAI_SYSTEM) is an
/// outage. A lookup that failed because this process ran out of memory or file
/// descriptors (EAI_MEMORY; EAI_SYSTEM with EMFILE, ENFILE, ENOMEM, ENOBUFS) is not: a
/// user can lower the limits of their own sudo or su (ulimit) before it runs the module,
/// so that is no evidence that the daemon is down, and is refused.
fn lookup_error(host: &str, e: &LookupError) -> CallError {
    if e.code == libc::EAI_MEMORY || e.errno.is_some_and(is_resource_errno) {
        return CallError::Setup(format!(
            "resolve {host}: {}: this process ran out of a resource (a limit of the application?), which is no sign that the daemon is down",
            e.detail
        ));
    }
    match e.code {
        libc::EAI_NONAME => CallError::Setup(format!(
            "url= host {host} does not exist in DNS ({}); check the host name in url= (or give it an IP address)",
            e.detail
        )),
        libc::EAI_NODATA => CallError::Setup(format!(
            "url= host {host} has no address in DNS ({}); check the host name in url= (or give it an IP address)",
            e.detail
        )),
        _ => CallError::Unreachable(format!(
            "resolve {host}: {} (check the host's DNS resolver, or give url= an IP address)",
            e.detail
        )),
    }
}

/// Whether `errno` says this process or host ran out of a resource (memory, file
/// descriptors, buffers): something the PAM application's user may cause with its
/// limits, never evidence about the daemon.
fn is_resource_errno(errno: libc::c_int) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
    )
}

/// Frees what getaddrinfo returned, once, when dropped.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo, is freed here only
            // (this value owns it and is dropped once), and no reference into the list
            // outlives this value.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// The TCP addresses of `host` at `port`, from getaddrinfo(3) as std's `to_socket_addrs`
/// asks it (any family, stream sockets), keeping its `EAI_*` code on failure, which std
/// turns into text. Blocking for as long as the resolver takes: see [`resolve_within`].
fn getaddrinfo(host: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    let Ok(name) = std::ffi::CString::new(host) else {
        // No name has a NUL in it (url= parsing does not let one through).
        return Err(LookupError {
            code: libc::EAI_NONAME,
            errno: None,
            detail: "the name holds a NUL byte".into(),
        });
    };
    let hints = libc::addrinfo {
        ai_flags: 0,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: std::ptr::null_mut(),
        ai_canonname: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    };
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `name` is a NUL-terminated string that lives across the call; the service is
    // null (the port is set on the results below); `hints` is a fully initialised addrinfo
    // with null pointers; `res` is a valid place for the result. getaddrinfo is thread
    // safe (MT-Safe in glibc), and this thread is the only one using `res`.
    let code = unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if code != 0 {
        // errno is only meaningful for EAI_SYSTEM, and read before anything else runs.
        let errno = std::io::Error::last_os_error();
        return Err(LookupError::new(code, Some(errno)));
    }
    let list = AddrInfoList(res);
    let mut addrs = Vec::new();
    let mut node = list.0;
    while !node.is_null() {
        // SAFETY: `node` is the head of the list getaddrinfo returned or an `ai_next` of
        // it; the list is owned by `list` and not freed before the end of this function.
        let ai = unsafe { &*node };
        let len = usize::try_from(ai.ai_addrlen).unwrap_or(0);
        if !ai.ai_addr.is_null() {
            match ai.ai_family {
                libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                    // SAFETY: for AF_INET, ai_addr points to a sockaddr_in of ai_addrlen
                    // bytes (checked above), inside the list that is still alive;
                    // read_unaligned makes no assumption about its alignment.
                    let sin =
                        unsafe { std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in>()) };
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    addrs.push(SocketAddr::new(ip.into(), port));
                }
                libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                    // SAFETY: for AF_INET6, ai_addr points to a sockaddr_in6 of ai_addrlen
                    // bytes (checked above), inside the list that is still alive;
                    // read_unaligned makes no assumption about its alignment.
                    let sin6 = unsafe {
                        std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in6>())
                    };
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    addrs.push(SocketAddr::V6(std::net::SocketAddrV6::new(
                        ip,
                        port,
                        sin6.sin6_flowinfo,
                        sin6.sin6_scope_id,
                    )));
                }
                _ => {}
            }
        }
        node = ai.ai_next;
    }
    drop(list);
    Ok(addrs)
}

/// Runs `lookup` (getaddrinfo) within what is left of `deadline`. getaddrinfo has no
/// timeout of its own (resolv.conf's allows many seconds per server, and sshd waits for
/// the module meanwhile): it runs on a thread of its own, and a lookup that has not
/// answered in time is left to finish there while the login goes on without it. What a
/// lookup that failed means is told by [`lookup_error`].
fn resolve_within<F>(
    host: &str,
    lookup: F,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, CallError>
where
    F: FnOnce() -> Result<Vec<SocketAddr>, LookupError> + Send + 'static,
{
    // The first step of an exchange: its deadline was set a moment ago.
    let budget = deadline.saturating_duration_since(Instant::now());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pam_portcullis-resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup());
        })
        // No thread (RLIMIT_NPROC, memory): no sign that the daemon is down.
        .map_err(|e| CallError::Setup(format!("resolve {host}: no thread for the lookup: {e}")))?;
    // The wait is counted in slices (see RESOLVE_SLICE), not read off the clock.
    let mut counted = Duration::ZERO;
    loop {
        let slice = budget.saturating_sub(counted).min(RESOLVE_SLICE);
        let began = Instant::now();
        match rx.recv_timeout(slice) {
            Ok(Ok(addrs)) => return Ok(addrs),
            Ok(Err(e)) => return Err(lookup_error(host, &e)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                counted += began.elapsed().min(slice);
                if counted >= budget {
                    return Err(CallError::Unreachable(format!(
                        "resolve {host}: no answer within {timeout:?} (check the host's DNS resolver, or give url= an IP address)"
                    )));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CallError::Unreachable(format!(
                    "resolve {host}: the lookup ended without an answer"
                )))
            }
        }
    }
}

/// The TCP stream under TLS, every read and write bounded by one deadline.
///
/// rustls reads until a whole record is in (the handshake's `complete_io`, and
/// `Stream::read`), so a socket timeout set once per call would restart with every byte: a
/// peer sending one byte just before each timeout would hold the login for ever. Here each
/// read and write gets only what is left of the deadline. One that comes after the
/// deadline is still made, without waiting: what is already queued (an answer that came
/// while the process was stopped) is taken, and only an empty queue (or a full send
/// buffer) ends it with `TimedOut`. The response is bounded in size, so a peer cannot
/// keep a login going past the deadline by sending fast either.
struct Deadlined {
    tcp: TcpStream,
    deadline: Instant,
    /// The whole budget, for messages.
    timeout: Duration,
}

impl Deadlined {
    /// What is left of the deadline, or a TimedOut error once it has passed.
    fn left(&self) -> std::io::Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| self.timed_out())
    }

    fn timed_out(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no complete answer within {:?} (timeout=)", self.timeout),
        )
    }

    /// A socket timeout that fired is the deadline passing (EAGAIN says too little).
    fn timeout_is_deadline(&self, e: std::io::Error) -> std::io::Error {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            self.timed_out()
        } else {
            e
        }
    }
}

impl Deadlined {
    /// Waits no longer than what is left of the deadline for the next read or write; after
    /// it, not at all (non-blocking).
    fn arm(&mut self, read: bool) -> std::io::Result<()> {
        match self.left() {
            Ok(left) => {
                self.tcp.set_nonblocking(false)?;
                if read {
                    self.tcp.set_read_timeout(Some(left))
                } else {
                    self.tcp.set_write_timeout(Some(left))
                }
            }
            Err(_) => self.tcp.set_nonblocking(true),
        }
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm(true)?;
        self.tcp.read(buf).map_err(|e| self.timeout_is_deadline(e))
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm(false)?;
        self.tcp.write(buf).map_err(|e| self.timeout_is_deadline(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

impl HttpsTransport {
    fn connect(&self, deadline: Instant) -> Result<TcpStream, CallError> {
        let (host, port) = (self.url.host.clone(), self.url.port);
        let addrs = match host.parse::<std::net::IpAddr>() {
            // An address needs no resolver.
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => resolve_within(
                &self.url.host,
                move || getaddrinfo(&host, port),
                deadline,
                self.timeout,
            )?,
        };
        let mut last = format!("resolve {}: no address", self.url.host);
        let mut not_an_outage = None;
        for addr in addrs {
            match connect_tcp(&addr, connect_budget(deadline)) {
                Ok(s) => return Ok(s),
                Err(e) if connect_failed_for_want_of_a_daemon(&e) => {
                    last = format!("connect to {addr}: {e}")
                }
                Err(e) => not_an_outage = Some(format!("connect to {addr}: {e}")),
            }
        }
        if let Some(detail) = not_an_outage {
            return Err(CallError::Setup(format!(
                "{detail}: that is no sign that the daemon is down (a local limit, firewall or address)"
            )));
        }
        // Every connect failed (refused, no route, timed out): no connection was made, the
        // one outage failmode= decides on.
        Err(CallError::Unreachable(last))
    }

    fn exchange(&self, req: &Request) -> Result<Response, CallError> {
        let deadline = Instant::now() + req.answer_within(self.timeout);
        let tcp = self.connect(deadline)?;
        // Connected: from here on nothing is an outage (NotDelivered, NoAnswer), whatever
        // the peer does.
        let not_delivered = |what: &str, e: std::io::Error| {
            CallError::NotDelivered(format!(
                "{what} {}: {e} (the TCP connection was made)",
                self.url
            ))
        };
        let _ = tcp.set_nodelay(true);
        let mut tcp = Deadlined {
            tcp,
            deadline,
            timeout: self.timeout,
        };
        let name = ServerName::try_from(self.url.host.clone()).map_err(|_| {
            CallError::Setup(format!("url={}: not a valid TLS server name", self.url))
        })?;
        let mut tls = ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| CallError::Tls(format!("cannot start TLS to {}: {e}", self.url)))?;
        // The handshake first, on its own: a certificate that does not verify is a
        // configuration or interception problem, never a reason to fail open. rustls says
        // InvalidData for every TLS error (a certificate that does not verify, an alert of
        // the peer, a peer that does not speak TLS): the daemon answered nothing, so this
        // is CallError::Tls, not Protocol ("the daemon answered malformed" in the log).
        // A peer that closes or resets the connection, or does not finish the handshake in
        // time, has not seen the request either: NotDelivered (sent again later in a login
        // while a daemon restarts), refused in every failmode.
        while tls.is_handshaking() {
            match tls.complete_io(&mut tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(CallError::Tls(format!(
                        "handshake with {}: {e} (is the daemon's certificate signed by ca_file= and made for {}?)",
                        self.url, self.url.host
                    )))
                }
                Err(e) => return Err(not_delivered("TLS handshake with", e)),
            }
        }
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        let mut request = self.request_bytes(req)?;
        let sent = stream.write_all(&request).and_then(|()| stream.flush());
        request.zeroize();
        // Unlike on the Unix socket (transport.rs, `failed_send`), no answer is looked for
        // after a failed send: the daemon's HTTP server refuses (401, 403, busy) only once
        // it has read the request head, and the whole request is one write into the
        // kernel's buffer, so a send that fails met a connection reset or closed before
        // the request was in: nobody answered it, and it was not delivered.
        sent.map_err(|e| not_delivered("send to", e))?;
        // The request is out: from here on a missing answer is no outage (see NoAnswer).
        let (status, body) = read_response(&mut stream)?;
        self.interpret(status, &body)
    }

    /// The whole HTTP request (it holds the token and maybe a password: zeroised by the
    /// caller once sent).
    fn request_bytes(&self, req: &Request) -> Result<Vec<u8>, CallError> {
        let mut frame =
            protocol::encode(req).map_err(|e| CallError::Protocol(format!("send: {e}")))?;
        let body = &frame[HEADER_LEN..];
        let host = if self.url.host.contains(':') {
            format!("[{}]:{}", self.url.host, self.url.port)
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        };
        let mut out = Vec::with_capacity(body.len() + 512);
        out.extend_from_slice(
            format!(
                "POST {}/v1/pam/step HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pam_portcullis/{}\r\n\
                 Content-Type: application/json\r\nAccept: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\nAuthorization: Bearer ",
                self.url.prefix,
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(self.token.expose().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        frame.zeroize();
        Ok(out)
    }

    /// A response from an HTTP status and body.
    fn interpret(&self, status: u16, body: &[u8]) -> Result<Response, CallError> {
        let decoded = protocol::decode_response(body);
        match (status, decoded) {
            (401, decoded) => Ok(decoded.unwrap_or_else(|_| {
                Response::error(
                    ErrorCode::Forbidden,
                    "HTTP 401: the daemon does not know this host's token",
                )
            }))
            // 401 is always a refusal: never fail open on it.
            .map(|r| match r.step {
                protocol::ResponseStep::Error { .. } => r,
                _ => Response::error(ErrorCode::Forbidden, "HTTP 401 with a non-error body"),
            }),
            (_, Ok(r)) => Ok(r),
            // A proxy in front of a daemon that is down, or that went away while it had
            // the request (nginx answers 502, Envoy 503, to a connection reset after the
            // request was passed on): it may have been delivered, so it is never sent
            // again, and it is no outage to fail open on, on the first request of a login
            // too (see NoAnswer): a proxy that answers is there.
            (502 | 503, Err(_)) => Err(CallError::NoAnswer(format!(
                "{} answered HTTP {status} without a protocol response (is portcullis serve running behind it?)",
                self.url
            ))),
            // The proxy passed the request on and the daemon did not answer it in time.
            (504, Err(_)) => Err(CallError::NoAnswer(format!(
                "{} answered HTTP 504: the daemon behind it took the request and did not answer in time",
                self.url
            ))),
            (_, Err(e)) => Err(CallError::Protocol(format!(
                "{} answered HTTP {status} that is not a protocol response: {e}",
                self.url
            ))),
        }
    }
}

/// Whether a failed TCP connect is evidence that no daemon is there (an outage for
/// `failmode=`): refused (nobody listens), timed out (no answer to the SYN), no route or
/// network (the host or the path is down), or an address family this host cannot use.
/// Anything else (the process out of file descriptors or memory, a local firewall's EPERM,
/// no local address or port) says nothing about the daemon, and is refused.
fn connect_failed_for_want_of_a_daemon(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNREFUSED
                    | libc::ETIMEDOUT
                    | libc::ENETUNREACH
                    | libc::EHOSTUNREACH
                    | libc::ENETDOWN
                    | libc::EHOSTDOWN
                    | libc::EAFNOSUPPORT
            )
        )
}

/// A TCP connection to `addr` within `budget`.
///
/// Like std's `connect_timeout`, but a connect whose wait ended (the budget spent, or the
/// wait cut short by a signal once it was) is looked at once more before it counts as
/// timed out: the kernel completes the handshake while the process is stopped, so a
/// daemon that answered the SYN is found connected on resume, never taken for an outage.
fn connect_tcp(addr: &SocketAddr, budget: Duration) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match sock.connect_timeout(&(*addr).into(), budget) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
            ) =>
        {
            // Connected after all (getpeername answers only then), or failed meanwhile?
            if let Ok(Some(err)) = sock.take_error() {
                return Err(err);
            }
            if sock.peer_addr().is_err() {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    sock.set_nonblocking(false)?;
    Ok(sock.into())
}

/// How the body of a response ends.
#[derive(Clone, Copy)]
enum BodyEnd {
    Length(usize),
    Chunked,
    Eof,
}

/// Reads an HTTP/1.1 response: the status and the body (by Content-Length, chunked, or to
/// the end of the connection), bounded in size and by `deadline`.
fn read_response(
    stream: &mut rustls::Stream<'_, ClientConnection, Deadlined>,
) -> Result<(u16, Vec<u8>), CallError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let limit = MAX_HEAD_LEN + 2 * MAX_FRAME_LEN;
    // (end of the head, status, how the body ends) once the head is in.
    let mut head: Option<(usize, u16, BodyEnd)> = None;
    let mut eof = false;
    loop {
        if let Some((end, _, body_end)) = head {
            let complete = match body_end {
                BodyEnd::Length(n) => buf.len() >= end + n,
                BodyEnd::Chunked => dechunk(&buf[end..]).is_some(),
                BodyEnd::Eof => false,
            };
            if complete {
                break;
            }
        }
        if eof {
            break;
        }
        if buf.len() > limit {
            return Err(CallError::Protocol(format!(
                "the response is larger than {limit} bytes"
            )));
        }
        // Each read of the socket underneath is bounded by the deadline (Deadlined), and
        // one after it takes only what is queued.
        match stream.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A peer that closes without close_notify: what came is judged below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => eof = true,
            Err(e) => return Err(CallError::NoAnswer(format!("receive: {e}"))),
        }
        if head.is_none() {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                let h = parse_head(&buf[..i])?;
                let body_end = if h.chunked {
                    BodyEnd::Chunked
                } else if let Some(n) = h.content_length {
                    if n > MAX_FRAME_LEN {
                        return Err(CallError::Protocol(format!(
                            "the response body of {n} bytes is larger than {MAX_FRAME_LEN}"
                        )));
                    }
                    BodyEnd::Length(n)
                } else {
                    BodyEnd::Eof
                };
                head = Some((i + 4, h.status, body_end));
            } else if buf.len() > MAX_HEAD_LEN {
                return Err(CallError::Protocol("the response head is too long".into()));
            }
        }
    }
    let Some((end, status, body_end)) = head else {
        return Err(CallError::NoAnswer(
            "receive: the daemon closed the connection before answering".into(),
        ));
    };
    let rest = &buf[end..];
    let body = match body_end {
        BodyEnd::Length(n) if rest.len() < n => {
            return Err(CallError::NoAnswer(
                "receive: the daemon closed the connection in the middle of its answer".into(),
            ))
        }
        BodyEnd::Length(n) => rest[..n].to_vec(),
        BodyEnd::Chunked => dechunk(rest).ok_or_else(|| {
            CallError::NoAnswer(
                "receive: the daemon closed the connection in the middle of its answer".into(),
            )
        })?,
        BodyEnd::Eof => rest.to_vec(),
    };
    Ok((status, body))
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<Head, CallError> {
    let bad = || CallError::Protocol("the daemon's answer is not HTTP/1.1".into());
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| bad())?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if chunked {
        content_length = None;
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// The data of a complete chunked body, or `None` while it is incomplete or broken.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with a blank line.
            return find(body, b"\r\n").map(|_| out);
        }
        if size > MAX_FRAME_LEN || body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

impl Transport for HttpsTransport {
    fn call(&mut self, req: &Request) -> Result<Response, CallError> {
        self.exchange(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_resolver_that_does_not_answer_costs_the_timeout_not_more() {
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let hung = move || {
            // Like getaddrinfo waiting on a dead DNS server.
            let _ = wait.recv();
            Ok(vec![])
        };
        let e = resolve_within("mfa.example.com", hung, started + timeout, timeout).unwrap_err();
        assert!(
            matches!(&e, CallError::Unreachable(m) if m.contains("no answer within")),
            "{e:?}"
        );
        // It gave up at the deadline; the resolver thread is left to finish on its own.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        drop(release);
        let addr: SocketAddr = "192.0.2.1:8443".parse().unwrap();
        let found = resolve_within(
            "x",
            move || Ok(vec![addr]),
            Instant::now() + timeout,
            timeout,
        );
        assert_eq!(found.unwrap(), vec![addr]);
        // A resolver that answered "no such name" is a typo of url=, not an outage.
        let failed = resolve_within(
            "mfa.exmaple.com",
            || Err(LookupError::new(libc::EAI_NONAME, None)),
            Instant::now() + timeout,
            timeout,
        );
        assert!(
            matches!(&failed, Err(CallError::Setup(m)) if m.contains("url= host mfa.exmaple.com does not exist in DNS")),
            "{failed:?}"
        );
        // One that failed for now (SERVFAIL, no server reachable) is an outage.
        let failed = resolve_within(
            "x",
            || Err(LookupError::new(libc::EAI_AGAIN, None)),
            Instant::now() + timeout,
            timeout,
        );
        assert!(
            matches!(&failed, Err(CallError::Unreachable(m)) if m.contains("resolve x")),
            "{failed:?}"
        );
    }

    #[test]
    fn only_a_name_that_does_not_exist_is_a_setup_error() {
        let host = "mfa.example.com";
        // Definite answers: the name is not there, or has no address.
        for (code, needle) in [
            (libc::EAI_NONAME, "does not exist in DNS"),
            (libc::EAI_NODATA, "has no address in DNS"),
        ] {
            let got = lookup_error(host, &LookupError::new(code, None));
            assert!(
                matches!(&got, CallError::Setup(m) if m.contains(needle) && m.contains("url=") && m.contains(host)),
                "{code}: {got:?}"
            );
        }
        // Everything else is the resolver failing, for now: failmode= decides. A resolver
        // that times out or is unreachable says EAI_AGAIN (or EAI_SYSTEM with errno).
        for (code, errno) in [
            (libc::EAI_AGAIN, None),
            (libc::EAI_FAIL, None),
            (libc::EAI_SYSTEM, Some(libc::ETIMEDOUT)),
            (libc::EAI_SYSTEM, Some(libc::ECONNREFUSED)),
        ] {
            let errno = errno.map(std::io::Error::from_raw_os_error);
            let got = lookup_error(host, &LookupError::new(code, errno));
            assert!(
                matches!(&got, CallError::Unreachable(m) if m.contains(host)),
                "{code}: {got:?}"
            );
        }
        // A lookup that failed because this process ran out of memory or descriptors (a
        // user can lower the limits of their own sudo or su): no sign of an outage.
        for (code, errno) in [
            (libc::EAI_MEMORY, None),
            (libc::EAI_SYSTEM, Some(libc::EMFILE)),
            (libc::EAI_SYSTEM, Some(libc::ENOMEM)),
        ] {
            let errno = errno.map(std::io::Error::from_raw_os_error);
            let got = lookup_error(host, &LookupError::new(code, errno));
            assert!(
                matches!(&got, CallError::Setup(m) if m.contains("no sign that the daemon is down")),
                "{code}: {got:?}"
            );
        }
        // The words of gai_strerror, which std's message would carry alone.
        let e = LookupError::new(libc::EAI_AGAIN, None);
        assert!(e.detail.contains("Temporary failure"), "{e:?}");
        let e = LookupError::new(
            libc::EAI_SYSTEM,
            Some(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)),
        );
        assert!(e.detail.contains("timed out"), "{e:?}");
    }

    #[test]
    fn a_resolver_that_times_out_is_unreachable() {
        // getaddrinfo giving up on a silent server (EAI_AGAIN) before the deadline.
        let timeout = Duration::from_secs(2);
        let got = resolve_within(
            "mfa.example.com",
            || {
                std::thread::sleep(Duration::from_millis(100));
                Err(LookupError::new(libc::EAI_AGAIN, None))
            },
            Instant::now() + timeout,
            timeout,
        );
        assert!(
            matches!(&got, Err(CallError::Unreachable(m)) if m.contains("Temporary failure")),
            "{got:?}"
        );
        // A lookup still running at the deadline (resolv.conf's retries outlast timeout=).
        let timeout = Duration::from_millis(200);
        let got = resolve_within(
            "mfa.example.com",
            || {
                std::thread::sleep(Duration::from_secs(1));
                Err(LookupError::new(libc::EAI_NONAME, None))
            },
            Instant::now() + timeout,
            timeout,
        );
        assert!(
            matches!(&got, Err(CallError::Unreachable(m)) if m.contains("no answer within")),
            "{got:?}"
        );
    }

    #[test]
    fn getaddrinfo_reads_addresses_of_both_families() {
        // Numeric hosts and /etc/hosts: no DNS server is asked.
        assert_eq!(
            getaddrinfo("192.0.2.7", 8443).unwrap(),
            vec!["192.0.2.7:8443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            getaddrinfo("fd00::5", 443).unwrap(),
            vec!["[fd00::5]:443".parse::<SocketAddr>().unwrap()]
        );
        let local = getaddrinfo("localhost", 8443).unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.port() == 8443 && a.ip().is_loopback())
                && !local.is_empty(),
            "{local:?}"
        );
        let e = getaddrinfo("a\0b", 443).unwrap_err();
        assert_eq!(e.code, libc::EAI_NONAME, "{e:?}");
    }

    /// A peer that takes what the client sends first, then sends the start of a TLS
    /// record one byte every 300 ms (for up to 12 s, or until the client hangs up): each
    /// byte comes well within a 1 s socket timeout, the record never completes.
    fn trickler() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = conn.read(&mut [0u8; 4096]);
            // A handshake record of 16 KiB: rustls waits for all of it.
            let record = [0x16u8, 0x03, 0x03, 0x40, 0x00, 0x02, 0x00, 0x3f, 0xfc];
            for byte in record.iter().copied().chain(std::iter::repeat(0)).take(40) {
                if conn.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        (addr, peer)
    }

    #[test]
    fn a_trickling_peer_is_cut_off_at_the_deadline() {
        let (addr, peer) = trickler();
        let tcp = TcpStream::connect(addr).unwrap();
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let mut s = Deadlined {
            tcp,
            deadline: started + timeout,
            timeout,
        };
        let e = s.read_exact(&mut [0u8; 100]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("timeout="), "{e}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // After the deadline a read or write is still made, once, without waiting: a
        // write that fits the send buffer goes out, a read takes only what is queued.
        let after = Instant::now();
        assert_eq!(s.write(b"x").unwrap(), 1);
        let mut buf = [0u8; 100];
        loop {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Ok(_) => panic!("the trickler closed"),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                    break;
                }
            }
        }
        assert!(
            after.elapsed() < Duration::from_millis(200),
            "{:?}",
            after.elapsed()
        );
        drop(s);
        peer.join().unwrap();
    }

    #[test]
    fn a_tls_handshake_trickled_byte_by_byte_ends_within_timeout() {
        let (addr, peer) = trickler();
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        let mut t = HttpsTransport {
            url: HttpsUrl::parse(&format!("https://127.0.0.1:{}", addr.port())).unwrap(),
            token: Secret::new("pch_test".into()),
            tls: Arc::new(tls),
            timeout: Duration::from_secs(1),
        };
        // The first request of a login: timeout= alone bounds it (a poll gets 5 s more).
        let start = Request {
            v: protocol::VERSION,
            origin: crate::flow::tests::origin(),
            step: protocol::RequestStep::Start {
                first_factor: protocol::FirstFactor::Delegated,
                password: None,
                unenrolled: protocol::Unenrolled::Deny,
                fail_opens: vec![],
            },
        };
        let started = Instant::now();
        let got = t.call(&start);
        let took = started.elapsed();
        // The TCP connection was made: no outage (failmode=safe does not apply).
        assert!(
            matches!(&got, Err(CallError::NotDelivered(m)) if m.contains("TLS handshake") && m.contains("timeout=")),
            "{got:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "took {took:?} with timeout=1"
        );
        drop(t);
        peer.join().unwrap();
    }

    fn transport_to(port: u16) -> HttpsTransport {
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        HttpsTransport {
            url: HttpsUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
            token: Secret::new("pch_test".into()),
            tls: Arc::new(tls),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_daemon_that_is_not_listening_is_unreachable() {
        // A port nobody listens on: connection refused, the request not sent (the flow
        // waits for a daemon that restarts in the middle of a login).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let poll = Request {
            v: protocol::VERSION,
            origin: crate::flow::tests::origin(),
            step: protocol::RequestStep::Poll { txn: "t.0".into() },
        };
        let got = transport_to(port).call(&poll);
        assert!(
            matches!(&got, Err(CallError::Unreachable(m)) if m.contains("connect")),
            "{got:?}"
        );
    }

    #[test]
    fn only_a_connect_that_found_no_daemon_is_an_outage() {
        use std::io::Error;
        for errno in [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
        ] {
            assert!(connect_failed_for_want_of_a_daemon(
                &Error::from_raw_os_error(errno)
            ));
        }
        assert!(connect_failed_for_want_of_a_daemon(&Error::from(
            std::io::ErrorKind::TimedOut
        )));
        for errno in [
            libc::EMFILE,
            libc::ENOBUFS,
            libc::EPERM,
            libc::EACCES,
            libc::EADDRNOTAVAIL,
        ] {
            assert!(!connect_failed_for_want_of_a_daemon(
                &Error::from_raw_os_error(errno)
            ));
        }
    }

    #[test]
    fn a_peer_that_accepts_and_closes_is_not_delivered_not_an_outage() {
        // What a daemon past its connection limits does (or an on-path RST): the TCP
        // connection was made, so failmode=safe must not take it for an outage.
        for read_hello in [false, true] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let peer = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                if read_hello {
                    let _ = conn.read(&mut [0u8; 4096]);
                }
            });
            let start = Request {
                v: protocol::VERSION,
                origin: crate::flow::tests::origin(),
                step: protocol::RequestStep::Poll { txn: "t.0".into() },
            };
            let got = transport_to(port).call(&start);
            peer.join().unwrap();
            assert!(
                matches!(&got, Err(CallError::NotDelivered(m)) if m.contains("TLS handshake")),
                "read_hello={read_hello}: {got:?}"
            );
        }
    }

    #[test]
    fn a_tls_handshake_that_fails_is_a_tls_error_not_an_answer_of_the_daemon() {
        // A peer that answers the ClientHello with plain HTTP: the handshake fails as it
        // does for a certificate that does not verify (rustls says InvalidData for both).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            let _ = conn.flush();
            std::thread::sleep(Duration::from_millis(200));
        });
        let start = Request {
            v: protocol::VERSION,
            origin: crate::flow::tests::origin(),
            step: protocol::RequestStep::Poll { txn: "t.0".into() },
        };
        let got = transport_to(port).call(&start);
        assert!(
            matches!(&got, Err(CallError::Tls(m)) if m.contains("handshake with https://127.0.0.1")),
            "{got:?}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_proxy_that_lost_the_daemon_is_no_answer_the_request_may_have_reached_it() {
        let t = transport_to(443);
        for status in [502, 503, 504] {
            let got = t.interpret(status, b"<html>Bad Gateway</html>");
            assert!(
                matches!(&got, Err(CallError::NoAnswer(m)) if m.contains(&status.to_string())),
                "{status}: {got:?}"
            );
        }
        // The daemon's own error frame (busy while it shuts down) is an answer.
        let busy = Response::error(ErrorCode::Busy, "shutting down");
        let frame = protocol::encode(&busy).unwrap();
        let got = t.interpret(503, &frame[HEADER_LEN..]);
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn heads_and_bodies_are_parsed() {
        let h = parse_head(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\nx: y").unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked),
            (401, Some(12), false)
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap();
        assert!(h.chunked && h.content_length.is_none());
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"3\r\nabc\r\n").is_none(), "incomplete");
        assert!(dechunk(b"zz\r\n").is_none(), "broken");
    }

    #[test]
    fn the_token_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("pam-portcullis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("host.token");
        std::fs::write(&path, "pch_abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY: geteuid(2) has no preconditions and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            assert_eq!(read_token_file(&path).unwrap().expose(), "pch_abc");
        } else {
            let e = read_token_file(&path).unwrap_err();
            assert!(e.contains("chown root"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_token_file(&path).unwrap_err();
        assert!(e.contains("chmod 600") || e.contains("chown root"), "{e}");
        let link = dir.join("link.token");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_token_file(&link).is_err(), "a symlink is not followed");
        assert!(read_token_file(&dir).is_err(), "a directory");
        assert!(read_token_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ca_file_must_be_written_by_root_alone() {
        let dir = std::env::temp_dir().join(format!("pam-portcullis-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not read before the check").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid(2) has no preconditions and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            assert_eq!(ca_file_is_roots(&path), Ok(()));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
            let e = ca_file_is_roots(&path).unwrap_err();
            assert!(e.contains("chmod 644"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        }
        let e = ca_file_is_roots(&path).unwrap_err();
        assert!(e.contains("chown root"), "{e}");
        let e = client_config(Some(&path)).unwrap_err();
        assert!(e.contains("ca_file="), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
