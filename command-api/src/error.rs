//! The API's errors and the one place they become gRPC statuses.

use domain::{DomainError, ErrorKind, ErrorReason, ValidationError};
use event_store::StoreError;
use proto::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::executor::ExecuteError;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Fields of the request are malformed.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Vec<ValidationError>),
    /// No or a bad bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role or scope does not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The token cannot be checked yet (the issuer's keys are not loaded); retrying later is safe.
    #[error("{0}")]
    AuthUnavailable(String),
    /// A business rule refused the command, or the thing does not exist.
    #[error("{message}")]
    Domain {
        /// Why, as the stable code sent to the caller; its kind gives the status code.
        reason: ErrorReason,
        /// The domain's explanation, for people.
        message: String,
    },
    /// Concurrent commands kept winning; retrying is safe with the same idempotency key.
    #[error("the aggregate kept changing under concurrent commands; retry with the same idempotency_key")]
    Conflict,
    /// A dependency (PostgreSQL) is down, or the writer could not get its batch through in time;
    /// nothing was committed, and retrying later is safe with the same idempotency key.
    #[error("the event store is unavailable; retry with the same idempotency_key")]
    Unavailable(#[source] StoreError),
    /// The history view's database failed or timed out; nothing was changed (queries never
    /// write), and asking again later is safe.
    #[error("the history view is unavailable; retry later")]
    ViewUnavailable(#[source] read_models::QueryError),
    /// The command ran out of time. Either before its commit was written (nothing changed), or
    /// while `COMMIT` was on its way and no answer came (it may have committed); the retry with
    /// the same idempotency key returns the stored outcome or runs it.
    #[error("{}", deadline_message(.0))]
    DeadlineExceeded(#[source] StoreError),
    /// A stream was cut short (the server is stopping, the store could not be read, or the
    /// watched aggregate holds an event this build does not read): the message names where to
    /// resume, on this server or another.
    #[error("{0}")]
    Interrupted(String),
    /// The aggregate holds an event this build does not read (a newer build wrote it during a
    /// rolling deploy): it is not read wrongly; the call succeeds later, or on an upgraded
    /// server. Nothing was changed.
    #[error("{0}; nothing was changed: retry later, or on an upgraded server")]
    NotUnderstood(#[source] StoreError),
    /// A limit on streams was reached, or a subscriber fell too far behind the live log: the
    /// message says why and where to resume.
    #[error("{0}")]
    Exhausted(String),
    /// A bug or corrupt data; details are logged, not sent.
    #[error("internal error")]
    Internal(String),
}

fn deadline_message(source: &StoreError) -> &'static str {
    match source {
        StoreError::DeadlinePassed => {
            "the command ran out of time before it was committed; nothing was changed: \
             retry with the same idempotency_key"
        }
        _ => {
            "the event store did not confirm the commit in time; it may or may not have been \
             committed: retry with the same idempotency_key to get its outcome"
        }
    }
}

impl ApiError {
    /// A refusal for `reason`, explained by `message`.
    pub fn refused(reason: ErrorReason, message: impl Into<String>) -> Self {
        ApiError::Domain {
            reason,
            message: message.into(),
        }
    }

    /// One malformed field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![ValidationError::new(field, message)])
    }
}

/// At most this many violations go into a status, each at most [`MAX_VIOLATION_CHARS`]
/// characters: the message and the `BadRequest` detail travel in HTTP/2 headers, and a request
/// with many long bad values would otherwise outgrow the client's header limit and reach it as
/// a protocol error instead of INVALID_ARGUMENT.
const MAX_VIOLATIONS: usize = 10;
const MAX_VIOLATION_CHARS: usize = 200;

/// `text` cut to `MAX_VIOLATION_CHARS` characters, marked when cut.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_VIOLATION_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn describe(violations: &[ValidationError]) -> String {
    let mut parts: Vec<String> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|violation| bounded(&violation.to_string()))
        .collect();
    if violations.len() > MAX_VIOLATIONS {
        parts.push(format!("and {} more", violations.len() - MAX_VIOLATIONS));
    }
    parts.join("; ")
}

