//! Reading the order history view: a customer's or a store's orders, newest first, and a
//! customer's loyalty ledger, one page at a time, each page with the view's freshness.
//!
//! Read only: every query runs in a `READ ONLY`, `REPEATABLE READ` transaction (the page, its
//! lines and the freshness come from one snapshot), on the schema the projection writes
//! (`set_config('search_path', ...)`), with constant SQL and keyset pagination: a page is one
//! range of the indexes `orders_by_customer_newest` / `orders_by_store_newest` or of the
//! ledger's primary key, however deep it is.

use domain::order::OrderStatus;
use sqlx::{PgPool, Postgres, Transaction};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::order_changes::Status;
use crate::page_token::{self, filters_digest, ListKind, PageTokenError};
use crate::{SchemaName, SET_SEARCH_PATH};

/// Rows per page when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The most rows a page holds; larger requests get this many.
pub const MAX_PAGE_SIZE: u32 = 100;

const BEGIN_READ_ONLY: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// One page of a customer's orders. `$2, $3` is the row the page starts below: the previous
/// page's last row, or (the upper time bound, the nil UUID) on the first page, which excludes
/// orders placed exactly at the bound.
const CUSTOMER_ORDERS: &str = "\
SELECT order_id::text, store_id, customer_id, status, note, total_cents, placed_at, ended_at,
    end_reason
FROM orders
WHERE customer_id = $1 AND (placed_at, order_id) < ($2, $3::uuid) AND placed_at >= $4
    AND status = ANY($5::text[])
ORDER BY placed_at DESC, order_id DESC
LIMIT $6";

/// [`CUSTOMER_ORDERS`] for a store.
const STORE_ORDERS: &str = "\
SELECT order_id::text, store_id, customer_id, status, note, total_cents, placed_at, ended_at,
    end_reason
FROM orders
WHERE store_id = $1 AND (placed_at, order_id) < ($2, $3::uuid) AND placed_at >= $4
    AND status = ANY($5::text[])
ORDER BY placed_at DESC, order_id DESC
LIMIT $6";

/// The lines of a page's orders.
const ORDER_LINES: &str = "\
SELECT order_id::text, sku, name, quantity, customisations, unit_price_cents, line_total_cents
FROM order_items
WHERE order_id = ANY($1::text[]::uuid[])
ORDER BY order_id, line_no";

/// One page of a customer's ledger, newest first, below sequence `$2`.
const LOYALTY_ENTRIES: &str = "\
SELECT sequence, entry_type, points, order_id::text, amount_cents, tier, reference, recorded_at
FROM loyalty_ledger
WHERE customer_id = $1 AND sequence < $2
ORDER BY sequence DESC
LIMIT $3";

const FRESHNESS: &str = "SELECT last_position, last_committed_at FROM view_progress";

/// Why a history query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The caller's page token was refused; nothing was read.
    #[error(transparent)]
    PageToken(#[from] PageTokenError),
    /// The lower time bound is not before the upper one.
    #[error("placed_from must be before placed_before")]
    EmptyTimeRange,
    /// The history database failed or timed out (retryable), or its schema is not there yet.
    #[error("the history database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value this build cannot read (a status or entry type it does not know).
    #[error("the history view holds a value this build does not know: {0}")]
    Unreadable(String),
}

/// Whose orders to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOwner {
    /// A customer's own orders.
    Customer(String),
    /// A store's orders.
    Store(String),
}

/// A page size: 0 means [`DEFAULT_PAGE_SIZE`], anything above [`MAX_PAGE_SIZE`] is lowered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    /// The size to serve for a request's `page_size`.
    pub fn new(requested: u32) -> Self {
        match requested {
            0 => Self(DEFAULT_PAGE_SIZE),
            n => Self(n.min(MAX_PAGE_SIZE)),
        }
    }

    /// Rows per page.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A `ListOrders` query, its fields already checked.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    /// Whose orders.
    pub owner: OrderOwner,
    /// Only orders now in one of these; empty: every status.
    pub statuses: Vec<OrderStatus>,
    /// Placed at or after this time.
    pub placed_from: Option<OffsetDateTime>,
    /// Placed before this time.
    pub placed_before: Option<OffsetDateTime>,
    /// Rows per page.
    pub page_size: PageSize,
    /// The previous page's `next_page_token`; `None`: the first page.
    pub page_token: Option<String>,
}

/// A `ListLoyaltyTransactions` query.
#[derive(Debug, Clone)]
pub struct LoyaltyQuery {
    /// Whose ledger.
    pub customer_id: String,
    /// Rows per page.
    pub page_size: PageSize,
    /// The previous page's `next_page_token`; `None`: the first page.
    pub page_token: Option<String>,
}

