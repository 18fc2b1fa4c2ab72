//! The PAM socket: accept, check the peer's uid, read length-prefixed frames with deadlines
//! and a size limit, answer each with the handler's response or an error frame.
//! A bad frame costs the sender its connection at worst; the listener goes on.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::config::PamConfig;
use portcullis_core::engine::Engine;
use portcullis_core::protocol::{self, ErrorCode, ProtocolError, Response, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;

use super::handler::{answer, Caller, PamSettings};

/// How long a connection may stay silent between two requests (the module connects per
/// step, so this only bounds forgotten connections).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Once a frame has begun, how long the rest of it may take.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer that is refused (`forbidden`, `busy`) may take to send its request,
/// which is read and thrown away before the refusal is written (see [`refuse`]). The
/// module sends its request right after connecting; this only bounds a peer that does not.
const REFUSED_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How many refused peers may be waited for at once (each for [`REFUSED_READ_TIMEOUT`] at
/// most, and none of them holds one of the `pam.max_connections` slots of logins); past
/// that, a refused peer gets its error frame at once.
const MAX_REFUSALS_READING: usize = 16;

/// Everything connection tasks share.
pub struct PamContext {
    engine: Arc<Engine>,
    settings: PamSettings,
    allowed_uids: Vec<u32>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// Refused peers being read from (see [`refuse`]).
    refusals: Arc<Semaphore>,
}

impl PamContext {
    pub fn new(engine: Arc<Engine>, cfg: &PamConfig, push_hub: Arc<crate::push::PushHub>) -> Self {
        Self {
            engine,
            settings: PamSettings::new(cfg, push_hub),
            allowed_uids: cfg.allowed_uids.clone(),
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_READING)),
        }
    }

    /// With the tenants' `pam_fail_mode` (`[tenants.NAME]`), told to the hosts.
    pub fn with_tenants(
        mut self,
        tenants: &std::collections::BTreeMap<String, portcullis_core::config::TenantConfig>,
    ) -> Self {
        self.settings = self.settings.with_tenants(tenants);
        self
    }

    /// Wait until every connection has finished, or the deadline passes.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let all = self.max_connections.min(u32::MAX as usize) as u32;
        timeout(deadline, self.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

/// A bound socket that removes its file when dropped.
pub struct PamListener {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl Drop for PamListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind `cfg.socket` with `cfg.socket_mode`, replacing a stale socket file left by a
/// daemon that died. Refuses to replace a live socket or anything that is not a socket.
pub fn bind(cfg: &PamConfig) -> io::Result<PamListener> {
    let path = cfg.socket.clone();
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    remove_stale(&path)?;
    let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
    // Between bind and chmod the file has the umask's mode; the uid check below is what
    // admits peers, the mode only keeps others from connecting at all.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(cfg.mode()))?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    Ok(PamListener { listener, path })
}

fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; move it away or choose another pam.socket",
                path.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process (a running portcullis serve?) is listening on {}",
                path.display()
            ),
        ));
    }
    tracing::info!(path = %path.display(), "removing a stale PAM socket file");
    std::fs::remove_file(path)
}

/// Accept connections until `shutdown` turns true.
pub async fn serve(
    ctx: Arc<PamContext>,
    listener: PamListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, go on.
                tracing::warn!(error = %e, "PAM socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move { connection(ctx, stream).await });
    }
    drop(listener);
}

