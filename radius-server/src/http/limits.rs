//! Limits of the HTTP(S) listener against slow and greedy clients.
//!
//! axum's server sets no timer, so hyper applies no header-read timeout: a client that
//! opens connections and never finishes a request (or trickles its body) would hold each
//! one, and its file descriptor, for ever; enough of them leave the daemon unable to open a
//! socket or file for anything else (PAM socket, push, LDAP). So:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once, and [`MAX_PER_ADDRESS`] from one
//!   address (an IPv6 one counts for its /64; `trusted_proxies` only count to the total):
//!   more are closed as soon as they are accepted (over TLS, before the handshake);
//! - over TLS, at most [`MAX_HANDSHAKES_PER_ADDRESS`] handshakes in progress from one
//!   address (counted as above): more connections from it are closed at once;
//! - a request's head must have arrived within [`HEAD_TIMEOUT`] of the connection's start
//!   or of the previous answer (which also ends idle keep-alive connections);
//! - its body (at most [`MAX_BUFFERED_BODY`] bytes are read; every route takes far less)
//!   within [`BODY_TIMEOUT`]; it is read here, whole, before any handler runs;
//! - a write that makes no progress for [`WRITE_TIMEOUT`] ends the connection.
//!
//! While a handler runs (a login may wait on LDAP, an upstream server, a password hash),
//! no read deadline applies.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use http_body_util::BodyExt;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections open at once from one address (an IPv6 /64), unless it is a trusted proxy.
pub const MAX_PER_ADDRESS: usize = 128;
/// TLS handshakes in progress at once from one address (an IPv6 /64), unless it is a
/// trusted proxy: the listener has 256 handshake slots in all, each held up to 10 s, and
/// one address must not take them.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// Time for a request's head, from the connection's start or the previous answer.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for a request's body, from the end of its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a write may make no progress (a client that does not read its answer).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most body bytes read. Every route's own limit is smaller (the admin API's and the PAM
/// frame's 64 KiB are the largest), so a longer body reaches it cut at one byte more than
/// this, and gets that route's own "too large" answer.
pub const MAX_BUFFERED_BODY: usize = 128 * 1024;

/// The connections open now, in total and by address.
pub struct Limits {
    trusted: Vec<IpNet>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    /// TLS handshakes in progress by address (trusted proxies are not counted).
    handshakes: HashMap<IpAddr, usize>,
    /// When a refusal was last logged (one line per ten seconds at most).
    last_warned: Option<Instant>,
}

/// The key an address counts under: IPv4 (also as `::ffff:a.b.c.d`) as it is, IPv6 by /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Limits {
    /// Limits where `trusted` (`[http] trusted_proxies`) count only towards the total.
    pub fn new(trusted: &[IpNet]) -> Arc<Limits> {
        Arc::new(Limits {
            trusted: trusted.to_vec(),
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `ip`, or None (the connection is to be closed).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let canonical = ip.to_canonical();
        let key =
            (!self.trusted.iter().any(|n| n.contains(&canonical))).then(|| address_key(canonical));
        let mut open = self.lock();
        let from_here = key.map_or(0, |k| open.by_address.get(&k).copied().unwrap_or(0));
        if open.total >= MAX_CONNECTIONS || from_here >= MAX_PER_ADDRESS {
            let now = Instant::now();
            if open
                .last_warned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                open.last_warned = Some(now);
                let why = if open.total >= MAX_CONNECTIONS {
                    "too many HTTP connections open"
                } else {
                    "too many HTTP connections open from one address"
                };
                tracing::warn!(peer = %canonical, open = open.total, max = MAX_CONNECTIONS,
                    max_per_address = MAX_PER_ADDRESS, "{why}: new ones are closed at once (logged once per 10 s)");
            }
            return None;
        }
        open.total += 1;
        if let Some(k) = key {
            *open.by_address.entry(k).or_insert(0) += 1;
        }
        Some(Permit {
            limits: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open_now(&self) -> (usize, usize) {
        let open = self.lock();
        (open.total, open.by_address.len())
    }

    #[cfg(test)]
    fn handshakes_now(&self) -> usize {
        self.lock().handshakes.values().sum()
    }
}

impl Permit {
    /// A place for the TLS handshake of this connection, or None when its address (as
    /// counted by [`Limits::admit`]) already has [`MAX_HANDSHAKES_PER_ADDRESS`] handshakes
    /// in progress (the connection is to be closed). A trusted proxy always gets one.
    pub fn handshake(&self) -> Option<Handshake> {
        let Some(key) = self.key else {
            return Some(Handshake {
                limits: self.limits.clone(),
                key: None,
            });
        };
        let mut open = self.limits.lock();
        let n = open.handshakes.get(&key).copied().unwrap_or(0);
        if n >= MAX_HANDSHAKES_PER_ADDRESS {
            let now = Instant::now();
            if open
                .last_warned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                open.last_warned = Some(now);
                tracing::warn!(peer = %key, max_per_address = MAX_HANDSHAKES_PER_ADDRESS,
                    "too many TLS handshakes in progress from one address: new connections are closed at once (logged once per 10 s)");
            }
            return None;
        }
        open.handshakes.insert(key, n + 1);
        Some(Handshake {
            limits: self.limits.clone(),
            key: Some(key),
        })
    }
}

/// One TLS handshake in progress; given back when dropped (handshake done, failed or timed
/// out).
pub struct Handshake {
    limits: Arc<Limits>,
    key: Option<IpAddr>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let Some(k) = self.key else {
            return;
        };
        let mut open = self.limits.lock();
        if let Some(n) = open.handshakes.get_mut(&k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.handshakes.remove(&k);
            }
        }
    }
}

