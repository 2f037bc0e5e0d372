//! One projection's consumer of one shard: reads the shard through the process's shared reader
//! (one GetRecords pace per shard for every group), decodes each record, applies batches
//! through the projection, and checkpoints after each batch.
//!
//! A record is a commit envelope or a container of several (`commit_log::unpack`); each commit
//! of a container is handled as a record of its own, and the record is checkpointed once all
//! of its commits are dealt with (a batch is always whole records).
//!
//! What cannot be applied now stops its aggregate, never the shard and never silently:
//! - bytes that are not a commit envelope (or a container whose framing is broken) go to the
//!   dead-letter queue (no aggregate to stop);
//! - a commit this build does not understand (a newer event type or version) is parked with
//!   its header and raw record, counted on an alarm metric, and resumed in order by a build
//!   that knows it;
//! - a commit the projection refuses deterministically goes to the dead-letter queue and is
//!   parked, exactly that commit;
//! - every later commit of a stopped aggregate parks behind it;
//! - a transient failure is retried with backoff until the dependency is back (an alarm gauge
//!   says the shard is stalled), never parked.
//!
//! One thing stops the whole shard: a container of a version this build does not read (a relay
//! deployed before its readers). Its commits' aggregates are unknown until it is unpacked, so
//! it can be neither parked nor skipped: the records before it are applied and checkpointed,
//! and the consumer fails with [`RuntimeError::UnknownContainer`] at it, again on every lease
//! taken, until a build that reads it runs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_support::AwsCallError;
use commit_log::{CommitHeader, LoggedCommit, UnpackError, Vocabulary};
use futures::{StreamExt, TryStreamExt};
use service_kit::{error_chain, Backoff};
use tokio::sync::{watch, Mutex};
use tracing::Instrument;

use crate::apply_trace::ApplyTrace;
use crate::dead_letters::{DeadLetter, DeadLetterQueue};
use crate::kinesis::{GetRecordsError, KinesisRecord};
use crate::leases::{Checkpoint, Lease, LeaseError, LeaseTable, SequenceNumber};
use crate::meters;
use crate::parked::{
    parked_key, ClearAggregates, ParkedKind, ParkedRecord, ParkedStore, PARKED_BEHIND,
};
use crate::shard_reader::{Cursor, ShardReaders};
use crate::RuntimeError;
use commit_log::projection::{Projection, ProjectionError};

/// The waits after a throttled or failed AWS call: up to 200 ms first, doubling up to 10 s.
const AWS_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
/// The waits before a projection's batch is tried again after a transient failure: up to
/// 100 ms first, doubling up to 30 s.
const APPLY_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
/// `millis_behind` before the first GetRecords answer.
const UNKNOWN: i64 = i64::MIN;
/// Parked-table lookups in flight at once for one batch.
const PARKED_LOOKUPS: usize = 16;

/// What every consumer of a worker shares.
#[derive(Clone)]
pub(crate) struct ConsumerContext {
    /// One reader per shard for every group of the process.
    pub(crate) readers: Arc<ShardReaders>,
    pub(crate) leases: LeaseTable,
    pub(crate) parked: ParkedStore,
    pub(crate) dead_letters: DeadLetterQueue,
    /// Consecutive transient failures of one batch after which the shard counts as stalled
    /// (alarm gauge, error logs); the retries go on.
    pub(crate) max_apply_attempts: u32,
    /// The events this build reads.
    pub(crate) vocabulary: Vocabulary,
}

/// One record of a batch, as far as this build reads it.
enum Item {
    /// A commit to apply.
    Commit(LoggedCommit),
    /// A commit this build does not understand: its header, and why.
    NotUnderstood(CommitHeader, String),
}

impl Item {
    fn aggregate(&self) -> (&str, &str) {
        match self {
            Item::Commit(commit) => (&commit.aggregate_type, &commit.aggregate_id),
            Item::NotUnderstood(header, _) => (&header.aggregate_type, &header.aggregate_id),
        }
    }
}

