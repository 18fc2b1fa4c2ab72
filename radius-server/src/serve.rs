//! `portcullis serve`: the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_core::config::Config;
use tokio::sync::watch;

use crate::pam::handler::PamSettings;
use crate::pam::server::PamContext;
use crate::radius::metrics::Metrics;
use crate::radius::server::{bind, serve_socket, RadiusContext};

/// What the HTTP listener serves (every route of `crate::http::router`), for its start line.
const HTTP_SERVES: &str = "/metrics, /v1/push, /v1/pam/step, /v1/enroll, admin API /v1/, self-service /my/, admin pages /admin/";

/// How long in-flight logins may take to finish after SIGTERM.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Open everything, bind the listeners, serve until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    let notifier = crate::notify::Notifier::from_env();
    raise_open_files_limit();
    // Loaded before the runtime is built: the store it names sets the worker count.
    let config = Config::load(config_path)?;
    let workers = runtime_workers(
        std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        config.store.postgres().is_none(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("portcullis")
        .build()
        .context("starting the async runtime")?;
    // Signals are caught before anything else: opening the store, the key and the backends
    // takes a while (a PostgreSQL connect), and a SIGHUP meanwhile (`systemctl reload`
    // right after a start) would otherwise end the process by its default action, which
    // systemd's Restart=on-failure takes for a clean exit. Caught early, it reloads once
    // the daemon serves; a SIGTERM meanwhile stops it as soon as it serves.
    let signals = {
        let _in_runtime = runtime.enter();
        Signals::install()
    };
    let opened = crate::cli::open(config, config_path)?;
    runtime.block_on(serve(opened, signals, notifier, config_path.to_path_buf()))
}

/// The async runtime's worker threads: `TOKIO_WORKER_THREADS` if set (a positive
/// integer), else a worker per CPU, one fewer (at least one) when the store is SQLite.
///
/// On SQLite, code-only logins are decided on a thread of their own (the login batch
/// thread, see `portcullis_core::engine::batch`), and password hashes run on the blocking
/// pool: a worker per CPU besides them only makes the workers wake and steal each other's
/// reply tasks and take the batch thread's core from it. Measured on the 2-core machine
/// (row a of `bench/vs-freeradius`'s load, alternating runs): one worker used less CPU per
/// login than two in 9 of 12 pairs, by 4 us (7%) at the median of the differences.
fn runtime_workers(env: Option<&str>, cpus: usize, batch_thread: bool) -> Result<usize> {
    match env {
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!(
                "TOKIO_WORKER_THREADS must be a positive integer (the async runtime's worker threads), not {v:?}"
            ),
        },
        None if batch_thread => Ok(cpus.saturating_sub(1).max(1)),
        None => Ok(cpus.max(1)),
    }
}

/// The most descriptors asked for: room for the HTTP listener's connections, the PAM
/// socket's, the store's and the providers', well past what the limits let in.
const OPEN_FILES_WANTED: u64 = 65_536;

/// Raises the soft limit on open descriptors (often 1024) towards the hard one (systemd
/// gives 524288): a daemon that runs out of them stops accepting on the PAM socket, whose
/// full backlog a host with `failmode=safe` takes for an outage.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let want = now
        .maximum
        .map_or(OPEN_FILES_WANTED, |max| max.min(OPEN_FILES_WANTED));
    if now.current.is_some_and(|cur| cur < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open files limit to {want}");
        }
    }
}

/// Warn about client settings an operator should know of (at start and after a reload).
fn warn_about_clients(cfg: &Config, store: &dyn portcullis_core::store::Store) {
    for w in crate::http::web::config_warnings(cfg) {
        tracing::warn!("{w}");
    }
    for c in &cfg.radius.clients {
        match store.tenant_by_name(&c.tenant) {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(client = %c.name, tenant = %c.tenant,
                "client names a tenant that does not exist yet: its logins are rejected until `portcullis tenant add {}`", c.tenant),
            Err(e) => {
                tracing::warn!(client = %c.name, error = %e, "cannot look the client's tenant up")
            }
        }
        if !c.require_message_authenticator {
            tracing::warn!(client = %c.name, "client does not require Message-Authenticator (BlastRADIUS exposure; use only for NAS software that cannot send it)");
        }
    }
    for w in placeholder_secrets(cfg) {
        tracing::warn!("{w}");
    }
}

