use crate::error::ErrorReason;
use crate::values::{Money, Sku};

/// Why the menu refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenuError {
    /// The SKU is already on the menu.
    #[error("{sku} is already on the menu")]
    DuplicateSku {
        /// The SKU.
        sku: Sku,
    },
    /// The SKU is not on the menu.
    #[error("{sku} is not on the menu")]
    UnknownSku {
        /// The SKU.
        sku: Sku,
    },
    /// A price must be above zero and at most [`super::MAX_PRICE`].
    #[error("a menu price must be above $0.00 and at most {max}, got {price}")]
    InvalidPrice {
        /// The refused price.
        price: Money,
        /// The highest allowed price.
        max: Money,
    },
}

impl MenuError {
    /// Why, as the stable code the API sends.
    pub fn reason(&self) -> ErrorReason {
        match self {
            MenuError::DuplicateSku { .. } => ErrorReason::SkuAlreadyOnMenu,
            MenuError::UnknownSku { .. } => ErrorReason::MenuItemNotFound,
            MenuError::InvalidPrice { .. } => ErrorReason::InvalidPrice,
        }
    }
}
