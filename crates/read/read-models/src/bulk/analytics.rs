//! The analytics tables' rows as binary `COPY` (PostgreSQL only: Redshift's `COPY` reads S3, not
//! the client, so a Redshift deployment rebuilds through the live path).

use super::CopyData;
use crate::analytics::{placed_rows, AnalyticsRow, AppliedRow, Batch, DimItem, Dimensions};
use crate::copy_binary::CopyBinary;
use crate::ledger::ChangeBatch;
use crate::order_changes::OrderChanges;

const FACT_ORDERS: usize = 0;
const FACT_ORDER_ITEMS: usize = 1;
const FACT_LOYALTY: usize = 2;
const FACT_STOCK: usize = 3;
const MARKERS: usize = 4;

/// One `COPY` per table, indexed by the constants above.
pub(super) const TABLES: &[&str] = &[
    "COPY fact_orders (order_id, store_id, customer_id, hour_key, placed_at, status, \
total_cents, line_count, item_quantity, accepted_at, preparing_at, ready_at, ended_at, \
prep_seconds, end_reason) FROM STDIN (FORMAT binary)",
    "COPY fact_order_items (order_id, line_no, store_id, sku, hour_key, placed_at, quantity, \
unit_price_cents, line_total_cents, customisation_count) FROM STDIN (FORMAT binary)",
    "COPY fact_loyalty (customer_id, sequence, entry_type, points, order_id, amount_cents, \
tier, hour_key, recorded_at) FROM STDIN (FORMAT binary)",
    "COPY fact_stock_movements (store_id, sequence, line_no, sku, movement, quantity, order_id, \
hour_key, recorded_at) FROM STDIN (FORMAT binary)",
    "COPY applied_sequences (aggregate_type, aggregate_id, last_sequence) \
FROM STDIN (FORMAT binary)",
];

const DIM_STORE: &str = "COPY dim_store (store_id, first_seen_at) FROM STDIN (FORMAT binary)";
const DIM_HOUR: &str =
    "COPY dim_hour (hour_key, hour_start, day, hour_of_day, day_of_week, month, year) \
FROM STDIN (FORMAT binary)";
const DIM_ITEM: &str = "COPY dim_item (sku, name, category, price_cents, available, updated_at) \
FROM STDIN (FORMAT binary)";

fn write(table: &mut CopyBinary, row: &impl AnalyticsRow) {
    row.write(table);
    table.end_row();
}

/// An order's fact rows, folded over all its commits so far (an order is always placed by its
/// first commit); its store and hour seen in `dimensions`.
pub(super) fn write_order(
    tables: &mut [CopyBinary],
    dimensions: &mut Dimensions,
    order_id: &str,
    changes: &OrderChanges,
) {
    let Some(placed) = &changes.placed else {
        return;
    };
    let (mut order, items) = placed_rows(order_id, placed, dimensions);
    order.apply(changes);
    write(&mut tables[FACT_ORDERS], &order);
    for item in &items {
        write(&mut tables[FACT_ORDER_ITEMS], item);
    }
}

/// The loyalty and stock facts of `changes`.
pub(super) fn write_ledgers(tables: &mut [CopyBinary], changes: &ChangeBatch) {
    for entry in &changes.loyalty {
        write(&mut tables[FACT_LOYALTY], entry);
    }
    for movement in &changes.stock {
        write(&mut tables[FACT_STOCK], movement);
    }
}

/// One marker row.
pub(super) fn write_marker(tables: &mut [CopyBinary], marker: &AppliedRow) {
    write(&mut tables[MARKERS], marker);
}

/// The menu items `held` folded, as `dim_item` rows of a fresh schema.
pub(super) fn items(held: &Batch) -> Vec<DimItem> {
    held.items
        .iter()
        .filter_map(|(sku, change)| DimItem::changed(sku, change, None))
        .collect()
}

/// `dim_store`, `dim_hour` and `dim_item`.
pub(super) fn shared_rows(dimensions: Dimensions, items: &[DimItem]) -> Vec<CopyData> {
    let (stores, hours) = dimensions.into_rows();
    [
        copy_rows(DIM_STORE, &stores),
        copy_rows(DIM_HOUR, &hours),
        copy_rows(DIM_ITEM, items),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn copy_rows<R: AnalyticsRow>(statement: &'static str, rows: &[R]) -> Option<CopyData> {
    let mut table = CopyBinary::default();
    for row in rows {
        write(&mut table, row);
    }
    let (data, rows) = table.take();
    (rows > 0).then_some(CopyData {
        statement,
        data,
        rows,
    })
}
