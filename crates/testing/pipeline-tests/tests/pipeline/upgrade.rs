//! A rolling deploy: the command API ships an event before the projectors and the flows know
//! it. The old consumers stop exactly the aggregates that carry it (every other aggregate goes
//! on), lose nothing, and once upgraded resume them in order: the views end equal to a fresh
//! build, and the saga does what it would have done, once.

use std::collections::BTreeSet;

use std::future::pending;
use std::sync::Arc;

use commit_log::Vocabulary;
use flows::app::Application;
use flows::payments::SandboxGateway;
use flows::settings::Settings;
use kinesis_consumer::{ParkedKind, ParkedStore};
use proto::v1 as pb;
use tokio::task::JoinHandle;

use crate::flows_redrive::{place_order, saga_settings};
use crate::support::{eventually, Pipeline, STORE};
use crate::workload::{open_the_store, run_order, Clients, Fate};

const VIEWS: [&str; 3] = ["active_orders", "history", "analytics"];

async fn status(pipeline: &Pipeline, order_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM history_upgraded.orders WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_optional(&pipeline.views_db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_the_projectors_do_not_know_yet_stops_its_order_until_the_upgrade_then_the_views_equal_a_fresh_build(
) {
    let pipeline = Pipeline::start().await;
    let views = pipeline.views("upgraded").await;
    // The build running before the upgrade: it predates PreparationStarted.
    let old_build = Vocabulary::this_build()
        .clone()
        .without_event("order", "PreparationStarted");
    let old_worker = pipeline.spawn_worker_reading(&views, "old-build", old_build);
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let (completed, _) = run_order(&pipeline, &mut clients, "c-1", Fate::Completed).await;
    let (open, _) = run_order(&pipeline, &mut clients, "c-2", Fate::Open).await;
    let (cancelled, _) = run_order(&pipeline, &mut clients, "c-3", Fate::Cancelled).await;
    pipeline.wait_published().await;
    // The checkpoints move past what is parked: the shards are not stalled.
    pipeline.wait_caught_up(&views).await;

    // Only the order that went into preparation stopped, in every view, at that commit.
    let parked = ParkedStore::new(pipeline.dynamodb.clone(), &views.parked_table);
    for view in VIEWS {
        let stopped = parked.aggregates(view).await.unwrap();
        assert_eq!(
            stopped,
            BTreeSet::from([("order".to_owned(), completed.clone())]),
            "{view}"
        );
        let waiting = parked.list(view, "order", &completed).await.unwrap();
        let kinds: Vec<ParkedKind> = waiting.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                ParkedKind::NotUnderstood,
                ParkedKind::Behind,
                ParkedKind::Behind
            ],
            "{view}: preparing, then ready and completed behind it"
        );
        assert!(waiting[0].reason.contains("PreparationStarted"), "{view}");
    }
    assert_eq!(
        status(&pipeline, &completed).await.as_deref(),
        Some("accepted")
    );
    assert_eq!(status(&pipeline, &open).await.as_deref(), Some("accepted"));
    assert_eq!(
        status(&pipeline, &cancelled).await.as_deref(),
        Some("cancelled")
    );

    // The upgrade: the old worker goes away, a build that knows the event takes the leases over
    // and resumes the stopped order on its own.
    old_worker.abort();
    let _ = old_worker.await;
    let new_worker = pipeline.spawn_worker(&views, "new-build");
    eventually("the new build to resume the stopped order", || async {
        let mut empty = true;
        for view in VIEWS {
            empty &= parked.aggregates(view).await.unwrap().is_empty();
        }
        empty && status(&pipeline, &completed).await.as_deref() == Some("completed")
    })
    .await;
    // Work after the upgrade flows as usual.
    run_order(&pipeline, &mut clients, "c-4", Fate::Completed).await;
    pipeline.wait_published().await;
    pipeline.wait_caught_up(&views).await;

    // A fresh build of the whole log, as its own consumer group: the same views.
    let fresh = pipeline.views("fresh").await;
    let fresh_worker = pipeline.spawn_worker(&fresh, "fresh");
    pipeline.wait_caught_up(&fresh).await;
    let upgraded = pipeline.dump(&views).await;
    assert!(upgraded.len() > 50, "the views hold the workload");
    assert_eq!(upgraded, pipeline.dump(&fresh).await);

    pipeline.stop().await;
    new_worker.await.unwrap();
    fresh_worker.await.unwrap();
}

