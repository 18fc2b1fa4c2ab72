//! The RADIUS front end: UDP receive loops, client lookup, duplicate cache, bounded
//! in-flight work, and translation between packets and the Engine's steps.
//! Deciding is the Engine's job; this file only moves bytes and counts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis_core::config::Config;
use portcullis_core::config::LoginMode;
use portcullis_core::engine::{
    transaction_of, AnswerRequest, Batched, Channel, Done, Engine, EngineError, LoginBatcher,
    LoginRequest, MenuChoice, Step,
};
use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use super::cache::{Evicted, Lookup, ResponseCache};
pub use super::clients::Client;
use super::clients::ClientTable;
use super::metrics::{Answered, DropCause, Metrics};
use super::packet::{self, DropReason, Reply, ReplyCode, Request, RequestKind, MAX_PACKET_LEN};
use super::warnings::{self, DropWarning, Unverified};
use crate::push::PushHub;

/// What every request task shares.
pub struct RadiusContext {
    pub engine: Arc<Engine>,
    /// Clients, secrets and reply attributes; swapped whole by [`RadiusContext::reload`].
    clients: ArcSwap<ClientTable>,
    pub cache: ResponseCache,
    pub metrics: Arc<Metrics>,
    inflight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Session-Timeout sent with a challenge: how long the prompt may wait.
    challenge_timeout: u32,
    /// Requests waiting for a push decision, woken by the approval handler.
    pub push_hub: Arc<PushHub>,
    /// Decides code-only logins in batches (SQLite store; see [`LoginBatcher`]), and the
    /// runtime that its thread hands the rest of a request to.
    batcher: Option<(LoginBatcher, tokio::runtime::Handle)>,
    /// Requests from addresses that are no configured client, for a rate-limited warning.
    pub unknown_clients: DropWarning,
    /// Cached replies forgotten for the response cache's total bound, for a rate-limited
    /// warning (the per-source bound warns per client).
    pub cache_full: DropWarning,
}

impl RadiusContext {
    /// Build the context from the config.
    pub fn new(engine: Arc<Engine>, cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let max_in_flight = in_flight_slots(cfg.radius.max_in_flight);
        Self {
            batcher: start_batcher(&engine),
            engine,
            clients: ArcSwap::from_pointee(ClientTable::from_config(cfg, None)),
            cache: ResponseCache::new(cfg.radius.response_cache_ttl),
            metrics,
            inflight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            challenge_timeout: cfg.transactions.ttl.as_secs().min(u32::MAX as u64) as u32,
            push_hub: Arc::new(PushHub::new(cfg.store.push_poll_interval)),
            unknown_clients: DropWarning::default(),
            cache_full: DropWarning::default(),
        }
    }

    fn client_for(&self, ip: IpAddr) -> Option<Arc<Client>> {
        self.clients.load().client_for(ip)
    }

    /// The current clients and reply policy.
    pub fn clients(&self) -> Arc<ClientTable> {
        self.clients.load_full()
    }

    /// Take clients, secrets and reply attributes from a new (validated) config. Requests in
    /// flight finish with the client they started with.
    /// Applies `cfg`'s clients (and reply attributes); says which clients it added, removed
    /// and changed.
    pub fn reload(&self, cfg: &Config) -> super::clients::ClientChanges {
        let old = self.clients.load_full();
        let changes = old.changes(cfg);
        self.clients
            .store(Arc::new(ClientTable::from_config(cfg, Some(&old))));
        changes
    }

    /// What the batcher of code-only logins has done, if there is one (SQLite store).
    pub fn batch_counts(&self) -> Option<&portcullis_core::engine::BatchCounts> {
        self.batcher.as_ref().map(|(b, _)| b.counts())
    }

