use crate::error::ErrorReason;
use crate::values::{OrderId, Sku, StoreId};

/// Why a store's inventory refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// The store has no inventory yet; `SetStock` creates it.
    #[error("this store has no inventory yet")]
    NotFound,
    /// `SetStock` named a store other than the aggregate's.
    #[error("this inventory belongs to store {expected}, not {got}")]
    WrongStore {
        /// The aggregate's store.
        expected: StoreId,
        /// The store named by the command.
        got: StoreId,
    },
    /// The SKU is not stocked at this store.
    #[error("{sku} is not stocked at store {store_id}")]
    UnknownSku {
        /// The store.
        store_id: StoreId,
        /// The item.
        sku: Sku,
    },
    /// Not enough available stock for a reservation; nothing was reserved.
    #[error("not enough stock of {sku} at store {store_id}: {available} available, {requested} requested")]
    InsufficientStock {
        /// The store.
        store_id: StoreId,
        /// The item.
        sku: Sku,
        /// Available stock.
        available: u32,
        /// What the order needs in total.
        requested: u32,
    },
    /// The order already holds a reservation here.
    #[error("order {order_id} already holds a reservation")]
    AlreadyReserved {
        /// The order.
        order_id: OrderId,
    },
    /// The order's reservation here was already released or committed; an order reserves once.
    #[error("order {order_id} already had its reservation released or committed")]
    ReservationClosed {
        /// The order.
        order_id: OrderId,
    },
    /// The order holds no reservation here (never made, released or committed).
    #[error("order {order_id} holds no reservation")]
    NoSuchReservation {
        /// The order.
        order_id: OrderId,
    },
    /// A reservation has more lines than [`super::StoreInventory::MAX_RESERVATION_LINES`].
    #[error("a reservation may have at most {max} lines, got {count}")]
    TooManyLines {
        /// Lines in the command.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A reservation needs at least one line.
    #[error("a reservation needs at least one line")]
    EmptyReservation,
    /// A restock of zero or an adjustment by zero.
    #[error("a restock or adjustment of {sku} must change the stock")]
    NoStockChange {
        /// The item.
        sku: Sku,
    },
    /// On-hand stock would exceed what can be counted.
    #[error("on-hand stock of {sku} would exceed {}", u32::MAX)]
    StockOverflow {
        /// The item.
        sku: Sku,
    },
    /// An adjustment would take on-hand stock below zero.
    #[error("adjusting {sku} by {delta} would leave negative stock: {on_hand} on hand")]
    NegativeStock {
        /// The item.
        sku: Sku,
        /// On-hand stock now.
        on_hand: u32,
        /// The refused change.
        delta: i32,
    },
    /// On-hand stock would fall below what orders have reserved.
    #[error("on-hand stock of {sku} cannot become {on_hand}: {reserved} are reserved for orders")]
    BelowReserved {
        /// The item.
        sku: Sku,
        /// The refused on-hand stock.
        on_hand: u32,
        /// Reserved stock.
        reserved: u32,
    },
    /// `ReceiveDelivery` named a reorder this store never requested.
    #[error("store {store_id} has no reorder {reorder_number}")]
    NoSuchReorder {
        /// The store.
        store_id: StoreId,
        /// The reorder named.
        reorder_number: u64,
    },
    /// `ReceiveDelivery` named a reorder whose delivery was already received.
    #[error("reorder {reorder_number} was already delivered")]
    ReorderAlreadyDelivered {
        /// The reorder named.
        reorder_number: u64,
    },
    /// `ReceiveDelivery` named another SKU than the reorder's.
    #[error("reorder {reorder_number} is for {expected}, not {got}")]
    DeliveryOfWrongSku {
        /// The reorder named.
        reorder_number: u64,
        /// The reorder's SKU.
        expected: Sku,
        /// The SKU delivered.
        got: Sku,
    },
}

impl InventoryError {
    /// Why, as the stable code the API sends.
    pub fn reason(&self) -> ErrorReason {
        match self {
            InventoryError::NotFound => ErrorReason::InventoryNotFound,
            InventoryError::WrongStore { .. } => ErrorReason::WrongStore,
            InventoryError::UnknownSku { .. } => ErrorReason::SkuNotStocked,
            InventoryError::InsufficientStock { .. } => ErrorReason::OutOfStock,
            InventoryError::AlreadyReserved { .. } => ErrorReason::AlreadyReserved,
            InventoryError::ReservationClosed { .. } => ErrorReason::ReservationClosed,
            InventoryError::NoSuchReservation { .. } => ErrorReason::NoSuchReservation,
            InventoryError::TooManyLines { .. } => ErrorReason::TooManyLines,
            InventoryError::EmptyReservation => ErrorReason::EmptyReservation,
            InventoryError::NoStockChange { .. } => ErrorReason::NoStockChange,
            InventoryError::StockOverflow { .. } => ErrorReason::StockOverflow,
            InventoryError::NegativeStock { .. } => ErrorReason::NegativeStock,
            InventoryError::BelowReserved { .. } => ErrorReason::BelowReserved,
            InventoryError::NoSuchReorder { .. } => ErrorReason::NoSuchReorder,
            InventoryError::ReorderAlreadyDelivered { .. } => ErrorReason::ReorderAlreadyDelivered,
            InventoryError::DeliveryOfWrongSku { .. } => ErrorReason::DeliveryOfWrongSku,
        }
    }
}
