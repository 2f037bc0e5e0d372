//! Group commit: one writer task per process gathers the commits that are waiting and writes them
//! in one transaction, so throughput grows with concurrency instead of paying one transaction (and
//! one fsync) per command.
//!
//! Correctness with several processes on one database rests on the `event_position` row: every
//! transaction locks it first, then checks aggregate versions and idempotency keys, then writes
//! (all three in one call of the `append_commits` function, one round trip) and releases it on
//! commit. Commits are therefore serialised (the batching inside them is not),
//! positions are handed out gap-free in commit order, and the checks cannot race.
//!
//! What one commit does never decides another's fate:
//! - a batch PostgreSQL refuses for what is in it (a value `jsonb` cannot hold, a constraint) is
//!   split in halves and retried until only the refused commit fails, with its own error;
//! - a commit whose caller has gone (deadline passed, reply dropped) is not written, checked
//!   before the batch starts and again right before `COMMIT`;
//! - every wait is bounded ([`GroupCommitConfig`]): a writer stalled behind another process that
//!   holds the counter answers [`StoreError`]s the API turns into UNAVAILABLE, and reports itself
//!   unhealthy ([`GroupCommitter::health`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::StoreError;
use crate::writer_transaction::{bounded, ServerBounds, WriterConnection, WriterTransaction};

/// Locks the position counter, decides every commit of the batch (version and key checks) and
/// writes the accepted ones' events, outbox rows, keys and snapshots: one round trip (migration
/// `0004_append_commits.sql`, its key check replaced in `0005_append_commits_key_probe.sql`).
/// Per commit it returns its first position, NULL for a conflict.
const APPEND_COMMITS: &str =
    "SELECT append_commits($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// How the writer task batches, and the bounds on every wait of a batch.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// The most commits written in one transaction.
    pub max_batch_commits: usize,
    /// How many commits may wait for the writer before callers wait to enqueue (backpressure).
    pub queue_capacity: usize,
    /// How long a batch waits for the position counter while another writer (another process)
    /// holds it. Long enough for a healthy burst of other writers' batches; a paused holder is
    /// ended by PostgreSQL after `idle_in_transaction_timeout`, so this is larger than that.
    pub lock_timeout: Duration,
    /// The bound on each statement of a batch, lock waits included.
    pub statement_timeout: Duration,
    /// How long a batch's open transaction may wait for this process (paused, cut off) before
    /// PostgreSQL ends the session, rolls back and frees the counter for every other writer.
    pub idle_in_transaction_timeout: Duration,
    /// The bound on a batch as a whole, measured here: the backstop when PostgreSQL stops
    /// answering at all (a silent network cut), where its own timeouts never reach us.
    pub batch_timeout: Duration,
    /// A batch running longer than this makes [`GroupCommitter::health`] report the writer stuck.
    pub stuck_after: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_commits: 256,
            queue_capacity: 4096,
            lock_timeout: Duration::from_millis(2_000),
            statement_timeout: Duration::from_millis(3_000),
            idle_in_transaction_timeout: Duration::from_millis(1_000),
            batch_timeout: Duration::from_millis(4_000),
            stuck_after: Duration::from_millis(1_000),
        }
    }
}

impl GroupCommitConfig {
    fn server_bounds(&self) -> ServerBounds {
        ServerBounds {
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            idle_in_transaction_timeout: self.idle_in_transaction_timeout,
        }
    }
}

/// How long after a failed batch the writer still reports itself failing when no batch has
/// succeeded since (with no traffic, nothing else would clear it).
const FAILURE_REPORTED_FOR: Duration = Duration::from_secs(10);

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
    /// When the caller stops waiting; the commit is not written after it.
    pub deadline: Option<Instant>,
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
    state: Arc<WriterState>,
}