    /// Requests being processed now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.inflight.available_permits())
    }

    /// Admit a request: started logins (carrying a State we could have issued) may use
    /// every slot, new ones leave a tenth free for them.
    fn admit(&self, has_state: bool) -> Option<OwnedSemaphorePermit> {
        if !admits(
            self.inflight.available_permits(),
            self.max_in_flight,
            has_state,
        ) {
            return None;
        }
        self.inflight.clone().try_acquire_owned().ok()
    }

    /// Wait until every in-flight request has finished, or the deadline passes.
    pub async fn drain(&self, deadline: Duration) -> bool {
        // Every slot, never fewer: `in_flight_slots` keeps the count within a u32.
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        tokio::time::timeout(deadline, self.inflight.acquire_many(all))
            .await
            .is_ok()
    }
}

/// The batcher of code-only logins, if the store runs batches and a runtime is there to
/// take what the batcher hands back.
fn start_batcher(engine: &Arc<Engine>) -> Option<(LoginBatcher, tokio::runtime::Handle)> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    // A batch's outcomes reach the runtime in one task, which gives each its `Done` (which
    // answers its login there, or spawns a task for one that waits): one wake-up of a
    // runtime thread a batch.
    let to_runtime = runtime.clone();
    let hand_out = Box::new(move |outcomes: Vec<(Done, Batched)>| {
        to_runtime.spawn(async move {
            for (done, outcome) in outcomes {
                // Each login is answered here (see `on_datagram`): a panic in one reply
                // must not leave the rest of the batch, decided and committed, unanswered.
                let answered =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(outcome)));
                if answered.is_err() {
                    tracing::error!(
                        "answering a batched login panicked; its request gets no reply"
                    );
                }
            }
        });
    });
    match LoginBatcher::start_with(engine.clone(), hand_out) {
        Ok(batcher) => batcher.map(|b| (b, runtime)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the login batch thread; every login runs on its own");
            None
        }
    }
}

/// The in-flight slots for a configured `max_in_flight`: at most u32::MAX, the most that
/// [`RadiusContext::drain`] can wait for at once (a larger count was truncated there, and
/// past `Semaphore::MAX_PERMITS` it would panic at start).
fn in_flight_slots(configured: usize) -> usize {
    configured.min(u32::MAX as usize)
}

/// Whether a request may take one of `available` free slots: a new login only while more
/// than a tenth of `max_in_flight` is free; one carrying State (a started login) while any is.
fn admits(available: usize, max_in_flight: usize, has_state: bool) -> bool {
    available > 0 && (has_state || available > max_in_flight / 10)
}

/// Bind a listener with a large receive buffer.
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(recv_buffer) {
        tracing::warn!(%addr, error = %e, "could not enlarge the receive buffer");
    } else if let Ok(got) = sock.recv_buffer_size() {
        // Linux silently caps the size at net.core.rmem_max (about 208 KiB by default)
        // and reports twice what it keeps for data.
        if receive_buffer_capped(recv_buffer, got) {
            tracing::warn!(%addr, requested = recv_buffer, granted = got / 2,
                "the kernel capped the RADIUS receive buffer (net.core.rmem_max): a burst of requests may be dropped (RcvbufErrors); raise it with sysctl -w net.core.rmem_max=BYTES");
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Whether the kernel kept less than `requested` bytes of receive buffer, given what it
/// reports (`SO_RCVBUF` reads back twice the data size on Linux).
fn receive_buffer_capped(requested: usize, reported: usize) -> bool {
    reported / 2 < requested
}

/// Receive on `sock` until `shutdown` turns true.
pub async fn serve_socket(
    ctx: Arc<RadiusContext>,
    sock: Arc<UdpSocket>,
    listener: usize,
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
                // ICMP errors and the like surface here; they are not fatal.
                tracing::debug!(error = %e, "receive error");
                continue;
            }
        };
        ctx.metrics
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        on_datagram(&ctx, &sock, listener, src, &buf[..len]);
    }
}

/// A request the cache has seen: sends the cached reply again, or drops the duplicate of
/// one still in progress.
fn resend_or_drop(ctx: &RadiusContext, sock: &Arc<UdpSocket>, src: SocketAddr, seen: Lookup) {
    match seen {
        Lookup::New => {}
        Lookup::InProgress => drop_it(ctx, src, DropCause::Duplicate),
        Lookup::Answered(bytes) => {
            ctx.metrics
                .cached_replies
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sock = sock.clone();
            tokio::spawn(async move {
                let _ = sock.send_to(&bytes, src).await;
            });
        }
    }
}

