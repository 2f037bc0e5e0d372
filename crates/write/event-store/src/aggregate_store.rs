//! cqrs-es's `EventStore` for one aggregate type, implemented directly on PostgreSQL.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_es::persist::{EventUpcaster, SemanticVersion, SerializedEvent};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};
use serde_json::Value;
use sqlx::PgPool;

use crate::aggregate_cache::{AggregateCache, CachedAggregate};
use crate::committer::{GroupCommitter, IdempotencyRecord, NewEvent, PendingCommit, Snapshot};
use crate::error::{EventNotUnderstood, StoreError};
use crate::metadata;
use crate::reader::RecordedEvent;

/// The latest snapshot (first row, `is_snapshot`) and the events after it, in one round trip.
/// A snapshot of another schema version than `$3` is still returned (so it can be reported) but
/// every event is read, as it will be ignored.
const LOAD_AGGREGATE: &str = "\
WITH snapshot AS (
    SELECT version, schema_version, payload FROM snapshots
    WHERE aggregate_type = $1 AND aggregate_id = $2
)
SELECT TRUE AS is_snapshot, version AS sequence, schema_version, NULL::text AS event_type,
       NULL::text AS event_version, payload, NULL::jsonb AS metadata
FROM snapshot
UNION ALL
SELECT FALSE, sequence, NULL::integer, event_type, event_version, payload, metadata FROM events
WHERE aggregate_type = $1 AND aggregate_id = $2
  AND sequence > COALESCE((SELECT version FROM snapshot WHERE schema_version = $3), 0)
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

/// The snapshot schema version of a store that was not given one
/// ([`AggregateStore::with_snapshot_version`]).
pub const DEFAULT_SNAPSHOT_VERSION: u32 = 1;

/// Why a stored snapshot was not used.
enum IgnoredSnapshot {
    /// Written with another schema version (an older build, or before a fix to `apply`).
    SchemaVersion(i32),
    /// Its payload no longer decodes as the aggregate.
    Undecodable(serde_json::Error),
}

/// An aggregate as loaded for a command: its state and the version (number of events) it has.
#[derive(Debug)]
pub struct LoadedAggregate<A> {
    aggregate_id: String,
    aggregate: A,
    version: u64,
    /// Its stored snapshot was ignored (an older schema version, or undecodable): the next
    /// commit replaces it instead of waiting for a snapshot boundary.
    snapshot_stale: bool,
    /// Taken from the process's aggregate cache rather than read from the database.
    from_cache: bool,
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