/// Whether a batch was dealt with (applied, parked or dead-lettered: checkpoint it) or a stop
/// was requested while its dependency was down (checkpoint nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Processed {
    Done,
    Interrupted,
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
    /// Asked to stop: every batch it applied is checkpointed (a batch still waiting for its
    /// dependency is left unapplied, for the next holder of the lease to read again).
    Stopped,
    /// Another worker took the lease; nothing was checkpointed after that.
    LeaseLost,
}

/// Records read but not yet applied (the projection's [`FlushPolicy`](commit_log::projection::FlushPolicy)
/// says when they are): never checkpointed, so a crash reads them again.
#[derive(Default)]
struct Waiting {
    records: Vec<KinesisRecord>,
    /// When the oldest of them was read.
    since: Option<tokio::time::Instant>,
    /// The latest GetRecords answer's distance from the tip, for the checkpoint.
    millis_behind: Option<i64>,
}

impl Waiting {
    fn add(&mut self, records: impl Iterator<Item = KinesisRecord>, millis_behind: Option<i64>) {
        let before = self.records.len();
        self.records.extend(records);
        if before == 0 && !self.records.is_empty() {
            self.since = Some(tokio::time::Instant::now());
        }
        self.millis_behind = millis_behind;
    }

    fn waited(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Applied and checkpointed (or nothing was waiting).
    Done,
    /// A stop was requested while the projection's dependency was down: nothing checkpointed.
    Interrupted,
    /// Another worker holds the lease now.
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
    pub(crate) async fn run(self) -> Result<ConsumerExit, RuntimeError> {
        let start = self.lease.lease.lock().await.checkpoint.clone();
        let mut last_applied = match &start {
            Checkpoint::After(sequence) => Some(sequence.clone()),
            Checkpoint::TrimHorizon => None,
            Checkpoint::ShardEnd => return Ok(ConsumerExit::ShardEnded),
        };
        // Shared with this process's other groups on the shard: it paces the calls.
        let reader = self.context.readers.reader(&self.shard_id);
        let mut cursor = Cursor::new(start);
        let mut throttled = AWS_RETRY;
        let flush = self.projection.flush_policy();
        let mut waiting = Waiting::default();
        loop {
            let page = tokio::select! {
                page = reader.next_page(&mut cursor) => page,
                () = stop_requested(self.stop.clone()) => {
                    // Graceful: what was read but not yet applied is applied and checkpointed
                    // first (an interrupted apply leaves it for the next holder).
                    return Ok(match self.flush(&mut waiting, &mut last_applied).await? {
                        Flushed::LeaseLost => ConsumerExit::LeaseLost,
                        Flushed::Done | Flushed::Interrupted => ConsumerExit::Stopped,
                    });
                }
            };
            let page = match page {
                Ok(page) => {
                    throttled.succeeded();
                    page
                }
                Err(GetRecordsError::Call(error)) if error.retryable => {
                    self.count_error("kinesis");
                    tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "GetRecords failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(throttled.failed()) => continue,
                        () = stop_requested(self.stop.clone()) => return Ok(ConsumerExit::Stopped),
                    }
                }
                // The reader renews expired iterators itself.
                Err(GetRecordsError::ExpiredIterator) => continue,
                Err(GetRecordsError::Call(error)) => {
                    self.count_error("kinesis");
                    return Err(error.into());
                }
            };
            if page.ended {
                return match self.flush(&mut waiting, &mut last_applied).await? {
                    Flushed::Done => self.end_shard().await,
                    Flushed::Interrupted => Ok(ConsumerExit::Stopped),
                    Flushed::LeaseLost => Ok(ConsumerExit::LeaseLost),
                };
            }
            if let Some(behind) = page.millis_behind_latest {
                self.lease.millis_behind.store(behind, Ordering::Relaxed);
                metrics::gauge!(
                    meters::MILLIS_BEHIND_LATEST,
                    "projection" => self.projection.name(),
                    "shard" => self.shard_id.clone()
                )
                .set(behind as f64);
            }
            // The reader serves only records after the cursor; the filter keeps a checkpoint
            // from ever moving backwards if an iterator misbehaves.
            let newest = waiting
                .records
                .last()
                .map(|record| SequenceNumber::new(record.sequence_number.as_str()))
                .or_else(|| last_applied.clone());
            let records = page.records.into_iter().filter(|record| {
                newest
                    .as_ref()
                    .is_none_or(|last| SequenceNumber::new(record.sequence_number.as_str()) > *last)
            });
            waiting.add(records, page.millis_behind_latest);
            if flush.is_due(waiting.records.len(), waiting.waited()) {
                match self.flush(&mut waiting, &mut last_applied).await? {
                    Flushed::Done => {}
                    Flushed::Interrupted => return Ok(ConsumerExit::Stopped),
                    Flushed::LeaseLost => return Ok(ConsumerExit::LeaseLost),
                }
            }
        }
    }

