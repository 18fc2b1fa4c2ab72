//! `pam_portcullis.so`: the second factor of SSH, sudo and other PAM logins.
//!
//! Thin and synchronous: it reads the PAM items, asks `portcullis serve` over a Unix socket
//! (or, on a remote host of a fleet, over HTTPS with the host's token) what to do next (the step protocol of [`portcullis_core::protocol`]) and renders each
//! step as a PAM conversation. No async runtime, no database, no secrets of providers.
//! Every entry point catches panics (`pam_hooks!`), and every exchange with the daemon has
//! a deadline (`timeout=`).
//!
//! Arguments: see [`args`] and the README (`socket=`, `daemon_user=`, `url=`, `token_file=`,
//! `ca_file=`, `tenant=`, `first_factor=`, `unenrolled=`, `failmode=`, `state_dir=`, `timeout=`,
//! `fail_delay=`, `use_first_pass`, `try_first_pass`, `debug`).

pub mod args;
pub mod failopen;
mod ffi;
pub mod flow;
mod https;
mod peer;
mod transport;

use std::ffi::CStr;
use std::time::{Duration, Instant};

use pam::constants::{
    PamFlag, PamResultCode, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT,
};
use pam::conv::Conv;
use pam::items::{RHost, RUser, Service, Tty};
use pam::module::{PamHandle, PamHooks};
use portcullis_core::protocol::{ErrorCode, Origin, Secret};

use crate::args::{Args, FailMode, FirstFactorArg};
use crate::failopen::StateDir;
use crate::flow::{
    ConvFailed, Conversation, Decision, FailOpenLedger, NoLedger, Pause, Transport, Unavailable,
};
use crate::https::HttpsTransport;
use crate::transport::SocketTransport;

/// The environment variable that names the second factor used, set on success.
pub const FACTOR_ENV: &str = "PORTCULLIS_FACTOR";

struct Portcullis;
pam::pam_hooks!(Portcullis);

impl PamHooks for Portcullis {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        authenticate(pamh, &args, flags)
    }

    /// Nothing to set; succeed so that `auth required` stacks pass pam_setcred.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

/// The PAM conversation as the flow sees it.
struct PamConversation<'a> {
    conv: Conv<'a>,
    silent: bool,
    /// Time spent waiting for the user (excluded from the module's own time).
    waited: Duration,
}

impl Conversation for PamConversation<'_> {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvFailed> {
        let style = if echo {
            PAM_PROMPT_ECHO_ON
        } else {
            PAM_PROMPT_ECHO_OFF
        };
        let asked = Instant::now();
        let reply = self.conv.send(style, text);
        self.waited += asked.elapsed();
        match reply {
            Ok(Some(reply)) => Ok(Secret::new(
                String::from_utf8_lossy(reply.as_bytes()).into_owned(),
            )),
            Ok(None) => Ok(Secret::default()),
            Err(_) => Err(ConvFailed),
        }
    }

    fn error(&mut self, text: &str) {
        if !self.silent {
            let shown = Instant::now();
            let _ = self.conv.send(PAM_ERROR_MSG, text);
            self.waited += shown.elapsed();
        }
    }
}

/// Real time for the flow's wait on a restarting daemon; its notes go to syslog with `debug`.
struct ModulePause<'a> {
    pamh: &'a PamHandle,
    debug: bool,
}

impl Pause for ModulePause<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn note(&mut self, text: &str) {
        if self.debug {
            ffi::syslog(self.pamh, ffi::LOG_DEBUG, text);
        }
    }
}

