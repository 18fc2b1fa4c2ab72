//! Who is asking: the bearer token, its role and its tenant.
//!
//! Order of the checks: no or unknown or revoked or expired token = 401 (the same answer:
//! only the daemon's log says a token expired, naming it); a tenant the token is not
//! confined to = 404 (exactly as for a tenant that does not exist, so a tenant's token
//! learns nothing about others); a role that may not = 403.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use portcullis_core::admin::{Actor, TokenCheck};
use portcullis_core::model::{AdminRole, AdminToken};

use super::error::ApiError;
use super::{blocking, HttpState};
use crate::radius::warnings::DropWarning;

/// Requests refused for their token: logged at WARN at most once a minute each kind, with
/// the count, so that probing with guessed tokens or across tenants is seen.
static UNKNOWN_TOKENS: std::sync::LazyLock<DropWarning> =
    std::sync::LazyLock::new(DropWarning::default);
static REFUSED_TOKENS: std::sync::LazyLock<DropWarning> =
    std::sync::LazyLock::new(DropWarning::default);
static EXPIRED_TOKENS: std::sync::LazyLock<DropWarning> =
    std::sync::LazyLock::new(DropWarning::default);

fn unknown_token() -> ApiError {
    if let Some(due) = UNKNOWN_TOKENS.note(std::time::Instant::now()) {
        tracing::warn!(
            "admin API request refused: no token, or an unknown or revoked one {}",
            due.count_text(" refused")
        );
    }
    ApiError::unauthorized()
}

/// A whole token past its expiry, presented to `place` ("admin API request", "admin page
/// sign-in"): refused like an unknown one, but the warning names it and says it expired, so
/// the operator knows to make a new one. The caller answers as for an unknown token.
pub fn note_expired_token(token: &AdminToken, place: &str) {
    if let Some(due) = EXPIRED_TOKENS.note(std::time::Instant::now()) {
        let at = token
            .expires_at
            .map(|t| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
                )
                .to_string()
            })
            .unwrap_or_default();
        tracing::warn!(token = %token.id, name = %token.name, role = token.role.as_str(),
            tenant = token.tenant.as_deref().unwrap_or("(all)"), expired_at = %at,
            "{place} refused: the token expired (make a new one with `portcullis token add`) {}",
            due.count_text(" refused"));
    }
}

/// A token's request outside its tenant or role: named in the warning (a token that
/// probes other tenants, or a role used for what it may not do).
fn refused(token: &AdminToken, what: &str, error: ApiError) -> ApiError {
    if let Some(due) = REFUSED_TOKENS.note(std::time::Instant::now()) {
        tracing::warn!(token = %token.id, name = %token.name, role = token.role.as_str(),
            tenant = token.tenant.as_deref().unwrap_or("(all)"),
            "admin API request refused: {what} {}", due.count_text(" refused"));
    }
    error
}

/// What a request wants to do; each role allows a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// List and create tenants (operator only).
    ManageTenants,
    ReadUsers,
    WriteUsers,
    ReadFactors,
    /// Remove one or all of a user's factors.
    ResetFactors,
    EnrolFactors,
    RecoveryCodes,
    BypassCodes,
    ReadPolicy,
    ReadClients,
    /// List, register and remove remote PAM hosts.
    ManageHosts,
    ReadAudit,
}

impl Perm {
    /// For error messages: "a token with role 'x' may not ...".
    fn describe(self) -> &'static str {
        match self {
            Perm::ManageTenants => "list or create tenants",
            Perm::ReadUsers => "read users",
            Perm::WriteUsers => "change users",
            Perm::ReadFactors => "read factors",
            Perm::ResetFactors => "remove factors",
            Perm::EnrolFactors => "enrol factors",
            Perm::RecoveryCodes => "generate recovery codes",
            Perm::BypassCodes => "issue bypass codes",
            Perm::ReadPolicy => "read or test policies",
            Perm::ReadClients => "read RADIUS clients",
            Perm::ManageHosts => "manage PAM hosts",
            Perm::ReadAudit => "read the audit log",
        }
    }
}

/// Whether `role` allows `perm` (inside the token's tenant).
pub fn allows(role: AdminRole, perm: Perm) -> bool {
    use Perm::*;
    match role {
        AdminRole::Operator => true,
        AdminRole::Admin => perm != ManageTenants,
        AdminRole::Helpdesk => matches!(perm, ReadUsers | ReadFactors | ResetFactors | BypassCodes),
        AdminRole::Auditor => perm == ReadAudit,
    }
}

/// The authenticated token of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub AdminToken);

impl FromRequestParts<HttpState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            })
            .ok_or_else(unknown_token)?;
        let admin = state.admin.clone();
        match blocking(move || admin.admin.authenticate_token(&presented)).await? {
            TokenCheck::Valid(token) => Ok(Caller(token)),
            TokenCheck::Expired(token) => {
                note_expired_token(&token, "admin API request");
                Err(ApiError::unauthorized())
            }
            TokenCheck::Refused => Err(unknown_token()),
        }
    }
}

impl Caller {
    /// May this token do `perm` in `tenant`? 404 outside its tenant, 403 for its role.
    pub fn check(&self, tenant: &str, perm: Perm) -> Result<(), ApiError> {
        let t = &self.0;
        if t.role != AdminRole::Operator && t.tenant.as_deref() != Some(tenant) {
            return Err(refused(
                t,
                &format!("a tenant not its own ('{}')", tenant.escape_debug()),
                ApiError::no_tenant(tenant),
            ));
        }
        self.check_global(perm)
    }

    /// May this token do `perm` (not bound to a tenant)?
    pub fn check_global(&self, perm: Perm) -> Result<(), ApiError> {
        if allows(self.0.role, perm) {
            Ok(())
        } else {
            Err(refused(
                &self.0,
                &format!("its role may not {}", perm.describe()),
                ApiError::forbidden(perm.describe(), self.0.role.as_str()),
            ))
        }
    }

    /// Who, for audit records.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            channel: "admin-api",
            name: &self.0.name,
            source: format!("token {}", self.0.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_readme_says() {
        use Perm::*;
        let all = [
            ManageTenants,
            ReadUsers,
            WriteUsers,
            ReadFactors,
            ResetFactors,
            EnrolFactors,
            RecoveryCodes,
            BypassCodes,
            ReadPolicy,
            ReadClients,
            ManageHosts,
            ReadAudit,
        ];
        let set = |r| {
            all.iter()
                .copied()
                .filter(|p| allows(r, *p))
                .collect::<Vec<_>>()
        };
        assert_eq!(set(AdminRole::Operator), all);
        assert_eq!(set(AdminRole::Admin), &all[1..]);
        assert_eq!(
            set(AdminRole::Helpdesk),
            [ReadUsers, ReadFactors, ResetFactors, BypassCodes]
        );
        assert_eq!(set(AdminRole::Auditor), [ReadAudit]);
    }
}
