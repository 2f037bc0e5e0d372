//! Retries with the same idempotency key.

use command_api::auth::Role;
use futures::future::join_all;
use proto::v1 as pb;
use tonic::Code;

use crate::helpers::{
    metric_value, new_order_id, place_order, spawn_app, transition, IDEMPOTENCY_RETENTION_SECS,
};

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_outcome_and_appends_nothing() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut customer = app.orders(Role::Customer, "c-1");
    let request = place_order("place-once", &order_id, "c-1", &[("LATTE-12", 1)]);

    let first = customer
        .place_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    let events_after_first = app.event_count().await;
    let retry = customer.place_order(request).await.unwrap().into_inner();

    assert_eq!(
        app.event_count().await,
        events_after_first,
        "the retry appended nothing"
    );
    assert_eq!(retry.total, first.total);
    let (first, retry) = (first.commit.unwrap(), retry.commit.unwrap());
    assert!(!first.replayed);
    assert!(retry.replayed);
    assert_eq!(
        (
            retry.aggregate_id,
            retry.first_sequence,
            retry.last_sequence,
            retry.event_types
        ),
        (
            first.aggregate_id,
            first.first_sequence,
            first.last_sequence,
            first.event_types
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retried_transition_succeeds_again_instead_of_failing_as_illegal() {
    // Without the key, a second StartPreparing would be an illegal transition.
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut saga = app.orders(Role::Service, "saga");
    saga.place_order(place_order("p", &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    saga.accept_order(transition("a", &order_id)).await.unwrap();

    let concurrent_retries = (0..5).map(|_| {
        let mut saga = app.orders(Role::Service, "saga");
        let request = transition("a", &order_id);
        async move { saga.accept_order(request).await }
    });
    for outcome in join_all(concurrent_retries).await {
        assert!(outcome.unwrap().into_inner().replayed);
    }
    let order = saga
        .get_order(pb::GetOrderRequest { order_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.version, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_keys_are_scoped_per_caller() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut customer = app.orders(Role::Customer, "c-1");
    customer
        .place_order(place_order("k", &new_order_id(), "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    let events = app.event_count().await;

    // Same caller, same key, different order: refused, nothing appended.
    let reused = customer
        .place_order(place_order("k", &new_order_id(), "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert!(
        reused.message().contains("idempotency_key"),
        "{}",
        reused.message()
    );
    assert_eq!(app.event_count().await, events);

    // Another customer may use the same key text for their own order.
    app.orders(Role::Customer, "c-2")
        .place_order(place_order("k", &new_order_id(), "c-2", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_retry_that_would_change_nothing_still_returns_the_first_outcome() {
    // The menu records nothing for a price it already has, so the retry's second run appends
    // no events and never reaches the commit's key check: the stored outcome must answer it.
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut menu = app.menu(Role::Service, "back-office");
    let change = |key: &str, cents| pb::ChangePriceRequest {
        idempotency_key: key.into(),
        sku: "LATTE-12".into(),
        price: Some(pb::Money { cents }),
    };

    let first = menu.change_price(change("price-500", 500)).await.unwrap();
    let events = app.event_count().await;
    let retry = menu.change_price(change("price-500", 500)).await.unwrap();
    let (first, retry) = (first.into_inner(), retry.into_inner());
    assert!(!first.replayed);
    assert!(retry.replayed, "the retry is the first call's outcome");
    assert_eq!(retry.event_types, first.event_types);
    assert_eq!(app.event_count().await, events);

    // The same key on a different request that changes nothing (the latte is available
    // already) is still refused, though that request appends no events either.
    let reused = menu
        .set_availability(pb::SetAvailabilityRequest {
            idempotency_key: "price-500".into(),
            sku: "LATTE-12".into(),
            available: true,
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");
    assert!(
        reused.message().contains("idempotency_key"),
        "{}",
        reused.message()
    );
    assert_eq!(app.event_count().await, events);
    app.stop().await;
}

#[tokio::test]
async fn callers_whose_subject_and_key_join_to_the_same_text_keep_their_own_keys() {
    // Scopes were "<subject>/<key>" with '/' allowed in both: service "saga/x" with key "k" and
    // service "saga" with key "x/k" shared one scope, so the second caller's command was refused
    // as a reused key (or, with an identical request, answered with the other caller's outcome).
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let (first_order, second_order) = (new_order_id(), new_order_id());
    let mut first_caller = app.orders(Role::Service, "saga/x");
    let mut second_caller = app.orders(Role::Service, "saga");

    let first = first_caller
        .place_order(place_order("k", &first_order, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap()
        .into_inner()
        .commit
        .unwrap();
    let second = second_caller
        .place_order(place_order("x/k", &second_order, "c-2", &[("LATTE-12", 1)]))
        .await
        .expect("the second caller's key is its own")
        .into_inner()
        .commit
        .unwrap();

    assert_eq!((first.aggregate_id, first.replayed), (first_order, false));
    assert_eq!(
        (second.aggregate_id, second.replayed),
        (second_order, false)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_the_retention_window_is_a_new_command() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut saga = app.orders(Role::Service, "saga");
    saga.place_order(place_order("p", &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    saga.accept_order(transition("accept", &order_id))
        .await
        .unwrap();
    // Inside the window a retry replays.
    let retry = saga
        .accept_order(transition("accept", &order_id))
        .await
        .unwrap();
    assert!(retry.into_inner().replayed);

    // The key's commit falls out of the window; the app's background pruner removes it.
    sqlx::query(
        "UPDATE command_idempotency
         SET committed_at = committed_at - make_interval(secs => $1)
         WHERE idempotency_key = 'service:saga/accept'",
    )
    .bind(IDEMPOTENCY_RETENTION_SECS as f64 + 60.0)
    .execute(&app.database.pool)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM command_idempotency WHERE idempotency_key = 'service:saga/accept'",
        )
        .fetch_one(&app.database.pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key was not pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The same retry is now a new AcceptOrder, which the accepted order refuses.
    let status = saga
        .accept_order(transition("accept", &order_id))
        .await
        .expect_err("no stored outcome to replay");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let pruned = metric_value(
        app.admin_address,
        "orderpipe_store_idempotency_keys_pruned_total",
    )
    .await;
    assert!(pruned >= Some(1.0), "pruned keys are counted: {pruned:?}");
    app.stop().await;
}
