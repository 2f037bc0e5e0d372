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
                    // 53300: too many connections.
                    .is_some_and(|code| {
                        code.starts_with("08") || code.starts_with("57P") || code == "53300"
                    })
            }
            StoreError::ShuttingDown => true,
            _ => false,
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
            error @ (StoreError::Database(_) | StoreError::ShuttingDown) => {
                AggregateError::DatabaseConnectionError(Box::new(error))
            }
            error => AggregateError::UnexpectedError(Box::new(error)),
        }
    }
}
