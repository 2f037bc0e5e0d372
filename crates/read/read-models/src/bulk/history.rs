//! The history tables' rows as binary `COPY`.

use super::CopyData;
use crate::analytics::AppliedRow;
use crate::copy_binary::{CopyBinary, NotAUuid, RowSink};
use crate::history::NewestCommit;
use crate::history_rows::{item_rows, order_row, timeline_rows};
use crate::ledger::ChangeBatch;
use crate::order_changes::OrderChanges;

const ORDERS: usize = 0;
const ORDER_ITEMS: usize = 1;
const STATUS_CHANGES: usize = 2;
const LOYALTY: usize = 3;
const STOCK: usize = 4;
const MARKERS: usize = 5;

/// One `COPY` per table, indexed by the constants above.
pub(super) const TABLES: &[&str] = &[
    "COPY orders (order_id, store_id, customer_id, status, note, total_cents, placed_at, \
accepted_at, payment_captured_at, payment_id, captured_cents, payment_declined, preparing_at, \
ready_at, ended_at, end_reason, refund_due) FROM STDIN (FORMAT binary)",
    "COPY order_items (order_id, line_no, sku, name, quantity, customisations, \
unit_price_cents, line_total_cents) FROM STDIN (FORMAT binary)",
    "COPY order_status_changes (order_id, sequence, event_type, status, changed_at, detail, \
actor) FROM STDIN (FORMAT binary)",
    "COPY loyalty_ledger (customer_id, sequence, entry_type, points, order_id, amount_cents, \
tier, reference, recorded_at) FROM STDIN (FORMAT binary)",
    "COPY stock_movements (store_id, sequence, line_no, sku, movement, quantity, order_id, \
reason, recorded_at) FROM STDIN (FORMAT binary)",
    "COPY applied_sequences (aggregate_type, aggregate_id, last_sequence) \
FROM STDIN (FORMAT binary)",
];

const VIEW_PROGRESS: &str =
    "COPY view_progress (last_position, last_committed_at) FROM STDIN (FORMAT binary)";

/// An order's rows, folded over all its commits so far: its `orders` row (an order is always
/// placed by its first commit), items and timeline. Refused when `order_id` is not a `uuid`
/// (the live path's `::uuid` cast refuses it too).
pub(super) fn write_order(
    tables: &mut [CopyBinary],
    order_id: &str,
    changes: &OrderChanges,
) -> Result<(), NotAUuid> {
    let row = order_row(changes);
    if let Some(placed) = row.placed {
        let orders = &mut tables[ORDERS];
        orders.uuid(Some(order_id))?;
        orders.text(Some(&placed.store_id));
        orders.text(Some(&placed.customer_id));
        orders.text(row.status);
        orders.text(Some(&placed.note));
        orders.bigint(Some(placed.total_cents));
        orders.timestamptz(Some(placed.placed_at));
        orders.timestamptz(row.accepted_at);
        orders.timestamptz(row.payment_captured_at);
        orders.text(row.payment_id);
        orders.bigint(row.captured_cents);
        orders.boolean(Some(row.payment_declined));
        orders.timestamptz(row.preparing_at);
        orders.timestamptz(row.ready_at);
        orders.timestamptz(row.ended_at);
        orders.text(row.end_reason);
        orders.boolean(row.refund_due);
        orders.end_row();
    }
    let items = &mut tables[ORDER_ITEMS];
    for item in item_rows(changes) {
        items.uuid(Some(order_id))?;
        items.integer(Some(item.line_no));
        items.text(Some(&item.sku));
        items.text(Some(item.name));
        items.integer(Some(item.quantity));
        items.text_array(item.customisations.iter().copied());
        items.bigint(Some(item.unit_price_cents));
        items.bigint(Some(item.line_total_cents));
        items.end_row();
    }
    let timeline = &mut tables[STATUS_CHANGES];
    for entry in timeline_rows(changes) {
        timeline.uuid(Some(order_id))?;
        timeline.bigint(Some(entry.sequence));
        timeline.text(Some(entry.event_type));
        timeline.text(entry.status);
        timeline.timestamptz(Some(entry.changed_at));
        timeline.text(entry.detail);
        timeline.text(entry.actor);
        timeline.end_row();
    }
    Ok(())
}

/// The loyalty ledger's and the stock movements' rows of `changes`. Refused when an order id
/// is not a `uuid`.
pub(super) fn write_ledgers(
    tables: &mut [CopyBinary],
    changes: &ChangeBatch,
) -> Result<(), NotAUuid> {
    let loyalty = &mut tables[LOYALTY];
    for entry in &changes.loyalty {
        loyalty.text(Some(&entry.customer_id));
        loyalty.bigint(Some(entry.sequence));
        loyalty.text(Some(entry.entry_type));
        loyalty.bigint(Some(entry.points));
        loyalty.uuid(entry.order_id.as_deref())?;
        loyalty.bigint(entry.amount_cents);
        loyalty.text(entry.tier);
        loyalty.text(entry.reference.as_deref());
        loyalty.timestamptz(Some(entry.recorded_at));
        loyalty.end_row();
    }
    let stock = &mut tables[STOCK];
    for movement in &changes.stock {
        stock.text(Some(&movement.store_id));
        stock.bigint(Some(movement.sequence));
        stock.integer(Some(movement.line_no));
        stock.text(Some(&movement.sku));
        stock.text(Some(movement.movement));
        stock.bigint(Some(movement.quantity));
        stock.uuid(movement.order_id.as_deref())?;
        stock.text(movement.reason.as_deref());
        stock.timestamptz(Some(movement.recorded_at));
        stock.end_row();
    }
    Ok(())
}

/// One marker row.
pub(super) fn write_marker(tables: &mut [CopyBinary], marker: &AppliedRow) {
    let markers = &mut tables[MARKERS];
    markers.text(Some(&marker.aggregate_type));
    markers.text(Some(&marker.aggregate_id));
    markers.bigint(Some(marker.last_sequence));
    markers.end_row();
}

/// `view_progress`: the newest commit written (none when nothing was).
pub(super) fn shared_rows(newest: NewestCommit) -> Vec<CopyData> {
    let Some(committed_at) = newest.committed_at else {
        return Vec::new();
    };
    let mut progress = CopyBinary::default();
    progress.bigint(Some(newest.position));
    progress.timestamptz(Some(committed_at));
    progress.end_row();
    let (data, rows) = progress.take();
    vec![CopyData {
        statement: VIEW_PROGRESS,
        data,
        rows,
    }]
}