/// One connection's place; given back when the connection is dropped.
pub struct Permit {
    limits: Arc<Limits>,
    key: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(k) = self.key {
            if let Some(n) = open.by_address.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    open.by_address.remove(&k);
                }
            }
        }
    }
}

/// What the connection and the requests on it share.
pub struct ConnState {
    /// A request is being answered: no read deadline.
    busy: AtomicBool,
    /// Reads fail from now on (a body that came too slowly).
    closing: AtomicBool,
    /// Start of the connection or end of the last answer: the next head is due
    /// [`HEAD_TIMEOUT`] later.
    idle_since: Mutex<Instant>,
}

impl ConnState {
    fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            busy: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    fn read_deadline(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since + HEAD_TIMEOUT)
    }

    /// Marks a request in progress until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Ordering::Release);
        Busy(self.clone())
    }
}

/// A request in progress on a connection; dropped when its answer is ready (or it was
/// given up), which starts the wait for the next head.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.busy.store(false, Ordering::Release);
    }
}

fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// A connection under the read and write deadlines, holding its [`Permit`].
pub struct Guarded<IO> {
    io: IO,
    conn: Arc<ConnState>,
    _permit: Permit,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, permit: Permit) -> Guarded<IO> {
        Guarded {
            io,
            conn: ConnState::new(),
            _permit: permit,
            read_timer: None,
            write_timer: None,
        }
    }

    /// A write (or flush) is pending: an error once it has been for [`WRITE_TIMEOUT`].
    fn write_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let t = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match t.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("the client does not read its answer"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_stalled(cx),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.closing.load(Ordering::Acquire) {
            return Poll::Ready(Err(timed_out("the request body came too slowly")));
        }
        let deadline = this.conn.read_deadline();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(timed_out("no whole request head in time")));
        }
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        let Some(deadline) = deadline else {
            this.read_timer = None;
            return Poll::Pending;
        };
        let t = this
            .read_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if t.deadline() != deadline {
            t.as_mut().reset(deadline);
        }
        match t.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("no whole request head in time"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(r, cx)
    }
}

/// The plain-HTTP listener: accepted connections within the [`Limits`].
pub struct PlainListener {
    inner: TcpListener,
    limits: Arc<Limits>,
}

impl PlainListener {
    pub fn new(inner: TcpListener, limits: Arc<Limits>) -> PlainListener {
        PlainListener { inner, limits }
    }
}

impl axum::serve::Listener for PlainListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's accept: errors (out of descriptors) are retried after a pause.
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if let Some(permit) = self.limits.admit(addr.ip()) {
                return (Guarded::new(io, permit), addr);
            }
            drop(io);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The connect info of every request: the peer's address and its connection's state.
#[derive(Clone)]
pub struct Accepted {
    pub peer: SocketAddr,
    conn: Arc<ConnState>,
}

impl Connected<IncomingStream<'_, PlainListener>> for Accepted {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        Accepted {
            peer: *stream.remote_addr(),
            conn: stream.io().conn.clone(),
        }
    }
}

impl Connected<IncomingStream<'_, super::tls::TlsListener>> for Accepted {
    fn connect_info(stream: IncomingStream<'_, super::tls::TlsListener>) -> Self {
        Accepted {
            peer: *stream.remote_addr(),
            conn: stream.io().conn.clone(),
        }
    }
}

/// At most `cap + 1` bytes of `body` (more is not read).
async fn read_capped(body: Body, cap: usize) -> Result<Bytes, axum::Error> {
    let mut body = body;
    let mut out: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = (cap + 1).saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
            if out.len() > cap {
                break;
            }
        }
    }
    Ok(Bytes::from(out))
}

