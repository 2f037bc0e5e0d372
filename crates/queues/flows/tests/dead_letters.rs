//! The dead-letter queue tool's library against real (emulated) queues holding more messages
//! than one ReceiveMessage returns.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;

mod support;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use flows::dead_letters::{DeadLetters, QueuePair};
use support::queue;
use test_support::{aws_test_config, unique_name};

async fn pair(sqs: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> QueuePair {
    QueuePair {
        name: "intake",
        queue_url: queue(sqs, name, fifo).await,
        dead_letter_url: queue(sqs, &format!("{name}-dlq"), fifo).await,
    }
}

/// Everything in `url`, deleted as read: body per message group (one group per message on a
/// standard queue), in the order received.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, Vec<String>> {
    let mut bodies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        for message in messages {
            let body = message.body().unwrap().to_owned();
            let group = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .unwrap_or_else(|| body.clone());
            bodies.entry(group).or_default().push(body);
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn every_dead_letter_of_a_queue_holding_several_pages_is_listed_shown_and_redriven() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let queues = pair(&sqs, &unique_name("dlq-pages"), false).await;
    let mut ids = Vec::new();
    for n in 0..25 {
        let sent = sqs
            .send_message()
            .queue_url(&queues.dead_letter_url)
            .message_body(format!("letter {n:02}"))
            .send()
            .await
            .unwrap();
        ids.push(sent.message_id.unwrap());
    }
    let letters = DeadLetters::new(sqs.clone(), queues.clone());

    // Listing twice sees all 25 both times: a listing leaves every message visible.
    for _ in 0..2 {
        let listed = letters.list(100).await.unwrap();
        let mut seen: Vec<&str> = listed.iter().map(|l| l.message_id.as_str()).collect();
        seen.sort_unstable();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }
    assert_eq!(letters.show(&ids[24]).await.unwrap().body, "letter 24");

    // One by id, then the rest.
    assert_eq!(letters.redrive(Some(&ids[7]), None).await.unwrap(), 1);
    assert_eq!(letters.redrive(None, None).await.unwrap(), 24);
    assert!(letters.list(100).await.unwrap().is_empty());
    let back = drain(&sqs, &queues.queue_url).await;
    assert_eq!(back.len(), 25, "{back:?}");
}

#[tokio::test]
async fn redriving_a_fifo_dead_letter_queue_moves_every_message_of_every_group_in_order() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let queues = pair(&sqs, &unique_name("dlq-fifo"), true).await;
    // Four orders with four messages each: more than one ReceiveMessage returns, and SQS
    // returns no more of a group while one of its messages is hidden.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in 0..4 {
        for order in ["o-a", "o-b", "o-c", "o-d"] {
            let body = format!("{order} step {step}");
            sqs.send_message()
                .queue_url(&queues.dead_letter_url)
                .message_body(&body)
                .message_group_id(order)
                .message_deduplication_id(body.replace(' ', "-"))
                .send()
                .await
                .unwrap();
            expected.entry(order.to_owned()).or_default().push(body);
        }
    }
    let letters = DeadLetters::new(sqs.clone(), queues.clone());
    assert_eq!(letters.redrive(None, None).await.unwrap(), 16);
    assert_eq!(drain(&sqs, &queues.queue_url).await, expected);
    assert!(drain(&sqs, &queues.dead_letter_url).await.is_empty());
}
