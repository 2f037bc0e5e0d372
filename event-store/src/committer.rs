//! Group commit: one writer task per process gathers the commits that are waiting and writes them
//! in one transaction, so throughput grows with concurrency instead of paying one transaction (and
//! one fsync) per command.
//!
//! Correctness with several processes on one database rests on the `event_position` row: every
//! transaction locks it first, then checks aggregate versions and idempotency keys, then writes
//! and releases it on commit. Commits are therefore serialised (the batching inside them is not),
//! positions are handed out gap-free in commit order, and the checks cannot race.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;

/// Opens the batch's transaction and locks the position counter in one round trip (one simple
/// query). The lock is its own statement on purpose: statements after it take their snapshot once
/// the lock is held, so they see every commit that finished before ours.
const BEGIN_AND_LOCK_POSITION: &str = "BEGIN; SELECT last_position FROM event_position FOR UPDATE";

/// Everything the batch's decisions need, in one round trip: the position counter, the current
/// version of each aggregate in the batch (in batch order) and which of its keys are taken.
const CHECK_BATCH: &str = "\
SELECT (SELECT last_position FROM event_position),
       ARRAY(SELECT COALESCE((SELECT max(e.sequence) FROM events e
                              WHERE e.aggregate_type = t.aggregate_type
                                AND e.aggregate_id = t.aggregate_id), 0)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(aggregate_type, aggregate_id, ord)
             ORDER BY t.ord),
       ARRAY(SELECT idempotency_key FROM command_idempotency
             WHERE idempotency_key = ANY($3::text[]))";

/// Writes events, outbox rows, idempotency keys and snapshots in one round trip, then moves the
/// position counter. The snapshot upsert never replaces a newer snapshot with an older one.
const WRITE_BATCH: &str = "\
WITH new_events AS (
    INSERT INTO events (global_position, aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata, recorded_at)
    SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
           metadata, statement_timestamp()
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                $7::jsonb[], $8::jsonb[])
         AS e(position, aggregate_type, aggregate_id, sequence, event_type, event_version,
              payload, metadata)
), new_outbox AS (
    INSERT INTO outbox (first_position, last_position, aggregate_type, aggregate_id,
                        first_sequence, last_sequence, committed_at)
    SELECT first_position, last_position, aggregate_type, aggregate_id, first_sequence,
           last_sequence, statement_timestamp()
    FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::bigint[],
                $14::bigint[])
         AS o(first_position, last_position, aggregate_type, aggregate_id, first_sequence,
              last_sequence)
), new_keys AS (
    INSERT INTO command_idempotency (idempotency_key, request_fingerprint, aggregate_type,
                                     aggregate_id, first_sequence, last_sequence, committed_at)
    SELECT idempotency_key, request_fingerprint, aggregate_type, aggregate_id, first_sequence,
           last_sequence, statement_timestamp()
    FROM unnest($15::text[], $16::text[], $17::text[], $18::text[], $19::bigint[], $20::bigint[])
         AS k(idempotency_key, request_fingerprint, aggregate_type, aggregate_id, first_sequence,
              last_sequence)
), new_snapshots AS (
    INSERT INTO snapshots (aggregate_type, aggregate_id, version, payload, taken_at,
                           schema_version)
    SELECT aggregate_type, aggregate_id, version, payload, statement_timestamp(), schema_version
    FROM unnest($21::text[], $22::text[], $23::bigint[], $24::jsonb[], $25::integer[])
         AS s(aggregate_type, aggregate_id, version, payload, schema_version)
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
        SET version = EXCLUDED.version, payload = EXCLUDED.payload, taken_at = EXCLUDED.taken_at,
            schema_version = EXCLUDED.schema_version
        WHERE snapshots.version < EXCLUDED.version
)
UPDATE event_position SET last_position = $26";

/// How the writer task batches.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// The most commits written in one transaction.
    pub max_batch_commits: usize,
    /// How many commits may wait for the writer before callers wait to enqueue (backpressure).
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_commits: 256,
            queue_capacity: 4096,
        }
    }
}

/// An event ready to be written: already serialised, not yet positioned.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
}

/// The client key a commit is recorded under.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyRecord {
    pub key: String,
    pub fingerprint: String,
}

/// One aggregate's commit, as decided by one command.
#[derive(Debug)]
pub(crate) struct PendingCommit {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// The aggregate version the command was handled against.
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    pub metadata: Value,
    pub idempotency: Option<IdempotencyRecord>,
    /// The aggregate after the events, when this commit crosses a snapshot boundary.
    pub snapshot: Option<Snapshot>,
}

/// An aggregate's state to store as its snapshot.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The schema version its aggregate type declares.
    pub schema_version: u32,
    pub payload: Value,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A handle to the process's group-commit writer. Cloning shares the writer; the writer stops
