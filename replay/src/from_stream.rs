//! Rebuilding from the Kinesis log instead of the event store (`--from-stream`): for a view
//! whose store is not reachable from where it is built, or to check that the log alone rebuilds
//! it.
//!
//! Every shard is read to its end (a closed shard) or until it is caught up (an open one), one
//! shard after the other, a shard only once its parents are done: an aggregate's commits all go
//! to one shard (its id is the partition key), and after a reshard its earlier commits are in
//! the parent, so each aggregate is applied in order. Commits are applied in batches with the
//! same retries as a store rebuild.
//!
//! Kinesis keeps at most 365 days: from the trim horizon, an aggregate whose first commits have
//! expired shows up as a gap and stops the rebuild with the projection's reason; a start time
//! older than the stream's retention is refused up front. A rebuild from the stream keeps no
//! progress of its own: run again, it reads the stream again and the projection skips what it
//! applied already (per-aggregate markers).
//!
//! A record may carry several commits (the relay's containers): they are applied in the
//! record's order. A record this build cannot read (a newer container version, or not an
//! envelope) stops the rebuild with its shard and sequence number.

use std::collections::HashSet;

use aws_sdk_kinesis::Client;
use commit_log::projection::Projection;
use commit_log::LoggedCommit;
use kinesis_consumer::kinesis::{
    get_records, list_shards, shard_iterator, shard_iterator_at, GetRecordsError, ShardInfo,
};
use kinesis_consumer::{Checkpoint, SequenceNumber};
use time::OffsetDateTime;

use crate::error::ReplayError;
use crate::rebuild::{apply_with_retries, RebuildProgress};

/// Records per `GetRecords` call.
const RECORDS_PER_CALL: i32 = 1_000;

/// Where in the stream a rebuild starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The oldest record each shard still holds.
    TrimHorizon,
    /// The first record added at or after this time.
    At(OffsetDateTime),
}

/// The stream a rebuild reads.
#[derive(Debug, Clone)]
pub struct StreamSource {
    /// A Kinesis client.
    pub client: Client,
    /// The stream's name (`kinesis.stream_name`).
    pub stream: String,
    /// Where to start.
    pub start: StreamStart,
}