/// The middleware of every route: records the request on its connection (no read deadline
/// while it is answered), gives handlers `ConnectInfo<Peer>`, and reads the body within
/// [`BODY_TIMEOUT`] (at most [`MAX_BUFFERED_BODY`] + 1 bytes of it).
pub async fn bound(req: Request, next: Next) -> Response {
    let accepted = req
        .extensions()
        .get::<ConnectInfo<Accepted>>()
        .map(|c| c.0.clone());
    let _busy = accepted.as_ref().map(|a| a.conn.begin());
    let (mut parts, body) = req.into_parts();
    if let Some(a) = &accepted {
        parts.extensions.insert(ConnectInfo(super::Peer(a.peer)));
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_capped(body, MAX_BUFFERED_BODY)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP request body not read");
            return close(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
        Err(_) => {
            if let Some(a) = &accepted {
                a.conn.closing.store(true, Ordering::Release);
            }
            tracing::debug!(peer = ?accepted.as_ref().map(|a| a.peer), "HTTP request body too slow; connection closed");
            return close(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    if bytes.len() > MAX_BUFFERED_BODY {
        // Cut: the route's own limit refuses it; the length says what it gets.
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn close(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_and_given_back() {
        let proxy: IpNet = "192.0.2.80/32".parse().unwrap();
        let l = Limits::new(&[proxy]);
        let a: IpAddr = "198.51.100.5".parse().unwrap();
        let held: Vec<Permit> = (0..MAX_PER_ADDRESS).map(|_| l.admit(a).unwrap()).collect();
        assert!(l.admit(a).is_none(), "one more from the same address");
        // The same address seen as IPv6 is the same address.
        assert!(l.admit("::ffff:198.51.100.5".parse().unwrap()).is_none());
        // Another address, and the trusted proxy beyond the per-address limit, still get in.
        let b = l.admit("198.51.100.6".parse().unwrap()).unwrap();
        let proxied: Vec<Permit> = (0..MAX_PER_ADDRESS + 5)
            .map(|_| l.admit("192.0.2.80".parse().unwrap()).unwrap())
            .collect();
        drop(held);
        drop(b);
        drop(proxied);
        assert_eq!(
            l.open_now(),
            (0, 0),
            "every place given back, no address left"
        );
        assert!(l.admit(a).is_some());
    }

    #[test]
    fn an_ipv6_64_is_one_address_and_the_total_is_bounded() {
        let l = Limits::new(&[]);
        let held: Vec<Permit> = (0..MAX_PER_ADDRESS)
            .map(|i| {
                l.admit(format!("2001:db8::{i:x}").parse().unwrap())
                    .unwrap()
            })
            .collect();
        assert!(l.admit("2001:db8::ffff:1".parse().unwrap()).is_none());
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(held);
        let all: Vec<Permit> = (0..MAX_CONNECTIONS)
            .map(|i| {
                l.admit(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32)))
                    .unwrap()
            })
            .collect();
        assert!(l.admit("203.0.113.1".parse().unwrap()).is_none());
        drop(all);
    }

    #[test]
    fn handshakes_are_bounded_per_address_and_given_back() {
        let proxy: IpNet = "192.0.2.80/32".parse().unwrap();
        let l = Limits::new(&[proxy]);
        let conns: Vec<Permit> = (0..MAX_HANDSHAKES_PER_ADDRESS + 1)
            .map(|i| {
                l.admit(format!("2001:db8::{i:x}").parse().unwrap())
                    .unwrap()
            })
            .collect();
        let held: Vec<Handshake> = conns[..MAX_HANDSHAKES_PER_ADDRESS]
            .iter()
            .map(|p| p.handshake().unwrap())
            .collect();
        // The same /64: refused; another /64, and the trusted proxy, are not.
        assert!(conns[MAX_HANDSHAKES_PER_ADDRESS].handshake().is_none());
        let other = l.admit("2001:db8:0:1::1".parse().unwrap()).unwrap();
        assert!(other.handshake().is_some());
        let proxied: Vec<Permit> = (0..MAX_HANDSHAKES_PER_ADDRESS + 5)
            .map(|_| l.admit("192.0.2.80".parse().unwrap()).unwrap())
            .collect();
        let proxied_hs: Vec<Handshake> = proxied.iter().map(|p| p.handshake().unwrap()).collect();
        drop(proxied_hs);
        assert_eq!(l.handshakes_now(), MAX_HANDSHAKES_PER_ADDRESS);
        // A handshake that ends gives its place back.
        drop(held);
        assert_eq!(l.handshakes_now(), 0);
        assert!(conns[MAX_HANDSHAKES_PER_ADDRESS].handshake().is_some());
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_one_byte_past_the_cap() {
        let b = read_capped(Body::from(vec![7u8; 100]), 10).await.unwrap();
        assert_eq!(b.len(), 11);
        let b = read_capped(Body::from(vec![7u8; 10]), 10).await.unwrap();
        assert_eq!(b.len(), 10);
        let b = read_capped(Body::empty(), 10).await.unwrap();
        assert!(b.is_empty());
    }
}
