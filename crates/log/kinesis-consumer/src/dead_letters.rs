//! The projectors' dead-letter queue (SQS): one JSON message per poison record, with what an
//! operator needs to understand and replay it.

use aws_sdk_sqs::Client;
use aws_support::queues::CreateQueueError;
use aws_support::resources::{QueueKind, QueueResource, QueueShape};
use commit_log::LoggedCommit;
use serde::Serialize;
use time::OffsetDateTime;

use crate::kinesis::KinesisRecord;
use aws_support::AwsCallError;

/// SQS takes messages up to 256 KiB; a larger one is sent without the raw record (the parked
/// table keeps it when its aggregate is known, and the log keeps it for its retention).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The body of a dead-letter message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The projection that could not apply the record.
    pub projection: String,
    /// The shard it was read from.
    pub shard_id: String,
    /// Its sequence number in the shard.
    pub sequence_number: String,
    /// Its partition key (the aggregate id, even when the record does not decode).
    pub partition_key: String,
    /// The commit's aggregate type, when the record decoded.
    pub aggregate_type: Option<String>,
    /// The commit's aggregate id, when the record decoded.
    pub aggregate_id: Option<String>,
    /// The commit's first and last sequence within its aggregate, when it decoded.
    pub sequence_range: Option<(u64, u64)>,
    /// The commit's first and last global position, when it decoded.
    pub position_range: Option<(u64, u64)>,
    /// Why it is poison.
    pub reason: String,
    /// When the runtime gave up on it (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
    /// The record's bytes, base64 (absent when the message would be too large for SQS).
    pub record_base64: Option<String>,
}

impl DeadLetter {
    /// The dead letter of `record`, with what its decoded `commit` tells, if it decoded.
    pub fn new(
        projection: &str,
        shard_id: &str,
        record: &KinesisRecord,
        commit: Option<&LoggedCommit>,
        reason: String,
    ) -> Self {
        Self {
            projection: projection.to_owned(),
            shard_id: shard_id.to_owned(),
            sequence_number: record.sequence_number.clone(),
            partition_key: record.partition_key.clone(),
            aggregate_type: commit.map(|c| c.aggregate_type.clone()),
            aggregate_id: commit.map(|c| c.aggregate_id.clone()),
            sequence_range: commit.map(|c| (c.first_sequence(), c.last_sequence())),
            position_range: commit.map(|c| (c.first_position(), c.last_position())),
            reason,
            failed_at: OffsetDateTime::now_utc(),
            record_base64: Some(aws_smithy_types::base64::encode(&record.data)),
        }
    }
}

/// The SQS dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    client: Client,
    queue_url: String,
}

impl DeadLetterQueue {
    /// The log consumers' dead-letter queue (`projector-dlq`, settings key
    /// `sqs.projector_dlq_url`): records that are no envelope at all are sent here directly, so
    /// no work queue redrives into it.
    pub const RESOURCE: QueueResource = QueueResource {
        name: "projector",
        shape: QueueShape {
            fifo: false,
            kind: QueueKind::DeadLetterOnly,
        },
        queue_url_key: None,
        dead_letter_url_key: "sqs.projector_dlq_url",
    };

    /// Creates a dead-letter queue `<base>-dlq` shaped as [`DeadLetterQueue::RESOURCE`]
    /// (tests and benchmarks, which need one of their own) and returns its URL.
    pub async fn create_queue(client: &Client, base: &str) -> Result<String, CreateQueueError> {
        Ok(Self::RESOURCE
            .shape
            .create(client, base)
            .await?
            .dead_letter_url)
    }

    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends one dead letter.
    pub async fn send(&self, letter: &DeadLetter) -> Result<(), AwsCallError> {
        let mut body = to_json(letter);
        if body.len() > MAX_MESSAGE_BYTES {
            body = to_json(&DeadLetter {
                record_base64: None,
                ..letter.clone()
            });
        }
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:SendMessage", e))?;
        Ok(())
    }
}

fn to_json(letter: &DeadLetter) -> String {
    // Strings, numbers and a timestamp within range: serialising cannot fail.
    serde_json::to_string(letter).expect("a dead letter serialises to JSON")
}