pub use portcullis_core::config::is_placeholder_secret;

/// Clients whose shared secret is still an example's placeholder (`trial-secret-change-me`):
/// anyone who read the example knows it.
fn placeholder_secrets(cfg: &Config) -> Vec<String> {
    cfg.radius
        .clients
        .iter()
        .filter(|c| is_placeholder_secret(&c.secret))
        .map(|c| {
            format!(
                "client '{}' has a placeholder shared secret (an example's, or one that says change-me): set a long random one on both the NAS and here",
                c.name
            )
        })
        .collect()
}

/// `signals` were installed before the store was opened (see [`run`]): a SIGTERM that
/// arrives as soon as the daemon answers is a shutdown, never the default (abrupt) death.
async fn serve(
    o: crate::cli::Opened,
    signals: Signals,
    notifier: crate::notify::Notifier,
    config_path: PathBuf,
) -> Result<()> {
    let mut engine = o.build_engine(&tokio::runtime::Handle::current())?;
    // First-factor backends (LDAP, upstream RADIUS, delegated) per tenant and client; the
    // returned backends serve the PAM services' `first_factor` overrides.
    let _first_factors = crate::first_factor::install(&mut engine, &o.config)?;
    let engine = Arc::new(engine);
    warn_about_clients(&o.config, o.store.as_ref());
    // Before the first login: on SQLite the replay cache is read whole (about 0.2 s per
    // 300,000 codes used in the last 12 steps), which that login would wait for.
    let started = std::time::Instant::now();
    let store = o.store.clone();
    let warmed = tokio::task::spawn_blocking(move || store.warm())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match warmed {
        Ok(()) => tracing::debug!(elapsed = ?started.elapsed(), "store warmed"),
        // Not fatal: the first login reads it (and fails, if the store cannot be read).
        Err(error) => tracing::warn!(%error, "reading the TOTP replay cache ahead failed"),
    }
    for w in o.config.secret_file_warnings(&config_path) {
        tracing::warn!("{w}");
    }
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(RadiusContext::new(
        engine.clone(),
        &o.config,
        metrics.clone(),
    ));
    // Push decisions made on other nodes wake the requests held here at once (PostgreSQL).
    if let Some(events) = o.store.push_events() {
        let hub = ctx.push_hub.clone();
        tokio::spawn(async move { hub.follow(events).await });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // The HTTP listener stops last: a login held for a push during the drain is approved
    // through it (the phone's POST), and so is a PAM-over-HTTPS poll.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    use std::io::Write;
    // The HTTP line comes before the RADIUS ones: a supervisor that waits for
    // `radius: listening` then knows both addresses.
    // The HTTPS listener's certificate and key, which SIGHUP reads again.
    let mut tls_files = None;
    let http = match &o.config.http {
        Some(h) => {
            let listener = crate::http::bind(h).await?;
            tls_files = listener.tls_files();
            let bound = listener.local_addr()?;
            println!("http: listening on {bound}");
            if listener.is_tls() {
                tracing::info!(addr = %bound, "HTTPS listener ready ({HTTP_SERVES})");
            } else {
                tracing::info!(addr = %bound, "HTTP listener ready ({HTTP_SERVES})");
                if !bound.ip().is_loopback() {
                    tracing::warn!(addr = %bound, "the HTTP listener has no TLS: remote PAM hosts would send tokens and codes in clear; set http.tls_cert and http.tls_key (or terminate TLS in a proxy on this machine)");
                }
            }
            let state = crate::http::HttpState {
                radius: ctx.clone(),
                admin: crate::http::admin::context(o.admin(), &o.config),
                pam: Arc::new(crate::pam::http::PamHttp {
                    engine: engine.clone(),
                    settings: PamSettings::new(
                        &o.config.pam.clone().unwrap_or_default(),
                        ctx.push_hub.clone(),
                    )
                    .with_tenants(&o.config.tenants),
                    hosts: portcullis_core::hosts::Hosts::new(
                        o.store.clone(),
                        o.clock.clone(),
                        &o.key,
                    ),
                    stopping: stop_rx.clone(),
                }),
                trusted_proxies: h.trusted_proxies.clone().into(),
            };
            Some(tokio::spawn(crate::http::serve(
                listener,
                state,
                http_stop_rx,
            )))
        }
        None => None,
    };
    let mut loops = Vec::new();
    for addr in &o.config.radius.accounting_listen {
        let sock = bind(*addr, o.config.radius.socket_receive_buffer).with_context(|| {
            format!("cannot listen for RADIUS accounting on {addr} (radius.accounting_listen)")
        })?;
        let bound = sock.local_addr()?;
        println!("radius accounting: listening on {bound}");
        tracing::info!(addr = %bound, "RADIUS accounting listener ready (acknowledges, records nothing)");
        loops.push(tokio::spawn(crate::radius::accounting::serve_accounting(
            ctx.clone(),
            Arc::new(sock),
            stop_rx.clone(),
        )));
    }
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
    let pam = match &o.config.pam {
        Some(pam_cfg) => {
            let listener = crate::pam::server::bind(pam_cfg).with_context(|| {
                format!(
                    "cannot listen for PAM on {} (pam.socket)",
                    pam_cfg.socket.display()
                )
            })?;
            println!("pam: listening on {}", listener.path.display());
            tracing::info!(path = %listener.path.display(), allowed_uids = ?pam_cfg.allowed_uids,
                "PAM socket ready");
            let pam_ctx = Arc::new(
                PamContext::new(engine.clone(), pam_cfg, ctx.push_hub.clone())
                    .with_tenants(&o.config.tenants),
            );
            let task = tokio::spawn(crate::pam::server::serve(
                pam_ctx.clone(),
                listener,
                stop_rx.clone(),
            ));
            Some((pam_ctx, task))
        }
        None => None,
    };
    let _ = std::io::stdout().flush();
    // Every listener is bound: systemd (Type=notify) may start what waits for us, and may
    // send a reload now.
    notifier.send("READY=1\nSTATUS=serving");

    // Housekeeping: expire cached replies and stored transactions / replay entries.
    let housekeeping = {
        let ctx = ctx.clone();
        let store = o.store.clone();
        let clock = o.clock.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            // Every 5 s: a purge every minute deleted a busy minute's replay-cache rows at
            // once, and the logins of that moment waited for it (SQLite has one writer).
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                ctx.cache.sweep(std::time::Instant::now());
                let (store, now) = (store.clone(), clock.now());
                match tokio::task::spawn_blocking(move || store.purge_expired(now)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "purging expired state failed"),
                    Err(e) => tracing::warn!(error = %e, "purge task failed"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    };

    let reloads = Reloads {
        ctx: &ctx,
        running: &o.config,
        path: &config_path,
        store: o.store.as_ref(),
        clock: o.clock.as_ref(),
        tls: tls_files,
        notifier: &notifier,
    };
    wait_for_signal(signals, &reloads).await;
    notifier.send("STOPPING=1\nSTATUS=finishing logins in progress");
    if o.config.http.is_some() {
        tracing::info!("shutting down: no new logins; finishing logins in progress (the HTTP listener stays up for their push approvals and PAM steps)");
    } else {
        tracing::info!("shutting down: no new logins; finishing logins in progress");
    }
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let _ = housekeeping.await;
    // PAM and RADIUS logins in flight finish together (a push held on either is approved
    // through the HTTP listener, which still serves).
    let pam_drained = async {
        if let Some((pam_ctx, task)) = pam {
            let _ = task.await;
            if !pam_ctx.drain(DRAIN_DEADLINE).await {
                tracing::warn!("some PAM logins were still in progress at the shutdown deadline");
            }
        }
    };
    let radius_drained = async {
        if !ctx.drain(DRAIN_DEADLINE).await {
            tracing::warn!("some logins were still in progress at the shutdown deadline");
        }
    };
    tokio::join!(pam_drained, radius_drained);
    let _ = http_stop_tx.send(true);
    if let Some(h) = http {
        // Scrapes in progress may finish; a client holding a connection open may not delay
        // the shutdown for long.
        match tokio::time::timeout(Duration::from_secs(5), h).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP listener stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP task failed"),
            Err(_) => tracing::warn!("HTTP connections still open after 5 s; closing them"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    let drops: Vec<String> = metrics
        .drop_counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let drops = if drops.is_empty() {
        "none".to_string()
    } else {
        drops.join(" ")
    };
    tracing::info!(
        received = metrics.received.load(std::sync::atomic::Ordering::Relaxed),
        %drops,
        "stopped"
    );
    Ok(())
}

/// Serve signals until SIGTERM/SIGINT; SIGHUP reloads clients, secrets and reply attributes.
/// The signal streams the daemon serves.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())
            .map_err(|e| tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C"))
            .ok();
        let hup = signal(SignalKind::hangup())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot watch SIGHUP; config reload needs a restart")
            })
            .ok();
        Signals { term, hup }
    }
}

/// What a SIGHUP reloads: the RADIUS clients from the config file at `path` (compared with
/// the `running` start config) and the HTTPS listener's certificate and key.
struct Reloads<'a> {
    ctx: &'a RadiusContext,
    running: &'a Config,
    path: &'a Path,
    store: &'a dyn portcullis_core::store::Store,
    clock: &'a dyn portcullis_core::clock::Clock,
    tls: Option<crate::http::tls::TlsFiles>,
    notifier: &'a crate::notify::Notifier,
}

