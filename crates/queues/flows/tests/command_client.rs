//! The flows' command client against a command API that stops answering (a paused process,
//! a silently cut network): every attempt ends at its deadline and the call gives up as
//! transient (retried later with the same key), instead of hanging the flow.

use std::time::{Duration, Instant};

use flows::command_client::{Cause, CommandClient, CommandError};
use secrecy::SecretString;
use test_support::SilentListener;
use tonic::transport::Channel;

#[tokio::test]
async fn a_command_api_that_never_answers_fails_each_attempt_at_its_deadline_as_transient() {
    let silent = SilentListener::start().await;
    let channel = Channel::from_shared(silent.url())
        .expect("endpoint")
        .connect_lazy();
    // Nothing checks the token: the listener never reads the request.
    let service_token = SecretString::from("header.payload.signature");
    // Tried: GetOrder against a listener that accepts the connection and never writes a byte.
    let client = CommandClient::new(channel, &service_token, 3)
        .with_call_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_order("5f0c6c1e-3f5a-4c55-9a0e-000000000001", &Cause::default()),
    )
    .await
    .expect("the call ends by itself, bounded by its attempts' deadlines");

    let error = outcome.expect_err("nothing answered");
    assert!(
        matches!(error, CommandError::Unavailable { .. }) && error.is_transient(),
        "a call that ran out of time is transient (retried with the same key), got {error:?}"
    );
    // Three attempts of 300 ms plus two backoffs (at most 2 s each).
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}
