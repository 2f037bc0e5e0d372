//! Rebuilding a projection from the event store.

use std::str::FromStr;
use std::time::Duration;

use commit_log::projection::{Projection, ProjectionError};
use commit_log::LoggedCommit;
use event_store::{PgEventStore, RecordedEvent};
use futures::{StreamExt, TryStreamExt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::commits::CommitCutter;
use crate::error::ReplayError;
use crate::progress::ProgressStore;

/// The last position of the log's prefix recorded at or before `$1`: everything before the first
/// event recorded after it. A prefix of the commit order, not a filter on time, because
/// positions and times need not agree across concurrent writers, and only a prefix is a state
/// every projection has been in.
const LAST_POSITION_AT: &str = "\
SELECT COALESCE(min(global_position) - 1, (SELECT last_position FROM event_position))
FROM events WHERE recorded_at > $1";

/// How often a batch failing transiently is tried before the rebuild stops (it resumes when run
/// again), and the pauses between tries.
const APPLY_ATTEMPTS: u32 = 8;
const APPLY_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(100);
const APPLY_RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// One aggregate, as `--aggregate TYPE/ID` names it (`order/<uuid>`, `inventory/<store>`,
/// `loyalty/<customer>`, `menu/menu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRef {
    /// `order`, `inventory`, `loyalty` or `menu`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
}

impl FromStr for AggregateRef {
    type Err = ReplayError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once('/') {
            Some((kind @ ("order" | "inventory" | "loyalty" | "menu"), id)) if !id.is_empty() => {
                Ok(AggregateRef {
                    aggregate_type: kind.to_owned(),
                    aggregate_id: id.to_owned(),
                })
            }
            _ => Err(ReplayError::InvalidAggregate(value.to_owned())),
        }
    }
}

impl std::fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// Where an as-of rebuild stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The last global position to include. A commit that this position splits is left out
    /// whole: commits are applied entirely or not at all.
    Position(i64),
    /// Every commit of the log's prefix recorded at or before this time.
    Time(OffsetDateTime),
}

impl FromStr for Until {
    type Err = ReplayError;

    /// A global position (`1200`) or an RFC 3339 time (`2025-03-03T08:00:00Z`).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(position) = value.parse::<i64>() {
            return if position >= 0 {
                Ok(Until::Position(position))
            } else {
                Err(ReplayError::InvalidUntil(value.to_owned()))
            };
        }
        OffsetDateTime::parse(value, &Rfc3339)
            .map(Until::Time)
            .map_err(|_| ReplayError::InvalidUntil(value.to_owned()))
    }
}

/// How a rebuild runs.
#[derive(Debug, Clone, Copy)]
pub struct RebuildOptions {
    /// Stop here; `None`: the end of the log when the rebuild starts.
    pub until: Option<Until>,
    /// Commits per `Projection::apply` call (and per progress record).
    pub batch_commits: usize,
}

/// Where a rebuild stands, reported after every batch and returned at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The position the rebuild started after (0, or the stored progress when resuming).
    pub started_after: i64,
    /// The last position applied (and recorded).
    pub applied_through: i64,
    /// The position the rebuild stops at.
    pub through: i64,
    /// Commits applied by this run.
    pub commits: u64,
    /// Events applied by this run.
    pub events: u64,
}

