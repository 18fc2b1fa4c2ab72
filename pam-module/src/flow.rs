//! One login: render the daemon's steps as a conversation until it accepts or rejects.
//! Generic over the conversation and the transport so it is tested without PAM or sockets.
//! The module decides nothing but what to do when the daemon cannot be asked (failmode).

use portcullis_core::protocol::{
    Choice, ErrorCode, Expects, FirstFactor, Origin, Request, RequestStep, Response, ResponseStep,
    Secret, VERSION,
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

/// Why a step got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The daemon could not be asked: not listening, connection refused or timed out,
    /// the request not sent. `failmode` decides.
    Unreachable(String),
    /// The request was sent, and no answer came in time (or the connection closed first).
    /// To the first request of a login this is a hung daemon, an outage like the others
    /// (`failmode` decides). Later in a login the daemon has shown it is there and may
    /// have acted on the request (a code used, a push sent): a login that stalls there is
    /// refused whatever `failmode` says, or anyone who could slow the daemon down at that
    /// point (or leave a push unanswered) would get past the second factor.
    NoAnswer(String),
    /// The daemon could not be asked because of this host's setup, not an outage: the
    /// socket path is not a socket, the module may not open it (EACCES, EPERM), the path
    /// cannot be a socket address. Failing open on it would turn a typo or a wrong file
    /// mode into a login without a second factor, so this always denies (PAM_SERVICE_ERR).
    Setup(String),
    /// It answered, but not in this protocol (another version, garbage, too large): a
    /// daemon that is there but broken is no reason to fail open, so this always denies.
    Protocol(String),
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
    /// PAM_AUTHINFO_UNAVAIL: the daemon could not be asked and failmode is secure.
    Unavailable(String),
    /// PAM_SERVICE_ERR / PAM_AUTH_ERR: the daemon answered with an error frame.
    DaemonError(ErrorCode, String),
    /// PAM_SERVICE_ERR: the daemon could not be asked because of the host's setup
    /// (see [`CallError::Setup`]); never failmode=safe.
    Setup(String),
    /// PAM_CONV_ERR: the user's side failed.
    Conversation,
}

/// How many steps one login may take before the module gives up (a loop guard).
const MAX_STEPS: usize = 32;

/// Shown when the daemon cannot be asked and failmode is secure.
pub const UNAVAILABLE_MESSAGE: &str =
    "The second-factor service is not reachable, so this login is refused. Try again later or tell your administrator.";
/// Shown when the login ended without a decision from the daemon.
pub const DAEMON_ERROR_MESSAGE: &str =
    "The second-factor service could not handle this login. Tell your administrator.";
/// Default text of a push wait.
pub const WAIT_PROMPT: &str = "Approve the request on your phone, then press Enter";

