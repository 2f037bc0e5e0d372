//! Order history in PostgreSQL (Aurora in AWS): orders, their items and status timeline, the
//! loyalty ledger and stock movements, in one schema of the projection's own.
//!
//! One `apply` is one transaction of two statements: it locks the batch's `applied_sequences`
//! rows, decides per commit (skip / apply / gap), then writes every table and advances
//! `applied_sequences` with one statement ([`WRITE_BATCH`]): each table's rows go in as typed
//! arrays, one per column, unnested server-side (no JSON to parse), each table in one
//! data-modifying `WITH` part. Every table's primary key is the event's identity, so even two
//! workers racing on one aggregate cannot both insert: the loser fails, retries and skips.
//! The same statement moves `view_progress` to the newest commit applied, which the history
//! queries report as the view's freshness.

use async_trait::async_trait;
use commit_log::LoggedCommit;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::history_rows::{item_rows, order_row, timeline_rows};
use super::ledger::ChangeBatch;
use super::order_changes::OrderChanges;
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

/// Everything one batch writes, markers included, in one statement. Each `WITH` part takes its
/// table's columns as arrays of one element per row; order rows carry `placed` (a new order:
/// inserted; else only what the batch says changes is updated). An order item's customisations
/// are a slice (`first`, `count`, 1-based) of one flat array, as SQL arrays cannot nest rows of
/// different lengths. All parts see the same snapshot, and the items' and timeline's foreign
/// keys are checked at the end of the statement, after the orders are in.
const WRITE_BATCH: &str = "\
WITH order_rows AS (
    SELECT * FROM UNNEST($1::boolean[], $2::text[]::uuid[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
        $11::text[], $12::bigint[], $13::boolean[], $14::timestamptz[], $15::timestamptz[],
        $16::timestamptz[], $17::text[], $18::boolean[])
        AS r (placed, order_id, store_id, customer_id, status, note, total_cents, placed_at,
            accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined,
            preparing_at, ready_at, ended_at, end_reason, refund_due)
), placed AS (
    INSERT INTO orders (order_id, store_id, customer_id, status, note, total_cents, placed_at,
        accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined,
        preparing_at, ready_at, ended_at, end_reason, refund_due)
    SELECT order_id, store_id, customer_id, status, note, total_cents, placed_at,
        accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined,
        preparing_at, ready_at, ended_at, end_reason, refund_due
    FROM order_rows WHERE placed
), updated AS (
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
    FROM order_rows AS r
    WHERE NOT r.placed AND o.order_id = r.order_id
), items AS (
    INSERT INTO order_items (order_id, line_no, sku, name, quantity, customisations,
        unit_price_cents, line_total_cents)
    SELECT order_id, line_no, sku, name, quantity,
        COALESCE(($27::text[])[first : first + count - 1], '{}'), unit_price_cents,
        line_total_cents
    FROM UNNEST($19::text[]::uuid[], $20::integer[], $21::text[], $22::text[], $23::integer[],
        $24::integer[], $25::integer[], $26::bigint[], $28::bigint[])
        AS r (order_id, line_no, sku, name, quantity, first, count, unit_price_cents,
            line_total_cents)
), timeline AS (
    INSERT INTO order_status_changes (order_id, sequence, event_type, status, changed_at, detail,
        actor)
    SELECT * FROM UNNEST($29::text[]::uuid[], $30::bigint[], $31::text[], $32::text[],
        $33::timestamptz[], $34::text[], $58::text[])
), loyalty AS (
    INSERT INTO loyalty_ledger (customer_id, sequence, entry_type, points, order_id,
        amount_cents, tier, reference, recorded_at)
    SELECT * FROM UNNEST($35::text[], $36::bigint[], $37::text[], $38::bigint[],
        $39::text[]::uuid[], $40::bigint[], $41::text[], $42::text[], $43::timestamptz[])
), stock AS (
    INSERT INTO stock_movements (store_id, sequence, line_no, sku, movement, quantity, order_id,
        reason, recorded_at)
    SELECT * FROM UNNEST($44::text[], $45::bigint[], $46::integer[], $47::text[], $48::text[],
        $49::bigint[], $50::text[]::uuid[], $51::text[], $52::timestamptz[])
), progress AS (
    INSERT INTO view_progress (last_position, last_committed_at)
    VALUES ($56, $57)
    ON CONFLICT (only_row) DO UPDATE
    SET last_position = EXCLUDED.last_position, last_committed_at = EXCLUDED.last_committed_at
    WHERE view_progress.last_position < EXCLUDED.last_position
)
INSERT INTO applied_sequences (aggregate_type, aggregate_id, last_sequence)
SELECT * FROM UNNEST($53::text[], $54::text[], $55::bigint[])
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence";

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
        let mut newest = NewestCommit::default();
        let stopped = gather(
            commits,
            &[ORDER, INVENTORY, LOYALTY],
            &mut applied,
            |commit, before| {
                batch.add(commit, before)?;
                newest.saw(commit);
                Ok(())
            },
        );
        write(&batch, &applied, newest, &mut tx)
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