async fn connection(ctx: Arc<PamContext>, mut stream: UnixStream) {
    // The peer's uid first: a peer that may not use the socket is refused without taking
    // one of the slots of logins (pam.max_connections).
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "PAM socket: cannot read the peer's credentials; refused");
            let refusal = Response::error(
                ErrorCode::Forbidden,
                "the daemon cannot read this peer's credentials (SO_PEERCRED)",
            );
            refuse(&ctx.refusals, stream, &refusal).await;
            return;
        }
    };
    if !ctx.allowed_uids.contains(&uid) {
        tracing::warn!(
            uid,
            "PAM socket: peer uid is not in pam.allowed_uids; refused"
        );
        let refusal = Response::error(
            ErrorCode::Forbidden,
            format!("uid {uid} may not use this socket (pam.allowed_uids)"),
        );
        refuse(&ctx.refusals, stream, &refusal).await;
        return;
    }
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        tracing::warn!("PAM socket: too many connections (pam.max_connections); refused one");
        let busy = Response::error(ErrorCode::Busy, "the daemon is busy; try again");
        refuse(&ctx.refusals, stream, &busy).await;
        return;
    };
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(FrameError::Io) => break,
            Err(FrameError::Protocol(e)) => {
                tracing::debug!(uid, error = %e, "PAM socket: bad frame");
                let fatal = matches!(e, ProtocolError::TooLarge { .. });
                if send(&mut stream, &Response::error(e.code(), e.to_string()))
                    .await
                    .is_err()
                    || fatal
                {
                    // An oversize body was not read: the stream cannot be resynchronised.
                    break;
                }
                continue;
            }
        };
        let response = answer(&ctx.engine, &ctx.settings, body, &Caller::Socket { uid }).await;
        if send(&mut stream, &response).await.is_err() {
            break;
        }
    }
    drop(permit);
}

enum FrameError {
    Io,
    Protocol(ProtocolError),
}

/// One frame body; `None` when the peer closed or stayed idle too long.
async fn read_frame(stream: &mut UnixStream) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match timeout(IDLE_TIMEOUT, stream.read_exact(&mut header)).await {
        Err(_) => return Ok(None),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(_)) => return Err(FrameError::Io),
        Ok(Ok(_)) => {}
    }
    let len = protocol::body_len(header).map_err(FrameError::Protocol)?;
    let mut body = vec![0u8; len];
    match timeout(FRAME_TIMEOUT, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => Ok(Some(body)),
        _ => Err(FrameError::Io),
    }
}

/// Refuse the peer on `stream` with the error frame `refusal` so that the peer gets to
/// read it.
///
/// The module sends its request right after connecting. Were the refusal written and the
/// connection closed at once, the request could come after the close: the module's send
/// fails (EPIPE), and a module that took that for an outage would let a `forbidden` peer
/// in under `failmode=safe`. So the peer's first frame is read first and thrown away
/// (bounded: one frame of at most MAX_FRAME_LEN, within REFUSED_READ_TIMEOUT, and at
/// most MAX_REFUSALS_READING peers at once, after which the refusal goes out at once and
/// the module reads it from its receive queue after the failed send), then the refusal is
/// written, the write side shut down (end of stream after the frame) and the connection
/// closed. With the request read, the close leaves nothing of the peer's unread, so the
/// peer reads the frame and then a clean end of stream, not ECONNRESET.
async fn refuse(refusals: &Arc<Semaphore>, mut stream: UnixStream, refusal: &Response) {
    if let Ok(_reading) = refusals.clone().try_acquire_owned() {
        let _ = timeout(REFUSED_READ_TIMEOUT, discard_frame(&mut stream)).await;
    }
    if send(&mut stream, refusal).await.is_ok() {
        let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    }
}

/// Reads one frame from `stream` and forgets it (it may hold a password): up to the end of
/// the stream or an error, and not past a header that announces more than MAX_FRAME_LEN.
async fn discard_frame(stream: &mut UnixStream) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let Ok(mut left) = protocol::body_len(header) else {
        return Ok(());
    };
    let mut buf = zeroize::Zeroizing::new([0u8; 4096]);
    while left > 0 {
        let want = left.min(buf.len());
        match stream.read(&mut buf[..want]).await? {
            0 => break,
            n => left -= n,
        }
    }
    Ok(())
}