    /// Applies and checkpoints the records waiting, if any.
    async fn flush(
        &self,
        waiting: &mut Waiting,
        last_applied: &mut Option<SequenceNumber>,
    ) -> Result<Flushed, RuntimeError> {
        let mut records = std::mem::take(&mut waiting.records);
        waiting.since = None;
        // What comes before a container this build cannot read is applied and checkpointed;
        // then the shard stops at it.
        let unreadable = records
            .iter()
            .position(|record| {
                matches!(
                    commit_log::unpack(&record.data),
                    Err(UnpackError::UnknownVersion { .. })
                )
            })
            .map(|index| records.split_off(index).swap_remove(0));
        let flushed = self
            .apply_and_checkpoint(&records, waiting.millis_behind, last_applied)
            .await?;
        match unreadable {
            Some(record) if flushed == Flushed::Done => Err(self.unknown_container(&record)),
            _ => Ok(flushed),
        }
    }

    async fn apply_and_checkpoint(
        &self,
        records: &[KinesisRecord],
        millis_behind: Option<i64>,
        last_applied: &mut Option<SequenceNumber>,
    ) -> Result<Flushed, RuntimeError> {
        let Some(last_record) = records.last() else {
            return Ok(Flushed::Done);
        };
        let sequence = SequenceNumber::new(last_record.sequence_number.as_str());
        if self.process(records).await? == Processed::Interrupted {
            return Ok(Flushed::Interrupted);
        }
        if !self
            .checkpoint(Checkpoint::After(sequence.clone()), millis_behind)
            .await?
        {
            return Ok(Flushed::LeaseLost);
        }
        *last_applied = Some(sequence);
        Ok(Flushed::Done)
    }

