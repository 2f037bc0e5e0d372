//! The log the relay publishes to, as a port ([`RecordLog`]: put a batch, get one outcome per
//! record; list the open shards) and its real adapter on Kinesis PutRecords and ListShards
//! ([`KinesisLog`]).
//!
//! The port is as small as the relay's need so a test can wrap the real adapter in a decorator
//! that injects faults (refuse chosen records, fail after the put); nothing here imitates Kinesis.

use std::time::Duration;

use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_support::AwsCallError;
use futures::future::BoxFuture;

pub use crate::shard_map::ShardRange;

/// Kinesis's error code for a shard over its write limit; the usual per-record failure.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// One record for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The id of the aggregate of the record's first commit: every commit of the record maps
    /// to the same shard as it.
    pub partition_key: String,
    /// The hash key (decimal) that places the record, inside the range of the shard its
    /// commits map to; `None` lets the partition key place it.
    pub explicit_hash_key: Option<String>,
    /// The payload: one commit's envelope (`commit_log::encode`) or a container of several
    /// commits of one shard (`commit_log::Container`).
    pub data: Vec<u8>,
}

impl LogRecord {
    /// What the record counts against Kinesis's size limits: its data plus its partition key.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// What became of one record of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The log stored the record.
    Stored {
        /// The shard it went to.
        shard_id: String,
        /// Its sequence number in the shard (56 digits on real Kinesis: compare as text).
        sequence_number: String,
    },
    /// The log refused this record; the others of the call may be stored.
    Refused {
        /// The service's code, e.g. [`THROTTLED`] or `InternalFailure`.
        error_code: String,
        /// The service's explanation.
        error_message: String,
    },
}

/// Why a whole put failed: no record of it is known to be stored (some may be).
#[derive(Debug, thiserror::Error)]
pub enum RecordLogError {
    /// The PutRecords call failed.
    #[error(transparent)]
    Kinesis(#[from] AwsCallError),
    /// The answer did not have one result per record sent, so no result can be trusted.
    #[error("PutRecords answered {answered} results for {sent} records")]
    MismatchedResults {
        /// Records sent.
        sent: usize,
        /// Results received.
        answered: usize,
    },
    /// ListShards described a shard without a readable hash key range.
    #[error("ListShards gave shard {0} no readable hash key range")]
    MalformedShard(String),
}

impl RecordLogError {
    /// Whether the same put may succeed later (throttling, timeouts, a connection lost, server
    /// faults), as opposed to a fault that needs an operator (a missing stream, no permission).
    /// The relay retries either way, since it cannot skip a commit; this decides how loudly it
    /// complains.
    pub fn is_retryable(&self) -> bool {
        match self {
            RecordLogError::Kinesis(error) => error.retryable,
            RecordLogError::MismatchedResults { .. } => true,
            RecordLogError::MalformedShard(_) => false,
        }
    }
}

/// The log port: one call puts a batch and reports per record; another lists the open shards,
/// so the relay knows which commits may share a record.
pub trait RecordLog: Send + Sync + 'static {
    /// Puts `records` in one call and returns one outcome per record, in the same order (the
    /// relay treats any other count as a failed call). An error means the call as a whole
    /// failed.
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>>;

    /// The stream's open shards and their hash key ranges.
    fn open_shards(&self) -> BoxFuture<'_, Result<Vec<ShardRange>, RecordLogError>>;
}

/// How long one attempt of a PutRecords call may take, and the whole call with the SDK's own
/// retries; without them a call to an unresponsive endpoint could hang the relay, and shutdown
/// with it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// [`RecordLog`] on a Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisLog {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
}

impl KinesisLog {
    /// Puts to `stream_name` through `client` (built by `aws_support::kinesis`), with time
    /// limits on every call.
    pub fn new(client: &aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Self {
        let config = client
            .config()
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            client: aws_sdk_kinesis::Client::from_conf(config),
            stream_name: stream_name.into(),
        }
    }

    async fn put_records(
        &self,
        records: Vec<LogRecord>,
    ) -> Result<Vec<PutOutcome>, RecordLogError> {
        let entries = records
            .into_iter()
            .map(|record| {
                PutRecordsRequestEntry::builder()
                    .partition_key(record.partition_key)
                    .set_explicit_hash_key(record.explicit_hash_key)
                    .data(Blob::new(record.data))
                    .build()
                    // Both required fields are set just above.
                    .expect("a complete PutRecords entry")
            })
            .collect();
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream_name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|error| AwsCallError::from_sdk("kinesis:PutRecords", error))?;
        Ok(output
            .records()
            .iter()
            .map(|result| match result.error_code() {
                Some(code) => PutOutcome::Refused {
                    error_code: code.to_owned(),
                    error_message: result.error_message().unwrap_or_default().to_owned(),
                },
                None => PutOutcome::Stored {
                    shard_id: result.shard_id().unwrap_or_default().to_owned(),
                    sequence_number: result.sequence_number().unwrap_or_default().to_owned(),
                },
            })
            .collect())
    }

    async fn list_open_shards(&self) -> Result<Vec<ShardRange>, RecordLogError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // The API refuses the stream name together with a continuation token.
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let page = request
                .send()
                .await
                .map_err(|error| AwsCallError::from_sdk("kinesis:ListShards", error))?;
            for shard in page.shards() {
                // A closed shard (split or merged) has an ending sequence number.
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|range| range.ending_sequence_number().is_none());
                let range = shard.hash_key_range();
                let bounds = range.and_then(|range| {
                    Some((
                        range.starting_hash_key().parse::<u128>().ok()?,
                        range.ending_hash_key().parse::<u128>().ok()?,
                    ))
                });
                match bounds {
                    Some((starting_hash_key, ending_hash_key)) if open => shards.push(ShardRange {
                        shard_id: shard.shard_id().to_owned(),
                        starting_hash_key,
                        ending_hash_key,
                    }),
                    Some(_) => {}
                    None => {
                        return Err(RecordLogError::MalformedShard(shard.shard_id().to_owned()))
                    }
                }
            }
            match page.next_token() {
                Some(token) => next_token = Some(token.to_owned()),
                None => return Ok(shards),
            }
        }
    }
}

impl RecordLog for KinesisLog {
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>> {
        Box::pin(self.put_records(records))
    }

    fn open_shards(&self) -> BoxFuture<'_, Result<Vec<ShardRange>, RecordLogError>> {
        Box::pin(self.list_open_shards())
    }
}
