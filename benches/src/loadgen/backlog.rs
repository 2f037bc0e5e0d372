//! How far the history projector is behind the store, in events, read from the databases while
//! the load runs. A time-based lag from the log is the projectors' `millis_behind_latest`, but
//! kinesalite reports 0 there whatever the backlog, so the markers are the figure that moves.

use replay::ReadModel;
use sqlx::PgPool;

/// The events the live history schema reflects: the sum of its per-aggregate markers
/// (sequences start at 1 without gaps, so a marker counts its aggregate's applied events).
const HISTORY_REFLECTED: &str =
    "SELECT COALESCE(sum(last_sequence), 0)::bigint FROM history.applied_sequences";

const STORE_EVENTS_OF_TYPES: &str =
    "SELECT count(*) FROM events WHERE aggregate_type = ANY($1::text[])";

/// Events of the store the history view does not reflect yet; `None` when either database cannot
/// be read (the schema appears when the projectors start). The view is read first, so events
/// committed in between count as behind: the figure is never understated.
pub async fn history_events_behind(events: &PgPool, views: &PgPool) -> Option<i64> {
    let reflected: i64 = sqlx::query_scalar(HISTORY_REFLECTED)
        .fetch_one(views)
        .await
        .ok()?;
    let stored: i64 = sqlx::query_scalar(STORE_EVENTS_OF_TYPES)
        .bind(ReadModel::History.aggregate_types())
        .fetch_one(events)
        .await
        .ok()?;
    Some((stored - reflected).max(0))
}
