//! `/health` of the flows process's queue consumers, behind the admin endpoint as the process
//! serves it, against real (emulated) SQS queues.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flows::queue::{ConsumerConfig, Handled, Message, MessageHandler, QueueConsumer};
use service_kit::admin;
use test_support::http::request;
use test_support::{aws_test_config, unique_name, PATIENCE};
use tokio::sync::watch;

struct Nothing;

#[async_trait]
impl MessageHandler for Nothing {
    async fn handle(&self, _: &Message) -> Handled {
        Handled::Done
    }
}

/// A consumer of `queue_url` with its `/health` served on a port of its own; the `/health` URL
/// and a sender that stops both.
async fn serve_consumer(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> (String, watch::Sender<bool>) {
    let consumer = QueueConsumer::new(
        sqs.clone(),
        ConsumerConfig {
            name: "intake",
            queue_url: queue_url.to_owned(),
            dead_letter_url: queue_url.to_owned(),
            wait_time: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(10),
            max_messages: 10,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
        },
        Arc::new(Nothing),
    );
    let listener = admin::bind("127.0.0.1", 0).await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tokio::spawn(admin::serve(
        listener,
        consumer.health(),
        until_stopped(stopped.clone()),
    ));
    tokio::spawn(consumer.run(until_stopped(stopped)));
    (url, stop)
}

async fn status_becomes(url: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while request("GET", url, None, None).await.status != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_is_200_while_the_queue_is_read_and_503_when_it_cannot_be() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let readable = sqs
        .create_queue()
        .queue_name(unique_name("health"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let gone = sqs
        .create_queue()
        .queue_name(unique_name("health-gone"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.delete_queue().queue_url(&gone).send().await.unwrap();

    let (healthy, stop_healthy) = serve_consumer(&sqs, &readable).await;
    let (unhealthy, stop_unhealthy) = serve_consumer(&sqs, &gone).await;
    status_becomes(&healthy, 200).await;
    // Started together, the other consumer has received by now; this one cannot.
    assert_eq!(request("GET", &unhealthy, None, None).await.status, 503);

    stop_healthy.send(true).unwrap();
    stop_unhealthy.send(true).unwrap();
    sqs.delete_queue()
        .queue_url(&readable)
        .send()
        .await
        .unwrap();
}
