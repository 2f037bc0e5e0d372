//! One projection's consumer of one shard: polls GetRecords within the shard's limits, decodes
//! each record, applies batches through the projection, sends poison records to the dead-letter
//! queue, parks the later commits of their aggregates, and checkpoints after each batch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commit_log::LoggedCommit;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use crate::projection::{Projection, ProjectionError};
use crate::runtime::aws::AwsCallError;
use crate::runtime::backoff::Backoff;
use crate::runtime::dead_letters::{DeadLetter, DeadLetterQueue};
use crate::runtime::kinesis::{self, GetRecordsError, KinesisRecord};
use crate::runtime::leases::{Checkpoint, Lease, LeaseError, LeaseTable, SequenceNumber};
use crate::runtime::meters;
use crate::runtime::parked::{parked_key, ClearAggregates, ParkedRecord, ParkedStore};
use crate::runtime::{error_chain, RuntimeError};

/// First delay after a throttled or failed AWS call; doubles up to [`AWS_RETRY_MAX`].
const AWS_RETRY_INITIAL: Duration = Duration::from_millis(200);
const AWS_RETRY_MAX: Duration = Duration::from_secs(10);
/// First delay before a projection's batch is tried again after a transient failure.
const APPLY_RETRY_INITIAL: Duration = Duration::from_millis(100);
const APPLY_RETRY_MAX: Duration = Duration::from_secs(30);
/// `millis_behind` before the first GetRecords answer.
const UNKNOWN: i64 = i64::MIN;
const PARKED_BEHIND: &str = "an earlier commit of this aggregate is parked";
/// Parked-table lookups in flight at once for one batch.
const PARKED_LOOKUPS: usize = 16;

/// What every consumer of a worker shares.
pub(crate) struct ConsumerContext {
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) stream: String,
    pub(crate) leases: LeaseTable,
    pub(crate) parked: ParkedStore,
    pub(crate) dead_letters: DeadLetterQueue,
    pub(crate) batch_size: i32,
    /// Time between two GetRecords calls of one consumer.
    pub(crate) poll_interval: Duration,
    pub(crate) max_apply_attempts: u32,
}

/// A held lease, shared by its consumer (checkpoints) and the worker (renewals): every write
/// increments the lease's counter, so both must write from the latest value, one at a time.
pub(crate) struct SharedLease {
    pub(crate) lease: Mutex<Lease>,
    millis_behind: AtomicI64,
}

impl SharedLease {
    pub(crate) fn new(lease: Lease) -> Self {
        Self {
            lease: Mutex::new(lease),
            millis_behind: AtomicI64::new(UNKNOWN),
        }
    }

    /// How far behind the shard's tip the consumer last was, for the lease item.
    pub(crate) fn millis_behind(&self) -> Option<i64> {
        Some(self.millis_behind.load(Ordering::Relaxed)).filter(|&m| m != UNKNOWN)
    }
}

/// Why a consumer returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerExit {
    /// The shard is closed and read to its end; its lease says SHARD_END.
    ShardEnded,
    /// Asked to stop: its last batch is applied and checkpointed.
    Stopped,
    /// Another worker took the lease; nothing was checkpointed after that.
    LeaseLost,
}

pub(crate) struct ShardConsumer {
    pub(crate) context: Arc<ConsumerContext>,
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) shard_id: String,
    pub(crate) lease: Arc<SharedLease>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Aggregates found with nothing parked, not asked about again for a while.
    pub(crate) clear: std::sync::Mutex<ClearAggregates>,
}

