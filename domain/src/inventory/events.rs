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
    /// A purchase order for the SKU is opened (version 1.1): available stock is below the
    /// threshold and no reorder of the SKU is open. It stays open until a `DeliveryReceived`
    /// names it, and while it is open no other reorder of the SKU is requested.
    ReorderRequested {
        /// The item.
        sku: Sku,
        /// Enough to bring available stock to twice the threshold.
        suggested_quantity: u32,
        /// The reorder's number at this store, from 1 (version 1.1). Version 1.0 events were
        /// suggestions nothing acted on and that never opened a reorder; they have no number and
        /// read as 0, which is what an upcaster from 1.0 would write, so the default is the
        /// upcaster.
        #[serde(default)]
        reorder_number: u64,
    },
    /// The delivery of an open reorder arrived: the stock is added and the reorder closed.
    DeliveryReceived {
        /// The reorder it answers.
        reorder_number: u64,
        /// The item, the reorder's own.
        sku: Sku,
        /// How many arrived (may differ from what was suggested).
        quantity: u32,
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
            InventoryEvent::DeliveryReceived { .. } => "DeliveryReceived",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            InventoryEvent::ReorderRequested { .. } => "1.1",
            _ => "1.0",
        }
        .to_owned()
    }
}
