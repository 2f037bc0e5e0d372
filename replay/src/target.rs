//! The read models replay builds, and their target schemas.

use std::str::FromStr;

use commit_log::projection::Projection;
use read_models::{AnalyticsProjection, HistoryProjection, SchemaName};
use sqlx::PgPool;

use crate::error::ReplayError;

use read_models::analytics_sql::replay::{drop_schema as drop_schema_sql, SCHEMA_EXISTS};

/// A projection replay can rebuild, by the kind of target it builds into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// A PostgreSQL-protocol schema.
    Schema(ReadModel),
    /// The DynamoDB active-orders tables, swapped in through the view alias.
    ActiveOrders,
}

impl FromStr for ViewKind {
    type Err = ReplayError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "active_orders" => Ok(ViewKind::ActiveOrders),
            other => other.parse().map(ViewKind::Schema),
        }
    }
}

/// A read model replay builds into a PostgreSQL-protocol schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadModel {
    /// The order history (`HistoryProjection`).
    History,
    /// The analytics facts and dimensions (`AnalyticsProjection`).
    Analytics,
}

impl FromStr for ReadModel {
    type Err = ReplayError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "history" => Ok(ReadModel::History),
            "analytics" => Ok(ReadModel::Analytics),
            other => Err(ReplayError::UnknownProjection(other.to_owned())),
        }
    }
}

impl ReadModel {
    /// The projection's name, as `Projection::name` reports it.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::History => "history",
            ReadModel::Analytics => "analytics",
        }
    }

    /// The aggregate types the projection reads (the `tracked` lists of
    /// `crates/read/read-models/src/{history,analytics}.rs`); events of other types change
    /// nothing in the view.
    pub fn aggregate_types(self) -> &'static [&'static str] {
        match self {
            ReadModel::History => &["order", "inventory", "loyalty"],
            ReadModel::Analytics => &["order", "inventory", "loyalty", "menu"],
        }
    }

    /// The tables holding one aggregate's rows and the column naming the aggregate in each,
    /// parents first (the `aggregate_type`s of the projections' SQL, in
    /// `crates/read/read-models/migrations/history` and `crates/read/read-models/sql/analytics`).
    /// Analytics dimensions are shared by all aggregates and belong to none; the menu has only
    /// dimensions.
    pub fn aggregate_rows(self, aggregate_type: &str) -> &'static [(&'static str, &'static str)] {
        match (self, aggregate_type) {
            (ReadModel::History, "order") => &[
                ("orders", "order_id"),
                ("order_items", "order_id"),
                ("order_status_changes", "order_id"),
            ],
            (ReadModel::History, "loyalty") => &[("loyalty_ledger", "customer_id")],
            (ReadModel::History, "inventory") => &[("stock_movements", "store_id")],
            (ReadModel::Analytics, "order") => &[
                ("fact_orders", "order_id"),
                ("fact_order_items", "order_id"),
            ],
            (ReadModel::Analytics, "loyalty") => &[("fact_loyalty", "customer_id")],
            (ReadModel::Analytics, "inventory") => &[("fact_stock_movements", "store_id")],
            _ => &[],
        }
    }

    /// Creates `schema` with the read model's tables (idempotent).
    pub async fn create_schema(
        self,
        pool: &PgPool,
        schema: &SchemaName,
    ) -> Result<(), ReplayError> {
        match self {
            ReadModel::History => HistoryProjection::create_schema(pool, schema).await?,
            ReadModel::Analytics => AnalyticsProjection::create_schema(pool, schema).await?,
        }
        Ok(())
    }

    /// The projection writing into `schema`.
    pub fn projection(self, pool: PgPool, schema: SchemaName) -> Box<dyn Projection> {
        match self {
            ReadModel::History => Box::new(HistoryProjection::new(pool, schema)),
            ReadModel::Analytics => Box::new(AnalyticsProjection::new(pool, schema)),
        }
    }
}

/// True when `schema` exists in the database.
pub async fn schema_exists(pool: &PgPool, schema: &SchemaName) -> Result<bool, ReplayError> {
    Ok(sqlx::query_scalar(SCHEMA_EXISTS)
        .bind(schema.as_str())
        .fetch_one(pool)
        .await?)
}

/// Drops `schema` and everything in it (a scratch target), if it exists.
pub async fn drop_schema(pool: &PgPool, schema: &SchemaName) -> Result<(), ReplayError> {
    sqlx::query(&drop_schema_sql(schema)).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_others_are_refused_clearly() {
        assert_eq!(
            "history".parse::<ReadModel>().ok(),
            Some(ReadModel::History)
        );
        assert_eq!(
            "analytics".parse::<ReadModel>().ok(),
            Some(ReadModel::Analytics)
        );
        assert_eq!(
            "active_orders".parse::<ViewKind>().ok(),
            Some(ViewKind::ActiveOrders)
        );
        assert_eq!(
            "history".parse::<ViewKind>().ok(),
            Some(ViewKind::Schema(ReadModel::History))
        );
        assert!(matches!(
            "orders".parse::<ReadModel>(),
            Err(ReplayError::UnknownProjection(_))
        ));
    }
}
