//! WatchOrder: a customer follows their order while the saga and a barista drive it; the
//! stream resumes after a dropped connection and across a server restart from the last version
//! seen, and refuses orders that are not the caller's.

use std::time::Duration;

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::{Code, Streaming};

use crate::helpers::{
    new_order_id, place_order, spawn_app, spawn_app_with, transition, Options, TestApp, STORE,
};

const CUSTOMER: &str = "c-1";
/// How long a test waits for the next message before it calls the stream stuck.
const NEXT_MESSAGE: Duration = Duration::from_secs(10);

/// The steps after PlaceOrder, as the saga (service) and a barista issue them.
const STEPS: [&str; 5] = ["accept", "capture", "prepare", "ready", "complete"];

/// Places an order of [`CUSTOMER`] at [`STORE`]; its id.
async fn placed_order(app: &TestApp) -> String {
    let order_id = new_order_id();
    app.orders(Role::Customer, CUSTOMER)
        .place_order(place_order(
            &format!("place-{order_id}"),
            &order_id,
            CUSTOMER,
            &[("LATTE-12", 1)],
        ))
        .await
        .unwrap();
    order_id
}

/// A new app with the menu and stock in place, and an order of [`CUSTOMER`] they watch from
/// its start: the app, the order's id, the stream and its first message (the order as placed).
async fn an_app_with_a_watched_order(
) -> (TestApp, String, Streaming<pb::OrderChange>, pb::OrderChange) {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = placed_order(&app).await;
    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 0)
        .await
        .unwrap();
    let first = next(&mut stream).await.unwrap().unwrap();
    (app, order_id, stream, first)
}

/// Runs one of [`STEPS`] on `order_id`.
async fn step(app: &TestApp, order_id: &str, step: &str) {
    let key = format!("{step}-{order_id}");
    let mut saga = app.orders(Role::Service, "order-saga");
    let mut barista = app.orders(Role::Barista, "barista-1");
    match step {
        "accept" => saga.accept_order(transition(&key, order_id)).await,
        "capture" => {
            saga.record_payment_captured(pb::RecordPaymentCapturedRequest {
                idempotency_key: key,
                order_id: order_id.into(),
                payment_id: "pay_1".into(),
                amount: Some(pb::Money { cents: 450 }),
            })
            .await
        }
        "prepare" => barista.start_preparing(transition(&key, order_id)).await,
        "ready" => barista.mark_ready(transition(&key, order_id)).await,
        "complete" => barista.complete_order(transition(&key, order_id)).await,
        other => panic!("no step {other}"),
    }
    .unwrap_or_else(|status| panic!("{step} on {order_id}: {status:?}"));
}

