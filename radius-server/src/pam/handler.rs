//! One PAM step request -> Engine -> one response. Deciding is the Engine's job.
//!
//! Both transports (the Unix socket and `POST /v1/pam/step`) hand the request body to
//! [`answer`]: it decodes it, binds it to the caller (a remote host's tenant and name come
//! from its token, never from the body) and runs the Engine off the async loop.

use std::sync::Arc;

use crate::push::PushHub;
use portcullis_core::config::{LoginMode, PamConfig, Unenrolled as EngineUnenrolled};
use portcullis_core::engine::{
    AnswerRequest, Channel, Engine, Expects as EngineExpects, LoginRequest, Step,
};
use portcullis_core::model::PamHost;
use portcullis_core::protocol;
use portcullis_core::protocol::{
    Choice, ErrorCode, Expects, FirstFactor, Origin, Request, RequestStep, Response, ResponseStep,
    Unenrolled,
};
use zeroize::{Zeroize, Zeroizing};

/// What the handler needs from the config, and the push hub that wakes held polls.
#[derive(Clone)]
pub struct PamSettings {
    /// The prompt for a code.
    pub prompt: String,
    /// Where push approvals are announced (the daemon's one hub).
    pub push_hub: Arc<PushHub>,
}

impl std::fmt::Debug for PamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PamSettings")
            .field("prompt", &self.prompt)
            .finish_non_exhaustive()
    }
}

impl PamSettings {
    /// From the config, with the daemon's push hub.
    pub fn new(cfg: &PamConfig, push_hub: Arc<PushHub>) -> Self {
        Self {
            prompt: cfg.prompt.clone(),
            push_hub,
        }
    }
}

/// How long a push poll is held for the decision before "not approved yet" is answered:
/// the protocol's, which the module adds to its deadline for a poll.
const POLL_HOLD: std::time::Duration = portcullis_core::protocol::POLL_HOLD;

/// Who sent a request: decides which fields of its origin are trusted.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A module on this machine, over the Unix socket (its uid was checked).
    Socket { uid: u32 },
    /// A registered remote host (its token was checked).
    Host(PamHost),
}

/// Answer one request body from `caller`. The body is zeroised once decoded (it may hold a
/// password or code).
pub async fn answer(
    engine: &Arc<Engine>,
    settings: &PamSettings,
    mut body: Vec<u8>,
    caller: &Caller,
) -> Response {
    let decoded = protocol::decode_request(&body);
    body.zeroize();
    let mut req = match decoded {
        Ok(req) => req,
        Err(e) => {
            tracing::debug!(caller = ?caller, error = %e, "PAM: bad request");
            return Response::error(e.code(), e.to_string());
        }
    };
    if let Caller::Host(host) = caller {
        if req.origin.tenant != host.tenant {
            tracing::warn!(host = %host.name, host_tenant = %host.tenant, asked_tenant = %req.origin.tenant,
                user = %req.origin.user, "PAM over HTTPS: a host asked for another tenant than its token's; refused");
            return Response::error(
                ErrorCode::Forbidden,
                "this host's token is not registered for the tenant the request names (check the module's tenant= argument)",
            );
        }
        // The Engine (rules, audit) sees the registered name, not what the host calls itself.
        req.origin.host = host.name.clone();
    }
    tracing::debug!(caller = ?caller, tenant = %req.origin.tenant, user = %req.origin.user,
        service = %req.origin.service, host = %req.origin.host, "PAM request");
    if let RequestStep::Poll { txn } = &req.step {
        // Hold a poll briefly: an approval landing meanwhile is answered at once.
        if let Some(id) = portcullis_core::engine::transaction_of(txn) {
            let until = tokio::time::Instant::now() + POLL_HOLD;
            settings.push_hub.wait(engine, id, until).await;
        }
    }
    let (engine, settings) = (engine.clone(), settings.clone());
    match tokio::task::spawn_blocking(move || handle(&engine, &settings, req)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "PAM request task failed; refused");
            Response::error(ErrorCode::Internal, "the daemon failed; see its log")
        }
    }
}