fn drop_it(ctx: &RadiusContext, src: SocketAddr, why: DropCause) {
    ctx.metrics.count_drop(why);
    tracing::debug!(%src, reason = why.as_str(), "dropped request");
}

fn on_datagram(
    ctx: &Arc<RadiusContext>,
    sock: &Arc<UdpSocket>,
    listener: usize,
    src: SocketAddr,
    datagram: &[u8],
) {
    let header = match packet::check_structure(datagram) {
        Ok(h) => h,
        Err(r) => return drop_it(ctx, src, DropCause::Packet(r)),
    };
    let Some(client) = ctx.client_for(src.ip()) else {
        warnings::unknown_client(&ctx.unknown_clients, src);
        return drop_it(ctx, src, DropCause::UnknownClient);
    };
    let now = Instant::now();
    // Retransmissions are answered from the cache without verifying again: the cached
    // reply was made for a request that did verify, and resending it reveals nothing new.
    let seen = ctx
        .cache
        .lookup(listener, src, header.identifier, header.authenticator, now);
    if seen != Lookup::New {
        return resend_or_drop(ctx, sock, src, seen);
    }
    let request =
        match packet::decode_request(datagram, client.config.secret.as_bytes(), &client.policy) {
            Ok(r) => r,
            Err(r) => {
                if r == DropReason::BadMessageAuthenticator {
                    warnings::wrong_secret(
                        &client.warnings,
                        &client.config.name,
                        src,
                        Unverified::MessageAuthenticator,
                    );
                }
                return drop_it(ctx, src, DropCause::Packet(r));
            }
        };
    let ask = ask_of(&client, src, &request);
    // Only a request that verified takes its identifier's place in the cache: a forged
    // datagram with a NAS's address and an identifier in use must not push out the entry
    // of the real request (whose retransmission would then run the login again). And only
    // one that asks the Engine: an answer given here alone (Status-Server, no User-Name or
    // User-Password) changes nothing and encodes to the same bytes again, while an entry
    // for each would let anyone who can use a lenient client's address (no
    // Message-Authenticator needed) grow the cache by one entry a datagram.
    if ask.is_ok() {
        let seen = ctx
            .cache
            .begin(listener, src, header.identifier, header.authenticator, now);
        if seen != Lookup::New {
            return resend_or_drop(ctx, sock, src, seen);
        }
    }
    let started = request
        .state
        .as_deref()
        .is_some_and(portcullis_core::engine::is_transaction_reference);
    let Some(permit) = ctx.admit(started) else {
        ctx.cache
            .abandon(listener, src, header.identifier, header.authenticator);
        return drop_it(ctx, src, DropCause::Shed);
    };
    let pending = Pending {
        ctx: ctx.clone(),
        client,
        sock: sock.clone(),
        listener,
        src,
        request,
        permit,
        arrived: now,
    };
    let ask = match ask {
        Ok(ask) => ask,
        Err(reply) => {
            tokio::spawn(async move { pending.answer(reply).await });
            return;
        }
    };
    match (&ctx.batcher, ask) {
        (Some((batcher, runtime)), Ask::Start(login, follow))
            if ctx.engine.is_code_only(&login) =>
        {
            let runtime = runtime.clone();
            let done = Box::new(move |outcome: Batched| {
                // Decided and committed (a push wait is then held as usual), or handed
                // back to run on the blocking pool. Called on a runtime thread (see
                // `start_batcher`). A decision that waits for nothing is answered right
                // here, in the batch's hand-out task; the others from a task of their own.
                let outcome = match outcome {
                    Batched::Decided(step, log) if !matches!(step, Ok(Step::Wait { .. })) => {
                        drop(log);
                        let reply =
                            step_reply(&pending.ctx, &pending.client, pending.src, Ok(step));
                        return pending.answer_now(reply);
                    }
                    outcome => outcome,
                };
                runtime.spawn(async move {
                    let reply = match outcome {
                        Batched::Decided(step, log) => {
                            // The decision's log line: written here, off the batch thread.
                            drop(log);
                            pending.follow(follow, Ok(step)).await
                        }
                        Batched::Declined(login) => pending.run(Ask::Start(login, follow)).await,
                    };
                    pending.send(reply).await;
                });
            });
            batcher.submit(login, done);
        }
        (_, ask) => {
            tokio::spawn(async move {
                let reply = pending.run(ask).await;
                pending.send(reply).await;
            });
        }
    }
}

