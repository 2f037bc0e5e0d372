//! The report's SQL, one constant per grouping, read only and inside Redshift's dialect: no
//! `FILTER`, no `= ANY`, sums cast to `BIGINT` (PostgreSQL's `SUM(bigint)` is numeric), a
//! store filter by a bound value (`''`: every store), times bound as UTC wall times.
//!
//! Every query returns the same columns: key, name, orders, units, sales, preparation seconds
//! and how many orders have one. Counted orders: placed in `[$1, $2)`, not cancelled or
//! rejected.

use read_models::SchemaName;
use sqlx::PgPool;

use super::{GroupBy, ReportError, ReportRequest, ReportRow};

const BEGIN_READ_ONLY: &str = "BEGIN READ ONLY";
const SET_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, true)";

const BY_STORE: &str = "\
SELECT o.store_id, '', COUNT(*), CAST(SUM(o.item_quantity) AS BIGINT),
    CAST(SUM(o.total_cents) AS BIGINT), CAST(COALESCE(SUM(o.prep_seconds), 0) AS BIGINT),
    COUNT(o.prep_seconds)
FROM fact_orders o
WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status NOT IN ('cancelled', 'rejected')
    AND ($3 = '' OR o.store_id = $3)
GROUP BY o.store_id
ORDER BY 5 DESC, 1";

const BY_HOUR: &str = "\
SELECT LPAD(CAST(h.hour_of_day AS VARCHAR(2)), 2, '0'), '', COUNT(*),
    CAST(SUM(o.item_quantity) AS BIGINT), CAST(SUM(o.total_cents) AS BIGINT),
    CAST(COALESCE(SUM(o.prep_seconds), 0) AS BIGINT), COUNT(o.prep_seconds)
FROM fact_orders o
JOIN dim_hour h ON h.hour_key = o.hour_key
WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status NOT IN ('cancelled', 'rejected')
    AND ($3 = '' OR o.store_id = $3)
GROUP BY h.hour_of_day
ORDER BY 1";

/// The tier an order earned at is on its `earned` loyalty fact (an order earns once).
const BY_TIER: &str = "\
SELECT COALESCE(l.tier, 'none'), '', COUNT(*), CAST(SUM(o.item_quantity) AS BIGINT),
    CAST(SUM(o.total_cents) AS BIGINT), CAST(COALESCE(SUM(o.prep_seconds), 0) AS BIGINT),
    COUNT(o.prep_seconds)
FROM fact_orders o
LEFT JOIN fact_loyalty l ON l.order_id = o.order_id AND l.entry_type = 'earned'
WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status NOT IN ('cancelled', 'rejected')
    AND ($3 = '' OR o.store_id = $3)
GROUP BY COALESCE(l.tier, 'none')
ORDER BY 5 DESC, 1";

/// Per item: its lines' quantities and totals; orders and preparation times of the orders
/// holding it (an order with two lines of one item counts once, through the sub-select).
const BY_ITEM: &str = "\
SELECT i.sku, COALESCE(MAX(d.name), ''), COUNT(*), CAST(SUM(i.units) AS BIGINT),
    CAST(SUM(i.sales) AS BIGINT), CAST(COALESCE(SUM(o.prep_seconds), 0) AS BIGINT),
    COUNT(o.prep_seconds)
FROM (
    SELECT order_id, sku, SUM(quantity) AS units, SUM(line_total_cents) AS sales
    FROM fact_order_items
    WHERE placed_at >= $1 AND placed_at < $2
    GROUP BY order_id, sku
) i
JOIN fact_orders o ON o.order_id = i.order_id
LEFT JOIN dim_item d ON d.sku = i.sku
WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status NOT IN ('cancelled', 'rejected')
    AND ($3 = '' OR o.store_id = $3)
GROUP BY i.sku
ORDER BY 5 DESC, 1";

type Record = (String, String, i64, i64, i64, i64, i64);

/// The rows of `request`, from one read-only transaction on `schema`.
pub(super) async fn fetch(
    pool: &PgPool,
    schema: &SchemaName,
    request: &ReportRequest,
) -> Result<Vec<ReportRow>, ReportError> {
    let sql = match request.by() {
        GroupBy::Item => BY_ITEM,
        GroupBy::Hour => BY_HOUR,
        GroupBy::Store => BY_STORE,
        GroupBy::Tier => BY_TIER,
    };
    let (from, before) = request.bounds();
    let mut tx = pool.begin_with(BEGIN_READ_ONLY).await?;
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    let records: Vec<Record> = sqlx::query_as(sql)
        .bind(from)
        .bind(before)
        .bind(request.store().unwrap_or_default())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(records
        .into_iter()
        .map(
            |(key, name, orders, units, sales_cents, prep_seconds_total, prep_count)| ReportRow {
                key,
                name,
                orders,
                units,
                sales_cents,
                prep_seconds_total,
                prep_count,
            },
        )
        .collect())
}