/// once every handle is dropped and the queued commits are written.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<(PendingCommit, Reply)>,
}

impl GroupCommitter {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(run_writer(pool, requests, config.max_batch_commits.max(1)));
        Self { queue }
    }

    /// Queues a commit and waits until it is durable or refused.
    pub(crate) async fn commit(&self, commit: PendingCommit) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((commit, reply))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        outcome.await.map_err(|_| StoreError::ShuttingDown)?
    }
}

async fn run_writer(
    pool: PgPool,
    mut requests: mpsc::Receiver<(PendingCommit, Reply)>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while requests.recv_many(&mut batch, max_batch).await > 0 {
        let (commits, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let started = Instant::now();
        metrics::histogram!("orderpipe_store_commit_batch_size").record(commits.len() as f64);
        let outcomes = write_batch(&pool, commits).await;
        metrics::histogram!("orderpipe_store_commit_seconds").record(started.elapsed());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if matches!(outcome, Err(StoreError::Conflict)) {
                metrics::counter!("orderpipe_store_conflicts_total").increment(1);
            }
            // The caller may have given up (deadline); its commit stands regardless.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes a batch and returns one outcome per commit, in batch order.
async fn write_batch(pool: &PgPool, commits: Vec<PendingCommit>) -> Vec<Result<(), StoreError>> {
    let count = commits.len();
    match try_write_batch(pool, commits).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            // A unique violation means a writer that bypassed the position lock raced us: every
            // commit in the batch is retried from a fresh load. Anything else fails them all.
            let conflict = matches!(&error, StoreError::Database(e)
                if e.as_database_error().is_some_and(|db| db.is_unique_violation()));
            if conflict {
                (0..count).map(|_| Err(StoreError::Conflict)).collect()
            } else {
                tracing::error!(error = %error, commits = count, "group commit failed");
                (0..count).map(|_| Err(clone_failure(&error))).collect()
            }
        }
    }
}

fn clone_failure(error: &StoreError) -> StoreError {
    match error {
        StoreError::Database(error) => StoreError::Database(error.clone()),
        _ => StoreError::ShuttingDown,
    }
}

/// The decision for one commit of the batch.
enum Decision {
    Accepted { first_position: u64 },
    Conflict,
}

impl Decision {
    fn outcome(&self) -> Result<(), StoreError> {
        match self {
            Decision::Accepted { .. } => Ok(()),
            Decision::Conflict => Err(StoreError::Conflict),
        }
    }
}

async fn try_write_batch(
    pool: &PgPool,
    commits: Vec<PendingCommit>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    // Four round trips in all: begin and lock, check, write, commit (and its WAL flush).
    let mut tx = pool.begin_with(BEGIN_AND_LOCK_POSITION).await?;
    let aggregate_types: Vec<&str> = commits.iter().map(|c| c.aggregate_type).collect();
    let aggregate_ids: Vec<&str> = commits.iter().map(|c| c.aggregate_id.as_str()).collect();
    let keys: Vec<&str> = commits
        .iter()
        .filter_map(|c| c.idempotency.as_ref().map(|i| i.key.as_str()))
        .collect();
    let (last_position, current_versions, taken_keys): (i64, Vec<i64>, Vec<String>) =
        sqlx::query_as(CHECK_BATCH)
            .bind(&aggregate_types)
            .bind(&aggregate_ids)
            .bind(&keys)
            .fetch_one(&mut *tx)
            .await?;
    let mut used_keys: HashSet<String> = taken_keys.into_iter().collect();

    let mut versions: HashMap<(&str, &str), u64> = HashMap::new();
    for (commit, version) in commits.iter().zip(current_versions) {
        versions
            .entry((commit.aggregate_type, commit.aggregate_id.as_str()))
            .or_insert(version as u64);
    }
    let mut next_position = last_position as u64 + 1;
    let mut decisions = Vec::with_capacity(commits.len());
    for commit in &commits {
        let version = versions
            .get_mut(&(commit.aggregate_type, commit.aggregate_id.as_str()))
            .expect("every commit's aggregate was looked up");
        // A reused key is a conflict too: the caller's retry finds the stored outcome.
        let key_taken = commit
            .idempotency
            .as_ref()
            .is_some_and(|i| !used_keys.insert(i.key.clone()));
        if *version != commit.expected_version || key_taken {
            decisions.push(Decision::Conflict);
            continue;
        }
        decisions.push(Decision::Accepted {
            first_position: next_position,
        });
        next_position += commit.events.len() as u64;
        *version += commit.events.len() as u64;
    }
    drop(versions);

    let mut rows = BatchRows::default();
    for (commit, decision) in commits.into_iter().zip(&decisions) {
        if let Decision::Accepted { first_position } = decision {
            rows.push(commit, *first_position);
        }
    }
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(decisions.iter().map(Decision::outcome).collect());
    }
    rows.bind_to(sqlx::query(WRITE_BATCH))
        .bind(next_position as i64 - 1)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(decisions.iter().map(Decision::outcome).collect())
}

