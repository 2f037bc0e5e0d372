//! The order aggregate: one customer's order at one store, from placement to completion.
//!
//! ```text
//! Placed -> Accepted -> Preparing -> Ready -> Completed
//!    |         |
//!    +---------+--> Rejected | Cancelled
//! ```

mod aggregate;
mod commands;
mod error;
mod events;
mod services;
#[cfg(test)]
mod tests;

pub use aggregate::{Order, OrderState, OrderStatus, PaymentStatus};
pub use commands::{OrderCommand, OrderLineRequest};
pub use error::OrderError;
pub use events::{OrderEvent, PricedLine, RejectionReason};
pub use services::{CatalogUnavailable, FixedMenu, MenuCatalog, OrderServices, PriceList};