/// A request admitted for the Engine, until its reply is sent.
struct Pending {
    ctx: Arc<RadiusContext>,
    client: Arc<Client>,
    sock: Arc<UdpSocket>,
    listener: usize,
    src: SocketAddr,
    request: Request,
    /// Its in-flight slot, freed when the reply is ready.
    permit: OwnedSemaphorePermit,
    arrived: Instant,
}

/// What a request held for a push ends in.
enum Held {
    Reply(Reply),
    /// Its client was removed by a reload while it was held: nothing is sent (the NAS is
    /// no longer trusted, and its secret no longer ours); the login `txn` is ended.
    ClientRemoved {
        txn: String,
    },
}

impl Pending {
    /// Asks the Engine (on the blocking pool), follows a push wait, and makes the reply.
    async fn run(&self, ask: Ask) -> Held {
        let engine = self.ctx.engine.clone();
        let (step, follow) = match ask {
            Ask::Start(login, follow) => (
                tokio::task::spawn_blocking(move || engine.start(&login)).await,
                follow,
            ),
            Ask::Answer(answer, follow) => (
                tokio::task::spawn_blocking(move || engine.answer(&answer)).await,
                follow,
            ),
        };
        self.follow(follow, step).await
    }

    /// Holds a request whose step is a push wait until it is decided (see [`Follow`]),
    /// then makes the reply.
    async fn follow(&self, follow: Follow, mut step: StepResult) -> Held {
        let (ctx, src) = (&self.ctx, self.src);
        let cfg = &self.client.config;
        // `challenge` shows a new push's wait as a challenge ("approve (pick 42), then press
        // Enter") and holds the answer to it; the other modes cannot show a prompt and hold
        // at once. A hold is a parked future (no thread); retransmissions meanwhile hit the
        // in-progress cache entry and are dropped, so no second push is ever sent.
        // Held for the whole wait; a client may have `max_held` of them at once, so that one
        // busy NAS cannot take every in-flight slot. Past that, the wait is answered with
        // its challenge ("approve..., then press Enter"), as `challenge` mode does.
        let mut held = None;
        while let Ok(Ok(Step::Wait { txn, started, .. })) = &step {
            if cfg.mode == LoginMode::Challenge && *started {
                break;
            }
            let Some(id) = transaction_of(txn) else { break };
            if held.is_none() {
                held = self.client.counters.hold(cfg.max_held);
                if held.is_none() {
                    warnings::held_over_limit(&self.client.warnings, &cfg.name, cfg.max_held);
                    break;
                }
            }
            let decided = ctx.push_hub.wait(&ctx.engine, id, follow.deadline).await;
            // A reload removed the client meanwhile (a NAS cut off): its login is not
            // decided (an approval is not taken) and it gets no answer.
            if self.client_removed() {
                return Held::ClientRemoved {
                    txn: id.to_string(),
                };
            }
            if !decided && cfg.mode == LoginMode::Challenge {
                break;
            }
            // Decided, or out of time in a mode that cannot show a challenge: ask once
            // more; a push still pending then ends the login.
            let engine = ctx.engine.clone();
            let poll = AnswerRequest {
                tenant: cfg.tenant.clone(),
                channel: follow.channel.clone(),
                source: follow.source.clone(),
                username: follow.username.clone(),
                txn: txn.clone(),
                answer: Zeroizing::new(Vec::new()),
                prompt: cfg.prompt.clone(),
                source_limited: cfg.source_limit,
            };
            step = tokio::task::spawn_blocking(move || engine.answer(&poll)).await;
            if !decided {
                if let Ok(Ok(Step::Wait { .. })) = &step {
                    tracing::info!(%src, client = %cfg.name, user = %follow.username,
                        "push not answered within max_wait; rejected");
                    return Held::Reply(Reply::reject(Some(
                        "The push was not approved in time; start again.".into(),
                    )));
                }
            }
        }
        Held::Reply(step_reply(ctx, &self.client, src, step))
    }

