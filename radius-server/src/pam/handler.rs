//! One PAM step request -> Engine -> one response. Deciding is the Engine's job.
//!
//! Both transports (the Unix socket and `POST /v1/pam/step`) hand the request body to
//! [`answer`]: it decodes it, binds it to the caller (a remote host's tenant and name come
//! from its token, never from the body) and runs the Engine off the async loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::push::PushHub;
use portcullis_core::config::{
    FailMode, LoginMode, PamConfig, TenantConfig, Unenrolled as EngineUnenrolled,
};
use portcullis_core::engine::{
    AnswerRequest, Channel, Engine, Expects as EngineExpects, LoginRequest, Step,
};
use portcullis_core::model::{AuditRecord, AuditResult, PamHost};
use portcullis_core::protocol;
use portcullis_core::protocol::{
    Choice, ErrorCode, Expects, FailOpenReport, FirstFactor, Origin, Request, RequestStep,
    Response, ResponseStep, Unenrolled,
};
use portcullis_core::store::FailOpenRecord;
use zeroize::{Zeroize, Zeroizing};

/// What the handler needs from the config, and the push hub that wakes held polls.
#[derive(Clone)]
pub struct PamSettings {
    /// The prompt for a code.
    pub prompt: String,
    /// Where push approvals are announced (the daemon's one hub).
    pub push_hub: Arc<PushHub>,
    /// `[tenants.NAME] pam_fail_mode` of the tenants that set it (the others: secure).
    pub fail_modes: Arc<HashMap<String, FailMode>>,
}

impl std::fmt::Debug for PamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PamSettings")
            .field("prompt", &self.prompt)
            .field("fail_modes", &self.fail_modes)
            .finish_non_exhaustive()
    }
}

impl PamSettings {
    /// From the config, with the daemon's push hub.
    pub fn new(cfg: &PamConfig, push_hub: Arc<PushHub>) -> Self {
        Self {
            prompt: cfg.prompt.clone(),
            push_hub,
            fail_modes: Arc::default(),
        }
    }

    /// With the tenants' `pam_fail_mode` from `[tenants.NAME]`.
    pub fn with_tenants(mut self, tenants: &BTreeMap<String, TenantConfig>) -> Self {
        self.fail_modes = Arc::new(
            tenants
                .iter()
                .map(|(name, t)| (name.clone(), t.pam_fail_mode))
                .collect(),
        );
        self
    }

    /// The tenant's `pam_fail_mode` as the protocol tells it to hosts.
    fn fail_mode(&self, tenant: &str) -> protocol::FailMode {
        match self.fail_modes.get(tenant) {
            Some(FailMode::Safe) => protocol::FailMode::Safe,
            Some(FailMode::Secure) | None => protocol::FailMode::Secure,
        }
    }
}

/// How far back a fail-open report's time may lie: a host's clock that is off (or a spool
/// kept for long) must not place a record anywhere in the audit log.
const FAIL_OPEN_MAX_AGE: i64 = 30 * 24 * 3600;

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
/// Every answer to a request whose tenant exists carries the tenant's `pam_fail_mode`.
pub fn handle(engine: &Arc<Engine>, settings: &PamSettings, req: Request) -> Response {
    let origin = &req.origin;
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
    let fail_mode = settings.fail_mode(&origin.tenant);
    let mut response = handle_step(engine, settings, req);
    response.fail_mode = Some(fail_mode);
    response
}

/// Audit each login that a host let in without a second factor (`failmode=safe`) while
/// it could not reach the daemon: one accept record per report, for the request's tenant
/// and host (over HTTPS the registered name), whatever the tenant says now (it happened).
fn audit_fail_opens(
    engine: &Engine,
    origin: &Origin,
    reports: &[FailOpenReport],
) -> Result<(), portcullis_core::store::StoreError> {
    if reports.is_empty() {
        return Ok(());
    }
    let now = engine.now();
    let records: Vec<FailOpenRecord> = reports
        .iter()
        .map(|r| FailOpenRecord {
            id: r.id.clone(),
            audit: fail_open_record(now, origin, r),
        })
        .collect();
    let recorded = engine.store().record_fail_opens(&records, now)?;
    tracing::warn!(tenant = %origin.tenant, host = %origin.host, reports = reports.len(),
        recorded, users = %reports.iter().map(|r| r.user.as_str()).collect::<Vec<_>>().join(","),
        "PAM: host reports logins it let in WITHOUT a second factor (failmode=safe) while the daemon was unreachable; audited as FAIL-OPEN (\"recorded\": those not sent before)");
    Ok(())
}

