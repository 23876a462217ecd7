//! The one place where errors become HTTP responses:
//! `{"error": {"code", "message", "request_id"}}`, plus `field` when one field is at fault.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::middleware::current_request_id;
use crate::service::auth::AuthError;
use crate::service::authentik::AuthentikError;
use crate::service::clients::ClientAuthError;
use crate::service::{Dependency, ServiceError};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A value that is well-formed JSON but not acceptable, at `field`.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    /// The cause goes to the log under the request id; the client learns nothing of it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "request_id": current_request_id(),
        });
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(retry_after) = self.retry_after {
            // Rounded up: retrying after a truncated value would be refused again.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound("user") => {
                Self::not_found("user_not_found", "no user with this authentik_sub")
            }
            ServiceError::NotFound("role") => {
                Self::not_found("role_not_found", "no role with this name")
            }
            ServiceError::NotFound("rule") => {
                Self::not_found("rule_not_found", "no rule with this name")
            }
            ServiceError::NotFound(what) => Self::not_found("not_found", format!("no such {what}")),
            ServiceError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("this {what} already exists"),
            ),
            ServiceError::Invalid(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            ServiceError::InvalidField { field, message } => Self::invalid_field(field, message),
            ServiceError::Forbidden(message) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ServiceError::Unavailable { dependency, cause } => {
                dependency.log_unavailable(&cause);
                let code = match dependency {
                    Dependency::Database => "storage_unavailable",
                    Dependency::Redis => "dependency_unavailable",
                };
                Self {
                    retry_after: Some(Duration::from_secs(1)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        code,
                        format!("{dependency} is unavailable; retry shortly"),
                    )
                }
            }
            ServiceError::Undeclared(message) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "undeclared_permission",
                message,
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<AuthentikError> for ApiError {
    fn from(e: AuthentikError) -> Self {
        let message = e.to_string();
        match e {
            AuthentikError::Refused(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "identity_provider_error", message)
            }
            AuthentikError::Unreachable(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "identity_provider_unreachable",
                message,
            ),
            AuthentikError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "identity_provider_timeout",
                message,
            ),
            AuthentikError::UnknownGroup(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_group", message)
                    .with_field("groups")
            }
            AuthentikError::Service(e) => e.into(),
        }
    }
}

impl From<ClientAuthError> for ApiError {
    fn from(e: ClientAuthError) -> Self {
        let message = e.to_string();
        match e {
            ClientAuthError::InvalidCredentials => Self::unauthorized("invalid_api_key", message),
            ClientAuthError::Disabled => Self::unauthorized("client_disabled", message),
            ClientAuthError::Expired => Self::unauthorized("client_expired", message),
            ClientAuthError::OriginNotAllowed => {
                Self::new(StatusCode::FORBIDDEN, "origin_not_allowed", message)
            }
            ClientAuthError::IpNotAllowed => {
                Self::new(StatusCode::FORBIDDEN, "ip_not_allowed", message)
            }
            ClientAuthError::PathNotAllowed => {
                Self::new(StatusCode::FORBIDDEN, "path_not_allowed", message)
            }
            ClientAuthError::MissingCapability(_) => {
                Self::new(StatusCode::FORBIDDEN, "missing_capability", message)
            }
            ClientAuthError::RateLimited { retry_after } => Self::rate_limited(retry_after),
            ClientAuthError::Service(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        let unauthorized = |code| Self::unauthorized(code, message.clone());
        match e {
            AuthError::InvalidCredentials => unauthorized("invalid_credentials"),
            AuthError::Locked { retry_after } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
                    .with_retry_after(retry_after)
            }
            AuthError::CaptchaRequired => {
                Self::new(StatusCode::BAD_REQUEST, "captcha_required", message)
            }
            AuthError::CaptchaInvalid => {
                Self::new(StatusCode::BAD_REQUEST, "captcha_invalid", message)
            }
            AuthError::MfaTokenInvalid => unauthorized("invalid_mfa_token"),
            AuthError::InvalidCode => unauthorized("invalid_code"),
            AuthError::InvalidToken => unauthorized("invalid_token"),
            AuthError::TokenExpired => unauthorized("token_expired"),
            AuthError::SessionEnded => unauthorized("session_revoked"),
            AuthError::RefreshReused => unauthorized("refresh_token_reused"),
            AuthError::Policy(violation) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, violation.code(), message)
                    .with_field("password")
            }
            AuthError::WrongPassword => Self::new(StatusCode::FORBIDDEN, "wrong_password", message),
            AuthError::PasswordChangeRequired => {
                Self::new(StatusCode::FORBIDDEN, "password_change_required", message)
            }
            AuthError::TotpAlreadyEnabled => {
                Self::new(StatusCode::CONFLICT, "totp_already_enabled", message)
            }
            AuthError::TotpNotEnabled => {
                Self::new(StatusCode::CONFLICT, "totp_not_enabled", message)
            }
            AuthError::TotpNotEnrolling => {
                Self::new(StatusCode::CONFLICT, "totp_not_enrolling", message)
            }
            AuthError::NoAccount => Self::not_found("account_not_found", message),
            AuthError::Busy => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
                .with_retry_after(Duration::from_secs(1)),
            AuthError::Service(ServiceError::Conflict("account")) => Self::new(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with this username (or for this user) already exists",
            ),
            AuthError::Service(e) => e.into(),
        }
    }
}
