//! An order's changes as the history tables' rows: the one mapping the live projection (typed
//! arrays, `history.rs`) and replay's bulk rebuild (`COPY` rows, `bulk/history.rs`) both use.

use time::OffsetDateTime;

use super::order_changes::{OrderChanges, PlacedOrder};

/// The `orders` row a run of an order's events makes: what the run says, `None` elsewhere
/// (`placed` set: the order is new).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderRow<'b> {
    pub(crate) placed: Option<&'b PlacedOrder>,
    pub(crate) status: Option<&'static str>,
    pub(crate) accepted_at: Option<OffsetDateTime>,
    pub(crate) payment_captured_at: Option<OffsetDateTime>,
    pub(crate) payment_id: Option<&'b str>,
    pub(crate) captured_cents: Option<i64>,
    pub(crate) payment_declined: bool,
    pub(crate) preparing_at: Option<OffsetDateTime>,
    pub(crate) ready_at: Option<OffsetDateTime>,
    pub(crate) ended_at: Option<OffsetDateTime>,
    pub(crate) end_reason: Option<&'b str>,
    pub(crate) refund_due: Option<bool>,
}

/// One `order_items` row (lines are numbered from 0 in their order in `OrderPlaced`).
#[derive(Debug, Clone)]
pub(crate) struct ItemRow<'b> {
    pub(crate) line_no: i32,
    pub(crate) sku: String,
    pub(crate) name: &'b str,
    pub(crate) quantity: i32,
    pub(crate) customisations: Vec<&'b str>,
    pub(crate) unit_price_cents: i64,
    pub(crate) line_total_cents: i64,
}

/// One `order_status_changes` row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimelineRow<'b> {
    pub(crate) sequence: i64,
    pub(crate) event_type: &'static str,
    pub(crate) status: Option<&'static str>,
    pub(crate) changed_at: OffsetDateTime,
    pub(crate) detail: Option<&'b str>,
    pub(crate) actor: Option<&'b str>,
}

/// The `orders` row of `changes`.
pub(crate) fn order_row(changes: &OrderChanges) -> OrderRow<'_> {
    OrderRow {
        placed: changes.placed.as_ref(),
        status: changes.status.map(|s| s.as_str()),
        accepted_at: changes.accepted_at,
        payment_captured_at: changes.payment_captured_at,
        payment_id: changes.payment_id.as_deref(),
        captured_cents: changes.captured_cents,
        payment_declined: changes.payment_declined,
        preparing_at: changes.preparing_at,
        ready_at: changes.ready_at,
        ended_at: changes.ended_at,
        end_reason: changes.end_reason.as_deref(),
        refund_due: changes.refund_due,
    }
}

/// The `order_items` rows of `changes` (none unless it places the order).
pub(crate) fn item_rows(changes: &OrderChanges) -> impl Iterator<Item = ItemRow<'_>> {
    changes
        .placed
        .iter()
        .flat_map(|p| p.lines.iter().enumerate())
        .map(|(line_no, line)| ItemRow {
            line_no: line_no as i32,
            sku: line.sku.to_string(),
            name: line.name.as_str(),
            quantity: line.quantity.get() as i32,
            customisations: line.customisations.iter().map(|c| c.as_str()).collect(),
            unit_price_cents: line.unit_price.cents(),
            line_total_cents: line.line_total.cents(),
        })
}

/// The `order_status_changes` rows of `changes`: one per event.
pub(crate) fn timeline_rows(changes: &OrderChanges) -> impl Iterator<Item = TimelineRow<'_>> {
    changes.timeline.iter().map(|entry| TimelineRow {
        sequence: entry.sequence as i64,
        event_type: entry.event,
        status: entry.status.map(|s| s.as_str()),
        changed_at: entry.at,
        detail: entry.detail.as_deref(),
        actor: entry.actor.as_deref(),
    })
}
