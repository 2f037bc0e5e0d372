//! Order history in PostgreSQL (Aurora in AWS): orders, their items and status timeline, the
//! loyalty ledger and stock movements, in one schema of the projection's own.
//!
//! One `apply` is one transaction: it locks the batch's `applied_sequences` rows, decides per
//! commit (skip / apply / gap), writes every table with one set-based statement each (rows go
//! in as one JSON array per table) and advances `applied_sequences` before committing. Every
//! table's primary key is the event's identity, so even two workers racing on one aggregate
//! cannot both insert: the loser fails, retries and skips.

use async_trait::async_trait;
use commit_log::LoggedCommit;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::ledger::ChangeBatch;
use super::order_changes::{serialize_optional_time, serialize_time, OrderChanges};
use super::progress::{database_failure, gather, Applied, INVENTORY, LOYALTY, ORDER};
use super::{SchemaName, SetupError, SET_SEARCH_PATH};
use commit_log::projection::{Projection, ProjectionError};

/// The history schema's migrations (`crates/read/read-models/migrations/history/`), run inside
/// the target schema (their bookkeeping table `_sqlx_migrations` lives there too).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/history");

/// Selects the schema for the rest of the session (the migration connection is closed after).
const SET_SESSION_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, false)";

/// The batch's markers, locked so that a second worker on the same aggregates waits.
const LOCK_APPLIED: &str = "\
SELECT a.aggregate_type, a.aggregate_id, a.last_sequence
FROM applied_sequences a
JOIN UNNEST($1::text[], $2::text[]) AS k (aggregate_type, aggregate_id)
  ON a.aggregate_type = k.aggregate_type AND a.aggregate_id = k.aggregate_id
ORDER BY a.aggregate_type, a.aggregate_id
FOR UPDATE OF a";

const UPSERT_APPLIED: &str = "\
INSERT INTO applied_sequences (aggregate_type, aggregate_id, last_sequence)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence";

const INSERT_ORDERS: &str = "\
INSERT INTO orders (order_id, store_id, customer_id, status, note, total_cents, placed_at,
    accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined,
    preparing_at, ready_at, ended_at, end_reason, refund_due)
SELECT order_id, store_id, customer_id, status, note, total_cents, placed_at,
    accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined,
    preparing_at, ready_at, ended_at, end_reason, refund_due
FROM jsonb_to_recordset($1) AS r (order_id uuid, store_id text, customer_id text, status text,
    note text, total_cents bigint, placed_at timestamptz, accepted_at timestamptz,
    payment_captured_at timestamptz, payment_id text, captured_cents bigint,
    payment_declined boolean, preparing_at timestamptz, ready_at timestamptz,
    ended_at timestamptz, end_reason text, refund_due boolean)";

/// Later events of orders placed in an earlier batch: only what the batch says changes.
const UPDATE_ORDERS: &str = "\
UPDATE orders AS o SET
    status = COALESCE(r.status, o.status),
    accepted_at = COALESCE(r.accepted_at, o.accepted_at),
    payment_captured_at = COALESCE(r.payment_captured_at, o.payment_captured_at),
    payment_id = COALESCE(r.payment_id, o.payment_id),
    captured_cents = COALESCE(r.captured_cents, o.captured_cents),
    payment_declined = o.payment_declined OR r.payment_declined,
    preparing_at = COALESCE(r.preparing_at, o.preparing_at),
    ready_at = COALESCE(r.ready_at, o.ready_at),
    ended_at = COALESCE(r.ended_at, o.ended_at),
    end_reason = COALESCE(r.end_reason, o.end_reason),
    refund_due = COALESCE(r.refund_due, o.refund_due)
FROM jsonb_to_recordset($1) AS r (order_id uuid, store_id text, customer_id text, status text,
    note text, total_cents bigint, placed_at timestamptz, accepted_at timestamptz,
    payment_captured_at timestamptz, payment_id text, captured_cents bigint,
    payment_declined boolean, preparing_at timestamptz, ready_at timestamptz,
    ended_at timestamptz, end_reason text, refund_due boolean)
WHERE o.order_id = r.order_id";

const INSERT_ORDER_ITEMS: &str = "\
INSERT INTO order_items (order_id, line_no, sku, name, quantity, customisations,
    unit_price_cents, line_total_cents)
SELECT order_id, line_no, sku, name, quantity, customisations, unit_price_cents, line_total_cents
FROM jsonb_to_recordset($1) AS r (order_id uuid, line_no integer, sku text, name text,
    quantity integer, customisations text[], unit_price_cents bigint, line_total_cents bigint)";