impl GroupCommitter {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
        let state = Arc::new(WriterState::new(config.stuck_after));
        tokio::spawn(run_writer(pool, requests, config, state.clone()));
        Self { queue, state }
    }

    /// Queues a commit and waits until it is durable or refused. Made inside
    /// [`crate::with_commit_deadline`], the commit carries that deadline.
    pub(crate) async fn commit(&self, mut commit: PendingCommit) -> Result<(), StoreError> {
        commit.deadline = crate::deadline::current();
        if commit
            .deadline
            .is_some_and(|deadline| deadline <= Instant::now())
        {
            return Err(StoreError::DeadlinePassed);
        }
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((commit, reply))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        outcome.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// `Ok` while the writer gets its batches through; otherwise why not: a batch has been
    /// running longer than `stuck_after` (waiting for a counter another process holds, or for a
    /// database that stopped answering), or the last batch failed for want of the database and
    /// none has succeeded since.
    pub fn health(&self) -> Result<(), String> {
        self.state.health()
    }
}

/// What the writer tells `/health`, shared lock-free with the handles.
#[derive(Debug)]
struct WriterState {
    epoch: Instant,
    stuck_after: Duration,
    /// Milliseconds since `epoch` plus one when the running batch started; 0 while idle.
    busy_since: AtomicU64,
    /// Milliseconds since `epoch` plus one of the last successful batch; 0 before any.
    last_success: AtomicU64,
    /// The last writer-level failure (not a commit's own refusal) and when (a stamp as above).
    last_failure: Mutex<Option<(u64, String)>>,
}