    /// Whether the client this request came from is gone from the clients in use (a
    /// reload removed it; one of the same name elsewhere is another NAS).
    fn client_removed(&self) -> bool {
        let own = &self.client.config;
        !self
            .ctx
            .clients
            .load()
            .clients()
            .iter()
            .any(|c| c.config.name == own.name && c.config.address == own.address)
    }

    /// Sends what the request ended in.
    async fn send(self, held: Held) {
        match held {
            Held::Reply(reply) => self.answer(reply).await,
            Held::ClientRemoved { txn } => self.withhold(txn),
        }
    }

    /// No answer for a request whose client a reload removed while it was held: its
    /// retransmissions are dropped (the client is unknown now), its login ended, audited.
    fn withhold(self, txn: String) {
        let Pending {
            ctx,
            client,
            src,
            request,
            listener,
            permit,
            ..
        } = self;
        let user = request.user_name.clone().unwrap_or_default();
        tracing::warn!(%src, client = %client.config.name, %user,
            "the client was removed by a reload while its login was held for a push: no answer sent, the login ended");
        ctx.metrics.count_drops(DropCause::UnknownClient, 1);
        ctx.cache
            .abandon(listener, src, request.identifier, request.authenticator);
        drop(permit);
        reject_and_end(
            &ctx,
            &client,
            src,
            &request,
            "the RADIUS client was removed by a reload while the login was held for a push: no answer sent".into(),
            Some(txn),
        );
    }

    /// Records the reply (cache, metrics, counters), frees the slot, and sends it.
    async fn answer(self, reply: Reply) {
        if let Some((sock, bytes, src)) = self.seal(reply) {
            send_reply(sock, bytes, src).await;
        }
    }

    /// [`Pending::answer`] without waiting: sent at once if the socket takes it, else
    /// (its send buffer full) from a task that waits until it does. On a runtime thread.
    fn answer_now(self, reply: Reply) {
        let Some((sock, bytes, src)) = self.seal(reply) else {
            return;
        };
        match sock.try_send_to(&bytes, src) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::spawn(send_reply(sock, bytes, src));
            }
            Err(e) => tracing::debug!(%src, error = %e, "send failed"),
        }
    }

    /// Encodes the reply and records it (cache, metrics, counters) and frees the slot:
    /// what is left is to send the bytes (none if the reply could not be encoded).
    fn seal(self, reply: Reply) -> Option<(Arc<UdpSocket>, Arc<Vec<u8>>, SocketAddr)> {
        let Pending {
            ctx,
            client,
            sock,
            listener,
            src,
            request,
            permit,
            arrived,
        } = self;
        let secret = client.config.secret.as_bytes();
        let (reply, encoded) = match packet::encode_reply(&request, &reply, secret) {
            Err(e) if reply.code != ReplyCode::Reject => {
                // The login was decided (a code may be used up): dropping the reply would
                // leave the NAS retrying into a replay refusal. Refuse it plainly instead.
                let user = request.user_name.clone().unwrap_or_default();
                tracing::error!(%src, client = %client.config.name, %user, error = %e,
                    "the reply does not fit in one RADIUS packet; sending Access-Reject instead: \
                     shorten the reply attributes of this user's tenant, groups or client");
                // The Engine audited what it decided (a challenge is not audited until the
                // login ends); the audit also says what was sent. A replaced challenge's
                // login cannot be answered: it ends now.
                let txn = reply
                    .state
                    .as_deref()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(portcullis_core::engine::transaction_of)
                    .map(str::to_string);
                reject_and_end(
                    &ctx,
                    &client,
                    src,
                    &request,
                    format!(
                        "the {:?} did not fit in one RADIUS packet ({e}): Access-Reject sent instead",
                        reply.code
                    ),
                    txn,
                );
                let reject = Reply::reject(Some(portcullis_core::engine::GENERIC_FAILURE.into()));
                let encoded = packet::encode_reply(&request, &reject, secret);
                (reject, encoded)
            }
            encoded => (reply, encoded),
        };
        let bytes = match encoded {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::error!(%src, error = %e, "cannot encode reply; request dropped");
                ctx.cache
                    .abandon(listener, src, request.identifier, request.authenticator);
                return None;
            }
        };
        count_reply(&ctx.metrics, reply.code);
        match (request.kind, reply.code) {
            (RequestKind::StatusServer, _) => {
                ctx.metrics
                    .status_server
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                client.counters.count_status_server()
            }
            (_, ReplyCode::Accept) => client.counters.count_access(Answered::Accept),
            (_, ReplyCode::Reject) => client.counters.count_access(Answered::Reject),
            (_, ReplyCode::Challenge) => client.counters.count_access(Answered::Challenge),
        }
        // Cache before sending: a NAS that retransmits as soon as it has the reply (or lost
        // it) must find the answer, not an in-progress entry that drops the duplicate.
        let evicted = ctx.cache.finish(
            listener,
            src,
            request.identifier,
            request.authenticator,
            bytes.clone(),
            Instant::now(),
        );
        if evicted != Evicted::default() {
            count_evictions(&ctx, &client, src, evicted);
        }
        // Everything the reply stands for is recorded before it leaves: a client that
        // reads /metrics as soon as it has its answer sees this request counted, timed
        // and no longer in flight.
        ctx.metrics.latency.observe(arrived.elapsed());
        drop(permit);
        Some((sock, bytes, src))
    }
}