impl ShardConsumer {
    pub(crate) async fn run(mut self) -> Result<ConsumerExit, RuntimeError> {
        let start = self.lease.lease.lock().await.checkpoint.clone();
        let mut last_applied = match &start {
            Checkpoint::After(sequence) => Some(sequence.clone()),
            Checkpoint::TrimHorizon => None,
            Checkpoint::ShardEnd => return Ok(ConsumerExit::ShardEnded),
        };
        let mut iterator = self.iterator(&start).await?;
        let mut throttled = Backoff::new(AWS_RETRY_INITIAL, AWS_RETRY_MAX);
        let mut next_call = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_call) => {}
                () = stop_requested(&mut self.stop) => return Ok(ConsumerExit::Stopped),
            }
            next_call = Instant::now() + self.context.poll_interval;
            let Some(current) = iterator.as_deref() else {
                return self.end_shard().await;
            };
            let page = match kinesis::get_records(
                &self.context.kinesis,
                current,
                self.context.batch_size,
            )
            .await
            {
                Ok(page) => {
                    throttled.reset();
                    page
                }
                Err(GetRecordsError::ExpiredIterator) => {
                    let checkpoint = self.lease.lease.lock().await.checkpoint.clone();
                    iterator = self.iterator(&checkpoint).await?;
                    continue;
                }
                Err(GetRecordsError::Call(error)) if error.retryable => {
                    self.count_error("kinesis");
                    tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "GetRecords failed; backing off");
                    next_call = Instant::now() + throttled.next_delay();
                    continue;
                }
                Err(GetRecordsError::Call(error)) => {
                    self.count_error("kinesis");
                    return Err(error.into());
                }
            };
            if let Some(behind) = page.millis_behind_latest {
                self.lease.millis_behind.store(behind, Ordering::Relaxed);
                metrics::gauge!(
                    meters::MILLIS_BEHIND_LATEST,
                    "projection" => self.projection.name(),
                    "shard" => self.shard_id.clone()
                )
                .set(behind as f64);
            }
            // Kinesis never repeats a record after AFTER_SEQUENCE_NUMBER; the filter keeps a
            // checkpoint from ever moving backwards if an iterator misbehaves.
            let records: Vec<KinesisRecord> = page
                .records
                .into_iter()
                .filter(|record| {
                    last_applied.as_ref().is_none_or(|last| {
                        SequenceNumber::new(record.sequence_number.as_str()) > *last
                    })
                })
                .collect();
            if let Some(last_record) = records.last() {
                let sequence = SequenceNumber::new(last_record.sequence_number.as_str());
                self.process(&records).await?;
                if !self
                    .checkpoint(
                        Checkpoint::After(sequence.clone()),
                        page.millis_behind_latest,
                    )
                    .await?
                {
                    return Ok(ConsumerExit::LeaseLost);
                }
                last_applied = Some(sequence);
            }
            iterator = page.next_iterator;
        }
    }

    /// The shard is read to its end: record SHARD_END so its children may start.
    async fn end_shard(&self) -> Result<ConsumerExit, RuntimeError> {
        if self.checkpoint(Checkpoint::ShardEnd, Some(0)).await? {
            tracing::info!(projection = self.projection.name(), shard = %self.shard_id, "shard read to its end");
            Ok(ConsumerExit::ShardEnded)
        } else {
            Ok(ConsumerExit::LeaseLost)
        }
    }

    async fn iterator(&self, checkpoint: &Checkpoint) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .retrying("kinesis", || {
                kinesis::shard_iterator(
                    &self.context.kinesis,
                    &self.context.stream,
                    &self.shard_id,
                    checkpoint,
                )
            })
            .await?)
    }

    /// Decodes a batch, sets aside what cannot or must not be applied, applies the rest.
    async fn process(&self, records: &[KinesisRecord]) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        let mut decoded = Vec::with_capacity(records.len());
        for record in records {
            match commit_log::decode(&record.data) {
                Ok(commit) => decoded.push((record, commit)),
                Err(error) => {
                    // Its aggregate type is unknown, so it cannot be parked: the dead letter
                    // (with the partition key) is the operator's record of it.
                    let reason = format!("undecodable record: {}", error_chain(&error));
                    self.dead_letter(record, None, reason).await?;
                }
            }
        }
        let mut parked = self.parked_aggregates(&decoded).await?;
        let mut commits = Vec::with_capacity(decoded.len());
        let mut sources = Vec::with_capacity(decoded.len());
        for (record, commit) in decoded {
            let key = parked_key(name, &commit.aggregate_type, &commit.aggregate_id);
            if parked.get(&key).copied().unwrap_or(false) {
                self.park(record, &commit, PARKED_BEHIND.to_owned()).await?;
            } else {
                commits.push(commit);
                sources.push(record);
            }
        }
        self.apply(commits, sources, &mut parked).await
    }

    /// Whether each aggregate of the batch has parked commits: one strongly consistent query
    /// per aggregate not known to be clear, [`PARKED_LOOKUPS`] at a time (the table is nearly
    /// always empty, but another worker or an earlier life of this shard may have parked
    /// something).
    async fn parked_aggregates(
        &self,
        decoded: &[(&KinesisRecord, LoggedCommit)],
    ) -> Result<HashMap<String, bool>, RuntimeError> {
        let name = self.projection.name();
        let mut known: HashMap<String, bool> = HashMap::new();
        let mut aggregates: HashMap<String, (String, String)> = HashMap::new();
        {
            let mut clear = self.clear.lock().unwrap_or_else(|e| e.into_inner());
            for (_, commit) in decoded {
                let key = parked_key(name, &commit.aggregate_type, &commit.aggregate_id);
                if clear.is_clear(&key) {
                    known.insert(key, false);
                } else {
                    aggregates.entry(key).or_insert_with(|| {
                        (commit.aggregate_type.clone(), commit.aggregate_id.clone())
                    });
                }
            }
        }
        // Collected first: a lazily mapped iterator inside the stream trips the compiler's
        // `Send` inference for the spawned consumer task.
        let lookups: Vec<_> = aggregates
            .into_iter()
            .map(|(key, (kind, id))| async move {
                let found = self
                    .retrying("park", || self.context.parked.has_parked(name, &kind, &id))
                    .await?;
                Ok::<_, AwsCallError>((key, found))
            })
            .collect();
        let found: Vec<(String, bool)> = futures::stream::iter(lookups)
            .buffer_unordered(PARKED_LOOKUPS)
            .try_collect()
            .await?;
        let mut clear = self.clear.lock().unwrap_or_else(|e| e.into_inner());
        for (key, parked) in found {
            if !parked {
                clear.found_clear(key.clone());
            }
            known.insert(key, parked);
        }
        Ok(known)
    }

    /// Applies `commits` (read from `sources`) honouring the projection's contract: on poison
    /// the commits before it are applied, it goes to the dead-letter queue and is parked with
    /// the later commits of its aggregate, and the others are applied; a transient failure is
    /// retried with backoff, then its first commit counts as poison.
    async fn apply(
        &self,
        mut commits: Vec<LoggedCommit>,
        mut sources: Vec<&KinesisRecord>,
        parked: &mut HashMap<String, bool>,
    ) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        let mut attempts = 0;
        let mut backoff = Backoff::new(APPLY_RETRY_INITIAL, APPLY_RETRY_MAX);
        while !commits.is_empty() {
            let (index, reason) = match self.projection.apply(&commits).await {
                Ok(()) => {
                    self.count_events(&commits);
                    return Ok(());
                }
                Err(ProjectionError::Poison { index, reason }) => {
                    (index.min(commits.len() - 1), reason)
                }
                Err(ProjectionError::Transient(error)) => {
                    attempts += 1;
                    self.count_error("apply");
                    let error = error_chain(&*error);
                    if attempts < self.context.max_apply_attempts {
                        tracing::warn!(projection = name, shard = %self.shard_id, attempts, %error, "apply failed; retrying the batch");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    (0, format!("still failing after {attempts} tries: {error}"))
                }
            };
            attempts = 0;
            backoff.reset();
            self.count_events(&commits[..index]);
            let later_commits = commits.split_off(index + 1);
            let later_sources = sources.split_off(index + 1);
            let (Some(poison), Some(source)) = (commits.pop(), sources.pop()) else {
                break;
            };
            self.dead_letter(source, Some(&poison), reason.clone())
                .await?;
            // Parked too, at the head of its aggregate's queue: once the projection is fixed,
            // a redrive applies it first and its successors after it, with no gap.
            self.park(source, &poison, reason).await?;
            let key = parked_key(name, &poison.aggregate_type, &poison.aggregate_id);
            parked.insert(key.clone(), true);
            commits = Vec::with_capacity(later_commits.len());
            sources = Vec::with_capacity(later_sources.len());
            for (commit, source) in later_commits.into_iter().zip(later_sources) {
                if parked_key(name, &commit.aggregate_type, &commit.aggregate_id) == key {
                    self.park(source, &commit, PARKED_BEHIND.to_owned()).await?;
                } else {
                    commits.push(commit);
                    sources.push(source);
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        record: &KinesisRecord,
        commit: Option<&LoggedCommit>,
        reason: String,
    ) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        tracing::error!(
            projection = name,
            shard = %self.shard_id,
            sequence_number = %record.sequence_number,
            partition_key = %record.partition_key,
            %reason,
            "poison record: sending it to the dead-letter queue"
        );
        let letter = DeadLetter::new(name, &self.shard_id, record, commit, reason);
        self.retrying("dead_letter", || self.context.dead_letters.send(&letter))
            .await?;
        metrics::counter!(meters::DLQ_TOTAL, "projection" => name).increment(1);
        Ok(())
    }

    async fn park(
        &self,
        record: &KinesisRecord,
        commit: &LoggedCommit,
        reason: String,
    ) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        let parked = ParkedRecord::new(
            name,
            commit,
            &self.shard_id,
            &record.sequence_number,
            reason,
            record.data.clone(),
        );
        self.clear
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .parked(&parked_key(
                name,
                &commit.aggregate_type,
                &commit.aggregate_id,
            ));
        self.retrying("park", || self.context.parked.park(&parked))
            .await?;
        tracing::warn!(
            projection = name,
            aggregate_type = %commit.aggregate_type,
            aggregate_id = %commit.aggregate_id,
            position = commit.first_position(),
            "commit parked"
        );
        metrics::counter!(meters::PARKED_TOTAL, "projection" => name).increment(1);
        Ok(())
    }

    /// Writes `checkpoint`; `false` when the lease was lost (nothing written).
    async fn checkpoint(
        &self,
        checkpoint: Checkpoint,
        millis_behind: Option<i64>,
    ) -> Result<bool, RuntimeError> {
        let mut backoff = Backoff::new(AWS_RETRY_INITIAL, AWS_RETRY_MAX);
        loop {
            let mut lease = self.lease.lease.lock().await;
            match self
                .context
                .leases
                .checkpoint(&lease, checkpoint.clone(), millis_behind)
                .await
            {
                Ok(updated) => {
                    *lease = updated;
                    return Ok(true);
                }
                Err(LeaseError::Lost) => return Ok(false),
                Err(LeaseError::Call(error)) if error.retryable => {
                    drop(lease);
                    self.count_error("lease");
                    tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "checkpoint failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(LeaseError::Call(error)) => {
                    self.count_error("lease");
                    return Err(error.into());
                }
            }
        }
    }

    /// Runs `call` until it succeeds or fails for good, backing off on retryable failures.
    async fn retrying<T, F, Fut>(&self, kind: &'static str, mut call: F) -> Result<T, AwsCallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsCallError>>,
    {
        let mut backoff = Backoff::new(AWS_RETRY_INITIAL, AWS_RETRY_MAX);
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    self.count_error(kind);
                    if !error.retryable {
                        return Err(error);
                    }
                    tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn count_events(&self, commits: &[LoggedCommit]) {
        let events: usize = commits.iter().map(|c| c.events.len()).sum();
        metrics::counter!(
            meters::EVENTS_TOTAL,
            "projection" => self.projection.name(),
            "shard" => self.shard_id.clone()
        )
        .increment(events as u64);
    }

    fn count_error(&self, kind: &'static str) {
        meters::error(self.projection.name(), &self.shard_id, kind);
    }
}

/// Completes once a stop is requested (or the worker is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
