//! Analytics in Amazon Redshift (a PostgreSQL database stands in locally): fact tables of
//! orders, order items, loyalty and stock movements, and the store, item and hour dimensions.
//!
//! Only SQL Redshift accepts (see `docs/architecture.md`, "Read models"): no `ON CONFLICT`, no
//! arrays or JSON functions, no `SERIAL`/`JSONB`, no `TRUNCATE` inside the transaction (it
//! commits in Redshift). One `apply` is one transaction:
//! 1. `LOCK applied_sequences`: loads run one at a time, as Redshift serialises concurrent
//!    writers to the same tables anyway;
//! 2. read the batch's applied sequences and decide per commit (skip / apply / gap);
//! 3. read the current rows the batch changes (orders placed earlier, menu items), fold;
//! 4. per table: a temporary staging table `(LIKE target)`, multi-row `INSERT ... VALUES` into
//!    it, `DELETE ... USING` the staged keys and `INSERT ... SELECT` from it (dimensions: only
//!    missing rows), then drop it;
//! 5. the applied sequences go through the same staged delete/insert, and the transaction
//!    commits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use commit_log::{DomainEvent, LoggedCommit};
use domain::MenuEvent;
use sqlx::postgres::Postgres;
use sqlx::query_builder::Separated;
use sqlx::{PgConnection, PgPool, QueryBuilder, Transaction};
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::analytics_sql::{
    schema_statements, StagedTable, APPLIED_SEQUENCES, DIM_HOUR, DIM_ITEM, DIM_STORE, FACT_LOYALTY,
    FACT_ORDERS, FACT_ORDER_ITEMS, FACT_STOCK_MOVEMENTS, LOCK_LOADS, SELECT_APPLIED, SELECT_ITEMS,
    SELECT_ORDERS,
};
use super::copy_binary::RowSink;
use super::ledger::{ChangeBatch, LoyaltyEntry, StockMovement};
use super::order_changes::{OrderChanges, PlacedOrder};
use super::progress::{database_failure, gather, Applied, INVENTORY, LOYALTY, MENU, ORDER};
use super::{SchemaName, SetupError, SET_SEARCH_PATH};
use commit_log::projection::{FlushPolicy, Projection, ProjectionError};

/// At most this many values in one `IN (...)` list or one multi-row `INSERT`: far below the
/// protocol's 65,535 parameters and Redshift's 16 MB statement limit.
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// Statements sent by the analytics loads of this process (the projection's and replay's),
/// the commit included: with [`FLUSHES`], statements per flush.
pub const STATEMENTS: &str = "orderpipe_analytics_statements_total";
/// Analytics loads (flushes) committed by this process.
pub const FLUSHES: &str = "orderpipe_analytics_flushes_total";

/// The analytics projection (name `analytics`).
#[derive(Debug, Clone)]
pub struct AnalyticsProjection {
    pool: PgPool,
    schema: SchemaName,
    flush: FlushPolicy,
    sent: Arc<SentCounts>,
}

/// What one projection instance sent: flushes and statements, for measurements and tests.
#[derive(Debug, Default)]
struct SentCounts {
    flushes: AtomicU64,
    statements: AtomicU64,
}

impl AnalyticsProjection {
    /// A projection loading into `schema` through `pool` (settings `analytics.database`;
    /// Redshift's PostgreSQL wire protocol), one load per `apply` call: the runtime calls it
    /// per GetRecords answer unless [`Self::with_flush`] sets a policy.
    pub fn new(pool: PgPool, schema: SchemaName) -> Self {
        Self {
            pool,
            schema,
            flush: FlushPolicy::EVERY_READ,
            sent: Arc::default(),
        }
    }

    /// Loads micro-batched by `policy` (settings `analytics_flush.*`): the runtime gathers
    /// what it reads until `policy.max_commits` commits wait or the oldest has waited
    /// `policy.max_wait`, then calls `apply` once, so the statements per minute stay bounded
    /// however fast events arrive.
    pub fn with_flush(mut self, policy: FlushPolicy) -> Self {
        self.flush = policy;
        self
    }