/// How far the view has come along the log when a page was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The global position of the newest commit the view applied; `None`: nothing yet.
    pub last_position: Option<u64>,
    /// When that commit was stored in the event store.
    pub last_committed_at: Option<OffsetDateTime>,
    /// When the page was read.
    pub read_at: OffsetDateTime,
}

impl Freshness {
    /// How old the newest applied commit was when the page was read: an upper bound on how far
    /// the view is behind the log (an idle log ages it too). `None` before the first commit.
    pub fn lag(&self) -> Option<Duration> {
        self.last_committed_at
            .map(|at| (self.read_at - at).max(Duration::ZERO))
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows, newest first.
    pub rows: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
    /// The view's freshness in the snapshot the rows come from.
    pub freshness: Freshness,
}

/// One order as the history view holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// The order id (UUID text).
    pub order_id: String,
    /// Its store.
    pub store_id: String,
    /// Its customer.
    pub customer_id: String,
    /// Where it stands.
    pub status: OrderStatus,
    /// The customer's note.
    pub note: String,
    /// The priced total.
    pub total_cents: i64,
    /// When it was placed.
    pub placed_at: OffsetDateTime,
    /// When it was completed, cancelled or rejected.
    pub ended_at: Option<OffsetDateTime>,
    /// Why it was cancelled or rejected.
    pub end_reason: Option<String>,
    /// Its lines, in order.
    pub lines: Vec<OrderLineRow>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLineRow {
    /// The menu item.
    pub sku: String,
    /// Its name when ordered.
    pub name: String,
    /// How many.
    pub quantity: u32,
    /// The customisations asked for.
    pub customisations: Vec<String>,
    /// The unit price when ordered.
    pub unit_price_cents: i64,
    /// quantity x unit price.
    pub line_total_cents: i64,
}

/// What a loyalty ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoyaltyEntryKind {
    /// Points earned by an order.
    Earned,
    /// Points spent.
    Redeemed,
    /// The account moved up a tier (0 points).
    TierUpgraded,
}

/// One loyalty ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoyaltyEntryRow {
    /// The account's event sequence: unique per customer, newest is highest.
    pub sequence: u64,
    /// What happened.
    pub kind: LoyaltyEntryKind,
    /// Points added (earned) or taken (redeemed, negative); 0 for a tier change.
    pub points: i64,
    /// Earned: the order.
    pub order_id: Option<String>,
    /// Earned: the amount spent.
    pub amount_cents: Option<i64>,
    /// Earned: the tier whose multiplier applied; tier change: the new tier (`bronze`, ...).
    pub tier: Option<String>,
    /// Redeemed: what the points paid for.
    pub reference: Option<String>,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
}

/// The history view's read side (the projection, [`crate::HistoryProjection`], is its only
/// writer).
#[derive(Debug, Clone)]
pub struct HistoryQueries {
    pool: PgPool,
    schema: SchemaName,
}

type OrderRecord = (
    String,
    String,
    String,
    String,
    String,
    i64,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<String>,
);
type LineRecord = (String, String, String, i32, Vec<String>, i64, i64);
type LoyaltyRecord = (
    i64,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    OffsetDateTime,
);

impl HistoryQueries {
    /// Queries on `schema` through `pool` (ideally a read-only connection, e.g. an Aurora
    /// reader endpoint).
    pub fn new(pool: PgPool, schema: SchemaName) -> Self {
        Self { pool, schema }
    }

