use std::sync::Arc;

use cqrs_es::AggregateError;

/// What can go wrong in the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another commit changed the aggregate since it was loaded; reload and handle again.
    #[error("the aggregate was changed by a concurrent command")]
    Conflict,
    /// The idempotency key was used before for a different request.
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused {
        /// The reused key.
        key: String,
    },
    /// PostgreSQL failed or could not be reached. Shared because one failed group-commit
    /// transaction fails every command in it.
    #[error("event store database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// Applying the schema migrations failed.
    #[error("event store migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An event, snapshot or metadata could not be (de)serialised.
    #[error("event store serialisation error")]
    Serialization(#[from] serde_json::Error),
    /// The group-commit task is gone (the store is shutting down).
    #[error("the event store is shutting down")]
    ShuttingDown,
    /// The commit's batch did not finish within the writer's batch timeout (PostgreSQL stopped
    /// answering, or the position counter stayed locked). Nothing was committed: `COMMIT` was
    /// never sent.
    #[error("the event store did not answer within the batch timeout; nothing was committed")]
    BatchTimedOut,
    /// `COMMIT` was sent but no answer came back (timeout, lost connection): the commit may or
    /// may not be durable. A retry with the same idempotency key finds out.
    #[error("the commit's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// The caller's deadline passed before the commit was written; it was not written, and
    /// never will be.
    #[error("the caller's deadline passed before the commit was written; nothing was committed")]
    DeadlinePassed,
    /// A stored event this build does not read: a type it does not know or a newer version than
    /// it writes (a newer writer during a rolling deploy; BRIEF §5: the aggregate stops there
    /// rather than be read wrongly), or a payload that is not the event it names. A build that
    /// knows the event reads it.
    #[error("{0}")]
    EventNotUnderstood(Box<EventNotUnderstood>),
}

/// Which stored event a build does not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{aggregate_type} {aggregate_id} event {sequence} ({event_type} v{event_version}) is not \
     understood by this build: {detail}"
)]
pub struct EventNotUnderstood {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence: the aggregate is read up to the one before.
    pub sequence: i64,
    /// The stored event type.
    pub event_type: String,
    /// The stored (or upcast) event version.
    pub event_version: String,
    /// Why it is not read.
    pub detail: String,
}

impl StoreError {
    /// Whether trying the same operation again later may succeed (the database was unreachable,
    /// a connection dropped, the pool timed out), as opposed to a fault in the request or data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(error) => {
                matches!(
                    **error,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || error
                    .as_database_error()
                    .and_then(|db| db.code())
                    // Class 08: connection exception; 57P01..03: admin shutdown, crash, cannot connect now;
                    // 53300: too many connections; 55P03: lock_timeout; 57014: statement_timeout
                    // (or a cancel); 25P03: idle_in_transaction_session_timeout; 40001, 40P01:
                    // serialization failure, deadlock.
                    .is_some_and(|code| {
                        code.starts_with("08")
                            || code.starts_with("57P")
                            || matches!(
                                &*code,
                                "53300" | "55P03" | "57014" | "25P03" | "40001" | "40P01"
                            )
                    })
            }
            StoreError::ShuttingDown
            | StoreError::BatchTimedOut
            | StoreError::OutcomeUnknown(_)
            | StoreError::DeadlinePassed => true,
            _ => false,
        }
    }

    /// The same failure again, for each commit of a batch that failed as a whole.
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Conflict => StoreError::Conflict,
            StoreError::IdempotencyKeyReused { key } => {
                StoreError::IdempotencyKeyReused { key: key.clone() }
            }
            StoreError::Database(error) => StoreError::Database(error.clone()),
            StoreError::BatchTimedOut => StoreError::BatchTimedOut,
            StoreError::OutcomeUnknown(reason) => StoreError::OutcomeUnknown(reason.clone()),
            StoreError::DeadlinePassed => StoreError::DeadlinePassed,
            // Not produced by a batch: no source to share, so reported as what a batch without
            // its writer is.
            StoreError::Migration(_)
            | StoreError::Serialization(_)
            | StoreError::EventNotUnderstood(_)
            | StoreError::ShuttingDown => StoreError::ShuttingDown,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(Arc::new(error))
    }
}

impl<E: std::error::Error> From<StoreError> for AggregateError<E> {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => AggregateError::AggregateConflict,
            StoreError::Serialization(error) => {
                AggregateError::DeserializationError(Box::new(error))
            }
            error @ (StoreError::Database(_)
            | StoreError::ShuttingDown
            | StoreError::BatchTimedOut
            | StoreError::OutcomeUnknown(_)
            | StoreError::DeadlinePassed) => {
                AggregateError::DatabaseConnectionError(Box::new(error))
            }
            error => AggregateError::UnexpectedError(Box::new(error)),
        }
    }
}
