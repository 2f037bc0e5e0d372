//! The operator's view of a flow queue's dead-letter queue: list, show and redrive.
//!
//! SQS has no "peek": listing receives the messages (hiding them for a minute), then makes them
//! visible again at once. Every receive long-polls ([`LONG_POLL`]), so every SQS server holding
//! part of the queue answers (a short poll samples a few and can come back empty while messages
//! wait), and a listing ends only at a long poll that finds nothing new. A message received
//! again keeps its newest receipt handle, the only one SQS honours.
//!
//! Redriving works a page (one receive) at a time: each chosen message of the page is sent back
//! to its source queue (optionally with a corrected body) and deleted here with the handle that
//! page just received, so no handle can have gone stale in between, and deleting as it goes is
//! what lets a FIFO dead-letter queue hand out a group's later messages (SQS holds them back
//! while an earlier one is hidden). For a FIFO queue it keeps the message group and uses a fresh
//! deduplication id, so the corrected message is not taken for the original. A crash between
//! the send and the delete leaves the message in both queues: redriven again later, it is a
//! duplicate, which every flow's handler is built for.
//!
//! On a FIFO dead-letter queue, `list` and `show` see a group's messages only as far as SQS hands
//! them out in one pass (SQS never shows a group's next message while an earlier one is hidden,
//! and showing it again puts it first); `redrive` of every message moves them all.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_support::AwsCallError;
use service_kit::error_chain;

use crate::queue::{REASON_ATTRIBUTE, SOURCE_ATTRIBUTE};
use crate::sqs::{Outgoing, Receive, SqsQueue};

/// How long a listed message stays hidden if the listing process dies before releasing it.
const PEEK_VISIBILITY: Duration = Duration::from_secs(60);

/// The long-polling wait of every receive (SQS allows 1 to 20 s; any of them asks every
/// server). A listing ends with one such wait.
pub const LONG_POLL: Duration = Duration::from_secs(2);

/// The reason shown for a message SQS itself moved (its redrive policy).
pub const MOVED_BY_SQS: &str =
    "moved by the queue's redrive policy: every try failed transiently (maxReceiveCount reached)";

/// A dead-letter queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// An SQS call failed.
    #[error(transparent)]
    Sqs(#[from] AwsCallError),
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
    source: SqsQueue,
    dead_letters: SqsQueue,
}

impl DeadLetters {
    /// The dead letters of `queue`.
    pub fn new(sqs: aws_sdk_sqs::Client, queue: QueuePair) -> Self {
        Self {
            source: SqsQueue::new(sqs.clone(), queue.queue_url),
            dead_letters: SqsQueue::new(sqs, queue.dead_letter_url),
        }
    }

    /// Up to `max` dead-lettered messages, left in the queue.
    pub async fn list(&self, max: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut held = Held::default();
        while held.letters.len() < max {
            let wanted = max - held.letters.len();
            if !self.receive_more(&mut held, wanted).await? {
                break;
            }
        }
        self.release(&held.letters).await;
        Ok(held.letters)
    }

    /// One dead-lettered message, left in the queue.
    pub async fn show(&self, message_id: &str) -> Result<DeadLetter, DeadLetterError> {
        let mut held = Held::default();
        let found = loop {
            let news = self.receive_more(&mut held, 10).await?;
            if let Some(found) = held.letters.iter().find(|m| m.message_id == message_id) {
                break Some(found.clone());
            }
            if !news {
                break None;
            }
        };
        self.release(&held.letters).await;
        found.ok_or_else(|| DeadLetterError::NotFound(message_id.to_owned()))
    }

    /// Receives a page of up to `max` messages into `held`; whether it brought one not held
    /// yet.
    async fn receive_more(&self, held: &mut Held, max: usize) -> Result<bool, DeadLetterError> {
        let mut news = false;
        // Every letter goes in (a repeat takes its newest receipt handle), not only up to the
        // first new one.
        for letter in self.receive_holding(held, max).await? {
            news |= held.insert(letter);
        }
        Ok(news)
    }

    /// One page ([`DeadLetters::receive_page`]); when the receive fails, the messages `held`
    /// are released before the error returns.
    async fn receive_holding(
        &self,
        held: &Held,
        max: usize,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let page = self.receive_page(max).await;
        if page.is_err() {
            self.release(&held.letters).await;
        }
        page
    }

