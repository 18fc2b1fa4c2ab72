//! The HTTP listener (`[http] listen`): `/metrics` and the admin API (`/v1/`); push approval
//! and enrolment pages are added as further routers merged in [`router`].

pub mod admin;
pub mod metrics;
pub mod push;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::radius::server::RadiusContext;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub radius: Arc<RadiusContext>,
    /// The admin API (`/v1/`).
    pub admin: Arc<admin::AdminContext>,
}

/// Every route of the listener. Add a feature as `.merge(feature::routes())`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(metrics::routes())
        .merge(push::routes())
        .merge(admin::routes())
        .merge(web::routes())
        .with_state(state)
}

/// Bind `addr` (fatal if it cannot be bound).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr} (http.listen)"))
}

/// Serve until `shutdown` turns true; connections in progress finish first.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .context("HTTP listener failed")
}