impl WriterState {
    fn new(stuck_after: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            stuck_after,
            busy_since: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp > 0).then(|| self.epoch + Duration::from_millis(stamp - 1))
    }

    fn batch_started(&self) {
        self.busy_since
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    fn batch_ended(&self, failure: Option<String>) {
        let now = self.stamp(Instant::now());
        self.busy_since.store(0, Ordering::Relaxed);
        match failure {
            None => self.last_success.store(now, Ordering::Relaxed),
            Some(reason) => {
                *self
                    .last_failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((now, reason));
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        if let Some(started) = self.instant(self.busy_since.load(Ordering::Relaxed)) {
            let running = started.elapsed();
            if running > self.stuck_after {
                return Err(format!(
                    "event store writer stuck: a batch has been running for {} ms \
                     (waiting for the position counter or the database)",
                    running.as_millis()
                ));
            }
        }
        let last_success = self.last_success.load(Ordering::Relaxed);
        let failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match failure {
            Some((failed_at, reason))
                if failed_at > last_success
                    && self
                        .instant(failed_at)
                        .is_some_and(|at| at.elapsed() < FAILURE_REPORTED_FOR) =>
            {
                Err(format!("event store writer failing: {reason}"))
            }
            _ => Ok(()),
        }
    }
}

async fn run_writer(
    pool: PgPool,
    mut requests: mpsc::Receiver<(PendingCommit, Reply)>,
    config: GroupCommitConfig,
    state: Arc<WriterState>,
) {
    let max_batch = config.max_batch_commits.max(1);
    let begin_sql = config.server_bounds().begin_sql();
    let mut connection = WriterConnection::new(&pool);
    let mut batch = Vec::with_capacity(max_batch);
    while requests.recv_many(&mut batch, max_batch).await > 0 {
        let (commits, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        metrics::histogram!("orderpipe_store_commit_batch_size").record(commits.len() as f64);
        state.batch_started();
        let mut writer = Writer {
            connection: &mut connection,
            begin_sql: &begin_sql,
            batch_timeout: config.batch_timeout,
            commits: &commits,
            replies: &replies,
        };
        let (outcomes, failure) = writer.write().await;
        state.batch_ended(failure);
        metrics::histogram!("orderpipe_store_commit_seconds").record(started.elapsed());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let reason = match &outcome {
                Ok(()) => None,
                Err(StoreError::Conflict) => {
                    metrics::counter!("orderpipe_store_conflicts_total").increment(1);
                    None
                }
                Err(StoreError::DeadlinePassed) => Some("deadline_passed"),
                Err(StoreError::BatchTimedOut) => Some("batch_timeout"),
                Err(StoreError::OutcomeUnknown(_)) => Some("outcome_unknown"),
                Err(error) if error.is_transient() => Some("unavailable"),
                Err(_) => Some("refused"),
            };
            if let Some(reason) = reason {
                metrics::counter!("orderpipe_store_commit_failures_total", "reason" => reason)
                    .increment(1);
            }
            // The caller may have given up; an outcome it no longer waits for is dropped here.
            let _ = reply.send(outcome);
        }
    }
}

/// How one transaction of a batch ended, when it did not commit.
enum GroupFailure {
    /// A unique violation: a writer that bypassed the position lock raced us. Every commit in
    /// the group is retried by its caller from a fresh load.
    Conflict,
    /// PostgreSQL refused what the group wrote (class 22 data, 23 integrity, a trigger...): one
    /// of its commits is bad, and the group is split to find it.
    Refused(StoreError),
    /// A caller's deadline passed before `COMMIT`; rolled back so the rest can go without it.
    Abandoned,
    /// The database was unavailable, a bound ran out, or the outcome is unknown: every commit
    /// in the group gets this error (retryable with the same idempotency key).
    Failed(StoreError),
}

impl GroupFailure {
    fn classify(error: StoreError) -> Self {
        let database_error = match &error {
            StoreError::Database(e) => e.as_database_error(),
            _ => None,
        };
        match database_error {
            Some(db) if db.is_unique_violation() => GroupFailure::Conflict,
            Some(_) if !error.is_transient() => GroupFailure::Refused(error),
            _ => GroupFailure::Failed(error),
        }
    }
}

/// One batch being written: the commits the writer took from the queue and their callers.
struct Writer<'a> {
    connection: &'a mut WriterConnection,
    begin_sql: &'a str,
    batch_timeout: Duration,
    commits: &'a [PendingCommit],
    replies: &'a [Reply],
}

impl Writer<'_> {
    /// Writes the batch and returns one outcome per commit, in batch order, and the writer-level
    /// failure if there was one (for health).
    async fn write(&mut self) -> (Vec<Result<(), StoreError>>, Option<String>) {
        let mut outcomes: Vec<Option<Result<(), StoreError>>> =
            (0..self.commits.len()).map(|_| None).collect();
        let mut writer_failure = None;
        // Groups still to write, in batch order: the whole batch first, halves after a refusal.
        let mut groups = VecDeque::from([(0..self.commits.len()).collect::<Vec<_>>()]);
        while let Some(mut group) = groups.pop_front() {
            group.retain(|&index| {
                let gone = self.abandoned(index);
                if gone {
                    outcomes[index] = Some(Err(StoreError::DeadlinePassed));
                }
                !gone
            });
            if group.is_empty() {
                continue;
            }
            match self.write_group(&group).await {
                Ok(decided) => {
                    for (index, outcome) in group.into_iter().zip(decided) {
                        outcomes[index] = Some(outcome);
                    }
                }
                // The abandoned commits are dropped by the `retain` above on the next turn.
                Err(GroupFailure::Abandoned) => groups.push_front(group),
                Err(GroupFailure::Refused(error)) if group.len() == 1 => {
                    tracing::warn!(
                        error = %error,
                        aggregate_type = self.commits[group[0]].aggregate_type,
                        aggregate_id = %self.commits[group[0]].aggregate_id,
                        "the database refused a commit; the rest of its batch goes on"
                    );
                    outcomes[group[0]] = Some(Err(error));
                }
                Err(GroupFailure::Refused(error)) => {
                    tracing::debug!(error = %error, commits = group.len(), "batch refused; splitting");
                    metrics::counter!("orderpipe_store_batch_splits_total").increment(1);
                    let second_half = group.split_off(group.len() / 2);
                    groups.push_front(second_half);
                    groups.push_front(group);
                }
                Err(GroupFailure::Conflict) => {
                    for index in group {
                        outcomes[index] = Some(Err(StoreError::Conflict));
                    }
                }
                Err(GroupFailure::Failed(error)) => {
                    tracing::error!(error = %error, commits = self.commits.len(), "group commit failed");
                    // The database is the problem, not a commit: the groups still waiting
                    // would only fail the same way after waiting out the same bounds.
                    for index in group.into_iter().chain(groups.drain(..).flatten()) {
                        outcomes[index] = Some(Err(error.duplicate()));
                    }
                    writer_failure = Some(error.to_string());
                }
            }
        }
        // Every commit was decided above (each group is written, split, dropped or failed).
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Err(StoreError::ShuttingDown)))
            .collect();
        (outcomes, writer_failure)
    }

    /// Whether commit `index`'s caller no longer waits for it.
    fn abandoned(&self, index: usize) -> bool {
        caller_gone(&self.commits[index], &self.replies[index])
    }

    /// Writes the commits at `group` in one transaction: their outcomes when it committed (or
    /// wrote nothing), else why not.
    async fn write_group(
        &mut self,
        group: &[usize],
    ) -> Result<Vec<Result<(), StoreError>>, GroupFailure> {
        let deadline = Instant::now() + self.batch_timeout;
        // Beginning involves no commit's content: a failure there is never split.
        let mut transaction = WriterTransaction::begin(self.connection, self.begin_sql, deadline)
            .await
            .map_err(GroupFailure::Failed)?;
        let commits: Vec<&PendingCommit> =
            group.iter().map(|&index| &self.commits[index]).collect();
        let decisions = match write_rows(&mut transaction, &commits).await {
            Ok(decisions) => decisions,
            Err(error) => return Err(GroupFailure::classify(transaction.abort(error).await)),
        };
        if !decisions.iter().any(Decision::accepted) {
            transaction.rollback().await;
            return Ok(decisions.iter().map(Decision::outcome).collect());
        }
        // The last moment to leave out a caller who has gone: after this the commit is sent.
        // (Field by field: the transaction holds `self.connection`.)
        if group
            .iter()
            .any(|&index| caller_gone(&self.commits[index], &self.replies[index]))
        {
            transaction.rollback().await;
            return Err(GroupFailure::Abandoned);
        }
        transaction.commit().await.map_err(GroupFailure::classify)?;
        Ok(decisions.iter().map(Decision::outcome).collect())
    }
}

