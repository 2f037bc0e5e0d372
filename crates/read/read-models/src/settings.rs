//! The settings keys of the read models, shared by the process that writes them (`projectors`)
//! and the ones that read or rebuild them (`dashboard`, `replay`), so one environment serves
//! every process.

use serde::Deserialize;
use service_kit::settings::DatabaseSettings;

use crate::{ActiveOrdersTables, ViewAlias};

/// Where the history view lives locally (its schema and database, without the pool): the
/// defaults every process that writes it (`projectors`), reads it (`command-api`, `dashboard`)
/// or rebuilds it (`replay`) starts from, as (dotted key, value) for
/// `LayeredSettings::default_values`. Each process sizes its own pool in its own defaults.
pub fn history_location_defaults() -> Vec<(&'static str, String)> {
    vec![
        ("history.schema", "history".into()),
        ("history.database.host", "127.0.0.1".into()),
        ("history.database.port", "5432".into()),
        ("history.database.name", "orderpipe_history".into()),
        ("history.database.username", "postgres".into()),
    ]
}

/// Where the analytics view lives locally, as [`history_location_defaults`] does for history.
/// Redshift speaks the PostgreSQL protocol on port 5439; locally a PostgreSQL database stands
/// in.
pub fn analytics_location_defaults() -> Vec<(&'static str, String)> {
    vec![
        ("analytics.schema", "analytics".into()),
        ("analytics.database.host", "127.0.0.1".into()),
        ("analytics.database.port", "5439".into()),
        ("analytics.database.name", "orderpipe_analytics".into()),
        ("analytics.database.username", "postgres".into()),
    ]
}

/// Where a PostgreSQL-protocol read model writes.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadModelDatabase {
    /// The database: a full `url`, or its parts as Secrets Manager hands them out
    /// (`ORDERPIPE_HISTORY__DATABASE__URL`, or `..._HOST`, `..._PASSWORD`, ...).
    pub database: DatabaseSettings,
    /// The schema the projection writes to (replay builds a fresh one and swaps it in).
    pub schema: String,
}

/// The active-orders view's DynamoDB tables (keys of the `dynamodb` section).
#[derive(Debug, Clone, Deserialize)]
pub struct ViewTables {
    /// The `active_orders` read model's order table.
    pub active_orders_table: String,
    /// The `active_orders` read model's per-store table.
    pub store_metrics_table: String,
    /// The views table (hash key `name`): the alias naming the live active-orders tables once
    /// replay has swapped a rebuilt view in, and replay's progress on DynamoDB targets.
    pub views_table: String,
}

impl ViewTables {
    /// The configured active-orders tables: the live view until a swap moves the alias.
    pub fn active_orders_tables(&self) -> ActiveOrdersTables {
        ActiveOrdersTables {
            orders: self.active_orders_table.clone(),
            stores: self.store_metrics_table.clone(),
        }
    }

    /// The alias naming the live active-orders tables.
    pub fn active_orders_alias(&self, client: aws_sdk_dynamodb::Client) -> ViewAlias {
        ViewAlias::new(client, &self.views_table, self.active_orders_tables())
    }
}
