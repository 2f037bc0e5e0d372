//! A projector killed mid-batch and restarted builds exactly the views a run without the crash
//! builds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{LoggedCommit, Vocabulary};
use test_support::PATIENCE;
use tokio::sync::Notify;

use crate::support::{Pipeline, COMMITS_PER_RECORD, WORKER_BATCH};
use crate::workload::{open_the_store, run_order, Clients, Fate};

/// A read model whose process dies inside a batch: of the first batch of several commits it
/// applies (and commits) the first half, then hangs there, before the batch is checkpointed,
/// until the test kills the worker.
struct DiesMidBatch {
    inner: Arc<dyn Projection>,
    armed: AtomicBool,
    /// The halves of the batch it died in: applied, and never applied.
    halves: Mutex<(Vec<LoggedCommit>, Vec<LoggedCommit>)>,
    died: Notify,
}

#[async_trait]
impl Projection for DiesMidBatch {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        if commits.len() < 2 || !self.armed.swap(false, Ordering::SeqCst) {
            return self.inner.apply(commits).await;
        }
        let (applied, left) = commits.split_at(commits.len() / 2);
        self.inner.apply(applied).await?;
        *self.halves.lock().unwrap() = (applied.to_vec(), left.to_vec());
        self.died.notify_one();
        std::future::pending().await
    }
}

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

    // The crashing run: its history read model dies half-way through a batch.
    let crashed = pipeline.views("crashed").await;
    let mut projections = pipeline.projections(&crashed);
    let history = projections
        .iter()
        .position(|p| p.name() == "history")
        .unwrap();
    let dying = Arc::new(DiesMidBatch {
        inner: projections[history].clone(),
        armed: AtomicBool::new(true),
        halves: Mutex::default(),
        died: Notify::new(),
    });
    projections[history] = dying.clone();
    let worker = pipeline.spawn_worker_of(
        &crashed,
        "doomed",
        projections,
        Vocabulary::this_build().clone(),
    );
    tokio::time::timeout(PATIENCE, dying.died.notified())
        .await
        .expect("the worker reached a batch of several commits");
    worker.abort();
    let _ = worker.await;

    // The kill landed mid-batch: the first half of the batch is in the history, the second
    // half is not. A batch is one GetRecords answer: its records, each of one or more commits.
    let (applied, left) = dying.halves.lock().unwrap().clone();
    assert!(!applied.is_empty() && !left.is_empty());
    assert!(applied.len() + left.len() <= (WORKER_BATCH * COMMITS_PER_RECORD) as usize);
    let last_applied = |commit: LoggedCommit| {
        let pool = pipeline.views_db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT last_sequence FROM history_crashed.applied_sequences
                  WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(&commit.aggregate_type)
            .bind(&commit.aggregate_id)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap_or(0) as u64
        }
    };
    // The history keeps no sequence of the menu (it has no menu tables): the menu's commits,
    // which open the log and so may open the batch, say nothing here either way.
    let recorded = |commit: &LoggedCommit| {
        ["order", "inventory", "loyalty"].contains(&commit.aggregate_type.as_str())
    };
    for commit in applied.into_iter().filter(recorded) {
        let stored = last_applied(commit.clone()).await;
        assert!(stored >= commit.last_sequence(), "{commit:?} not applied");
    }
    for commit in left.into_iter().filter(recorded) {
        let stored = last_applied(commit.clone()).await;
        assert!(stored < commit.first_sequence(), "{commit:?} applied");
    }

    // A new worker takes the leases once they expire and resumes from the last checkpoints,
    // re-reading the records the dead worker applied but never checkpointed.
    let successor = pipeline.spawn_worker(&crashed, "successor");

    // The clean run, as its own consumer group into its own tables and schemas.
    let clean = pipeline.views("clean").await;
    let clean_worker = pipeline.spawn_worker(&clean, "clean");

    pipeline.wait_caught_up(&crashed).await;
    pipeline.wait_caught_up(&clean).await;
    let (after_crash, without_crash) = (pipeline.dump(&crashed).await, pipeline.dump(&clean).await);
    assert!(after_crash.len() > 100, "the views hold the workload");
    assert_eq!(after_crash, without_crash);

    pipeline.stop().await;
    successor.await.unwrap();
    clean_worker.await.unwrap();
}