    /// `(flushes, statements)` this instance committed and sent so far (a failed flush's
    /// statements count, its flush does not).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent.flushes.load(Ordering::Relaxed),
            self.sent.statements.load(Ordering::Relaxed),
        )
    }

    /// Creates `schema` and its tables where missing (idempotent DDL: Redshift has no advisory
    /// locks, so no migration table; a changed table is a new schema built by replay).
    pub async fn create_schema(pool: &PgPool, schema: &SchemaName) -> Result<(), SetupError> {
        let mut tx = pool.begin().await?;
        sqlx::query(&schema.create_statement())
            .execute(&mut *tx)
            .await?;
        sqlx::query(SET_SEARCH_PATH)
            .bind(schema.as_str())
            .execute(&mut *tx)
            .await?;
        for statement in schema_statements() {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn flush_policy(&self) -> FlushPolicy {
        self.flush
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let mut tx = Load {
            tx: self.pool.begin().await.map_err(database_failure)?,
            statements: 0,
        };
        let loaded = self.load(&mut tx, commits).await;
        let committed = match loaded {
            Ok(stopped) => {
                tx.statements += 1;
                tx.tx.commit().await.map(|()| stopped)
            }
            Err(error) => Err(error),
        };
        self.sent
            .statements
            .fetch_add(tx.statements, Ordering::Relaxed);
        metrics::counter!(STATEMENTS).increment(tx.statements);
        let stopped = committed.map_err(database_failure)?;
        self.sent.flushes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FLUSHES).increment(1);
        stopped.map_or(Ok(()), Err)
    }
}

/// One load's transaction, counting the statements sent through it.
struct Load {
    tx: Transaction<'static, Postgres>,
    statements: u64,
}

impl Load {
    /// The connection for the next statement, counted.
    fn statement(&mut self) -> &mut PgConnection {
        self.statements += 1;
        &mut self.tx
    }
}

impl AnalyticsProjection {
    /// Everything of one load but its commit; the commits the load stopped at, if any.
    async fn load(
        &self,
        tx: &mut Load,
        commits: &[LoggedCommit],
    ) -> Result<Option<ProjectionError>, sqlx::Error> {
        sqlx::query(SET_SEARCH_PATH)
            .bind(self.schema.as_str())
            .execute(tx.statement())
            .await?;
        sqlx::query(LOCK_LOADS).execute(tx.statement()).await?;
        let mut applied = read_applied(tx, commits).await?;
        let mut batch = Batch::default();
        let tracked = [ORDER, INVENTORY, LOYALTY, MENU];
        let stopped = gather(commits, &tracked, &mut applied, |commit, before| {
            batch.add(commit, before)
        });
        batch.write(tx).await?;
        let changed: Vec<AppliedRow> = applied
            .into_iter()
            .filter(|(_, (_, changed))| *changed)
            .map(AppliedRow::of)
            .collect();
        load(tx, &APPLIED_SEQUENCES, &changed).await?;
        Ok(stopped)
    }
}

async fn read_applied(tx: &mut Load, commits: &[LoggedCommit]) -> Result<Applied, sqlx::Error> {
    let mut ids: Vec<&str> = commits.iter().map(|c| c.aggregate_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let wanted: std::collections::HashSet<(&str, &str)> = commits
        .iter()
        .map(|c| (c.aggregate_type.as_str(), c.aggregate_id.as_str()))
        .collect();
    let mut applied = Applied::new();
    for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let rows: Vec<(String, String, i64)> = in_list(SELECT_APPLIED, chunk)
            .build_query_as()
            .fetch_all(tx.statement())
            .await?;
        for (kind, id, sequence) in rows {
            if wanted.contains(&(kind.as_str(), id.as_str())) {
                applied.insert((kind, id), (sequence as u64, false));
            }
        }
    }
    Ok(applied)
}

/// `prefix (key, key, ...)` with every key a bound parameter.
fn in_list<'a>(prefix: &'static str, keys: &'a [&'a str]) -> QueryBuilder<'a, Postgres> {
    let mut query = QueryBuilder::new(prefix);
    query.push("(");
    let mut separated = query.separated(", ");
    for key in keys {
        separated.push_bind(*key);
    }
    query.push(")");
    query
}

/// Moves `rows` into their target through its staging table.
async fn load<R: AnalyticsRow>(
    tx: &mut Load,
    table: &StagedTable,
    rows: &[R],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Postgres>::new(table.insert);
        insert.push_values(chunk, |mut values, row| row.write(&mut values));
        insert.build().execute(tx.statement()).await?;
    }
    for statement in table.merge {
        sqlx::query(statement).execute(tx.statement()).await?;
    }
    sqlx::query(table.clear).execute(tx.statement()).await?;
    Ok(())
}