/// The newest commit (by global position) one `apply` wrote: where `view_progress` moves.
/// Only applied commits count, so a view built live and one built by replay end at the same
/// row whatever their batches.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NewestCommit {
    pub(crate) position: i64,
    pub(crate) committed_at: Option<OffsetDateTime>,
}

impl NewestCommit {
    pub(crate) fn saw(&mut self, commit: &LoggedCommit) {
        let position = commit
            .events
            .last()
            .map_or(0, |event| event.position as i64);
        if position > self.position {
            self.position = position;
            self.committed_at = Some(commit.committed_at);
        }
    }
}

/// The columns of [`WRITE_BATCH`], one vector per parameter.
#[derive(Debug, Default)]
struct Columns<'b> {
    // orders
    placed: Vec<bool>,
    order_id: Vec<&'b str>,
    store_id: Vec<Option<&'b str>>,
    customer_id: Vec<Option<&'b str>>,
    status: Vec<Option<&'static str>>,
    note: Vec<Option<&'b str>>,
    total_cents: Vec<Option<i64>>,
    placed_at: Vec<Option<OffsetDateTime>>,
    accepted_at: Vec<Option<OffsetDateTime>>,
    payment_captured_at: Vec<Option<OffsetDateTime>>,
    payment_id: Vec<Option<&'b str>>,
    captured_cents: Vec<Option<i64>>,
    payment_declined: Vec<bool>,
    preparing_at: Vec<Option<OffsetDateTime>>,
    ready_at: Vec<Option<OffsetDateTime>>,
    ended_at: Vec<Option<OffsetDateTime>>,
    end_reason: Vec<Option<&'b str>>,
    refund_due: Vec<Option<bool>>,
    // order_items
    item_order_id: Vec<&'b str>,
    item_line_no: Vec<i32>,
    item_sku: Vec<String>,
    item_name: Vec<&'b str>,
    item_quantity: Vec<i32>,
    item_customisations_first: Vec<i32>,
    item_customisations_count: Vec<i32>,
    item_unit_price_cents: Vec<i64>,
    customisations: Vec<&'b str>,
    item_line_total_cents: Vec<i64>,
    // order_status_changes
    change_order_id: Vec<&'b str>,
    change_sequence: Vec<i64>,
    change_event_type: Vec<&'static str>,
    change_status: Vec<Option<&'static str>>,
    change_at: Vec<OffsetDateTime>,
    change_detail: Vec<Option<&'b str>>,
    change_actor: Vec<Option<&'b str>>,
}

impl<'b> Columns<'b> {
    fn add_order(&mut self, order_id: &'b str, changes: &'b OrderChanges) {
        let row = order_row(changes);
        let placed = row.placed;
        self.placed.push(placed.is_some());
        self.order_id.push(order_id);
        self.store_id.push(placed.map(|p| p.store_id.as_str()));
        self.customer_id
            .push(placed.map(|p| p.customer_id.as_str()));
        self.status.push(row.status);
        self.note.push(placed.map(|p| p.note.as_str()));
        self.total_cents.push(placed.map(|p| p.total_cents));
        self.placed_at.push(placed.map(|p| p.placed_at));
        self.accepted_at.push(row.accepted_at);
        self.payment_captured_at.push(row.payment_captured_at);
        self.payment_id.push(row.payment_id);
        self.captured_cents.push(row.captured_cents);
        self.payment_declined.push(row.payment_declined);
        self.preparing_at.push(row.preparing_at);
        self.ready_at.push(row.ready_at);
        self.ended_at.push(row.ended_at);
        self.end_reason.push(row.end_reason);
        self.refund_due.push(row.refund_due);
        for item in item_rows(changes) {
            self.item_order_id.push(order_id);
            self.item_line_no.push(item.line_no);
            self.item_sku.push(item.sku);
            self.item_name.push(item.name);
            self.item_quantity.push(item.quantity);
            self.item_customisations_first
                .push(self.customisations.len() as i32 + 1);
            self.item_customisations_count
                .push(item.customisations.len() as i32);
            self.customisations.extend(item.customisations);
            self.item_unit_price_cents.push(item.unit_price_cents);
            self.item_line_total_cents.push(item.line_total_cents);
        }
        for entry in timeline_rows(changes) {
            self.change_order_id.push(order_id);
            self.change_sequence.push(entry.sequence);
            self.change_event_type.push(entry.event_type);
            self.change_status.push(entry.status);
            self.change_at.push(entry.changed_at);
            self.change_detail.push(entry.detail);
            self.change_actor.push(entry.actor);
        }
    }
}

