//! The log the relay publishes to, as a port ([`RecordLog`]: put a batch, get one outcome per
//! record) and its real adapter on Kinesis PutRecords ([`KinesisLog`]).
//!
//! The port is as small as the relay's need so a test can wrap the real adapter in a decorator
//! that injects faults (refuse chosen records, fail after the put); nothing here imitates Kinesis.

use std::time::Duration;

use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_support::AwsCallError;
use futures::future::BoxFuture;

/// Kinesis's error code for a shard over its write limit; the usual per-record failure.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// One record for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Chooses the shard; every record of one aggregate carries its id, so they share a shard.
    pub partition_key: String,
    /// The payload: one commit's envelope (`commit_log::encode`).
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
        }
    }
}

/// The log port: one call puts a batch and reports per record.
pub trait RecordLog: Send + Sync + 'static {
    /// Puts `records` in one call and returns one outcome per record, in the same order (the
    /// relay treats any other count as a failed call). An error means the call as a whole
    /// failed.
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>>;
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
}

impl RecordLog for KinesisLog {
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>> {
        Box::pin(self.put_records(records))
    }
}
