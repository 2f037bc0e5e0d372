use serde::{Deserialize, Serialize};

use crate::values::{CustomerId, ExternalRef, Money, OrderId, Points};

/// What can be asked of a loyalty account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoyaltyCommand {
    /// Credits the points a completed order earns; the first one opens the account.
    EarnPoints {
        /// The account holder; must be the aggregate's own customer.
        customer_id: CustomerId,
        /// The order; each order earns once.
        order_id: OrderId,
        /// What the customer paid; not negative.
        amount: Money,
    },
    /// Spends points.
    RedeemPoints {
        /// How many; above zero and at most the balance.
        points: Points,
        /// What they were spent on (reward code, order id...).
        reference: ExternalRef,
    },
}
