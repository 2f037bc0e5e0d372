use serde::{Deserialize, Serialize};

use super::StockLine;
use crate::values::{OrderId, Reason, Sku, StoreId};

/// What can be asked of a store's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryCommand {
    /// Sets a SKU's counted stock and threshold; the first one creates the store's inventory.
    SetStock {
        /// The store; must be the aggregate's own store.
        store_id: StoreId,
        /// The item.
        sku: Sku,
        /// The counted stock; not below what is reserved.
        on_hand: u32,
        /// Available stock below this raises a low-stock warning; 0 never warns.
        low_stock_threshold: u32,
    },
    /// A delivery arrived.
    Restock {
        /// The item, already stocked at this store.
        sku: Sku,
        /// How many arrived; above zero.
        quantity: u32,
    },
    /// A manual correction (breakage, miscount).
    AdjustStock {
        /// The item.
        sku: Sku,
        /// The change, non-zero; may not take on-hand stock below zero or below what is reserved.
        delta: i32,
        /// Why.
        reason: Reason,
    },
    /// Reserves stock for every line of an order, or for none.
    ReserveStock {
        /// The order; it may hold one reservation at a time.
        order_id: OrderId,
        /// What to reserve; one SKU may appear on several lines.
        lines: Vec<StockLine>,
    },
    /// Gives an order's reservation back (order cancelled or rejected).
    ReleaseReservation {
        /// The order.
        order_id: OrderId,
        /// Why.
        reason: Reason,
    },
    /// Consumes an order's reservation (order completed).
    CommitReservation {
        /// The order.
        order_id: OrderId,
    },
    /// The delivery of an open reorder arrived: restocks the SKU and closes the reorder.
    ReceiveDelivery {
        /// The open reorder it answers.
        reorder_number: u64,
        /// The item; must be the reorder's.
        sku: Sku,
        /// How many arrived; above zero.
        quantity: u32,
    },
}
