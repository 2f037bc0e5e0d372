//! The one SQS consumer loop every queue worker shares: long polling, a handler per message,
//! visibility extended while messages are being handled, delete on success, a later retry
//! (by visibility) on a transient failure, and the dead-letter queue with a reason for a message
//! that can never succeed.
//!
//! A transient failure is retried until the dependency is back, never parked: a message that
//! fails transiently when SQS would deliver it at most once more (its `maxReceiveCount`, read
//! from the queue's redrive policy) is sent again as a new message (same body and group, its
//! delivery count from zero; a standard queue's copy is delayed by the backoff) and deleted, so
//! an outage longer than the queue's deliveries dead-letters nothing. The copy goes to the end
//! of its FIFO group (every flow's handler is idempotent and order-tolerant there: a refund
//! cancels a charge that is made later). Only a message a handler calls poison, or one whose
//! deliveries all ended in crashes, reaches the dead-letter queue.
//!
//! Messages of one FIFO message group are handled in the order received; different groups (and
//! every message of a standard queue) concurrently. A group's message that is deferred (a retry)
//! or cannot be settled holds back the group's later messages of the same batch: they are
//! returned unhandled and come again after it.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_support::AwsCallError;
use futures::future::join_all;
use service_kit::admin::HealthCheck;
use service_kit::{error_chain, trace_context, Backoff};
use tracing::Instrument;

use crate::flow_trace;
use crate::sqs::{Outgoing, Receive, SqsQueue};

/// The message attribute that says why a message was dead-lettered by a handler.
pub const REASON_ATTRIBUTE: &str = "reason";
/// The message attribute naming the queue a dead-lettered message came from.
pub const SOURCE_ATTRIBUTE: &str = "source_queue";

/// The pauses between failed receives: up to 500 ms first, doubling up to 30 s.
const RECEIVE_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// The system attributes every received message comes with.
const RECEIVED_ATTRIBUTES: &[MessageSystemAttributeName] = &[
    MessageSystemAttributeName::ApproximateReceiveCount,
    MessageSystemAttributeName::MessageGroupId,
];

/// One received message, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// SQS's message id.
    pub id: String,
    /// The body.
    pub body: String,
    /// How many times SQS has delivered it (1 the first time).
    pub receive_count: u32,
    /// The FIFO message group, if any.
    pub group_id: Option<String>,
    /// How many more times SQS will deliver it if this delivery does not settle it, before its
    /// redrive policy moves it to the dead-letter queue (0: this is the last delivery); `None`
    /// when the queue has no redrive policy or it could not be read yet.
    pub deliveries_left: Option<u32>,
    /// The sender's trace (its `traceparent` message attribute), which handling continues.
    pub traceparent: Option<String>,
    receipt_handle: String,
}

impl Message {
    /// Its FIFO message group, or its own id where it has none: the unit handled in order.
    pub fn group(&self) -> &str {
        self.group_id.as_deref().unwrap_or(&self.id)
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Done (or nothing to do): delete it.
    Done,
    /// A transient failure: deliver it again after a backoff that grows with its receive count
    /// (past the queue's `maxReceiveCount`, SQS moves it to the dead-letter queue).
    Retry,
    /// As [`Handled::Retry`], but delivered again within this long at the latest (a handler
    /// with a deadline of its own, which must see the message again by then).
    RetryWithin(Duration),
    /// It can never succeed: move it to the dead-letter queue with this reason.
    DeadLetter(String),
}

/// Handles one queue's messages.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Decides what becomes of `message`; must be idempotent (SQS delivers at least once).
    async fn handle(&self, message: &Message) -> Handled;
}

/// How a consumer polls.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The queue's short name in logs and metrics (`intake`, `payments`).
    pub name: &'static str,
    /// The queue.
    pub queue_url: String,
    /// Its dead-letter queue (the target of its redrive policy).
    pub dead_letter_url: String,
    /// Long-polling wait per ReceiveMessage (0 to 20 s).
    pub wait_time: Duration,
    /// How long a received message stays invisible; extended every half of it while handled.
    pub visibility_timeout: Duration,
    /// Messages per ReceiveMessage (1 to 10).
    pub max_messages: i32,
    /// The delay before a transiently failed message's second delivery; doubled per receive.
    pub retry_initial: Duration,
    /// The longest delay between deliveries.
    pub retry_max: Duration,
}