impl Reloads<'_> {
    /// The audit record of one reload (channel `config`, no tenant: it is the operator's):
    /// what it applied or why it applied nothing, by name, never a value (a config error's
    /// text may quote the file, so its reason is left to the log). A record that cannot be
    /// written is logged; the reload stands.
    fn audit(&self, applied: bool, reason: &str) {
        use portcullis_core::model::{AuditRecord, AuditResult};
        let record = AuditRecord {
            time: self.clock.now(),
            tenant: String::new(),
            username: String::new(),
            channel: "config".into(),
            client: "sighup".into(),
            source: "local".into(),
            mode: "config.reload".into(),
            factors: Vec::new(),
            result: if applied {
                AuditResult::Accept
            } else {
                AuditResult::Reject
            },
            reason: reason.to_string(),
            transaction: None,
            host: None,
        };
        if let Err(e) = self.store.append_audit(&record) {
            tracing::error!(error = %e, "cannot write the audit record of a configuration reload");
        }
    }
}

async fn wait_for_signal(signals: Signals, reloads: &Reloads<'_>) {
    let Signals { term, mut hup } = signals;
    let Some(mut term) = term else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                reload(reloads);
            }
        }
    }
}

/// What differs between `running` and `new` among the settings taken at start (the
/// Engine's: a RADIUS client's `first_factor` and the tenant it checks passwords for, the
/// tenants' factors, rules, providers and backends, the lockout, TOTP, password and
/// transaction settings; the PAM and HTTP settings; the secrets; the RADIUS and store
/// tuning): named for the log, never with their values. The listeners and the store's
/// URL are reported apart (a reload warns about them and applies the rest).
fn start_only_changes(running: &Config, new: &Config) -> Vec<String> {
    use portcullis_core::config::TenantConfig;
    let mut changed = Vec::new();
    for c in &new.radius.clients {
        let before = running.radius.clients.iter().find(|r| r.name == c.name);
        let first_factor = before.and_then(|r| r.first_factor);
        if first_factor != c.first_factor {
            changed.push(format!("radius.clients '{}' first_factor", c.name));
        } else if c.first_factor.is_some() && before.is_some_and(|r| r.tenant != c.tenant) {
            // The override was built for the old tenant's backend.
            changed.push(format!(
                "radius.clients '{}' tenant (the client has a first_factor)",
                c.name
            ));
        }
    }
    // A client removed by a reload (its first_factor with it) sends nothing any more: the
    // Engine's override for its name is never reached. Added again, it is compared with
    // the start's config above, which the Engine runs.
    // A tenant's reply attributes (tenant, group, factor_reply) are reloaded; a tenant
    // without a section is one with the defaults.
    let engine_part = |t: Option<&TenantConfig>| TenantConfig {
        reply: Vec::new(),
        factor_reply: Vec::new(),
        groups: Vec::new(),
        ..t.cloned().unwrap_or_default()
    };
    let names: std::collections::BTreeSet<&String> =
        running.tenants.keys().chain(new.tenants.keys()).collect();
    for name in names {
        if engine_part(running.tenants.get(name)) != engine_part(new.tenants.get(name)) {
            changed.push(format!("[tenants.{name}]"));
        }
    }
    let radius_tuning = |c: &Config| {
        (
            c.radius.response_cache_ttl,
            c.radius.max_in_flight,
            c.radius.socket_receive_buffer,
        )
    };
    let store_tuning = |c: &Config| {
        let s = &c.store;
        (
            s.max_connections,
            s.connect_timeout,
            s.statement_timeout,
            s.push_poll_interval,
        )
    };
    let http_rest = |c: &Config| {
        c.http.as_ref().map(|h| {
            (
                h.public_url.clone(),
                h.tls_cert.clone(),
                h.tls_key.clone(),
                h.trusted_proxies.clone(),
            )
        })
    };
    let sections = [
        ("[secrets]", running.secrets != new.secrets),
        ("[passwords]", running.passwords != new.passwords),
        ("[totp]", running.totp != new.totp),
        ("[lockout]", running.lockout != new.lockout),
        ("[transactions]", running.transactions != new.transactions),
        ("[pam]", running.pam != new.pam),
        ("issuer", running.issuer != new.issuer),
        (
            "[radius] response_cache_ttl, max_in_flight, socket_receive_buffer",
            radius_tuning(running) != radius_tuning(new),
        ),
        (
            "[store] (other than url)",
            store_tuning(running) != store_tuning(new),
        ),
    ];
    changed.extend(
        sections
            .iter()
            .filter(|(_, differ)| *differ)
            .map(|(n, _)| n.to_string()),
    );
    if running.http.is_some() != new.http.is_some() {
        changed.push("[http] (section added or removed)".into());
    } else if http_rest(running) != http_rest(new) {
        changed.push("[http] (other than listen)".into());
    }
    changed
}

