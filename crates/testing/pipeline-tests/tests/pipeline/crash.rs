//! A projector killed mid-batch and restarted builds exactly the views a run without the crash
//! builds.

use crate::support::{eventually, Pipeline};
use crate::workload::{open_the_store, run_order, Clients, Fate};

#[tokio::test]
async fn a_projector_killed_mid_batch_and_restarted_leaves_views_identical_to_a_clean_run() {
    let pipeline = Pipeline::start().await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 500).await;
    let fates = [Fate::Completed, Fate::Open, Fate::Cancelled];
    for n in 0..24 {
        run_order(
            &pipeline,
            &mut clients,
            &format!("c-{}", n % 7),
            fates[n % 3],
        )
        .await;
    }
    pipeline.wait_published().await;

    // The crashing run: batches of 25 records, killed once a few commits are in the history.
    let crashed = pipeline.views("crashed").await;
    let worker = pipeline.spawn_worker(&crashed, "doomed");
    let applied = || async {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM history_crashed.order_status_changes")
                .fetch_one(&pipeline.views_db.pool)
                .await
                .unwrap();
        applied
    };
    eventually("the first worker to apply part of the log", || async {
        applied().await >= 1
    })
    .await;
    worker.abort();
    let _ = worker.await;
    let applied_at_crash = applied().await;
    // A new worker takes the leases once they expire and resumes from the last checkpoints,
    // re-reading records the dead worker applied but never checkpointed.
    let successor = pipeline.spawn_worker(&crashed, "successor");

    // The clean run, as its own consumer group into its own tables and schemas.
    let clean = pipeline.views("clean").await;
    let clean_worker = pipeline.spawn_worker(&clean, "clean");

    pipeline.wait_caught_up(&crashed).await;
    pipeline.wait_caught_up(&clean).await;
    let (after_crash, without_crash) = (pipeline.dump(&crashed).await, pipeline.dump(&clean).await);
    assert!(after_crash.len() > 100, "the views hold the workload");
    let status_changes = after_crash
        .iter()
        .filter(|line| line.starts_with("order_status_changes:"))
        .count();
    assert!(
        (applied_at_crash as usize) < status_changes,
        "the crash came mid-way: {applied_at_crash} of {status_changes} status changes applied"
    );
    assert_eq!(after_crash, without_crash);

    pipeline.stop().await;
    successor.await.unwrap();
    clean_worker.await.unwrap();
}
