use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{OrderId, Quantity, Reason, Sku, StoreId};

/// A quantity of one SKU, as an order line reserves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    /// The item.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
}

/// What happened to a store's inventory.
///
/// Reservation events carry their lines so a projection can apply each event on its own.
/// Shipped events are never edited: a change of shape is a new `event_version` plus an upcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    /// A SKU's stock was counted and its threshold set.
    StockSet {
        /// The store.
        store_id: StoreId,
        /// The item.
        sku: Sku,
        /// The counted stock.
        on_hand: u32,
        /// The low-stock threshold.
        low_stock_threshold: u32,
    },
    /// A delivery arrived.
    StockRestocked {
        /// The item.
        sku: Sku,
        /// How many arrived.
        quantity: u32,
    },
    /// Stock was corrected by hand.
    StockAdjusted {
        /// The item.
        sku: Sku,
        /// The change.
        delta: i32,
        /// Why.
        reason: Reason,
    },
    /// Stock was reserved for every line of an order.
    StockReserved {
        /// The order.
        order_id: OrderId,
        /// What was reserved.
        lines: Vec<StockLine>,
    },
    /// An order's reservation was given back.
    ReservationReleased {
        /// The order.
        order_id: OrderId,
        /// What was given back.
        lines: Vec<StockLine>,
        /// Why.
        reason: Reason,
    },
    /// An order's reservation was consumed: the items left the store.
    ReservationCommitted {
        /// The order.
        order_id: OrderId,
        /// What left the store.
        lines: Vec<StockLine>,
    },
    /// Available stock of a SKU fell below its threshold.
    LowStockWarningRaised {
        /// The item.
        sku: Sku,
        /// Available stock now.
        available: u32,
        /// The threshold crossed.
        threshold: u32,
    },
    /// A reorder is suggested; always follows `LowStockWarningRaised`.
    ReorderRequested {
        /// The item.
        sku: Sku,
        /// Enough to bring available stock to twice the threshold.
        suggested_quantity: u32,
    },
    /// Available stock of a SKU is back at or above its threshold; the warning re-arms.
    LowStockWarningCleared {
        /// The item.
        sku: Sku,
        /// Available stock now.
        available: u32,
    },
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> String {
        match self {
            InventoryEvent::StockSet { .. } => "StockSet",
            InventoryEvent::StockRestocked { .. } => "StockRestocked",
            InventoryEvent::StockAdjusted { .. } => "StockAdjusted",
            InventoryEvent::StockReserved { .. } => "StockReserved",
            InventoryEvent::ReservationReleased { .. } => "ReservationReleased",
            InventoryEvent::ReservationCommitted { .. } => "ReservationCommitted",
            InventoryEvent::LowStockWarningRaised { .. } => "LowStockWarningRaised",
            InventoryEvent::ReorderRequested { .. } => "ReorderRequested",
            InventoryEvent::LowStockWarningCleared { .. } => "LowStockWarningCleared",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