/// The listeners and the store's URL that differ between `running` and `new`: a reload
/// keeps them as they run (and applies the rest); named for the log.
fn listener_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let http_listen = |c: &Config| c.http.as_ref().map(|h| h.listen);
    [
        ("radius.listen", running.radius.listen != new.radius.listen),
        (
            "radius.accounting_listen",
            running.radius.accounting_listen != new.radius.accounting_listen,
        ),
        ("store.url", running.store.url != new.store.url),
        (
            "http.listen",
            // A section added or removed is refused whole (see `start_only_changes`).
            running.http.is_some()
                && new.http.is_some()
                && http_listen(running) != http_listen(new),
        ),
    ]
    .into_iter()
    .filter(|(_, differ)| *differ)
    .map(|(key, _)| key)
    .collect()
}

/// SIGHUP: re-read the config; apply clients, secrets and reply attributes, or keep the old
/// ones when the new file is invalid or changes what only a restart applies.
fn reload(r: &Reloads<'_>) {
    use std::sync::atomic::Ordering::Relaxed;
    r.notifier.send(&crate::notify::reloading());
    // One SIGHUP is one reload: an error if any part of it (the certificate, the file)
    // was not applied.
    let applied = reload_files(r);
    let counter = if applied {
        &r.ctx.metrics.reloads_ok
    } else {
        &r.ctx.metrics.reloads_failed
    };
    counter.fetch_add(1, Relaxed);
    // `systemctl status` shows a reload that was not applied until the next one is.
    r.notifier.send(if applied {
        "READY=1\nSTATUS=serving"
    } else {
        "READY=1\nSTATUS=serving; the last reload was not applied in full (see the log)"
    });
}

