//! Exactly one active relay per deployment: the one holding a PostgreSQL session advisory lock.
//!
//! The lock lives on a connection of its own, outside the pool: a session lock belongs to the
//! session, and a pooled connection would hand it to whatever borrowed the connection next. When
//! the holder dies its session ends and PostgreSQL releases the lock, so a standby's next attempt
//! takes over. The holder checks its lock connection before every PutRecords call; a failed check
//! means the lock may be gone, and it stops publishing at once.
//!
//! TCP keepalives on the lock session let the server notice a holder that vanished without
//! closing its connection (a host lost, a network partition) in about 25 seconds instead of the
//! operating system's default of hours; until then the lock stays taken and nobody publishes.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// How long connecting or checking the lock connection may take before it counts as lost.
const LOCK_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// PostgreSQL failed or could not be reached.
    #[error("relay lock connection failed")]
    Database(#[from] sqlx::Error),
    /// PostgreSQL did not answer in time.
    #[error("relay lock connection did not answer within {LOCK_IO_TIMEOUT:?}")]
    TimedOut,
}

/// A relay that wants the lock; keeps its connection between attempts.
pub(crate) struct Candidate {
    options: PgConnectOptions,
    key: i64,
    connection: Option<PgConnection>,
}

impl Candidate {
    /// A candidate for lock `key` on the database of `options`.
    pub fn new(options: PgConnectOptions, key: i64) -> Self {
        let options = options.application_name("orderpipe-relay-lock").options([
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]);
        Self {
            options,
            key,
            connection: None,
        }
    }

    /// Tries once to take the lock: `Some` when this relay is now the active one, `None` when
    /// another session holds it.
    pub async fn try_lead(&mut self) -> Result<Option<Leadership>, LockError> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => within_timeout(PgConnection::connect_with(&self.options)).await?,
        };
        // On an error the connection is dropped: the next attempt starts with a fresh one.
        let taken: bool = within_timeout(
            sqlx::query_scalar(TRY_LOCK)
                .bind(self.key)
                .fetch_one(&mut connection),
        )
        .await?;
        if taken {
            Ok(Some(Leadership {
                connection,
                key: self.key,
            }))
        } else {
            self.connection = Some(connection);
            Ok(None)
        }
    }
}

/// The held lock: proof, while [`Leadership::check`] succeeds, that no other relay publishes.
pub(crate) struct Leadership {
    connection: PgConnection,
    key: i64,
}

impl Leadership {
    /// Confirms the lock session is alive, hence the lock still held (a session lock ends only
    /// with its session or an explicit unlock).
    pub async fn check(&mut self) -> Result<(), LockError> {
        within_timeout(self.connection.ping()).await
    }

    /// Gives the lock up at once, so a standby need not wait for the session to end.
    pub async fn release(mut self) {
        let unlocked = within_timeout(
            sqlx::query_scalar::<_, bool>(UNLOCK)
                .bind(self.key)
                .fetch_one(&mut self.connection),
        )
        .await;
        if let Err(error) = unlocked {
            // Closing the session below releases the lock anyway.
            tracing::warn!(error = %error, "could not release the relay lock explicitly");
        }
        let _ = within_timeout(self.connection.close()).await;
    }
}

async fn within_timeout<T>(
    operation: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, LockError> {
    match tokio::time::timeout(LOCK_IO_TIMEOUT, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LockError::TimedOut),
    }
}
