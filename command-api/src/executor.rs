//! Runs a command through cqrs-es's `CqrsFramework` exactly once per idempotency key, retrying
//! the whole load-handle-commit cycle when a concurrent command changed the aggregate first.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventEnvelope, Query};
use domain::DomainError;
use event_store::{metadata, AggregateStore, LoadedAggregate, RecordedEvent, StoreError};

use crate::call::Call;

/// Why a command did not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    /// A business rule refused it.
    #[error(transparent)]
    Domain(E),
    /// Concurrent commands kept changing the aggregate; the caller may retry.
    #[error("the aggregate kept changing under concurrent commands; retry")]
    Conflict,
    /// The idempotency key was already used for a different request.
    #[error("idempotency_key was already used for a different request")]
    KeyReused,
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not happen (a stored event that no longer deserialises).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A command's outcome: the events it committed, first time or replayed.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The aggregate it acted on.
    pub aggregate_id: String,
    /// The committed events, in order.
    pub events: Vec<EventEnvelope<A>>,
    /// True when this is the stored outcome of an earlier call with the same key.
    pub replayed: bool,
}

/// Executes commands of one aggregate type.
pub struct CommandExecutor<A: Aggregate> {
    cqrs: CqrsFramework<A, AggregateStore<A>>,
    store: AggregateStore<A>,
    committed: Arc<CommittedEvents<A>>,
    locks: Arc<AggregateLocks>,
    conflict_retries: u32,
}