/// The audit record of one fail-open report received at `now`.
fn fail_open_record(now: i64, origin: &Origin, r: &FailOpenReport) -> AuditRecord {
    let at = i64::try_from(r.at).unwrap_or(i64::MAX);
    let time = at.clamp(now.saturating_sub(FAIL_OPEN_MAX_AGE), now);
    let clamped = if time != at {
        format!(" (the host reported time {}; clamped)", r.at)
    } else {
        String::new()
    };
    AuditRecord {
        time,
        tenant: origin.tenant.clone(),
        username: r.user.clone(),
        channel: "pam".into(),
        client: r.service.clone(),
        source: r.rhost.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| "local".into()),
        mode: "fail-open".into(),
        factors: Vec::new(),
        result: AuditResult::Accept,
        reason: format!(
            "FAIL-OPEN: let in WITHOUT a second factor by failmode=safe on host {} because it could not reach the daemon: {}{clamped}",
            origin.host, r.why
        ),
        transaction: None,
        host: Some(origin.host.clone()),
    }
}

/// Answer one request of a tenant that exists.
fn handle_step(engine: &Arc<Engine>, settings: &PamSettings, req: Request) -> Response {
    let origin = req.origin;
    let result = match req.step {
        RequestStep::Start {
            first_factor,
            password,
            unenrolled,
            fail_opens,
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
            // Recorded before the login is decided (these happened, whatever it becomes); an
            // error frame makes the host keep them and send them again.
            if let Err(e) = audit_fail_opens(engine, &origin, &fail_opens) {
                tracing::error!(tenant = %origin.tenant, host = %origin.host, error = %e,
                    "PAM: cannot audit the host's fail-open reports; refused (the host keeps them)");
                return Response::error(
                    ErrorCode::Internal,
                    "the daemon could not record this host's fail-open reports; see its log",
                );
            }
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
            fail_opens: vec![],
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

    fn settings_with(tenant: &str, mode: FailMode) -> PamSettings {
        let mut tenants = BTreeMap::new();
        tenants.insert(
            tenant.to_string(),
            TenantConfig {
                pam_fail_mode: mode,
                ..TenantConfig::default()
            },
        );
        settings().with_tenants(&tenants)
    }

    #[test]
    fn every_answer_for_an_existing_tenant_tells_its_pam_fail_mode() {
        let e = engine();
        for (settings, want) in [
            (settings(), protocol::FailMode::Secure),
            (
                settings_with("acme", FailMode::Secure),
                protocol::FailMode::Secure,
            ),
            (
                settings_with("acme", FailMode::Safe),
                protocol::FailMode::Safe,
            ),
            // Another tenant's setting is not acme's.
            (
                settings_with("other", FailMode::Safe),
                protocol::FailMode::Secure,
            ),
        ] {
            // A prompt, a reject, and an error frame about the request.
            for step in [
                start(FirstFactor::Portcullis, Some("hunter2"), Unenrolled::Deny),
                start(FirstFactor::Portcullis, Some("wrong"), Unenrolled::Deny),
                start(FirstFactor::Portcullis, None, Unenrolled::Deny),
                RequestStep::Poll { txn: "x.0".into() },
            ] {
                let r = handle(&e, &settings, request("alice", step));
                assert_eq!(r.fail_mode, Some(want), "{r:?}");
            }
        }
        // A tenant that does not exist: nothing to tell.
        let mut req = request(
            "alice",
            start(FirstFactor::Delegated, None, Unenrolled::Deny),
        );
        req.origin.tenant = "nope".into();
        let r = handle(&e, &settings_with("nope", FailMode::Safe), req);
        assert!(matches!(r.step, ResponseStep::Error { .. }), "{r:?}");
        assert_eq!(r.fail_mode, None);
    }

    fn report(user: &str, at: u64, rhost: Option<&str>) -> FailOpenReport {
        FailOpenReport {
            id: Some(format!("{user}-{at}")),
            at,
            user: user.into(),
            service: "sudo".into(),
            rhost: rhost.map(Into::into),
            why: "connect to /run/portcullis/pam.sock: connection refused".into(),
        }
    }

    fn fail_open_records(e: &Engine) -> Vec<AuditRecord> {
        e.store()
            .list_audit(&portcullis_core::model::AuditFilter {
                tenant: Some("acme".into()),
                username: None,
                since: None,
                limit: 100,
            })
            .unwrap()
            .into_iter()
            .filter(|r| r.mode == "fail-open")
            .collect()
    }

    #[tokio::test]
    async fn fail_open_reports_are_audited_for_the_tenant_and_the_registered_host() {
        let e = engine();
        let now = e.now();
        let reports = vec![
            report("alice", (now - 60) as u64, Some("192.0.2.9")),
            // A clock far behind, and one in the future: clamped into the last 30 days.
            report("bob", 1, None),
            report("carol", (now + 3600) as u64, None),
        ];
        let req = request(
            "alice",
            RequestStep::Start {
                first_factor: FirstFactor::Portcullis,
                password: Some(Secret::new("hunter2".into())),
                unenrolled: Unenrolled::Deny,
                fail_opens: reports,
            },
        );
        // Over HTTPS: the host is the token's name, not what the request says; recorded
        // although the tenant says secure now.
        let r = answer(&e, &settings(), body(&req), &host("acme", "web9")).await;
        assert!(matches!(r.step, ResponseStep::Prompt { .. }), "{r:?}");
        assert_eq!(r.fail_mode, Some(protocol::FailMode::Secure));
        let mut got = fail_open_records(&e);
        got.sort_by(|a, b| a.username.cmp(&b.username));
        assert_eq!(got.len(), 3, "{got:?}");
        let alice = &got[0];
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.time, now - 60);
        assert_eq!(alice.result, AuditResult::Accept);
        assert_eq!(
            (alice.channel.as_str(), alice.client.as_str()),
            ("pam", "sudo")
        );
        assert_eq!(alice.source, "192.0.2.9");
        assert_eq!(alice.host.as_deref(), Some("web9"));
        assert!(alice.factors.is_empty());
        assert!(
            alice.reason.starts_with("FAIL-OPEN: let in WITHOUT a second factor by failmode=safe on host web9 because it could not reach the daemon: connect to /run/portcullis/pam.sock: connection refused"),
            "{}",
            alice.reason
        );
        assert_eq!(got[1].time, now - FAIL_OPEN_MAX_AGE);
        assert_eq!(got[1].source, "local");
        assert!(got[1].reason.contains("clamped"), "{}", got[1].reason);
        assert_eq!(got[2].time, now);

        // Over the socket: the host the module names.
        let req = request(
            "alice",
            RequestStep::Start {
                first_factor: FirstFactor::Delegated,
                password: None,
                unenrolled: Unenrolled::Deny,
                fail_opens: vec![report("dave", now as u64, None)],
            },
        );
        let r = answer(&e, &settings(), body(&req), &Caller::Socket { uid: 0 }).await;
        assert!(!matches!(r.step, ResponseStep::Error { .. }), "{r:?}");
        let dave: Vec<_> = fail_open_records(&e)
            .into_iter()
            .filter(|r| r.username == "dave")
            .collect();
        assert_eq!(dave.len(), 1);
        assert_eq!(dave[0].host.as_deref(), Some("web1"));
    }

    #[tokio::test]
    async fn a_fail_open_report_sent_again_is_recorded_once() {
        let e = engine();
        let now = e.now() as u64;
        let start = |fail_opens: Vec<FailOpenReport>| {
            request(
                "alice",
                RequestStep::Start {
                    first_factor: FirstFactor::Delegated,
                    password: None,
                    unenrolled: Unenrolled::Deny,
                    fail_opens,
                },
            )
        };
        let sent = vec![report("bob", now, None), report("carol", now, None)];
        // The module did not get the answer (or died before removing its claim) and
        // sends the same reports with its next login, with one new one.
        let mut again = sent.clone();
        again.push(report("dave", now, None));
        let from_web1 = Caller::Socket { uid: 0 };
        for reports in [sent, again.clone()] {
            let r = answer(&e, &settings(), body(&start(reports)), &from_web1).await;
            assert!(!matches!(r.step, ResponseStep::Error { .. }), "{r:?}");
        }
        let users = |e: &Engine| {
            let mut u: Vec<_> = fail_open_records(e)
                .into_iter()
                .map(|r| format!("{}@{}", r.username, r.host.unwrap_or_default()))
                .collect();
            u.sort();
            u
        };
        assert_eq!(users(&e), ["bob@web1", "carol@web1", "dave@web1"]);
        // Another host's report is its own, whatever its id; a report without an id
        // (an older module) is recorded each time.
        let mut old = report("erin", now, None);
        old.id = None;
        again.push(old);
        for _ in 0..2 {
            let r = answer(
                &e,
                &settings(),
                body(&start(again.clone())),
                &host("acme", "web9"),
            )
            .await;
            assert!(!matches!(r.step, ResponseStep::Error { .. }), "{r:?}");
        }
        assert_eq!(
            users(&e),
            [
                "bob@web1",
                "bob@web9",
                "carol@web1",
                "carol@web9",
                "dave@web1",
                "dave@web9",
                "erin@web9",
                "erin@web9"
            ]
        );
    }

    #[tokio::test]
    async fn too_many_or_too_long_fail_open_reports_are_malformed_and_nothing_is_audited() {
        let e = engine();
        let now = e.now() as u64;
        for reports in [
            (0..=protocol::MAX_FAIL_OPENS)
                .map(|_| report("alice", now, None))
                .collect::<Vec<_>>(),
            vec![report(
                &"x".repeat(protocol::MAX_REPORT_USER + 1),
                now,
                None,
            )],
        ] {
            let req = request(
                "alice",
                RequestStep::Start {
                    first_factor: FirstFactor::Delegated,
                    password: None,
                    unenrolled: Unenrolled::Deny,
                    fail_opens: reports,
                },
            );
            let r = answer(&e, &settings(), body(&req), &Caller::Socket { uid: 0 }).await;
            assert!(
                matches!(
                    r.step,
                    ResponseStep::Error {
                        code: ErrorCode::Malformed,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        assert!(fail_open_records(&e).is_empty());
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