const INSERT_STATUS_CHANGES: &str = "\
INSERT INTO order_status_changes (order_id, sequence, event_type, status, changed_at, detail)
SELECT order_id, sequence, event_type, status, changed_at, detail
FROM jsonb_to_recordset($1) AS r (order_id uuid, sequence bigint, event_type text, status text,
    changed_at timestamptz, detail text)";

const INSERT_LOYALTY: &str = "\
INSERT INTO loyalty_ledger (customer_id, sequence, entry_type, points, order_id, amount_cents,
    tier, reference, recorded_at)
SELECT customer_id, sequence, entry_type, points, order_id, amount_cents, tier, reference,
    recorded_at
FROM jsonb_to_recordset($1) AS r (customer_id text, sequence bigint, entry_type text,
    points bigint, order_id uuid, amount_cents bigint, tier text, reference text,
    recorded_at timestamptz)";

const INSERT_STOCK_MOVEMENTS: &str = "\
INSERT INTO stock_movements (store_id, sequence, line_no, sku, movement, quantity, order_id,
    reason, recorded_at)
SELECT store_id, sequence, line_no, sku, movement, quantity, order_id, reason, recorded_at
FROM jsonb_to_recordset($1) AS r (store_id text, sequence bigint, line_no integer, sku text,
    movement text, quantity bigint, order_id uuid, reason text, recorded_at timestamptz)";

/// The history projection (name `history`).
#[derive(Debug, Clone)]
pub struct HistoryProjection {
    pool: PgPool,
    schema: SchemaName,
}

impl HistoryProjection {
    /// A projection writing to `schema` through `pool` (settings `history.database`).
    pub fn new(pool: PgPool, schema: SchemaName) -> Self {
        Self { pool, schema }
    }

    /// Creates `schema` if needed and runs the history migrations in it. Safe to run at every
    /// start and from several processes (the migrator takes an advisory lock).
    pub async fn create_schema(pool: &PgPool, schema: &SchemaName) -> Result<(), SetupError> {
        // A connection of its own: the session's search_path must not leak into the pool.
        let mut connection = pool.acquire().await?.detach();
        sqlx::query(&schema.create_statement())
            .execute(&mut connection)
            .await?;
        sqlx::query(SET_SESSION_SEARCH_PATH)
            .bind(schema.as_str())
            .execute(&mut connection)
            .await?;
        MIGRATOR.run(&mut connection).await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for HistoryProjection {
    fn name(&self) -> &'static str {
        "history"
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let mut tx = self.pool.begin().await.map_err(database_failure)?;
        sqlx::query(SET_SEARCH_PATH)
            .bind(self.schema.as_str())
            .execute(&mut *tx)
            .await
            .map_err(database_failure)?;
        let mut applied = lock_applied(&mut tx, commits).await?;
        let mut batch = ChangeBatch::default();
        let stopped = gather(
            commits,
            &[ORDER, INVENTORY, LOYALTY],
            &mut applied,
            |commit, before| batch.add(commit, before).map(drop),
        );
        write(&batch, &mut tx).await.map_err(database_failure)?;
        write_applied(&mut tx, &applied)
            .await
            .map_err(database_failure)?;
        tx.commit().await.map_err(database_failure)?;
        stopped.map_or(Ok(()), Err)
    }
}

async fn lock_applied(
    tx: &mut Transaction<'_, Postgres>,
    commits: &[LoggedCommit],
) -> Result<Applied, ProjectionError> {
    let (types, ids): (Vec<&str>, Vec<&str>) = commits
        .iter()
        .map(|c| (c.aggregate_type.as_str(), c.aggregate_id.as_str()))
        .unzip();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(LOCK_APPLIED)
        .bind(types)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(database_failure)?;
    Ok(rows
        .into_iter()
        .map(|(kind, id, sequence)| ((kind, id), (sequence as u64, false)))
        .collect())
}

async fn write_applied(
    tx: &mut Transaction<'_, Postgres>,
    applied: &Applied,
) -> Result<(), sqlx::Error> {
    let changed: Vec<_> = applied
        .iter()
        .filter(|(_, (_, changed))| *changed)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let types: Vec<&str> = changed.iter().map(|((kind, _), _)| kind.as_str()).collect();
    let ids: Vec<&str> = changed.iter().map(|((_, id), _)| id.as_str()).collect();
    let sequences: Vec<i64> = changed.iter().map(|(_, (seq, _))| *seq as i64).collect();
    sqlx::query(UPSERT_APPLIED)
        .bind(types)
        .bind(ids)
        .bind(sequences)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An order row; identity fields are empty for orders placed in an earlier batch.
#[derive(Debug, Serialize)]
struct OrderRow {
    order_id: String,
    store_id: Option<String>,
    customer_id: Option<String>,
    status: Option<&'static str>,
    note: Option<String>,
    total_cents: Option<i64>,
    #[serde(serialize_with = "serialize_optional_time")]
    placed_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "serialize_optional_time")]
    accepted_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "serialize_optional_time")]
    payment_captured_at: Option<OffsetDateTime>,
    payment_id: Option<String>,
    captured_cents: Option<i64>,
    payment_declined: bool,
    #[serde(serialize_with = "serialize_optional_time")]
    preparing_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "serialize_optional_time")]
    ready_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "serialize_optional_time")]
    ended_at: Option<OffsetDateTime>,
    end_reason: Option<String>,
    refund_due: Option<bool>,
}

