//! One group-commit batch's transaction, with every wait bounded and no broken connection ever
//! handed back to the pool.
//!
//! The transaction is managed by hand on a connection of its own rather than through sqlx's
//! `Transaction`: sqlx's `begin_with` returns a connection whose multi-statement `BEGIN` failed
//! half-way to the pool inside an aborted transaction (every later borrower gets 25P02), and a
//! statement cut off by a timeout leaves the connection mid-exchange. Here every error path ends
//! the transaction explicitly: `ROLLBACK` when PostgreSQL answered with an error (the connection
//! is in step), closing the connection when it did not answer (timeout, I/O error).

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, PgPool, Postgres};
use tokio::time::Instant;

use crate::error::StoreError;

/// How long a `ROLLBACK` after an error may take before the connection is closed instead.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(1);

/// The bounds PostgreSQL enforces on a batch, set with `SET LOCAL` in the same round trip as
/// `BEGIN`, so they cost nothing extra and hold whatever the connection's session settings are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerBounds {
    /// `lock_timeout`: the wait for the position counter (and any row lock).
    pub lock_timeout: Duration,
    /// `statement_timeout`: each statement, its lock waits included.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: how long the transaction may wait for its client
    /// (paused, partitioned) before PostgreSQL ends the session and frees the counter.
    pub idle_in_transaction_timeout: Duration,
}

impl ServerBounds {
    /// `BEGIN` and the bounds: one simple query, one round trip. The position counter is locked
    /// by the batch's `append_commits` call.
    pub fn begin_sql(&self) -> String {
        format!(
            "BEGIN; \
             SET LOCAL lock_timeout = {}; \
             SET LOCAL statement_timeout = {}; \
             SET LOCAL idle_in_transaction_session_timeout = {}",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis(),
        )
    }
}

/// An open batch transaction.
pub(crate) struct WriterTransaction {
    connection: PoolConnection<Postgres>,
    /// When the batch as a whole must be done; every step is bounded by it.
    deadline: Instant,
    /// True from `BEGIN` until `COMMIT` or `ROLLBACK` completed.
    open: bool,
}

impl WriterTransaction {
    /// Takes a connection and begins, both before `deadline`.
    pub async fn begin(
        pool: &PgPool,
        begin_sql: &str,
        deadline: Instant,
    ) -> Result<Self, StoreError> {
        let connection = match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Ok(connection) => connection?,
            Err(_) => return Err(StoreError::BatchTimedOut),
        };
        let mut transaction = Self {
            connection,
            deadline,
            open: true,
        };
        let begun = bounded(deadline, transaction.connection.execute(begin_sql)).await;
        match begun {
            Ok(_) => Ok(transaction),
            Err(error) => Err(transaction.abort(error).await),
        }
    }

    /// The transaction's connection, for the batch's statements; each is run through
    /// [`bounded`] with [`WriterTransaction::deadline`].
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// When the batch must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Ends the transaction after `error` and hands the error back: `ROLLBACK` when PostgreSQL
    /// answered (the connection is in step), else the connection is closed, never pooled.
    pub async fn abort(mut self, error: StoreError) -> StoreError {
        let answered = matches!(&error, StoreError::Database(e) if e.as_database_error().is_some());
        if answered {
            self.roll_back().await;
        }
        // Still open: dropping closes the connection (see `Drop`).
        error
    }

    /// Rolls back a transaction that wrote nothing worth keeping.
    pub async fn rollback(mut self) {
        self.roll_back().await;
    }

    async fn roll_back(&mut self) {
        let rollback =
            tokio::time::timeout(ROLLBACK_TIMEOUT, self.connection.execute("ROLLBACK")).await;
        if matches!(rollback, Ok(Ok(_))) {
            self.open = false;
        } else {
            tracing::warn!("a batch's ROLLBACK did not complete; closing its connection");
        }
    }

    /// Commits. An error PostgreSQL answered with means nothing was committed; no answer at all
    /// (timeout, lost connection) means the commit may or may not have happened:
    /// [`StoreError::OutcomeUnknown`].
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let committed = bounded(self.deadline, self.connection.execute("COMMIT")).await;
        match committed {
            Ok(_) => {
                self.open = false;
                Ok(())
            }
            // PostgreSQL refused the COMMIT and ended the transaction itself.
            Err(StoreError::Database(error)) if error.as_database_error().is_some() => {
                self.open = false;
                Err(StoreError::Database(error))
            }
            Err(error) => Err(StoreError::OutcomeUnknown(error.to_string())),
        }
    }
}

impl Drop for WriterTransaction {
    fn drop(&mut self) {
        if self.open {
            // Mid-exchange or inside a transaction we could not end: never reuse it. PostgreSQL
            // rolls the transaction back when the connection closes (or, if the network is gone,
            // when idle_in_transaction_session_timeout or its TCP keepalive ends the session).
            self.connection.close_on_drop();
        }
    }
}

/// `future` bounded by `deadline`; running out is [`StoreError::BatchTimedOut`].
pub(crate) async fn bounded<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout_at(deadline, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::BatchTimedOut),
    }
}
