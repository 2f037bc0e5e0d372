//! One group-commit batch's transaction, with every wait bounded and no broken connection ever
//! used again.
//!
//! The writer holds a connection of its own across batches ([`WriterConnection`]), outside the
//! pool: a pool checkout pings the connection first (sqlx's `test_before_acquire`), a round trip
//! per batch. What the ping was for, finding a connection that died while idle (a failover, a
//! server restart), is done by `BEGIN` itself: when it fails because the connection is gone,
//! nothing has been written, and it is tried once more on a fresh connection within the same
//! batch deadline.
//!
//! The transaction is managed by hand rather than through sqlx's `Transaction`: sqlx's
//! `begin_with` leaves a connection whose multi-statement `BEGIN` failed half-way inside an
//! aborted transaction (every later statement gets 25P02), and a statement cut off by a timeout
//! leaves the connection mid-exchange. Here every error path ends the transaction explicitly:
//! `ROLLBACK` when PostgreSQL answered with an error (the connection is in step), dropping the
//! connection when it did not answer (timeout, I/O error); the next batch connects afresh.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor, PgConnection, PgPool};
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

/// The writer's own connection, connected on first use and again after it was dropped.
pub(crate) struct WriterConnection {
    /// The pool's options: the same server, credentials and session settings.
    options: Arc<PgConnectOptions>,
    connection: Option<PgConnection>,
}

impl WriterConnection {
    /// A connection to the pool's database; nothing is connected until the first batch.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            options: pool.connect_options(),
            connection: None,
        }
    }

    /// Runs `begin_sql`, connecting first if there is no connection. On an error the
    /// transaction is ended (see [`WriterConnection::end_after`]).
    async fn begin_once(&mut self, begin_sql: &str, deadline: Instant) -> Result<(), StoreError> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => bounded(deadline, self.options.connect()).await?,
        };
        let connection = self.connection.insert(connection);
        match bounded(deadline, connection.execute(begin_sql)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.end_after(error).await),
        }
    }

    /// Ends the transaction after `error` and hands the error back: `ROLLBACK` when PostgreSQL
    /// answered (the connection is in step), else the connection is dropped, never reused.
    async fn end_after(&mut self, error: StoreError) -> StoreError {
        let answered = matches!(&error, StoreError::Database(e) if e.as_database_error().is_some());
        if !answered || !self.roll_back().await {
            self.connection = None;
        }
        error
    }

    /// Whether `ROLLBACK` completed in time.
    async fn roll_back(&mut self) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        let rollback = tokio::time::timeout(ROLLBACK_TIMEOUT, connection.execute("ROLLBACK")).await;
        let done = matches!(rollback, Ok(Ok(_)));
        if !done {
            tracing::warn!("a batch's ROLLBACK did not complete; dropping its connection");
        }
        done
    }
}

/// An open batch transaction on the writer's connection.
pub(crate) struct WriterTransaction<'c> {
    /// Holds a connection for as long as the transaction exists.
    connection: &'c mut WriterConnection,
    /// When the batch as a whole must be done; every step is bounded by it.
    deadline: Instant,
    /// True from `BEGIN` until `COMMIT` or `ROLLBACK` completed.
    open: bool,
}

impl<'c> WriterTransaction<'c> {
    /// Begins on the writer's connection before `deadline`. A held connection found dead by
    /// `BEGIN` (dropped by the error, no timeout yet) is replaced and `BEGIN` tried once more:
    /// nothing was written, and a failover must not fail the commits of the first batch after.
    pub async fn begin(
        connection: &'c mut WriterConnection,
        begin_sql: &str,
        deadline: Instant,
    ) -> Result<Self, StoreError> {
        let held = connection.connection.is_some();
        if let Err(error) = connection.begin_once(begin_sql, deadline).await {
            let connection_lost =
                connection.connection.is_none() && !matches!(error, StoreError::BatchTimedOut);
            if !(held && connection_lost) {
                return Err(error);
            }
            tracing::info!(error = %error, "the writer's connection was gone; reconnecting");
            connection.begin_once(begin_sql, deadline).await?;
        }
        Ok(Self {
            connection,
            deadline,
            open: true,
        })
    }

    /// The transaction's connection, for the batch's statements; each is run through
    /// [`bounded`] with [`WriterTransaction::deadline`].
    pub fn connection(&mut self) -> &mut PgConnection {
        self.connection
            .connection
            .as_mut()
            .expect("a transaction holds its connection until it ends")
    }

    /// When the batch must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Ends the transaction after `error` and hands the error back: `ROLLBACK` when PostgreSQL
    /// answered (the connection is in step), else the connection is dropped.
    pub async fn abort(mut self, error: StoreError) -> StoreError {
        self.open = false;
        self.connection.end_after(error).await
    }

    /// Rolls back a transaction that wrote nothing worth keeping.
    pub async fn rollback(mut self) {
        self.open = !self.connection.roll_back().await;
    }

    /// Commits. An error PostgreSQL answered with means nothing was committed; no answer at all
    /// (timeout, lost connection) means the commit may or may not have happened:
    /// [`StoreError::OutcomeUnknown`].
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let deadline = self.deadline;
        let committed = bounded(deadline, self.connection().execute("COMMIT")).await;
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

impl Drop for WriterTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // Mid-exchange or inside a transaction we could not end: never reuse it. PostgreSQL
            // rolls the transaction back when the connection closes (or, if the network is gone,
            // when idle_in_transaction_session_timeout or its TCP keepalive ends the session).
            self.connection.connection = None;
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
