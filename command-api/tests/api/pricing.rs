//! Orders are priced from the menu in the event store, one menu version per order.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use command_api::menu_catalog::StoredMenu;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{CqrsFramework, EventEnvelope, Query};
use domain::menu::Category;
use domain::order::{MenuCatalog, OrderLineRequest, OrderServices};
use domain::{
    Actor, CustomerId, ItemName, Menu, MenuCommand, Money, Note, Order, OrderCommand, OrderEvent,
    OrderId, Quantity, Sku, StoreId,
};
use event_store::{PgEventStore, StoreConfig};
use test_support::fresh_database;

fn sku(code: &str) -> Sku {
    Sku::parse(code).unwrap()
}

/// One order's unit prices in cents, line by line.
type LinePrices = Vec<(Sku, i64)>;

/// Keeps the prices of every `OrderPlaced`.
#[derive(Default, Clone)]
struct PlacedPrices(Arc<Mutex<Vec<LinePrices>>>);

#[async_trait]
impl Query<Order> for PlacedPrices {
    async fn dispatch(&self, _: &str, events: &[EventEnvelope<Order>]) {
        for event in events {
            if let OrderEvent::OrderPlaced { lines, .. } = &event.payload {
                let prices = lines
                    .iter()
                    .map(|line| (line.sku.clone(), line.unit_price.cents()))
                    .collect();
                self.0.lock().unwrap().push(prices);
            }
        }
    }
}

#[tokio::test]
async fn one_order_is_priced_from_one_menu_version_while_reloads_race() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let menus = store.aggregate_store::<Menu>(vec![]);
    let menu = Arc::new(CqrsFramework::new(menus.clone(), vec![], ()));
    for code in ["LATTE-12", "MOCHA-16"] {
        menu.execute(
            Menu::ID,
            MenuCommand::AddMenuItem {
                sku: sku(code),
                name: ItemName::parse(code).unwrap(),
                price: Money::from_cents(100),
                category: Category::Drink,
            },
        )
        .await
        .unwrap();
    }
    // Reloaded on every use, so reloads race the price changes below as often as possible.
    let catalog = StoredMenu::new(menus, Duration::ZERO);
    let placed = PlacedPrices::default();
    let orders = CqrsFramework::new(
        MemStore::<Order>::default(),
        vec![Box::new(placed.clone())],
        OrderServices::new(Arc::new(catalog)),
    );

    // Prices move in lockstep, LATTE first: every menu version has LATTE at MOCHA's price or one
    // cent above it, so an order priced from two versions shows MOCHA above LATTE, or two
    // different prices for one item.
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicI64::new(0));
    let changer = tokio::spawn({
        let (menu, stop, changes) = (menu.clone(), stop.clone(), changes.clone());
        async move {
            let mut cents = 100;
            while !stop.load(Ordering::Relaxed) {
                cents += 1;
                changes.fetch_add(1, Ordering::Relaxed);
                for code in ["LATTE-12", "MOCHA-16"] {
                    menu.execute(
                        Menu::ID,
                        MenuCommand::ChangePrice {
                            sku: sku(code),
                            price: Money::from_cents(cents),
                        },
                    )
                    .await
                    .unwrap();
                }
            }
        }
    });
    // At least 60 orders, and on until the menu changed 20 times meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut placed_orders = 0;
    while placed_orders < 60 || changes.load(Ordering::Relaxed) < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the menu changer stalled"
        );
        placed_orders += 1;
        let order_id = OrderId::from(uuid::Uuid::new_v4());
        let lines = (0..10)
            .map(|n| OrderLineRequest {
                sku: sku(if n % 2 == 0 { "LATTE-12" } else { "MOCHA-16" }),
                quantity: Quantity::new(1).unwrap(),
                customisations: vec![],
            })
            .collect();
        orders
            .execute(
                &order_id.to_string(),
                OrderCommand::PlaceOrder {
                    order_id,
                    store_id: StoreId::parse("s1").unwrap(),
                    customer_id: CustomerId::parse("c-1").unwrap(),
                    lines,
                    note: Note::parse("").unwrap(),
                    payment_token: None,
                    actor: Actor::Service,
                },
            )
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    changer.await.unwrap();

    for (number, prices) in placed.0.lock().unwrap().iter().enumerate() {
        let price_of = |code: &str| -> Vec<i64> {
            let mut seen: Vec<i64> = prices
                .iter()
                .filter(|(sku, _)| sku.as_str() == code)
                .map(|(_, cents)| *cents)
                .collect();
            seen.dedup();
            seen
        };
        let (latte, mocha) = (price_of("LATTE-12"), price_of("MOCHA-16"));
        assert!(
            latte.len() == 1 && mocha.len() == 1 && (latte[0] - mocha[0]) as u64 <= 1,
            "order {number} was priced from more than one menu version: {prices:?}"
        );
    }
}

#[tokio::test]
async fn pricing_goes_on_from_the_current_menu_while_a_reload_waits() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let menus = store.aggregate_store::<Menu>(vec![]);
    CqrsFramework::new(menus.clone(), vec![], ())
        .execute(
            Menu::ID,
            MenuCommand::AddMenuItem {
                sku: sku("LATTE-12"),
                name: ItemName::parse("Latte").unwrap(),
                price: Money::from_cents(450),
                category: Category::Drink,
            },
        )
        .await
        .unwrap();
    let catalog = Arc::new(StoredMenu::new(menus, Duration::from_millis(100)));
    catalog.current_menu().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    // The menu is stale and its reload cannot read the events table (as behind a stalled
    // database): the caller that reloads waits...
    let mut blocker = database.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let reload = tokio::spawn({
        let catalog = catalog.clone();
        async move { catalog.current_menu().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reload.is_finished(), "the reload waits for the lock");

    // ...and every other order is priced from the menu it replaces, without waiting.
    let menu = tokio::time::timeout(Duration::from_secs(1), catalog.current_menu())
        .await
        .expect("pricing does not wait for the reload")
        .unwrap();
    assert_eq!(
        menu.item(&sku("LATTE-12")).unwrap().price,
        Money::from_cents(450)
    );

    blocker.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), reload)
        .await
        .expect("the reload finishes once the lock is gone")
        .unwrap()
        .unwrap();
}