fn channel(origin: &Origin) -> Channel {
    Channel::Pam {
        host: origin.host.clone(),
        service: origin.service.clone(),
        rhost: origin.rhost.clone(),
        tty: origin.tty.clone(),
    }
}

/// Answer one request (blocking: the Engine may hash a password; run it off the loop).
pub fn handle(engine: &Arc<Engine>, settings: &PamSettings, req: Request) -> Response {
    let origin = req.origin;
    // A tenant= typo is a setup error of the host, not a failed login: answered so that
    // the module returns PAM_SERVICE_ERR, which pam_faillock does not count against users.
    match engine.tenant_exists(&origin.tenant) {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(tenant = %origin.tenant, service = %origin.service, host = %origin.host,
                "PAM: the module names a tenant that does not exist; check tenant= in its PAM line");
            return Response::error(
                ErrorCode::Unsupported,
                format!(
                    "tenant '{}' does not exist: check tenant= in the PAM line (portcullis tenant list)",
                    origin.tenant
                ),
            );
        }
        Err(e) => {
            tracing::error!(tenant = %origin.tenant, error = %e, "PAM: tenant lookup failed; refused");
            return Response::error(
                ErrorCode::Internal,
                "the daemon could not decide this login; see its log",
            );
        }
    }
    let result = match req.step {
        RequestStep::Start {
            first_factor,
            password,
            unenrolled,
        } => {
            let (mode, credential) = match (first_factor, password) {
                // The module believes the daemon checks the password (and, with
                // failmode=safe, that a code prompt proves it was right); the Engine would
                // log in on the code alone. Refused as a setup error, never a silent
                // downgrade to one factor.
                (FirstFactor::Portcullis, Some(_))
                    if engine.delegates_first_factor(&origin.tenant, &channel(&origin)) =>
                {
                    tracing::error!(tenant = %origin.tenant, service = %origin.service, host = %origin.host,
                        "PAM: the module sends a password (first_factor=portcullis) but this tenant's first_factor is \"none\"; refused");
                    return Response::error(
                        ErrorCode::Unsupported,
                        "this tenant's first factor is checked elsewhere (first_factor = \"none\"): the password would not be checked; use first_factor=stack or first_factor=none in the PAM line, or give the tenant a first factor",
                    );
                }
                (FirstFactor::Portcullis, Some(pw)) => (
                    LoginMode::Challenge,
                    Zeroizing::new(pw.expose().as_bytes().to_vec()),
                ),
                (FirstFactor::Portcullis, None) => {
                    return Response::error(
                        ErrorCode::Malformed,
                        "first_factor \"portcullis\" needs the password in \"password\"",
                    )
                }
                (FirstFactor::Delegated, None) => (LoginMode::OtpOnly, Zeroizing::new(Vec::new())),
                (FirstFactor::Delegated, Some(_)) => return Response::error(
                    ErrorCode::Malformed,
                    "first_factor \"delegated\": the password stays on the host; do not send it",
                ),
            };
            let unenrolled = match unenrolled {
                Unenrolled::Allow => EngineUnenrolled::Allow,
                Unenrolled::Deny => EngineUnenrolled::Deny,
                Unenrolled::Enroll => EngineUnenrolled::Enroll,
            };
            let login = LoginRequest {
                tenant: origin.tenant.clone(),
                channel: channel(&origin),
                source: origin.source(),
                mode,
                username: origin.user.clone(),
                credential,
                delimiter: ",".into(),
                prompt: settings.prompt.clone(),
                unenrolled,
                source_limited: true,
            };
            engine.start(&login)
        }
        RequestStep::Answer { txn, answer } => {
            let req = AnswerRequest {
                tenant: origin.tenant.clone(),
                channel: channel(&origin),
                source: origin.source(),
                username: origin.user.clone(),
                txn,
                answer: Zeroizing::new(answer.expose().as_bytes().to_vec()),
                prompt: settings.prompt.clone(),
                source_limited: true,
            };
            engine.answer(&req)
        }
        // The server has already waited (briefly) for the decision; an empty answer reads it.
        RequestStep::Poll { txn } => {
            let req = AnswerRequest {
                tenant: origin.tenant.clone(),
                channel: channel(&origin),
                source: origin.source(),
                username: origin.user.clone(),
                txn,
                answer: Zeroizing::new(Vec::new()),
                prompt: settings.prompt.clone(),
                source_limited: true,
            };
            engine.answer(&req)
        }
    };
    match result {
        Ok(step) => Response::new(translate(step)),
        Err(e) => {
            // Fail closed: the module denies on an error frame.
            tracing::error!(tenant = %origin.tenant, user = %origin.user, service = %origin.service,
                error = %e, "PAM login failed with an internal error; refused");
            Response::error(
                ErrorCode::Internal,
                "the daemon could not decide this login; see its log",
            )
        }
    }
}