/// The reload's parts; false if one of them was not applied.
fn reload_files(r: &Reloads<'_>) -> bool {
    let mut all_applied = true;
    // The audit records are written once the clients are applied: a store that is down
    // (each write waiting for its timeout) must not delay cutting a client off.
    let mut records: Vec<(bool, String)> = Vec::new();
    let Reloads {
        ctx,
        running,
        path,
        store,
        ..
    } = *r;
    // The certificate first, whatever the config file says: renewing it is the common
    // reason for a reload, and its files are its own.
    if let Some(tls) = &r.tls {
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.cert().display(),
                    "HTTPS certificate and key read again: served from the next connection on");
                records.push((
                    true,
                    format!("HTTPS certificate {} read again", tls.cert().display()),
                ));
            }
            Err(e) => {
                all_applied = false;
                tracing::error!(error = %format!("{e:#}"),
                    "HTTPS certificate reload failed; still serving the previous certificate");
                records.push((
                    false,
                    format!(
                        "HTTPS certificate {} not loaded (see the daemon's log); the previous one is served",
                        tls.cert().display()
                    ),
                ));
            }
        }
    }
    match Config::load(path) {
        Ok(cfg) if !start_only_changes(running, &cfg).is_empty() => {
            // Half a reload would mix the new clients with the Engine's old settings (a
            // client whose first_factor = "none" was removed would still skip the
            // password): nothing is applied.
            all_applied = false;
            let mut changed = start_only_changes(running, &cfg);
            changed.extend(
                listener_changes(running, &cfg)
                    .into_iter()
                    .map(String::from),
            );
            tracing::error!(
                changed = %changed.join(", "),
                "configuration reload failed: these settings change only with a restart, and nothing was applied (still using the previous configuration); restart portcullis to apply them"
            );
            records.push((
                false,
                format!(
                    "nothing applied: only a restart applies {}",
                    changed.join(", ")
                ),
            ));
        }
        Ok(cfg) => {
            // Applied first: a removed client's secret stops working now, not after the
            // warnings' store lookups (which wait on a database that is down).
            let clients = ctx.reload(&cfg);
            tracing::info!(
                clients = cfg.radius.clients.len(),
                "configuration reloaded: RADIUS clients ({clients}) and reply attributes"
            );
            records.push((
                true,
                format!("RADIUS clients ({clients}) and reply attributes"),
            ));
            let unapplied = listener_changes(running, &cfg);
            if !unapplied.is_empty() {
                tracing::warn!(
                    changed = %unapplied.join(", "),
                    "these settings change only with a restart and keep their running values until then (the rest of the reload was applied)"
                );
            }
            for (applied, reason) in records.drain(..) {
                r.audit(applied, &reason);
            }
            warn_about_clients(&cfg, store);
        }
        Err(e) => {
            all_applied = false;
            tracing::error!(error = %e, "configuration reload failed; still using the previous configuration");
            records.push((
                false,
                "the file does not load (see the daemon's log); the previous configuration stays"
                    .into(),
            ));
        }
    }
    for (applied, reason) in records {
        r.audit(applied, &reason);
    }
    all_applied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::from_toml_str(
            &format!(
                "[radius]\nlisten = [\"127.0.0.1:1812\"]\n{extra}\n\
                 [[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.0/8\"\nsecret = \"s\"\ntenant = \"acme\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_runtime_leaves_a_cpu_to_the_batch_thread_unless_told() {
        assert_eq!(runtime_workers(None, 1, true).unwrap(), 1);
        assert_eq!(runtime_workers(None, 2, true).unwrap(), 1);
        assert_eq!(runtime_workers(None, 8, true).unwrap(), 7);
        // PostgreSQL: no batch thread, a worker per CPU.
        assert_eq!(runtime_workers(None, 2, false).unwrap(), 2);
        assert_eq!(runtime_workers(Some("3"), 8, true).unwrap(), 3);
        for bad in ["", "0", "two", "-1"] {
            let e = runtime_workers(Some(bad), 8, true).unwrap_err().to_string();
            assert!(
                e.contains("TOKIO_WORKER_THREADS must be a positive integer"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_placeholder_secret_is_warned_about() {
        let mut c = cfg("");
        assert!(placeholder_secrets(&c).is_empty());
        c.radius.clients[0].secret = "trial-secret-CHANGE-ME".into();
        let w = placeholder_secrets(&c);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("client 'vpn' has a placeholder shared secret"),
            "{w:?}"
        );
        assert!(
            !w[0].contains("trial-secret"),
            "the secret is never logged: {w:?}"
        );
        // The examples' secrets that do not say change-me, as config check sees them.
        c.radius.clients[0].secret = "another-long-secret".into();
        assert_eq!(placeholder_secrets(&c).len(), 1);
    }

    #[test]
    fn a_client_with_a_first_factor_may_be_removed_but_not_changed() {
        use portcullis_core::config::FirstFactorKind;
        let mut running = cfg("");
        running.radius.clients[0].first_factor = Some(FirstFactorKind::None);
        // Removed (a NAS that was compromised): applied.
        let mut removed = cfg("");
        removed.radius.clients.clear();
        assert!(start_only_changes(&running, &removed).is_empty());
        // Back with another first factor, or none: only a restart applies it.
        let back = cfg("");
        assert_eq!(
            start_only_changes(&running, &back),
            vec!["radius.clients 'vpn' first_factor".to_string()]
        );
        let mut same = cfg("");
        same.radius.clients[0].first_factor = Some(FirstFactorKind::None);
        assert!(start_only_changes(&running, &same).is_empty());
    }

    #[test]
    fn an_http_section_added_or_removed_is_named_so() {
        let without = cfg("");
        let with = cfg("[http]\nlisten = \"127.0.0.1:8080\"\n");
        for (a, b) in [(&without, &with), (&with, &without)] {
            assert_eq!(
                start_only_changes(a, b),
                vec!["[http] (section added or removed)".to_string()]
            );
            assert!(listener_changes(a, b).is_empty());
        }
        let proxied =
            cfg("[http]\nlisten = \"127.0.0.1:8080\"\ntrusted_proxies = [\"10.0.0.1/32\"]\n");
        assert_eq!(
            start_only_changes(&with, &proxied),
            vec!["[http] (other than listen)".to_string()]
        );
    }

    #[test]
    fn a_reload_names_only_the_listeners_that_changed() {
        let running = cfg("");
        let moved = cfg("").clone();
        assert!(listener_changes(&running, &moved).is_empty());
        let mut moved = moved;
        moved.radius.listen = vec!["127.0.0.1:1645".parse().unwrap()];
        assert!(start_only_changes(&running, &moved).is_empty());
        assert_eq!(listener_changes(&running, &moved), vec!["radius.listen"]);
        moved.store.url = "sqlite:///elsewhere.db".into();
        assert_eq!(
            listener_changes(&running, &moved),
            vec!["radius.listen", "store.url"]
        );
        let with = cfg("[http]\nlisten = \"127.0.0.1:8080\"\n");
        let other = cfg("[http]\nlisten = \"127.0.0.1:8081\"\n");
        assert_eq!(listener_changes(&with, &other), vec!["http.listen"]);
        assert!(start_only_changes(&with, &other).is_empty());
    }
}
