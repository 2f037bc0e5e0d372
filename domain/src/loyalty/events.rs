use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Tier;
use crate::values::{CustomerId, ExternalRef, Money, OrderId, Points};

/// What happened to a loyalty account.
///
/// Shipped events are never edited: a change of shape is a new `event_version` plus an upcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoyaltyEvent {
    /// An order earned points.
    PointsEarned {
        /// The account holder.
        customer_id: CustomerId,
        /// The order.
        order_id: OrderId,
        /// What the customer paid.
        amount: Money,
        /// The tier whose multiplier applied (the tier before this earning).
        tier: Tier,
        /// Points credited.
        points: Points,
    },
    /// Lifetime points crossed a tier threshold; follows `PointsEarned` in the same commit.
    TierUpgraded {
        /// The previous tier.
        from: Tier,
        /// The new tier.
        to: Tier,
    },
    /// Points were spent.
    PointsRedeemed {
        /// Points debited.
        points: Points,
        /// What they were spent on.
        reference: ExternalRef,
    },
}

impl DomainEvent for LoyaltyEvent {
    fn event_type(&self) -> String {
        match self {
            LoyaltyEvent::PointsEarned { .. } => "PointsEarned",
            LoyaltyEvent::TierUpgraded { .. } => "TierUpgraded",
            LoyaltyEvent::PointsRedeemed { .. } => "PointsRedeemed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