/// Whether the caller of `commit` no longer waits for it: its reply was dropped or its deadline
/// passed.
fn caller_gone(commit: &PendingCommit, reply: &Reply) -> bool {
    reply.is_closed()
        || commit
            .deadline
            .is_some_and(|deadline| deadline <= Instant::now())
}

/// The decision for one commit of the batch.
enum Decision {
    Accepted,
    Conflict,
}

impl Decision {
    fn accepted(&self) -> bool {
        matches!(self, Decision::Accepted)
    }

    fn outcome(&self) -> Result<(), StoreError> {
        match self {
            Decision::Accepted => Ok(()),
            Decision::Conflict => Err(StoreError::Conflict),
        }
    }
}

/// Decides and writes the commits inside `transaction`: the decision for each commit (when none
/// is accepted, nothing was written).
async fn write_rows(
    transaction: &mut WriterTransaction<'_>,
    commits: &[&PendingCommit],
) -> Result<Vec<Decision>, StoreError> {
    // Three round trips in all: begin, this call, commit (and its WAL flush).
    let deadline = transaction.deadline();
    let first_positions: Vec<Option<i64>> = bounded(
        deadline,
        CommitColumns::of(commits)
            .bind_to(sqlx::query_scalar(APPEND_COMMITS))
            .fetch_one(transaction.connection()),
    )
    .await?;
    if first_positions.len() != commits.len() {
        // Never expected; the transaction is then closed unwritten rather than guessed at.
        return Err(sqlx::Error::Protocol(format!(
            "append_commits decided {} commits of {}",
            first_positions.len(),
            commits.len()
        ))
        .into());
    }
    Ok(first_positions
        .into_iter()
        .map(|first_position| match first_position {
            Some(_) => Decision::Accepted,
            None => Decision::Conflict,
        })
        .collect())
}

