//! One login: render the daemon's steps as a conversation until it accepts or rejects.
//! Generic over the conversation, the transport and time so it is tested without PAM,
//! sockets or sleeping. The module decides nothing but what to do when the daemon cannot
//! be asked (failmode), and how long to wait for a daemon that restarts during a login.
//!
//! `failmode=safe` opens only when the connect itself failed ([`CallError::Unreachable`])
//! and someone has checked the first factor; every failure once a connection was made is
//! a refusal (see [`CallError`]). And it opens only when the daemon has told this host
//! that the tenant allows it (`pam_fail_mode = "safe"`, kept by the [`FailOpenLedger`]),
//! and only once the login's report is kept for the daemon, which gets it with the next
//! `start` and audits it.

use std::time::{Duration, Instant};

use portcullis_core::protocol::{
    Choice, ErrorCode, Expects, FailMode as TenantFailMode, FailOpenReport, FirstFactor, Origin,
    Request, RequestStep, Response, ResponseStep, Secret, VERSION,
};

use crate::args::{Args, FailMode, FirstFactorArg};

/// The user's side of the login.
pub trait Conversation {
    /// Ask and return the reply (`echo` = show what is typed).
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvFailed>;
    /// Tell the user something went wrong.
    fn error(&mut self, text: &str);
}

/// The application's conversation failed (the user hung up, no terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvFailed;

/// The daemon's side.
pub trait Transport {
    fn call(&mut self, req: &Request) -> Result<Response, CallError>;
}

/// Time, for waiting on a daemon that went away in the middle of a login, and the module's
/// `debug` log: the real clock, sleep and syslog in the module, fakes in the tests.
pub trait Pause {
    /// Now (monotonic).
    fn now(&self) -> Instant;
    /// Wait `d` before asking again.
    fn sleep(&mut self, d: Duration);
    /// A note for the module's `debug` log; never shown to the user, never a secret.
    fn note(&mut self, text: &str);
}

/// Whether the tenant lets this host fail open, as the daemon last told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `pam_fail_mode = "safe"`.
    Safe,
    /// `"secure"` (or not set).
    Secure,
    /// The daemon never told this host (or what it keeps cannot be read: the reason).
    Unknown(Option<String>),
}

/// What `failmode=safe` keeps on the host (see `failopen.rs`): the tenant's grant and the
/// reports of logins let in without a second factor, until the daemon has them. Used only
/// with `failmode=safe`.
pub trait FailOpenLedger {
    /// What the daemon said last about the tenant.
    fn grant(&mut self) -> Grant;
    /// The daemon's answer to a request sent at `asked_at` said this.
    fn remember(&mut self, mode: TenantFailMode, asked_at: std::time::SystemTime);
    /// Keep the report of a login let in now; an error: it was not kept.
    fn record(&mut self, origin: &Origin, why: &str) -> Result<(), String>;
    /// Reports to send with this login's `start` (claimed: no other login sends them).
    fn claim(&mut self) -> Vec<FailOpenReport>;
    /// The `start` was answered without an error frame (`delivered`), or not: the claimed
    /// reports are done with, or kept for the next login.
    fn settle(&mut self, delivered: bool);
    /// The daemon refused the `start` that carried the claimed reports as malformed (its
    /// `message`): they are kept, and the login goes on without them.
    fn refused(&mut self, message: &str) {
        let _ = message;
        self.settle(false);
    }
}

/// The ledger of `failmode=secure`: never grants, keeps nothing.
pub struct NoLedger;

impl FailOpenLedger for NoLedger {
    fn grant(&mut self) -> Grant {
        Grant::Secure
    }
    fn remember(&mut self, _mode: TenantFailMode, _asked_at: std::time::SystemTime) {}
    fn record(&mut self, _origin: &Origin, _why: &str) -> Result<(), String> {
        Err("failmode=secure keeps no reports".into())
    }
    fn claim(&mut self) -> Vec<FailOpenReport> {
        Vec::new()
    }
    fn settle(&mut self, _delivered: bool) {}
}

/// Why a step got no response.
///
/// `failmode=safe` lets a login in only on [`CallError::Unreachable`]: the connect itself
/// failed, which is the kernel's (or the resolver's) word that no daemon is there. Once a
/// connection was made, something is listening, and whatever happens next (the peer
/// closes or resets it, the TLS handshake breaks off, no answer comes in time, the answer
/// is cut short) is [`CallError::NotDelivered`] or [`CallError::NoAnswer`]: refused in
/// every failmode. Otherwise anyone who can make a connected exchange fail (a user who
/// stops their own sudo for longer than `timeout=`, a peer that fills the daemon's
/// connection limits, an on-path attacker with a RST) could skip the second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The daemon could not be asked because the connect failed: no socket file in the
    /// socket's directory, nobody listening on it (ECONNREFUSED), a full backlog (EAGAIN);
    /// over `url=` a resolver that fails for now, connection refused, no route, a connect
    /// that timed out. The request was not sent (and so is safe to send again). This
    /// alone is an outage: later in a login the module first waits for the daemon to come
    /// back (see [`retry_budget`]); then `failmode` decides.
    Unreachable(String),
    /// A connection was made, and the request was not delivered: the peer closed or reset
    /// it before it took the request (a daemon stopping with the connection in its
    /// backlog, one past its connection limits, a TLS handshake cut off), or the request
    /// could not be written in time. Safe to send again (later in a login the module waits
    /// for a restarting daemon as for `Unreachable`), but no outage: something is
    /// listening there, so this is refused whatever `failmode` says.
    NotDelivered(String),
    /// The request was sent, and no answer came in time (or the connection closed first,
    /// or in the middle of the answer). The daemon may have acted on the request (a code
    /// used, a push sent), so it is never sent again, and it is refused whatever
    /// `failmode` says, on the first request of a login too: a daemon that took the
    /// request is there, and anyone who could slow it down (or stop the PAM application
    /// past `timeout=`, or leave a push unanswered) would otherwise get past the second
    /// factor.
    NoAnswer(String),
    /// The daemon could not be asked because of this host's setup, not an outage: the
    /// socket path is not a socket, the module may not open it (EACCES, EPERM), the path
    /// cannot be a socket address. Failing open on it would turn a typo or a wrong file
    /// mode into a login without a second factor, so this always denies (PAM_SERVICE_ERR).
    Setup(String),
    /// It answered, but not in this protocol (another version, garbage, too large): a
    /// daemon that is there but broken is no reason to fail open, so this always denies.
    Protocol(String),
    /// The TLS connection to the daemon (`url=`) could not be set up: its certificate does
    /// not verify against `ca_file=` (or the system's trust store) or does not name the
    /// host, or the peer does not speak TLS. The daemon has not seen the request, and
    /// nothing it said is in this: told apart from [`CallError::Protocol`] so that the log
    /// does not say the daemon answered. A wrong CA or an interception is no outage, so
    /// this always denies (PAM_SERVICE_ERR).
    Tls(String),
}

/// What the PAM entry point returns and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// PAM_SUCCESS; `factor` goes to PORTCULLIS_FACTOR.
    Allow {
        factor: String,
        /// Set when failmode=safe let the user in: logged at the alert level.
        fail_open: Option<String>,
    },
    /// PAM_AUTH_ERR: the daemon refused (message already shown).
    Reject,
    /// PAM_AUTHINFO_UNAVAIL: the daemon could not be asked or did not answer, and
    /// `failmode=safe` did not let the user in (`why` says what the log says about it).
    Unavailable { detail: String, why: Unavailable },
    /// PAM_SERVICE_ERR / PAM_AUTH_ERR: the daemon answered with an error frame.
    DaemonError(ErrorCode, String),
    /// PAM_SERVICE_ERR: the daemon could not be asked because of the host's setup
    /// (see [`CallError::Setup`]); never failmode=safe.
    Setup(String),
    /// PAM_SERVICE_ERR: the TLS connection to the daemon failed (see [`CallError::Tls`]);
    /// never failmode=safe.
    Tls(String),
    /// PAM_CONV_ERR: the user's side failed.
    Conversation,
}

