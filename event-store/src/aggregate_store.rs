//! cqrs-es's `EventStore` for one aggregate type, implemented directly on PostgreSQL.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};
use serde_json::Value;
use sqlx::PgPool;

use crate::committer::{GroupCommitter, IdempotencyRecord, NewEvent, PendingCommit};
use crate::error::StoreError;
use crate::metadata;

/// The latest snapshot (first row, `is_snapshot`) and the events after it, in one round trip.
const LOAD_AGGREGATE: &str = "\
WITH snapshot AS (
    SELECT version, payload FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2
)
SELECT TRUE AS is_snapshot, version AS sequence, NULL::text AS event_type,
       NULL::text AS event_version, payload, NULL::jsonb AS metadata
FROM snapshot
UNION ALL
SELECT FALSE, sequence, event_type, event_version, payload, metadata FROM events
WHERE aggregate_type = $1 AND aggregate_id = $2
  AND sequence > COALESCE((SELECT version FROM snapshot), 0)
ORDER BY is_snapshot DESC, sequence";

const LOAD_EVENTS_AFTER: &str = "\
SELECT sequence, event_type, event_version, payload, metadata FROM events
WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
ORDER BY sequence";

const LOAD_COMMIT_OUTCOME: &str = "\
SELECT k.request_fingerprint, k.aggregate_type, k.aggregate_id, e.sequence, e.event_type,
       e.event_version, e.payload, e.metadata
FROM command_idempotency k
JOIN events e ON e.aggregate_type = k.aggregate_type AND e.aggregate_id = k.aggregate_id
             AND e.sequence BETWEEN k.first_sequence AND k.last_sequence
WHERE k.idempotency_key = $1
ORDER BY e.sequence";

/// An aggregate as loaded for a command: its state and the version (number of events) it has.
#[derive(Debug)]
pub struct LoadedAggregate<A> {
    aggregate_id: String,
    aggregate: A,
    version: u64,
}

impl<A> LoadedAggregate<A> {
    /// The aggregate's id.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// The aggregate's state.
    pub fn state(&self) -> &A {
        &self.aggregate
    }