impl<A> CommandExecutor<A>
where
    A: Aggregate + 'static,
    A::Command: Clone,
    A::Error: DomainError,
{
    /// An executor over `store`, sharing `locks` with the other executors of the process.
    pub fn new(
        store: AggregateStore<A>,
        services: A::Services,
        locks: Arc<AggregateLocks>,
        conflict_retries: u32,
    ) -> Self {
        let committed = Arc::new(CommittedEvents::default());
        let cqrs = CqrsFramework::new(
            store.clone(),
            vec![Box::new(CommittedEventsQuery(committed.clone()))],
            services,
        );
        Self {
            cqrs,
            store,
            committed,
            locks,
            conflict_retries,
        }
    }

    /// Loads an aggregate for a read.
    pub async fn load(&self, aggregate_id: &str) -> Result<LoadedAggregate<A>, StoreError> {
        self.store.load(aggregate_id).await
    }

    /// Decodes one event of this aggregate type read from the log, as its loads decode it
    /// (upcasters applied; an event this build does not read is refused, not guessed at).
    pub fn decode(&self, event: &RecordedEvent) -> Result<EventEnvelope<A>, StoreError> {
        self.store.decode(event)
    }

    /// Runs `command` against `aggregate_id` once for `call`'s idempotency key.
    pub async fn execute(
        &self,
        call: &Call,
        aggregate_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let started = Instant::now();
        let result = self.execute_once(call, aggregate_id, command).await;
        let outcome = match &result {
            Ok(executed) if executed.replayed => "replayed",
            Ok(_) => "committed",
            Err(ExecuteError::Domain(_)) => "refused",
            Err(ExecuteError::Conflict) => "conflict",
            Err(ExecuteError::KeyReused) => "key_reused",
            Err(ExecuteError::Store(_) | ExecuteError::Internal(_)) => "error",
        };
        let elapsed = started.elapsed();
        metrics::histogram!(
            "orderpipe_command_duration_seconds",
            "rpc" => call.rpc(),
            "outcome" => outcome
        )
        .record(elapsed);
        tracing::info!(
            rpc = call.rpc(),
            aggregate_id,
            outcome,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "command"
        );
        result
    }

    async fn execute_once(
        &self,
        call: &Call,
        aggregate_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        // Commands on one aggregate queue here instead of conflicting in the database; other
        // processes are still kept apart by the store's optimistic concurrency.
        let _turn = self.locks.lock(A::TYPE, aggregate_id).await;
        // The idempotency key is not looked up first: the commit refuses a used key (as a
        // conflict), and a command that already ran is usually refused by the state it left
        // behind, or changes nothing the second time (no events, so nothing reaches the
        // commit's check). Only in those cases is the stored outcome read, so a first call that
        // appends costs no extra query.
        // A conflict (or a refusal) on an aggregate this process had cached may mean another
        // process moved it on since: reloading is the cache's normal price, not contention, so
        // it is retried at once and does not count against `conflict_retries`.
        let mut stale_cache_retry = self.store.is_cached(aggregate_id);
        let mut attempt = 0;
        loop {
            let result = self
                .cqrs
                .execute_with_metadata(aggregate_id, command.clone(), call.metadata())
                .await;
            match result {
                Ok(()) => {
                    let events = self.committed.take(call.idempotency_key());
                    if events.is_empty() {
                        if let Some(executed) = self.stored_outcome(call).await? {
                            return Ok(executed);
                        }
                        // "Nothing to do" decided on a cached aggregate is as unproven as a
                        // refusal (no commit checked its version): decided again on the store.
                        if std::mem::take(&mut stale_cache_retry) {
                            tracing::debug!(
                                aggregate_id,
                                "no change on a cached aggregate; reloading"
                            );
                            continue;
                        }
                    }
                    return Ok(Executed {
                        aggregate_id: aggregate_id.to_owned(),
                        events,
                        replayed: false,
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    if let Some(executed) = self.stored_outcome(call).await? {
                        return Ok(executed);
                    }
                    if std::mem::take(&mut stale_cache_retry) {
                        tracing::debug!(aggregate_id, "cached aggregate was stale; reloading");
                        continue;
                    }
                    if attempt == self.conflict_retries {
                        return Err(ExecuteError::Conflict);
                    }
                    tracing::debug!(attempt, aggregate_id, "conflict; reloading");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(AggregateError::UserError(error)) => {
                    if let Some(executed) = self.stored_outcome(call).await? {
                        return Ok(executed);
                    }
                    // A refusal never reaches the commit's version check, so a cached
                    // aggregate that another process moved on since would refuse what the
                    // stored state allows (stock restocked, a payment captured elsewhere).
                    // The load took the entry out of the cache: deciding again reads the
                    // store, once.
                    if std::mem::take(&mut stale_cache_retry) {
                        tracing::debug!(aggregate_id, "refused on a cached aggregate; reloading");
                        continue;
                    }
                    return Err(ExecuteError::Domain(error));
                }
                // A stored event this build does not read arrives as unexpected: kept as the
                // store's error, so the caller hears it is retryable (on a newer build).
                Err(
                    AggregateError::DatabaseConnectionError(error)
                    | AggregateError::UnexpectedError(error),
                ) => {
                    return Err(match error.downcast::<StoreError>() {
                        Ok(store_error) => ExecuteError::Store(*store_error),
                        Err(other) => ExecuteError::Internal(other.to_string()),
                    })
                }
                Err(other) => return Err(ExecuteError::Internal(other.to_string())),
            }
        }
    }

    async fn stored_outcome(
        &self,
        call: &Call,
    ) -> Result<Option<Executed<A>>, ExecuteError<A::Error>> {
        match self
            .store
            .commit_outcome(call.idempotency_key(), call.fingerprint())
            .await
        {
            Ok(outcome) => Ok(outcome.map(|outcome| Executed {
                aggregate_id: outcome.aggregate_id,
                events: outcome.events,
                replayed: true,
            })),
            Err(StoreError::IdempotencyKeyReused { .. }) => Err(ExecuteError::KeyReused),
            Err(other) => Err(other.into()),
        }
    }
}

/// A short, growing, jittered pause so retrying writers in different processes fall apart.
fn backoff(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let base = 2u64.saturating_pow(attempt.min(6));
    // A randomly seeded hasher is a cheap source of jitter without another dependency.
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % base;
    Duration::from_millis(base + jitter)
}

/// The events each successful command committed, handed from cqrs-es's query dispatch (which
/// runs inside `execute_with_metadata`, right after the commit) to the executor that ran it,
/// keyed by the command's idempotency key. Saves reading the outcome back from the database.
struct CommittedEvents<A: Aggregate> {
    by_key: Mutex<HashMap<String, Vec<EventEnvelope<A>>>>,
}

impl<A: Aggregate> Default for CommittedEvents<A> {
    fn default() -> Self {
        Self {
            by_key: Mutex::new(HashMap::new()),
        }
    }
}

impl<A: Aggregate> CommittedEvents<A> {
    fn take(&self, key: &str) -> Vec<EventEnvelope<A>> {
        self.by_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key)
            .unwrap_or_default()
    }
}

struct CommittedEventsQuery<A: Aggregate>(Arc<CommittedEvents<A>>);

#[async_trait]
impl<A: Aggregate> Query<A> for CommittedEventsQuery<A> {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<A>]) {
        let Some(key) = events
            .first()
            .and_then(|event| event.metadata.get(metadata::IDEMPOTENCY_KEY))
        else {
            return;
        };
        self.0
            .by_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), events.to_vec());
    }
}

/// Striped per-aggregate locks: commands on the same aggregate take turns inside one process.
/// A fixed number of stripes keeps memory flat however many aggregates there are; two
/// aggregates sharing a stripe only wait for each other.
pub struct AggregateLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl AggregateLocks {
    /// `stripes` independent locks.
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1))
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    async fn lock(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (aggregate_type, aggregate_id).hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}