/// Why a login that the daemon did not decide was refused rather than let in: what
/// `failmode=` did, in the words of the module's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The daemon could not be asked (the connect failed), and `failmode=secure`.
    FailmodeSecure,
    /// The daemon could not be asked or did not answer, `failmode=safe`, but no one has
    /// checked the password yet (`first_factor=portcullis`): failmode=safe never lets an
    /// unchecked password in.
    PasswordNotChecked,
    /// The daemon took a request and did not answer (see [`CallError::NoAnswer`]):
    /// refused whatever `failmode=` says.
    Stalled,
    /// A connection was made and then closed or reset before the request was delivered
    /// (see [`CallError::NotDelivered`]): something listens there, so this is no outage,
    /// refused whatever `failmode=` says.
    NotDelivered,
    /// The connect failed, `failmode=safe`, and the daemon's last word was that the tenant
    /// does not allow failing open (`pam_fail_mode` is not `"safe"`).
    TenantSecure,
    /// The connect failed, `failmode=safe`, and this host has not heard from the daemon
    /// that the tenant allows failing open (it learns at a login that reaches the daemon).
    NotGranted,
    /// The connect failed, `failmode=safe`, the tenant allows it, and the login's report
    /// could not be kept for the daemon's audit: a fail-open that cannot be audited is not
    /// done.
    NotAudited,
}

/// How many steps one login may take before the module gives up (a loop guard).
const MAX_STEPS: usize = 32;

/// The first pause before asking an unreachable daemon again; it doubles after each
/// attempt up to [`MAX_RETRY_PAUSE`]: a daemon that is back after 0.2 s costs the user
/// 0.3 s, while one that takes seconds is not asked twenty times a second.
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How long a step after the first one waits for a daemon that cannot be reached
/// ([`CallError::Unreachable`]: no socket file, connection refused, connect timed out) or
/// that closed the connection before it took the request ([`CallError::NotDelivered`])
/// before the login is decided: `restart_wait=` (default 30 s). Then `failmode` decides
/// on a daemon still unreachable; a connection still closed under the request is refused.
///
/// The budget is counted in what the attempts and the pauses between them took, each no
/// more than it could take while the process runs (a pause its planned length, an
/// attempt its `timeout=`): a process stopped in the middle (Ctrl-Z) does not spend it,
/// and the decision rests on attempts that were really made.
///
/// The daemon answered this login a moment ago, so a daemon that is gone now is most
/// likely restarting (a package upgrade, `systemctl restart`): its socket goes at once
/// at SIGTERM, the old process then lets logins in flight finish (up to 10 s) and stops
/// its HTTP listener (up to 5 s), and only then does the new one start, so the default is
/// longer than all of that. The first request of a
/// login is not retried: until the daemon has answered, the module cannot tell a restart
/// from a daemon that is stopped or not yet started, which is what failmode is for, and
/// waiting there would hold every login for the whole budget during a real outage.
pub fn retry_budget(args: &Args) -> Duration {
    args.restart_wait
}

/// What an attempt may take beyond `timeout=` (one exchange) and still count in full
/// toward `restart_wait=`: a connect that starts after the deadline still gets its
/// minimum (see the transports).
const ATTEMPT_SLACK: Duration = Duration::from_secs(1);

/// Shown when the daemon cannot be asked and failmode is secure.
pub const UNAVAILABLE_MESSAGE: &str =
    "The second-factor service is not reachable, so this login is refused. Try again later or tell your administrator.";
/// Shown when the login ended without a decision from the daemon.
pub const DAEMON_ERROR_MESSAGE: &str =
    "The second-factor service could not handle this login. Tell your administrator.";
/// Default text of a push wait.
pub const WAIT_PROMPT: &str = "Approve the request on your phone, then press Enter";

/// Run one login. `ledger` is used with `failmode=safe` only.
pub fn run(
    args: &Args,
    origin: &Origin,
    password: Option<Secret>,
    conv: &mut dyn Conversation,
    transport: &mut dyn Transport,
    pause: &mut dyn Pause,
    ledger: &mut dyn FailOpenLedger,
) -> Decision {
    let safe = args.failmode == FailMode::Safe;
    let first_factor = match args.first_factor {
        FirstFactorArg::Portcullis => FirstFactor::Portcullis,
        FirstFactorArg::Stack | FirstFactorArg::None => FirstFactor::Delegated,
    };
    // Whether a first factor has been verified by someone: the stack (or sshd) for
    // stack/none, the daemon for portcullis once it asks for the second factor.
    let mut first_factor_verified = first_factor == FirstFactor::Delegated;
    // Logins let in while the daemon was down, reported with this one's start (on either
    // transport: both send the request as it is).
    let fail_opens = if safe { ledger.claim() } else { Vec::new() };
    let mut step = RequestStep::Start {
        first_factor,
        password,
        unenrolled: args.unenrolled,
        fail_opens,
    };
    for _ in 0..MAX_STEPS {
        let first_request = matches!(step, RequestStep::Start { .. });
        // When this request went out: its answer's fail_mode is newer than anything heard
        // before (see `FailOpenLedger::remember`).
        let asked_at = std::time::SystemTime::now();
        let req = Request {
            v: VERSION,
            origin: origin.clone(),
            step,
        };
        let mut called = if first_request {
            transport.call(&req)
        } else {
            call_waiting(
                transport,
                &req,
                retry_budget(args),
                req.answer_within(args.timeout) + ATTEMPT_SLACK,
                pause,
            )
        };
        // A daemon that cannot read the reports (an older build: a field it does not know)
        // refuses their start as malformed, having decided nothing: the start goes again
        // without them, and they are kept for a daemon that takes them.
        let mut settled = false;
        if let Some(message) = reports_refused(&called, &req) {
            ledger.refused(&message);
            settled = true;
            called = transport.call(&without_reports(req));
        }
        if safe {
            if first_request && !settled {
                // The claimed reports are the daemon's once it answered without an error
                // frame; otherwise they are kept for the next login.
                let delivered =
                    matches!(&called, Ok(r) if !matches!(r.step, ResponseStep::Error { .. }));
                ledger.settle(delivered);
            }
            if let Ok(Response {
                fail_mode: Some(mode),
                ..
            }) = &called
            {
                ledger.remember(*mode, asked_at);
            }
        }
        let response = match called {
            Ok(r) => r,
            // The connect failed: the only outage failmode= decides on.
            Err(CallError::Unreachable(detail)) => {
                return unreachable(args, origin, conv, ledger, detail, first_factor_verified);
            }
            // A connection was made: something is there; never failmode=safe.
            Err(CallError::NotDelivered(detail)) => {
                return connected(
                    args,
                    conv,
                    detail,
                    first_factor_verified,
                    Unavailable::NotDelivered,
                );
            }
            Err(CallError::NoAnswer(detail)) => {
                return connected(
                    args,
                    conv,
                    detail,
                    first_factor_verified,
                    Unavailable::Stalled,
                );
            }
            Err(CallError::Protocol(detail)) => {
                conv.error(DAEMON_ERROR_MESSAGE);
                return Decision::DaemonError(ErrorCode::Malformed, detail);
            }
            Err(CallError::Tls(detail)) => {
                conv.error(DAEMON_ERROR_MESSAGE);
                return Decision::Tls(detail);
            }
            Err(CallError::Setup(detail)) => {
                conv.error(DAEMON_ERROR_MESSAGE);
                return Decision::Setup(detail);
            }
        };
        step = match response.step {
            ResponseStep::Accept { factors } => {
                return Decision::Allow {
                    factor: second_factors(&factors),
                    fail_open: None,
                }
            }
            ResponseStep::Reject { message } => {
                conv.error(&message);
                return Decision::Reject;
            }
            ResponseStep::Error { code, message } => {
                conv.error(DAEMON_ERROR_MESSAGE);
                return Decision::DaemonError(code, message);
            }
            ResponseStep::Prompt {
                txn,
                text,
                echo,
                expects,
                choices,
            } => {
                first_factor_verified = true;
                let answer = match expects {
                    Expects::Choice => choose(conv, &text, &choices),
                    Expects::Password => conv.prompt(&text, false),
                    Expects::Code => conv.prompt(&text, echo),
                };
                match answer {
                    Ok(answer) => RequestStep::Answer { txn, answer },
                    Err(ConvFailed) => return Decision::Conversation,
                }
            }
            ResponseStep::Wait { txn, text } => {
                first_factor_verified = true;
                let text = if text.trim().is_empty() {
                    WAIT_PROMPT
                } else {
                    text.as_str()
                };
                // A prompt, not an info message: sshd shows info only after authentication.
                // Echo off: the prompt offers to type a code instead (a bypass or recovery
                // code is good for more than one login and must not stay on the screen).
                match conv.prompt(text, false) {
                    // The daemon takes a code typed while the push is pending.
                    Ok(typed) if !typed.expose().trim().is_empty() => {
                        RequestStep::Answer { txn, answer: typed }
                    }
                    // Enter alone: ask for the phone's decision.
                    Ok(_) => RequestStep::Poll { txn },
                    Err(ConvFailed) => return Decision::Conversation,
                }
            }
        };
    }
    conv.error(DAEMON_ERROR_MESSAGE);
    Decision::DaemonError(
        ErrorCode::Malformed,
        format!("the login did not end within {MAX_STEPS} steps"),
    )
}

