//! Every AWS client of orderpipe is built here, from one [`aws_config::SdkConfig`]: the standard
//! credential chain and region, with an optional endpoint override so the same binaries talk to
//! AWS or to a local emulator. The standard `AWS_ENDPOINT_URL_KINESIS` / `..._DYNAMODB` /
//! `..._SQS` variables route one service each; [`AwsSettings::endpoint_url`] routes them all.
//!
//! Locally and in tests, always set static credentials, a region and
//! `AWS_EC2_METADATA_DISABLED=true` (`scripts/stack.sh` writes them to `.stack/env`), so the SDK
//! never probes the instance metadata address.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::Deserialize;

/// Where the AWS clients point.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AwsSettings {
    /// The region; unset: the standard chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// One endpoint for every service (an emulator); unset: AWS, or the per-service
    /// `AWS_ENDPOINT_URL_<SERVICE>` variables.
    pub endpoint_url: Option<String>,
}

/// The shared SDK configuration.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// A Kinesis client.
pub fn kinesis(config: &SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(config)
}

/// A DynamoDB client.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An SQS client.
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

use aws_sdk_kinesis::error::ProvideErrorMetadata;
/// The SDK's error type (the same type behind every service crate's re-export).
pub use aws_sdk_kinesis::error::SdkError;

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

/// Whether trying the same call again later may succeed: timeouts, connection failures,
/// unreadable responses, throttling and server-side faults. Everything else (validation, missing
/// resources, failed conditions) is final.
pub fn is_retryable<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
        _ => false,
    }
}