/// Run one login.
pub fn run(
    args: &Args,
    origin: &Origin,
    password: Option<Secret>,
    conv: &mut dyn Conversation,
    transport: &mut dyn Transport,
) -> Decision {
    let first_factor = match args.first_factor {
        FirstFactorArg::Portcullis => FirstFactor::Portcullis,
        FirstFactorArg::Stack | FirstFactorArg::None => FirstFactor::Delegated,
    };
    // Whether a first factor has been verified by someone: the stack (or sshd) for
    // stack/none, the daemon for portcullis once it asks for the second factor.
    let mut first_factor_verified = first_factor == FirstFactor::Delegated;
    let mut step = RequestStep::Start {
        first_factor,
        password,
        unenrolled: args.unenrolled,
    };
    for _ in 0..MAX_STEPS {
        let first_request = matches!(step, RequestStep::Start { .. });
        let req = Request {
            v: VERSION,
            origin: origin.clone(),
            step,
        };
        let response = match transport.call(&req) {
            Ok(r) => r,
            Err(CallError::Unreachable(detail)) => {
                return unreachable(args, conv, detail, first_factor_verified);
            }
            Err(CallError::NoAnswer(detail)) if first_request => {
                return unreachable(args, conv, detail, first_factor_verified);
            }
            Err(CallError::NoAnswer(detail)) => {
                conv.error(UNAVAILABLE_MESSAGE);
                return Decision::Unavailable(detail);
            }
            Err(CallError::Protocol(detail)) => {
                conv.error(DAEMON_ERROR_MESSAGE);
                return Decision::DaemonError(ErrorCode::Malformed, detail);
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

fn unreachable(
    args: &Args,
    conv: &mut dyn Conversation,
    detail: String,
    first_factor_verified: bool,
) -> Decision {
    if args.failmode == FailMode::Safe && first_factor_verified {
        return Decision::Allow {
            factor: "none".into(),
            fail_open: Some(detail),
        };
    }
    conv.error(UNAVAILABLE_MESSAGE);
    Decision::Unavailable(detail)
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
    }

    impl Transport for Daemon {
        fn call(&mut self, req: &Request) -> Result<Response, CallError> {
            self.seen.push(req.clone());
            match self.replies.pop_front() {
                Some(Ok(step)) => Ok(Response::new(step)),
                Some(Err(e)) => Err(e),
                None => Err(CallError::Unreachable("no more replies".into())),
            }
        }
    }

    fn daemon(replies: Vec<Result<ResponseStep, CallError>>) -> Daemon {
        Daemon {
            replies: replies.into(),
            seen: Vec::new(),
        }
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

    #[test]
    fn code_prompt_is_echo_off_and_the_factor_is_reported() {
        let mut conv = Script::new(&["123456"]);
        let mut d = daemon(vec![Ok(prompt("Verification code (app): ")), Ok(accept())]);
        let pw = Some(Secret::new("pw".into()));
        let got = run(&args(&[]), &origin(), pw, &mut conv, &mut d);
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
        run(
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
        let got = run(&args(&[]), &origin(), None, &mut conv, &mut d);
        assert_eq!(got, Decision::Reject);
        assert_eq!(conv.errors, vec!["locked".to_string()]);
    }

    #[test]
    fn unreachable_daemon_denies_unless_failmode_safe() {
        let down = || daemon(vec![Err(CallError::Unreachable("connect: refused".into()))]);
        let mut conv = Script::new(&[]);
        let got = run(
            &args(&["first_factor=stack"]),
            &origin(),
            None,
            &mut conv,
            &mut down(),
        );
        assert!(matches!(got, Decision::Unavailable(_)));
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);

        let got = run(
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
        let got = run(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("pw".into())),
            &mut conv,
            &mut daemon(vec![
                Ok(prompt("Code: ")),
                Err(CallError::NoAnswer("receive: no answer in time".into())),
            ]),
        );
        assert!(matches!(got, Decision::Unavailable(_)), "{got:?}");
        assert_eq!(conv.errors, vec![UNAVAILABLE_MESSAGE.to_string()]);

        // A daemon that hangs on the first request of a login is an outage: failmode.
        let got = run(
            &args(&["first_factor=stack", "failmode=safe"]),
            &origin(),
            None,
            &mut Script::new(&[]),
            &mut daemon(vec![Err(CallError::NoAnswer("hung".into()))]),
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
    fn a_daemon_speaking_another_protocol_is_denied_even_with_failmode_safe() {
        let mut conv = Script::new(&[]);
        let got = run(
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
        let got = run(
            &args(&["failmode=safe"]),
            &origin(),
            Some(Secret::new("anything".into())),
            &mut Script::new(&[]),
            &mut daemon(vec![Err(CallError::Unreachable("down".into()))]),
        );
        assert!(matches!(got, Decision::Unavailable(_)));
        // Once the daemon asked for the code, the password was right.
        let got = run(
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
        let got = run(&args(&[]), &origin(), None, &mut conv, &mut d);
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
        let got = run(
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
        let got = run(
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
        let got = run(
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
        let got = run(
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
