//! `radius-load`: drive a RADIUS server with Access-Requests carrying TOTP codes, as many
//! NAS would, and report throughput, latency and losses.
//!
//! Every request has a random Request Authenticator, the User-Password hidden per RFC 2865
//! and a Message-Authenticator; every reply's Response Authenticator (and
//! Message-Authenticator, when present) is checked. Codes are computed at send time for
//! the current TOTP step, and no user is sent twice within a step (also across runs, with
//! `--ledger`): the server's replay protection stays on and sees only honest traffic.
//!
//! Several `--server`s: the requests are spread over them in turn, as NASes listing
//! several servers would be; with `--failover-ms`, a request without a reply by then is
//! sent once more, unchanged but for a fresh Request Authenticator, to the next server (a
//! NAS failing over), and counts as lost only when that one does not answer either.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use portcullis_bench::packet::{self, Verdict};
use portcullis_bench::stats::{ms, quantile, rate, Outcome};
use portcullis_bench::totp;
use portcullis_bench::users::{self, Ledger, LoadUser};
use rand::{RngCore, SeedableRng};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// User-Password is the code alone.
    OtpOnly,
    /// User-Password is the password followed by the code.
    Append,
}

/// RADIUS load generator with TOTP codes.
#[derive(Debug, Parser)]
#[command(name = "radius-load")]
struct Args {
    /// A server's address (host:port); repeat for several servers (requests are spread
    /// over them in turn).
    #[arg(long, required = true)]
    server: Vec<SocketAddr>,
    /// With several servers: a request not answered within this many milliseconds is sent
    /// once more to the next server (a NAS failing over); `--timeout-ms` then counts from
    /// that resend. Without it a request goes to one server only.
    #[arg(long)]
    failover_ms: Option<u64>,
    /// The RADIUS shared secret.
    #[arg(long)]
    secret: String,
    /// Users file: one `name password base32-secret` per line (see bench-users).
    #[arg(long)]
    users: PathBuf,
    /// What goes into User-Password.
    #[arg(long, value_enum)]
    mode: Mode,
    /// How many requests to send (each to a different user).
    #[arg(short = 'n', long)]
    requests: usize,
    /// Requests in flight at most (closed loop: kept at this level).
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: send at this many requests per second, whatever the replies do.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to wait for a reply before counting a loss (milliseconds).
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Local address to send from (a server may tell clients apart by it: 127.0.0.2, ...).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// UDP sockets to spread the requests over (each holds at most 256 in flight).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Remember which users were used at which TOTP step, across runs.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// When too few users are free in this TOTP step, wait for the next step.
    #[arg(long)]
    wait_for_step: bool,
    /// Print one `key=value ...` line (for scripts) instead of the report.
    #[arg(long)]
    kv: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Open loop: a send this much after its time counts as late (the timer's granularity is
/// 1 ms, so smaller delays are the clock, not the generator falling behind).
const LATE: Duration = Duration::from_millis(5);

/// One request waiting for its reply.
#[derive(Clone, Copy)]
struct Slot {
    authenticator: [u8; 16],
    /// When it was first sent (latency is the NAS's: failover included).
    sent: Instant,
    seq: u64,
    /// The user and the code sent (a failover resends the same code).
    user: usize,
    code: [u8; 6],
    /// The server it was (last) sent to.
    server: usize,
    failed_over: bool,
}

/// What one socket does: its share of the users, sent and answered on that socket.
struct Lane {
    socket: UdpSocket,
    servers: Arc<Vec<SocketAddr>>,
    /// The server of this lane's first request (the next ones take turns from there).
    first_server: usize,
    failover: Option<Duration>,
    secret: Arc<Vec<u8>>,
    users: Arc<Vec<LoadUser>>,
    picks: Vec<usize>,
    mode: Mode,
    max_in_flight: usize,
    /// Open loop: time between sends on this lane, and when the first is due.
    interval: Option<Duration>,
    first_send: Instant,
    timeout: Duration,
}

impl Lane {
    async fn run(self) -> Result<Outcome> {
        let mut out = Outcome {
            latencies_us: Vec::with_capacity(self.picks.len()),
            ..Default::default()
        };
        let mut slots: Vec<Option<Slot>> = vec![None; 256];
        let mut free: VecDeque<u8> = (0..=255).collect();
        let mut deadlines: BinaryHeap<Reverse<(Instant, u64, u8)>> = BinaryHeap::new();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let failover = self.failover.filter(|_| self.servers.len() > 1);
        out.answered_by = vec![0; self.servers.len()];
        let mut next = 0usize;
        let mut seq = 0u64;
        let mut next_due = self.first_send;
        let mut buf = vec![0u8; 4096];
        let max_in_flight = self.max_in_flight.clamp(1, 256);
        loop {
            // Send what may be sent now.
            loop {
                if next >= self.picks.len() || free.is_empty() || 256 - free.len() >= max_in_flight
                {
                    break;
                }
                let now = Instant::now();
                if let Some(interval) = self.interval {
                    if now < next_due {
                        break;
                    }
                    if now.duration_since(next_due) > LATE {
                        out.late_sends += 1;
                    }
                    next_due += interval;
                }
                let Some(id) = free.pop_front() else { break };
                let user = self.picks[next];
                let server = (self.first_server + next) % self.servers.len();
                next += 1;
                let code = totp::code(&self.users[user].secret, totp::step_at(unix_now()));
                seq += 1;
                let mut slot = Slot {
                    authenticator: [0; 16],
                    sent: Instant::now(),
                    seq,
                    user,
                    code,
                    server,
                    failed_over: false,
                };
                self.send(id, &mut slot, &mut rng).await?;
                out.sent += 1;
                slots[id as usize] = Some(slot);
                deadlines.push(Reverse((
                    slot.sent + failover.unwrap_or(self.timeout),
                    seq,
                    id,
                )));
            }
            if next >= self.picks.len() && free.len() == 256 {
                break;
            }
            // Wait for a reply, the next deadline or the next scheduled send.
            let mut wake = deadlines
                .peek()
                .map(|d| d.0 .0)
                .unwrap_or_else(|| Instant::now() + self.timeout);
            if self.interval.is_some()
                && next < self.picks.len()
                && free.len() > 256 - max_in_flight
            {
                wake = wake.min(next_due);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let (n, from) = r.context("receiving a reply")?;
                    self.answer(&buf[..n], from, &mut slots, &mut free, &mut out);
                    // Take whatever else is already queued without going back to the runtime.
                    while let Ok((n, from)) = self.socket.try_recv_from(&mut buf) {
                        self.answer(&buf[..n], from, &mut slots, &mut free, &mut out);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            while let Some(&Reverse((deadline, s, id))) = deadlines.peek() {
                let live = slots[id as usize].filter(|slot| slot.seq == s);
                let Some(mut slot) = live else {
                    deadlines.pop();
                    continue;
                };
                if deadline > now {
                    break;
                }
                deadlines.pop();
                if failover.is_some() && !slot.failed_over {
                    // Fail over: the same request to the next server, a new deadline.
                    slot.failed_over = true;
                    slot.server = (slot.server + 1) % self.servers.len();
                    seq += 1;
                    slot.seq = seq;
                    self.send(id, &mut slot, &mut rng).await?;
                    out.failovers += 1;
                    slots[id as usize] = Some(slot);
                    deadlines.push(Reverse((now + self.timeout, seq, id)));
                    continue;
                }
                slots[id as usize] = None;
                free.push_back(id);
                out.timeouts += 1;
            }
        }
        Ok(out)
    }

    /// Send (or resend) a slot's request to its server, with a fresh Request Authenticator.
    async fn send(&self, id: u8, slot: &mut Slot, rng: &mut impl RngCore) -> Result<()> {
        let user = &self.users[slot.user];
        let mut password = Vec::with_capacity(user.password.len() + 6);
        if let Mode::Append = self.mode {
            password.extend_from_slice(user.password.as_bytes());
        }
        password.extend_from_slice(&slot.code);
        rng.fill_bytes(&mut slot.authenticator);
        let datagram =
            packet::access_request(id, &slot.authenticator, &self.secret, &user.name, &password)
                .with_context(|| format!("building the request for {}", user.name))?;
        let to = self.servers[slot.server];
        self.socket
            .send_to(&datagram, to)
            .await
            .with_context(|| format!("sending a request to {to}"))?;
        Ok(())
    }

    fn answer(
        &self,
        reply: &[u8],
        from: SocketAddr,
        slots: &mut [Option<Slot>],
        free: &mut VecDeque<u8>,
        out: &mut Outcome,
    ) {
        let Some(id) = packet::reply_identifier(reply) else {
            out.bad_replies += 1;
            return;
        };
        let Some(slot) = slots[id as usize].filter(|s| self.servers[s.server] == from) else {
            // A reply after the timeout (already counted as lost), from the server a request
            // failed over from, or to nothing we sent.
            out.late_replies += 1;
            return;
        };
        match packet::check_reply(reply, id, &slot.authenticator, &self.secret) {
            Ok((verdict, has_ma)) => {
                let us = slot.sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                out.latencies_us.push(us);
                match verdict {
                    Verdict::Accept => out.accepts += 1,
                    Verdict::Reject => out.rejects += 1,
                    Verdict::Challenge => out.challenges += 1,
                }
                if !has_ma {
                    out.replies_without_ma += 1;
                }
                out.answered_by[slot.server] += 1;
                if slot.failed_over {
                    out.failover_answers += 1;
                }
                slots[id as usize] = None;
                free.push_back(id);
            }
            Err(_) => out.bad_replies += 1,
        }
    }
}

fn pick_users(args: &Args, users: &[LoadUser]) -> Result<(Vec<usize>, Option<Ledger>)> {
    let ledger = match &args.ledger {
        Some(path) => Some(Ledger::load(path, users.len())?),
        None => None,
    };
    for attempt in 0..2 {
        let step = totp::step_at(unix_now());
        let free = match &ledger {
            Some(l) => l.free_at(step),
            None => (0..users.len()).collect(),
        };
        if args.requests <= free.len() {
            return Ok((free[..args.requests].to_vec(), ledger));
        }
        if !args.wait_for_step || attempt == 1 {
            bail!(
                "{} requests need {} users not yet used in this TOTP step, but only {} are free \
                 (each user is sent once per step: replay protection stays on); \
                 give more users, fewer requests, or --wait-for-step",
                args.requests,
                args.requests,
                free.len()
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let wait =
            Duration::from_secs((step + 1) * 30).saturating_sub(now) + Duration::from_millis(200);
        if !args.kv {
            eprintln!(
                "radius-load: too few users free in this TOTP step; waiting {:.1} s for the next",
                wait.as_secs_f64()
            );
        }
        std::thread::sleep(wait);
    }
    unreachable!("the loop returns or fails on its second pass")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    if args.sockets == 0 || args.concurrency == 0 {
        bail!("--sockets and --concurrency must be at least 1");
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    let users = Arc::new(users::read(&args.users)?);
    let (picks, mut ledger) = pick_users(&args, &users)?;
    let secret = Arc::new(args.secret.as_bytes().to_vec());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let sockets = args.sockets.min(args.requests);
    let (outcome, elapsed) = rt.block_on(async {
        let mut lanes = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            // Not connected: replies come from several servers (and a server that is down
            // makes no error on an unconnected socket, as with a NAS).
            let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0))
                .await
                .with_context(|| format!("binding a UDP socket on {}", args.bind))?;
            lanes.push(socket);
        }
        let per_lane_in_flight = args.concurrency.div_ceil(sockets);
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(sockets as f64 / r));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(sockets);
        let servers = Arc::new(args.server.clone());
        for (i, socket) in lanes.into_iter().enumerate() {
            let lane = Lane {
                socket,
                servers: servers.clone(),
                first_server: i % servers.len(),
                failover: args.failover_ms.map(Duration::from_millis),
                secret: secret.clone(),
                users: users.clone(),
                picks: picks.iter().skip(i).step_by(sockets).copied().collect(),
                mode: args.mode,
                max_in_flight: per_lane_in_flight,
                interval,
                // Open loop: the lanes take turns, so the sends are evenly spread.
                first_send: start
                    + interval
                        .map(|d| d * i as u32 / sockets as u32)
                        .unwrap_or_default(),
                timeout: Duration::from_millis(args.timeout_ms),
            };
            tasks.push(tokio::spawn(lane.run()));
        }
        let mut total = Outcome::default();
        for t in tasks {
            total.merge(t.await.context("a lane stopped")??);
        }
        Ok::<_, anyhow::Error>((total, start.elapsed()))
    })?;
    if let (Some(l), Some(path)) = (ledger.as_mut(), &args.ledger) {
        let step = totp::step_at(unix_now());
        for &i in &picks {
            l.last_step[i] = step;
        }
        l.save(path)?;
    }
    report(&args, outcome, elapsed);
    Ok(())
}

fn report(args: &Args, mut o: Outcome, elapsed: Duration) {
    o.latencies_us.sort_unstable();
    let answered = o.accepts + o.rejects + o.challenges;
    let rps = rate(answered, elapsed);
    let q = |p| {
        quantile(&o.latencies_us, p)
            .map(ms)
            .unwrap_or_else(|| "-".into())
    };
    let (p50, p99, max) = (q(0.5), q(0.99), q(1.0));
    let answered_by = o
        .answered_by
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if args.kv {
        println!(
            "rps={rps:.1} p50_ms={p50} p99_ms={p99} max_ms={max} sent={} accepts={} rejects={} challenges={} timeouts={} bad={} late_replies={} no_ma={} late={} failovers={} failover_answers={} answered_by={} elapsed_s={:.3}",
            o.sent,
            o.accepts,
            o.rejects,
            o.challenges,
            o.timeouts,
            o.bad_replies,
            o.late_replies,
            o.replies_without_ma,
            o.late_sends,
            o.failovers,
            o.failover_answers,
            answered_by,
            elapsed.as_secs_f64()
        );
        return;
    }
    let shape = match args.rate {
        Some(r) => format!("open loop at {r:.0}/s"),
        None => format!("closed loop, {} in flight", args.concurrency),
    };
    let servers = args
        .server
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    println!(
        "radius-load: {} requests to {servers} ({:?}), {shape}",
        args.requests, args.mode
    );
    println!(
        "  elapsed {:.3} s, {rps:.1} answered requests/s",
        elapsed.as_secs_f64()
    );
    println!("  latency ms: p50 {p50}  p99 {p99}  max {max}");
    println!(
        "  accepts {}  rejects {}  challenges {}  timeouts (losses) {}  bad replies {}  replies after the timeout {}  replies without Message-Authenticator {}  late sends {}",
        o.accepts,
        o.rejects,
        o.challenges,
        o.timeouts,
        o.bad_replies,
        o.late_replies,
        o.replies_without_ma,
        o.late_sends
    );
    if args.server.len() > 1 {
        println!(
            "  answered per server {answered_by}  failovers {}  answered after a failover {}",
            o.failovers, o.failover_answers
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const SECRET: &[u8] = b"failover-secret";

    /// A server on loopback that answers every request with an Access-Accept, or never
    /// (`silent`, a node that is down); counts the requests it received.
    async fn fake_server(silent: bool) -> (SocketAddr, Arc<AtomicU64>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                if silent || n < 20 {
                    continue;
                }
                let mut auth = [0u8; 16];
                auth.copy_from_slice(&buf[4..20]);
                let reply =
                    packet::server_reply(packet::ACCESS_ACCEPT, buf[1], &auth, SECRET, &[], true);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, seen)
    }

    async fn run_lane(servers: Vec<SocketAddr>, failover: Option<Duration>) -> Outcome {
        let users: Vec<LoadUser> = (0..10)
            .map(|i| LoadUser {
                name: format!("u{i}"),
                password: "pw".into(),
                secret: vec![i as u8; 20],
            })
            .collect();
        let lane = Lane {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            servers: Arc::new(servers),
            first_server: 0,
            failover,
            secret: Arc::new(SECRET.to_vec()),
            users: Arc::new(users),
            picks: (0..10).collect(),
            mode: Mode::Append,
            max_in_flight: 10,
            interval: None,
            first_send: Instant::now(),
            timeout: Duration::from_millis(300),
        };
        lane.run().await.unwrap()
    }

    #[tokio::test]
    async fn requests_alternate_and_fail_over_to_the_node_that_answers() {
        let (down, down_seen) = fake_server(true).await;
        let (up, up_seen) = fake_server(false).await;
        let out = run_lane(vec![down, up], Some(Duration::from_millis(50))).await;
        assert_eq!(out.sent, 10);
        assert_eq!(
            out.accepts, 10,
            "every request answered, half after a failover"
        );
        assert_eq!(out.timeouts, 0);
        assert_eq!(out.failovers, 5, "the five sent to the node that is down");
        assert_eq!(out.failover_answers, 5);
        assert_eq!(out.answered_by, vec![0, 10]);
        assert_eq!(down_seen.load(Ordering::SeqCst), 5);
        assert_eq!(up_seen.load(Ordering::SeqCst), 10);
        // Latency is the NAS's: from the first send, the failover wait included.
        assert!(out.latencies_us.iter().filter(|&&us| us >= 50_000).count() >= 5);
    }

    #[tokio::test]
    async fn without_failover_a_request_to_a_node_that_is_down_is_lost() {
        let (down, _) = fake_server(true).await;
        let (up, _) = fake_server(false).await;
        let out = run_lane(vec![down, up], None).await;
        assert_eq!((out.sent, out.accepts, out.timeouts), (10, 5, 5));
        assert_eq!((out.failovers, out.failover_answers), (0, 0));
        assert_eq!(out.answered_by, vec![0, 5]);
    }
}
