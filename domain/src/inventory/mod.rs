//! The store inventory aggregate: stock per SKU at one store, and the reservations orders hold.
//!
//! `available = on_hand - reserved`; `reserved <= on_hand` always holds, so nothing is ever
//! negative. When available stock falls below a SKU's threshold the aggregate raises a
//! low-stock warning, once per crossing; the warning clears (and re-arms) when available stock
//! is back at or above the threshold. Low stock also opens a numbered reorder (a purchase order
//! the flows send to the supplier) unless one of the SKU is open already: a reorder stays open
//! until `ReceiveDelivery` restocks against it, so repeated low-stock crossings never order twice.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{OpenReorder, StockLevel, StoreInventory};
pub use commands::InventoryCommand;
pub use error::InventoryError;
pub use events::{InventoryEvent, StockLine};