/// Sends a reply's bytes to `src`, waiting for room in the socket's send buffer.
async fn send_reply(sock: Arc<UdpSocket>, bytes: Arc<Vec<u8>>, src: SocketAddr) {
    if let Err(e) = sock.send_to(&bytes, src).await {
        tracing::debug!(%src, error = %e, "send failed");
    }
}

/// Audits `request` as refused for `reason` (something the front end decided, not the
/// Engine) and ends its login `txn`, on the blocking pool; failures are logged.
fn reject_and_end(
    ctx: &RadiusContext,
    client: &Client,
    src: SocketAddr,
    request: &Request,
    reason: String,
    txn: Option<String>,
) {
    let record = portcullis_core::model::AuditRecord {
        time: ctx.engine.now(),
        tenant: client.config.tenant.clone(),
        username: request.user_name.clone().unwrap_or_default(),
        channel: "radius".into(),
        client: client.config.name.clone(),
        source: request
            .calling_station_id
            .clone()
            .unwrap_or_else(|| src.ip().to_canonical().to_string()),
        mode: client.config.mode.as_str().into(),
        factors: Vec::new(),
        result: portcullis_core::model::AuditResult::Reject,
        reason,
        transaction: txn.clone(),
        host: None,
    };
    let store = ctx.engine.store().clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.append_audit(&record) {
            tracing::error!(error = %e, "could not write the audit record of a refused login");
        }
        if let Some(Err(e)) = txn.map(|t| store.delete_transaction(&t)) {
            tracing::error!(error = %e, "could not end a refused login");
        }
    });
}

/// Counts (and warns about, at most once a minute) cached replies forgotten for a bound of
/// the response cache, to make room for the reply to `client`'s request from `src`.
fn count_evictions(ctx: &RadiusContext, client: &Client, src: SocketAddr, evicted: Evicted) {
    let (per_source, total) = ctx.cache.limits();
    if evicted.source_limit > 0 {
        ctx.metrics.count_drops(
            DropCause::CacheSourceLimit,
            u64::try_from(evicted.source_limit).unwrap_or(u64::MAX),
        );
        warnings::cache_source_full(
            &client.warnings,
            &client.config.name,
            src,
            evicted.source_limit,
            per_source,
        );
    }
    if evicted.cache_limit > 0 {
        ctx.metrics.count_drops(
            DropCause::CacheLimit,
            u64::try_from(evicted.cache_limit).unwrap_or(u64::MAX),
        );
        warnings::cache_full(
            &ctx.cache_full,
            &client.config.name,
            evicted.cache_limit,
            total,
        );
    }
}