    /// One page of `query`'s orders, newest first (by placing time, then order id).
    pub async fn list_orders(&self, query: &OrderQuery) -> Result<Page<OrderRow>, QueryError> {
        let from = query.placed_from.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let before = query.placed_before.unwrap_or(FAR_FUTURE);
        if from >= before {
            return Err(QueryError::EmptyTimeRange);
        }
        let digest = orders_digest(query);
        let (below_at, below_id) = match &query.page_token {
            Some(token) => order_cursor(&page_token::decode(token, ListKind::Orders, digest)?)?,
            None => (before, Uuid::nil()),
        };
        let statuses: Vec<&str> = if query.statuses.is_empty() {
            ALL_STATUSES.iter().map(|s| stored_status(*s)).collect()
        } else {
            query.statuses.iter().map(|s| stored_status(*s)).collect()
        };
        let (sql, owner) = match &query.owner {
            OrderOwner::Customer(customer) => (CUSTOMER_ORDERS, customer),
            OrderOwner::Store(store) => (STORE_ORDERS, store),
        };
        let size = query.page_size.get();
        let mut tx = self.begin().await?;
        let records: Vec<OrderRecord> = sqlx::query_as(sql)
            .bind(owner)
            .bind(below_at)
            .bind(below_id.to_string())
            .bind(from)
            .bind(&statuses)
            .bind(i64::from(size) + 1)
            .fetch_all(&mut *tx)
            .await?;
        let has_more = records.len() > size as usize;
        let mut rows = records
            .into_iter()
            .take(size as usize)
            .map(order_row)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<&str> = rows.iter().map(|row| row.order_id.as_str()).collect();
        let lines: Vec<LineRecord> = sqlx::query_as(ORDER_LINES)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        for (order_id, sku, name, quantity, customisations, unit, total) in lines {
            if let Some(row) = rows.iter_mut().find(|row| row.order_id == order_id) {
                row.lines.push(OrderLineRow {
                    sku,
                    name,
                    quantity: u32::try_from(quantity).unwrap_or_default(),
                    customisations,
                    unit_price_cents: unit,
                    line_total_cents: total,
                });
            }
        }
        let freshness = freshness(&mut tx).await?;
        tx.commit().await?;
        let next_page_token = match rows.last() {
            Some(last) if has_more => Some(page_token::encode(
                ListKind::Orders,
                digest,
                &encode_order_cursor(last)?,
            )),
            _ => None,
        };
        Ok(Page {
            rows,
            next_page_token,
            freshness,
        })
    }

