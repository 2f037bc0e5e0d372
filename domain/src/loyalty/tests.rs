#![allow(clippy::unwrap_used)]

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::error::ErrorKind;
use crate::test_support::{customer, order_id};
use crate::values::{ExternalRef, Money, Points};

fn test() -> TestFramework<LoyaltyAccount> {
    TestFramework::with(())
}

fn earn(order: u128, cents: i64) -> LoyaltyCommand {
    LoyaltyCommand::EarnPoints {
        customer_id: customer("c1"),
        order_id: order_id(order),
        amount: Money::from_cents(cents),
    }
}

fn earned(order: u128, cents: i64, tier: Tier, points: u64) -> LoyaltyEvent {
    LoyaltyEvent::PointsEarned {
        customer_id: customer("c1"),
        order_id: order_id(order),
        amount: Money::from_cents(cents),
        tier,
        points: Points(points),
    }
}

fn redeem(points: u64) -> LoyaltyCommand {
    LoyaltyCommand::RedeemPoints {
        points: Points(points),
        reference: ExternalRef::parse("free-latte").unwrap(),
    }
}

fn redeemed(points: u64) -> LoyaltyEvent {
    LoyaltyEvent::PointsRedeemed {
        points: Points(points),
        reference: ExternalRef::parse("free-latte").unwrap(),
    }
}

fn silver() -> Vec<LoyaltyEvent> {
    vec![
        earned(1, 10_000, Tier::Bronze, 1_000),
        LoyaltyEvent::TierUpgraded {
            from: Tier::Bronze,
            to: Tier::Silver,
        },
    ]
}

// --- earning ---

#[test]
fn the_first_earning_opens_the_account_at_ten_points_a_dollar() {
    test()
        .given_no_previous_events()
        .when(earn(1, 450))
        .then_expect_events(vec![earned(1, 450, Tier::Bronze, 45)]);
}

#[test]
fn points_round_down_to_whole_points() {
    test()
        .given_no_previous_events()
        .when(earn(1, 459))
        .then_expect_events(vec![earned(1, 459, Tier::Bronze, 45)]);
    // Silver: 450 * 10 * 125 / 10_000 = 56.25.
    test()
        .given(silver())
        .when(earn(2, 450))
        .then_expect_events(vec![earned(2, 450, Tier::Silver, 56)]);
}

#[test]
fn each_tier_has_its_multiplier() {
    let ten_dollars = Money::from_cents(1_000);
    let points: Vec<u64> = [Tier::Bronze, Tier::Silver, Tier::Gold, Tier::Platinum]
        .map(|tier| tier.points_for(ten_dollars).0)
        .into();
    assert_eq!(points, [100, 125, 150, 200]);
    assert_eq!(Tier::Bronze.points_for(Money::from_cents(-100)), Points(0));
}

#[test]
fn tiers_start_at_their_thresholds() {
    let tier = |points| Tier::for_lifetime_points(Points(points));
    assert_eq!(tier(999), Tier::Bronze);
    assert_eq!(tier(1_000), Tier::Silver);
    assert_eq!(tier(4_999), Tier::Silver);
    assert_eq!(tier(5_000), Tier::Gold);
    assert_eq!(tier(14_999), Tier::Gold);
    assert_eq!(tier(15_000), Tier::Platinum);
}

#[test]
fn crossing_a_threshold_upgrades_after_earning_at_the_old_multiplier() {
    test()
        .given(vec![earned(1, 9_900, Tier::Bronze, 990)])
        .when(earn(2, 1_000))
        .then_expect_events(vec![
            earned(2, 1_000, Tier::Bronze, 100),
            LoyaltyEvent::TierUpgraded {
                from: Tier::Bronze,
                to: Tier::Silver,
            },
        ]);
}

#[test]
fn one_large_order_may_skip_a_tier() {
    test()
        .given_no_previous_events()
        .when(earn(1, 50_000))
        .then_expect_events(vec![
            earned(1, 50_000, Tier::Bronze, 5_000),
            LoyaltyEvent::TierUpgraded {
                from: Tier::Bronze,
                to: Tier::Gold,
            },
        ]);
}

#[test]
fn an_order_earns_once() {
    let err = test()
        .given(vec![earned(1, 450, Tier::Bronze, 45)])
        .when(earn(1, 450))
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::AlreadyEarned {
            order_id: order_id(1)
        }
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn an_account_belongs_to_one_customer() {
    test()
        .given(vec![earned(1, 450, Tier::Bronze, 45)])
        .when(LoyaltyCommand::EarnPoints {
            customer_id: customer("c2"),
            order_id: order_id(2),
            amount: Money::from_cents(450),
        })
        .then_expect_error(LoyaltyError::WrongCustomer {
            expected: customer("c1"),
            got: customer("c2"),
        });
}

#[test]
fn nothing_is_earned_on_a_negative_amount() {
    test()
        .given_no_previous_events()
        .when(earn(1, -450))
        .then_expect_error(LoyaltyError::NegativeAmount {
            amount: Money::from_cents(-450),
        });
}

// --- redeeming ---

#[test]
fn redeems_up_to_the_whole_balance() {
    test()
        .given(vec![earned(1, 450, Tier::Bronze, 45)])
        .when(redeem(45))
        .then_expect_events(vec![redeemed(45)]);
}

#[test]
fn a_redemption_never_overdraws() {
    let err = test()
        .given(vec![earned(1, 450, Tier::Bronze, 45), redeemed(40)])
        .when(redeem(6))
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::InsufficientPoints {
            balance: Points(5),
            requested: Points(6),
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot redeem 6 points: the balance is 5 points"
    );
}

#[test]
fn a_redemption_is_of_at_least_one_point() {
    test()
        .given(vec![earned(1, 450, Tier::Bronze, 45)])
        .when(redeem(0))
        .then_expect_error(LoyaltyError::NothingToRedeem);
}

#[test]
fn redeeming_needs_an_account() {
    test()
        .given_no_previous_events()
        .when(redeem(1))
        .then_expect_error(LoyaltyError::NotFound);
}

#[test]
fn spending_points_never_downgrades_the_tier() {
    let mut history = silver();
    history.push(redeemed(1_000));
    let mut account = LoyaltyAccount::default();
    history.iter().for_each(|e| account.apply(e.clone()));
    assert_eq!(account.balance(), Points(0));
    assert_eq!(account.lifetime_earned(), Points(1_000));
    assert_eq!(account.tier(), Tier::Silver);
    test()
        .given(history)
        .when(earn(2, 1_000))
        .then_expect_events(vec![earned(2, 1_000, Tier::Silver, 125)]);
}

#[test]
fn a_snapshot_round_trips_through_json() {
    let mut account = LoyaltyAccount::default();
    let mut history = silver();
    history.push(redeemed(100));
    history.into_iter().for_each(|e| account.apply(e));
    assert_eq!(account.customer_id(), Some(&customer("c1")));
    let json = serde_json::to_string(&account).unwrap();
    assert_eq!(
        serde_json::from_str::<LoyaltyAccount>(&json).unwrap(),
        account
    );
}
