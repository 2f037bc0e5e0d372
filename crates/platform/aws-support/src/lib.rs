//! Every AWS client of orderpipe is built here, from one [`aws_config::SdkConfig`]: the standard
//! credential chain and region, with an optional endpoint override so the same binaries talk to
//! AWS or to a local emulator. The standard `AWS_ENDPOINT_URL_KINESIS` / `..._DYNAMODB` /
//! `..._SQS` variables route one service each; [`AwsSettings::endpoint_url`] routes them all.
//!
//! Every client built here bounds every call ([`AwsTimeouts`]): a connect timeout, a read
//! timeout, a per-attempt timeout and a total timeout over the SDK's own retries, so a service
//! or emulator that accepts a connection and never answers delays its caller by at most that
//! bound (a timeout error, which [`is_retryable`] calls retryable) instead of forever. This holds
//! for clients built from an [`SdkConfig`] that did not come from [`sdk_config`] too (tests):
//! bounds it lacks are filled in with the defaults.
//!
//! Every SDK error is classified in one place ([`AwsCallError`], [`is_retryable`],
//! [`is_condition_failed`]): callers keep the SDK's error as the source and decide on the
//! classification, never on error text.
//!
//! Locally and in tests, always set static credentials, a region and
//! `AWS_EC2_METADATA_DISABLED=true` (`scripts/stack.sh` writes them to `.stack/env`), so the SDK
//! never probes the instance metadata address.

#[cfg(feature = "sqs")]
pub mod queues;
pub mod resources;
pub mod tables;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
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
    /// The time limits of every call (settings keys `aws.timeouts.*`).
    #[serde(default)]
    pub timeouts: AwsTimeouts,
}

/// The time limits of every AWS call, in milliseconds (settings keys `aws.timeouts.connect_ms`,
/// `read_ms`, `attempt_ms`, `call_ms`; e.g. `ORDERPIPE_AWS__TIMEOUTS__CALL_MS`).
///
/// SQS clients get at least [`SQS_LONG_POLL_BOUND`] for reads and attempts, whatever is set:
/// a long-polling ReceiveMessage legitimately waits up to 20 s for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AwsTimeouts {
    /// Opening a connection (default 3,000).
    pub connect_ms: u64,
    /// The first byte of an answer once the request is sent (default 10,000).
    pub read_ms: u64,
    /// One attempt of a call, from sending to the last byte of the answer (default 10,000).
    pub attempt_ms: u64,
    /// A whole call with the SDK's own retries and their backoff (default 30,000).
    pub call_ms: u64,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        Self {
            connect_ms: 3_000,
            read_ms: 10_000,
            attempt_ms: 10_000,
            call_ms: 30_000,
        }
    }
}

/// The least read and attempt time an SQS client gets: the longest long poll (20 s) plus time
/// for the answer to travel.
pub const SQS_LONG_POLL_BOUND: Duration = Duration::from_secs(25);

impl AwsTimeouts {
    /// As the SDK's timeout configuration. A zero is raised to one millisecond: "no limit" is
    /// not on offer.
    pub fn config(&self) -> TimeoutConfig {
        let ms = |value: u64| Duration::from_millis(value.max(1));
        TimeoutConfig::builder()
            .connect_timeout(ms(self.connect_ms))
            .read_timeout(ms(self.read_ms))
            .operation_attempt_timeout(ms(self.attempt_ms))
            .operation_timeout(ms(self.call_ms.max(self.attempt_ms)))
            .build()
    }
}

/// `config`'s time limits, each one it lacks (unset or disabled) taken from
/// [`AwsTimeouts::default`], and the read and attempt limits raised to `at_least`.
#[cfg(any(feature = "kinesis", feature = "dynamodb", feature = "sqs"))]
fn bounded(config: &SdkConfig, at_least: Duration) -> TimeoutConfig {
    let defaults = AwsTimeouts::default().config();
    let given = config.timeout_config();
    let pick = |own: Option<Duration>, default: Option<Duration>| own.or(default);
    let connect = pick(
        given.and_then(TimeoutConfig::connect_timeout),
        defaults.connect_timeout(),
    );
    let read = pick(
        given.and_then(TimeoutConfig::read_timeout),
        defaults.read_timeout(),
    )
    .map(|read| read.max(at_least));
    let attempt = pick(
        given.and_then(TimeoutConfig::operation_attempt_timeout),
        defaults.operation_attempt_timeout(),
    )
    .map(|attempt| attempt.max(at_least));
    let call = pick(
        given.and_then(TimeoutConfig::operation_timeout),
        defaults.operation_timeout(),
    )
    .map(|call| call.max(attempt.unwrap_or_default()));
    let mut builder = TimeoutConfig::builder();
    builder
        .set_connect_timeout(connect)
        .set_read_timeout(read)
        .set_operation_attempt_timeout(attempt)
        .set_operation_timeout(call);
    builder.build()
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
    loader
        .timeout_config(settings.timeouts.config())
        .load()
        .await
}

/// A Kinesis client, every call bounded (see the crate documentation).
#[cfg(feature = "kinesis")]
pub fn kinesis(config: &SdkConfig) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::config::Builder::from(config)
        .timeout_config(bounded(config, Duration::ZERO))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A DynamoDB client, every call bounded (see the crate documentation).
#[cfg(feature = "dynamodb")]
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .timeout_config(bounded(config, Duration::ZERO))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A DynamoDB client whose calls are bounded tighter than `config`'s: attempts by `attempt`,
/// whole calls by `call`. For calls whose caller has a deadline of its own (a lease renewal
/// must answer well before the lease could expire).
#[cfg(feature = "dynamodb")]
pub fn dynamodb_within(
    config: &SdkConfig,
    attempt: Duration,
    call: Duration,
) -> aws_sdk_dynamodb::Client {
    let bounds = bounded(config, Duration::ZERO);
    let tighter =
        |own: Option<Duration>, limit: Duration| Some(own.map_or(limit, |o| o.min(limit)));
    let mut builder = bounds.to_builder();
    builder
        .set_read_timeout(tighter(bounds.read_timeout(), attempt))
        .set_operation_attempt_timeout(tighter(bounds.operation_attempt_timeout(), attempt))
        .set_operation_timeout(tighter(bounds.operation_timeout(), call.max(attempt)));
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .timeout_config(builder.build())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An SQS client, every call bounded (see the crate documentation; reads and attempts at least
/// [`SQS_LONG_POLL_BOUND`]).
#[cfg(feature = "sqs")]
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::from(config)
        .timeout_config(bounded(config, SQS_LONG_POLL_BOUND))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

mod call_error;

pub use call_error::{is_condition_failed, is_retryable, written, AwsCallError, SdkError};
