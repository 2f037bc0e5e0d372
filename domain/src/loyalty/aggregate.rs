use std::collections::BTreeSet;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{LoyaltyCommand, LoyaltyError, LoyaltyEvent};
use crate::values::{CustomerId, Money, OrderId, Points};

/// A loyalty tier, reached by lifetime points earned:
///
/// | tier | lifetime points from | points multiplier |
/// |---|---|---|
/// | Bronze | 0 | 100% |
/// | Silver | 1,000 | 125% |
/// | Gold | 5,000 | 150% |
/// | Platinum | 15,000 | 200% |
///
/// Redemptions do not lower lifetime points, so tiers never downgrade.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Tier {
    /// The starting tier.
    #[default]
    Bronze,
    /// From 1,000 lifetime points.
    Silver,
    /// From 5,000 lifetime points.
    Gold,
    /// From 15,000 lifetime points.
    Platinum,
}

impl Tier {
    /// The tier an account with these lifetime points has reached.
    pub fn for_lifetime_points(lifetime: Points) -> Tier {
        match lifetime.0 {
            15_000.. => Tier::Platinum,
            5_000.. => Tier::Gold,
            1_000.. => Tier::Silver,
            _ => Tier::Bronze,
        }
    }

    /// The points multiplier in percent.
    pub fn multiplier_percent(self) -> u64 {
        match self {
            Tier::Bronze => 100,
            Tier::Silver => 125,
            Tier::Gold => 150,
            Tier::Platinum => 200,
        }
    }

    /// Points earned on `amount` at this tier: 10 per whole dollar times the multiplier,
    /// rounded down, in integer arithmetic. A negative amount earns nothing.
    pub fn points_for(self, amount: Money) -> Points {
        let cents = u128::from(u64::try_from(amount.cents()).unwrap_or(0));
        let points = cents * 10 * u128::from(self.multiplier_percent()) / 10_000;
        // At most i64::MAX / 5, so the conversion cannot fail.
        Points(u64::try_from(points).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One customer's loyalty account; its id is the customer id. Opened by the first earning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyAccount {
    customer_id: Option<CustomerId>,
    balance: Points,
    lifetime_earned: Points,
    tier: Tier,
    /// Every order that earned here, so that redelivered earnings are refused.
    earned_orders: BTreeSet<OrderId>,
}

impl LoyaltyAccount {
    /// The schema version of this aggregate's snapshots: bump it whenever the serialised state or
    /// `apply` changes, so the event store replays snapshots an older build wrote instead of
    /// trusting them.
    pub const SNAPSHOT_VERSION: u32 = 1;

    /// The account holder, once the account is open.
    pub fn customer_id(&self) -> Option<&CustomerId> {
        self.customer_id.as_ref()
    }

    /// Points available to redeem.
    pub fn balance(&self) -> Points {
        self.balance
    }

    /// Points ever earned; decides the tier.
    pub fn lifetime_earned(&self) -> Points {
        self.lifetime_earned
    }

    /// The current tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    fn earned(
        &self,
        customer_id: CustomerId,
        order_id: OrderId,
        amount: Money,
    ) -> Result<LoyaltyEvent, LoyaltyError> {
        if let Some(expected) = &self.customer_id {
            if *expected != customer_id {
                return Err(LoyaltyError::WrongCustomer {
                    expected: expected.clone(),
                    got: customer_id,
                });
            }
        }
        if amount.is_negative() {
            return Err(LoyaltyError::NegativeAmount { amount });
        }
        if self.earned_orders.contains(&order_id) {
            return Err(LoyaltyError::AlreadyEarned { order_id });
        }
        Ok(LoyaltyEvent::PointsEarned {
            customer_id,
            order_id,
            amount,
            tier: self.tier,
            points: self.tier.points_for(amount),
        })
    }
}

impl Aggregate for LoyaltyAccount {
    const TYPE: &'static str = "loyalty";
    type Command = LoyaltyCommand;
    type Event = LoyaltyEvent;
    type Error = LoyaltyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: LoyaltyCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), LoyaltyError> {
        match command {
            LoyaltyCommand::EarnPoints {
                customer_id,
                order_id,
                amount,
            } => {
                let event = self.earned(customer_id, order_id, amount)?;
                let before = self.tier;
                sink.write(event, self).await;
                let after = Tier::for_lifetime_points(self.lifetime_earned);
                if after > before {
                    let upgrade = LoyaltyEvent::TierUpgraded {
                        from: before,
                        to: after,
                    };
                    sink.write(upgrade, self).await;
                }
            }
            LoyaltyCommand::RedeemPoints { points, reference } => {
                if self.customer_id.is_none() {
                    return Err(LoyaltyError::NotFound);
                }
                if points.0 == 0 {
                    return Err(LoyaltyError::NothingToRedeem);
                }
                if points > self.balance {
                    return Err(LoyaltyError::InsufficientPoints {
                        balance: self.balance,
                        requested: points,
                    });
                }
                sink.write(LoyaltyEvent::PointsRedeemed { points, reference }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: LoyaltyEvent) {
        match event {
            LoyaltyEvent::PointsEarned {
                customer_id,
                order_id,
                points,
                ..
            } => {
                self.customer_id.get_or_insert(customer_id);
                // u64 points cannot overflow in practice; saturating keeps replay panic-free.
                self.balance.0 = self.balance.0.saturating_add(points.0);
                self.lifetime_earned.0 = self.lifetime_earned.0.saturating_add(points.0);
                self.earned_orders.insert(order_id);
            }
            LoyaltyEvent::TierUpgraded { to, .. } => self.tier = self.tier.max(to),
            LoyaltyEvent::PointsRedeemed { points, .. } => {
                self.balance.0 = self.balance.0.saturating_sub(points.0);
            }
        }
    }
}