/// A flows process running the saga as `vocabulary`'s build.
async fn spawn_saga(
    settings: &Settings,
    worker_id: &str,
    vocabulary: Vocabulary,
) -> JoinHandle<()> {
    let mut settings = settings.clone();
    settings.runtime.worker_id = Some(worker_id.into());
    let app = Application::build_with_gateway(
        &settings,
        Arc::new(SandboxGateway::new(std::time::Duration::from_secs(1))),
    )
    .await
    .unwrap()
    .with_vocabulary(vocabulary);
    tokio::spawn(async move { app.run_until_stopped(pending()).await.unwrap() })
}

async fn events(pipeline: &Pipeline, event_type: &str, order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1 AND payload::text LIKE '%' || $2 || '%'",
    )
    .bind(event_type)
    .bind(order_id)
    .fetch_one(&pipeline.events_db.pool)
    .await
    .unwrap()
}

async fn latte_reserved(clients: &mut Clients) -> u32 {
    clients
        .inventory
        .get_inventory(pb::GetInventoryRequest {
            store_id: STORE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .levels
        .into_iter()
        .find(|level| level.sku == "LATTE-12")
        .map_or(0, |level| level.reserved)
}

async fn status_of(clients: &mut Clients, order_id: &str) -> pb::OrderStatus {
    clients
        .saga
        .get_order(pb::GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test]
async fn the_saga_of_an_older_build_stops_the_order_it_does_not_understand_and_the_upgrade_finishes_it_once(
) {
    let pipeline = Pipeline::start().await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let mut settings = saga_settings(&pipeline).await;
    settings.auth.service_token = Some(pipeline.service_token());
    let old_build = Vocabulary::this_build()
        .clone()
        .without_event("order", "PreparationStarted");
    let old_saga = spawn_saga(&settings, "old-build", old_build).await;

    // Two orders the saga accepts; the barista makes one of them.
    let made = place_order(&pipeline, "c-made").await;
    let waiting = place_order(&pipeline, "c-waiting").await;
    for order in [&made, &waiting] {
        eventually("the saga to reserve and accept", || {
            let mut clients = Clients::new(&pipeline);
            async move { status_of(&mut clients, order).await == pb::OrderStatus::Accepted }
        })
        .await;
    }
    clients
        .saga
        .record_payment_captured(pb::RecordPaymentCapturedRequest {
            idempotency_key: format!("pay-{made}"),
            order_id: made.clone(),
            payment_id: "pay_counter".into(),
            amount: Some(pb::Money { cents: 450 }),
        })
        .await
        .unwrap();
    let step = |name: &str| pb::OrderTransitionRequest {
        idempotency_key: format!("barista-{name}-{made}"),
        order_id: made.clone(),
    };
    clients
        .barista
        .start_preparing(step("start"))
        .await
        .unwrap();
    clients.barista.mark_ready(step("ready")).await.unwrap();
    clients
        .barista
        .complete_order(step("complete"))
        .await
        .unwrap();

    // The old saga stops that order at PreparationStarted: its completion waits behind it, so
    // no reservation is committed and no points are earned yet; the other order is untouched.
    let parked = ParkedStore::new(pipeline.dynamodb.clone(), &settings.dynamodb.parked_table);
    eventually("the old saga to park the made order", || async {
        parked
            .list("order_saga", "order", &made)
            .await
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect::<Vec<_>>()
            == [
                ParkedKind::NotUnderstood,
                ParkedKind::Behind,
                ParkedKind::Behind,
            ]
    })
    .await;
    assert_eq!(
        latte_reserved(&mut clients).await,
        2,
        "both reservations held"
    );
    assert_eq!(events(&pipeline, "PointsEarned", &made).await, 0);
    assert!(parked
        .list("order_saga", "order", &waiting)
        .await
        .unwrap()
        .is_empty());

    // The upgrade: the new build resumes the order and does what the saga owes it, once.
    old_saga.abort();
    let _ = old_saga.await;
    let new_saga = spawn_saga(&settings, "new-build", Vocabulary::this_build().clone()).await;
    eventually("the new saga to finish the made order", || async {
        parked
            .list("order_saga", "order", &made)
            .await
            .unwrap()
            .is_empty()
            && events(&pipeline, "PointsEarned", &made).await == 1
    })
    .await;
    eventually("its reservation committed", || {
        let mut clients = Clients::new(&pipeline);
        async move { latte_reserved(&mut clients).await == 1 }
    })
    .await;
    assert_eq!(events(&pipeline, "ReservationCommitted", &made).await, 1);
    assert_eq!(events(&pipeline, "StockReserved", &made).await, 1);
    assert_eq!(
        status_of(&mut clients, &waiting).await,
        pb::OrderStatus::Accepted
    );
    new_saga.abort();
    let _ = new_saga.await;
    pipeline.stop().await;
}