fn count_reply(m: &Metrics, code: ReplyCode) {
    use std::sync::atomic::Ordering::Relaxed;
    match code {
        ReplyCode::Accept => m.accepts.fetch_add(1, Relaxed),
        ReplyCode::Reject => m.rejects.fetch_add(1, Relaxed),
        ReplyCode::Challenge => m.challenges.fetch_add(1, Relaxed),
    };
}

/// A step from the Engine, run on the blocking pool or in a batch.
type StepResult = Result<Result<Step, EngineError>, tokio::task::JoinError>;

/// What a request asks the Engine.
enum Ask {
    Start(LoginRequest, Follow),
    Answer(AnswerRequest, Follow),
}

/// What a held push wait needs to ask the Engine again.
struct Follow {
    channel: Channel,
    source: String,
    username: String,
    /// A push wait is held until the phone answers, at most `max_wait` from arrival.
    deadline: tokio::time::Instant,
}

/// The Engine call a request makes, or the reply when it makes none.
fn ask_of(client: &Arc<Client>, src: SocketAddr, req: &Request) -> Result<Ask, Reply> {
    if req.kind == RequestKind::StatusServer {
        return Err(Reply::accept());
    }
    let Some(username) = req.user_name.clone() else {
        tracing::debug!(%src, client = %client.config.name, "Access-Request without User-Name");
        return Err(Reply::reject(None));
    };
    // The answer to a challenge may come without User-Password when the user just pressed
    // Enter (radclient and some NAS omit an empty one): an empty answer, which polls a push.
    let password: &[u8] = match (req.user_password.as_ref(), &req.state) {
        (Some(p), _) => p,
        (None, Some(_)) => &[],
        (None, None) => {
            warnings::no_user_password(&client.warnings, &client.config.name, src, &username);
            return Err(Reply::reject(None));
        }
    };
    let cfg = &client.config;
    // On a dual-stack listener an IPv4 NAS arrives as ::ffff:a.b.c.d: it is the IPv4
    // address for rules (`sources`), the source limit and the audit, as for `client_for`.
    let nas_address = src.ip().to_canonical().to_string();
    let follow = Follow {
        channel: Channel::Radius {
            client: cfg.name.clone(),
            nas_address: nas_address.clone(),
            nas_identifier: req.nas_identifier.clone(),
        },
        source: req.calling_station_id.clone().unwrap_or(nas_address),
        username,
        deadline: tokio::time::Instant::now() + cfg.max_wait,
    };
    let secret_input = Zeroizing::new(password.to_vec());
    Ok(match &req.state {
        Some(state) => Ask::Answer(
            AnswerRequest {
                tenant: cfg.tenant.clone(),
                channel: follow.channel.clone(),
                source: follow.source.clone(),
                username: follow.username.clone(),
                txn: String::from_utf8_lossy(state).into_owned(),
                answer: secret_input,
                prompt: cfg.prompt.clone(),
                source_limited: cfg.source_limit,
            },
            follow,
        ),
        None => Ask::Start(
            LoginRequest {
                tenant: cfg.tenant.clone(),
                channel: follow.channel.clone(),
                source: follow.source.clone(),
                mode: cfg.mode,
                username: follow.username.clone(),
                credential: secret_input,
                delimiter: cfg.delimiter.clone(),
                prompt: cfg.prompt.clone(),
                unenrolled: cfg.unenrolled,
                source_limited: cfg.source_limit,
            },
            follow,
        ),
    })
}

