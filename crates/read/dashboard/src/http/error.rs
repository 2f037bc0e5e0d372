//! The read API's errors and the one place they become HTTP responses: a JSON body
//! `{"error": <kind>, "message": <for a person>}` with the matching status.

use auth_tokens::AuthError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::StoreId;
use serde_json::json;
use tonic::Code;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No token, or a malformed, expired or foreign one (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token for another store or a role without a board (403).
    #[error("{0}")]
    Forbidden(String),
    /// The view knows no such store (404).
    #[error("unknown store {0}")]
    UnknownStore(StoreId),
    /// The history has no such order (404).
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// A malformed path or body (400).
    #[error("{0}")]
    BadRequest(String),
    /// The command API refused or failed the command; its message is shown to the barista.
    #[error("{}", .0.message())]
    Refused(tonic::Status),
    /// The token cannot be checked yet: the issuer's keys are not loaded (503).
    #[error("{0}")]
    TokenKeysUnavailable(String),
    /// A read model could not be read (503); the cause is logged, not sent.
    #[error("the dashboard's views are unavailable; try again")]
    ViewUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<AuthError> for HttpError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => HttpError::Unauthenticated(message),
            AuthError::PermissionDenied(message) => HttpError::Forbidden(message),
            AuthError::Unavailable(message) => HttpError::TokenKeysUnavailable(message),
        }
    }
}

impl From<crate::views::ViewError> for HttpError {
    fn from(error: crate::views::ViewError) -> Self {
        HttpError::ViewUnavailable(Box::new(error))
    }
}

impl From<sqlx::Error> for HttpError {
    fn from(error: sqlx::Error) -> Self {
        HttpError::ViewUnavailable(Box::new(error))
    }
}

impl HttpError {
    /// The status and the machine-readable kind.
    fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            HttpError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            HttpError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            HttpError::UnknownStore(_) => (StatusCode::NOT_FOUND, "unknown_store"),
            HttpError::UnknownOrder(_) => (StatusCode::NOT_FOUND, "unknown_order"),
            HttpError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            HttpError::ViewUnavailable(_) | HttpError::TokenKeysUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            HttpError::Refused(status) => match status.code() {
                Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
                Code::NotFound => (StatusCode::NOT_FOUND, "unknown_order"),
                Code::InvalidArgument => (StatusCode::BAD_REQUEST, "bad_request"),
                // The order is not in a state that allows the step (e.g. not paid yet), or it
                // kept changing under concurrent commands: both are conflicts with its state.
                Code::FailedPrecondition | Code::Aborted => (StatusCode::CONFLICT, "refused"),
                Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                _ => (StatusCode::BAD_GATEWAY, "command_api_error"),
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        match &self {
            HttpError::ViewUnavailable(source) => {
                tracing::error!(error = %source, "a read model could not be read");
            }
            HttpError::Refused(refusal) if status.is_server_error() => {
                tracing::warn!(code = ?refusal.code(), message = refusal.message(), "command API call failed");
            }
            _ => {}
        }
        let mut body = json!({ "error": kind, "message": self.to_string() });
        if let HttpError::Refused(refusal) = &self {
            body["grpc_status"] = json!(format!("{:?}", refusal.code()));
        }
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_transition_is_a_conflict_that_keeps_the_command_apis_message() {
        let error = HttpError::Refused(tonic::Status::failed_precondition(
            "the order is not paid yet",
        ));
        assert_eq!(error.status_and_kind().0, StatusCode::CONFLICT);
        assert_eq!(error.to_string(), "the order is not paid yet");
    }
}