    /// How many events the aggregate has; 0 when it does not exist yet.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl<A: Aggregate> AggregateContext<A> for LoadedAggregate<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// The events a command committed under an idempotency key: its first outcome.
#[derive(Debug)]
pub struct CommitOutcome<A: Aggregate> {
    /// The aggregate the command acted on.
    pub aggregate_id: String,
    /// The committed events, in sequence order.
    pub events: Vec<EventEnvelope<A>>,
}

/// The event store of one aggregate type. Cheap to clone; every clone shares the pool and the
/// process's group-commit writer.
pub struct AggregateStore<A> {
    pool: PgPool,
    committer: GroupCommitter,
    snapshot_every: u64,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for AggregateStore<A> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            committer: self.committer.clone(),
            snapshot_every: self.snapshot_every,
            upcasters: self.upcasters.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> AggregateStore<A> {
    pub(crate) fn new(
        pool: PgPool,
        committer: GroupCommitter,
        snapshot_every: u64,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Self {
            pool,
            committer,
            snapshot_every,
            upcasters: Arc::new(upcasters),
            aggregate: PhantomData,
        }
    }

    /// Loads an aggregate from its latest snapshot plus the events after it.
    pub async fn load(&self, aggregate_id: &str) -> Result<LoadedAggregate<A>, StoreError> {
        type Row = (
            bool,
            i64,
            Option<String>,
            Option<String>,
            Value,
            Option<Value>,
        );
        let rows: Vec<Row> = sqlx::query_as(LOAD_AGGREGATE)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await?;
        let mut aggregate = A::default();
        let mut version = 0;
        for (is_snapshot, sequence, event_type, event_version, payload, metadata) in rows {
            if is_snapshot {
                aggregate = serde_json::from_value(payload)?;
            } else {
                let envelope = self.deserialize(
                    aggregate_id,
                    sequence,
                    event_type.unwrap_or_default(),
                    event_version.unwrap_or_default(),
                    payload,
                    metadata.unwrap_or_default(),
                )?;
                aggregate.apply(envelope.payload);
            }
            version = sequence as u64;
        }
        Ok(LoadedAggregate {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            version,
        })
    }

    /// The events an earlier command committed under `idempotency_key`, if any. A key recorded
    /// for a different request (another fingerprint or aggregate type) is an error: the caller
    /// reused a key.
    pub async fn commit_outcome(
        &self,
        idempotency_key: &str,
        request_fingerprint: &str,
    ) -> Result<Option<CommitOutcome<A>>, StoreError> {
        type Row = (String, String, String, i64, String, String, Value, Value);
        let rows: Vec<Row> = sqlx::query_as(LOAD_COMMIT_OUTCOME)
            .bind(idempotency_key)
            .fetch_all(&self.pool)
            .await?;
        let Some((fingerprint, aggregate_type, aggregate_id, ..)) = rows.first() else {
            return Ok(None);
        };
        if fingerprint != request_fingerprint || aggregate_type != A::TYPE {
            return Err(StoreError::IdempotencyKeyReused {
                key: idempotency_key.to_owned(),
            });
        }
        let aggregate_id = aggregate_id.clone();
        let events = rows
            .into_iter()
            .map(
                |(_, _, _, sequence, event_type, event_version, payload, metadata)| {
                    self.deserialize(
                        &aggregate_id,
                        sequence,
                        event_type,
                        event_version,
                        payload,
                        metadata,
                    )
                },
            )
            .collect::<Result<_, _>>()?;
        Ok(Some(CommitOutcome {
            aggregate_id,
            events,
        }))
    }

    async fn events_after(
        &self,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        let rows: Vec<(i64, String, String, Value, Value)> = sqlx::query_as(LOAD_EVENTS_AFTER)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(version as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(sequence, event_type, event_version, payload, metadata)| {
                self.deserialize(
                    aggregate_id,
                    sequence,
                    event_type,
                    event_version,
                    payload,
                    metadata,
                )
            })
            .collect()
    }

    /// Turns a stored row into an event of the current shape, upcasting older versions.
    fn deserialize(
        &self,
        aggregate_id: &str,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: Value,
        metadata: Value,
    ) -> Result<EventEnvelope<A>, StoreError> {
        let mut event = SerializedEvent::new(
            aggregate_id.to_owned(),
            sequence as usize,
            A::TYPE.to_owned(),
            event_type,
            event_version,
            payload,
            metadata,
        );
        for upcaster in self.upcasters.iter() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        Ok(EventEnvelope {
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            payload: serde_json::from_value(event.payload)?,
            metadata: serde_json::from_value(event.metadata)?,
        })
    }

    async fn append(
        &self,
        events: Vec<A::Event>,
        context: LoadedAggregate<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let new_events = events
            .iter()
            .map(|event| {
                Ok(NewEvent {
                    event_type: event.event_type(),
                    event_version: event.event_version(),
                    payload: serde_json::to_value(event)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let new_version = context.version + events.len() as u64;
        // The context's aggregate already has these events applied (cqrs-es's event sink applies
        // them during `handle`), so it is snapshotted as it is, never re-applied.
        let snapshot = self
            .crosses_snapshot_boundary(context.version, new_version)
            .then(|| serde_json::to_value(&context.aggregate))
            .transpose()?;
        let mut persisted_metadata = metadata.clone();
        let idempotency = persisted_metadata
            .remove(metadata::REQUEST_FINGERPRINT)
            .zip(metadata.get(metadata::IDEMPOTENCY_KEY).cloned())
            .map(|(fingerprint, key)| IdempotencyRecord { key, fingerprint });

        self.committer
            .commit(PendingCommit {
                aggregate_type: A::TYPE,
                aggregate_id: context.aggregate_id.clone(),
                expected_version: context.version,
                events: new_events,
                metadata: serde_json::to_value(&persisted_metadata)?,
                idempotency,
                snapshot,
                deadline: None,
            })
            .await?;

        Ok(events
            .into_iter()
            .zip(context.version + 1..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence: sequence as usize,
                payload,
                metadata: persisted_metadata.clone(),
            })
            .collect())
    }

    fn crosses_snapshot_boundary(&self, old_version: u64, new_version: u64) -> bool {
        self.snapshot_every > 0
            && new_version / self.snapshot_every > old_version / self.snapshot_every
    }
}

impl<A: Aggregate> EventStore<A> for AggregateStore<A> {
    type AC = LoadedAggregate<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        Ok(self.events_after(aggregate_id, 0).await?)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<LoadedAggregate<A>, AggregateError<A::Error>> {
        Ok(self.load(aggregate_id).await?)
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: LoadedAggregate<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        Ok(self.append(events, context, metadata).await?)
    }
}
