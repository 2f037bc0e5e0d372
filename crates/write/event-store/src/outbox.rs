//! The outbox, as the relay sees it: the commits not yet published, oldest first, each with its
//! events; removal once the log acknowledged them; and the backlog, for metrics and alarms.
//!
//! Rows become visible in position order: a commit takes its positions while holding the
//! `event_position` row lock and releases it only by committing, so a reader that sees a commit
//! also sees every commit with a lower position. In particular an aggregate's commits appear in
//! sequence order, which is what the relay's ordering rests on.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::StoreError;
use crate::reader::RecordedEvent;
use crate::PgEventStore;

/// The oldest `$1` outbox rows with their events. One round trip: the limit applies to commits
/// (outbox rows), not to events, so a commit is never cut in half.
const READ_OLDEST: &str = "\
WITH oldest AS (
    SELECT first_position, last_position FROM outbox ORDER BY first_position LIMIT $1
)
SELECT o.first_position AS commit_position, e.global_position, e.aggregate_type,
       e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata,
       e.recorded_at
FROM oldest o
JOIN events e ON e.global_position BETWEEN o.first_position AND o.last_position
ORDER BY e.global_position";

/// Removes published commits and tells how long each waited since its commit, on the database's
/// clock (the one that stamped `committed_at`), so the relay's clock skew never shows.
const REMOVE: &str = "\
DELETE FROM outbox WHERE first_position = ANY($1::bigint[])
RETURNING EXTRACT(EPOCH FROM clock_timestamp() - committed_at)::float8";

/// The age is measured on the database's clock, the same clock that stamped `committed_at`, so
/// the relay's own clock skew never shows up in the metric.
const BACKLOG: &str = "\
SELECT count(*),
       EXTRACT(EPOCH FROM clock_timestamp() - min(committed_at))::float8
FROM outbox";

/// One unpublished commit of one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxCommit {
    /// The global position of the commit's first event; identifies the outbox row.
    pub first_position: i64,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The commit's events in sequence order; never empty.
    pub events: Vec<RecordedEvent>,
}

/// How far the relay is behind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// Commits waiting to be published.
    pub commits: u64,
    /// How long the oldest waiting commit has waited; `None` when nothing waits.
    pub oldest_age: Option<Duration>,
}

#[derive(sqlx::FromRow)]
struct OutboxEventRow {
    commit_position: i64,
    #[sqlx(flatten)]
    event: RecordedEvent,
}

impl PgEventStore {
    /// Up to `limit` unpublished commits, oldest (lowest position) first, each with its events.
    pub async fn read_outbox(&self, limit: u32) -> Result<Vec<OutboxCommit>, StoreError> {
        let rows: Vec<OutboxEventRow> = sqlx::query_as(READ_OLDEST)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut commits: BTreeMap<i64, OutboxCommit> = BTreeMap::new();
        for OutboxEventRow {
            commit_position,
            event,
        } in rows
        {
            commits
                .entry(commit_position)
                .or_insert_with(|| OutboxCommit {
                    first_position: commit_position,
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    events: Vec::new(),
                })
                .events
                .push(event);
        }
        Ok(commits.into_values().collect())
    }

    /// Removes published commits from the outbox by their first position; returns how many rows
    /// went. Positions already removed are ignored, so repeating a removal is harmless.
    pub async fn remove_from_outbox(&self, first_positions: &[i64]) -> Result<u64, StoreError> {
        Ok(self.remove_published(first_positions).await?.len() as u64)
    }

    /// [`PgEventStore::remove_from_outbox`], answering for each removed commit how long it
    /// waited in the outbox: from its commit to its removal, after the log acknowledged it.
    pub async fn remove_published(
        &self,
        first_positions: &[i64],
    ) -> Result<Vec<Duration>, StoreError> {
        if first_positions.is_empty() {
            return Ok(Vec::new());
        }
        let waited: Vec<f64> = sqlx::query_scalar(REMOVE)
            .bind(first_positions)
            .fetch_all(&self.pool)
            .await?;
        Ok(waited
            .into_iter()
            .map(|seconds| Duration::from_secs_f64(seconds.max(0.0)))
            .collect())
    }

    /// The number of waiting commits and the age of the oldest. Counts every row, which is cheap
    /// while the relay keeps up (the outbox stays near empty); callers poll it at most about once
    /// a second.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let (commits, oldest_age_seconds): (i64, Option<f64>) =
            sqlx::query_as(BACKLOG).fetch_one(&self.pool).await?;
        Ok(OutboxBacklog {
            commits: commits.max(0) as u64,
            // A commit stamped a moment "after" the clock read (clock adjustments) counts as 0.
            oldest_age: oldest_age_seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0))),
        })
    }
}