/// Turns the Engine's step into a reply.
fn step_reply(ctx: &RadiusContext, client: &Client, src: SocketAddr, step: StepResult) -> Reply {
    let cfg = &client.config;
    match step {
        Ok(Ok(Step::Accept {
            mut reply_attributes,
            groups,
            factors_used,
        })) => {
            let mut r = Reply::accept();
            let clients = ctx.clients.load();
            reply_attributes.extend(
                clients
                    .replies
                    .factor_attributes(&cfg.tenant, &factors_used),
            );
            r.attributes = clients
                .replies
                .attributes_for(&cfg.tenant, &client.reply, &groups, reply_attributes)
                .into_iter()
                .map(|a| packet::RawAttribute {
                    typ: a.typ,
                    value: a.value,
                })
                .collect();
            r
        }
        Ok(Ok(Step::Reject { user_message })) => Reply::reject(Some(user_message)),
        Ok(Ok(Step::Prompt {
            txn, text, choices, ..
        })) => {
            let heading = match (&cfg.menu_prompt, choices.is_empty()) {
                (Some(h), false) => h.as_str(),
                _ => text.as_str(),
            };
            let mut r = Reply::challenge(menu_text(heading, &choices), txn.into_bytes());
            r.session_timeout = Some(ctx.challenge_timeout);
            r
        }
        Ok(Ok(Step::Wait { txn, text, .. })) => {
            let mut r = Reply::challenge(text, txn.into_bytes());
            r.session_timeout = Some(ctx.challenge_timeout);
            r
        }
        Ok(Err(e)) => {
            // Fail closed: the store or the Engine failed, so nobody gets in.
            tracing::error!(%src, client = %cfg.name, error = %e, "login failed with an internal error; rejected");
            Reply::reject(Some(portcullis_core::engine::GENERIC_FAILURE.into()))
        }
        Err(e) => {
            tracing::error!(%src, error = %e, "login task failed; rejected");
            Reply::reject(Some(portcullis_core::engine::GENERIC_FAILURE.into()))
        }
    }
}

/// A prompt's text with its factor menu: `Heading 1) code from your app  2) push ...`.
fn menu_text(text: &str, choices: &[MenuChoice]) -> String {
    if choices.is_empty() {
        return text.to_string();
    }
    let items: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}) {}", i + 1, c.label))
        .collect();
    format!("{text} {}", items.join("  "))
}

#[cfg(test)]
mod tests {
    use super::{admits, in_flight_slots, receive_buffer_capped};

    #[test]
    fn a_receive_buffer_the_kernel_capped_is_noticed() {
        assert!(!receive_buffer_capped(4 << 20, 8 << 20));
        assert!(receive_buffer_capped(4 << 20, 425_984)); // net.core.rmem_max 208 KiB
                                                          // Linux reports twice the size it keeps: a small request is granted in full.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        sock.set_recv_buffer_size(32 * 1024).unwrap();
        let reported = sock.recv_buffer_size().unwrap();
        assert!(!receive_buffer_capped(32 * 1024, reported), "{reported}");
        // ...and the default 4 MiB is reported capped exactly when rmem_max is lower.
        sock.set_recv_buffer_size(4 << 20).unwrap();
        let reported = sock.recv_buffer_size().unwrap();
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(receive_buffer_capped(4 << 20, reported), max < 4 << 20);
    }

    #[test]
    fn in_flight_slots_stay_within_what_the_drain_can_wait_for() {
        assert_eq!(in_flight_slots(1024), 1024);
        assert_eq!(in_flight_slots(u32::MAX as usize), u32::MAX as usize);
        assert_eq!(in_flight_slots(1 << 32), u32::MAX as usize);
        assert_eq!(in_flight_slots(usize::MAX), u32::MAX as usize);
        // The drain's count is every slot, not a truncation of it.
        assert_eq!(u32::try_from(in_flight_slots(1 << 32)).ok(), Some(u32::MAX));
    }

    #[test]
    fn started_logins_may_use_the_reserve_new_ones_may_not() {
        // 100 slots: the last 10 are kept for requests carrying State.
        assert!(admits(11, 100, false));
        assert!(!admits(10, 100, false));
        assert!(admits(10, 100, true));
        assert!(admits(1, 100, true));
        assert!(!admits(0, 100, true));
        // Fewer than 10 slots: no reserve, but never past the cap.
        assert!(admits(1, 5, false));
        assert!(!admits(0, 5, false));
    }
}
