//! What the page shows, as the read API returns it: a store's open orders in columns, the day's
//! metrics and the low-stock warnings. Plain data; [`crate::views`] fills it from DynamoDB.

use serde::Serialize;

/// The board's columns, in the order an order moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    /// Placed or accepted: waiting for a barista (and possibly for its payment).
    Pending,
    /// Being made.
    Preparing,
    /// Waiting at the counter.
    Ready,
}

impl Column {
    /// The column of an open order's status (`None` for statuses that leave the board).
    pub fn of(status: &str) -> Option<Column> {
        match status {
            "placed" | "accepted" => Some(Column::Pending),
            "preparing" => Some(Column::Preparing),
            "ready" => Some(Column::Ready),
            _ => None,
        }
    }
}

/// One open order, as its card shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardOrder {
    /// The order's id.
    pub order_id: String,
    /// `placed`, `accepted`, `preparing` or `ready`.
    pub status: String,
    /// When it was placed (UTC, RFC 3339): the card's age timer counts from here.
    pub placed_at: String,
    /// When it entered its status.
    pub status_at: Option<String>,
    /// Whom it is for.
    pub customer_id: String,
    /// What to make.
    pub items: Vec<BoardItem>,
    /// The customer's note, if any.
    pub note: Option<String>,
    /// `captured` once paid, `declined`, or `None` while the payment is pending.
    pub payment_status: Option<String>,
    /// The order's total in cents.
    pub total_cents: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardItem {
    /// The menu item.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// How many.
    pub quantity: u32,
    /// Customisations (oat milk, extra shot, ...).
    pub customisations: Vec<String>,
}

/// A store's open orders by column, oldest first in each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrdersByColumn {
    /// Placed or accepted.
    pub pending: Vec<BoardOrder>,
    /// Being made.
    pub preparing: Vec<BoardOrder>,
    /// At the counter.
    pub ready: Vec<BoardOrder>,
}

impl OrdersByColumn {
    /// Sorts open orders (oldest first) into their columns; others are dropped.
    pub fn from_open(orders: impl IntoIterator<Item = BoardOrder>) -> Self {
        let mut columns = OrdersByColumn::default();
        for order in orders {
            match Column::of(&order.status) {
                Some(Column::Pending) => columns.pending.push(order),
                Some(Column::Preparing) => columns.preparing.push(order),
                Some(Column::Ready) => columns.ready.push(order),
                None => {}
            }
        }
        columns
    }

    /// How many orders are on the board.
    pub fn len(&self) -> usize {
        self.pending.len() + self.preparing.len() + self.ready.len()
    }

    /// Whether the board is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store's figures for one UTC business day (orders count on the day they were placed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayMetrics {
    /// The day, `YYYY-MM-DD` (UTC).
    pub business_day: String,
    /// Orders placed that day.
    pub orders_today: i64,
    /// Orders on the board now (placed on any day).
    pub active: i64,
    /// Orders placed that day and completed.
    pub completed: i64,
    /// Orders placed that day and cancelled.
    pub cancelled: i64,
    /// Orders placed that day and rejected.
    pub rejected: i64,
    /// Average time from starting preparation to ready, in milliseconds; `None` before the
    /// day's first order is ready.
    pub average_prep_ms: Option<i64>,
}

/// A SKU whose available stock fell below its threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockWarning {
    /// The SKU.
    pub sku: String,
    /// On hand minus reserved.
    pub available: i64,
    /// The store's threshold for it.
    pub threshold: i64,
    /// Since when it is low (UTC, RFC 3339).
    pub since: Option<String>,
    /// The reorder quantity suggested, if any.
    pub reorder_suggested: Option<i64>,
}

/// A purchase order the store has open: requested from the supplier, its delivery not yet
/// received (`ReceiveDelivery` closes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenReorder {
    /// The SKU.
    pub sku: String,
    /// The reorder's number at the store (what `ReceiveDelivery` names).
    pub reorder_number: i64,
    /// The quantity ordered.
    pub quantity: i64,
    /// Since when it is open (UTC, RFC 3339).
    pub since: Option<String>,
    /// On hand minus reserved now.
    pub available: i64,
}

/// Everything the page shows for a store: what the live stream pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Board {
    /// The store.
    pub store_id: String,
    /// Open orders by column.
    pub orders: OrdersByColumn,
    /// Today's figures.
    pub metrics: DayMetrics,
    /// Low-stock SKUs.
    pub stock_warnings: Vec<StockWarning>,
    /// Reorders awaiting their delivery.
    pub open_reorders: Vec<OpenReorder>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, status: &str) -> BoardOrder {
        BoardOrder {
            order_id: id.into(),
            status: status.into(),
            placed_at: "2026-01-01T08:00:00.000000Z".into(),
            status_at: None,
            customer_id: "c".into(),
            items: vec![],
            note: None,
            payment_status: None,
            total_cents: 0,
        }
    }

    #[test]
    fn placed_and_accepted_orders_wait_in_pending_and_ended_ones_leave() {
        let columns = OrdersByColumn::from_open([
            order("a", "placed"),
            order("b", "accepted"),
            order("c", "preparing"),
            order("d", "ready"),
            order("e", "completed"),
        ]);
        let ids = |orders: &[BoardOrder]| -> Vec<String> {
            orders.iter().map(|o| o.order_id.clone()).collect()
        };
        assert_eq!(ids(&columns.pending), ["a", "b"]);
        assert_eq!(ids(&columns.preparing), ["c"]);
        assert_eq!(ids(&columns.ready), ["d"]);
        assert_eq!(columns.len(), 4);
    }
}
