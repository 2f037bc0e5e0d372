use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Category;
use crate::values::{ItemName, Money, Sku};

/// What happened to the menu.
///
/// Shipped events are never edited: a change of shape is a new `event_version` plus an upcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MenuEvent {
    /// An item was put on the menu, available.
    MenuItemAdded {
        /// The item.
        sku: Sku,
        /// Its name.
        name: ItemName,
        /// Its price.
        price: Money,
        /// Drink or food.
        category: Category,
    },
    /// An item's price changed.
    MenuItemPriceChanged {
        /// The item.
        sku: Sku,
        /// The new price.
        price: Money,
    },
    /// An item went off sale or back on sale.
    MenuItemAvailabilityChanged {
        /// The item.
        sku: Sku,
        /// Whether it can now be ordered.
        available: bool,
    },
}

impl DomainEvent for MenuEvent {
    fn event_type(&self) -> String {
        match self {
            MenuEvent::MenuItemAdded { .. } => "MenuItemAdded",
            MenuEvent::MenuItemPriceChanged { .. } => "MenuItemPriceChanged",
            MenuEvent::MenuItemAvailabilityChanged { .. } => "MenuItemAvailabilityChanged",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
