//! The store inventory aggregate: stock per SKU at one store, and the reservations orders hold.
//!
//! `available = on_hand - reserved`; `reserved <= on_hand` always holds, so nothing is ever
//! negative. When available stock falls below a SKU's threshold the aggregate raises a
//! low-stock warning and a reorder request, once per crossing; the warning clears (and re-arms)
//! when available stock is back at or above the threshold.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{StockLevel, StoreInventory};
pub use commands::InventoryCommand;
pub use error::InventoryError;
pub use events::{InventoryEvent, StockLine};