/// A row of an analytics table: its columns in table order (the staging table's `insert`
/// order too), handed to a bound statement (the live load) or to binary `COPY` (replay's bulk
/// rebuild), so both write the same values.
pub(crate) trait AnalyticsRow {
    fn write(&self, row: &mut impl RowSink);
}

/// The live load binds each column as a parameter of its multi-row `INSERT`.
impl RowSink for Separated<'_, '_, Postgres, &'static str> {
    fn text(&mut self, value: Option<&str>) {
        self.push_bind(value.map(str::to_owned));
    }
    fn bigint(&mut self, value: Option<i64>) {
        self.push_bind(value);
    }
    fn integer(&mut self, value: Option<i32>) {
        self.push_bind(value);
    }
    fn smallint(&mut self, value: i16) {
        self.push_bind(value);
    }
    fn boolean(&mut self, value: Option<bool>) {
        self.push_bind(value);
    }
    fn timestamp(&mut self, value: Option<PrimitiveDateTime>) {
        self.push_bind(value);
    }
    fn date(&mut self, value: Date) {
        self.push_bind(value);
    }
}

/// UTC wall time: Redshift's `TIMESTAMP` has no zone, and binding a plain timestamp keeps the
/// session's time zone out of it.
fn utc(at: OffsetDateTime) -> PrimitiveDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(at.date(), at.time())
}

