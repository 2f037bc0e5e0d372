//! What one benchmark run works on: its own databases, stream, tables and queue, created fresh on
//! the already-running local stack (unique names, never the stack's own resources), so a run
//! never disturbs the pipeline of `scripts/up.sh` or another engineer's tests.

use aws_config::SdkConfig;
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{LeaseTable, ParkedStore};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables};
use test_support::{aws_test_config, fresh_database, unique_name, TestDatabase, TestStream};

/// Why the resources could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A variable the AWS SDK needs to stay on the emulators is missing.
    #[error("{0} is not set: source the stack's env file first (`source .stack/env`)")]
    MissingEnvironment(&'static str),
    /// An emulator refused to create something.
    #[error("cannot create {what}: {source}")]
    Create {
        /// The resource.
        what: String,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The variables without which the AWS SDK (ours, or a child process's) could look for cloud
/// credentials or reach past the emulators.
pub const REQUIRED_ENVIRONMENT: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
];

/// Fails unless every variable of [`REQUIRED_ENVIRONMENT`] is set.
pub fn check_environment() -> Result<(), ResourceError> {
    match REQUIRED_ENVIRONMENT
        .iter()
        .find(|name| std::env::var_os(name).is_none())
    {
        Some(missing) => Err(ResourceError::MissingEnvironment(missing)),
        None => Ok(()),
    }
}

/// A whole pipeline's worth of fresh resources.
pub struct PipelineResources {
    /// The event store's database.
    pub events_db: TestDatabase,
    /// The database of the history and analytics views.
    pub views_db: TestDatabase,
    /// SDK configuration for the emulators.
    pub sdk: SdkConfig,
    /// The Kinesis stream.
    pub stream: TestStream,
    /// The DynamoDB active-orders and store-metrics tables.
    pub active_orders: ActiveOrdersTables,
    /// The projectors' lease table.
    pub leases_table: String,
    /// The projectors' parked-commit table.
    pub parked_table: String,
    /// The projectors' dead-letter queue.
    pub dead_letter_queue_url: String,
}

impl PipelineResources {
    /// Creates every resource; the stream gets `shards` shards.
    pub async fn create(shards: i32) -> Result<Self, ResourceError> {
        check_environment()?;
        let sdk = aws_test_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let active_orders = ActiveOrdersTables {
            orders: unique_name("bench-active-orders"),
            stores: unique_name("bench-store-metrics"),
        };
        ActiveOrdersProjection::create_tables(&dynamodb, &active_orders)
            .await
            .map_err(|e| create_error("the active-orders tables", e))?;
        let leases_table = unique_name("bench-leases");
        LeaseTable::create_table(&dynamodb, &leases_table)
            .await
            .map_err(|e| create_error("the lease table", e))?;
        let parked_table = unique_name("bench-parked");
        ParkedStore::create_table(&dynamodb, &parked_table)
            .await
            .map_err(|e| create_error("the parked table", e))?;
        let dead_letter_queue_url =
            DeadLetterQueue::create_queue(&aws_sdk_sqs::Client::new(&sdk), &unique_name("bench"))
                .await
                .map_err(|e| create_error("the dead-letter queue", e))?;
        Ok(Self {
            events_db: fresh_database().await,
            views_db: fresh_database().await,
            stream: TestStream::create(shards).await,
            sdk,
            active_orders,
            leases_table,
            parked_table,
            dead_letter_queue_url,
        })
    }
}

impl PipelineResources {
    /// Deletes the run's tables, stream and queue (the databases stay, in PostgreSQL's own
    /// storage). The emulators keep everything in memory for their whole life: a run that left
    /// its ~100k items behind would slow every later run on the same stack. Best effort: a
    /// failure is reported, not fatal, since the figures are already measured.
    pub async fn remove(&self) {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.sdk);
        delete_tables(
            &dynamodb,
            &[
                &self.active_orders.orders,
                &self.active_orders.stores,
                &self.leases_table,
                &self.parked_table,
            ],
        )
        .await;
        if let Err(error) = self
            .stream
            .client
            .delete_stream()
            .stream_name(&self.stream.name)
            .send()
            .await
        {
            eprintln!("could not delete stream {}: {error}", self.stream.name);
        }
        if let Err(error) = aws_sdk_sqs::Client::new(&self.sdk)
            .delete_queue()
            .queue_url(&self.dead_letter_queue_url)
            .send()
            .await
        {
            eprintln!(
                "could not delete queue {}: {error}",
                self.dead_letter_queue_url
            );
        }
    }
}

/// Runs a `CHECKPOINT`, so that what a part of a run measures does not include flushing the
/// pages an earlier part (or an earlier run) left dirty. Best effort: `who` reports a failure
/// (a server role without the right to checkpoint, say) and the run goes on.
pub async fn checkpoint(pool: &sqlx::PgPool, who: &str) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("{who}: CHECKPOINT failed, so earlier writes may slow what follows: {error}");
    }
}

/// Deletes benchmark tables, best effort (see [`PipelineResources::remove`]).
pub async fn delete_tables(client: &aws_sdk_dynamodb::Client, tables: &[&str]) {
    for table in tables {
        if let Err(error) = client.delete_table().table_name(*table).send().await {
            eprintln!("could not delete table {table}: {error}");
        }
    }
}

/// A resource that could not be made, its cause kept.
pub fn create_error(
    what: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ResourceError {
    ResourceError::Create {
        what: what.to_owned(),
        source: Box::new(source),
    }
}
