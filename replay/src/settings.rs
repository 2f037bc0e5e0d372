//! The `replay` binary's settings: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables: the same names as the command API's
//! (`database`, the event store) and the projectors' (`history`, `analytics`, `dynamodb`,
//! `aws`).

pub use aws_support::AwsSettings;
pub use kinesis_consumer::settings::KinesisSettings;
pub use read_models::settings::{ReadModelDatabase, ViewTables};
use serde::Deserialize;
pub use service_kit::settings::{DatabaseSettings, LayeredSettings, SettingsError};

use crate::target::ReadModel;

/// Everything `replay` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The event store's PostgreSQL.
    pub database: DatabaseSettings,
    /// The `history` read model's database and live schema.
    pub history: ReadModelDatabase,
    /// The `analytics` read model's database and live schema.
    pub analytics: ReadModelDatabase,
    /// The `active_orders` read model's configured tables and the views table holding its
    /// alias (only those keys are read; the runtime's are the projectors').
    pub dynamodb: ViewTables,
    /// The stream `--from-stream` reads.
    pub kinesis: KinesisSettings,
    /// Where the DynamoDB client points (region, optional endpoint override).
    #[serde(default)]
    pub aws: AwsSettings,
    /// Batching.
    pub replay: ReplaySettings,
}

/// How a rebuild batches.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplaySettings {
    /// Commits per `apply` call and per progress record (1 to 10,000).
    pub batch_commits: usize,
    /// Writer connections of a history or analytics rebuild into a fresh schema, which is then
    /// written as a bulk load (`COPY`, see `replay rebuild --help`); 0 builds it through the
    /// live path instead (0 to 16). Redshift accepts no `COPY FROM STDIN`: set 0 for it.
    pub bulk_writers: usize,
}

/// Built-in defaults; the stream's and the view's table names and the views' databases come
/// from their declarations ([`LayeredSettings::default_values`]).
const DEFAULTS: &str = r#"
[database]
host = "127.0.0.1"
port = 5432
name = "orderpipe"
username = "postgres"
max_connections = 2
acquire_timeout_ms = 3000

[history.database]
max_connections = 2
acquire_timeout_ms = 3000

[analytics.database]
max_connections = 2
acquire_timeout_ms = 3000

[replay]
batch_commits = 500
bulk_writers = 2
"#;

impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// The names of the stream `--from-stream` reads and of the active-orders view's tables.
    /// The stream's and tables' names, and the history and analytics databases' locations.
    fn default_values() -> Vec<(&'static str, String)> {
        let mut values = aws_support::resources::Resources {
            streams: vec![kinesis_consumer::settings::EVENT_STREAM],
            ..Default::default()
        }
        .and(read_models::resources())
        .default_names();
        values.extend(read_models::settings::history_location_defaults());
        values.extend(read_models::settings::analytics_location_defaults());
        values
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=10_000).contains(&self.replay.batch_commits) {
            return Err(SettingsError::Rejected(
                "replay.batch_commits must be between 1 and 10000".into(),
            ));
        }
        if self.replay.bulk_writers > 16 {
            return Err(SettingsError::Rejected(
                "replay.bulk_writers must be between 0 and 16".into(),
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// Where `model` lives.
    pub fn read_model(&self, model: ReadModel) -> &ReadModelDatabase {
        match model {
            ReadModel::History => &self.history,
            ReadModel::Analytics => &self.analytics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let settings = Settings::built_in().expect("the defaults parse");
        settings.validate().expect("the defaults are valid");
        assert_eq!(settings.kinesis.stream_name, "orderpipe-events");
        assert_eq!(settings.dynamodb.views_table, "orderpipe-views");
        assert_eq!(settings.replay.batch_commits, 500);
        assert_eq!(
            settings.read_model(ReadModel::Analytics).schema,
            "analytics"
        );
    }
}