async fn watch(
    app: &TestApp,
    role: Role,
    subject: &str,
    order_id: &str,
    after_version: u64,
) -> Result<Streaming<pb::OrderChange>, tonic::Status> {
    app.orders(role, subject)
        .watch_order(pb::WatchOrderRequest {
            order_id: order_id.into(),
            after_version,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next message, `None` when the stream ended with OK.
async fn next(
    stream: &mut Streaming<pb::OrderChange>,
) -> Result<Option<pb::OrderChange>, tonic::Status> {
    tokio::time::timeout(NEXT_MESSAGE, stream.message())
        .await
        .expect("the stream sent nothing for 10 s")
}

/// (version, status, event type) of a change: what a customer's app shows.
fn seen(change: &pb::OrderChange) -> (u64, pb::OrderStatus, String) {
    let order = change.order.as_ref().expect("a change carries the order");
    (order.version, order.status(), change.event_type.clone())
}

fn expected(versions: std::ops::RangeInclusive<u64>) -> Vec<(u64, pb::OrderStatus, String)> {
    use pb::OrderStatus::*;
    let all = [
        // The current state, first on a new watch, names no event.
        (1, Placed, ""),
        (2, Accepted, "OrderAccepted"),
        (3, Accepted, "PaymentCaptured"),
        (4, Preparing, "PreparationStarted"),
        (5, Ready, "OrderMarkedReady"),
        (6, Completed, "OrderCompleted"),
    ];
    all.into_iter()
        .filter(|(version, _, _)| versions.contains(version))
        .map(|(version, status, event)| (version, status, event.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_watcher_sees_placed_accepted_preparing_ready_completed_in_order_then_the_end() {
    let (app, order_id, mut stream, first) = an_app_with_a_watched_order().await;
    assert_eq!(
        (seen(&first).0, seen(&first).1, first.ended),
        (1, pb::OrderStatus::Placed, false),
        "the current state comes first"
    );
    assert_eq!(first.order.as_ref().unwrap().customer_id, CUSTOMER);

    // Each change is seen before the next command is issued: live, not read afterwards.
    let mut changes = Vec::new();
    for name in STEPS {
        step(&app, &order_id, name).await;
        let change = next(&mut stream).await.unwrap().expect("a change");
        changes.push(change);
    }
    let seen_changes: Vec<_> = changes.iter().map(seen).collect();
    assert_eq!(seen_changes, expected(2..=6));
    assert_eq!(
        changes.iter().map(|c| c.ended).collect::<Vec<_>>(),
        [false, false, false, false, true]
    );
    assert!(changes[1].order.as_ref().unwrap().payment_captured);
    assert!(
        next(&mut stream).await.unwrap().is_none(),
        "the stream ends (OK) once the order has ended"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reconnect_mid_way_misses_nothing_and_repeats_nothing() {
    let (app, order_id, mut stream, first) = an_app_with_a_watched_order().await;
    let mut received = vec![first];
    step(&app, &order_id, "accept").await;
    received.push(next(&mut stream).await.unwrap().unwrap());
    // The connection drops; the order moves on meanwhile.
    drop(stream);
    step(&app, &order_id, "capture").await;
    step(&app, &order_id, "prepare").await;

    let last_version = seen(received.last().unwrap()).0;
    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, last_version)
        .await
        .unwrap();
    received.push(next(&mut stream).await.unwrap().unwrap());
    received.push(next(&mut stream).await.unwrap().unwrap());
    step(&app, &order_id, "ready").await;
    step(&app, &order_id, "complete").await;
    while let Some(change) = next(&mut stream).await.unwrap() {
        received.push(change);
    }
    assert_eq!(
        received.iter().map(seen).collect::<Vec<_>>(),
        expected(1..=6),
        "every version once, in order, across the reconnect"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_watch_resumes_on_another_server_after_a_restart() {
    let first = spawn_app().await;
    first.seed_menu_and_stock(10).await;
    let order_id = placed_order(&first).await;
    let mut stream = watch(&first, Role::Customer, CUSTOMER, &order_id, 0)
        .await
        .unwrap();
    let mut received = vec![next(&mut stream).await.unwrap().unwrap()];
    step(&first, &order_id, "accept").await;
    received.push(next(&mut stream).await.unwrap().unwrap());

    // The server stops: the stream ends UNAVAILABLE (retryable) and says where to resume.
    let database = first.database.clone();
    let stopping = tokio::spawn(first.stop());
    let ended = next(&mut stream)
        .await
        .expect_err("a stopping server ends the stream");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("after_version=2"),
        "{}",
        ended.message()
    );
    stopping.await.unwrap();

    // Its replacement on the same store takes over; the order moved on in between.
    let second = spawn_app_with(Options {
        database: Some(database),
        ..Options::default()
    })
    .await;
    step(&second, &order_id, "capture").await;
    let mut stream = watch(&second, Role::Customer, CUSTOMER, &order_id, 2)
        .await
        .unwrap();
    received.push(next(&mut stream).await.unwrap().unwrap());
    for name in ["prepare", "ready", "complete"] {
        step(&second, &order_id, name).await;
        received.push(next(&mut stream).await.unwrap().unwrap());
    }
    assert!(next(&mut stream).await.unwrap().is_none());
    assert_eq!(
        received.iter().map(seen).collect::<Vec<_>>(),
        expected(1..=6)
    );
    second.stop().await;
}

#[tokio::test]
async fn only_the_customer_and_staff_of_the_store_may_watch_an_order() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = placed_order(&app).await;

    let refused = watch(&app, Role::Customer, "c-2", &order_id, 0)
        .await
        .expect_err("another customer's order");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let other_store = app.keys.mint("barista-2", Role::Barista, Some("s2"));
    let refused = app
        .orders_as(Some(&other_store))
        .watch_order(pb::WatchOrderRequest {
            order_id: order_id.clone(),
            after_version: 0,
        })
        .await
        .expect_err("another store's order");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    for (role, subject) in [
        (Role::Barista, "barista-1"),
        (Role::StoreManager, "manager"),
        (Role::Service, "svc"),
    ] {
        let mut stream = watch(&app, role, subject, &order_id, 0).await.unwrap();
        let first = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(first.order.unwrap().store_id, STORE, "{role}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_watch_requests_get_clear_errors() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = placed_order(&app).await;
    let cases = [
        (
            "not-a-uuid".to_owned(),
            0,
            Code::InvalidArgument,
            "order_id",
        ),
        (new_order_id(), 0, Code::NotFound, "does not exist"),
        (order_id.clone(), 2, Code::InvalidArgument, "after_version"),
    ];
    for (order, after_version, code, says) in cases {
        let refused = watch(&app, Role::Customer, CUSTOMER, &order, after_version)
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            code,
            "{order} after {after_version}: {refused:?}"
        );
        assert!(refused.message().contains(says), "{refused:?}");
    }
    let unauthenticated = app
        .orders_as(None)
        .watch_order(pb::WatchOrderRequest {
            order_id,
            after_version: 0,
        })
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn an_ended_order_is_sent_once_and_a_caught_up_watch_of_it_ends_at_once() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = placed_order(&app).await;
    app.orders(Role::Customer, CUSTOMER)
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: "cancel".into(),
            order_id: order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();

    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 0)
        .await
        .unwrap();
    let only = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(seen(&only).1, pb::OrderStatus::Cancelled);
    assert!(only.ended);
    assert!(next(&mut stream).await.unwrap().is_none());

    // Resuming one version back replays the cancellation with its reason.
    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 1)
        .await
        .unwrap();
    let change = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        (
            change.event_type.as_str(),
            change.reason.as_str(),
            change.ended
        ),
        ("OrderCancelled", "changed my mind", true)
    );
    assert!(next(&mut stream).await.unwrap().is_none());

    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 2)
        .await
        .unwrap();
    assert!(next(&mut stream).await.unwrap().is_none());
    app.stop().await;
}

/// Appends an event to order `order_id` as another build's writer would; its sequence.
async fn append_as_another_build(
    app: &TestApp,
    order_id: &str,
    event_type: &str,
    event_version: &str,
    payload: serde_json::Value,
) -> u64 {
    test_support::append_as_another_build(
        &app.database.pool,
        "order",
        order_id,
        event_type,
        event_version,
        payload,
    )
    .await
    .unwrap() as u64
}

/// Asserts that `status` is the retryable stop at an event this build does not read.
fn assert_stopped_at(status: &tonic::Status, event: &str, after_version: u64) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for says in [event.to_owned(), format!("after_version={after_version}")] {
        assert!(status.message().contains(&says), "{says}: {status:?}");
    }
}

#[tokio::test]
async fn an_event_a_newer_build_wrote_ends_the_watch_unavailable_after_the_changes_before_it() {
    let (app, order_id, mut stream, first) = an_app_with_a_watched_order().await;
    let mut received = vec![first];
    step(&app, &order_id, "accept").await;
    received.push(next(&mut stream).await.unwrap().unwrap());

    // A newer build ships an event type this one does not know (rolling deploy).
    let unknown = serde_json::json!({"OrderNoteAmended": {"note": "oat milk"}});
    append_as_another_build(&app, &order_id, "OrderNoteAmended", "1.0", unknown).await;
    let stopped = next(&mut stream)
        .await
        .expect_err("not passed, not skipped: the stream stops there");
    assert_stopped_at(&stopped, "OrderNoteAmended v1.0", 2);
    assert_eq!(
        received.iter().map(seen).collect::<Vec<_>>(),
        expected(1..=2),
        "every change before it was delivered"
    );

    // A new watch gets the order as far as this build reads it, then the same stop.
    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 0)
        .await
        .unwrap();
    assert_eq!(
        seen(&next(&mut stream).await.unwrap().unwrap()),
        (2, pb::OrderStatus::Accepted, String::new())
    );
    assert_stopped_at(&next(&mut stream).await.unwrap_err(), "OrderNoteAmended", 2);
    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 1)
        .await
        .unwrap();
    assert_eq!(
        seen(&next(&mut stream).await.unwrap().unwrap()),
        expected(2..=2)[0]
    );
    assert_stopped_at(&next(&mut stream).await.unwrap_err(), "OrderNoteAmended", 2);
    // A version only a newer server could have sent: the same retryable stop, at once.
    let refused = watch(&app, Role::Customer, CUSTOMER, &order_id, 3)
        .await
        .expect_err("this server cannot resume past what it does not read");
    assert_stopped_at(&refused, "OrderNoteAmended", 2);
    // A read of the order says the same, retryable, instead of an internal error.
    let refused = app
        .orders(Role::Customer, CUSTOMER)
        .get_order(pb::GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect_err("not read wrongly");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("OrderNoteAmended"),
        "{refused:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_newer_version_of_a_known_event_is_not_passed_as_the_older_one() {
    let (app, order_id, mut stream, _) = an_app_with_a_watched_order().await;

    // OrderAccepted 1.1 of a newer build: read as 1.0 it would lose its station.
    let newer = serde_json::json!({"OrderAccepted": {"station": "bar-2"}});
    append_as_another_build(&app, &order_id, "OrderAccepted", "1.1", newer).await;
    let stopped = next(&mut stream)
        .await
        .expect_err("the newer version is not delivered as 1.0");
    assert_stopped_at(&stopped, "OrderAccepted v1.1", 1);
    app.stop().await;
}

#[tokio::test]
async fn an_order_placed_by_an_older_build_is_delivered_as_the_store_reads_it() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    // OrderPlaced 1.0 had no payment token.
    let placed_v1_0 = serde_json::json!({"OrderPlaced": {
        "order_id": order_id, "store_id": STORE, "customer_id": CUSTOMER,
        "lines": [], "note": "no sugar", "total": 0}});
    append_as_another_build(&app, &order_id, "OrderPlaced", "1.0", placed_v1_0).await;

    let mut stream = watch(&app, Role::Customer, CUSTOMER, &order_id, 0)
        .await
        .unwrap();
    let first = next(&mut stream).await.unwrap().unwrap();
    let order = first.order.as_ref().unwrap();
    assert_eq!(
        (
            order.version,
            order.status(),
            order.note.as_str(),
            order.payment_token.as_str()
        ),
        (1, pb::OrderStatus::Placed, "no sugar", ""),
        "read as 1.1 with no payment token"
    );
    step(&app, &order_id, "accept").await;
    assert_eq!(
        seen(&next(&mut stream).await.unwrap().unwrap()),
        expected(2..=2)[0]
    );
    app.stop().await;
}
