//! Reading the whole log in commit order, for the relay, replay, the command API's streams and
//! tests.

use futures::{Stream, TryStreamExt};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::PgEventStore;

const READ_ALL_AFTER: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
       metadata, recorded_at
FROM events WHERE global_position > $1 ORDER BY global_position";

const READ_RANGE: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
       metadata, recorded_at
FROM events WHERE global_position > $1 AND global_position <= $2 ORDER BY global_position";

/// Through the unique index events_aggregate_sequence: sequence order is commit
/// order within one aggregate.
const READ_AGGREGATE_RANGE: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
       metadata, recorded_at
FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
              AND global_position > $3 AND global_position <= $4
ORDER BY sequence";

/// Through the unique index events_aggregate_sequence.
const READ_AGGREGATE_AFTER: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
       metadata, recorded_at
FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
ORDER BY sequence";

/// Where each event is, without what it says: no payload or metadata read, sent or decoded.
const READ_HEADERS_RANGE: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence
FROM events WHERE global_position > $1 AND global_position <= $2 ORDER BY global_position";

/// Through the primary key.
const READ_POSITIONS: &str = "\
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
       metadata, recorded_at
FROM events WHERE global_position = ANY($1) ORDER BY global_position";

const LAST_POSITION: &str = "SELECT last_position FROM event_position";

/// Where an event is in the log, without its content: enough to tell whose it is.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHeader {
    /// Gap-free position in commit order, from 1.
    pub global_position: i64,
    /// The aggregate's type (`Aggregate::TYPE`).
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within its aggregate, from 1.
    pub sequence: i64,
}

/// An event as stored, of any aggregate type.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordedEvent {
    /// Gap-free position in commit order, from 1.
    pub global_position: i64,
    /// The aggregate's type (`Aggregate::TYPE`).
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within its aggregate, from 1.
    pub sequence: i64,
    /// The event's type name.
    pub event_type: String,
    /// The version of the event's shape.
    pub event_version: String,
    /// The event as JSON.
    pub payload: Value,
    /// The command's metadata (correlation id, idempotency key, ...).
    pub metadata: Value,
    /// When the event became durable.
    pub recorded_at: OffsetDateTime,
}

impl PgEventStore {
    /// Every event after `position`, in commit order, streamed from one query (constant memory).
    pub fn read_all_after(
        &self,
        position: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + '_ {
        sqlx::query_as::<_, RecordedEvent>(READ_ALL_AFTER)
            .bind(position)
            .fetch(&self.pool)
            .map_err(StoreError::from)
    }

    /// The events with `after < position <= through`, in commit order, streamed from one query
    /// (constant memory). Unlike [`Self::read_all_after`], the server stops at `through`, so a
    /// reader that needs only a prefix of the log (replay up to a point) reads no more.
    pub fn read_range(
        &self,
        after: i64,
        through: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + '_ {
        sqlx::query_as::<_, RecordedEvent>(READ_RANGE)
            .bind(after)
            .bind(through)
            .fetch(&self.pool)
            .map_err(StoreError::from)
    }

    /// One aggregate's events with `after < position <= through`, in commit order, streamed
    /// (replay of a single aggregate).
    pub fn read_aggregate_range<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        after: i64,
        through: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'a {
        sqlx::query_as::<_, RecordedEvent>(READ_AGGREGATE_RANGE)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(after)
            .bind(through)
            .fetch(&self.pool)
            .map_err(StoreError::from)
    }

    /// One aggregate's events after its sequence `after_sequence`, in order (the changes a
    /// watcher of the aggregate has not seen yet).
    pub async fn read_aggregate_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as::<_, RecordedEvent>(READ_AGGREGATE_AFTER)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(after_sequence)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The headers of the events with `after < position <= through`, in commit order: for a
    /// reader that needs the content of only some of them ([`Self::read_positions`]).
    pub async fn read_headers(
        &self,
        after: i64,
        through: i64,
    ) -> Result<Vec<EventHeader>, StoreError> {
        Ok(sqlx::query_as::<_, EventHeader>(READ_HEADERS_RANGE)
            .bind(after)
            .bind(through)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The events at `positions`, in commit order.
    pub async fn read_positions(
        &self,
        positions: &[i64],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(sqlx::query_as::<_, RecordedEvent>(READ_POSITIONS)
            .bind(positions)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The position of the last committed event (0 for an empty store).
    pub async fn last_position(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(LAST_POSITION)
            .fetch_one(&self.pool)
            .await?)
    }
}
