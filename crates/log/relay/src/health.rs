//! What `/health` reports: unhealthy while PostgreSQL is unreachable, while the last PutRecords
//! call failed as a whole, or while a commit cannot be published at all. Refused records
//! (throttling) are the normal give and take with Kinesis and leave the relay healthy.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use service_kit::admin::{DatabaseHealth, HealthCheck};
use sqlx::PgPool;

/// The relay's own problems, set and cleared by the publishing loop.
#[derive(Debug, Default)]
pub(crate) struct RelayStatus {
    put_failure: Mutex<Option<String>>,
    unpublishable: Mutex<Option<String>>,
}

impl RelayStatus {
    /// Records the outcome of the latest PutRecords call: `Some(reason)` when it failed whole.
    pub fn set_put_failure(&self, failure: Option<String>) {
        *self
            .put_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = failure;
    }

    /// Records what the latest round found it can never publish, if anything.
    pub fn set_unpublishable(&self, problem: Option<String>) {
        *self
            .unpublishable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = problem;
    }

    fn problem(&self) -> Option<String> {
        let put_failure = self
            .put_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        put_failure.or_else(|| {
            self.unpublishable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

/// The relay's [`HealthCheck`]: the database first, then the relay's own status.
pub(crate) struct RelayHealth {
    database: DatabaseHealth,
    status: Arc<RelayStatus>,
}

impl RelayHealth {
    /// Checks the database through `pool`, then `status`.
    pub fn new(pool: PgPool, status: Arc<RelayStatus>) -> Self {
        Self {
            database: DatabaseHealth(pool),
            status,
        }
    }
}

impl HealthCheck for RelayHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.database.check().await?;
            match self.status.problem() {
                Some(problem) => Err(problem),
                None => Ok(()),
            }
        })
    }
}