fn item_string<'a, T>(pamh: &'a PamHandle) -> Option<String>
where
    T: pam::items::Item<'a> + std::ops::Deref<Target = &'a CStr>,
{
    match pamh.get_item::<T>() {
        Ok(Some(v)) => Some(v.to_string_lossy().into_owned()),
        _ => None,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Where the daemon is, for log messages.
fn target(args: &Args) -> String {
    match &args.url {
        Some(url) => url.to_string(),
        None => args.socket.display().to_string(),
    }
}

/// The transport the arguments ask for; an error says what to fix.
fn transport(args: &Args) -> Result<Box<dyn Transport>, String> {
    match (&args.url, &args.token_file) {
        (Some(url), Some(token_file)) => {
            let token = https::read_token_file(token_file)?;
            let tls = https::client_config(args.ca_file.as_deref())?;
            Ok(Box::new(HttpsTransport {
                url: url.clone(),
                token,
                tls,
                timeout: args.timeout,
            }))
        }
        _ => Ok(Box::new(SocketTransport {
            path: args.socket.clone(),
            timeout: args.timeout,
            daemon_user: args
                .daemon_user
                .as_deref()
                .map(daemon_user_uid)
                .transpose()?,
        })),
    }
}

/// `daemon_user=NAME` and its uid; a name that does not exist (or cannot be looked up) is
/// a setup error, refused whatever failmode= says.
fn daemon_user_uid(name: &str) -> Result<(String, u32), String> {
    match peer::uid_of_user(name) {
        Ok(Some(uid)) => Ok((name.to_string(), uid)),
        Ok(None) => Err(format!(
            "daemon_user={name}: no such user on this host; name the user portcullis serve runs as (User= of its systemd unit)"
        )),
        Err(e) => Err(format!("daemon_user={name}: cannot look the user up: {e}")),
    }
}

/// A setup error of this host (its arguments, `token_file=`, `state_dir=`): logged, and
/// PAM_SERVICE_ERR for every login, which pam_faillock does not count against the user.
fn setup_error(pamh: &PamHandle, e: &dyn std::fmt::Display) -> PamResultCode {
    ffi::syslog(
        pamh,
        ffi::LOG_ERR,
        &format!("configuration error, refusing every login: {e}"),
    );
    PamResultCode::PAM_SERVICE_ERR
}

fn authenticate(pamh: &mut PamHandle, raw_args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let started = Instant::now();
    let texts: Vec<String> = raw_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match Args::parse(&texts) {
        Ok(a) => a,
        Err(e) => return setup_error(pamh, &e),
    };
    ffi::fail_delay(pamh, args.fail_delay_us);
    let mut transport = match transport(&args) {
        Ok(t) => t,
        Err(e) => return setup_error(pamh, &e),
    };
    // failmode=safe keeps the tenant's grant and its fail-open reports in state_dir=: one
    // that anyone but root may write is a setup error (it could let logins in).
    let mut state = match args.failmode {
        FailMode::Safe => match StateDir::open(&args.state_dir, &args.tenant) {
            Ok(s) => Some(s),
            Err(e) => return setup_error(pamh, &e),
        },
        FailMode::Secure => None,
    };
    let user = match pamh.get_user(None) {
        Ok(u) if !u.is_empty() => u,
        Ok(_) => return PamResultCode::PAM_USER_UNKNOWN,
        Err(e) => return e,
    };
    let origin = Origin {
        tenant: args.tenant.clone(),
        user,
        service: item_string::<Service>(pamh).unwrap_or_else(|| "unknown".into()),
        host: hostname(),
        rhost: item_string::<RHost>(pamh),
        tty: item_string::<Tty>(pamh),
        ruser: item_string::<RUser>(pamh),
    };
    let mut waited = Duration::ZERO;
    let password = if args.first_factor == FirstFactorArg::Portcullis {
        // pam_get_authtok may prompt: its time is the user's.
        let asked = Instant::now();
        let authtok = ffi::get_authtok(pamh);
        waited += asked.elapsed();
        match authtok {
            Ok(pw) => Some(pw),
            Err(rc) => {
                if args.debug {
                    ffi::syslog(
                        pamh,
                        ffi::LOG_DEBUG,
                        &format!(
                            "no password for {} (pam_get_authtok returned {rc})",
                            origin.user
                        ),
                    );
                }
                return PamResultCode::PAM_AUTH_ERR;
            }
        }
    } else {
        None
    };
    if args.debug {
        ffi::syslog(
            pamh,
            ffi::LOG_DEBUG,
            &format!(
                "asking {} for user={} tenant={} service={} rhost={}",
                target(&args),
                origin.user,
                origin.tenant,
                origin.service,
                origin.rhost.as_deref().unwrap_or("-")
            ),
        );
    }
    let decision = {
        let conv = match pamh.get_item::<Conv>() {
            Ok(Some(c)) => c,
            _ => {
                ffi::syslog(
                    pamh,
                    ffi::LOG_ERR,
                    "the application gave no PAM conversation",
                );
                return PamResultCode::PAM_CONV_ERR;
            }
        };
        let mut ui = PamConversation {
            conv,
            silent: flags & PAM_SILENT != 0,
            waited: Duration::ZERO,
        };
        let mut pause = ModulePause {
            pamh,
            debug: args.debug,
        };
        let mut no_ledger = NoLedger;
        let ledger: &mut dyn FailOpenLedger = match state.as_mut() {
            Some(s) => s,
            None => &mut no_ledger,
        };
        let decision = flow::run(
            &args,
            &origin,
            password,
            &mut ui,
            transport.as_mut(),
            &mut pause,
            ledger,
        );
        waited += ui.waited;
        decision
    };
    for note in state.iter().flat_map(|s| s.notes.iter()) {
        ffi::syslog(pamh, ffi::LOG_WARNING, &format!("failmode=safe: {note}"));
    }
    let code = finish(pamh, &args, &origin, decision);
    if args.debug {
        // What the module added to the login, the user's typing excluded.
        let own = started.elapsed().saturating_sub(waited);
        ffi::syslog(
            pamh,
            ffi::LOG_DEBUG,
            &format!("module time {} us (user excluded)", own.as_micros()),
        );
    }
    code
}

/// The log line of a login refused because portcullis at `target` could not be asked or
/// did not answer: what happened, and what `failmode=` (the real one) did about it.
fn unavailable_log(
    who: &str,
    tenant: &str,
    target: &str,
    failmode: FailMode,
    detail: &str,
    why: Unavailable,
) -> String {
    let mode = match failmode {
        FailMode::Secure => "failmode=secure",
        FailMode::Safe => "failmode=safe",
    };
    let (what, failmode_did) = match (why, failmode) {
        (Unavailable::Stalled, FailMode::Safe) => (
            format!("portcullis at {target} took the request and did not answer ({detail})"),
            format!("{mode} does not apply: the daemon took the request and did not answer"),
        ),
        (Unavailable::Stalled, FailMode::Secure) => (
            format!("portcullis at {target} took the request and did not answer ({detail})"),
            mode.to_string(),
        ),
        (Unavailable::NotDelivered, FailMode::Safe) => (
            format!("a connection to {target} was made, and then closed before the request was delivered ({detail})"),
            format!("{mode} does not apply: something listens at {target}, so this is no outage (only a failed connect is)"),
        ),
        (Unavailable::NotDelivered, FailMode::Secure) => (
            format!("a connection to {target} was made, and then closed before the request was delivered ({detail})"),
            mode.to_string(),
        ),
        (Unavailable::PasswordNotChecked, FailMode::Safe) => (
            format!("portcullis is unreachable at {target} ({detail})"),
            format!(
                "{mode} does not apply: the password was not checked yet (first_factor=portcullis)"
            ),
        ),
        (Unavailable::TenantSecure, _) => (
            format!("portcullis is unreachable at {target} ({detail})"),
            format!(
                "{mode} does not apply: tenant {tenant} does not allow it (the daemon said pam_fail_mode = \"secure\" at its last answer to this host); to allow it set pam_fail_mode = \"safe\" in [tenants.{tenant}] of the daemon's config"
            ),
        ),
        (Unavailable::NotGranted, _) => (
            format!("portcullis is unreachable at {target} ({detail})"),
            format!(
                "{mode} does not apply: this host has not heard from the daemon that tenant {tenant} allows it (pam_fail_mode = \"safe\" in [tenants.{tenant}] of the daemon's config); it learns that at the next login that reaches the daemon"
            ),
        ),
        (Unavailable::NotAudited, _) => (
            format!("portcullis is unreachable at {target} ({detail})"),
            format!(
                "{mode} does not apply: the login could not be recorded for the daemon's audit (check state_dir=), and a fail-open that cannot be audited is not done"
            ),
        ),
        // failmode=secure, or (not produced by the flow) a safe login with no other reason.
        (Unavailable::FailmodeSecure | Unavailable::PasswordNotChecked, _) => (
            format!("portcullis is unreachable at {target} ({detail})"),
            mode.to_string(),
        ),
    };
    format!("refused {who}: {what}; {failmode_did}")
}

/// The log line of a login refused because TLS to the daemon (`url=`) failed.
fn tls_log(who: &str, detail: &str) -> String {
    format!("refused {who}: TLS to the daemon failed: {detail}; refused whatever failmode= says")
}

fn finish(pamh: &mut PamHandle, args: &Args, origin: &Origin, decision: Decision) -> PamResultCode {
    let who = format!(
        "user={} tenant={} service={} rhost={}",
        origin.user,
        origin.tenant,
        origin.service,
        origin.rhost.as_deref().unwrap_or("-")
    );
    match decision {
        Decision::Allow { factor, fail_open } => {
            if let Some(detail) = fail_open {
                ffi::syslog(
                    pamh,
                    ffi::LOG_ALERT,
                    &format!(
                        "failmode=safe: {who} let in WITHOUT a second factor because portcullis at {} is unreachable: no connection could be made ({detail}); tenant {} allows it (pam_fail_mode = \"safe\"), and the login is kept in {} for the daemon's audit (sent with the next login that reaches it)",
                        target(args),
                        origin.tenant,
                        args.state_dir
                            .join(format!("{}.fail-opens", origin.tenant))
                            .display()
                    ),
                );
            } else if args.debug {
                ffi::syslog(
                    pamh,
                    ffi::LOG_DEBUG,
                    &format!("accepted {who} factor={factor}"),
                );
            }
            if ffi::putenv(pamh, FACTOR_ENV, &factor).is_err() {
                ffi::syslog(pamh, ffi::LOG_WARNING, "could not set PORTCULLIS_FACTOR");
            }
            PamResultCode::PAM_SUCCESS
        }
        Decision::Reject => {
            ffi::syslog(
                pamh,
                ffi::LOG_INFO,
                &format!("refused {who} (the daemon's audit log says why)"),
            );
            PamResultCode::PAM_AUTH_ERR
        }
        Decision::Unavailable { detail, why } => {
            ffi::syslog(
                pamh,
                ffi::LOG_ERR,
                &unavailable_log(
                    &who,
                    &origin.tenant,
                    &target(args),
                    args.failmode,
                    &detail,
                    why,
                ),
            );
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        }
        Decision::Tls(detail) => {
            // Not an outage and not an answer of the daemon (it never saw the request).
            ffi::syslog(pamh, ffi::LOG_ERR, &tls_log(&who, &detail));
            PamResultCode::PAM_SERVICE_ERR
        }
        Decision::DaemonError(code, message) => {
            ffi::syslog(
                pamh,
                ffi::LOG_ERR,
                &format!(
                    "refused {who}: the daemon answered {}: {message}",
                    code.as_str()
                ),
            );
            // Not a wrong password or code: modules such as pam_faillock must not count
            // an outage of the daemon's database, or a setup error, as a failed login.
            match code {
                ErrorCode::Internal | ErrorCode::Busy => PamResultCode::PAM_AUTHINFO_UNAVAIL,
                _ => PamResultCode::PAM_SERVICE_ERR,
            }
        }
        Decision::Setup(detail) => {
            // Not an outage: failmode=safe does not apply, and pam_faillock must not count it.
            ffi::syslog(
                pamh,
                ffi::LOG_ERR,
                &format!(
                    "refused {who}: cannot ask portcullis at {}: {detail}; this is a setup error on this host, refused whatever failmode= says",
                    target(args)
                ),
            );
            PamResultCode::PAM_SERVICE_ERR
        }
        Decision::Conversation => {
            if args.debug {
                ffi::syslog(
                    pamh,
                    ffi::LOG_DEBUG,
                    &format!("conversation ended for {who}"),
                );
            }
            PamResultCode::PAM_CONV_ERR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: &str = "user=alice tenant=acme service=sshd rhost=-";

    #[test]
    fn the_unavailable_log_names_the_real_failmode_and_why_it_did_not_let_the_user_in() {
        let log = |failmode, why| {
            unavailable_log(
                WHO,
                "acme",
                "/tmp/walk2/pam.sock",
                failmode,
                "connect: refused",
                why,
            )
        };
        assert_eq!(
            log(FailMode::Secure, Unavailable::FailmodeSecure),
            "refused user=alice tenant=acme service=sshd rhost=-: portcullis is unreachable at /tmp/walk2/pam.sock (connect: refused); failmode=secure"
        );
        let got = log(FailMode::Safe, Unavailable::PasswordNotChecked);
        assert!(
            got.ends_with("portcullis is unreachable at /tmp/walk2/pam.sock (connect: refused); failmode=safe does not apply: the password was not checked yet (first_factor=portcullis)"),
            "{got}"
        );
        assert!(!got.contains("failmode=secure"), "{got}");
        let got = log(FailMode::Safe, Unavailable::Stalled);
        assert!(
            got.ends_with("portcullis at /tmp/walk2/pam.sock took the request and did not answer (connect: refused); failmode=safe does not apply: the daemon took the request and did not answer"),
            "{got}"
        );
        assert!(!got.contains("unreachable"), "{got}");
        let got = log(FailMode::Secure, Unavailable::Stalled);
        assert!(
            got.ends_with(
                "took the request and did not answer (connect: refused); failmode=secure"
            ),
            "{got}"
        );
        let got = log(FailMode::Safe, Unavailable::NotDelivered);
        assert!(
            got.contains("a connection to /tmp/walk2/pam.sock was made, and then closed before the request was delivered")
                && got.ends_with("failmode=safe does not apply: something listens at /tmp/walk2/pam.sock, so this is no outage (only a failed connect is)"),
            "{got}"
        );
        assert!(!got.contains("unreachable"), "{got}");
        let got = log(FailMode::Secure, Unavailable::NotDelivered);
        assert!(got.ends_with("; failmode=secure"), "{got}");
    }

    #[test]
    fn the_log_says_why_the_tenant_did_not_let_a_safe_login_in() {
        let log = |why| {
            unavailable_log(
                WHO,
                "acme",
                "/run/portcullis/pam.sock",
                FailMode::Safe,
                "connect: refused",
                why,
            )
        };
        let got = log(Unavailable::TenantSecure);
        assert!(
            got.starts_with("refused user=alice tenant=acme service=sshd rhost=-: portcullis is unreachable at /run/portcullis/pam.sock (connect: refused); failmode=safe does not apply: tenant acme does not allow it"),
            "{got}"
        );
        assert!(
            got.contains(r#"set pam_fail_mode = "safe" in [tenants.acme] of the daemon's config"#),
            "{got}"
        );
        let got = log(Unavailable::NotGranted);
        assert!(
            got.contains("failmode=safe does not apply: this host has not heard from the daemon that tenant acme allows it")
                && got.contains(r#"pam_fail_mode = "safe" in [tenants.acme]"#)
                && got.ends_with("it learns that at the next login that reaches the daemon"),
            "{got}"
        );
        let got = log(Unavailable::NotAudited);
        assert!(
            got.ends_with("a fail-open that cannot be audited is not done"),
            "{got}"
        );
    }

    #[test]
    fn daemon_user_is_looked_up_and_a_user_that_does_not_exist_is_a_setup_error() {
        assert_eq!(daemon_user_uid("root"), Ok(("root".to_string(), 0)));
        let e = daemon_user_uid("portcullis-no-such-user").unwrap_err();
        assert!(
            e.starts_with("daemon_user=portcullis-no-such-user: no such user on this host"),
            "{e}"
        );
    }

    #[test]
    fn a_tls_failure_is_not_logged_as_an_answer_of_the_daemon() {
        let got = tls_log(
            WHO,
            "handshake with https://127.0.0.1:18080: invalid peer certificate: UnknownIssuer",
        );
        assert_eq!(
            got,
            "refused user=alice tenant=acme service=sshd rhost=-: TLS to the daemon failed: handshake with https://127.0.0.1:18080: invalid peer certificate: UnknownIssuer; refused whatever failmode= says"
        );
        assert!(!got.contains("answered"), "{got}");
    }
}