/// Rebuilds `projection` from `source`, `batch_commits` commits per apply. `on_batch` sees the
/// progress after every batch (`through` stays 0: a stream does not say where it ends).
pub async fn rebuild_from_stream(
    source: &StreamSource,
    projection: &dyn Projection,
    batch_commits: usize,
    mut on_batch: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, ReplayError> {
    if let StreamStart::At(start) = source.start {
        check_retention(source, start).await?;
    }
    let shards = list_shards(&source.client, &source.stream)
        .await
        .map_err(|e| ReplayError::stream(&source.stream, e))?;
    let mut state = RebuildProgress {
        started_after: 0,
        applied_through: 0,
        through: 0,
        commits: 0,
        events: 0,
    };
    let mut batch = Vec::with_capacity(batch_commits.max(1));
    for shard in parents_first(shards) {
        let Some(mut iterator) = first_iterator(source, &shard.shard_id).await? else {
            continue;
        };
        let mut last_sequence: Option<String> = None;
        loop {
            let page = match get_records(&source.client, &iterator, RECORDS_PER_CALL).await {
                Ok(page) => page,
                Err(GetRecordsError::ExpiredIterator) => {
                    // Slow applies outlived the iterator: start again after the last record.
                    let resume = match &last_sequence {
                        Some(sequence) => Checkpoint::After(SequenceNumber::new(sequence)),
                        None => Checkpoint::TrimHorizon,
                    };
                    match shard_iterator(&source.client, &source.stream, &shard.shard_id, &resume)
                        .await
                        .map_err(|e| ReplayError::stream(&source.stream, e))?
                    {
                        Some(fresh) => {
                            iterator = fresh;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(GetRecordsError::Call(error)) if error.retryable => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                Err(GetRecordsError::Call(error)) => {
                    return Err(ReplayError::stream(&source.stream, error))
                }
            };
            // An open shard never ends: an empty page at the tip means "read all there is".
            // (Mid-shard empty pages say how far behind they are; emulators may not say.)
            let caught_up = page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0;
            for record in &page.records {
                let commits = commit_log::decode_record(&record.data).map_err(|source| {
                    ReplayError::MalformedRecord {
                        shard: shard.shard_id.clone(),
                        reason: format!("record {}: {source}", record.sequence_number),
                    }
                })?;
                for commit in commits {
                    batch.push(commit);
                    if batch.len() >= batch_commits.max(1) {
                        apply(projection, &mut batch, &mut state).await?;
                        on_batch(&state);
                    }
                }
            }
            last_sequence = page
                .records
                .last()
                .map(|r| r.sequence_number.clone())
                .or(last_sequence);
            match page.next_iterator {
                Some(next) if !caught_up => iterator = next,
                // A closed shard's end, or an open shard with nothing more to read now.
                _ => break,
            }
        }
    }
    if !batch.is_empty() {
        apply(projection, &mut batch, &mut state).await?;
        on_batch(&state);
    }
    Ok(state)
}

/// A start older than the stream keeps is refused (the records in between are gone), and so is
/// one in the future (Kinesis refuses it too, less clearly).
async fn check_retention(source: &StreamSource, start: OffsetDateTime) -> Result<(), ReplayError> {
    if start > OffsetDateTime::now_utc() {
        return Err(ReplayError::FutureStart(start));
    }
    let summary = source
        .client
        .describe_stream_summary()
        .stream_name(&source.stream)
        .send()
        .await
        .map_err(|e| ReplayError::stream(&source.stream, e))?;
    let hours = summary
        .stream_description_summary()
        .map_or(24, |s| s.retention_period_hours());
    let horizon = OffsetDateTime::now_utc() - time::Duration::hours(i64::from(hours));
    if start < horizon {
        return Err(ReplayError::OutsideRetention {
            requested: start,
            horizon,
            hours,
        });
    }
    Ok(())
}

async fn first_iterator(
    source: &StreamSource,
    shard_id: &str,
) -> Result<Option<String>, ReplayError> {
    let iterator = match source.start {
        StreamStart::TrimHorizon => {
            shard_iterator(
                &source.client,
                &source.stream,
                shard_id,
                &Checkpoint::TrimHorizon,
            )
            .await
        }
        StreamStart::At(time) => {
            let timestamp =
                aws_sdk_kinesis::primitives::DateTime::from_nanos(time.unix_timestamp_nanos())
                    .map_err(|e| ReplayError::stream(&source.stream, e))?;
            shard_iterator_at(&source.client, &source.stream, shard_id, timestamp).await
        }
    };
    iterator.map_err(|e| ReplayError::stream(&source.stream, e))
}

/// The shards in an order where every shard comes after its parents (parents no longer listed,
/// expired from the stream, count as done).
fn parents_first(shards: Vec<ShardInfo>) -> Vec<ShardInfo> {
    let listed: HashSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut waiting = shards;
    let mut ordered = Vec::with_capacity(waiting.len());
    while !waiting.is_empty() {
        let (ready, blocked): (Vec<ShardInfo>, Vec<ShardInfo>) =
            waiting.into_iter().partition(|shard| {
                shard
                    .parent_shard_ids
                    .iter()
                    .all(|parent| done.contains(parent) || !listed.contains(parent))
            });
        if ready.is_empty() {
            // A cycle cannot happen in Kinesis; read the rest as listed rather than loop.
            ordered.extend(blocked);
            break;
        }
        for shard in ready {
            done.insert(shard.shard_id.clone());
            ordered.push(shard);
        }
        waiting = blocked;
    }
    ordered
}

async fn apply(
    projection: &dyn Projection,
    batch: &mut Vec<LoggedCommit>,
    state: &mut RebuildProgress,
) -> Result<(), ReplayError> {
    let Some(first) = batch.first() else {
        return Ok(());
    };
    apply_with_retries(projection, batch)
        .await
        .map_err(|source| ReplayError::Apply {
            projection: projection.name(),
            position: first.first_position(),
            source,
        })?;
    let highest = batch
        .iter()
        .map(|c| c.last_position() as i64)
        .max()
        .unwrap_or(0);
    state.applied_through = state.applied_through.max(highest);
    state.commits += batch.len() as u64;
    state.events += batch.iter().map(|c| c.events.len() as u64).sum::<u64>();
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo {
            shard_id: id.to_owned(),
            parent_shard_ids: parents.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn children_come_after_their_parents() {
        let order: Vec<String> = parents_first(vec![
            shard("merged", &["left", "right"]),
            shard("left", &["root"]),
            shard("right", &["root"]),
            shard("root", &["expired"]),
        ])
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
        assert_eq!(order, ["root", "left", "right", "merged"]);
    }
}
