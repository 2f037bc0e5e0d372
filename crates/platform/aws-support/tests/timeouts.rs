//! Every client aws-support builds gives up on an endpoint that accepts connections and never
//! answers, within its time limits, with an error the callers retry.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use std::sync::Once;

use aws_config::{BehaviorVersion, Region};
use aws_support::{AwsSettings, AwsTimeouts};
use test_support::SilentListener;

/// What a hang is, for these tests: far beyond every bound under test.
const HANG: Duration = Duration::from_secs(90);

/// The per-service endpoint variables of the stack's env file win over a config's endpoint;
/// every test here points its clients at a silent listener instead. (Process-wide, and the
/// same for every test of this file.)
fn route_by_config_only() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for service in ["KINESIS", "DYNAMODB", "SQS"] {
            std::env::remove_var(format!("AWS_ENDPOINT_URL_{service}"));
        }
    });
}

/// A config built outside aws-support (as the tests' own is: no call time limits), pointed at
/// `endpoint`; credentials from the stack's env file.
async fn foreign_config(endpoint: &str) -> aws_config::SdkConfig {
    route_by_config_only();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await
}

#[tokio::test]
async fn a_dynamodb_call_to_a_silent_endpoint_fails_within_the_configured_bound() {
    route_by_config_only();
    let silent = SilentListener::start().await;
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(silent.url()),
        timeouts: AwsTimeouts {
            connect_ms: 500,
            read_ms: 400,
            attempt_ms: 400,
            call_ms: 1_500,
        },
    };
    let client = aws_support::dynamodb(&aws_support::sdk_config(&settings).await);
    let started = Instant::now();
    let outcome = tokio::time::timeout(HANG, client.list_tables().send()).await;
    let took = started.elapsed();
    let error = outcome
        .expect("the call hung on a silent endpoint")
        .expect_err("a silent endpoint answered?");
    assert!(aws_support::is_retryable(&error), "{error:?}");
    assert!(
        took < Duration::from_secs(5),
        "the call took {took:?}, past its 1.5 s bound"
    );
}

#[tokio::test]
async fn clients_built_from_a_config_without_limits_get_the_default_bounds() {
    let silent = SilentListener::start().await;
    let config = foreign_config(&silent.url()).await;
    let defaults = AwsTimeouts::default();
    let bound = Duration::from_millis(defaults.call_ms);

    let dynamodb = aws_support::dynamodb(&config);
    let kinesis = aws_support::kinesis(&config);
    let started = Instant::now();
    let (dynamodb, kinesis) = tokio::join!(
        tokio::time::timeout(HANG, dynamodb.list_tables().send()),
        tokio::time::timeout(HANG, kinesis.list_streams().send()),
    );
    let took = started.elapsed();
    let dynamodb = dynamodb.expect("DynamoDB hung on a silent endpoint");
    let kinesis = kinesis.expect("Kinesis hung on a silent endpoint");
    assert!(aws_support::is_retryable(&dynamodb.expect_err("no answer")));
    assert!(aws_support::is_retryable(&kinesis.expect_err("no answer")));
    assert!(
        took < bound + Duration::from_secs(5),
        "took {took:?}, past the default {bound:?}"
    );
}

#[tokio::test]
async fn sqs_clients_leave_room_for_a_long_poll() {
    let config = foreign_config("http://127.0.0.1:9").await;
    let sqs = aws_support::sqs(&config);
    let limits = sqs.config().timeout_config().cloned().unwrap();
    assert!(limits.operation_attempt_timeout().unwrap() >= aws_support::SQS_LONG_POLL_BOUND);
    assert!(limits.read_timeout().unwrap() >= aws_support::SQS_LONG_POLL_BOUND);
    assert!(limits.operation_timeout().unwrap() >= limits.operation_attempt_timeout().unwrap());
}

#[tokio::test]
async fn a_tighter_dynamodb_client_gives_up_sooner() {
    let silent = SilentListener::start().await;
    let config = foreign_config(&silent.url()).await;
    let client = aws_support::dynamodb_within(
        &config,
        Duration::from_millis(200),
        Duration::from_millis(600),
    );
    let started = Instant::now();
    let outcome = tokio::time::timeout(HANG, client.list_tables().send()).await;
    assert!(outcome.expect("hung").is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
