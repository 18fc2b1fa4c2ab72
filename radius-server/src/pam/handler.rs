//! One PAM step request -> Engine -> one response. Deciding is the Engine's job.

use std::sync::Arc;

use portcullis_core::config::{LoginMode, PamConfig, Unenrolled as EngineUnenrolled};
use portcullis_core::engine::{
    AnswerRequest, Channel, Engine, Expects as EngineExpects, LoginRequest, Step,
};
use portcullis_core::protocol::{
    ErrorCode, Expects, FirstFactor, Origin, Request, RequestStep, Response, ResponseStep,
    Unenrolled,
};
use zeroize::Zeroizing;

/// What the handler needs from the config.
#[derive(Debug, Clone)]
pub struct PamSettings {
    /// The prompt for a code.
    pub prompt: String,
}

impl PamSettings {
    pub fn from_config(cfg: &PamConfig) -> Self {
        Self {
            prompt: cfg.prompt.clone(),
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
    let result = match req.step {
        RequestStep::Start {
            first_factor,
            password,
            unenrolled,
        } => {
            let (mode, credential) = match (first_factor, password) {
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
                Unenrolled::Enroll => {
                    tracing::warn!(tenant = %origin.tenant, service = %origin.service,
                        "unenrolled=enroll: enrolment during login is not available yet; treated as deny");
                    EngineUnenrolled::Deny
                }
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
            };
            engine.answer(&req)
        }
        RequestStep::Poll { .. } => {
            return Response::error(
                ErrorCode::Unsupported,
                "push approval is not available in this version of portcullis",
            )
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
        Step::Prompt {
            txn,
            text,
            echo,
            expects,
        } => ResponseStep::Prompt {
            txn,
            text,
            echo,
            expects: match expects {
                EngineExpects::Password => Expects::Password,
                EngineExpects::Code => Expects::Code,
            },
            choices: Vec::new(),
        },
    }
}
