//! Errors of the admin API: JSON `{"error": "..."}` with the right status.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis_core::admin::AdminError;
use portcullis_core::password::PasswordError;
use portcullis_core::store::StoreError;
use serde_json::json;

/// A refused or failed admin request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a valid admin token is needed: send `Authorization: Bearer TOKEN` (make one with: portcullis token add)",
        )
    }

    pub fn forbidden(what: &str, role: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("a token with role '{role}' may not {what}"),
        )
    }

    /// The same answer for a tenant that does not exist and one the token may not see.
    pub fn no_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("tenant '{tenant}' does not exist"),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log says more",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        use StatusCode as S;
        let status = match &e {
            AdminError::NoTenant(_)
            | AdminError::NoUser { .. }
            | AdminError::NoFactor { .. }
            | AdminError::NoToken(_) => S::NOT_FOUND,
            AdminError::AlreadyConfirmed(_) => S::CONFLICT,
            AdminError::WrongCode(_)
            | AdminError::Invalid { .. }
            | AdminError::Password(PasswordError::UnsupportedHash) => S::BAD_REQUEST,
            AdminError::Store(StoreError::AlreadyExists { .. }) => S::CONFLICT,
            AdminError::Store(StoreError::NotFound { .. }) => S::NOT_FOUND,
            _ => {
                tracing::error!(error = %e, "admin API request failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "the body must be JSON: send `Content-Type: application/json`".to_string()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => format!(
                "the body is larger than the limit of {} bytes",
                super::BODY_LIMIT
            ),
            _ => format!("invalid JSON body: {}", r.body_text()),
        };
        ApiError::new(status, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", r.body_text()))
    }
}
