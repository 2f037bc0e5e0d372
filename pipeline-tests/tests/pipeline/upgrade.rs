//! A rolling deploy: the command API ships an event before the projectors know it. The old
//! projectors stop exactly the aggregates that carry it (every other aggregate goes on), lose
//! nothing, and once upgraded resume them in order, so the views end equal to a fresh build.

use std::collections::BTreeSet;

use commit_log::Vocabulary;
use projectors::runtime::{ParkedKind, ParkedStore};

use crate::support::{eventually, Pipeline};
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
