//! The SQS wrappers against the emulator: what each kind of queue is sent, and how a failed
//! call is classified.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use flows::sqs::{Outgoing, Receive, SqsQueue};
use service_kit::error_chain;
use test_support::{aws_test_config, unique_name};

async fn queue(sqs: &aws_sdk_sqs::Client, name: String, fifo: bool) -> SqsQueue {
    SqsQueue::new(sqs.clone(), support::queue(sqs, &name, fifo).await)
}

const RECEIVE: Receive<'static> = Receive {
    max_messages: 10,
    wait: Duration::from_secs(1),
    visibility: Duration::from_secs(30),
    system_attributes: &[MessageSystemAttributeName::MessageGroupId],
    message_attributes: true,
};

#[tokio::test]
async fn a_fifo_queue_gets_the_group_and_a_standard_queue_neither_group_nor_a_refusal() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let fifo = queue(&sqs, unique_name("sqs-fifo"), true).await;
    let standard = queue(&sqs, unique_name("sqs-standard"), false).await;
    for target in [&fifo, &standard] {
        let message = Outgoing::new("body")
            .in_group("order-1", "order-1-charge")
            .delayed(Duration::ZERO)
            .attribute("reason", "why");
        target.send(message).await.unwrap();
    }

    let received = fifo.receive(&RECEIVE).await.unwrap();
    assert_eq!(received.len(), 1);
    let group = received[0]
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(group.map(String::as_str), Some("order-1"));
    let reason = received[0]
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value());
    assert_eq!(reason, Some("why"));

    let received = standard.receive(&RECEIVE).await.unwrap();
    assert_eq!(received.len(), 1, "sent without the group it cannot take");
    standard
        .delete(received[0].receipt_handle().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_queue_is_final_and_an_unreachable_endpoint_retryable_both_with_their_source() {
    let config = aws_test_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let existing = queue(&sqs, unique_name("sqs-missing"), false).await;
    let missing = SqsQueue::new(sqs, format!("{}-gone", existing.url()));
    let error = missing.send(Outgoing::new("body")).await.unwrap_err();
    assert_eq!(error.operation, "sqs:SendMessage");
    assert!(!error.retryable, "{}", error_chain(&error));
    assert!(error.code.is_some(), "the service answered: {error:?}");
    assert!(
        error_chain(&error).len() > error.to_string().len(),
        "the SDK's error is kept as the source"
    );

    // Nothing listens on the discard port: every attempt's connection is refused.
    let unreachable = aws_sdk_sqs::config::Builder::from(&config)
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let away = SqsQueue::new(
        aws_sdk_sqs::Client::from_conf(unreachable),
        existing.url().to_owned(),
    );
    let error = away
        .attribute(QueueAttributeName::RedrivePolicy)
        .await
        .unwrap_err();
    assert_eq!(error.operation, "sqs:GetQueueAttributes");
    assert!(error.retryable, "{}", error_chain(&error));
    assert_eq!(error.code, None, "no answer, no code");
}