    /// Whether it came from the aggregate cache ([`AggregateStore::with_cache`]) instead of the
    /// database.
    pub fn from_cache(&self) -> bool {
        self.from_cache
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
    snapshot_version: u32,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    /// Shared by every clone; `None` without [`AggregateStore::with_cache`].
    cache: Option<Arc<AggregateCache<A>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for AggregateStore<A> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            committer: self.committer.clone(),
            snapshot_every: self.snapshot_every,
            snapshot_version: self.snapshot_version,
            upcasters: self.upcasters.clone(),
            cache: self.cache.clone(),
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
            snapshot_version: DEFAULT_SNAPSHOT_VERSION,
            upcasters: Arc::new(upcasters),
            cache: None,
            aggregate: PhantomData,
        }
    }

    /// The same store, trusting only snapshots of schema version `version` and writing its
    /// snapshots with it. An aggregate type declares its version next to its state (e.g.
    /// `Order::SNAPSHOT_VERSION`) and bumps it whenever the serialised state or `apply` changes,
    /// so a snapshot an older build wrote is replayed instead of trusted. Without this call the
    /// version is [`DEFAULT_SNAPSHOT_VERSION`].
    pub fn with_snapshot_version(mut self, version: u32) -> Self {
        self.snapshot_version = version;
        self
    }

    /// The same store, keeping up to `capacity` aggregates in memory as this process's commits
    /// left them, so a command on a recently used aggregate reads nothing (see
    /// [`EventStore::load_aggregate`]); 0 keeps none. Safe with several processes on one
    /// database: a command decided on an entry another process has since moved past is refused
    /// by the commit's version check ([`StoreError::Conflict`], with
    /// [`LoadedAggregate::from_cache`] set) and its next load reads the database.
    /// [`AggregateStore::load`] always reads the database.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(AggregateCache::new(capacity)));
        self
    }

    /// Whether the aggregate cache holds `aggregate_id` (a command's load would not read it).
    pub fn is_cached(&self, aggregate_id: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains(aggregate_id))
    }

    /// The cached aggregate if there is one (taken out: see [`crate::aggregate_cache`]), else
    /// [`AggregateStore::load`].
    async fn load_for_command(&self, aggregate_id: &str) -> Result<LoadedAggregate<A>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.load(aggregate_id).await;
        };
        match cache.take(aggregate_id) {
            Some(cached) => {
                cache_outcome::<A>("hit");
                Ok(LoadedAggregate {
                    aggregate_id: aggregate_id.to_owned(),
                    aggregate: cached.aggregate,
                    version: cached.version,
                    snapshot_stale: cached.snapshot_stale,
                    from_cache: true,
                })
            }
            None => {
                cache_outcome::<A>("miss");
                self.load(aggregate_id).await
            }
        }
    }

    /// Puts a command's aggregate back once its outcome is known to be stored.
    fn keep(&self, context: LoadedAggregate<A>, version: u64, snapshot_stale: bool) {
        if let Some(cache) = &self.cache {
            cache.put(
                context.aggregate_id,
                CachedAggregate {
                    aggregate: context.aggregate,
                    version,
                    snapshot_stale,
                },
            );
        }
    }

    /// Loads an aggregate from its latest snapshot plus the events after it. A snapshot of
    /// another schema version, or one that no longer decodes, is ignored (logged and counted in
    /// `orderpipe_store_snapshots_ignored_total`) and the aggregate is rebuilt from its events.
    pub async fn load(&self, aggregate_id: &str) -> Result<LoadedAggregate<A>, StoreError> {
        type Row = (
            bool,
            i64,
            Option<i32>,
            Option<String>,
            Option<String>,
            Value,
            Option<Value>,
        );
        let rows: Vec<Row> = sqlx::query_as(LOAD_AGGREGATE)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(self.snapshot_version as i32)
            .fetch_all(&self.pool)
            .await?;
        let mut loaded = LoadedAggregate {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            version: 0,
            snapshot_stale: false,
            from_cache: false,
        };
        for (is_snapshot, sequence, schema_version, event_type, event_version, payload, metadata) in
            rows
        {
            if is_snapshot {
                let schema_version = schema_version.unwrap_or_default();
                if schema_version != self.snapshot_version as i32 {
                    // The query read every event for this case.
                    self.ignore_snapshot(
                        aggregate_id,
                        sequence,
                        IgnoredSnapshot::SchemaVersion(schema_version),
                    );
                    // An older snapshot is replaced by the next commit. A newer one (a later
                    // build during a rolling deploy) is left to the build that wrote it, so
                    // the two do not overwrite each other's snapshot at every commit.
                    loaded.snapshot_stale = schema_version < self.snapshot_version as i32;
                    continue;
                }
                match serde_json::from_value(payload) {
                    Ok(aggregate) => loaded.aggregate = aggregate,
                    Err(error) => {
                        self.ignore_snapshot(
                            aggregate_id,
                            sequence,
                            IgnoredSnapshot::Undecodable(error),
                        );
                        // The rows hold only the events after the snapshot: read them all.
                        return self.replay(aggregate_id).await;
                    }
                }
            } else {
                let envelope = self.deserialize(
                    aggregate_id,
                    sequence,
                    event_type.unwrap_or_default(),
                    event_version.unwrap_or_default(),
                    payload,
                    metadata.unwrap_or_default(),
                )?;
                loaded.aggregate.apply(envelope.payload);
            }
            loaded.version = sequence as u64;
        }
        Ok(loaded)
    }

    /// Rebuilds an aggregate from all its events, for a snapshot that could not be used.
    async fn replay(&self, aggregate_id: &str) -> Result<LoadedAggregate<A>, StoreError> {
        let mut loaded = LoadedAggregate {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            version: 0,
            snapshot_stale: true,
            from_cache: false,
        };
        for envelope in self.events_after(aggregate_id, 0).await? {
            loaded.version = envelope.sequence as u64;
            loaded.aggregate.apply(envelope.payload);
        }
        Ok(loaded)
    }

    fn ignore_snapshot(&self, aggregate_id: &str, snapshot_at: i64, why: IgnoredSnapshot) {
        let reason = match &why {
            IgnoredSnapshot::SchemaVersion(_) => "schema_version",
            IgnoredSnapshot::Undecodable(_) => "undecodable",
        };
        metrics::counter!(
            "orderpipe_store_snapshots_ignored_total",
            "aggregate_type" => A::TYPE,
            "reason" => reason
        )
        .increment(1);
        match why {
            IgnoredSnapshot::SchemaVersion(found) => tracing::info!(
                aggregate_type = A::TYPE,
                aggregate_id,
                snapshot_at,
                found,
                expected = self.snapshot_version,
                "snapshot of another schema version ignored; replaying the events"
            ),
            IgnoredSnapshot::Undecodable(error) => tracing::warn!(
                aggregate_type = A::TYPE,
                aggregate_id,
                snapshot_at,
                %error,
                "snapshot does not decode; ignored, replaying the events"
            ),
        }
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

    /// Decodes one event read from the log ([`crate::PgEventStore::read_aggregate_after`], the
    /// commit feed) exactly as a load decodes it: upcast, then read as this build's event, so
    /// a reader of the log sees what a command sees, and stops where a command would stop
    /// ([`StoreError::EventNotUnderstood`]). `event` is one of this store's aggregate type.
    pub fn decode(&self, event: &RecordedEvent) -> Result<EventEnvelope<A>, StoreError> {
        self.deserialize(
            &event.aggregate_id,
            event.sequence,
            event.event_type.clone(),
            event.event_version.clone(),
            event.payload.clone(),
            event.metadata.clone(),
        )
    }

    /// Turns a stored row into an event of the current shape, upcasting older versions. An
    /// event this build does not read (an unknown type, a newer version than it writes: a
    /// newer writer during a rolling deploy) is [`StoreError::EventNotUnderstood`], never read
    /// as something else: parsing a newer version as the older shape would drop what it added.
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
        let not_understood = |detail: String| {
            StoreError::EventNotUnderstood(Box::new(EventNotUnderstood {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                detail,
            }))
        };
        let payload: A::Event = serde_json::from_value(event.payload.clone()).map_err(|error| {
            not_understood(format!("it is not an event this build reads: {error}"))
        })?;
        if payload.event_type() != event.event_type {
            return Err(not_understood(format!(
                "its payload is a {}",
                payload.event_type()
            )));
        }
        let written = payload.event_version();
        if is_newer(&event.event_version, &written) {
            return Err(not_understood(format!(
                "this build reads it up to v{written}"
            )));
        }
        Ok(EventEnvelope {
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            payload,
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
            // Nothing changed: the aggregate is as current as it was when loaded, unless it came
            // from the cache, which only a commit's version check proves current; that one is
            // dropped, so the next load reads the store.
            if !context.from_cache {
                let (version, snapshot_stale) = (context.version, context.snapshot_stale);
                self.keep(context, version, snapshot_stale);
            }
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
        // A snapshot that was ignored on load is replaced now rather than at the next boundary,
        // so the aggregate is replayed in full only until its next commit.
        let take_snapshot = self.crosses_snapshot_boundary(context.version, new_version)
            || (self.snapshot_every > 0 && context.snapshot_stale);
        let snapshot = take_snapshot
            .then(|| serde_json::to_value(&context.aggregate))
            .transpose()?
            .map(|payload| Snapshot {
                schema_version: self.snapshot_version,
                payload,
            });
        let mut persisted_metadata = metadata.clone();
        let idempotency = persisted_metadata
            .remove(metadata::REQUEST_FINGERPRINT)
            .zip(metadata.get(metadata::IDEMPOTENCY_KEY).cloned())
            .map(|(fingerprint, key)| IdempotencyRecord { key, fingerprint });

        let snapshot_stale = context.snapshot_stale && snapshot.is_none();
        let committed = self
            .committer
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
            .await;
        if let Err(error) = committed {
            // The context is dropped: whatever the failure, the next load reads the database.
            if context.from_cache && matches!(error, StoreError::Conflict) {
                cache_outcome::<A>("stale");
            }
            return Err(error);
        }

        let first_sequence = context.version + 1;
        let envelopes = events
            .into_iter()
            .zip(first_sequence..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence: sequence as usize,
                payload,
                metadata: persisted_metadata.clone(),
            })
            .collect();
        self.keep(context, new_version, snapshot_stale);
        Ok(envelopes)
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

    /// The cached aggregate when [`AggregateStore::with_cache`] holds it, else
    /// [`AggregateStore::load`].
    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<LoadedAggregate<A>, AggregateError<A::Error>> {
        Ok(self.load_for_command(aggregate_id).await?)
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

/// Whether a stored `event_version` is newer than the one this build writes. A stored version
/// that is no version at all was written by no build of ours: it counts as newer, so it is not
/// read.
fn is_newer(stored: &str, written: &str) -> bool {
    match (
        stored.parse::<SemanticVersion>(),
        written.parse::<SemanticVersion>(),
    ) {
        (Ok(stored), Ok(written)) => stored.supersedes(&written),
        (Err(_), _) => true,
        (Ok(_), Err(_)) => false,
    }
}

/// Counts a cache lookup (`hit`, `miss`) or a cached aggregate the commit found stale.
fn cache_outcome<A: Aggregate>(outcome: &'static str) {
    metrics::counter!(
        "orderpipe_store_aggregate_cache_total",
        "aggregate_type" => A::TYPE,
        "outcome" => outcome
    )
    .increment(1);
}