fn translate(step: Step) -> ResponseStep {
    match step {
        Step::Accept { factors_used, .. } => ResponseStep::Accept {
            factors: factors_used,
        },
        Step::Reject { user_message } => ResponseStep::Reject {
            message: user_message,
        },
        Step::Wait { txn, text, .. } => ResponseStep::Wait { txn, text },
        Step::Prompt {
            txn,
            text,
            echo,
            expects,
            choices,
        } => ResponseStep::Prompt {
            txn,
            text,
            echo,
            expects: match expects {
                EngineExpects::Password => Expects::Password,
                EngineExpects::Code => Expects::Code,
                EngineExpects::Choice => Expects::Choice,
            },
            choices: choices
                .into_iter()
                .map(|c| Choice {
                    id: c.id,
                    label: c.label,
                })
                .collect(),
        },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use portcullis_core::admin::{Admin, NewPassword};
    use portcullis_core::clock::ManualClock;
    use portcullis_core::config::PasswordConfig;
    use portcullis_core::engine::EngineSettings;
    use portcullis_core::password::PasswordHasher;
    use portcullis_core::protocol::{Secret, VERSION};
    use portcullis_core::secrets::MasterKey;
    use portcullis_core::store::{SqliteStore, Store};

    /// An Engine on an in-memory store: tenant acme, alice (with TOTP) and bob.
    pub(in crate::pam) fn engine() -> Arc<Engine> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let clock = Arc::new(ManualClock::new(1_800_000_005));
        let key = Arc::new(MasterKey::from_bytes([7; 32]));
        let hasher = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..PasswordConfig::default()
        })
        .unwrap();
        let admin = Admin::new(
            store.clone(),
            clock.clone(),
            key.clone(),
            hasher.clone(),
            "Test".into(),
            1,
        );
        admin.add_tenant("acme").unwrap();
        for user in ["alice", "bob"] {
            admin
                .add_user(
                    "acme",
                    user,
                    NewPassword::Plain(Zeroizing::new(b"hunter2".to_vec())),
                    None,
                    None,
                    vec![],
                )
                .unwrap();
        }
        admin
            .enroll_totp(
                "acme",
                "alice",
                Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
                6,
                "SHA1",
            )
            .unwrap();
        Arc::new(Engine::new(
            store,
            clock,
            key,
            hasher,
            EngineSettings::default(),
        ))
    }

    fn request(user: &str, step: RequestStep) -> Request {
        Request {
            v: VERSION,
            origin: Origin {
                tenant: "acme".into(),
                user: user.into(),
                service: "sshd".into(),
                host: "web1".into(),
                rhost: Some("192.0.2.7".into()),
                tty: None,
                ruser: None,
            },
            step,
        }
    }

    fn settings() -> PamSettings {
        PamSettings::new(&PamConfig::default(), Default::default())
    }

    fn start(ff: FirstFactor, pw: Option<&str>, unenrolled: Unenrolled) -> RequestStep {
        RequestStep::Start {
            first_factor: ff,
            password: pw.map(|p| Secret::new(p.into())),
            unenrolled,
        }
    }

    #[test]
    fn password_then_code_prompt_with_the_configured_text() {
        let e = engine();
        let r = handle(
            &e,
            &settings(),
            request(
                "alice",
                start(FirstFactor::Portcullis, Some("hunter2"), Unenrolled::Deny),
            ),
        );
        match r.step {
            ResponseStep::Prompt {
                text,
                echo,
                expects,
                ..
            } => {
                assert_eq!(text, "Verification code (app): ");
                assert!(!echo);
                assert_eq!(expects, Expects::Code);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_password_for_a_tenant_whose_first_factor_is_none_is_refused() {
        // The module would take a code prompt for proof the password was right, and the
        // Engine would never check it.
        let mut e = Arc::into_inner(engine()).unwrap();
        e.set_first_factor("acme", Arc::new(portcullis_core::first_factor::Delegated));
        let e = Arc::new(e);
        let r = handle(
            &e,
            &settings(),
            request(
                "alice",
                start(
                    FirstFactor::Portcullis,
                    Some("not-the-password"),
                    Unenrolled::Deny,
                ),
            ),
        );
        match r.step {
            ResponseStep::Error { code, message } => {
                assert_eq!(code, ErrorCode::Unsupported);
                assert!(message.contains("first_factor=stack"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The host that says the first factor is checked elsewhere gets the code prompt.
        let r = handle(
            &e,
            &settings(),
            request(
                "alice",
                start(FirstFactor::Delegated, None, Unenrolled::Deny),
            ),
        );
        assert!(
            matches!(r.step, ResponseStep::Prompt { .. }),
            "{:?}",
            r.step
        );
    }

    #[test]
    fn the_password_travels_only_with_first_factor_portcullis() {
        let e = engine();
        let r = handle(
            &e,
            &settings(),
            request(
                "alice",
                start(FirstFactor::Portcullis, None, Unenrolled::Deny),
            ),
        );
        assert!(matches!(
            r.step,
            ResponseStep::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ));
        let r = handle(
            &e,
            &settings(),
            request(
                "alice",
                start(FirstFactor::Delegated, Some("hunter2"), Unenrolled::Deny),
            ),
        );
        assert!(matches!(
            r.step,
            ResponseStep::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ));
    }

    #[test]
    fn enroll_without_public_url_acts_as_deny_and_allow_lets_the_unenrolled_in() {
        let e = engine();
        for (policy, accepted) in [
            (Unenrolled::Enroll, false),
            (Unenrolled::Deny, false),
            (Unenrolled::Allow, true),
        ] {
            let r = handle(
                &e,
                &settings(),
                request("bob", start(FirstFactor::Delegated, None, policy)),
            );
            assert_eq!(
                matches!(r.step, ResponseStep::Accept { .. }),
                accepted,
                "{policy:?}: {r:?}"
            );
        }
    }

    fn host(tenant: &str, name: &str) -> Caller {
        Caller::Host(PamHost {
            id: 1,
            tenant_id: 1,
            tenant: tenant.into(),
            name: name.into(),
            created_at: 0,
            last_seen_at: None,
            revoked: false,
        })
    }

    fn body(req: &Request) -> Vec<u8> {
        serde_json::to_vec(req).unwrap()
    }

    #[tokio::test]
    async fn a_host_may_ask_only_for_its_own_tenant() {
        let e = engine();
        let req = request(
            "alice",
            start(FirstFactor::Portcullis, Some("hunter2"), Unenrolled::Deny),
        );
        let r = answer(&e, &settings(), body(&req), &host("other", "web9")).await;
        assert!(
            matches!(
                r.step,
                ResponseStep::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{r:?}"
        );
        let r = answer(&e, &settings(), body(&req), &host("acme", "web9")).await;
        assert!(matches!(r.step, ResponseStep::Prompt { .. }), "{r:?}");
        let r = answer(&e, &settings(), body(&req), &Caller::Socket { uid: 0 }).await;
        assert!(matches!(r.step, ResponseStep::Prompt { .. }), "{r:?}");
        let r = answer(
            &e,
            &settings(),
            b"{not json".to_vec(),
            &Caller::Socket { uid: 0 },
        )
        .await;
        assert!(matches!(
            r.step,
            ResponseStep::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ));
    }

    #[test]
    fn poll_of_an_unknown_transaction_ends_the_login() {
        let r = handle(
            &engine(),
            &settings(),
            request("alice", RequestStep::Poll { txn: "x.0".into() }),
        );
        assert!(
            matches!(r.step, ResponseStep::Reject { .. }),
            "{:?}",
            r.step
        );
    }
}