/// Rebuilds `projection` from `store`, resuming after the position `progress` holds.
///
/// Streams the events after it in commit order (constant memory: at most one batch of
/// `options.batch_commits` commits is held), cuts them into commits, decodes them with the
/// upcasters, and applies them batch by batch, recording the batch's last position in `progress`
/// after each one. The projection commits its own transactions, so a crash between the apply and
/// the record makes the next run apply that batch again, which the projection's per-aggregate
/// idempotency turns into a no-op. `on_batch` sees the progress after every batch.
pub async fn rebuild(
    store: &PgEventStore,
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    options: &RebuildOptions,
    on_batch: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, ReplayError> {
    run(store, projection, progress, options, None, on_batch).await
}

/// [`rebuild`] restricted to one aggregate's commits, read through the store's per-aggregate
/// index: the rows of one aggregate, built into a fresh target.
pub async fn rebuild_aggregate(
    store: &PgEventStore,
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    options: &RebuildOptions,
    aggregate: &AggregateRef,
    on_batch: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, ReplayError> {
    run(
        store,
        projection,
        progress,
        options,
        Some(aggregate),
        on_batch,
    )
    .await
}

async fn run(
    store: &PgEventStore,
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    options: &RebuildOptions,
    aggregate: Option<&AggregateRef>,
    mut on_batch: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, ReplayError> {
    let name = projection.name();
    let started_after = progress.load(name).await?.unwrap_or(0);
    let through = resolve_through(store, options.until).await?;
    let mut state = RebuildProgress {
        started_after,
        applied_through: started_after,
        through,
        commits: 0,
        events: 0,
    };
    if through <= started_after {
        return Ok(state);
    }
    let batch_commits = options.batch_commits.max(1);
    // One event past the bound tells whether the commit holding the bound ends there.
    let mut events = match aggregate {
        None => store.read_range(started_after, through + 1).boxed(),
        Some(one) => store
            .read_aggregate_range(
                &one.aggregate_type,
                &one.aggregate_id,
                started_after,
                through + 1,
            )
            .boxed(),
    };
    let mut cutter = CommitCutter::new(through);
    let mut batch: Vec<LoggedCommit> = Vec::with_capacity(batch_commits);
    while let Some(event) = events.try_next().await? {
        if let Some(events) = cutter.push(event) {
            batch.push(decode(&events)?);
            if batch.len() == batch_commits {
                apply(projection, progress, &mut batch, &mut state).await?;
                on_batch(&state);
            }
        }
        if cutter.is_done() {
            break;
        }
    }
    if let Some(events) = cutter.finish() {
        batch.push(decode(&events)?);
    }
    if !batch.is_empty() {
        apply(projection, progress, &mut batch, &mut state).await?;
        on_batch(&state);
    }
    Ok(state)
}

/// The last position a rebuild bounded by `until` includes: the bound, or the log's end now.
pub async fn resolve_through(
    store: &PgEventStore,
    until: Option<Until>,
) -> Result<i64, ReplayError> {
    let last = store.last_position().await?;
    match until {
        None => Ok(last),
        Some(Until::Position(requested)) if requested > last => {
            Err(ReplayError::BeyondLog { requested, last })
        }
        Some(Until::Position(position)) => Ok(position),
        Some(Until::Time(time)) => Ok(sqlx::query_scalar(LAST_POSITION_AT)
            .bind(time)
            .fetch_one(store.pool())
            .await
            .map_err(event_store::StoreError::from)?),
    }
}

pub(crate) fn decode(events: &[RecordedEvent]) -> Result<LoggedCommit, ReplayError> {
    LoggedCommit::from_recorded(events).map_err(|source| ReplayError::Decode {
        position: events.first().map_or(0, |e| e.global_position),
        source,
    })
}

/// Applies and records one batch, then empties it.
async fn apply(
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    batch: &mut Vec<LoggedCommit>,
    state: &mut RebuildProgress,
) -> Result<(), ReplayError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    apply_with_retries(projection, batch)
        .await
        .map_err(|source| ReplayError::Apply {
            projection: projection.name(),
            position: first.first_position(),
            source,
        })?;
    let applied_through = last.last_position() as i64;
    progress.save(projection.name(), applied_through).await?;
    state.applied_through = applied_through;
    state.commits += batch.len() as u64;
    state.events += batch.iter().map(|c| c.events.len() as u64).sum::<u64>();
    batch.clear();
    Ok(())
}

/// Applies `batch`, retrying a transient failure (throttling, a dependency briefly away, the live
/// projector moving a marker meanwhile) a few times with a growing pause: re-applying is
/// harmless, the projections being idempotent.
pub(crate) async fn apply_with_retries(
    projection: &dyn Projection,
    batch: &[LoggedCommit],
) -> Result<(), ProjectionError> {
    let mut pause = APPLY_RETRY_FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match projection.apply(batch).await {
            Err(ProjectionError::Transient(_)) if attempt < APPLY_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(APPLY_RETRY_MAX_PAUSE);
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn aggregate_takes_a_type_and_an_id() {
        let order = "order/4a3c6c39-7a3f-4a38-9b0e-2f9c5b1d2e10".parse::<AggregateRef>();
        assert_eq!(
            order.ok(),
            Some(AggregateRef {
                aggregate_type: "order".into(),
                aggregate_id: "4a3c6c39-7a3f-4a38-9b0e-2f9c5b1d2e10".into(),
            })
        );
        for bad in ["order", "order/", "customer/c-1", "/x"] {
            assert!(
                matches!(
                    bad.parse::<AggregateRef>(),
                    Err(ReplayError::InvalidAggregate(_))
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn until_takes_a_position_or_an_rfc3339_time() {
        assert_eq!("1200".parse::<Until>().ok(), Some(Until::Position(1200)));
        assert_eq!(
            "2025-03-03T08:00:00Z".parse::<Until>().ok(),
            Some(Until::Time(datetime!(2025-03-03 08:00 UTC)))
        );
        for bad in ["-1", "yesterday", "2025-03-03"] {
            assert!(
                matches!(bad.parse::<Until>(), Err(ReplayError::InvalidUntil(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
