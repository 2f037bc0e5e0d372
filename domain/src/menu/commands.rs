use serde::{Deserialize, Serialize};

use super::Category;
use crate::values::{ItemName, Money, Sku};

/// What can be asked of the menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MenuCommand {
    /// Puts a new item on the menu, available at once.
    AddMenuItem {
        /// The new item's SKU; must not be on the menu yet.
        sku: Sku,
        /// What customers see.
        name: ItemName,
        /// Above zero and at most [`super::MAX_PRICE`].
        price: Money,
        /// Drink or food.
        category: Category,
    },
    /// Changes an item's price; orders already placed keep the price they were placed at.
    ChangePrice {
        /// The item.
        sku: Sku,
        /// Above zero and at most [`super::MAX_PRICE`].
        price: Money,
    },
    /// Takes an item off sale (sold out, seasonal) or back on sale.
    SetAvailability {
        /// The item.
        sku: Sku,
        /// Whether it can be ordered.
        available: bool,
    },
}
