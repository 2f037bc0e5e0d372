//! The AWS resources orderpipe needs (the stream, the DynamoDB tables, the SQS queues), each
//! declared once, as a const beside the code that uses it: the event stream in
//! `kinesis_consumer::settings`, the lease and parked tables and the projectors' dead-letter
//! queue in `kinesis-consumer`, the active-orders view's tables in `read-models`, the work
//! queues in `flows::queues`.
//!
//! A declaration holds what the code relies on: the resource's base name, the settings key that
//! carries its name or URL, its key schema or queue kind. Everything else reads it from there:
//! the binaries' built-in defaults (`<LOCAL_PREFIX>-<name>`), the tests that create fresh
//! resources, and, through the generated manifest `infra/cdk/resources.json` (written by the
//! `pipeline-tests` test `resources_manifest`), `scripts/resources.py`, which creates the local
//! stack before anything is built, and the CDK app, which names every resource
//! `<stage prefix>-<name>`.

use serde::Serialize;

use crate::tables::TableShape;

/// The prefix of every resource's name in the local stack and in the binaries' defaults
/// (`orderpipe-events`, `orderpipe-projector-leases`); a deployment uses its stage's prefix.
pub const LOCAL_PREFIX: &str = "orderpipe";

/// `<LOCAL_PREFIX>-<name>`: a resource's name in the local stack and the binaries' defaults.
pub fn local_name(name: &str) -> String {
    format!("{LOCAL_PREFIX}-{name}")
}

/// The Kinesis stream the relay publishes to and the consumers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamResource {
    /// Base name, without prefix.
    pub name: &'static str,
    /// The settings key carrying the stream's name (a dotted path, `kinesis.stream_name`).
    pub settings_key: &'static str,
    /// Shards of the local stack's stream (a deployment runs it on demand).
    pub local_shards: u32,
}

/// A DynamoDB table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableResource {
    /// Base name, without prefix.
    pub name: &'static str,
    /// The settings key carrying the table's name (a dotted path, `dynamodb.leases_table`).
    pub settings_key: &'static str,
    /// Its key schema and indexes.
    pub shape: TableShape,
    /// The attribute DynamoDB expires items by, when the code relies on expiry. The deployment
    /// switches it on; the local emulators have no `UpdateTimeToLive`, so locally items stay.
    pub time_to_live: Option<&'static str>,
}

/// How an SQS queue is fed and drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum QueueKind {
    /// A work queue whose messages move to its dead-letter queue after `max_receive_count`
    /// receives.
    WithDeadLetters {
        /// Receives of a message before SQS moves it to the dead-letter queue.
        max_receive_count: u32,
    },
    /// Only the dead-letter queue exists: a worker sends to it directly (the log consumers'
    /// poison records, whose source is a stream, not a queue).
    DeadLetterOnly,
}

/// The shape of a queue and its dead-letter queue: what creating them needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueShape {
    /// A FIFO queue (name suffix `.fifo`; the dead-letter queue is FIFO too). Producers always
    /// give a deduplication id, so content-based deduplication is not relied on.
    pub fifo: bool,
    /// Work queue with dead letters, or dead letters only.
    pub kind: QueueKind,
}

impl QueueShape {
    /// The work queue's name for base name `base` (`payments` -> `payments.fifo`); `None`
    /// for a dead-letter-only queue.
    pub fn queue_name(&self, base: &str) -> Option<String> {
        match self.kind {
            QueueKind::WithDeadLetters { .. } => Some(format!("{base}{}", self.suffix())),
            QueueKind::DeadLetterOnly => None,
        }
    }

    /// The dead-letter queue's name for base name `base` (`payments` -> `payments-dlq.fifo`).
    pub fn dead_letter_name(&self, base: &str) -> String {
        format!("{base}-dlq{}", self.suffix())
    }

    fn suffix(&self) -> &'static str {
        if self.fifo {
            ".fifo"
        } else {
            ""
        }
    }
}

/// An SQS queue with its dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueResource {
    /// Base name, without prefix or suffixes.
    pub name: &'static str,
    /// FIFO or not, work queue or dead letters only.
    pub shape: QueueShape,
    /// The settings key carrying the work queue's URL (`sqs.intake_queue_url`); `None` for a
    /// dead-letter-only queue.
    pub queue_url_key: Option<&'static str>,
    /// The settings key carrying the dead-letter queue's URL (`sqs.intake_dlq_url`).
    pub dead_letter_url_key: &'static str,
}

/// Every resource of one crate or of the whole system, as the manifest lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// The streams.
    pub streams: Vec<StreamResource>,
    /// The tables.
    pub tables: Vec<TableResource>,
    /// The queues.
    pub queues: Vec<QueueResource>,
}

impl Resources {
    /// `self` followed by `other`'s resources.
    pub fn and(mut self, other: Resources) -> Self {
        self.streams.extend(other.streams);
        self.tables.extend(other.tables);
        self.queues.extend(other.queues);
        self
    }

    /// Each resource's settings key and its default value `<LOCAL_PREFIX>-<name>`: the names
    /// (not the URLs, which no default can know) the binaries start with.
    pub fn default_names(&self) -> Vec<(&'static str, String)> {
        let streams = self
            .streams
            .iter()
            .map(|stream| (stream.settings_key, local_name(stream.name)));
        let tables = self
            .tables
            .iter()
            .map(|table| (table.settings_key, local_name(table.name)));
        streams.chain(tables).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_queues_and_their_dead_letters_carry_the_suffix_sqs_requires() {
        let payments = QueueShape {
            fifo: true,
            kind: QueueKind::WithDeadLetters {
                max_receive_count: 5,
            },
        };
        assert_eq!(
            payments.queue_name("payments").as_deref(),
            Some("payments.fifo")
        );
        assert_eq!(payments.dead_letter_name("payments"), "payments-dlq.fifo");
        let poison = QueueShape {
            fifo: false,
            kind: QueueKind::DeadLetterOnly,
        };
        assert_eq!(poison.queue_name("projector"), None);
        assert_eq!(poison.dead_letter_name("projector"), "projector-dlq");
    }
}
