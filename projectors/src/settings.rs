//! The `projectors` binary's settings: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_RUNTIME__BATCH_SIZE=500`).

use std::time::Duration;

use aws_support::AwsSettings;
use commit_log::projection::FlushPolicy;
use kinesis_consumer::settings::{default_worker_id, KinesisSettings};
use kinesis_consumer::WorkerConfig;
use read_models::settings::{ReadModelDatabase, ViewTables};
use read_models::InventoryMarker;
use serde::Deserialize;
pub use service_kit::settings::LayeredSettings;
use service_kit::settings::{AdminSettings, LogSettings, SettingsError};

/// Everything the projector worker and its operator commands read.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the AWS clients point (region, optional endpoint override).
    #[serde(default)]
    pub aws: AwsSettings,
    /// The log.
    pub kinesis: KinesisSettings,
    /// The runtime's tables and the active-orders view's.
    pub dynamodb: DynamoDbSettings,
    /// The dead-letter queue.
    pub sqs: SqsSettings,
    /// Leases, batches and retries.
    pub runtime: RuntimeSettings,
    /// The `history` read model's PostgreSQL (Aurora).
    pub history: ReadModelDatabase,
    /// The `analytics` read model's Redshift (PostgreSQL locally).
    pub analytics: ReadModelDatabase,
    /// How the `analytics` projection micro-batches its loads.
    pub analytics_flush: AnalyticsFlushSettings,
    /// The admin HTTP listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
}

/// The DynamoDB tables: the runtime's and the active-orders view's.
#[derive(Debug, Clone, Deserialize)]
pub struct DynamoDbSettings {
    /// Leases and checkpoints (partition key `lease_key`, a string).
    pub leases_table: String,
    /// Parked commits (partition key `parked_key` string, sort key `position` number).
    pub parked_table: String,
    /// The `active_orders` read model's order table.
    pub active_orders_table: String,
    /// The `active_orders` read model's per-store table.
    pub store_metrics_table: String,
    /// The views table: the alias naming the live active-orders tables.
    pub views_table: String,
    /// Where the active-orders view records how far each store inventory is applied: `item`
    /// (the marker item after every batch, what every build reads) or `sku_items` (the SKU
    /// items themselves, one write fewer per inventory and batch; only once every writer of the
    /// view runs this build or later).
    pub inventory_marker: InventoryMarker,
}

impl DynamoDbSettings {
    /// The active-orders view's tables, as every reader of the view takes them. (Listed here
    /// rather than `#[serde(flatten)]`ed in: the settings-keys walker sees only named fields.)
    pub fn views(&self) -> ViewTables {
        ViewTables {
            active_orders_table: self.active_orders_table.clone(),
            store_metrics_table: self.store_metrics_table.clone(),
            views_table: self.views_table.clone(),
        }
    }
}

/// The dead-letter queue.
#[derive(Debug, Clone, Deserialize)]
pub struct SqsSettings {
    /// Where poison records go; required by `run`.
    pub projector_dlq_url: Option<String>,
}

/// Leases, batches and retries.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeSettings {
    /// This worker's name in the lease table; unset: `<hostname>-<pid>`.
    pub worker_id: Option<String>,
    /// The projections to run, comma-separated; empty: every projection this build has.
    pub projections: String,
    /// A lease not renewed for this long may be taken by another worker.
    pub lease_duration_ms: u64,
    /// Most records per GetRecords call (1 to 10,000).
    pub batch_size: u32,
    /// Tries of a batch that keeps failing transiently before its first commit is poison.
    pub max_apply_attempts: u32,
    /// Least time between two GetRecords calls of this process on one shard, all its projections
    /// together (they share one reader per shard). At least 200 (Kinesis allows five calls per
    /// second per shard); the default 400 leaves the other half to the `flows` process.
    pub poll_interval_ms: u64,
    /// How often the shard list is read for new shards.
    pub shard_sync_interval_ms: u64,
}

/// The `analytics` projection's micro-batches: what a shard's consumer has read waits until
/// `max_commits` commits wait or the oldest has waited `interval_ms`, then one load (one
/// transaction of a bounded number of statements) applies it and the checkpoint follows.
/// Locally sub-second; in production seconds to minutes (the CDK app sets 60 s).
#[derive(Debug, Clone, Deserialize)]
pub struct AnalyticsFlushSettings {
    /// The longest a read commit waits for its load (plus up to one `runtime.poll_interval_ms`).
    pub interval_ms: u64,
    /// A load starts at once when this many commits wait (1 to 100,000).
    pub max_commits: usize,
}

