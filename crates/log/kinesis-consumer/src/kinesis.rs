//! Thin wrappers over the Kinesis operations the runtime uses (ListShards, GetShardIterator,
//! GetRecords), one function each, keeping the SDK error and its classification.

use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;

use crate::leases::Checkpoint;
use aws_support::AwsCallError;

/// A shard as listed by ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its id.
    pub shard_id: String,
    /// The shards it was split or merged from (none for an original shard): it is read only
    /// after all of them reached SHARD_END.
    pub parent_shard_ids: Vec<String>,
}

/// One record as GetRecords returned it.
#[derive(Debug, Clone)]
pub struct KinesisRecord {
    /// Its sequence number (up to 56 digits: kept as text).
    pub sequence_number: String,
    /// Its partition key (the aggregate id).
    pub partition_key: String,
    /// The record's bytes.
    pub data: Vec<u8>,
    /// When it reached the stream (epoch milliseconds), if Kinesis said.
    pub arrived_at_millis: Option<i64>,
}

/// What one GetRecords call returned.
#[derive(Debug)]
pub struct RecordsPage {
    /// The records, in shard order.
    pub records: Vec<KinesisRecord>,
    /// Where to read next; `None` once a closed shard is read to its end (SHARD_END).
    pub next_iterator: Option<String>,
    /// How far the page is behind the tip of the shard.
    pub millis_behind_latest: Option<i64>,
}

/// Why GetRecords failed.
#[derive(Debug, thiserror::Error)]
pub enum GetRecordsError {
    /// The iterator is older than five minutes: get a new one from the checkpoint.
    #[error("the shard iterator expired")]
    ExpiredIterator,
    /// Any other failure.
    #[error(transparent)]
    Call(#[from] AwsCallError),
}

/// Every shard of `stream` (open and closed ones still in retention), following pagination.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<ShardInfo>, AwsCallError> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // The API refuses the stream name together with a continuation token.
        let request = match &next_token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("kinesis:ListShards", e))?;
        shards.extend(page.shards().iter().map(|shard| {
            ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                parent_shard_ids: shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
            }
        }));
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(shards),
        }
    }
}

/// An iterator just after `checkpoint` (from the oldest record for [`Checkpoint::TrimHorizon`]).
pub async fn shard_iterator(
    client: &Client,
    stream: &str,
    shard_id: &str,
    checkpoint: &Checkpoint,
) -> Result<Option<String>, AwsCallError> {
    let request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id);
    let request = match checkpoint {
        Checkpoint::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Checkpoint::After(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence.as_str()),
        // Nothing left to read.
        Checkpoint::ShardEnd => return Ok(None),
    };
    let output = request
        .send()
        .await
        .map_err(|e| AwsCallError::from_sdk("kinesis:GetShardIterator", e))?;
    Ok(output.shard_iterator().map(str::to_owned))
}

/// An iterator at the first record of `shard_id` added at or after `timestamp` (replay from a
/// point of the log).
pub async fn shard_iterator_at(
    client: &Client,
    stream: &str,
    shard_id: &str,
    timestamp: aws_sdk_kinesis::primitives::DateTime,
) -> Result<Option<String>, AwsCallError> {
    let output = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(timestamp)
        .send()
        .await
        .map_err(|e| AwsCallError::from_sdk("kinesis:GetShardIterator", e))?;
    Ok(output.shard_iterator().map(str::to_owned))
}

/// Reads up to `limit` records at `iterator`.
pub async fn get_records(
    client: &Client,
    iterator: &str,
    limit: i32,
) -> Result<RecordsPage, GetRecordsError> {
    let output = client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .send()
        .await
        .map_err(|error| {
            if error
                .as_service_error()
                .is_some_and(|e| e.is_expired_iterator_exception())
            {
                GetRecordsError::ExpiredIterator
            } else {
                GetRecordsError::Call(AwsCallError::from_sdk("kinesis:GetRecords", error))
            }
        })?;
    Ok(RecordsPage {
        records: output
            .records()
            .iter()
            .map(|record| KinesisRecord {
                sequence_number: record.sequence_number().to_owned(),
                partition_key: record.partition_key().unwrap_or_default().to_owned(),
                data: record.data().as_ref().to_vec(),
                arrived_at_millis: record
                    .approximate_arrival_timestamp()
                    .and_then(|at| at.to_millis().ok()),
            })
            .collect(),
        next_iterator: output.next_shard_iterator().map(str::to_owned),
        millis_behind_latest: output.millis_behind_latest(),
    })
}