/// The batch as column arrays, bound to `APPEND_COMMITS` (which reads them with `unnest`): one
/// entry per commit, and its events flattened in commit order.
#[derive(Default)]
struct CommitColumns<'a> {
    aggregate_types: Vec<&'static str>,
    aggregate_ids: Vec<&'a str>,
    expected_versions: Vec<i64>,
    event_counts: Vec<i32>,
    metadata: Vec<&'a Value>,
    keys: Vec<Option<&'a str>>,
    fingerprints: Vec<Option<&'a str>>,
    snapshots: Vec<Option<&'a Value>>,
    snapshot_versions: Vec<Option<i32>>,
    event_commits: Vec<i32>,
    event_types: Vec<&'a str>,
    event_versions: Vec<&'a str>,
    event_payloads: Vec<&'a Value>,
}

impl<'a> CommitColumns<'a> {
    fn of(commits: &[&'a PendingCommit]) -> Self {
        let events = commits.iter().map(|commit| commit.events.len()).sum();
        let mut columns = Self {
            event_commits: Vec::with_capacity(events),
            event_types: Vec::with_capacity(events),
            event_versions: Vec::with_capacity(events),
            event_payloads: Vec::with_capacity(events),
            ..Self::default()
        };
        for (index, commit) in commits.iter().enumerate() {
            columns.push(index as i32 + 1, commit);
        }
        columns
    }

    fn push(&mut self, commit_number: i32, commit: &'a PendingCommit) {
        self.aggregate_types.push(commit.aggregate_type);
        self.aggregate_ids.push(&commit.aggregate_id);
        self.expected_versions.push(commit.expected_version as i64);
        self.event_counts.push(commit.events.len() as i32);
        self.metadata.push(&commit.metadata);
        let idempotency = commit.idempotency.as_ref();
        self.keys.push(idempotency.map(|i| i.key.as_str()));
        self.fingerprints
            .push(idempotency.map(|i| i.fingerprint.as_str()));
        let snapshot = commit.snapshot.as_ref();
        self.snapshots.push(snapshot.map(|s| &s.payload));
        self.snapshot_versions
            .push(snapshot.map(|s| s.schema_version as i32));
        for event in &commit.events {
            self.event_commits.push(commit_number);
            self.event_types.push(&event.event_type);
            self.event_versions.push(&event.event_version);
            self.event_payloads.push(&event.payload);
        }
    }

    fn bind_to<O>(
        self,
        query: sqlx::query::QueryScalar<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.aggregate_types)
            .bind(self.aggregate_ids)
            .bind(self.expected_versions)
            .bind(self.event_counts)
            .bind(self.metadata)
            .bind(self.keys)
            .bind(self.fingerprints)
            .bind(self.snapshots)
            .bind(self.snapshot_versions)
            .bind(self.event_commits)
            .bind(self.event_types)
            .bind(self.event_versions)
            .bind(self.event_payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_announces_on_the_channel_the_relay_listens_on() {
        let append_commits = include_str!("../migrations/0005_append_commits_key_probe.sql");
        let announce = format!("pg_notify('{}', '')", crate::OUTBOX_CHANNEL);
        assert!(append_commits.contains(&announce), "{append_commits}");
    }

    #[test]
    fn health_reports_a_batch_running_too_long_then_a_failure_until_a_success() {
        let state = WriterState::new(Duration::from_millis(50));
        assert_eq!(state.health(), Ok(()), "idle and nothing failed");

        state.batch_started();
        assert_eq!(state.health(), Ok(()), "a batch that just started");
        std::thread::sleep(Duration::from_millis(80));
        let stuck = state
            .health()
            .expect_err("a batch running past stuck_after");
        assert!(stuck.contains("stuck"), "{stuck}");

        state.batch_ended(Some("lock timeout".into()));
        let failing = state
            .health()
            .expect_err("a failed batch and no success since");
        assert!(failing.contains("lock timeout"), "{failing}");

        state.batch_started();
        state.batch_ended(None);
        assert_eq!(state.health(), Ok(()), "a later success clears the failure");
    }
}
