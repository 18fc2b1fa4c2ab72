//! `portcullis serve`: the daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::radius::metrics::Metrics;
use crate::radius::server::{bind, serve_socket, RadiusContext};

/// How long in-flight logins may take to finish after SIGTERM.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Open everything, bind the listeners, serve until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    let opened = crate::cli::open(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(opened))
}

async fn serve(o: crate::cli::Opened) -> Result<()> {
    let mut engine = o.build_engine(&tokio::runtime::Handle::current())?;
    // First-factor backends (LDAP, upstream RADIUS, delegated) per tenant and client; the
    // returned backends serve the PAM services' `first_factor` overrides.
    let _first_factors = crate::first_factor::install(&mut engine, &o.config)?;
    let engine = Arc::new(engine);
    for c in &o.config.radius.clients {
        if o.store.tenant_by_name(&c.tenant)?.is_none() {
            tracing::warn!(client = %c.name, tenant = %c.tenant,
                "client names a tenant that does not exist yet: its logins are rejected until `portcullis tenant add {}`", c.tenant);
        }
        if !c.require_message_authenticator {
            tracing::warn!(client = %c.name, "client does not require Message-Authenticator (BlastRADIUS exposure; use only for NAS software that cannot send it)");
        }
    }
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(RadiusContext::new(engine, &o.config, metrics.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for (i, addr) in o.config.radius.listen.iter().enumerate() {
        let sock = bind(*addr, o.config.radius.socket_receive_buffer)
            .with_context(|| format!("cannot listen for RADIUS on {addr} (radius.listen)"))?;
        let bound = sock.local_addr()?;
        println!("radius: listening on {bound}");
        tracing::info!(addr = %bound, "RADIUS listener ready");
        loops.push(tokio::spawn(serve_socket(
            ctx.clone(),
            Arc::new(sock),
            i,
            stop_rx.clone(),
        )));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // Housekeeping: expire cached replies and stored transactions / replay entries.
    let housekeeping = {
        let ctx = ctx.clone();
        let store = o.store.clone();
        let clock = o.clock.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                ctx.cache.sweep(std::time::Instant::now());
                n += 1;
                if n.is_multiple_of(12) {
                    let (store, now) = (store.clone(), clock.now());
                    match tokio::task::spawn_blocking(move || store.purge_expired(now)).await {
                        Ok(Err(e)) => tracing::warn!(error = %e, "purging expired state failed"),
                        Err(e) => tracing::warn!(error = %e, "purge task failed"),
                        Ok(Ok(_)) => {}
                    }
                }
            }
        })
    };

    wait_for_signal().await;
    tracing::info!("shutting down: no new requests; finishing logins in progress");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let _ = housekeeping.await;
    if !ctx.drain(DRAIN_DEADLINE).await {
        tracing::warn!("some logins were still in progress at the shutdown deadline");
    }
    let drops: Vec<String> = metrics
        .drop_counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    tracing::info!(
        received = metrics.received.load(std::sync::atomic::Ordering::Relaxed),
        drops = %drops.join(" "),
        "stopped"
    );
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