impl From<auth_tokens::AuthError> for ApiError {
    fn from(error: auth_tokens::AuthError) -> Self {
        match error {
            auth_tokens::AuthError::Unauthenticated(message) => ApiError::Unauthenticated(message),
            auth_tokens::AuthError::PermissionDenied(message) => {
                ApiError::PermissionDenied(message)
            }
            auth_tokens::AuthError::Unavailable(message) => ApiError::AuthUnavailable(message),
        }
    }
}

impl From<ApiError> for Status {
    /// The mapping of every API error to its status code, with field violations in a
    /// `google.rpc.BadRequest` detail for malformed requests and the reason's code in a
    /// `google.rpc.ErrorInfo` detail for refusals.
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        match error {
            ApiError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for violation in violations.iter().take(MAX_VIOLATIONS) {
                    details.add_bad_request_violation(
                        bounded(&violation.field),
                        bounded(&violation.message),
                    );
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::AuthUnavailable(_) => Status::unavailable(message),
            ApiError::Domain { reason, .. } => {
                let code = match reason.kind() {
                    ErrorKind::InvalidArgument => Code::InvalidArgument,
                    ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                    ErrorKind::NotFound => Code::NotFound,
                    ErrorKind::PermissionDenied => Code::PermissionDenied,
                    ErrorKind::Unavailable => Code::Unavailable,
                };
                let details = ErrorDetails::with_error_info(
                    reason.code(),
                    ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                );
                Status::with_error_details(code, message, details)
            }
            ApiError::Conflict => Status::aborted(message),
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %source, "event store unavailable");
                Status::unavailable(message)
            }
            ApiError::ViewUnavailable(source) => {
                tracing::warn!(error = %source, "history view unavailable");
                Status::unavailable(message)
            }
            ApiError::DeadlineExceeded(source) => {
                tracing::warn!(error = %source, "command ran out of time");
                Status::deadline_exceeded(message)
            }
            ApiError::Interrupted(_) => Status::unavailable(message),
            ApiError::NotUnderstood(source) => {
                tracing::warn!(error = %source, "an event this build does not read");
                Status::unavailable(message)
            }
            ApiError::Exhausted(_) => Status::resource_exhausted(message),
            ApiError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                Status::internal(message)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if matches!(
            error,
            StoreError::DeadlinePassed | StoreError::OutcomeUnknown(_)
        ) {
            ApiError::DeadlineExceeded(error)
        } else if matches!(error, StoreError::EventNotUnderstood(_)) {
            ApiError::NotUnderstood(error)
        } else if error.is_transient() {
            ApiError::Unavailable(error)
        } else {
            ApiError::Internal(format!("{error:?}"))
        }
    }
}

impl<E: DomainError> From<ExecuteError<E>> for ApiError {
    fn from(error: ExecuteError<E>) -> Self {
        match error {
            ExecuteError::Domain(error) => ApiError::refused(error.reason(), error.to_string()),
            ExecuteError::Conflict => ApiError::Conflict,
            ExecuteError::KeyReused => ApiError::invalid(
                "idempotency_key",
                "already used for a different request; use a new key per distinct request",
            ),
            ExecuteError::Store(error) => error.into(),
            ExecuteError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_carries_its_reason_code_beside_the_message() {
        for reason in ErrorReason::ALL {
            let status = Status::from(ApiError::refused(*reason, "wording that may change"));
            let info = status
                .get_details_error_info()
                .unwrap_or_else(|| panic!("{reason:?}: no ErrorInfo"));
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason.code(), ERROR_DOMAIN)
            );
            assert_eq!(status.message(), "wording that may change");
        }
    }

    /// `FailedPrecondition` -> `FAILED_PRECONDITION`: a status code as the gRPC spec spells it.
    fn spelt(code: Code) -> String {
        let mut name = String::new();
        for (index, c) in format!("{code:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && index > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    #[test]
    fn the_proto_readme_lists_every_reason_code_with_its_status() {
        let readme = include_str!("../../proto/README.md");
        for reason in ErrorReason::ALL {
            let status = Status::from(ApiError::refused(*reason, "refused"));
            let row = format!("| `{}` | `{}` |", reason.code(), spelt(status.code()));
            assert!(readme.contains(&row), "proto/README.md lacks the row {row}");
        }
    }
}