impl AnalyticsFlushSettings {
    /// The runtime's flush policy.
    pub fn policy(&self) -> FlushPolicy {
        FlushPolicy {
            max_commits: self.max_commits,
            max_wait: Duration::from_millis(self.interval_ms),
        }
    }
}

/// Built-in defaults; the stream's and the tables' names and the views' databases come from
/// their declarations ([`LayeredSettings::default_values`]).
const DEFAULTS: &str = r#"
[dynamodb]
inventory_marker = "item"

[sqs]

[runtime]
projections = ""
lease_duration_ms = 10000
batch_size = 500
max_apply_attempts = 8
poll_interval_ms = 400
shard_sync_interval_ms = 60000

[history.database]
max_connections = 8
acquire_timeout_ms = 3000

[analytics.database]
max_connections = 4
acquire_timeout_ms = 3000

[analytics_flush]
interval_ms = 500
max_commits = 10000

[admin]
host = "127.0.0.1"
port = 9092

[log]
format = "json"
filter = "info"
"#;

impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// The names of the stream, the runtime's tables and the active-orders view's.
    /// The stream's and tables' names, and the history and analytics databases' locations.
    fn default_values() -> Vec<(&'static str, String)> {
        let mut values = kinesis_consumer::resources()
            .and(read_models::resources())
            .default_names();
        values.extend(read_models::settings::history_location_defaults());
        values.extend(read_models::settings::analytics_location_defaults());
        values
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let runtime = &self.runtime;
        if runtime.lease_duration_ms < 300 {
            return Err(rejected("runtime.lease_duration_ms must be at least 300"));
        }
        if !(1..=10_000).contains(&runtime.batch_size) {
            return Err(rejected("runtime.batch_size must be between 1 and 10000"));
        }
        if runtime.max_apply_attempts == 0 {
            return Err(rejected("runtime.max_apply_attempts must be at least 1"));
        }
        if !(1..=100_000).contains(&self.analytics_flush.max_commits) {
            return Err(rejected(
                "analytics_flush.max_commits must be between 1 and 100000",
            ));
        }
        if self.analytics_flush.interval_ms > 15 * 60 * 1000 {
            return Err(rejected(
                "analytics_flush.interval_ms must be at most 900000 (15 minutes)",
            ));
        }
        if runtime.poll_interval_ms < 200 {
            return Err(rejected(
                "runtime.poll_interval_ms must be at least 200 (5 GetRecords calls/s per shard)",
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// The projection names `runtime.projections` lists (empty: all).
    pub fn projection_names(&self) -> Vec<String> {
        self.runtime
            .projections
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The worker's configuration; needs `sqs.projector_dlq_url`.
    pub fn worker_config(&self) -> Result<WorkerConfig, SettingsError> {
        let dead_letter_queue_url = self
            .sqs
            .projector_dlq_url
            .clone()
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                rejected("sqs.projector_dlq_url (ORDERPIPE_SQS__PROJECTOR_DLQ_URL) is required")
            })?;
        Ok(WorkerConfig {
            worker_id: self
                .runtime
                .worker_id
                .clone()
                .unwrap_or_else(default_worker_id),
            stream_name: self.kinesis.stream_name.clone(),
            leases_table: self.dynamodb.leases_table.clone(),
            parked_table: self.dynamodb.parked_table.clone(),
            dead_letter_queue_url,
            lease_duration: Duration::from_millis(self.runtime.lease_duration_ms),
            batch_size: self.runtime.batch_size,
            max_apply_attempts: self.runtime.max_apply_attempts,
            poll_interval: Duration::from_millis(self.runtime.poll_interval_ms),
            shard_sync_interval: Duration::from_millis(self.runtime.shard_sync_interval_ms),
        })
    }
}

fn rejected(message: &str) -> SettingsError {
    SettingsError::Rejected(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_projection_lists_split() {
        let mut settings = Settings::built_in().expect("the defaults parse");
        assert!(settings.validate().is_ok());
        assert_eq!(settings.admin.port, 9092);
        assert_eq!(settings.dynamodb.views_table, "orderpipe-views");
        assert_eq!(settings.kinesis.stream_name, "orderpipe-events");
        assert_eq!(settings.dynamodb.leases_table, "orderpipe-projector-leases");
        assert!(settings.projection_names().is_empty());
        settings.runtime.projections = " history, analytics ,".into();
        assert_eq!(settings.projection_names(), ["history", "analytics"]);
        assert!(settings.worker_config().is_err(), "the DLQ URL is required");
        settings.sqs.projector_dlq_url = Some("http://127.0.0.1:4569/q".into());
        let config = settings.worker_config().expect("complete settings");
        assert!(config.worker_id.ends_with(&std::process::id().to_string()));
    }
}
