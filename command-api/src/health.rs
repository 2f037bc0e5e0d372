//! What `/health` checks for the command API: the database answers, and the event store's
//! writer gets its batches through. A writer stalled behind another process that holds the
//! position counter (or a database that stopped answering mid-batch) leaves `SELECT 1` working,
//! so the database check alone would stay green while every command fails.

use std::future::Future;
use std::pin::Pin;

use event_store::PgEventStore;
use service_kit::admin::{DatabaseHealth, HealthCheck};

/// The command API's health: [`DatabaseHealth`] and the writer's own report.
pub struct CommandApiHealth {
    database: DatabaseHealth,
    store: PgEventStore,
}

impl CommandApiHealth {
    /// Health of the process writing to `store`.
    pub fn new(store: PgEventStore) -> Self {
        Self {
            database: DatabaseHealth(store.pool().clone()),
            store,
        }
    }
}

impl HealthCheck for CommandApiHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.store.writer_health()?;
            self.database.check().await
        })
    }
}
