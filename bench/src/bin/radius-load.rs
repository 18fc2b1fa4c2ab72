//! `radius-load`: drive a RADIUS server with Access-Requests carrying TOTP codes, as many
//! NAS would, and report throughput, latency and losses.
//!
//! Every request has a random Request Authenticator, the User-Password hidden per RFC 2865
//! and a Message-Authenticator; every reply's Response Authenticator (and
//! Message-Authenticator, when present) is checked. Codes are computed at send time for
//! the current TOTP step, and no user is sent twice within a step (also across runs, with
//! `--ledger`): the server's replay protection stays on and sees only honest traffic.

use std::collections::VecDeque;
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
    /// The server's address (host:port).
    #[arg(long)]
    server: SocketAddr,
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
    sent: Instant,
    seq: u64,
}

/// What one socket does: its share of the users, sent and answered on that socket.
struct Lane {
    socket: UdpSocket,
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
        let mut deadlines: VecDeque<(u8, u64, Instant)> = VecDeque::new();
        let mut rng = rand::rngs::StdRng::from_entropy();
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
                let user = &self.users[self.picks[next]];
                next += 1;
                let step = totp::step_at(unix_now());
                let code = totp::code(&user.secret, step);
                let mut password = Vec::with_capacity(user.password.len() + 6);
                if let Mode::Append = self.mode {
                    password.extend_from_slice(user.password.as_bytes());
                }
                password.extend_from_slice(&code);
                let mut authenticator = [0u8; 16];
                rng.fill_bytes(&mut authenticator);
                let datagram =
                    packet::access_request(id, &authenticator, &self.secret, &user.name, &password)
                        .with_context(|| format!("building the request for {}", user.name))?;
                seq += 1;
                let sent = Instant::now();
                self.socket
                    .send(&datagram)
                    .await
                    .context("sending a request")?;
                out.sent += 1;
                slots[id as usize] = Some(Slot {
                    authenticator,
                    sent,
                    seq,
                });
                deadlines.push_back((id, seq, sent + self.timeout));
            }
            if next >= self.picks.len() && free.len() == 256 {
                break;
            }
            // Wait for a reply, the next deadline or the next scheduled send.
            let mut wake = deadlines
                .front()
                .map(|d| d.2)
                .unwrap_or_else(|| Instant::now() + self.timeout);
            if self.interval.is_some()
                && next < self.picks.len()
                && free.len() > 256 - max_in_flight
            {
                wake = wake.min(next_due);
            }
            tokio::select! {
                r = self.socket.recv(&mut buf) => {
                    let n = r.context("receiving a reply")?;
                    self.answer(&buf[..n], &mut slots, &mut free, &mut out);
                    // Take whatever else is already queued without going back to the runtime.
                    while let Ok(n) = self.socket.try_recv(&mut buf) {
                        self.answer(&buf[..n], &mut slots, &mut free, &mut out);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            while let Some(&(id, s, deadline)) = deadlines.front() {
                let live = slots[id as usize].is_some_and(|slot| slot.seq == s);
                if !live {
                    deadlines.pop_front();
                    continue;
                }
                if deadline > now {
                    break;
                }
                deadlines.pop_front();
                slots[id as usize] = None;
                free.push_back(id);
                out.timeouts += 1;
            }
        }
        Ok(out)
    }

    fn answer(
        &self,
        reply: &[u8],
        slots: &mut [Option<Slot>],
        free: &mut VecDeque<u8>,
        out: &mut Outcome,
    ) {
        let Some(id) = packet::reply_identifier(reply) else {
            out.bad_replies += 1;
            return;
        };
        let Some(slot) = slots[id as usize] else {
            // A reply after the timeout (already counted as lost), or to nothing we sent.
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
            let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0))
                .await
                .with_context(|| format!("binding a UDP socket on {}", args.bind))?;
            socket
                .connect(args.server)
                .await
                .with_context(|| format!("connecting to {}", args.server))?;
            lanes.push(socket);
        }
        let per_lane_in_flight = args.concurrency.div_ceil(sockets);
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(sockets as f64 / r));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(sockets);
        for (i, socket) in lanes.into_iter().enumerate() {
            let lane = Lane {
                socket,
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
    if args.kv {
        println!(
            "rps={rps:.1} p50_ms={p50} p99_ms={p99} max_ms={max} sent={} accepts={} rejects={} challenges={} timeouts={} bad={} late_replies={} no_ma={} late={} elapsed_s={:.3}",
            o.sent,
            o.accepts,
            o.rejects,
            o.challenges,
            o.timeouts,
            o.bad_replies,
            o.late_replies,
            o.replies_without_ma,
            o.late_sends,
            elapsed.as_secs_f64()
        );
        return;
    }
    let shape = match args.rate {
        Some(r) => format!("open loop at {r:.0}/s"),
        None => format!("closed loop, {} in flight", args.concurrency),
    };
    println!(
        "radius-load: {} requests to {} ({:?}), {shape}",
        args.requests, args.server, args.mode
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
}
