//! The one error type of every AWS call orderpipe makes ([`AwsCallError`]), and the one place an
//! SDK error is classified: retryable or final ([`is_retryable`]), a failed write condition
//! ([`is_condition_failed`]).

use std::error::Error;
use std::fmt::Debug;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The SDK's error type (the same type behind every service crate's `error::SdkError`, taken
/// from the runtime they share so that no service crate is needed for it).
pub type SdkError<E, R = HttpResponse> = aws_smithy_runtime_api::client::result::SdkError<E, R>;

/// Error codes that mean "slow down or try again", across Kinesis, DynamoDB and SQS.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "RequestLimitExceeded",
    "KMSThrottlingException",
    "InternalFailure",
    "InternalServerError",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionConflictException",
];

/// DynamoDB's code for a write whose condition expression was false.
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// Whether trying the same call again later may succeed: timeouts, connection failures,
/// unreadable responses, throttling and server-side faults. Everything else (validation, missing
/// resources, failed conditions) is final.
pub fn is_retryable<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => service_code(error).is_some_and(is_retryable_code),
        _ => false,
    }
}

/// Whether a conditional DynamoDB write was refused because its condition was false: an answer
/// (the item is not as the writer expected), not a failure.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    service_code(error) == Some(CONDITION_FAILED)
}

fn service_code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
}

fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// An AWS call that failed: which operation, the service's error code, whether trying again may
/// help (classified once, by [`is_retryable`]), and the SDK error itself as the source.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({})", if *.retryable { "retryable" } else { "final" })]
pub struct AwsCallError {
    /// The service operation, e.g. `kinesis:GetRecords` or `sqs:ReceiveMessage`.
    pub operation: &'static str,
    /// Whether the same call may succeed later (throttling, timeouts, server faults).
    pub retryable: bool,
    /// The service's error code when the service answered with an error (e.g.
    /// `InvalidParameterValue`); `None` when no answer came (a timeout, a connection failure).
    pub code: Option<String>,
    /// The SDK's error.
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

impl AwsCallError {
    /// Classifies and keeps an SDK error.
    pub fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
    {
        Self {
            operation,
            retryable: is_retryable(&error),
            code: service_code(&error).map(str::to_owned),
            source: Box::new(error),
        }
    }

    /// Whether it is a conditional write refused because its condition was false (see
    /// [`is_condition_failed`]).
    pub fn is_condition_failed(&self) -> bool {
        self.code.as_deref() == Some(CONDITION_FAILED)
    }
}

/// The outcome of a conditional write: `true` when it was written, `false` when its condition
/// was false; any other failure is an [`AwsCallError`] of `operation`.
pub fn written<T, E, R>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<bool, AwsCallError>
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if is_condition_failed(&error) => Ok(false),
        Err(error) => Err(AwsCallError::from_sdk(operation, error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_kinesis::config::http::HttpResponse;
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_smithy_types::body::SdkBody;

    fn answered(code: &str) -> SdkError<PutItemError, HttpResponse> {
        let error = PutItemError::generic(ErrorMetadata::builder().code(code).build());
        let response = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(error, response)
    }

    #[test]
    fn throttling_server_faults_and_lost_answers_are_retryable_the_rest_final() {
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalServerError",
        ] {
            let error = AwsCallError::from_sdk("dynamodb:PutItem", answered(code));
            assert!(error.retryable, "{code}");
            assert_eq!(error.code.as_deref(), Some(code));
        }
        for code in [
            "ValidationException",
            "ResourceNotFoundException",
            CONDITION_FAILED,
        ] {
            assert!(!is_retryable(&answered(code)), "{code}");
        }
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("no answer");
        let error = AwsCallError::from_sdk("dynamodb:PutItem", timeout);
        assert!(error.retryable);
        assert_eq!(error.code, None);
        assert_eq!(error.to_string(), "dynamodb:PutItem failed (retryable)");
    }

    #[test]
    fn a_false_condition_is_an_answer_and_nothing_else_is() {
        assert!(!written("dynamodb:PutItem", Err::<(), _>(answered(CONDITION_FAILED))).unwrap());
        assert!(written("dynamodb:PutItem", Ok::<_, SdkError<PutItemError>>(())).unwrap());
        let refused = written::<(), _, _>("dynamodb:PutItem", Err(answered("ValidationException")))
            .unwrap_err();
        assert!(!refused.is_condition_failed() && !refused.retryable);
        assert!(
            AwsCallError::from_sdk("dynamodb:UpdateItem", answered(CONDITION_FAILED))
                .is_condition_failed()
        );
    }
}
