//! orderpipe's business rules: value objects, aggregates, commands and events.
//!
//! The crate does no I/O. Every aggregate implements [`cqrs_es::Aggregate`]: `handle` decides from
//! state and command (what it needs from outside arrives through the aggregate's `Services`),
//! `apply` folds an event into state. Every error names its [`ErrorReason`], a stable code with
//! one [`ErrorKind`], so the API sends the code and maps the kind to a status code in one place.
//!
//! | aggregate | `TYPE` | aggregate id |
//! |---|---|---|
//! | [`Order`] | `order` | the order id (hyphenated UUID) |
//! | [`StoreInventory`] | `inventory` | the store id |
//! | [`LoyaltyAccount`] | `loyalty` | the customer id |
//! | [`Menu`] | `menu` | always [`Menu::ID`] |

pub mod error;
pub mod inventory;
pub mod loyalty;
pub mod menu;
pub mod order;
#[cfg(test)]
mod test_support;
pub mod values;

pub use error::{DomainError, ErrorKind, ErrorReason, ValidationError};
pub use inventory::{InventoryCommand, InventoryError, InventoryEvent, StoreInventory};
pub use loyalty::{LoyaltyAccount, LoyaltyCommand, LoyaltyError, LoyaltyEvent, Tier};
pub use menu::{Menu, MenuCommand, MenuError, MenuEvent, MenuItemView};
pub use order::{
    FixedMenu, MenuCatalog, Order, OrderCommand, OrderError, OrderEvent, OrderServices,
};
pub use values::{Actor, CustomerId, Customisation, ExternalRef, ItemName, Money, Note, OrderId};
pub use values::{PaymentToken, Points, Quantity, Reason, Sku, StoreId};
