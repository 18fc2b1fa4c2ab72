//! The accounting listener (`radius.accounting_listen`, RFC 2866 port 1813): acknowledges
//! verified Accounting-Requests from configured clients and records nothing. It exists for
//! NAS software that will not open a session without an acknowledged accounting start
//! (openvpn-auth-radius). Kept apart from the authentication loop in `server.rs`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::metrics::DropCause;
use super::packet::accounting::{
    check_accounting_structure, decode_accounting_request, encode_accounting_response,
};
use super::packet::{DropReason, MAX_PACKET_LEN};
use super::server::RadiusContext;
use super::warnings::{self, Unverified};

/// The answer to one accounting datagram, or why it gets none.
pub fn respond(
    ctx: &RadiusContext,
    src: SocketAddr,
    datagram: &[u8],
) -> Result<Vec<u8>, DropCause> {
    check_accounting_structure(datagram).map_err(DropCause::Packet)?;
    let Some(client) = ctx.clients().client_for(src.ip()) else {
        warnings::unknown_client(&ctx.unknown_clients, src);
        return Err(DropCause::UnknownClient);
    };
    let request =
        decode_accounting_request(datagram, client.config.secret.as_bytes()).map_err(|r| {
            if r == DropReason::BadMessageAuthenticator {
                warnings::wrong_secret(
                    &client.warnings,
                    &client.config.name,
                    src,
                    Unverified::RequestAuthenticator,
                );
            }
            DropCause::Packet(r)
        })?;
    encode_accounting_response(&request, client.config.secret.as_bytes()).map_err(|e| {
        tracing::warn!(%src, error = %e, "cannot encode an Accounting-Response");
        DropCause::Packet(DropReason::Undecodable)
    })
}

/// Receive on `sock` until `shutdown` turns true.
pub async fn serve_accounting(
    ctx: Arc<RadiusContext>,
    sock: Arc<UdpSocket>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    loop {
        let received = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = shutdown.changed() => break,
        };
        let (len, src) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "accounting receive error");
                continue;
            }
        };
        ctx.metrics.received.fetch_add(1, Relaxed);
        match respond(&ctx, src, &buf[..len]) {
            Ok(reply) => {
                ctx.metrics.accounting_responses.fetch_add(1, Relaxed);
                if let Err(e) = sock.send_to(&reply, src).await {
                    tracing::debug!(%src, error = %e, "accounting send failed");
                }
            }
            Err(why) => {
                ctx.metrics.count_drop(why);
                tracing::debug!(%src, reason = why.as_str(), "dropped accounting request");
            }
        }
    }
}