/// `/health` of a consumer: healthy while ReceiveMessage succeeded recently.
#[derive(Debug)]
pub struct ConsumerHealth {
    name: &'static str,
    stale_after: Duration,
    last_receive: Mutex<(Option<Instant>, Option<String>)>,
}

impl ConsumerHealth {
    fn new(config: &ConsumerConfig) -> Self {
        Self {
            name: config.name,
            stale_after: config.wait_time * 3 + Duration::from_secs(30),
            last_receive: Mutex::new((None, None)),
        }
    }

    fn record(&self, error: Option<String>) {
        let mut state = self.last_receive.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            None => *state = (Some(Instant::now()), None),
            Some(error) => state.1 = Some(error),
        }
    }

    /// `Ok` while the queue was read within three polling waits (plus 30 s), else why not.
    pub fn status(&self) -> Result<(), String> {
        let state = self.last_receive.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            (Some(at), _) if at.elapsed() < self.stale_after => Ok(()),
            (_, Some(error)) => Err(format!("{} queue unreadable: {error}", self.name)),
            _ => Err(format!("{} queue not read yet", self.name)),
        }
    }
}

impl HealthCheck for ConsumerHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.status() })
    }
}

/// Polls one queue and hands its messages to a [`MessageHandler`].
pub struct QueueConsumer {
    queue: SqsQueue,
    dead_letters: SqsQueue,
    config: ConsumerConfig,
    handler: Arc<dyn MessageHandler>,
    health: Arc<ConsumerHealth>,
    /// The queue's `maxReceiveCount` (`None`: no redrive policy), read once it can be.
    max_receives: tokio::sync::OnceCell<Option<u32>>,
}

