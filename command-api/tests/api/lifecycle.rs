//! An order's whole life over gRPC, and what the store holds afterwards.

use command_api::auth::Role;
use domain::Order;
use event_store::{PgEventStore, StoreConfig};
use proto::v1 as pb;

use crate::helpers::{new_order_id, place_order, spawn_app, transition, STORE};

#[tokio::test]
async fn an_order_goes_from_placed_to_completed_over_grpc() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();

    // The customer places it; the server prices it from the menu: 2 x 4.50 + 3.25.
    let placed = app
        .orders(Role::Customer, "c-1")
        .place_order(place_order(
            "p-1",
            &order_id,
            "c-1",
            &[("LATTE-12", 2), ("CROISSANT", 1)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.total.unwrap().cents, 1225);
    assert_eq!(placed.commit.unwrap().event_types, vec!["OrderPlaced"]);

    // The saga's work, done here by a service: reserve stock, accept, capture payment.
    let service = "order-saga";
    app.inventory(Role::Service, service)
        .reserve_stock(pb::ReserveStockRequest {
            idempotency_key: format!("reserve-{order_id}"),
            store_id: STORE.into(),
            order_id: order_id.clone(),
            lines: vec![
                pb::StockLine {
                    sku: "LATTE-12".into(),
                    quantity: 2,
                },
                pb::StockLine {
                    sku: "CROISSANT".into(),
                    quantity: 1,
                },
            ],
        })
        .await
        .unwrap();
    let mut saga = app.orders(Role::Service, service);
    saga.accept_order(transition("accept", &order_id))
        .await
        .unwrap();
    saga.record_payment_captured(pb::RecordPaymentCapturedRequest {
        idempotency_key: "pay".into(),
        order_id: order_id.clone(),
        payment_id: "pay_123".into(),
        amount: Some(pb::Money { cents: 1225 }),
    })
    .await
    .unwrap();

    // The barista moves it through the kitchen.
    let mut barista = app.orders(Role::Barista, "ana");
    let mut statuses = Vec::new();
    for (step, key) in [
        ("start", "k-start"),
        ("ready", "k-ready"),
        ("complete", "k-complete"),
    ] {
        let request = transition(key, &order_id);
        match step {
            "start" => barista.start_preparing(request).await.unwrap(),
            "ready" => barista.mark_ready(request).await.unwrap(),
            _ => barista.complete_order(request).await.unwrap(),
        };
        let order = barista
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        statuses.push(order.status());
    }
    assert_eq!(
        statuses,
        vec![
            pb::OrderStatus::Preparing,
            pb::OrderStatus::Ready,
            pb::OrderStatus::Completed
        ]
    );

    // The customer sees their completed order, priced lines and all.
    let order = app
        .orders(Role::Customer, "c-1")
        .get_order(pb::GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.status(), pb::OrderStatus::Completed);
    assert!(order.payment_captured);
    assert_eq!(order.lines[0].unit_price.unwrap().cents, 450);
    assert_eq!(order.lines[0].customisations, vec!["oat milk"]);
    assert_eq!(order.note, "extra hot, please");
    assert_eq!(
        order.version, 6,
        "placed, accepted, paid, preparing, ready, completed"
    );

    // Every committed event has its outbox row, in the same transaction.
    let uncovered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE NOT EXISTS (
             SELECT 1 FROM outbox o WHERE e.global_position BETWEEN o.first_position AND o.last_position
               AND o.aggregate_id = e.aggregate_id)",
    )
    .fetch_one(&app.database.pool)
    .await
    .unwrap();
    assert_eq!(uncovered, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_snapshotted_order_loads_the_same_as_a_full_replay() {
    // The test app snapshots every 3 events; six events cross two boundaries with commits of
    // one event each, and a declined payment commits two events at once.
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut saga = app.orders(Role::Service, "saga");
    saga.place_order(place_order("p", &order_id, "c-2", &[("MOCHA-16", 1)]))
        .await
        .unwrap();
    saga.accept_order(transition("a", &order_id)).await.unwrap();
    saga.record_payment_declined(pb::RecordPaymentDeclinedRequest {
        idempotency_key: "d".into(),
        order_id: order_id.clone(),
        reason: "card declined".into(),
    })
    .await
    .unwrap();

    let snapshot_version: i64 =
        sqlx::query_scalar("SELECT version FROM snapshots WHERE aggregate_id = $1")
            .bind(&order_id)
            .fetch_one(&app.database.pool)
            .await
            .unwrap();
    assert_eq!(
        snapshot_version, 4,
        "placed, accepted, payment declined, rejected"
    );
    let order = saga
        .get_order(pb::GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.status(), pb::OrderStatus::Rejected);
    assert_eq!(order.version, 4);

    // The state from the snapshot equals the state from every event (snapshots off).
    let load = |snapshot_every| {
        let pool = app.database.pool.clone();
        let order_id = order_id.clone();
        async move {
            let config = StoreConfig {
                snapshot_every,
                ..StoreConfig::default()
            };
            let store = PgEventStore::open(pool, config).await.unwrap();
            let loaded = store
                .aggregate_store::<Order>(vec![])
                .load(&order_id)
                .await
                .unwrap();
            (loaded.version(), loaded.state().clone())
        }
    };
    assert_eq!(load(3).await, load(0).await);
    app.stop().await;
}
