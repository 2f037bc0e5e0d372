//! The read models. Each one implements [`Projection`](commit_log::projection::Projection) and
//! keeps its own idempotency marker next to the data it writes:
//!
//! | projection | store | marker, written atomically with the view change |
//! |---|---|---|
//! | [`ActiveOrdersProjection`] | DynamoDB: open orders, per-store metrics, stock warnings | `last_sequence` on the order item / the store's inventory item, checked by a condition expression |
//! | [`HistoryProjection`] | PostgreSQL (Aurora) schema | `applied_sequences` rows, in the same transaction as the rows |
//! | [`AnalyticsProjection`] | Redshift (a PostgreSQL database locally) schema | `applied_sequences` rows, in the same transaction as the staged loads |
//!
//! Targets (table names, schema names) are constructor parameters so that replay can build a
//! fresh target and swap it in. `docs/architecture.md` ("Read models") describes keys, queries,
//! schemas and the Redshift SQL subset. [`HistoryQueries`] is the history view's read side
//! (ListOrders, ListLoyaltyTransactions), read only. [`settings`] holds the settings keys the processes that
//! write, read or rebuild them share.

mod active_orders;
mod analytics;
pub mod analytics_sql;
pub mod bulk;
mod copy_binary;
mod history;
mod history_queries;
mod history_rows;
mod ledger;
mod order_changes;
mod page_token;
mod progress;
pub mod settings;

pub use active_orders::{
    ActiveOrdersProjection, ActiveOrdersTables, AliasError, DynamoDbCalls, DynamoDbUsage,
    InventoryMarker, LiveView, ViewAlias, ViewItem, BY_STATUS_INDEX, DYNAMODB_CALLS,
    DYNAMODB_CAPACITY_UNITS, OPEN_BY_STORE_INDEX, TOMBSTONE_TTL,
};
pub use analytics::{AnalyticsProjection, FLUSHES, STATEMENTS};

/// The tables of the active-orders view (each declared beside its code; listed here for the
/// manifest and the binaries' defaults).
pub fn resources() -> aws_support::resources::Resources {
    aws_support::resources::Resources {
        tables: vec![
            ActiveOrdersProjection::ORDERS_RESOURCE,
            ActiveOrdersProjection::STORES_RESOURCE,
            ViewAlias::RESOURCE,
        ],
        ..Default::default()
    }
}
pub use history::HistoryProjection;
pub use history_queries::{
    Freshness, HistoryQueries, LoyaltyEntryKind, LoyaltyEntryRow, LoyaltyQuery, OrderLineRow,
    OrderOwner, OrderQuery, OrderRow, Page, PageSize, QueryError, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
pub use page_token::{PageTokenError, MAX_TOKEN_CHARS as MAX_PAGE_TOKEN_CHARS};

use std::fmt;

/// Why a projection's target (tables, schema) could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A schema name that is not a plain lowercase SQL identifier.
    #[error("invalid schema name {0:?}: use 1 to 63 characters of a-z, 0-9 and _, not starting with a digit")]
    InvalidSchemaName(String),
    /// PostgreSQL / Redshift refused or failed.
    #[error("database error while creating the projection's schema: {0}")]
    Database(#[from] sqlx::Error),
    /// A history migration failed.
    #[error("history migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// DynamoDB refused or failed.
    #[error("DynamoDB error while creating table {table}: {source}")]
    DynamoDb {
        /// The table.
        table: String,
        /// The SDK's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<aws_support::tables::CreateTableError> for SetupError {
    fn from(error: aws_support::tables::CreateTableError) -> Self {
        SetupError::DynamoDb {
            table: error.table,
            source: error.source,
        }
    }
}

/// A validated PostgreSQL / Redshift schema name: the one identifier that reaches SQL text
/// (`CREATE SCHEMA` cannot take a parameter). Everything else selects it through
/// `set_config('search_path', $1, true)`, so the queries themselves stay constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaName(String);

impl SchemaName {
    /// Parses a schema name: 1 to 63 characters of `a-z 0-9 _`, not starting with a digit.
    pub fn parse(value: &str) -> Result<Self, SetupError> {
        let valid = (1..=63).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !value.starts_with(|c: char| c.is_ascii_digit());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(SetupError::InvalidSchemaName(value.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `CREATE SCHEMA IF NOT EXISTS "<name>"`: safe to format because the name was validated.
    fn create_statement(&self) -> String {
        format!(r#"CREATE SCHEMA IF NOT EXISTS "{}""#, self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Selects the projection's schema for the rest of the current transaction. Accepted by
/// PostgreSQL and Redshift alike.
use analytics_sql::SET_SEARCH_PATH;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(SchemaName::parse("history").is_ok());
        assert!(SchemaName::parse("analytics_replay_20250101").is_ok());
        for bad in [
            "",
            "History",
            "1st",
            "a-b",
            "x\"; DROP TABLE y; --",
            &"a".repeat(64),
        ] {
            assert!(SchemaName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
