use crate::error::ErrorReason;
use crate::values::{CustomerId, Money, OrderId, Points};

/// Why a loyalty account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoyaltyError {
    /// The customer has never earned points, so there is nothing to redeem.
    #[error("this customer has no loyalty account yet")]
    NotFound,
    /// `EarnPoints` named a customer other than the account's.
    #[error("this loyalty account belongs to customer {expected}, not {got}")]
    WrongCustomer {
        /// The account holder.
        expected: CustomerId,
        /// The customer named by the command.
        got: CustomerId,
    },
    /// Points are earned on what was paid, which cannot be negative.
    #[error("points cannot be earned on a negative amount ({amount})")]
    NegativeAmount {
        /// The refused amount.
        amount: Money,
    },
    /// The order has already earned its points.
    #[error("order {order_id} has already earned points")]
    AlreadyEarned {
        /// The order.
        order_id: OrderId,
    },
    /// A redemption of zero points.
    #[error("a redemption must be of at least 1 point")]
    NothingToRedeem,
    /// The balance does not cover the redemption.
    #[error("cannot redeem {requested}: the balance is {balance}")]
    InsufficientPoints {
        /// The balance.
        balance: Points,
        /// The refused redemption.
        requested: Points,
    },
}

impl LoyaltyError {
    /// Why, as the stable code the API sends.
    pub fn reason(&self) -> ErrorReason {
        match self {
            LoyaltyError::NotFound => ErrorReason::LoyaltyAccountNotFound,
            LoyaltyError::WrongCustomer { .. } => ErrorReason::WrongCustomer,
            LoyaltyError::NegativeAmount { .. } => ErrorReason::NegativeAmount,
            LoyaltyError::AlreadyEarned { .. } => ErrorReason::PointsAlreadyEarned,
            LoyaltyError::NothingToRedeem => ErrorReason::NothingToRedeem,
            LoyaltyError::InsufficientPoints { .. } => ErrorReason::InsufficientPoints,
        }
    }
}