/// The daemon's message when it refused `req`, a `start` with fail-open reports, as
/// malformed.
fn reports_refused(called: &Result<Response, CallError>, req: &Request) -> Option<String> {
    let RequestStep::Start { fail_opens, .. } = &req.step else {
        return None;
    };
    match called {
        Ok(Response {
            step:
                ResponseStep::Error {
                    code: ErrorCode::Malformed,
                    message,
                },
            ..
        }) if !fail_opens.is_empty() => Some(message.clone()),
        _ => None,
    }
}

/// `req` (a `start`) without its fail-open reports.
fn without_reports(req: Request) -> Request {
    let Request { v, origin, step } = req;
    let step = match step {
        RequestStep::Start {
            first_factor,
            password,
            unenrolled,
            ..
        } => RequestStep::Start {
            first_factor,
            password,
            unenrolled,
            fail_opens: Vec::new(),
        },
        other => other,
    };
    Request { v, origin, step }
}

/// Send `req`; while the daemon cannot be reached or closes the connection before it takes
/// the request (the request was not delivered), send it again after a pause (100 ms
/// doubling to 1 s) until it is or `budget` is spent. Only [`CallError::Unreachable`] and
/// [`CallError::NotDelivered`] are retried: a request that may have reached the daemon
/// (`NoAnswer`) is never sent twice, and a setup or protocol error does not go away by
/// waiting. The user is told nothing meanwhile; the `debug` log says that the module
/// waited, and the final error says for how long.
///
/// The budget is counted, not read off the clock: each pause counts as planned and each
/// attempt at most `attempt_cap` (what one exchange may take), so a process stopped for
/// longer than `budget` (a user's Ctrl-Z) goes on asking when it resumes, and the last
/// error, which decides the login, comes from an attempt made after the stop.
fn call_waiting(
    transport: &mut dyn Transport,
    req: &Request,
    budget: Duration,
    attempt_cap: Duration,
    pause: &mut dyn Pause,
) -> Result<Response, CallError> {
    let mut spent = Duration::ZERO;
    let mut next_pause = FIRST_RETRY_PAUSE;
    let mut attempts = 1u32;
    let mut attempt = |spent: &mut Duration, pause: &mut dyn Pause| {
        let began = pause.now();
        let result = transport.call(req);
        *spent += pause
            .now()
            .saturating_duration_since(began)
            .min(attempt_cap);
        result
    };
    let mut result = attempt(&mut spent, pause);
    loop {
        let detail = match &result {
            Err(CallError::Unreachable(detail) | CallError::NotDelivered(detail)) => detail.clone(),
            other => {
                if attempts > 1 {
                    let outcome = match other {
                        Ok(_) => "it answered, the login goes on".to_string(),
                        Err(e) => format!("then: {e:?}"),
                    };
                    pause.note(&format!(
                        "waited {:.1} s for portcullis to come back ({attempts} attempts); {outcome}",
                        spent.as_secs_f32()
                    ));
                }
                return result;
            }
        };
        let left = budget.saturating_sub(spent);
        if left.is_zero() {
            if attempts > 1 {
                pause.note(&format!(
                    "portcullis did not come back within {} s ({attempts} attempts): {detail}",
                    budget.as_secs_f32()
                ));
                let waited = format!(
                    "{detail} (waited {:.1} s for it to come back)",
                    spent.as_secs_f32()
                );
                return Err(match result {
                    Err(CallError::NotDelivered(_)) => CallError::NotDelivered(waited),
                    _ => CallError::Unreachable(waited),
                });
            }
            return result;
        }
        if attempts == 1 {
            pause.note(&format!(
                "portcullis is unreachable in the middle of a login ({detail}); waiting up to {} s for it to come back (a restart?)",
                budget.as_secs_f32()
            ));
        }
        let step = next_pause.min(left);
        pause.sleep(step);
        spent += step;
        next_pause = (next_pause * 2).min(MAX_RETRY_PAUSE);
        attempts += 1;
        result = attempt(&mut spent, pause);
    }
}

/// The connect failed ([`CallError::Unreachable`]): an outage, for `failmode=` to decide.
/// `safe` lets the user in once someone checked the first factor, if the tenant allows it
/// (the daemon's last word, kept by `ledger`) and the login's report could be kept for the
/// daemon's audit.
fn unreachable(
    args: &Args,
    origin: &Origin,
    conv: &mut dyn Conversation,
    ledger: &mut dyn FailOpenLedger,
    mut detail: String,
    first_factor_verified: bool,
) -> Decision {
    let why = match (args.failmode, first_factor_verified) {
        (FailMode::Secure, _) => Unavailable::FailmodeSecure,
        (FailMode::Safe, false) => Unavailable::PasswordNotChecked,
        (FailMode::Safe, true) => match ledger.grant() {
            Grant::Safe => match ledger.record(origin, &detail) {
                Ok(()) => {
                    return Decision::Allow {
                        factor: "none".into(),
                        fail_open: Some(detail),
                    }
                }
                Err(e) => {
                    detail = format!("{detail}; the fail-open report cannot be kept: {e}");
                    Unavailable::NotAudited
                }
            },
            Grant::Secure => Unavailable::TenantSecure,
            Grant::Unknown(None) => Unavailable::NotGranted,
            Grant::Unknown(Some(e)) => {
                detail = format!("{detail}; {e}");
                Unavailable::NotGranted
            }
        },
    };
    conv.error(UNAVAILABLE_MESSAGE);
    Decision::Unavailable { detail, why }
}

/// A connection was made and the exchange failed after it ([`CallError::NotDelivered`],
/// [`CallError::NoAnswer`]): no outage, refused whatever `failmode=` says (`why` names
/// the reason for the log; a password nobody checked yet is the reason it gives under
/// `failmode=safe` when that holds too).
fn connected(
    args: &Args,
    conv: &mut dyn Conversation,
    detail: String,
    first_factor_verified: bool,
    why: Unavailable,
) -> Decision {
    conv.error(UNAVAILABLE_MESSAGE);
    let why = if args.failmode == FailMode::Safe && !first_factor_verified {
        Unavailable::PasswordNotChecked
    } else {
        why
    };
    Decision::Unavailable { detail, why }
}

