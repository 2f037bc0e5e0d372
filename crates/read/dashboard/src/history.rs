//! One order's history, from the PostgreSQL history read model (`projectors`' `history`
//! schema): the order, its lines and every event of its timeline. The schema is selected per
//! transaction with `set_config('search_path', ...)`, as the projection does, so the queries stay
//! constants and a swapped-in schema (replay) is followed by name.

use read_models::SchemaName;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Selects the history schema for the current transaction only.
const SET_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, true)";

/// Times as fixed-width UTC RFC 3339 text, the form the DynamoDB view uses too.
const ORDER: &str = "\
SELECT store_id, customer_id, status, note, total_cents,
       to_char(placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS placed_at,
       payment_id, end_reason
FROM orders WHERE order_id = $1";

const ITEMS: &str = "\
SELECT sku, name, quantity, customisations, line_total_cents
FROM order_items WHERE order_id = $1 ORDER BY line_no";

const TIMELINE: &str = "\
SELECT sequence, event_type, status,
       to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS changed_at,
       detail
FROM order_status_changes WHERE order_id = $1 ORDER BY sequence";

/// An order as the history holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrderHistory {
    /// The order.
    #[sqlx(skip)]
    pub order_id: String,
    /// Its store.
    pub store_id: String,
    /// Its customer.
    pub customer_id: String,
    /// Its status now.
    pub status: String,
    /// The customer's note (empty: none).
    pub note: String,
    /// Its total, in cents.
    pub total_cents: i64,
    /// When it was placed.
    pub placed_at: String,
    /// The captured payment's id.
    pub payment_id: Option<String>,
    /// Why it was rejected or cancelled.
    pub end_reason: Option<String>,
    /// Its lines.
    #[sqlx(skip)]
    pub items: Vec<HistoryLine>,
    /// Every event, in order.
    #[sqlx(skip)]
    pub timeline: Vec<HistoryEntry>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HistoryLine {
    /// The menu item.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// How many.
    pub quantity: i32,
    /// Customisations.
    pub customisations: Vec<String>,
    /// The line's price, in cents.
    pub line_total_cents: i64,
}

/// One event of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    /// The event's sequence in the order.
    pub sequence: i64,
    /// Its type (`order_placed`, ...).
    pub event_type: String,
    /// The status it led to (none for payment events).
    pub status: Option<String>,
    /// When.
    pub changed_at: String,
    /// A reason or a payment id.
    pub detail: Option<String>,
}

/// The history read model, read-only.
#[derive(Debug, Clone)]
pub struct OrderHistoryReader {
    pool: PgPool,
    schema: SchemaName,
}

impl OrderHistoryReader {
    /// A reader of `schema` through `pool`.
    pub fn new(pool: PgPool, schema: SchemaName) -> Self {
        Self { pool, schema }
    }

    /// The pool (for health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-only transaction on the history schema: what it reads is one consistent picture.
    pub(crate) async fn read_only(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *transaction)
            .await?;
        sqlx::query(SET_SEARCH_PATH)
            .bind(self.schema.as_str())
            .execute(&mut *transaction)
            .await?;
        Ok(transaction)
    }

    /// The order's history; `None` when the history has no such order.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderHistory>, sqlx::Error> {
        let mut transaction = self.read_only().await?;
        let Some(mut order) = sqlx::query_as::<_, OrderHistory>(ORDER)
            .bind(order_id)
            .fetch_optional(&mut *transaction)
            .await?
        else {
            return Ok(None);
        };
        order.order_id = order_id.to_string();
        order.items = sqlx::query_as(ITEMS)
            .bind(order_id)
            .fetch_all(&mut *transaction)
            .await?;
        order.timeline = sqlx::query_as(TIMELINE)
            .bind(order_id)
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(Some(order))
    }
}