/// The batch's accepted rows as column arrays, bound to `WRITE_BATCH` through `unnest`.
#[derive(Default)]
struct BatchRows {
    event_positions: Vec<i64>,
    event_types_of_aggregate: Vec<&'static str>,
    event_aggregate_ids: Vec<String>,
    event_sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    event_payloads: Vec<Value>,
    event_metadata: Vec<Value>,
    outbox_first_positions: Vec<i64>,
    outbox_last_positions: Vec<i64>,
    outbox_aggregate_types: Vec<&'static str>,
    outbox_aggregate_ids: Vec<String>,
    outbox_first_sequences: Vec<i64>,
    outbox_last_sequences: Vec<i64>,
    key_values: Vec<String>,
    key_fingerprints: Vec<String>,
    key_aggregate_types: Vec<&'static str>,
    key_aggregate_ids: Vec<String>,
    key_first_sequences: Vec<i64>,
    key_last_sequences: Vec<i64>,
    snapshot_aggregate_types: Vec<&'static str>,
    snapshot_aggregate_ids: Vec<String>,
    snapshot_versions: Vec<i64>,
    snapshot_payloads: Vec<Value>,
    snapshot_schema_versions: Vec<i32>,
}

impl BatchRows {
    fn is_empty(&self) -> bool {
        self.outbox_first_positions.is_empty()
    }

    fn push(&mut self, commit: PendingCommit, first_position: u64) {
        let first_sequence = commit.expected_version as i64 + 1;
        let count = commit.events.len() as i64;
        for (offset, event) in commit.events.into_iter().enumerate() {
            self.event_positions
                .push(first_position as i64 + offset as i64);
            self.event_types_of_aggregate.push(commit.aggregate_type);
            self.event_aggregate_ids.push(commit.aggregate_id.clone());
            self.event_sequences.push(first_sequence + offset as i64);
            self.event_types.push(event.event_type);
            self.event_versions.push(event.event_version);
            self.event_payloads.push(event.payload);
            self.event_metadata.push(commit.metadata.clone());
        }
        self.outbox_first_positions.push(first_position as i64);
        self.outbox_last_positions
            .push(first_position as i64 + count - 1);
        self.outbox_aggregate_types.push(commit.aggregate_type);
        self.outbox_aggregate_ids.push(commit.aggregate_id.clone());
        self.outbox_first_sequences.push(first_sequence);
        self.outbox_last_sequences.push(first_sequence + count - 1);
        if let Some(idempotency) = commit.idempotency {
            self.key_values.push(idempotency.key);
            self.key_fingerprints.push(idempotency.fingerprint);
            self.key_aggregate_types.push(commit.aggregate_type);
            self.key_aggregate_ids.push(commit.aggregate_id.clone());
            self.key_first_sequences.push(first_sequence);
            self.key_last_sequences.push(first_sequence + count - 1);
        }
        if let Some(snapshot) = commit.snapshot {
            self.snapshot_aggregate_types.push(commit.aggregate_type);
            self.snapshot_aggregate_ids
                .push(commit.aggregate_id.clone());
            self.snapshot_versions.push(first_sequence + count - 1);
            self.snapshot_payloads.push(snapshot.payload);
            self.snapshot_schema_versions
                .push(snapshot.schema_version as i32);
        }
    }

    fn bind_to(
        self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.event_positions)
            .bind(self.event_types_of_aggregate)
            .bind(self.event_aggregate_ids)
            .bind(self.event_sequences)
            .bind(self.event_types)
            .bind(self.event_versions)
            .bind(self.event_payloads)
            .bind(self.event_metadata)
            .bind(self.outbox_first_positions)
            .bind(self.outbox_last_positions)
            .bind(self.outbox_aggregate_types)
            .bind(self.outbox_aggregate_ids)
            .bind(self.outbox_first_sequences)
            .bind(self.outbox_last_sequences)
            .bind(self.key_values)
            .bind(self.key_fingerprints)
            .bind(self.key_aggregate_types)
            .bind(self.key_aggregate_ids)
            .bind(self.key_first_sequences)
            .bind(self.key_last_sequences)
            .bind(self.snapshot_aggregate_types)
            .bind(self.snapshot_aggregate_ids)
            .bind(self.snapshot_versions)
            .bind(self.snapshot_payloads)
            .bind(self.snapshot_schema_versions)
    }
}