    /// One page of a customer's loyalty ledger, newest first.
    pub async fn list_loyalty(
        &self,
        query: &LoyaltyQuery,
    ) -> Result<Page<LoyaltyEntryRow>, QueryError> {
        let digest = filters_digest(
            ListKind::LoyaltyTransactions,
            &[query.customer_id.as_bytes()],
        );
        let below = match &query.page_token {
            Some(token) => {
                let cursor = page_token::decode(token, ListKind::LoyaltyTransactions, digest)?;
                let bytes: [u8; 8] = cursor
                    .as_slice()
                    .try_into()
                    .map_err(|_| PageTokenError::Malformed)?;
                i64::from_be_bytes(bytes)
            }
            None => i64::MAX,
        };
        let size = query.page_size.get();
        let mut tx = self.begin().await?;
        let records: Vec<LoyaltyRecord> = sqlx::query_as(LOYALTY_ENTRIES)
            .bind(&query.customer_id)
            .bind(below)
            .bind(i64::from(size) + 1)
            .fetch_all(&mut *tx)
            .await?;
        let freshness = freshness(&mut tx).await?;
        tx.commit().await?;
        let has_more = records.len() > size as usize;
        let rows = records
            .into_iter()
            .take(size as usize)
            .map(loyalty_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match rows.last() {
            Some(last) if has_more => Some(page_token::encode(
                ListKind::LoyaltyTransactions,
                digest,
                &(last.sequence as i64).to_be_bytes(),
            )),
            _ => None,
        };
        Ok(Page {
            rows,
            next_page_token,
            freshness,
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(BEGIN_READ_ONLY).execute(&mut *tx).await?;
        sqlx::query(SET_SEARCH_PATH)
            .bind(self.schema.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The upper bound of an open-ended range: beyond any order's placing time.
const FAR_FUTURE: OffsetDateTime = time::macros::datetime!(9999-01-01 00:00 UTC);

const ALL_STATUSES: [OrderStatus; 7] = [
    OrderStatus::Placed,
    OrderStatus::Accepted,
    OrderStatus::Preparing,
    OrderStatus::Ready,
    OrderStatus::Completed,
    OrderStatus::Rejected,
    OrderStatus::Cancelled,
];

/// The stored name of a domain status (the projection writes the same names).
fn stored_status(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => Status::Placed,
        OrderStatus::Accepted => Status::Accepted,
        OrderStatus::Preparing => Status::Preparing,
        OrderStatus::Ready => Status::Ready,
        OrderStatus::Completed => Status::Completed,
        OrderStatus::Rejected => Status::Rejected,
        OrderStatus::Cancelled => Status::Cancelled,
    }
    .as_str()
}

fn status_of(name: &str) -> Result<OrderStatus, QueryError> {
    ALL_STATUSES
        .into_iter()
        .find(|status| stored_status(*status) == name)
        .ok_or_else(|| QueryError::Unreadable(format!("order status {name:?}")))
}

/// The digest binding an orders token to its filters (the page size may change between pages).
fn orders_digest(query: &OrderQuery) -> [u8; 8] {
    let (owner_kind, owner): (&[u8], &str) = match &query.owner {
        OrderOwner::Customer(id) => (b"customer", id),
        OrderOwner::Store(id) => (b"store", id),
    };
    let mut statuses: Vec<&str> = query.statuses.iter().map(|s| stored_status(*s)).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let statuses = statuses.join(",");
    let micros = |at: Option<OffsetDateTime>| {
        at.map_or(i128::MIN, |at| at.unix_timestamp_nanos() / 1000)
            .to_be_bytes()
    };
    filters_digest(
        ListKind::Orders,
        &[
            owner_kind,
            owner.as_bytes(),
            statuses.as_bytes(),
            &micros(query.placed_from),
            &micros(query.placed_before),
        ],
    )
}

/// An orders cursor: the last row's placing time (microseconds since the epoch, as PostgreSQL
/// stores it) and order id.
fn encode_order_cursor(row: &OrderRow) -> Result<Vec<u8>, QueryError> {
    let micros = (row.placed_at.unix_timestamp_nanos() / 1000) as i64;
    let id = Uuid::parse_str(&row.order_id)
        .map_err(|_| QueryError::Unreadable(format!("order id {:?}", row.order_id)))?;
    let mut cursor = micros.to_be_bytes().to_vec();
    cursor.extend_from_slice(id.as_bytes());
    Ok(cursor)
}

fn order_cursor(cursor: &[u8]) -> Result<(OffsetDateTime, Uuid), PageTokenError> {
    let (micros, id) = cursor
        .split_first_chunk::<8>()
        .ok_or(PageTokenError::Malformed)?;
    let id = Uuid::from_slice(id).map_err(|_| PageTokenError::Malformed)?;
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(i64::from_be_bytes(*micros)) * 1000)
            .map_err(|_| PageTokenError::Malformed)?;
    Ok((at, id))
}

fn order_row(record: OrderRecord) -> Result<OrderRow, QueryError> {
    let (order_id, store_id, customer_id, status, note, total_cents, placed_at, ended_at, reason) =
        record;
    Ok(OrderRow {
        status: status_of(&status)?,
        order_id,
        store_id,
        customer_id,
        note,
        total_cents,
        placed_at,
        ended_at,
        end_reason: reason,
        lines: Vec::new(),
    })
}

fn loyalty_row(record: LoyaltyRecord) -> Result<LoyaltyEntryRow, QueryError> {
    let (sequence, entry_type, points, order_id, amount_cents, tier, reference, recorded_at) =
        record;
    let kind = match entry_type.as_str() {
        "earned" => LoyaltyEntryKind::Earned,
        "redeemed" => LoyaltyEntryKind::Redeemed,
        "tier_upgraded" => LoyaltyEntryKind::TierUpgraded,
        other => return Err(QueryError::Unreadable(format!("loyalty entry {other:?}"))),
    };
    Ok(LoyaltyEntryRow {
        sequence: sequence as u64,
        kind,
        points,
        order_id,
        amount_cents,
        tier,
        reference,
        recorded_at,
    })
}

async fn freshness(tx: &mut Transaction<'static, Postgres>) -> Result<Freshness, sqlx::Error> {
    let progress: Option<(i64, OffsetDateTime)> =
        sqlx::query_as(FRESHNESS).fetch_optional(&mut **tx).await?;
    Ok(Freshness {
        last_position: progress.map(|(position, _)| position as u64),
        last_committed_at: progress.map(|(_, at)| at),
        read_at: OffsetDateTime::now_utc(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(PageSize::new(0).get(), DEFAULT_PAGE_SIZE);
        assert_eq!(PageSize::new(7).get(), 7);
        assert_eq!(PageSize::new(100_000).get(), MAX_PAGE_SIZE);
    }

    #[test]
    fn every_status_has_a_stored_name_that_reads_back() {
        for status in ALL_STATUSES {
            let name = stored_status(status);
            assert_eq!(Status::parse(name).map(|s| s.as_str()), Some(name));
            assert_eq!(status_of(name).unwrap(), status);
        }
    }

    #[test]
    fn an_orders_cursor_reads_back_to_the_row_it_was_made_from() {
        let row = OrderRow {
            order_id: "0190f7c2-9c1e-7a3b-8d4e-5f6a7b8c9d0e".into(),
            store_id: "s1".into(),
            customer_id: "c1".into(),
            status: OrderStatus::Placed,
            note: String::new(),
            total_cents: 450,
            placed_at: time::macros::datetime!(2026-12-07 08:05:00.123456 UTC),
            ended_at: None,
            end_reason: None,
            lines: vec![],
        };
        let (at, id) = order_cursor(&encode_order_cursor(&row).unwrap()).unwrap();
        assert_eq!((at, id.to_string()), (row.placed_at, row.order_id));
    }
}