/// `YYYYMMDDHH` of a UTC time: the key of its `dim_hour` row.
fn hour_key(at: PrimitiveDateTime) -> i64 {
    i64::from(at.year()) * 1_000_000
        + i64::from(u8::from(at.month())) * 10_000
        + i64::from(at.day()) * 100
        + i64::from(at.hour())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FactOrder {
    order_id: String,
    store_id: String,
    customer_id: String,
    hour_key: i64,
    placed_at: PrimitiveDateTime,
    status: String,
    total_cents: i64,
    line_count: i32,
    item_quantity: i32,
    accepted_at: Option<PrimitiveDateTime>,
    preparing_at: Option<PrimitiveDateTime>,
    ready_at: Option<PrimitiveDateTime>,
    ended_at: Option<PrimitiveDateTime>,
    prep_seconds: Option<i64>,
    end_reason: Option<String>,
}

impl FactOrder {
    fn placed(order_id: &str, placed: &PlacedOrder) -> FactOrder {
        let placed_at = utc(placed.placed_at);
        FactOrder {
            order_id: order_id.to_owned(),
            store_id: placed.store_id.clone(),
            customer_id: placed.customer_id.clone(),
            hour_key: hour_key(placed_at),
            placed_at,
            status: String::new(),
            total_cents: placed.total_cents,
            line_count: placed.lines.len() as i32,
            item_quantity: placed.lines.iter().map(|l| l.quantity.get() as i32).sum(),
            accepted_at: None,
            preparing_at: None,
            ready_at: None,
            ended_at: None,
            prep_seconds: None,
            end_reason: None,
        }
    }

    pub(crate) fn apply(&mut self, changes: &OrderChanges) {
        if let Some(status) = changes.status {
            self.status = status.as_str().to_owned();
        }
        let set = |field: &mut Option<PrimitiveDateTime>, at: Option<OffsetDateTime>| {
            if let Some(at) = at {
                *field = Some(utc(at));
            }
        };
        set(&mut self.accepted_at, changes.accepted_at);
        set(&mut self.preparing_at, changes.preparing_at);
        set(&mut self.ready_at, changes.ready_at);
        set(&mut self.ended_at, changes.ended_at);
        if let Some(reason) = &changes.end_reason {
            self.end_reason = Some(reason.clone());
        }
        if let (Some(preparing), Some(ready)) = (self.preparing_at, self.ready_at) {
            self.prep_seconds = Some((ready - preparing).whole_seconds());
        }
    }
}

impl AnalyticsRow for FactOrder {
    fn write(&self, row: &mut impl RowSink) {
        row.text(Some(&self.order_id));
        row.text(Some(&self.store_id));
        row.text(Some(&self.customer_id));
        row.bigint(Some(self.hour_key));
        row.timestamp(Some(self.placed_at));
        row.text(Some(&self.status));
        row.bigint(Some(self.total_cents));
        row.integer(Some(self.line_count));
        row.integer(Some(self.item_quantity));
        row.timestamp(self.accepted_at);
        row.timestamp(self.preparing_at);
        row.timestamp(self.ready_at);
        row.timestamp(self.ended_at);
        row.bigint(self.prep_seconds);
        row.text(self.end_reason.as_deref());
    }
}

#[derive(Debug)]
pub(crate) struct FactOrderItem {
    order_id: String,
    line_no: i32,
    store_id: String,
    sku: String,
    hour_key: i64,
    placed_at: PrimitiveDateTime,
    quantity: i32,
    unit_price_cents: i64,
    line_total_cents: i64,
    customisation_count: i32,
}

impl AnalyticsRow for FactOrderItem {
    fn write(&self, row: &mut impl RowSink) {
        row.text(Some(&self.order_id));
        row.integer(Some(self.line_no));
        row.text(Some(&self.store_id));
        row.text(Some(&self.sku));
        row.bigint(Some(self.hour_key));
        row.timestamp(Some(self.placed_at));
        row.integer(Some(self.quantity));
        row.bigint(Some(self.unit_price_cents));
        row.bigint(Some(self.line_total_cents));
        row.integer(Some(self.customisation_count));
    }
}

impl AnalyticsRow for LoyaltyEntry {
    fn write(&self, row: &mut impl RowSink) {
        let at = utc(self.recorded_at);
        row.text(Some(&self.customer_id));
        row.bigint(Some(self.sequence));
        row.text(Some(self.entry_type));
        row.bigint(Some(self.points));
        row.text(self.order_id.as_deref());
        row.bigint(self.amount_cents);
        row.text(self.tier);
        row.bigint(Some(hour_key(at)));
        row.timestamp(Some(at));
    }
}

impl AnalyticsRow for StockMovement {
    fn write(&self, row: &mut impl RowSink) {
        let at = utc(self.recorded_at);
        row.text(Some(&self.store_id));
        row.bigint(Some(self.sequence));
        row.integer(Some(self.line_no));
        row.text(Some(&self.sku));
        row.text(Some(self.movement));
        row.bigint(Some(self.quantity));
        row.text(self.order_id.as_deref());
        row.bigint(Some(hour_key(at)));
        row.timestamp(Some(at));
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DimItem {
    sku: String,
    name: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
    available: Option<bool>,
    updated_at: PrimitiveDateTime,
}

impl AnalyticsRow for DimItem {
    fn write(&self, row: &mut impl RowSink) {
        row.text(Some(&self.sku));
        row.text(self.name.as_deref());
        row.text(self.category.as_deref());
        row.bigint(self.price_cents);
        row.boolean(self.available);
        row.timestamp(Some(self.updated_at));
    }
}

impl DimItem {
    /// The row of `sku` after `change`, on top of its row `before` (if any); none when neither
    /// says when it changed.
    pub(crate) fn changed(
        sku: &str,
        change: &ItemChange,
        before: Option<DimItem>,
    ) -> Option<DimItem> {
        let updated_at = change.at.or(before.as_ref().map(|b| b.updated_at))?;
        Some(DimItem {
            sku: sku.to_owned(),
            name: change
                .name
                .clone()
                .or_else(|| before.as_ref().and_then(|b| b.name.clone())),
            category: change
                .category
                .clone()
                .or_else(|| before.as_ref().and_then(|b| b.category.clone())),
            price_cents: change
                .price_cents
                .or(before.as_ref().and_then(|b| b.price_cents)),
            available: change
                .available
                .or(before.as_ref().and_then(|b| b.available)),
            updated_at,
        })
    }
}

#[derive(Debug)]
pub(crate) struct DimStore {
    store_id: String,
    first_seen_at: PrimitiveDateTime,
}

impl AnalyticsRow for DimStore {
    fn write(&self, row: &mut impl RowSink) {
        row.text(Some(&self.store_id));
        row.timestamp(Some(self.first_seen_at));
    }
}

#[derive(Debug)]
pub(crate) struct DimHour {
    hour_key: i64,
    hour_start: PrimitiveDateTime,
    day: Date,
}

impl DimHour {
    fn of(at: PrimitiveDateTime) -> DimHour {
        DimHour {
            hour_key: hour_key(at),
            hour_start: at.replace_time(time::Time::MIDNIGHT)
                + time::Duration::hours(at.hour().into()),
            day: at.date(),
        }
    }
}

impl AnalyticsRow for DimHour {
    fn write(&self, row: &mut impl RowSink) {
        row.bigint(Some(self.hour_key));
        row.timestamp(Some(self.hour_start));
        row.date(self.day);
        row.smallint(i16::from(self.hour_start.hour()));
        row.smallint(i16::from(self.day.weekday().number_from_monday()));
        row.smallint(i16::from(u8::from(self.day.month())));
        row.smallint(self.day.year() as i16);
    }
}

/// One `applied_sequences` row (history's table has the same columns).
#[derive(Debug)]
pub(crate) struct AppliedRow {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) last_sequence: i64,
}

impl AppliedRow {
    /// The row of one entry of an [`Applied`] map.
    pub(crate) fn of(
        ((aggregate_type, aggregate_id), (sequence, _)): ((String, String), (u64, bool)),
    ) -> AppliedRow {
        AppliedRow {
            aggregate_type,
            aggregate_id,
            last_sequence: sequence as i64,
        }
    }
}

impl AnalyticsRow for AppliedRow {
    fn write(&self, row: &mut impl RowSink) {
        row.text(Some(&self.aggregate_type));
        row.text(Some(&self.aggregate_id));
        row.bigint(Some(self.last_sequence));
    }
}

/// A change to one menu item.
#[derive(Debug, Clone, Default)]
pub(crate) struct ItemChange {
    name: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
    available: Option<bool>,
    at: Option<PrimitiveDateTime>,
}

/// Everything one `apply` loads (and what one writer of a bulk rebuild holds).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) changes: ChangeBatch,
    pub(crate) items: BTreeMap<String, ItemChange>,
}

impl Batch {
    pub(crate) fn add(&mut self, commit: &LoggedCommit, applied: u64) -> Result<(), String> {
        for event in self.changes.add(commit, applied)? {
            if let DomainEvent::Menu(menu_event) = &event.event {
                self.add_menu_event(menu_event, utc(event.recorded_at));
            }
        }
        Ok(())
    }

    fn add_menu_event(&mut self, event: &MenuEvent, at: PrimitiveDateTime) {
        let (sku, change) = match event {
            MenuEvent::MenuItemAdded {
                sku,
                name,
                price,
                category,
            } => (
                sku,
                ItemChange {
                    name: Some(name.to_string()),
                    category: Some(format!("{category:?}").to_lowercase()),
                    price_cents: Some(price.cents()),
                    available: Some(true),
                    at: Some(at),
                },
            ),
            MenuEvent::MenuItemPriceChanged { sku, price } => (
                sku,
                ItemChange {
                    price_cents: Some(price.cents()),
                    at: Some(at),
                    ..ItemChange::default()
                },
            ),
            MenuEvent::MenuItemAvailabilityChanged { sku, available } => (
                sku,
                ItemChange {
                    available: Some(*available),
                    at: Some(at),
                    ..ItemChange::default()
                },
            ),
        };
        let entry = self.items.entry(sku.to_string()).or_default();
        entry.name = change.name.or(entry.name.take());
        entry.category = change.category.or(entry.category.take());
        entry.price_cents = change.price_cents.or(entry.price_cents);
        entry.available = change.available.or(entry.available);
        entry.at = change.at.or(entry.at);
    }

    async fn write(self, tx: &mut Load) -> Result<(), sqlx::Error> {
        let earlier: Vec<&str> = self
            .changes
            .orders
            .iter()
            .filter(|(_, changes)| changes.placed.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        let mut current: HashMap<String, FactOrder> = HashMap::new();
        for chunk in earlier.chunks(MAX_ROWS_PER_STATEMENT) {
            let rows: Vec<FactOrder> = in_list(SELECT_ORDERS, chunk)
                .build_query_as()
                .fetch_all(tx.statement())
                .await?;
            current.extend(rows.into_iter().map(|row| (row.order_id.clone(), row)));
        }
        let mut orders = Vec::new();
        let mut order_items = Vec::new();
        let mut dimensions = Dimensions::default();
        for (order_id, changes) in &self.changes.orders {
            let mut row = match &changes.placed {
                Some(placed) => {
                    let (row, items) = placed_rows(order_id, placed, &mut dimensions);
                    order_items.extend(items);
                    row
                }
                // Its applied sequence says OrderPlaced was loaded into this schema, so the row
                // exists; a missing one would mean the schema was edited by hand.
                None => match current.remove(order_id) {
                    Some(row) => row,
                    None => continue,
                },
            };
            row.apply(changes);
            orders.push(row);
        }
        dimensions.see_ledgers(&self.changes);
        let items = self.items_with_current(tx).await?;
        let (stores, hours) = dimensions.into_rows();
        load(tx, &DIM_STORE, &stores).await?;
        load(tx, &DIM_HOUR, &hours).await?;
        load(tx, &DIM_ITEM, &items).await?;
        load(tx, &FACT_ORDERS, &orders).await?;
        load(tx, &FACT_ORDER_ITEMS, &order_items).await?;
        load(tx, &FACT_LOYALTY, &self.changes.loyalty).await?;
        load(tx, &FACT_STOCK_MOVEMENTS, &self.changes.stock).await
    }

    /// The batch's menu changes on top of the current `dim_item` rows.
    async fn items_with_current(&self, tx: &mut Load) -> Result<Vec<DimItem>, sqlx::Error> {
        let skus: Vec<&str> = self.items.keys().map(String::as_str).collect();
        let mut current: HashMap<String, DimItem> = HashMap::new();
        for chunk in skus.chunks(MAX_ROWS_PER_STATEMENT) {
            let rows: Vec<DimItem> = in_list(SELECT_ITEMS, chunk)
                .build_query_as()
                .fetch_all(tx.statement())
                .await?;
            current.extend(rows.into_iter().map(|row| (row.sku.clone(), row)));
        }
        Ok(self
            .items
            .iter()
            .filter_map(|(sku, change)| DimItem::changed(sku, change, current.remove(sku)))
            .collect())
    }
}

/// The `fact_orders` row and `fact_order_items` rows of a newly placed order, its store and
/// hour seen in `dimensions`.
pub(crate) fn placed_rows(
    order_id: &str,
    placed: &PlacedOrder,
    dimensions: &mut Dimensions,
) -> (FactOrder, Vec<FactOrderItem>) {
    let row = FactOrder::placed(order_id, placed);
    dimensions.see(&row.store_id, row.placed_at);
    let items = placed
        .lines
        .iter()
        .enumerate()
        .map(|(line_no, line)| FactOrderItem {
            order_id: order_id.to_owned(),
            line_no: line_no as i32,
            store_id: row.store_id.clone(),
            sku: line.sku.to_string(),
            hour_key: row.hour_key,
            placed_at: row.placed_at,
            quantity: line.quantity.get() as i32,
            unit_price_cents: line.unit_price.cents(),
            line_total_cents: line.line_total.cents(),
            customisation_count: line.customisations.len() as i32,
        })
        .collect();
    (row, items)
}

/// The stores (earliest time seen) and hours the facts of a load or a rebuild mention.
#[derive(Debug, Default)]
pub(crate) struct Dimensions {
    stores: BTreeMap<String, PrimitiveDateTime>,
    hours: BTreeMap<i64, DimHour>,
}

impl Dimensions {
    /// `store` was seen at `at` (an order placed, a stock movement).
    pub(crate) fn see(&mut self, store: &str, at: PrimitiveDateTime) {
        let first = self.stores.entry(store.to_owned()).or_insert(at);
        *first = (*first).min(at);
        self.see_hour(at);
    }

    fn see_hour(&mut self, at: PrimitiveDateTime) {
        self.hours
            .entry(hour_key(at))
            .or_insert_with(|| DimHour::of(at));
    }

    /// The hours of `changes`' loyalty entries and the stores and hours of its stock movements.
    pub(crate) fn see_ledgers(&mut self, changes: &ChangeBatch) {
        for entry in &changes.loyalty {
            self.see_hour(utc(entry.recorded_at));
        }
        for movement in &changes.stock {
            self.see(&movement.store_id, utc(movement.recorded_at));
        }
    }

    /// Adds what `other` saw.
    pub(crate) fn merge(&mut self, other: Dimensions) {
        for (store, at) in other.stores {
            self.see(&store, at);
        }
        self.hours.extend(other.hours);
    }

    /// The `dim_store` and `dim_hour` rows.
    pub(crate) fn into_rows(self) -> (Vec<DimStore>, Vec<DimHour>) {
        let stores = self
            .stores
            .into_iter()
            .map(|(store_id, first_seen_at)| DimStore {
                store_id,
                first_seen_at,
            })
            .collect();
        (stores, self.hours.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hours_are_keyed_by_their_utc_start() {
        let at = utc(datetime!(2025-03-01 00:30:15 +02:00));
        assert_eq!(hour_key(at), 2_025_022_822);
        let hour = DimHour::of(at);
        assert_eq!(hour.hour_start, datetime!(2025-02-28 22:00:00));
        assert_eq!(hour.day, time::macros::date!(2025 - 02 - 28));
    }
}
