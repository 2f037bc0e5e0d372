//! The one error type of every AWS call the runtime makes: which operation failed, whether
//! trying again may help (classified once, by [`aws_support::is_retryable`]), and the SDK error
//! itself as the source.

use std::error::Error;
use std::fmt::Debug;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_support::SdkError;

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({})", if *.retryable { "retryable" } else { "final" })]
pub struct AwsCallError {
    /// The service operation, e.g. `kinesis:GetRecords`.
    pub operation: &'static str,
    /// Whether the same call may succeed later (throttling, timeouts, server faults).
    pub retryable: bool,
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
            retryable: aws_support::is_retryable(&error),
            source: Box::new(error),
        }
    }
}