    /// Sends dead letters back to the source queue and deletes them here: the one with
    /// `message_id` (with `body` instead of its own when given), or every one. Returns how many.
    pub async fn redrive(
        &self,
        message_id: Option<&str>,
        body: Option<&str>,
    ) -> Result<usize, DeadLetterError> {
        // Messages not chosen stay hidden until the end, so later pages bring new ones.
        let mut kept = Held::default();
        let mut moved = 0;
        loop {
            let page = self.receive_holding(&kept, 10).await?;
            let mut progressed = false;
            let mut page = page.into_iter();
            while let Some(letter) = page.next() {
                let chosen = message_id.is_none_or(|id| letter.message_id == id);
                if !chosen {
                    progressed |= kept.insert(letter);
                    continue;
                }
                if let Err(error) = self.move_back(&letter, body).await {
                    let rest: Vec<DeadLetter> = std::iter::once(letter).chain(page).collect();
                    self.release(&rest).await;
                    self.release(&kept.letters).await;
                    return Err(error);
                }
                moved += 1;
                progressed = true;
            }
            if !progressed || (message_id.is_some() && moved > 0) {
                break;
            }
        }
        self.release(&kept.letters).await;
        match message_id {
            Some(id) if moved == 0 => Err(DeadLetterError::NotFound(id.to_owned())),
            _ => Ok(moved),
        }
    }

    /// Sends `letter` back to its queue (with `body` when given) and deletes it here with the
    /// receipt handle it was just received with.
    async fn move_back(
        &self,
        letter: &DeadLetter,
        body: Option<&str>,
    ) -> Result<(), DeadLetterError> {
        let group = letter.group_id.as_deref().unwrap_or(&letter.message_id);
        let message = Outgoing::new(body.unwrap_or(&letter.body))
            .in_group(group, format!("redrive-{}", uuid::Uuid::new_v4().simple()));
        self.source.send(message).await?;
        self.dead_letters.delete(&letter.receipt_handle).await?;
        Ok(())
    }

    /// One long-polled receive of up to `max` (at most 10) messages, hidden until released.
    async fn receive_page(&self, max: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let received = self
            .dead_letters
            .receive(&Receive {
                max_messages: max.clamp(1, 10) as i32,
                wait: LONG_POLL,
                visibility: PEEK_VISIBILITY,
                system_attributes: &[MessageSystemAttributeName::All],
                message_attributes: true,
            })
            .await?;
        Ok(received
            .into_iter()
            .filter_map(|message| {
                let message_id = message.message_id?;
                let receipt_handle = message.receipt_handle?;
                let attributes = message.attributes.unwrap_or_default();
                let custom = message.message_attributes.unwrap_or_default();
                let text = |name: &str| custom.get(name).and_then(|v| v.string_value.clone());
                Some(DeadLetter {
                    message_id,
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
                })
            })
            .collect())
    }

    /// Makes `messages` visible again at once.
    async fn release(&self, messages: &[DeadLetter]) {
        for message in messages {
            let released = self
                .dead_letters
                .change_visibility(&message.receipt_handle, Duration::ZERO)
                .await;
            if let Err(error) = released {
                tracing::warn!(message_id = %message.message_id, error = %error_chain(&error), "cannot release a listed message; it reappears within a minute");
            }
        }
    }
}

/// Messages received and still hidden, each once, with its newest receipt handle.
#[derive(Default)]
struct Held {
    letters: Vec<DeadLetter>,
    index: HashMap<String, usize>,
}

impl Held {
    /// Adds `letter`; true when it was not held yet. One received again (its visibility lapsed)
    /// takes its new receipt handle: SQS honours only the newest.
    fn insert(&mut self, letter: DeadLetter) -> bool {
        match self.index.get(&letter.message_id) {
            Some(&at) => {
                self.letters[at].receipt_handle = letter.receipt_handle;
                false
            }
            None => {
                self.index
                    .insert(letter.message_id.clone(), self.letters.len());
                self.letters.push(letter);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str, handle: &str) -> DeadLetter {
        DeadLetter {
            message_id: id.into(),
            body: String::new(),
            reason: String::new(),
            source_queue: None,
            sent_at_ms: None,
            group_id: None,
            receipt_handle: handle.into(),
        }
    }

    #[test]
    fn a_message_received_again_keeps_its_newest_receipt_handle() {
        let mut held = Held::default();
        assert!(held.insert(letter("m-1", "first")));
        assert!(held.insert(letter("m-2", "other")));
        assert!(!held.insert(letter("m-1", "second")));
        assert_eq!(held.letters.len(), 2);
        assert_eq!(held.letters[0].receipt_handle, "second");
    }
}
