//! TLS on the HTTP listener (`[http] tls_cert`, `tls_key`): rustls with the ring provider.
//!
//! Handshakes run in their own tasks, each under a deadline, so a slow or silent client
//! never holds up the others; finished streams are handed to `axum::serve` through the
//! [`axum::serve::Listener`] trait, which keeps axum's graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::limits::{Guarded, Limits};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog. One
/// address (an IPv6 /64) has at most
/// [`MAX_HANDSHAKES_PER_ADDRESS`](super::limits::MAX_HANDSHAKES_PER_ADDRESS) of them: more
/// connections from it are closed at once.
const MAX_HANDSHAKES: usize = 256;

/// The server config from the PEM files named by `http.tls_cert` and `http.tls_key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read http.tls_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "http.tls_cert {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "http.tls_cert {} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks, the server's first)",
            cert.display()
        );
    }
    let meta = std::fs::metadata(key)
        .with_context(|| format!("cannot read http.tls_key {}", key.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "http.tls_key {} has mode {mode:04o}: group and others may read the private key; chmod 600 {}",
            key.display(),
            key.display()
        );
    }
    let private_key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "http.tls_key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .with_context(|| {
            format!(
                "http.tls_key {} does not fit http.tls_cert {} (or the key type is not supported)",
                key.display(),
                cert.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate and key of the HTTPS listener, read again on SIGHUP: a renewed
/// certificate (certbot's deploy hook, say) is served from the next handshake on, without a
/// restart. A pair that does not load keeps the one in use.
#[derive(Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<TlsAcceptor>>,
}

impl TlsFiles {
    /// Reads `cert` and `key` (see [`acceptor`]).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles> {
        Ok(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Arc::new(ArcSwap::from_pointee(acceptor(cert, key)?)),
        })
    }

    /// Reads both files again and serves them from the next handshake on; on an error the
    /// pair in use stays.
    pub fn reload(&self) -> Result<()> {
        self.current
            .store(Arc::new(acceptor(&self.cert, &self.key)?));
        Ok(())
    }

    /// The certificate file, for the log.
    pub fn cert(&self) -> &Path {
        &self.cert
    }
}

/// A TCP listener whose accepted connections have finished the TLS handshake (and were
/// admitted within the connection [`Limits`] before it).
pub struct TlsListener {
    ready: mpsc::Receiver<(Guarded<TlsStream<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: JoinHandle<()>,
    files: TlsFiles,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stop accepting once axum is done with the listener (shutdown).
        self.acceptor_task.abort();
    }
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        files: TlsFiles,
        limits: Arc<Limits>,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(accept_loop(listener, files.current.clone(), limits, tx));
        Ok(TlsListener {
            ready,
            local,
            acceptor_task,
            files,
        })
    }

    /// Its certificate and key, to read again on SIGHUP.
    pub fn files(&self) -> TlsFiles {
        self.files.clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<ArcSwap<TlsAcceptor>>,
    limits: Arc<Limits>,
    tx: mpsc::Sender<(Guarded<TlsStream<TcpStream>>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, go on.
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        // Over the limits: closed before any handshake work.
        let Some(place) = limits.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        // One address with as many handshakes under way as it may have: closed too, so
        // that a few addresses cannot hold every handshake slot.
        let Some(handshake) = place.handshake() else {
            drop(tcp);
            continue;
        };
        // The pair in use now: a reload between two handshakes takes effect at the next.
        let (acceptor, tx) = (acceptor.load_full(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    drop(handshake);
                    drop(permit);
                    let _ = tx.send((Guarded::new(tls, place), peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Guarded<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (only at shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