impl OrderRow {
    fn of(order_id: &str, changes: &OrderChanges) -> OrderRow {
        let placed = changes.placed.as_ref();
        OrderRow {
            order_id: order_id.to_owned(),
            store_id: placed.map(|p| p.store_id.clone()),
            customer_id: placed.map(|p| p.customer_id.clone()),
            status: changes.status.map(|s| s.as_str()),
            note: placed.map(|p| p.note.clone()),
            total_cents: placed.map(|p| p.total_cents),
            placed_at: placed.map(|p| p.placed_at),
            accepted_at: changes.accepted_at,
            payment_captured_at: changes.payment_captured_at,
            payment_id: changes.payment_id.clone(),
            captured_cents: changes.captured_cents,
            payment_declined: changes.payment_declined,
            preparing_at: changes.preparing_at,
            ready_at: changes.ready_at,
            ended_at: changes.ended_at,
            end_reason: changes.end_reason.clone(),
            refund_due: changes.refund_due,
        }
    }
}

#[derive(Debug, Serialize)]
struct OrderItemRow {
    order_id: String,
    line_no: i32,
    sku: String,
    name: String,
    quantity: i32,
    customisations: Vec<String>,
    unit_price_cents: i64,
    line_total_cents: i64,
}

#[derive(Debug, Serialize)]
struct StatusChangeRow {
    order_id: String,
    sequence: i64,
    event_type: &'static str,
    status: Option<&'static str>,
    #[serde(serialize_with = "serialize_time")]
    changed_at: OffsetDateTime,
    detail: Option<String>,
}

/// Writes what one `apply` gathered.
async fn write(batch: &ChangeBatch, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    let mut placed = Vec::new();
    let mut updated = Vec::new();
    let mut items = Vec::new();
    let mut timeline = Vec::new();
    for (order_id, changes) in &batch.orders {
        let row = OrderRow::of(order_id, changes);
        if let Some(order) = &changes.placed {
            placed.push(row);
            items.extend(order.lines.iter().enumerate().map(|(line_no, line)| {
                OrderItemRow {
                    order_id: order_id.clone(),
                    line_no: line_no as i32,
                    sku: line.sku.to_string(),
                    name: line.name.to_string(),
                    quantity: line.quantity.get() as i32,
                    customisations: line
                        .customisations
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    unit_price_cents: line.unit_price.cents(),
                    line_total_cents: line.line_total.cents(),
                }
            }));
        } else {
            updated.push(row);
        }
        timeline.extend(changes.timeline.iter().map(|entry| StatusChangeRow {
            order_id: order_id.clone(),
            sequence: entry.sequence as i64,
            event_type: entry.event,
            status: entry.status.map(|s| s.as_str()),
            changed_at: entry.at,
            detail: entry.detail.clone(),
        }));
    }
    // Parents first: items and timeline rows reference their order.
    insert(tx, INSERT_ORDERS, &placed).await?;
    insert(tx, UPDATE_ORDERS, &updated).await?;
    insert(tx, INSERT_ORDER_ITEMS, &items).await?;
    insert(tx, INSERT_STATUS_CHANGES, &timeline).await?;
    insert(tx, INSERT_LOYALTY, &batch.loyalty).await?;
    insert(tx, INSERT_STOCK_MOVEMENTS, &batch.stock).await
}

/// Runs `statement` with `rows` as its JSON array parameter, unless there are none.
async fn insert<T: Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    statement: &str,
    rows: &[T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(statement)
        .bind(Json(rows))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
