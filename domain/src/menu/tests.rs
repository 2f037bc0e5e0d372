#![allow(clippy::unwrap_used)]

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::error::ErrorKind;
use crate::test_support::sku;
use crate::values::{ItemName, Money};

type MenuTest = TestFramework<Menu>;

fn latte_added() -> MenuEvent {
    MenuEvent::MenuItemAdded {
        sku: sku("LATTE-12"),
        name: ItemName::parse("Latte 12oz").unwrap(),
        price: Money::from_cents(450),
        category: Category::Drink,
    }
}

fn add_latte(cents: i64) -> MenuCommand {
    MenuCommand::AddMenuItem {
        sku: sku("LATTE-12"),
        name: ItemName::parse("Latte 12oz").unwrap(),
        price: Money::from_cents(cents),
        category: Category::Drink,
    }
}

#[test]
fn adds_an_item() {
    MenuTest::with(())
        .given_no_previous_events()
        .when(add_latte(450))
        .then_expect_events(vec![latte_added()]);
}

#[test]
fn refuses_a_duplicate_sku() {
    MenuTest::with(())
        .given(vec![latte_added()])
        .when(add_latte(500))
        .then_expect_error(MenuError::DuplicateSku {
            sku: sku("LATTE-12"),
        });
}

#[test]
fn refuses_free_negative_and_absurd_prices() {
    for cents in [0, -1, MAX_PRICE.cents() + 1] {
        let err = MenuTest::with(())
            .given_no_previous_events()
            .when(add_latte(cents))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{cents}");
    }
}

#[test]
fn changes_a_price() {
    MenuTest::with(())
        .given(vec![latte_added()])
        .when(MenuCommand::ChangePrice {
            sku: sku("LATTE-12"),
            price: Money::from_cents(475),
        })
        .then_expect_events(vec![MenuEvent::MenuItemPriceChanged {
            sku: sku("LATTE-12"),
            price: Money::from_cents(475),
        }]);
}

#[test]
fn unchanged_price_or_availability_records_nothing() {
    MenuTest::with(())
        .given(vec![latte_added()])
        .when(MenuCommand::ChangePrice {
            sku: sku("LATTE-12"),
            price: Money::from_cents(450),
        })
        .then_expect_events(vec![]);
    MenuTest::with(())
        .given(vec![latte_added()])
        .when(MenuCommand::SetAvailability {
            sku: sku("LATTE-12"),
            available: true,
        })
        .then_expect_events(vec![]);
}

#[test]
fn changing_an_unknown_item_is_not_found() {
    let err = MenuTest::with(())
        .given_no_previous_events()
        .when(MenuCommand::SetAvailability {
            sku: sku("LATTE-12"),
            available: false,
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        err,
        MenuError::UnknownSku {
            sku: sku("LATTE-12")
        }
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn item_view_follows_price_and_availability() {
    let mut menu = Menu::default();
    menu.apply(latte_added());
    menu.apply(MenuEvent::MenuItemAvailabilityChanged {
        sku: sku("LATTE-12"),
        available: false,
    });
    menu.apply(MenuEvent::MenuItemPriceChanged {
        sku: sku("LATTE-12"),
        price: Money::from_cents(500),
    });
    let view = menu.item(&sku("LATTE-12")).unwrap();
    assert_eq!(
        (view.price, view.available),
        (Money::from_cents(500), false)
    );
    assert_eq!(menu.item(&sku("ESPRESSO")), None);
}

#[test]
fn snapshot_round_trips_through_json() {
    let mut menu = Menu::default();
    for item in sample_menu() {
        menu.apply(MenuEvent::MenuItemAdded {
            sku: item.sku,
            name: item.name,
            price: item.price,
            category: item.category,
        });
    }
    let json = serde_json::to_string(&menu).unwrap();
    assert_eq!(serde_json::from_str::<Menu>(&json).unwrap(), menu);
}
