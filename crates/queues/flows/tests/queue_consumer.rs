//! The shared SQS consumer loop against a real (emulated) FIFO queue.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use flows::queue::{ConsumerConfig, Handled, Message, MessageHandler, QueueConsumer};
use test_support::{aws_test_config, unique_name, PATIENCE};
use tokio::sync::watch;

/// Records what it handles, in order; asks for a retry of `defer` on its first delivery.
struct Recorder {
    defer: &'static str,
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, message: &Message) -> Handled {
        self.handled.lock().unwrap().push(message.body.clone());
        if message.body == self.defer && message.receive_count == 1 {
            Handled::Retry
        } else {
            Handled::Done
        }
    }
}

async fn fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

#[tokio::test]
async fn a_deferred_message_holds_back_the_rest_of_its_group_in_the_same_batch() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let name = unique_name("consumer-group");
    let queue = fifo_queue(&sqs, &name).await;
    let dlq = fifo_queue(&sqs, &format!("{name}-dlq")).await;
    // One order's messages, in order, and another order's: all in one receive batch.
    for (group, body) in [
        ("o-1", "o-1 first"),
        ("o-1", "o-1 second"),
        ("o-1", "o-1 third"),
        ("o-2", "o-2 only"),
    ] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(body.replace(' ', "-"))
            .send()
            .await
            .unwrap();
    }
    let recorder = Arc::new(Recorder {
        defer: "o-1 first",
        handled: Mutex::new(Vec::new()),
    });
    let consumer = QueueConsumer::new(
        sqs.clone(),
        ConsumerConfig {
            name: "test",
            queue_url: queue.clone(),
            dead_letter_url: dlq,
            wait_time: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(10),
            max_messages: 10,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
        },
        recorder.clone(),
    );
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(consumer.run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let handled = recorder.handled.lock().unwrap().clone();
        let o1: Vec<String> = handled
            .into_iter()
            .filter(|b| b.starts_with("o-1"))
            .collect();
        if o1.len() >= 4 {
            // The first message retried, and only then the rest of its group, in order.
            assert_eq!(o1, ["o-1 first", "o-1 first", "o-1 second", "o-1 third"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; handled so far: {o1:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other group was not held back by it.
    assert!(recorder
        .handled
        .lock()
        .unwrap()
        .contains(&"o-2 only".to_owned()));
    stop.send(true).unwrap();
    running.await.unwrap();
    // Everything settled: the queue is empty.
    let left = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
