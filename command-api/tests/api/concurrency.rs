//! Many commands on one aggregate at once, through two API processes sharing one store.

use command_api::auth::Role;
use futures::future::join_all;
use proto::v1 as pb;
use tonic::Code;

use crate::helpers::{new_order_id, place_order, spawn_app, spawn_app_with, Options, STORE};

#[tokio::test]
async fn fifty_concurrent_reservations_on_one_store_lose_nothing_and_never_go_below_zero() {
    // Two API instances on one database: conflicts between them go through the store's
    // optimistic concurrency and retries, within each through its per-aggregate queue.
    let first = spawn_app().await;
    let second = spawn_app_with(Options {
        database: Some(first.database.clone()),
        ..Options::default()
    })
    .await;
    first.seed_menu_and_stock(30).await;

    let reservations = (0..50).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let mut inventory = app.inventory(Role::Service, "saga");
        let request = pb::ReserveStockRequest {
            idempotency_key: format!("reserve-{i}"),
            store_id: STORE.into(),
            order_id: new_order_id(),
            lines: vec![pb::StockLine {
                sku: "LATTE-12".into(),
                quantity: 1,
            }],
        };
        async move {
            // ABORTED is the contract's "lost the race, send it again": on a loaded machine one
            // instance can lose every one of its in-process retries to the other, and a caller
            // then retries with the same key, as the saga does.
            let mut attempts = 0;
            loop {
                match inventory.reserve_stock(request.clone()).await {
                    Err(status) if status.code() == Code::Aborted && attempts < 5 => attempts += 1,
                    outcome => break outcome,
                }
            }
        }
    });
    let outcomes = join_all(reservations).await;

    let reserved = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let refused: Vec<Code> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err().map(tonic::Status::code))
        .collect();
    assert_eq!(reserved, 30, "exactly the stock on hand was reserved");
    assert!(
        refused.iter().all(|code| *code == Code::FailedPrecondition),
        "the rest were refused for lack of stock, not lost: {refused:?}"
    );
    let latte = first.stock_level("LATTE-12").await;
    assert_eq!(
        (latte.on_hand, latte.reserved, latte.available),
        (30, 30, 0)
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'inventory'
           AND event_type = 'StockReserved'",
    )
    .fetch_one(&first.database.pool)
    .await
    .unwrap();
    assert_eq!(events, 30);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_restocks_all_count() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(0).await;

    let restocks = (0..50).map(|i| {
        let mut inventory = app.inventory(Role::StoreManager, "manager");
        async move {
            inventory
                .restock(pb::RestockRequest {
                    idempotency_key: format!("delivery-{i}"),
                    store_id: STORE.into(),
                    sku: "CROISSANT".into(),
                    quantity: 2,
                })
                .await
        }
    });
    for outcome in join_all(restocks).await {
        outcome.unwrap();
    }

    let croissant = app.stock_level("CROISSANT").await;
    assert_eq!(croissant.on_hand, 100);
    app.stop().await;
}

#[tokio::test]
async fn a_command_that_conflicts_on_every_attempt_gets_aborted_after_conflict_retries() {
    const RETRIES: u32 = 3;
    let app = spawn_app_with(Options {
        conflict_retries: Some(RETRIES),
        ..Options::default()
    })
    .await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    // Another writer that always wins the race for this order: every append of its events
    // meets a unique violation, as when a writer bypassing the position lock took the same
    // sequence. A sequence is not rolled back with the failed transaction, so it counts the
    // attempts.
    sqlx::raw_sql(&format!(
        "CREATE SEQUENCE conflicting_appends;
         CREATE FUNCTION always_taken() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM nextval('conflicting_appends');
             RAISE unique_violation USING MESSAGE = 'sequence taken by another writer';
         END $$;
         CREATE TRIGGER always_taken BEFORE INSERT ON events FOR EACH ROW
             WHEN (NEW.aggregate_id = '{order_id}') EXECUTE FUNCTION always_taken();"
    ))
    .execute(&app.database.pool)
    .await
    .unwrap();
    let before = app.event_count().await;

    let contested = place_order("contested", &order_id, "c-1", &[("LATTE-12", 1)]);
    let mut customer = app.orders(Role::Customer, "c-1");
    let status = customer.place_order(contested.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM conflicting_appends")
        .fetch_one(&app.database.pool)
        .await
        .unwrap();
    assert_eq!(
        attempts,
        i64::from(RETRIES) + 1,
        "the first attempt and conflict_retries reloads, no more"
    );
    assert_eq!(app.event_count().await, before, "ABORTED: nothing appended");

    // Once the other writer is gone, the same key goes through.
    sqlx::raw_sql("DROP TRIGGER always_taken ON events")
        .execute(&app.database.pool)
        .await
        .unwrap();
    customer.place_order(contested).await.unwrap();
    app.stop().await;
}
