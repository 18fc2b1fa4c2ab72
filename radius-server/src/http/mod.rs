//! The HTTP listener (`[http] listen`, HTTPS with `tls_cert` + `tls_key`): `/metrics`, push
//! approval (`/v1/push/`), `POST /v1/pam/step` (remote PAM hosts) and the admin API
//! (`/v1/`); further features are routers merged in [`router`].

pub mod admin;
pub mod limits;
pub mod metrics;
pub mod push;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use portcullis_core::config::HttpConfig;

use crate::radius::server::RadiusContext;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub radius: Arc<RadiusContext>,
    /// The admin API (`/v1/`).
    pub admin: Arc<admin::AdminContext>,
    pub pam: Arc<crate::pam::http::PamHttp>,
    /// `[http] trusted_proxies`.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

/// Every route of the listener. Add a feature as `.merge(feature::routes())`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(metrics::routes())
        .merge(push::routes())
        .merge(admin::routes())
        .merge(crate::pam::http::routes())
        .merge(web::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn(limits::bound))
}

/// The address a connection came from, recorded for every request (`ConnectInfo<Peer>`,
/// put there by [`limits::bound`]): self-service logins are bound to it, audited with it
/// and throttled by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A bound listener: plain HTTP, or HTTPS when `tls_cert` and `tls_key` are set; either
/// way within the connection [`limits`].
pub enum HttpListener {
    Plain(limits::PlainListener),
    Tls(tls::TlsListener),
}

impl HttpListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            HttpListener::Plain(l) => axum::serve::Listener::local_addr(l),
            HttpListener::Tls(l) => axum::serve::Listener::local_addr(l),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, HttpListener::Tls(_))
    }

    /// The certificate and key of an HTTPS listener, which SIGHUP reads again.
    pub fn tls_files(&self) -> Option<tls::TlsFiles> {
        match self {
            HttpListener::Plain(_) => None,
            HttpListener::Tls(l) => Some(l.files()),
        }
    }
}

/// Load the TLS files (if any) and bind `cfg.listen` (fatal if either fails).
pub async fn bind(cfg: &HttpConfig) -> Result<HttpListener> {
    let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls::TlsFiles::load(cert, key)?),
        _ => None,
    };
    let addr = cfg.listen;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr} (http.listen)"))?;
    let limits = limits::Limits::new(&cfg.trusted_proxies);
    Ok(match acceptor {
        Some(a) => HttpListener::Tls(tls::TlsListener::new(listener, a, limits)?),
        None => HttpListener::Plain(limits::PlainListener::new(listener, limits)),
    })
}

/// Serve until `shutdown` turns true; connections in progress finish first.
pub async fn serve(
    listener: HttpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    match listener {
        HttpListener::Plain(l) => axum::serve(
            l,
            router(state).into_make_service_with_connect_info::<limits::Accepted>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP listener failed"),
        HttpListener::Tls(l) => axum::serve(
            l,
            router(state).into_make_service_with_connect_info::<limits::Accepted>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("HTTPS listener failed"),
    }
}
