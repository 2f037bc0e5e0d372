//! Where a read model's schema stands against the event store, for `replay list`.
//!
//! A projection keeps no global position: its markers are the last sequence applied per
//! aggregate (`applied_sequences`), and the live projector's own progress is its Kinesis
//! checkpoints (`projectors leases`). What can be derived from the markers alone, exactly:
//! how many of the store's events the view reflects (sequences start at 1 and have no gaps, so
//! an aggregate's marker is its number of applied events) and the highest position among the
//! events the markers point at. Neither is "caught up through": shards run independently, so
//! events below the highest reflected position can still be missing; the count of events not
//! reflected says whether any are.

use event_store::PgEventStore;
use futures::TryStreamExt;
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;
use crate::target::{schema_exists, ReadModel};

use read_models::analytics_sql::replay::{marker_totals, markers as markers_sql};

const STORE_EVENTS_OF_TYPES: &str =
    "SELECT count(*) FROM events WHERE aggregate_type = ANY($1::text[])";

/// The highest position among the events `($1, $2, $3)` = (type, id, sequence) name.
const HIGHEST_POSITION_OF: &str = "\
SELECT max(e.global_position) FROM events e
JOIN UNNEST($1::text[], $2::text[], $3::bigint[]) AS k (aggregate_type, aggregate_id, sequence)
  ON e.aggregate_type = k.aggregate_type AND e.aggregate_id = k.aggregate_id
 AND e.sequence = k.sequence";

/// Markers looked up in the store per query.
const MARKER_CHUNK: usize = 1_000;

/// A read model's schema against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStatus {
    /// The schema looked at.
    pub schema: SchemaName,
    /// `None`: the schema does not exist; the rest is then about the store only.
    pub view: Option<ViewMarkers>,
    /// The store's events of the aggregate types the projection reads.
    pub store_events: i64,
    /// The store's last position.
    pub store_last_position: i64,
}

/// What a schema's markers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMarkers {
    /// Aggregates with a marker.
    pub aggregates: i64,
    /// Events reflected: the sum of the markers.
    pub events_reflected: i64,
    /// The highest position of a reflected event (`None`: no markers).
    pub highest_position: Option<i64>,
}

impl ViewStatus {
    /// Events of the projection's aggregate types the view does not reflect yet.
    pub fn events_behind(&self) -> i64 {
        let reflected = self.view.as_ref().map_or(0, |v| v.events_reflected);
        (self.store_events - reflected).max(0)
    }
}

/// Reads `schema`'s markers from `pool` and compares them with `store`. The markers are read
/// first, so events committed in between count as not reflected: the lag is never understated.
pub async fn view_status(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    schema: &SchemaName,
) -> Result<ViewStatus, ReplayError> {
    let view = if schema_exists(pool, schema).await? {
        Some(markers(store, pool, schema).await?)
    } else {
        None
    };
    let store_events = sqlx::query_scalar(STORE_EVENTS_OF_TYPES)
        .bind(model.aggregate_types())
        .fetch_one(store.pool())
        .await
        .map_err(event_store::StoreError::from)?;
    let store_last_position = store.last_position().await?;
    Ok(ViewStatus {
        schema: schema.clone(),
        view,
        store_events,
        store_last_position,
    })
}

async fn markers(
    store: &PgEventStore,
    pool: &PgPool,
    schema: &SchemaName,
) -> Result<ViewMarkers, ReplayError> {
    let (aggregates, events_reflected): (i64, i64) = sqlx::query_as(&marker_totals(schema))
        .fetch_one(pool)
        .await?;
    let sql = markers_sql(schema);
    let mut rows = sqlx::query_as::<_, (String, String, i64)>(&sql).fetch(pool);
    let mut chunk = Vec::with_capacity(MARKER_CHUNK);
    let mut highest_position = None;
    while let Some(row) = rows.try_next().await? {
        chunk.push(row);
        if chunk.len() == MARKER_CHUNK {
            highest_position = highest_position.max(highest_of(store, &chunk).await?);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        highest_position = highest_position.max(highest_of(store, &chunk).await?);
    }
    Ok(ViewMarkers {
        aggregates,
        events_reflected,
        highest_position,
    })
}

async fn highest_of(
    store: &PgEventStore,
    markers: &[(String, String, i64)],
) -> Result<Option<i64>, ReplayError> {
    let types: Vec<&str> = markers.iter().map(|(t, _, _)| t.as_str()).collect();
    let ids: Vec<&str> = markers.iter().map(|(_, id, _)| id.as_str()).collect();
    let sequences: Vec<i64> = markers.iter().map(|(_, _, s)| *s).collect();
    Ok(sqlx::query_scalar(HIGHEST_POSITION_OF)
        .bind(types)
        .bind(ids)
        .bind(sequences)
        .fetch_one(store.pool())
        .await
        .map_err(event_store::StoreError::from)?)
}