    /// The error that stops the shard at `record`, a container of a version this build does
    /// not read: skipping it would lose its commits, and they cannot be parked by aggregate
    /// without unpacking it. A build that reads it resumes from the checkpoint before it.
    fn unknown_container(&self, record: &KinesisRecord) -> RuntimeError {
        self.count_error("container");
        let reason = match commit_log::unpack(&record.data) {
            Err(error) => error.to_string(),
            Ok(_) => "a container this build does not read".to_owned(),
        };
        tracing::error!(
            projection = self.projection.name(),
            shard = %self.shard_id,
            sequence_number = %record.sequence_number,
            %reason,
            "the shard stops at a record this build cannot unpack"
        );
        RuntimeError::UnknownContainer {
            shard_id: self.shard_id.clone(),
            sequence_number: record.sequence_number.clone(),
            reason,
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

    /// Decodes a batch, sets aside what cannot or must not be applied, applies the rest.
    async fn process(&self, records: &[KinesisRecord]) -> Result<Processed, RuntimeError> {
        let name = self.projection.name();
        let commits = self.unpack(records).await?;
        let mut items = Vec::with_capacity(commits.len());
        for record in &commits {
            match commit_log::decode_with(&record.data, &self.context.vocabulary) {
                Ok(commit) => items.push((record, Item::Commit(commit))),
                Err(commit_log::DecodeError::NotUnderstood { header, what }) => {
                    items.push((record, Item::NotUnderstood(header, what)));
                }
                Err(error) => {
                    // Not an envelope: its aggregate is unknown, so it cannot be parked; the
                    // dead letter (with the partition key) is the operator's record of it.
                    let reason = format!("undecodable record: {}", error_chain(&error));
                    self.dead_letter(record, None, reason).await?;
                }
            }
        }
        let mut parked = self.parked_aggregates(&items).await?;
        let mut commits = Vec::with_capacity(items.len());
        let mut sources = Vec::with_capacity(items.len());
        for (record, item) in items {
            let (kind, id) = item.aggregate();
            let key = parked_key(name, kind, id);
            match item {
                Item::NotUnderstood(header, what) => {
                    // Its aggregate's earlier commits of this batch go first: a build that
                    // understands this one may resume it at any moment.
                    if commits.iter().any(|c: &LoggedCommit| {
                        c.aggregate_type == header.aggregate_type
                            && c.aggregate_id == header.aggregate_id
                    }) && self
                        .apply(
                            std::mem::take(&mut commits),
                            std::mem::take(&mut sources),
                            &mut parked,
                        )
                        .await?
                        == Processed::Interrupted
                    {
                        return Ok(Processed::Interrupted);
                    }
                    if parked.get(&key).copied().unwrap_or(false) {
                        self.park(record, &header, ParkedKind::Behind, PARKED_BEHIND.into())
                            .await?;
                    } else {
                        self.stop_not_understood(record, &header, what).await?;
                        parked.insert(key, true);
                    }
                }
                Item::Commit(commit) => {
                    if !self.park_if_behind(record, &commit, &key, &parked).await? {
                        commits.push(commit);
                        sources.push(record);
                    }
                }
            }
        }
        self.apply(commits, sources, &mut parked).await
    }

    /// One entry per commit of `records`, each the record it came from with only that commit's
    /// envelope as its data (what a dead letter or a parked commit keeps). A container whose
    /// framing is broken is dead-lettered whole: no build can read it.
    async fn unpack(&self, records: &[KinesisRecord]) -> Result<Vec<KinesisRecord>, RuntimeError> {
        let mut commits = Vec::with_capacity(records.len());
        for record in records {
            match commit_log::unpack(&record.data) {
                Ok(envelopes) => {
                    commits.extend(envelopes.into_iter().map(|envelope| KinesisRecord {
                        sequence_number: record.sequence_number.clone(),
                        partition_key: record.partition_key.clone(),
                        data: envelope.to_vec(),
                        arrived_at_millis: record.arrived_at_millis,
                    }))
                }
                Err(UnpackError::UnknownVersion { .. }) => {
                    return Err(self.unknown_container(record))
                }
                Err(malformed) => {
                    let reason = format!("undecodable record: {}", error_chain(&malformed));
                    self.dead_letter(record, None, reason).await?;
                }
            }
        }
        Ok(commits)
    }

    /// Parks a commit this build does not understand at the head of its aggregate's queue.
    async fn stop_not_understood(
        &self,
        record: &KinesisRecord,
        header: &CommitHeader,
        what: String,
    ) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        tracing::error!(
            projection = name,
            shard = %self.shard_id,
            aggregate_type = %header.aggregate_type,
            aggregate_id = %header.aggregate_id,
            first_position = header.first_position,
            %what,
            "a commit this build does not understand: its aggregate stops until a build that knows it resumes it"
        );
        metrics::counter!(meters::NOT_UNDERSTOOD_TOTAL, "projection" => name).increment(1);
        self.park(
            record,
            header,
            ParkedKind::NotUnderstood,
            format!("not understood by this build: {what}"),
        )
        .await
    }

    /// Whether each aggregate of the batch has parked commits: one strongly consistent query
    /// per aggregate not known to be clear, [`PARKED_LOOKUPS`] at a time (the table is nearly
    /// always empty, but another worker or an earlier life of this shard may have parked
    /// something).
    async fn parked_aggregates(
        &self,
        items: &[(&KinesisRecord, Item)],
    ) -> Result<HashMap<String, bool>, RuntimeError> {
        let name = self.projection.name();
        let mut known: HashMap<String, bool> = HashMap::new();
        let mut aggregates: HashMap<String, (String, String)> = HashMap::new();
        {
            let mut clear = self.clear.lock().unwrap_or_else(|e| e.into_inner());
            for (_, item) in items {
                let (kind, id) = item.aggregate();
                let key = parked_key(name, kind, id);
                if clear.is_clear(&key) {
                    known.insert(key, false);
                } else {
                    aggregates
                        .entry(key)
                        .or_insert_with(|| (kind.to_owned(), id.to_owned()));
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

    /// Applies `commits` (read from `sources`) honouring the projection's contract:
    /// - a transient failure retries the batch with backoff until it passes (the shard counts
    ///   as stalled after `max_apply_attempts` tries in a row), or until a stop is requested;
    /// - on poison the commits before it are applied, it goes to the dead-letter queue and is
    ///   parked with the later commits of its aggregate, and the others are applied;
    /// - a batch refused as a whole is applied one commit at a time, which finds the commit
    ///   that fails and parks exactly that one.
    async fn apply(
        &self,
        mut commits: Vec<LoggedCommit>,
        mut sources: Vec<&KinesisRecord>,
        parked: &mut HashMap<String, bool>,
    ) -> Result<Processed, RuntimeError> {
        let name = self.projection.name();
        let mut attempts = 0u32;
        let mut backoff = APPLY_RETRY;
        while !commits.is_empty() {
            let trace = ApplyTrace::start(name, &commits);
            let applied = self
                .projection
                .apply(&commits)
                .instrument(trace.batch())
                .await;
            drop(trace);
            let (index, reason) = match applied {
                Ok(()) => {
                    self.count_events(&commits);
                    self.stalled(false);
                    return Ok(Processed::Done);
                }
                Err(ProjectionError::Poison { index, reason }) => {
                    (index.min(commits.len() - 1), reason)
                }
                Err(ProjectionError::Refused(error)) if commits.len() == 1 => {
                    (0, error_chain(&*error))
                }
                Err(ProjectionError::Refused(error)) => {
                    tracing::warn!(projection = name, shard = %self.shard_id, error = %error_chain(&*error), "batch refused; applying it one commit at a time to find the commit");
                    return self.apply_one_by_one(commits, sources, parked).await;
                }
                Err(ProjectionError::Transient(error)) => {
                    attempts += 1;
                    self.count_error("apply");
                    let error = error_chain(&*error);
                    if attempts >= self.context.max_apply_attempts {
                        self.stalled(true);
                        tracing::error!(projection = name, shard = %self.shard_id, attempts, %error, "apply keeps failing transiently; the shard is stalled until the dependency is back");
                    } else {
                        tracing::warn!(projection = name, shard = %self.shard_id, attempts, %error, "apply failed; retrying the batch");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.failed()) => continue,
                        () = stop_requested(self.stop.clone()) => {
                            tracing::info!(projection = name, shard = %self.shard_id, "stopping with the batch unapplied; the next lease holder reads it again");
                            return Ok(Processed::Interrupted);
                        }
                    }
                }
            };
            self.stalled(false);
            attempts = 0;
            backoff.succeeded();
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
            self.park(source, &poison.header(), ParkedKind::Poison, reason)
                .await?;
            let key = parked_key(name, &poison.aggregate_type, &poison.aggregate_id);
            parked.insert(key.clone(), true);
            commits = Vec::with_capacity(later_commits.len());
            sources = Vec::with_capacity(later_sources.len());
            for (commit, source) in later_commits.into_iter().zip(later_sources) {
                let key = parked_key(name, &commit.aggregate_type, &commit.aggregate_id);
                if !self.park_if_behind(source, &commit, &key, parked).await? {
                    commits.push(commit);
                    sources.push(source);
                }
            }
        }
        Ok(Processed::Done)
    }

    /// Applies a refused batch one commit at a time, in order; a commit of an aggregate stopped
    /// meanwhile parks behind it.
    async fn apply_one_by_one(
        &self,
        commits: Vec<LoggedCommit>,
        sources: Vec<&KinesisRecord>,
        parked: &mut HashMap<String, bool>,
    ) -> Result<Processed, RuntimeError> {
        let name = self.projection.name();
        for (commit, source) in commits.into_iter().zip(sources) {
            let key = parked_key(name, &commit.aggregate_type, &commit.aggregate_id);
            if self.park_if_behind(source, &commit, &key, parked).await? {
                continue;
            }
            // One commit: a refusal is that commit's, so this never recurses further.
            let one = Box::pin(self.apply(vec![commit], vec![source], parked));
            if one.await? == Processed::Interrupted {
                return Ok(Processed::Interrupted);
            }
        }
        Ok(Processed::Done)
    }

    /// Parks `commit` (read from `record`) behind the commit that stopped its aggregate, when
    /// `parked` says its aggregate (`key`) is stopped; whether it parked it.
    async fn park_if_behind(
        &self,
        record: &KinesisRecord,
        commit: &LoggedCommit,
        key: &str,
        parked: &HashMap<String, bool>,
    ) -> Result<bool, RuntimeError> {
        if !parked.get(key).copied().unwrap_or(false) {
            return Ok(false);
        }
        self.park(
            record,
            &commit.header(),
            ParkedKind::Behind,
            PARKED_BEHIND.into(),
        )
        .await?;
        Ok(true)
    }

    /// Sets the alarm gauge of a shard whose batch keeps failing transiently.
    fn stalled(&self, stalled: bool) {
        metrics::gauge!(
            meters::APPLY_STALLED,
            "projection" => self.projection.name(),
            "shard" => self.shard_id.clone()
        )
        .set(if stalled { 1.0 } else { 0.0 });
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
        header: &CommitHeader,
        kind: ParkedKind,
        reason: String,
    ) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        let parked = ParkedRecord::new(
            name,
            header,
            &self.shard_id,
            &record.sequence_number,
            kind,
            reason,
            record.data.clone(),
        );
        self.clear
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .parked(&parked_key(
                name,
                &header.aggregate_type,
                &header.aggregate_id,
            ));
        self.retrying("park", || self.context.parked.park(&parked))
            .await?;
        tracing::warn!(
            projection = name,
            aggregate_type = %header.aggregate_type,
            aggregate_id = %header.aggregate_id,
            position = header.first_position,
            kind = kind.as_str(),
            "commit parked"
        );
        metrics::counter!(meters::PARKED_TOTAL, "projection" => name, "kind" => kind.as_str())
            .increment(1);
        Ok(())
    }

    /// Writes `checkpoint`; `false` when the lease was lost (nothing written).
    async fn checkpoint(
        &self,
        checkpoint: Checkpoint,
        millis_behind: Option<i64>,
    ) -> Result<bool, RuntimeError> {
        let mut backoff = AWS_RETRY;
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
                    tokio::time::sleep(backoff.failed()).await;
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
        let mut backoff = AWS_RETRY;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    self.count_error(kind);
                    if !error.retryable {
                        return Err(error);
                    }
                    tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "retrying");
                    tokio::time::sleep(backoff.failed()).await;
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
async fn stop_requested(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