impl QueueConsumer {
    /// A consumer of `config.queue_url`.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        config: ConsumerConfig,
        handler: Arc<dyn MessageHandler>,
    ) -> Self {
        let health = Arc::new(ConsumerHealth::new(&config));
        Self {
            queue: SqsQueue::new(sqs.clone(), &config.queue_url),
            dead_letters: SqsQueue::new(sqs, &config.dead_letter_url),
            config,
            handler,
            health,
            max_receives: tokio::sync::OnceCell::new(),
        }
    }

    /// The queue's `maxReceiveCount`, from its redrive policy; `None` without a policy or while
    /// it cannot be read (tried again with the next batch).
    async fn max_receives(&self) -> Option<u32> {
        let read = self
            .max_receives
            .get_or_try_init(|| async {
                let policy = self
                    .queue
                    .attribute(QueueAttributeName::RedrivePolicy)
                    .await?;
                Ok::<_, AwsCallError>(policy.and_then(|policy| max_receive_count(&policy)))
            })
            .await;
        match read {
            Ok(max) => *max,
            Err(error) => {
                tracing::warn!(queue = self.config.name, error = %error_chain(&error), "cannot read the queue's redrive policy");
                None
            }
        }
    }

    /// Its health, for `/health`.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.health.clone()
    }

    /// Polls until `shutdown` completes; the batch in hand is finished first. Dropping the
    /// future (a crash) leaves in-flight messages to reappear after their visibility timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let name = self.config.name;
        let mut pause = RECEIVE_RETRY;
        loop {
            let received = tokio::select! {
                () = &mut shutdown => break,
                received = self.receive() => received,
            };
            match received {
                Ok(messages) => {
                    pause.succeeded();
                    self.health.record(None);
                    if !messages.is_empty() {
                        self.handle_batch(messages).await;
                    }
                }
                Err(error) => {
                    let error = error_chain(&error);
                    tracing::warn!(queue = name, error = %error, "cannot receive messages");
                    self.health.record(Some(error));
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause.failed()) => {}
                    }
                }
            }
        }
        tracing::info!(queue = name, "consumer stopped");
    }

    async fn receive(&self) -> Result<Vec<Message>, AwsCallError> {
        let max_receives = self.max_receives().await;
        let received = self
            .queue
            .receive(&Receive {
                max_messages: self.config.max_messages,
                wait: self.config.wait_time,
                visibility: self.config.visibility_timeout,
                system_attributes: RECEIVED_ATTRIBUTES,
                message_attributes: true,
            })
            .await?;
        Ok(received
            .into_iter()
            .filter_map(|message| {
                let attributes = message.attributes.unwrap_or_default();
                let traceparent = message
                    .message_attributes
                    .as_ref()
                    .and_then(|attributes| attributes.get(trace_context::TRACEPARENT))
                    .and_then(|value| value.string_value.clone());
                let receive_count = attributes
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1);
                Some(Message {
                    id: message.message_id?,
                    body: message.body.unwrap_or_default(),
                    receive_count,
                    group_id: attributes
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned(),
                    deliveries_left: max_receives.map(|max| max.saturating_sub(receive_count)),
                    traceparent,
                    receipt_handle: message.receipt_handle?,
                })
            })
            .collect())
    }

    /// Handles a batch: groups in parallel, each group in order, while one heartbeat keeps every
    /// message not yet finished invisible.
    async fn handle_batch(&self, messages: Vec<Message>) {
        let name = self.config.name;
        metrics::counter!("orderpipe_flows_messages_total", "queue" => name, "outcome" => "received")
            .increment(messages.len() as u64);
        let pending: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
            messages.iter().map(|m| m.receipt_handle.clone()).collect(),
        ));
        // Aborted when this future ends or is dropped (a crash must stop extending, so that the
        // messages reappear for another consumer).
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.queue.clone(),
            self.config.visibility_timeout,
            pending.clone(),
        )));
        let mut groups: BTreeMap<String, Vec<Message>> = BTreeMap::new();
        for message in messages {
            groups
                .entry(message.group().to_owned())
                .or_default()
                .push(message);
        }
        join_all(groups.into_values().map(|group| {
            let pending = pending.clone();
            async move {
                // Once a message of the group is not settled (deferred, or its settling
                // failed), the group's later messages must wait for it: handling them now
                // would reorder the group (a refund before its charge).
                let mut held_back = false;
                for message in group {
                    if held_back {
                        self.hold_back(&message).await;
                    } else {
                        let started = Instant::now();
                        let step = flow_trace::message_step(
                            name,
                            &message.id,
                            message.traceparent.as_deref(),
                        );
                        let outcome = self.handler.handle(&message).instrument(step).await;
                        metrics::histogram!("orderpipe_flows_message_seconds", "queue" => name)
                            .record(started.elapsed().as_secs_f64());
                        held_back = !self.settle(&message, outcome).await;
                    }
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&message.receipt_handle);
                }
            }
        }))
        .await;
    }

    /// Returns a message unhandled, behind an earlier message of its FIFO group that was not
    /// settled: visible again at once, which SQS does not deliver while that earlier message is
    /// in flight, and delivers after it, in order, once it is.
    async fn hold_back(&self, message: &Message) {
        let name = self.config.name;
        let released = self
            .queue
            .change_visibility(&message.receipt_handle, Duration::ZERO)
            .await;
        metrics::counter!("orderpipe_flows_messages_total", "queue" => name, "outcome" => "held_back").increment(1);
        if let Err(error) = released {
            // It reappears after its visibility timeout instead, still behind the earlier one.
            tracing::warn!(queue = name, message_id = %message.id, error = %error_chain(&error), "cannot return a held-back message");
        }
    }

    /// Settles `message` as `outcome` says; true when it left the queue (done or
    /// dead-lettered), so later messages of its group may be handled.
    async fn settle(&self, message: &Message, outcome: Handled) -> bool {
        let name = self.config.name;
        let (label, result) = match &outcome {
            Handled::Done => ("done", self.delete(message).await),
            Handled::Retry | Handled::RetryWithin(_) => {
                let mut delay = Backoff::new(self.config.retry_initial, self.config.retry_max)
                    .delay(message.receive_count);
                if let Handled::RetryWithin(latest) = &outcome {
                    delay = delay.min(*latest);
                }
                if message.deliveries_left.is_some_and(|left| left <= 1) {
                    // One more failure (or a crash) and SQS would dead-letter it: a transient
                    // failure starts over as a new message instead.
                    tracing::info!(queue = name, message_id = %message.id, receive_count = message.receive_count, "requeueing message at its delivery limit");
                    ("requeued", self.requeue(message, delay).await)
                } else {
                    tracing::info!(queue = name, message_id = %message.id, receive_count = message.receive_count, delay_ms = delay.as_millis() as u64, "will retry message");
                    ("retried", self.postpone(message, delay).await)
                }
            }
            Handled::DeadLetter(reason) => {
                tracing::warn!(queue = name, message_id = %message.id, reason = %reason, "dead-lettering message");
                let moved = match self.dead_letter(message, reason).await {
                    Ok(()) => self.delete(message).await,
                    Err(error) => Err(error),
                };
                ("dead_lettered", moved)
            }
        };
        match result {
            Ok(()) => {
                metrics::counter!("orderpipe_flows_messages_total", "queue" => name, "outcome" => label).increment(1);
                // A retried message is still ahead of its group's later ones; a requeued copy
                // is behind them by now, but they wait for the next receive all the same.
                matches!(outcome, Handled::Done | Handled::DeadLetter(_))
            }
            // The message reappears after its visibility timeout and is handled again, which
            // handlers are built for.
            Err(error) => {
                metrics::counter!("orderpipe_flows_messages_total", "queue" => name, "outcome" => "settle_failed").increment(1);
                tracing::warn!(queue = name, message_id = %message.id, error = %error_chain(&error), "cannot settle message");
                false
            }
        }
    }

    /// Makes `message` visible again after `delay` (whole seconds, at least one: the API's
    /// unit, and never an instant retry).
    async fn postpone(&self, message: &Message, delay: Duration) -> Result<(), AwsCallError> {
        self.queue
            .change_visibility(&message.receipt_handle, delay.max(Duration::from_secs(1)))
            .await
    }

    /// Sends `message` again as a new one (same body and group, a fresh deduplication id;
    /// delayed by `delay`, at least a second, on a standard queue, which FIFO queues cannot do
    /// per message), then deletes it. A crash in between leaves both: a duplicate, which
    /// handlers are built for.
    async fn requeue(&self, message: &Message, delay: Duration) -> Result<(), AwsCallError> {
        let copy = Outgoing::new(&message.body)
            .in_group(
                message.group(),
                format!("requeue-{}", uuid::Uuid::new_v4().simple()),
            )
            .delayed(delay.max(Duration::from_secs(1)));
        let copy = match &message.traceparent {
            Some(traceparent) => copy.attribute(trace_context::TRACEPARENT, traceparent),
            None => copy,
        };
        self.queue.send(copy).await?;
        self.delete(message).await
    }

    async fn delete(&self, message: &Message) -> Result<(), AwsCallError> {
        self.queue.delete(&message.receipt_handle).await
    }

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<(), AwsCallError> {
        let letter = Outgoing::new(&message.body)
            .attribute(REASON_ATTRIBUTE, reason)
            .attribute(SOURCE_ATTRIBUTE, &self.config.queue_url)
            .in_group(message.group(), &message.id);
        self.dead_letters.send(letter).await.map(drop)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the visibility of every pending message every half visibility timeout.
async fn heartbeat(queue: SqsQueue, visibility: Duration, pending: Arc<Mutex<HashSet<String>>>) {
    let period = (visibility / 2).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(period).await;
        let handles: Vec<String> = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for handle in handles {
            match queue.change_visibility(&handle, visibility).await {
                Ok(()) => {
                    metrics::counter!("orderpipe_flows_visibility_extensions_total").increment(1)
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "cannot extend visibility")
                }
            }
        }
    }
}

/// The `maxReceiveCount` of a redrive policy (JSON; SQS writes the count as a string, some
/// tools as a number).
fn max_receive_count(policy: &str) -> Option<u32> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    match &policy["maxReceiveCount"] {
        serde_json::Value::Number(count) => count.as_u64().and_then(|c| u32::try_from(c).ok()),
        serde_json::Value::String(count) => count.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_limit_is_read_from_the_redrive_policy_in_either_spelling() {
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"5"}"#),
            Some(5)
        );
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":3}"#),
            Some(3)
        );
        assert_eq!(max_receive_count("not json"), None);
    }
}
