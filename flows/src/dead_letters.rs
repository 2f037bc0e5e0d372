//! The operator's view of a flow queue's dead-letter queue: list, show and redrive.
//!
//! SQS has no "peek": listing receives the messages (hiding them for a minute), then makes them
//! visible again at once. Redriving sends a message back to its source queue (optionally with a
//! corrected body) and deletes it from the dead-letter queue; for a FIFO queue it keeps the
//! message group and uses a fresh deduplication id, so the corrected message is not taken for
//! the original.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use projectors::runtime::error_chain;

use crate::queue::{is_fifo, REASON_ATTRIBUTE, SOURCE_ATTRIBUTE};

/// How long a listed message stays hidden if the listing process dies before releasing it.
const PEEK_VISIBILITY: Duration = Duration::from_secs(60);

/// The reason shown for a message SQS itself moved (its redrive policy).
pub const MOVED_BY_SQS: &str =
    "moved by the queue's redrive policy: every try failed transiently (maxReceiveCount reached)";

/// A dead-letter queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// An SQS call failed.
    #[error("SQS call failed: {0}")]
    Sqs(String),
    /// No dead-lettered message has that id.
    #[error("no message {0} in the dead-letter queue")]
    NotFound(String),
}

/// One dead-lettered message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id in the dead-letter queue.
    pub message_id: String,
    /// The original body.
    pub body: String,
    /// Why it is here.
    pub reason: String,
    /// The queue it came from, when a handler dead-lettered it.
    pub source_queue: Option<String>,
    /// When it entered the dead-letter queue (epoch milliseconds, as SQS reports it).
    pub sent_at_ms: Option<u64>,
    /// The FIFO group it belongs to, if any.
    pub group_id: Option<String>,
    receipt_handle: String,
}

/// A flow queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueuePair {
    /// The queue's short name.
    pub name: &'static str,
    /// The queue messages are redriven to.
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dead_letter_url: String,
}

/// Lists, shows and redrives one queue's dead letters.
pub struct DeadLetters {
    sqs: aws_sdk_sqs::Client,
    queue: QueuePair,
}

impl DeadLetters {
    /// The dead letters of `queue`.
    pub fn new(sqs: aws_sdk_sqs::Client, queue: QueuePair) -> Self {
        Self { sqs, queue }
    }

    /// Up to `max` dead-lettered messages, left in the queue.
    pub async fn list(&self, max: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let messages = self.receive(max).await?;
        self.release(&messages).await;
        Ok(messages)
    }

    /// One dead-lettered message, left in the queue.
    pub async fn show(&self, message_id: &str) -> Result<DeadLetter, DeadLetterError> {
        let messages = self.receive(usize::MAX).await?;
        self.release(&messages).await;
        messages
            .into_iter()
            .find(|m| m.message_id == message_id)
            .ok_or_else(|| DeadLetterError::NotFound(message_id.to_owned()))
    }

    /// Sends dead letters back to the source queue and deletes them here: the one with
    /// `message_id` (with `body` instead of its own when given), or every one. Returns how many.
    pub async fn redrive(
        &self,
        message_id: Option<&str>,
        body: Option<&str>,
    ) -> Result<usize, DeadLetterError> {
        let messages = self.receive(usize::MAX).await?;
        let (chosen, others): (Vec<DeadLetter>, Vec<DeadLetter>) = messages
            .into_iter()
            .partition(|m| message_id.is_none_or(|id| m.message_id == id));
        self.release(&others).await;
        if let (Some(id), true) = (message_id, chosen.is_empty()) {
            return Err(DeadLetterError::NotFound(id.to_owned()));
        }
        let mut moved = 0;
        for message in &chosen {
            let body = body.unwrap_or(&message.body);
            let mut send = self
                .sqs
                .send_message()
                .queue_url(&self.queue.queue_url)
                .message_body(body);
            if is_fifo(&self.queue.queue_url) {
                send = send
                    .message_group_id(
                        message
                            .group_id
                            .clone()
                            .unwrap_or_else(|| message.message_id.clone()),
                    )
                    .message_deduplication_id(format!("redrive-{}", uuid::Uuid::new_v4().simple()));
            }
            if let Err(error) = send.send().await {
                self.release(&chosen[moved..]).await;
                return Err(DeadLetterError::Sqs(error_chain(&error)));
            }
            self.sqs
                .delete_message()
                .queue_url(&self.queue.dead_letter_url)
                .receipt_handle(&message.receipt_handle)
                .send()
                .await
                .map_err(|e| DeadLetterError::Sqs(error_chain(&e)))?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Receives up to `max` messages, hiding them until released.
    async fn receive(&self, max: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut seen: HashMap<String, DeadLetter> = HashMap::new();
        let mut found = Vec::new();
        while found.len() < max {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue.dead_letter_url)
                .max_number_of_messages(((max - found.len()).min(10)) as i32)
                .visibility_timeout(PEEK_VISIBILITY.as_secs() as i32)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| DeadLetterError::Sqs(error_chain(&e)))?;
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let (Some(message_id), Some(receipt_handle)) =
                    (message.message_id, message.receipt_handle)
                else {
                    continue;
                };
                let attributes = message.attributes.unwrap_or_default();
                let custom = message.message_attributes.unwrap_or_default();
                let text = |name: &str| custom.get(name).and_then(|v| v.string_value.clone());
                let letter = DeadLetter {
                    message_id: message_id.clone(),
                    body: message.body.unwrap_or_default(),
                    reason: text(REASON_ATTRIBUTE).unwrap_or_else(|| MOVED_BY_SQS.to_owned()),
                    source_queue: text(SOURCE_ATTRIBUTE),
                    sent_at_ms: attributes
                        .get(&MessageSystemAttributeName::SentTimestamp)
                        .and_then(|t| t.parse().ok()),
                    group_id: attributes
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned(),
                    receipt_handle,
                };
                if seen.insert(message_id, letter.clone()).is_none() {
                    found.push(letter);
                }
            }
        }
        Ok(found)
    }

    /// Makes `messages` visible again at once.
    async fn release(&self, messages: &[DeadLetter]) {
        for message in messages {
            let released = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.queue.dead_letter_url)
                .receipt_handle(&message.receipt_handle)
                .visibility_timeout(0)
                .send()
                .await;
            if let Err(error) = released {
                tracing::warn!(message_id = %message.message_id, error = %error_chain(&error), "cannot release a listed message; it reappears within a minute");
            }
        }
    }
}