async fn send(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let frame = protocol::encode(response).map_err(|e| io::Error::other(e.to_string()))?;
    match timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use portcullis_core::protocol::{
        FirstFactor, Origin, Request, RequestStep, ResponseStep, Unenrolled, VERSION,
    };

    use super::*;

    /// A context whose `pam.allowed_uids` leaves out this process's uid.
    fn refusing(max_connections: usize) -> Arc<PamContext> {
        let me = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        let other = me.map(|uid| uid.wrapping_add(4242)).unwrap_or(4242);
        let cfg = PamConfig {
            allowed_uids: vec![other],
            max_connections,
            ..PamConfig::default()
        };
        Arc::new(PamContext::new(
            super::super::handler::tests::engine(),
            &cfg,
            Default::default(),
        ))
    }

    fn start_frame() -> Vec<u8> {
        protocol::encode(&Request {
            v: VERSION,
            origin: Origin {
                tenant: "acme".into(),
                user: "alice".into(),
                service: "sshd".into(),
                host: "web1".into(),
                rhost: None,
                tty: None,
                ruser: None,
            },
            step: RequestStep::Start {
                first_factor: FirstFactor::Delegated,
                password: None,
                unenrolled: Unenrolled::Deny,
                fail_opens: vec![],
            },
        })
        .unwrap()
    }

    /// The one frame the daemon sends, then the end of the stream (not a reset).
    async fn the_only_reply(peer: &mut UnixStream) -> Response {
        let mut all = Vec::new();
        timeout(Duration::from_secs(5), peer.read_to_end(&mut all))
            .await
            .expect("the daemon closes the connection after its reply")
            .expect("a clean end of stream, not a reset");
        let len = protocol::body_len(all[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(all.len(), HEADER_LEN + len, "one frame, then the end");
        protocol::decode_response(&all[HEADER_LEN..]).unwrap()
    }

    fn assert_forbidden(r: &Response) {
        assert!(
            matches!(
                &r.step,
                ResponseStep::Error {
                    code: ErrorCode::Forbidden,
                    message,
                } if message.contains("pam.allowed_uids")
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_peer_can_send_its_request_and_then_reads_forbidden() {
        let ctx = refusing(4);
        let (daemon, mut peer) = UnixStream::pair().unwrap();
        let served = tokio::spawn(connection(ctx.clone(), daemon));
        // The request comes a moment after the connect (the module was descheduled): the
        // daemon must still be there to take it, or the module's send fails (EPIPE) and
        // the refusal looks like an outage to it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.write_all(&start_frame())
            .await
            .expect("the daemon closed the connection before the request came");
        assert_forbidden(&the_only_reply(&mut peer).await);
        served.await.unwrap();
        // A refused peer held no slot of logins.
        assert_eq!(ctx.slots.available_permits(), 4);
    }

    #[tokio::test]
    async fn a_refused_peer_that_sends_nothing_is_refused_within_a_second() {
        let ctx = refusing(4);
        let (daemon, mut peer) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let served = tokio::spawn(connection(ctx.clone(), daemon));
        assert_forbidden(&the_only_reply(&mut peer).await);
        let took = started.elapsed();
        assert!(
            took >= REFUSED_READ_TIMEOUT - Duration::from_millis(50)
                && took < REFUSED_READ_TIMEOUT + Duration::from_secs(1),
            "{took:?}"
        );
        served.await.unwrap();
        // Not a byte read past one frame: a header announcing too much ends the wait.
        let (daemon, mut peer) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let served = tokio::spawn(connection(ctx, daemon));
        peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let reply = timeout(Duration::from_secs(5), async {
            let mut header = [0u8; HEADER_LEN];
            peer.read_exact(&mut header).await.unwrap();
            let mut body = vec![0u8; protocol::body_len(header).unwrap()];
            peer.read_exact(&mut body).await.unwrap();
            protocol::decode_response(&body).unwrap()
        })
        .await
        .unwrap();
        assert_forbidden(&reply);
        assert!(
            started.elapsed() < REFUSED_READ_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        served.await.unwrap();
    }

    #[tokio::test]
    async fn past_the_refusals_being_read_a_refused_peer_gets_its_frame_at_once() {
        let ctx = refusing(4);
        // Silent refused peers fill every reading place...
        let mut silent = Vec::new();
        for _ in 0..MAX_REFUSALS_READING {
            let (daemon, peer) = UnixStream::pair().unwrap();
            silent.push((tokio::spawn(connection(ctx.clone(), daemon)), peer));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ctx.refusals.available_permits(), 0);
        // ...so one more is not waited for.
        let (daemon, mut peer) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let served = tokio::spawn(connection(ctx.clone(), daemon));
        assert_forbidden(&the_only_reply(&mut peer).await);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        served.await.unwrap();
        for (served, mut peer) in silent {
            assert_forbidden(&the_only_reply(&mut peer).await);
            served.await.unwrap();
        }
        assert_eq!(ctx.refusals.available_permits(), MAX_REFUSALS_READING);
    }
}