/// Writes what one `apply` gathered and the markers it moved, in one statement (none when the
/// batch changed nothing).
async fn write(
    batch: &ChangeBatch,
    applied: &Applied,
    newest: NewestCommit,
    tx: &mut Transaction<'_, Postgres>,
) -> Result<(), sqlx::Error> {
    let changed: Vec<_> = applied
        .iter()
        .filter(|(_, (_, changed))| *changed)
        .collect();
    // A marker moves only when a commit was applied, and then `newest` holds it.
    let Some(newest_committed_at) = newest.committed_at else {
        return Ok(());
    };
    if changed.is_empty() {
        return Ok(());
    }
    let mut columns = Columns::default();
    for (order_id, changes) in &batch.orders {
        columns.add_order(order_id, changes);
    }
    let c = columns;
    let loyalty = &batch.loyalty;
    let stock = &batch.stock;
    sqlx::query(WRITE_BATCH)
        .bind(c.placed)
        .bind(c.order_id)
        .bind(c.store_id)
        .bind(c.customer_id)
        .bind(c.status)
        .bind(c.note)
        .bind(c.total_cents)
        .bind(c.placed_at)
        .bind(c.accepted_at)
        .bind(c.payment_captured_at)
        .bind(c.payment_id)
        .bind(c.captured_cents)
        .bind(c.payment_declined)
        .bind(c.preparing_at)
        .bind(c.ready_at)
        .bind(c.ended_at)
        .bind(c.end_reason)
        .bind(c.refund_due)
        .bind(c.item_order_id)
        .bind(c.item_line_no)
        .bind(c.item_sku)
        .bind(c.item_name)
        .bind(c.item_quantity)
        .bind(c.item_customisations_first)
        .bind(c.item_customisations_count)
        .bind(c.item_unit_price_cents)
        .bind(c.customisations)
        .bind(c.item_line_total_cents)
        .bind(c.change_order_id)
        .bind(c.change_sequence)
        .bind(c.change_event_type)
        .bind(c.change_status)
        .bind(c.change_at)
        .bind(c.change_detail)
        .bind(
            loyalty
                .iter()
                .map(|e| e.customer_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(loyalty.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(loyalty.iter().map(|e| e.entry_type).collect::<Vec<_>>())
        .bind(loyalty.iter().map(|e| e.points).collect::<Vec<_>>())
        .bind(
            loyalty
                .iter()
                .map(|e| e.order_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(loyalty.iter().map(|e| e.amount_cents).collect::<Vec<_>>())
        .bind(loyalty.iter().map(|e| e.tier).collect::<Vec<_>>())
        .bind(
            loyalty
                .iter()
                .map(|e| e.reference.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(loyalty.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(
            stock
                .iter()
                .map(|m| m.store_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(stock.iter().map(|m| m.sequence).collect::<Vec<_>>())
        .bind(stock.iter().map(|m| m.line_no).collect::<Vec<_>>())
        .bind(stock.iter().map(|m| m.sku.as_str()).collect::<Vec<_>>())
        .bind(stock.iter().map(|m| m.movement).collect::<Vec<_>>())
        .bind(stock.iter().map(|m| m.quantity).collect::<Vec<_>>())
        .bind(
            stock
                .iter()
                .map(|m| m.order_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            stock
                .iter()
                .map(|m| m.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(stock.iter().map(|m| m.recorded_at).collect::<Vec<_>>())
        .bind(
            changed
                .iter()
                .map(|((kind, _), _)| kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            changed
                .iter()
                .map(|((_, id), _)| id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            changed
                .iter()
                .map(|(_, (sequence, _))| *sequence as i64)
                .collect::<Vec<_>>(),
        )
        .bind(newest.position)
        .bind(newest_committed_at)
        .bind(c.change_actor)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
