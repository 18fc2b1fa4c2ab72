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

/// Everything connection tasks share.
pub struct PamContext {
    engine: Arc<Engine>,
    settings: PamSettings,
    allowed_uids: Vec<u32>,
    slots: Arc<Semaphore>,
    max_connections: usize,
}

impl PamContext {
    pub fn new(engine: Arc<Engine>, cfg: &PamConfig, push_hub: Arc<crate::push::PushHub>) -> Self {
        Self {
            engine,
            settings: PamSettings::new(cfg, push_hub),
            allowed_uids: cfg.allowed_uids.clone(),
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
        }
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
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        tracing::warn!("PAM socket: too many connections (pam.max_connections); refused one");
        let _ = send(
            &mut stream,
            &Response::error(ErrorCode::Busy, "the daemon is busy; try again"),
        )
        .await;
        return;
    };
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "PAM socket: cannot read the peer's credentials; refused");
            return;
        }
    };
    if !ctx.allowed_uids.contains(&uid) {
        tracing::warn!(
            uid,
            "PAM socket: peer uid is not in pam.allowed_uids; refused"
        );
        let _ = send(
            &mut stream,
            &Response::error(
                ErrorCode::Forbidden,
                format!("uid {uid} may not use this socket (pam.allowed_uids)"),
            ),
        )
        .await;
        return;
    }
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

async fn send(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let frame = protocol::encode(response).map_err(|e| io::Error::other(e.to_string()))?;
    match timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}