/// The factors beyond the first one (`totp`), or `none` (unenrolled users let in).
fn second_factors(factors: &[String]) -> String {
    let rest: Vec<&str> = factors
        .iter()
        .map(String::as_str)
        .filter(|f| !matches!(*f, "password" | "delegated"))
        .collect();
    if rest.is_empty() {
        "none".into()
    } else {
        rest.join(",")
    }
}

/// A factor menu as one prompt (sshd would hold a separate info message back).
fn choose(
    conv: &mut dyn Conversation,
    text: &str,
    choices: &[Choice],
) -> Result<Secret, ConvFailed> {
    let mut menu = String::new();
    if !text.trim().is_empty() {
        menu.push_str(text.trim_end());
        menu.push('\n');
    }
    for (i, c) in choices.iter().enumerate() {
        menu.push_str(&format!("  {}) {}\n", i + 1, c.label));
    }
    menu.push_str(&format!("Choose 1-{}: ", choices.len()));
    for _ in 0..3 {
        // Echo off: a code may be typed here instead of a number (a bypass code is good
        // for several logins), and must not stay on the screen.
        let reply = conv.prompt(&menu, false)?;
        let typed = reply.expose().trim();
        let picked = typed
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| choices.get(i))
            .or_else(|| choices.iter().find(|c| c.id == typed));
        if let Some(c) = picked {
            return Ok(Secret::new(c.id.clone()));
        }
        // A code typed at the menu (6+ characters: OTP, recovery or bypass code) goes to
        // the daemon as the answer, as the menu's heading offers.
        if typed.len() >= 6 {
            return Ok(reply);
        }
        conv.error("Not one of the choices.");
    }
    Err(ConvFailed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Script {
        replies: VecDeque<&'static str>,
        prompts: Vec<(String, bool)>,
        errors: Vec<String>,
    }

    impl Script {
        fn new(replies: &[&'static str]) -> Self {
            Script {
                replies: replies.iter().copied().collect(),
                prompts: Vec::new(),
                errors: Vec::new(),
            }
        }
    }

    impl Conversation for Script {
        fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvFailed> {
            self.prompts.push((text.to_string(), echo));
            self.replies
                .pop_front()
                .map(|r| Secret::new(r.into()))
                .ok_or(ConvFailed)
        }
        fn error(&mut self, text: &str) {
            self.errors.push(text.to_string());
        }
    }

    struct Daemon {
        replies: VecDeque<Result<ResponseStep, CallError>>,
        seen: Vec<Request>,
        /// What its responses say of the tenant's pam_fail_mode.
        fail_mode: Option<TenantFailMode>,
    }

    impl Transport for Daemon {
        fn call(&mut self, req: &Request) -> Result<Response, CallError> {
            self.seen.push(req.clone());
            match self.replies.pop_front() {
                Some(Ok(step)) => Ok(Response {
                    fail_mode: self.fail_mode,
                    ..Response::new(step)
                }),
                Some(Err(e)) => Err(e),
                None => Err(CallError::Unreachable("no more replies".into())),
            }
        }
    }

    fn daemon(replies: Vec<Result<ResponseStep, CallError>>) -> Daemon {
        Daemon {
            replies: replies.into(),
            seen: Vec::new(),
            fail_mode: None,
        }
    }

    /// A ledger in memory: the grant, the spool, what was claimed and how it was settled.
    #[derive(Default)]
    struct MemLedger {
        grant: Option<TenantFailMode>,
        spool: Vec<FailOpenReport>,
        /// Appending fails with this.
        broken: Option<String>,
        claimed: Vec<FailOpenReport>,
        claims: usize,
        settled: Vec<bool>,
        remembered: Vec<TenantFailMode>,
    }

    impl MemLedger {
        fn granting(grant: Option<TenantFailMode>) -> Self {
            MemLedger {
                grant,
                ..Default::default()
            }
        }
    }

    impl FailOpenLedger for MemLedger {
        fn grant(&mut self) -> Grant {
            match self.grant {
                Some(TenantFailMode::Safe) => Grant::Safe,
                Some(TenantFailMode::Secure) => Grant::Secure,
                None => Grant::Unknown(None),
            }
        }
        fn remember(&mut self, mode: TenantFailMode, _asked_at: std::time::SystemTime) {
            self.grant = Some(mode);
            self.remembered.push(mode);
        }
        fn record(&mut self, origin: &Origin, why: &str) -> Result<(), String> {
            if let Some(e) = &self.broken {
                return Err(e.clone());
            }
            self.spool.push(FailOpenReport {
                id: Some(format!("r{}", self.spool.len())),
                at: 1,
                user: origin.user.clone(),
                service: origin.service.clone(),
                rhost: origin.rhost.clone(),
                why: why.to_string(),
            });
            Ok(())
        }
        fn claim(&mut self) -> Vec<FailOpenReport> {
            self.claims += 1;
            self.claimed = std::mem::take(&mut self.spool);
            self.claimed.clone()
        }
        fn settle(&mut self, delivered: bool) {
            self.settled.push(delivered);
            if !delivered {
                let back = std::mem::take(&mut self.claimed);
                self.spool.extend(back);
            }
            self.claimed.clear();
        }
    }

    /// [`super::run`] on a host whose tenant allows failing open (as the daemon said).
    fn run(
        args: &Args,
        origin: &Origin,
        password: Option<Secret>,
        conv: &mut dyn Conversation,
        transport: &mut dyn Transport,
        pause: &mut dyn Pause,
    ) -> Decision {
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        super::run(args, origin, password, conv, transport, pause, &mut ledger)
    }

    /// Time that passes only when the flow sleeps (and when a test moves it).
    struct FakeTime {
        start: Instant,
        elapsed: Duration,
        sleeps: Vec<Duration>,
        notes: Vec<String>,
    }

    impl FakeTime {
        fn new() -> Self {
            FakeTime {
                start: Instant::now(),
                elapsed: Duration::ZERO,
                sleeps: Vec::new(),
                notes: Vec::new(),
            }
        }
    }

    impl Pause for FakeTime {
        fn now(&self) -> Instant {
            self.start + self.elapsed
        }
        fn sleep(&mut self, d: Duration) {
            self.sleeps.push(d);
            self.elapsed += d;
        }
        fn note(&mut self, text: &str) {
            self.notes.push(text.to_string());
        }
    }

    /// [`run`] with time that does not really pass.
    fn login(
        args: &Args,
        origin: &Origin,
        password: Option<Secret>,
        conv: &mut dyn Conversation,
        transport: &mut dyn Transport,
    ) -> Decision {
        run(
            args,
            origin,
            password,
            conv,
            transport,
            &mut FakeTime::new(),
        )
    }

    /// alice of tenant acme logging in to sshd on host `h` (also the transport tests').
    pub(crate) fn origin() -> Origin {
        Origin {
            tenant: "acme".into(),
            user: "alice".into(),
            service: "sshd".into(),
            host: "h".into(),
            rhost: None,
            tty: None,
            ruser: None,
        }
    }

    fn args(extra: &[&str]) -> Args {
        let mut all = vec!["tenant=acme"];
        all.extend_from_slice(extra);
        Args::parse(&all).unwrap()
    }

    fn prompt(text: &str) -> ResponseStep {
        ResponseStep::Prompt {
            txn: "t.0".into(),
            text: text.into(),
            echo: false,
            expects: Expects::Code,
            choices: vec![],
        }
    }

    fn accept() -> ResponseStep {
        ResponseStep::Accept {
            factors: vec!["password".into(), "totp".into()],
        }
    }

    /// A login of alice (first factor checked by the stack) with `ledger`, against `d`.
    fn with_ledger(
        extra: &[&str],
        d: &mut Daemon,
        ledger: &mut MemLedger,
        conv: &mut Script,
    ) -> Decision {
        let mut all = vec!["first_factor=stack"];
        all.extend_from_slice(extra);
        super::run(
            &args(&all),
            &origin(),
            None,
            conv,
            d,
            &mut FakeTime::new(),
            ledger,
        )
    }

    #[test]
    fn an_outage_opens_only_if_the_tenant_allows_it_and_the_report_is_kept() {
        let down = || vec![Err(CallError::Unreachable("connect: refused".into()))];
        // Granted: let in, and the report is in the spool.
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        let mut conv = Script::new(&[]);
        let got = with_ledger(
            &["failmode=safe"],
            &mut daemon(down()),
            &mut ledger,
            &mut conv,
        );
        assert_eq!(
            got,
            Decision::Allow {
                factor: "none".into(),
                fail_open: Some("connect: refused".into())
            }
        );
        assert!(conv.errors.is_empty());
        assert_eq!(ledger.spool.len(), 1);
        assert_eq!(ledger.spool[0].user, "alice");
        assert_eq!(ledger.spool[0].why, "connect: refused");

        // The tenant says secure, or this host never heard: refused, and why.
        for (grant, why) in [
            (Some(TenantFailMode::Secure), Unavailable::TenantSecure),
            (None, Unavailable::NotGranted),
        ] {
            let mut ledger = MemLedger::granting(grant);
            let mut conv = Script::new(&[]);
            let got = with_ledger(
                &["failmode=safe"],
                &mut daemon(down()),
                &mut ledger,
                &mut conv,
            );
            assert_eq!(
                got,
                Decision::Unavailable {
                    detail: "connect: refused".into(),
                    why
                },
                "{grant:?}"
            );
            assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);
            assert!(ledger.spool.is_empty(), "{grant:?}");
        }

        // Granted, and the report cannot be written: refused.
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        ledger.broken = Some("disk full".into());
        let got = with_ledger(
            &["failmode=safe"],
            &mut daemon(down()),
            &mut ledger,
            &mut Script::new(&[]),
        );
        match got {
            Decision::Unavailable { detail, why } => {
                assert_eq!(why, Unavailable::NotAudited);
                assert!(detail.contains("disk full"), "{detail}");
            }
            other => panic!("{other:?}"),
        }

        // failmode=secure never asks the ledger, whatever it holds.
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        let got = with_ledger(
            &["failmode=secure"],
            &mut daemon(down()),
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert!(matches!(
            got,
            Decision::Unavailable {
                why: Unavailable::FailmodeSecure,
                ..
            }
        ));
        assert_eq!(ledger.claims, 0);
        assert!(ledger.spool.is_empty() && ledger.settled.is_empty());

        // Granted, but the password was not checked yet: refused as before.
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        let got = super::run(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&[]),
            &mut daemon(down()),
            &mut FakeTime::new(),
            &mut ledger,
        );
        assert!(matches!(
            got,
            Decision::Unavailable {
                why: Unavailable::PasswordNotChecked,
                ..
            }
        ));
        assert!(ledger.spool.is_empty());
    }

    #[test]
    fn the_grant_is_learnt_from_the_daemons_answers() {
        let mut ledger = MemLedger::granting(None);
        let mut d = daemon(vec![Ok(prompt("Code: ")), Ok(accept())]);
        d.fail_mode = Some(TenantFailMode::Safe);
        let got = with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&["1"]),
        );
        assert!(matches!(
            got,
            Decision::Allow {
                fail_open: None,
                ..
            }
        ));
        assert_eq!(ledger.grant, Some(TenantFailMode::Safe));
        assert_eq!(ledger.remembered.len(), 2);
        // And withdrawn the same way.
        let mut d = daemon(vec![Ok(ResponseStep::Reject {
            message: "no".into(),
        })]);
        d.fail_mode = Some(TenantFailMode::Secure);
        with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert_eq!(ledger.grant, Some(TenantFailMode::Secure));
        // An older daemon says nothing: the grant stays as it was.
        let mut d = daemon(vec![Ok(accept())]);
        with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert_eq!(ledger.grant, Some(TenantFailMode::Secure));
    }

    fn fail_opens_of(req: &Request) -> &[FailOpenReport] {
        match &req.step {
            RequestStep::Start { fail_opens, .. } => fail_opens,
            other => panic!("not a start: {other:?}"),
        }
    }

    /// The login was let in by the daemon's word (not failing open).
    #[track_caller]
    fn assert_allowed(got: &Decision) {
        assert!(
            matches!(
                got,
                Decision::Allow {
                    fail_open: None,
                    ..
                }
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_daemon_that_cannot_read_the_reports_gets_the_start_again_without_them() {
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        with_ledger(
            &["failmode=safe"],
            &mut daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]),
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert_eq!(ledger.spool.len(), 1);
        // An older daemon: "unknown field `id`". The login goes on without the reports,
        // which are kept; a start refused as malformed without reports is not sent again.
        let refused = || {
            Ok(ResponseStep::Error {
                code: ErrorCode::Malformed,
                message: "unknown field `id`".into(),
            })
        };
        let mut d = daemon(vec![refused(), Ok(prompt("Code: ")), Ok(accept())]);
        let got = with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&["1"]),
        );
        assert_allowed(&got);
        assert_eq!(fail_opens_of(&d.seen[0]).len(), 1);
        assert!(fail_opens_of(&d.seen[1]).is_empty());
        assert!(matches!(d.seen[1].step, RequestStep::Start { .. }));
        assert_eq!(d.seen.len(), 3);
        assert_eq!(ledger.settled, [false, false]);
        assert_eq!(ledger.spool.len(), 1);
        // Refused again without reports: a daemon error, as before.
        let mut d = daemon(vec![refused(), refused()]);
        let got = with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert!(
            matches!(got, Decision::DaemonError(ErrorCode::Malformed, _)),
            "{got:?}"
        );
        assert_eq!(d.seen.len(), 2);
        assert_eq!(ledger.spool.len(), 1);
    }

    #[test]
    fn spooled_reports_go_with_the_next_start_and_come_back_unless_it_was_answered() {
        let mut ledger = MemLedger::granting(Some(TenantFailMode::Safe));
        // Two logins let in during an outage.
        for _ in 0..2 {
            let got = with_ledger(
                &["failmode=safe"],
                &mut daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]),
                &mut ledger,
                &mut Script::new(&[]),
            );
            assert!(matches!(
                got,
                Decision::Allow {
                    fail_open: Some(_),
                    ..
                }
            ));
        }
        // An outage again: claimed, not delivered, given back.
        assert_eq!(ledger.spool.len(), 2);
        let mut d = daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]);
        with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert_eq!(fail_opens_of(&d.seen[0]).len(), 2);
        assert_eq!(ledger.settled.last(), Some(&false));
        assert_eq!(ledger.spool.len(), 3);
        // Each failure to deliver gives them back: no answer, an error frame.
        for reply in [
            Err(CallError::NoAnswer("receive: timed out".into())),
            Err(CallError::NotDelivered("closed".into())),
            Ok(ResponseStep::Error {
                code: ErrorCode::Internal,
                message: "store down".into(),
            }),
        ] {
            let mut d = daemon(vec![reply]);
            with_ledger(
                &["failmode=safe"],
                &mut d,
                &mut ledger,
                &mut Script::new(&[]),
            );
            assert_eq!(fail_opens_of(&d.seen[0]).len(), 3);
            assert_eq!(ledger.settled.last(), Some(&false));
            assert_eq!(ledger.spool.len(), 3);
        }
        // The daemon answers (here a prompt; the login goes on): delivered, gone, and the
        // next request of the login carries nothing.
        let mut d = daemon(vec![Ok(prompt("Code: ")), Ok(accept())]);
        let got = with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&["1"]),
        );
        assert!(matches!(
            got,
            Decision::Allow {
                fail_open: None,
                ..
            }
        ));
        let users: Vec<_> = fail_opens_of(&d.seen[0])
            .iter()
            .map(|r| r.user.as_str())
            .collect();
        assert_eq!(users, ["alice", "alice", "alice"]);
        assert!(matches!(d.seen[1].step, RequestStep::Answer { .. }));
        assert_eq!(ledger.settled.last(), Some(&true));
        assert!(ledger.spool.is_empty());
        assert_eq!(ledger.claims, 7);
        // Nothing to report: the start carries none (older daemons refuse the field).
        let mut d = daemon(vec![Ok(accept())]);
        with_ledger(
            &["failmode=safe"],
            &mut d,
            &mut ledger,
            &mut Script::new(&[]),
        );
        assert!(fail_opens_of(&d.seen[0]).is_empty());
    }

    #[test]
    fn code_prompt_is_echo_off_and_the_factor_is_reported() {
        let mut conv = Script::new(&["123456"]);
        let mut d = daemon(vec![Ok(prompt("Verification code (app): ")), Ok(accept())]);
        let pw = Some(Secret::new("pw".into()));
        let got = login(&args(&[]), &origin(), pw, &mut conv, &mut d);
        assert_eq!(
            got,
            Decision::Allow {
                factor: "totp".into(),
                fail_open: None
            }
        );
        assert_eq!(
            conv.prompts,
            vec![("Verification code (app): ".into(), false)]
        );
        match &d.seen[1].step {
            RequestStep::Answer { txn, answer } => {
                assert_eq!(txn, "t.0");
                assert_eq!(answer.expose(), "123456");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stack_mode_sends_no_password() {
        let mut conv = Script::new(&["1"]);
        let mut d = daemon(vec![Ok(prompt("Code: ")), Ok(accept())]);
        login(
            &args(&["first_factor=stack"]),
            &origin(),
            None,
            &mut conv,
            &mut d,
        );
        assert!(matches!(
            d.seen[0].step,
            RequestStep::Start {
                first_factor: FirstFactor::Delegated,
                password: None,
                ..
            }
        ));
    }

    #[test]
    fn reject_shows_the_daemons_message() {
        let mut conv = Script::new(&[]);
        let mut d = daemon(vec![Ok(ResponseStep::Reject {
            message: "locked".into(),
        })]);
        let got = login(&args(&[]), &origin(), None, &mut conv, &mut d);
        assert_eq!(got, Decision::Reject);
        assert_eq!(conv.errors, vec!["locked".to_string()]);
    }

    #[test]
    fn unreachable_daemon_denies_unless_failmode_safe() {
        let down = || daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]);
        let mut conv = Script::new(&[]);
        let got = login(
            &args(&["first_factor=stack"]),
            &origin(),
            None,
            &mut conv,
            &mut down(),
        );
        assert!(matches!(got, Decision::Unavailable { .. }));
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);

        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut down(),
        );
        assert!(matches!(
            got,
            Decision::Allow {
                fail_open: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_request_sent_and_not_answered_is_denied_even_with_failmode_safe() {
        // The password was accepted (the daemon asked for the code), the code went out and
        // no answer came back in time: the daemon may have used the code or be holding a
        // push; a slow daemon is no outage to fail open on.
        let mut conv = Script::new(&["123456"]);
        let got = login(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut conv,
            &mut daemon(vec![
                Ok(prompt("Code: ")),
                Err(CallError::NoAnswer("receive: no answer in time".into())),
            ]),
        );
        assert!(matches!(got, Decision::Unavailable { .. }), "{got:?}");
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);

        // The first request of a login too: a daemon that took the request is there (or
        // the PAM application was stopped past timeout= while it answered), so this is no
        // outage for failmode=safe.
        let mut conv = Script::new(&[]);
        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut conv,
            &mut daemon(vec![Err(CallError::NoAnswer("hung".into()))]),
        );
        assert_eq!(
            got,
            Decision::Unavailable {
                detail: "hung".into(),
                why: Unavailable::Stalled
            }
        );
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);
    }

    #[test]
    fn failmode_safe_opens_only_when_the_connect_failed() {
        // A connection was made and then closed or reset before the request was delivered
        // (a TLS handshake cut off, a daemon past its limits): refused in every failmode.
        for failmode in ["failmode=safe", "failmode=secure"] {
            let mut conv = Script::new(&[]);
            let got = login(
                &args(&["first_factor=stack", failmode]),
                &origin(),
                None,
                &mut conv,
                &mut daemon(vec![Err(CallError::NotDelivered("closed".into()))]),
            );
            assert_eq!(
                got,
                Decision::Unavailable {
                    detail: "closed".into(),
                    why: Unavailable::NotDelivered
                },
                "{failmode}"
            );
            assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);
        }
        // Only a connect that failed lets the login in.
        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]),
        );
        assert!(
            matches!(
                got,
                Decision::Allow {
                    fail_open: Some(_),
                    ..
                }
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_request_not_delivered_mid_login_is_sent_again_and_then_refused_not_let_in() {
        // The daemon restarting: its listener closed the connection under the request,
        // then it answers the same request.
        let mut d = daemon(vec![
            Ok(prompt("Code: ")),
            Err(CallError::NotDelivered(
                "receive: reset (the request was not read)".into(),
            )),
            Err(CallError::Unreachable("connect: no socket file".into())),
            Ok(accept()),
        ]);
        let got = run(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut d,
            &mut FakeTime::new(),
        );
        assert_allowed(&got);
        assert_eq!(d.seen.len(), 4);
        // A peer that keeps closing connections until restart_wait is spent: refused even
        // with failmode=safe, and not let in as an outage.
        let mut replies = vec![Ok(prompt("Code: "))];
        replies.extend((0..20).map(|_| Err(CallError::NotDelivered("closed".into()))));
        let got = run(
            &args(&["failmode=safe", "restart_wait=3"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut daemon(replies),
            &mut FakeTime::new(),
        );
        match got {
            Decision::Unavailable {
                detail,
                why: Unavailable::NotDelivered,
            } => assert!(detail.contains("waited 3.0 s"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }

    /// Time that jumps by `stop` during the first pause: the process was stopped there.
    struct StoppedOnce {
        inner: FakeTime,
        stop: Duration,
    }

    impl Pause for StoppedOnce {
        fn now(&self) -> Instant {
            self.inner.now()
        }
        fn sleep(&mut self, d: Duration) {
            self.inner.sleep(d);
            self.inner.elapsed += std::mem::take(&mut self.stop);
        }
        fn note(&mut self, text: &str) {
            self.inner.note(text);
        }
    }

    #[test]
    fn a_process_stopped_while_it_waits_for_a_restart_does_not_spend_restart_wait() {
        // The daemon is down for a moment in the middle of a login; the user stops the
        // process (Ctrl-Z) in the first pause for longer than restart_wait. On resume the
        // module goes on asking instead of deciding on the budget being gone: the daemon
        // is back, and answers.
        let down = || Err(CallError::Unreachable("connect: refused".into()));
        let mut d = daemon(vec![Ok(prompt("Code: ")), down(), down(), Ok(accept())]);
        let mut time = StoppedOnce {
            inner: FakeTime::new(),
            stop: Duration::from_secs(60),
        };
        let got = run(
            &args(&["failmode=safe", "restart_wait=5"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut d,
            &mut time,
        );
        assert_eq!(
            got,
            Decision::Allow {
                factor: "totp".into(),
                fail_open: None
            }
        );
        assert_eq!(d.seen.len(), 4);
        assert_eq!(
            time.inner.sleeps,
            [100, 200].map(Duration::from_millis),
            "{:?}",
            time.inner.notes
        );
    }

    #[test]
    fn a_daemon_speaking_another_protocol_is_denied_even_with_failmode_safe() {
        let mut conv = Script::new(&[]);
        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut conv,
            &mut daemon(vec![Err(CallError::Protocol("version 2".into()))]),
        );
        assert!(matches!(got, Decision::DaemonError(..)), "{got:?}");
        assert_eq!(conv.errors, vec![DAEMON_ERROR_MESSAGE.to_string()]);
    }

    #[test]
    fn failmode_safe_never_lets_an_unchecked_password_in() {
        let got = login(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("anything".into())),
            &mut Script::new(&[]),
            &mut daemon(vec![Err(CallError::Unreachable("down".into()))]),
        );
        assert!(matches!(got, Decision::Unavailable { .. }));
        // Once the daemon asked for the code, the password was right.
        let got = login(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut daemon(vec![
                Ok(prompt("Code: ")),
                Err(CallError::Unreachable("died".into())),
            ]),
        );
        assert!(matches!(
            got,
            Decision::Allow {
                fail_open: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_refused_login_says_why_failmode_safe_did_not_let_it_in() {
        let run_with = |extra: &[&str], password: bool, replies| {
            login(
                &args(extra),
                &origin(),
                password.then(|| Secret::new("pw".into())),
                &mut Script::new(&["123456"]),
                &mut daemon(replies),
            )
        };
        let why = |got: Decision| match got {
            Decision::Unavailable { why, .. } => why,
            other => panic!("{other:?}"),
        };
        let down = || vec![Err(CallError::Unreachable("connect: refused".into()))];
        // The daemon down at the start: failmode=secure says so...
        assert_eq!(
            why(run_with(&["first_factor=stack"], false, down())),
            Unavailable::FailmodeSecure
        );
        assert_eq!(
            why(run_with(&[], true, down())),
            Unavailable::FailmodeSecure
        );
        // ...failmode=safe was set, and the password had not been checked.
        assert_eq!(
            why(run_with(&["failmode=safe"], true, down())),
            Unavailable::PasswordNotChecked
        );
        let hung = || vec![Err(CallError::NoAnswer("hung".into()))];
        assert_eq!(
            why(run_with(&["failmode=safe"], true, hung())),
            Unavailable::PasswordNotChecked
        );
        // A stall in the middle of the login, whatever failmode says.
        for failmode in ["failmode=safe", "failmode=secure"] {
            let stalled = vec![
                Ok(prompt("Code: ")),
                Err(CallError::NoAnswer("receive: no answer in time".into())),
            ];
            assert_eq!(
                why(run_with(&[failmode], true, stalled)),
                Unavailable::Stalled,
                "{failmode}"
            );
        }
    }

    #[test]
    fn a_tls_failure_is_refused_even_with_failmode_safe_and_is_no_daemon_answer() {
        let mut conv = Script::new(&[]);
        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut conv,
            &mut daemon(vec![Err(CallError::Tls("UnknownIssuer".into()))]),
        );
        assert_eq!(got, Decision::Tls("UnknownIssuer".into()));
        assert_eq!(conv.errors, vec![DAEMON_ERROR_MESSAGE.to_string()]);
    }

    fn answer_of(req: &Request) -> (&str, &str) {
        match &req.step {
            RequestStep::Answer { txn, answer } => (txn.as_str(), answer.expose()),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn a_daemon_restarting_in_the_middle_of_a_login_is_waited_for() {
        for failmode in ["failmode=secure", "failmode=safe"] {
            // The password was checked, the code typed; then the daemon restarts: three
            // refused connects, and it answers the same request.
            let down = || Err(CallError::Unreachable("connect: refused".into()));
            let mut d = daemon(vec![
                Ok(prompt("Code: ")),
                down(),
                down(),
                down(),
                Ok(accept()),
            ]);
            let mut conv = Script::new(&["123456"]);
            let mut time = FakeTime::new();
            let got = run(
                &args(&[failmode]),
                &origin(),
                Some(Secret::new("pw".into())),
                &mut conv,
                &mut d,
                &mut time,
            );
            assert_eq!(
                got,
                Decision::Allow {
                    factor: "totp".into(),
                    fail_open: None
                },
                "{failmode}"
            );
            // The user typed the code once and was told nothing.
            assert_eq!(conv.prompts.len(), 1, "{failmode}");
            assert!(conv.errors.is_empty(), "{failmode}: {:?}", conv.errors);
            // The same request, same transaction and code, four times.
            assert_eq!(d.seen.len(), 5, "{failmode}");
            for req in &d.seen[1..] {
                assert_eq!(answer_of(req), ("t.0", "123456"), "{failmode}");
            }
            assert_eq!(
                time.sleeps,
                [100, 200, 400].map(Duration::from_millis),
                "{failmode}"
            );
            // The debug log says it waited (and no code in it).
            assert!(
                time.notes.iter().any(|n| n.contains("waiting up to 30 s")),
                "{:?}",
                time.notes
            );
            assert!(
                time.notes
                    .iter()
                    .any(|n| n.contains("waited 0.7 s") && n.contains("4 attempts")),
                "{:?}",
                time.notes
            );
            assert!(
                !time.notes.iter().any(|n| n.contains("123456")),
                "{:?}",
                time.notes
            );
        }

        // A push poll too: the phone's decision is asked for again.
        let mut d = daemon(vec![
            Ok(ResponseStep::Wait {
                txn: "t.0".into(),
                text: String::new(),
            }),
            Err(CallError::Unreachable("no socket file".into())),
            Ok(accept()),
        ]);
        let got = run(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut Script::new(&[""]),
            &mut d,
            &mut FakeTime::new(),
        );
        assert_allowed(&got);
        assert_eq!(d.seen.len(), 3);
        assert_eq!(d.seen[1], d.seen[2]);
        assert!(matches!(&d.seen[2].step, RequestStep::Poll { txn } if txn == "t.0"));
    }

    #[test]
    fn a_daemon_that_does_not_come_back_within_the_budget_gets_failmode_as_before() {
        // restart_wait=3: the budget is spent after pauses of 0.1, 0.2, 0.4, 0.8, 1 and the
        // 0.5 s left, then failmode decides as it did without waiting.
        let expected = [100, 200, 400, 800, 1000, 500].map(Duration::from_millis);
        let mut time = FakeTime::new();
        let mut d = daemon(vec![Ok(prompt("Code: "))]);
        let got = run(
            &args(&["failmode=safe", "restart_wait=3"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut d,
            &mut time,
        );
        match &got {
            Decision::Allow {
                factor,
                fail_open: Some(detail),
            } => {
                assert_eq!(factor, "none");
                assert!(detail.contains("waited 3.0 s"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(time.sleeps, expected);
        assert_eq!(time.elapsed, Duration::from_secs(3));
        assert_eq!(d.seen.len(), 2 + expected.len());
        assert!(
            time.notes.iter().any(|n| n.contains("did not come back")),
            "{:?}",
            time.notes
        );

        let mut conv = Script::new(&["123456"]);
        let mut time = FakeTime::new();
        let got = run(
            &args(&["restart_wait=3"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut conv,
            &mut daemon(vec![Ok(prompt("Code: "))]),
            &mut time,
        );
        assert!(matches!(got, Decision::Unavailable { .. }), "{got:?}");
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);
        assert_eq!(time.elapsed, Duration::from_secs(3));
    }

    /// A daemon whose every connect times out after `cost` (a full backlog, a host that
    /// drops packets), on the same fake clock as the flow.
    struct SlowToRefuse {
        clock: std::rc::Rc<std::cell::Cell<Duration>>,
        cost: Duration,
        calls: usize,
    }

    impl Transport for SlowToRefuse {
        fn call(&mut self, _req: &Request) -> Result<Response, CallError> {
            self.calls += 1;
            if self.calls == 1 {
                return Ok(Response::new(prompt("Code: ")));
            }
            self.clock.set(self.clock.get() + self.cost);
            Err(CallError::Unreachable("connect: timed out".into()))
        }
    }

    struct SharedTime {
        start: Instant,
        clock: std::rc::Rc<std::cell::Cell<Duration>>,
    }

    impl Pause for SharedTime {
        fn now(&self) -> Instant {
            self.start + self.clock.get()
        }
        fn sleep(&mut self, d: Duration) {
            self.clock.set(self.clock.get() + d);
        }
        fn note(&mut self, _text: &str) {}
    }

    #[test]
    fn attempts_that_each_take_time_are_not_started_after_the_budget() {
        let clock = std::rc::Rc::new(std::cell::Cell::new(Duration::ZERO));
        let cost = Duration::from_secs(4);
        let mut d = SlowToRefuse {
            clock: clock.clone(),
            cost,
            calls: 0,
        };
        let mut time = SharedTime {
            start: Instant::now(),
            clock: clock.clone(),
        };
        let got = run(
            &args(&["restart_wait=10"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut d,
            &mut time,
        );
        assert!(matches!(got, Decision::Unavailable { .. }), "{got:?}");
        // Attempts start at 0, 4.1 and 8.3 s; none after the 10 s budget, so the wait
        // ends within the budget and one attempt's own timeout.
        assert_eq!(d.calls, 1 + 3);
        assert!(
            clock.get() <= Duration::from_secs(10) + cost,
            "{:?}",
            clock.get()
        );
    }

    #[test]
    fn only_a_request_that_was_not_delivered_is_sent_again() {
        // The daemon may have acted on a request it took (NoAnswer); setup and protocol
        // errors do not go away by waiting: each is handled at once, as before.
        for (error, failmode) in [
            (
                CallError::NoAnswer("receive: no answer".into()),
                "failmode=safe",
            ),
            (CallError::Setup("not a socket".into()), "failmode=safe"),
            (CallError::Protocol("version 2".into()), "failmode=safe"),
            (CallError::Tls("UnknownIssuer".into()), "failmode=safe"),
        ] {
            let mut d = daemon(vec![Ok(prompt("Code: ")), Err(error.clone()), Ok(accept())]);
            let mut time = FakeTime::new();
            let got = run(
                &args(&[failmode]),
                &origin(),
                Some(Secret::new("pw".into())),
                &mut Script::new(&["123456"]),
                &mut d,
                &mut time,
            );
            assert!(!matches!(got, Decision::Allow { .. }), "{error:?}: {got:?}");
            assert_eq!(d.seen.len(), 2, "{error:?} was sent again");
            assert!(time.sleeps.is_empty(), "{error:?}");
        }

        // Unreachable, then taken and not answered: not sent a third time, and refused
        // whatever failmode says (the daemon may have used the code).
        let mut d = daemon(vec![
            Ok(prompt("Code: ")),
            Err(CallError::Unreachable("connect: refused".into())),
            Err(CallError::NoAnswer("receive: closed".into())),
            Ok(accept()),
        ]);
        let got = run(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut Script::new(&["123456"]),
            &mut d,
            &mut FakeTime::new(),
        );
        assert!(matches!(got, Decision::Unavailable { .. }), "{got:?}");
        assert_eq!(d.seen.len(), 3);

        // The first request of a login: failmode decides at once, as before.
        let mut d = daemon(vec![
            Err(CallError::Unreachable("connect: refused".into())),
            Ok(prompt("Code: ")),
        ]);
        let mut time = FakeTime::new();
        let got = run(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut d,
            &mut time,
        );
        assert!(
            matches!(
                got,
                Decision::Allow {
                    fail_open: Some(_),
                    ..
                }
            ),
            "{got:?}"
        );
        assert_eq!(d.seen.len(), 1);
        assert!(time.sleeps.is_empty());
    }

    #[test]
    fn a_factor_menu_is_one_prompt_and_sends_the_chosen_id() {
        let mut d = daemon(vec![
            Ok(ResponseStep::Prompt {
                txn: "t.0".into(),
                text: "Second factor:".into(),
                echo: true,
                expects: Expects::Choice,
                choices: vec![
                    Choice {
                        id: "totp".into(),
                        label: "Code from the app".into(),
                    },
                    Choice {
                        id: "push".into(),
                        label: "Push to phone".into(),
                    },
                ],
            }),
            Ok(ResponseStep::Wait {
                txn: "t.1".into(),
                text: String::new(),
            }),
            Ok(accept()),
        ]);
        // "7" is not a choice: asked again.
        let mut conv = Script::new(&["7", "2", ""]);
        let got = login(&args(&[]), &origin(), None, &mut conv, &mut d);
        assert!(matches!(got, Decision::Allow { .. }));
        assert!(conv.prompts[0].0.contains("2) Push to phone"));
        assert!(
            !conv.prompts[0].1,
            "the menu is read with echo off (a code may be typed)"
        );
        assert_eq!(conv.prompts[2], (WAIT_PROMPT.to_string(), false));
        match &d.seen[1].step {
            RequestStep::Answer { answer, .. } => assert_eq!(answer.expose(), "push"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.seen[2].step, RequestStep::Poll { .. }));
    }

    #[test]
    fn a_code_typed_at_the_push_wait_is_read_with_echo_off_and_sent_as_the_answer() {
        let wait = |txn: &str| {
            Ok(ResponseStep::Wait {
                txn: txn.into(),
                text: "Approve the request on your phone, then press Enter (or type a code):"
                    .into(),
            })
        };
        let mut d = daemon(vec![wait("t.0"), wait("t.1"), Ok(accept())]);
        // Enter alone first (a poll), then a recovery code.
        let mut conv = Script::new(&["", " abcd-efgh-ijkl \n"]);
        let got = login(
            &args(&["first_factor=stack"]),
            &origin(),
            None,
            &mut conv,
            &mut d,
        );
        assert!(matches!(got, Decision::Allow { .. }), "{got:?}");
        assert_eq!(conv.prompts.len(), 2);
        assert!(
            conv.prompts.iter().all(|(_, echo)| !echo),
            "the wait prompt must not echo a typed code: {:?}",
            conv.prompts
        );
        assert!(matches!(&d.seen[1].step, RequestStep::Poll { txn } if txn == "t.0"));
        match &d.seen[2].step {
            RequestStep::Answer { txn, answer } => {
                assert_eq!(txn, "t.1");
                assert_eq!(answer.expose(), " abcd-efgh-ijkl \n");
            }
            other => panic!("the typed code was not sent: {other:?}"),
        }
    }

    #[test]
    fn a_setup_error_is_refused_even_with_failmode_safe() {
        let mut conv = Script::new(&[]);
        let got = login(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut conv,
            &mut daemon(vec![Err(CallError::Setup("not a socket".into()))]),
        );
        assert_eq!(got, Decision::Setup("not a socket".into()));
        assert_eq!(conv.errors, vec![DAEMON_ERROR_MESSAGE.to_string()]);
    }

    #[test]
    fn hang_up_is_a_conversation_failure() {
        let got = login(
            &args(&[]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut daemon(vec![Ok(prompt("Code: "))]),
        );
        assert_eq!(got, Decision::Conversation);
    }

    #[test]
    fn unenrolled_allowed_reports_no_second_factor() {
        let got = login(
            &args(&["unenrolled=allow"]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut daemon(vec![Ok(ResponseStep::Accept {
                factors: vec!["password".into()],
            })]),
        );
        assert_eq!(
            got,
            Decision::Allow {
                factor: "none".into(),
                fail_open: None
            }
        );
    }
}
