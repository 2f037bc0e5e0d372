//! Rebuilds of the DynamoDB active-orders view from a real event store (on PostgreSQL) into
//! fresh tables (on the DynamoDB emulator), compared with views built live, and swapped in
//! through the view alias while the live projector (a real projectors worker on kinesalite)
//! goes on applying new commits.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::LoggedCommit;
use common::{
    commits_after, fresh_store, logged_commits, publish, write_history, write_orders, FailAfter,
};
use event_store::PgEventStore;
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{Checkpoint, LeaseTable, ParkedStore, SequenceNumber, Worker, WorkerConfig};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, InventoryMarker, ViewAlias};
use replay::dynamodb::{compare_tables, swap_in_tables, target_tables, TablesProgress};
use replay::{rebuild, Comparison, ProgressStore, RebuildOptions, ReplayError, Until};
use test_support::{aws_test_config, unique_name, TestStream, PATIENCE};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Setup {
    store: PgEventStore,
    client: Client,
    views_table: String,
    commits: Vec<LoggedCommit>,
}

async fn setup() -> Setup {
    let store = fresh_store().await;
    write_orders(&store).await;
    write_history(&store).await;
    let commits = logged_commits(&store).await;
    let client = aws_support::dynamodb(&aws_test_config().await);
    let views_table = unique_name("views");
    ViewAlias::create_table(&client, &views_table)
        .await
        .unwrap();
    Setup {
        store,
        client,
        views_table,
        commits,
    }
}

/// Fresh, empty view tables.
async fn new_tables(client: &Client, prefix: &str) -> ActiveOrdersTables {
    let tables = target_tables(&unique_name(prefix)).unwrap();
    ActiveOrdersProjection::create_tables(client, &tables)
        .await
        .unwrap();
    tables
}

/// The view as the live projector builds it: `commits` applied one at a time.
async fn build_live(client: &Client, commits: &[LoggedCommit]) -> ActiveOrdersTables {
    let tables = new_tables(client, "live").await;
    let projection = ActiveOrdersProjection::new(client.clone(), tables.clone());
    for commit in commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    tables
}

/// A fresh replay target and its progress.
async fn target(s: &Setup) -> (ActiveOrdersTables, TablesProgress) {
    let tables = new_tables(&s.client, "replay").await;
    let progress = TablesProgress::new(s.client.clone(), &s.views_table, tables.clone());
    progress.start().await.unwrap();
    (tables, progress)
}

fn options(until: Option<Until>, batch_commits: usize) -> RebuildOptions {
    RebuildOptions {
        until,
        batch_commits,
    }
}

async fn rebuild_into(
    s: &Setup,
    tables: &ActiveOrdersTables,
    progress: &TablesProgress,
    options: &RebuildOptions,
) -> Result<replay::RebuildProgress, ReplayError> {
    let projection = ActiveOrdersProjection::new(s.client.clone(), tables.clone());
    rebuild(&s.store, &projection, progress, options, |_| {}).await
}

async fn compare(s: &Setup, left: &ActiveOrdersTables, right: &ActiveOrdersTables) -> Comparison {
    compare_tables(&s.client, left, right).await.unwrap()
}

async fn assert_same(s: &Setup, left: &ActiveOrdersTables, right: &ActiveOrdersTables) {
    let comparison = compare(s, left, right).await;
    assert_eq!(comparison.tables_compared, 2);
    assert!(
        comparison.is_equal(),
        "{left:?} and {right:?} differ: {comparison:#?}"
    );
}

async fn count(client: &Client, table: &str) -> usize {
    client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_rebuild_equals_the_view_built_live() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    let done = rebuild_into(&s, &rebuilt, &progress, &options(None, 4))
        .await
        .unwrap();
    let last = s.store.last_position().await.unwrap();
    assert_eq!(done.applied_through, last);
    assert_eq!(progress.load("active_orders").await.unwrap(), Some(last));
    // Six orders (open ones on the board, ended ones as tombstones), and per store: the day's
    // metrics, every SKU's stock, the inventory marker.
    assert_eq!(count(&s.client, &rebuilt.orders).await, 6);
    assert!(count(&s.client, &rebuilt.stores).await >= 7);
    assert_same(&s, &live, &rebuilt).await;
}

#[tokio::test]
async fn an_as_of_rebuild_equals_the_view_captured_live_at_that_moment() {
    let s = setup().await;
    // The live view at the moment the first half of the commits had been applied.
    let half = s.commits.len() / 2;
    let bound = s.commits[half - 1].last_position() as i64;
    let captured = build_live(&s.client, &s.commits[..half]).await;
    let (as_of, progress) = target(&s).await;
    let done = rebuild_into(
        &s,
        &as_of,
        &progress,
        &options(Some(Until::Position(bound)), 3),
    )
    .await
    .unwrap();
    assert_eq!(done.applied_through, bound);
    assert_same(&s, &captured, &as_of).await;
    // And it is not simply the whole view.
    let whole = build_live(&s.client, &s.commits).await;
    assert!(!compare(&s, &whole, &as_of).await.is_equal());
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_and_ends_equal() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    let interrupted = FailAfter::new(
        Box::new(ActiveOrdersProjection::new(
            s.client.clone(),
            rebuilt.clone(),
        )),
        2,
    );
    let error = rebuild(&s.store, &interrupted, &progress, &options(None, 3), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ReplayError::Apply { .. }), "{error}");
    let stopped_at = progress.load("active_orders").await.unwrap().unwrap();
    assert!(stopped_at > 0 && stopped_at < s.store.last_position().await.unwrap());
    let resumed = rebuild_into(&s, &rebuilt, &progress, &options(None, 3))
        .await
        .unwrap();
    assert_eq!(resumed.started_after, stopped_at);
    assert_same(&s, &live, &rebuilt).await;
}

#[tokio::test]
async fn verify_finds_an_item_changed_by_hand() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 50))
        .await
        .unwrap();
    assert_same(&s, &live, &rebuilt).await;
    // An operator "fixes" one order's note on the live view by hand.
    let any_order = s
        .commits
        .iter()
        .find(|c| c.aggregate_type == "order")
        .unwrap();
    s.client
        .update_item()
        .table_name(&live.orders)
        .key(
            "pk",
            AttributeValue::S(format!("ORDER#{}", any_order.aggregate_id)),
        )
        .key("sk", AttributeValue::S("ORDER".into()))
        .update_expression("SET note = :note")
        .expression_attribute_values(":note", AttributeValue::S("edited by hand".into()))
        .send()
        .await
        .unwrap();
    let comparison = compare(&s, &live, &rebuilt).await;
    assert_eq!(comparison.differences.len(), 1, "{comparison:#?}");
    let difference = &comparison.differences[0];
    assert_eq!(difference.table, "orders");
    assert_eq!(
        (difference.left_rows, difference.right_rows),
        (Some(6), Some(6))
    );
    assert_eq!(difference.only_in_left.len(), 1);
    assert!(difference.only_in_left[0].contains("edited by hand"));
    assert_eq!(difference.only_in_right.len(), 1);
    assert!(difference.only_in_right[0].contains(&any_order.aggregate_id));
}

#[tokio::test]
async fn an_in_place_rebuild_empties_the_live_tables_and_ends_equal() {
    let s = setup().await;
    let reference = build_live(&s.client, &s.commits).await;
    let live = build_live(&s.client, &s.commits).await;
    // An item no commit explains (left by a bug): emptying first removes it.
    s.client
        .put_item()
        .table_name(&live.orders)
        .item("pk", AttributeValue::S("ORDER#bogus".into()))
        .item("sk", AttributeValue::S("ORDER".into()))
        .send()
        .await
        .unwrap();
    assert!(!compare(&s, &reference, &live).await.is_equal());
    replay::dynamodb::empty_tables(&s.client, &live)
        .await
        .unwrap();
    assert_eq!(count(&s.client, &live.orders).await, 0);
    assert_eq!(count(&s.client, &live.stores).await, 0);
    let progress = TablesProgress::new(s.client.clone(), &s.views_table, live.clone());
    progress.start().await.unwrap();
    rebuild_into(&s, &live, &progress, &options(None, 5))
        .await
        .unwrap();
    progress.remove().await.unwrap();
    assert_same(&s, &reference, &live).await;
}

#[tokio::test]
async fn a_gap_waits_during_a_handover_and_is_poison_otherwise() {
    let s = setup().await;
    let configured = build_live(&s.client, &s.commits).await;
    let alias = ViewAlias::new(s.client.clone(), &s.views_table, configured.clone());
    let empty = new_tables(&s.client, "empty").await;
    let following = ActiveOrdersProjection::following(alias.clone());
    // A later commit of an order, whose first the new tables lack. (Not "the first order's":
    // the orders are written concurrently, and the first may be one placed and left alone.)
    let second = s
        .commits
        .iter()
        .find(|c| c.aggregate_type == "order" && c.first_sequence() > 1)
        .unwrap();
    alias.begin_handover(&configured, &empty).await.unwrap();
    let waiting = following.apply(std::slice::from_ref(second)).await;
    assert!(
        matches!(waiting, Err(ProjectionError::Transient(_))),
        "{waiting:?}"
    );
    alias.end_handover(&empty).await.unwrap();
    let refused = following.apply(std::slice::from_ref(second)).await;
    assert!(
        matches!(refused, Err(ProjectionError::Poison { .. })),
        "{refused:?}"
    );
    // A second swap from the tables that are no longer live is refused.
    let other = new_tables(&s.client, "other").await;
    let moved = alias.begin_handover(&configured, &other).await;
    assert!(moved.is_err(), "the alias moved twice from the same tables");
}

/// Writes commands until `stop`: an ongoing morning while the swap happens.
async fn keep_ordering(store: PgEventStore, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        write_orders(&store).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `check` holds; fails the test with `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream the live projector reads, fed with the store's commits as the relay feeds it.
struct Feed {
    stream: TestStream,
    leases: LeaseTable,
    /// The last position published.
    published: AtomicI64,
    /// Per shard, the sequence number of the last record put.
    last_put: Mutex<HashMap<String, String>>,
}

impl Feed {
    /// Publishes the commits written since the last call, in commit order; how many.
    async fn publish(&self, store: &PgEventStore) -> usize {
        let commits = commits_after(store, self.published.load(Ordering::SeqCst)).await;
        for (first, last) in &commits {
            let (shard, sequence) = publish(store, &self.stream, *first, *last).await;
            self.last_put.lock().unwrap().insert(shard, sequence);
            self.published.store(*last, Ordering::SeqCst);
        }
        commits.len()
    }

    /// Per shard, the last record put so far.
    fn marks(&self) -> HashMap<String, String> {
        self.last_put.lock().unwrap().clone()
    }

    /// Whether the live projector checkpointed every shard at or past `marks`.
    async fn checkpointed_past(&self, marks: &HashMap<String, String>) -> bool {
        let leases = self.leases.list().await.unwrap();
        marks.iter().all(|(shard, mark)| {
            leases.iter().any(|lease| {
                &lease.shard_id == shard
                    && matches!(&lease.checkpoint, Checkpoint::After(at)
                        if *at >= SequenceNumber::new(mark.as_str()))
            })
        })
    }

    /// Waits until the live projector applied and checkpointed everything published.
    async fn caught_up(&self) {
        let marks = self.marks();
        eventually("the live projector to catch up", || {
            self.checkpointed_past(&marks)
        })
        .await;
    }
}

/// The live projector, for real: a projectors worker running the active-orders projection
/// that follows the view alias (as `projectors run` does), reading its own Kinesis stream. The
/// commits already in the store when it starts are those the live view was built from: only
/// later ones are published.
struct LiveProjector {
    feed: Arc<Feed>,
    stop: oneshot::Sender<()>,
    running: JoinHandle<()>,
}

impl LiveProjector {
    async fn start(s: &Setup, alias: &ViewAlias) -> Self {
        let sdk = aws_test_config().await;
        let stream = TestStream::create(1).await;
        let leases_table = unique_name("live-leases");
        let parked_table = unique_name("live-parked");
        LeaseTable::create_table(&s.client, &leases_table)
            .await
            .unwrap();
        ParkedStore::create_table(&s.client, &parked_table)
            .await
            .unwrap();
        let dead_letters =
            DeadLetterQueue::create_queue(&aws_sdk_sqs::Client::new(&sdk), &unique_name("live"))
                .await
                .unwrap();
        let worker = Worker::new(
            &sdk,
            WorkerConfig {
                worker_id: "live".into(),
                stream_name: stream.name.clone(),
                leases_table: leases_table.clone(),
                parked_table,
                dead_letter_queue_url: dead_letters,
                lease_duration: Duration::from_secs(2),
                batch_size: 100,
                max_apply_attempts: 3,
                poll_interval: Duration::from_millis(100),
                shard_sync_interval: Duration::from_millis(500),
            },
            vec![Arc::new(ActiveOrdersProjection::following(alias.clone()))],
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        let feed = Arc::new(Feed {
            stream,
            leases: LeaseTable::new(s.client.clone(), leases_table),
            published: AtomicI64::new(s.store.last_position().await.unwrap()),
            last_put: Mutex::default(),
        });
        Self {
            feed,
            stop,
            running,
        }
    }

    /// Stops the worker gracefully (its batch finishes and is checkpointed).
    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap();
    }
}

#[tokio::test]
async fn a_swap_moves_readers_and_the_live_projector_to_the_rebuilt_view() {
    let s = setup().await;
    // The live view misses one order, as a view with a bug would: the rebuild differs.
    let forgotten = &s
        .commits
        .iter()
        .find(|c| c.aggregate_type == "order")
        .unwrap()
        .aggregate_id;
    let all_but_one: Vec<LoggedCommit> = s
        .commits
        .iter()
        .filter(|c| &c.aggregate_id != forgotten)
        .cloned()
        .collect();
    let stale = build_live(&s.client, &all_but_one).await;
    let alias = ViewAlias::new(s.client.clone(), &s.views_table, stale.clone());
    let live_projector = LiveProjector::start(&s, &alias).await;
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 10))
        .await
        .unwrap();
    let old_count = count(&s.client, &stale.orders).await;
    let new_count = count(&s.client, &rebuilt.orders).await;
    assert_ne!(old_count, new_count, "the test needs views that differ");

    // A reader counting the live view's orders through the alias, during the swap.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (client, alias) = (s.client.clone(), alias.clone());
        let (stop, reads) = (stop_reading.clone(), reads.clone());
        async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let live = alias.live().await.unwrap().tables;
                let n = count(&client, &live.orders).await;
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
            seen
        }
    });
    eventually("the reader to read the old view", || async {
        reads.load(Ordering::SeqCst) > 0
    })
    .await;
    let swapped = swap_in_tables(&s.store, &alias, &rebuilt, &progress, 10, |_| {})
        .await
        .unwrap();
    // The read in progress may have started before the swap; the one after it did not.
    let at_swap = reads.load(Ordering::SeqCst);
    eventually("the reader to read after the swap", || async {
        reads.load(Ordering::SeqCst) >= at_swap + 2
    })
    .await;
    stop_reading.store(true, Ordering::SeqCst);
    assert_eq!(swapped.retired, stale);
    assert_eq!(reader.await.unwrap(), vec![old_count, new_count]);
    let live = alias.live().await.unwrap();
    assert_eq!((live.tables, live.handover), (rebuilt.clone(), false));
    assert!(
        !progress.exists().await.unwrap(),
        "a live view keeps no rebuild progress"
    );
    let again = swap_in_tables(&s.store, &alias, &rebuilt, &progress, 10, |_| {}).await;
    assert!(
        matches!(again, Err(ReplayError::AlreadyLive(_))),
        "{again:?}"
    );

    // Orders placed after the swap reach the rebuilt view through the live projector, and the
    // retired view gets none of them.
    write_orders(&s.store).await;
    assert!(live_projector.feed.publish(&s.store).await > 0);
    live_projector.feed.caught_up().await;
    live_projector.stop().await;
    assert_eq!(count(&s.client, &stale.orders).await, old_count);
    assert!(count(&s.client, &rebuilt.orders).await > new_count);
    let (check, check_progress) = target(&s).await;
    rebuild_into(&s, &check, &check_progress, &options(None, 50))
        .await
        .unwrap();
    assert_same(&s, &rebuilt, &check).await;
}

#[tokio::test]
async fn a_live_projector_writing_around_the_swap_ends_equal_to_a_full_rebuild() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let alias = ViewAlias::new(s.client.clone(), &s.views_table, live.clone());
    let live_projector = LiveProjector::start(&s, &alias).await;
    let (stop_writing, stop_publishing) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let writer = tokio::spawn(keep_ordering(s.store.clone(), stop_writing.clone()));
    // The relay's part: commits reach the stream while they are written.
    let publisher = tokio::spawn({
        let (feed, store, stop) = (
            live_projector.feed.clone(),
            s.store.clone(),
            stop_publishing.clone(),
        );
        async move {
            while !stop.load(Ordering::SeqCst) {
                feed.publish(&store).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let feed = live_projector.feed.clone();
    eventually("orders of this morning to be published", || async {
        !feed.marks().is_empty()
    })
    .await;
    let marks = feed.marks();
    eventually("the live projector to apply them", || {
        feed.checkpointed_past(&marks)
    })
    .await;
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 10))
        .await
        .unwrap();
    swap_in_tables(&s.store, &alias, &rebuilt, &progress, 10, |_| {})
        .await
        .unwrap();
    // The live projector goes on into the rebuilt view: it applies orders written after the
    // swap before the morning ends.
    let after_swap = s.store.last_position().await.unwrap();
    eventually("orders written after the swap to be published", || async {
        feed.published.load(Ordering::SeqCst) > after_swap
    })
    .await;
    let marks = feed.marks();
    eventually("the live projector to apply them", || {
        feed.checkpointed_past(&marks)
    })
    .await;
    // The writer finishes its round first, so the last publishing sees every commit.
    stop_writing.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    stop_publishing.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    feed.publish(&s.store).await;
    feed.caught_up().await;
    live_projector.stop().await;
    // Every commit, before, during and after the swap, is in the view the alias names now,
    // exactly once: it equals a rebuild of the whole store.
    let (check, check_progress) = target(&s).await;
    rebuild_into(&s, &check, &check_progress, &options(None, 50))
        .await
        .unwrap();
    assert_eq!(alias.live().await.unwrap().tables, rebuilt);
    assert_same(&s, &rebuilt, &check).await;
}

// ------------------------------------------------------------------ verify in production

/// Judging as `replay verify` does, with a short re-check wait and two items per scan page
/// (so every comparison crosses page boundaries on both sides).
fn judging(recheck_ms: u64) -> replay::dynamodb::VerifyOptions {
    replay::dynamodb::VerifyOptions {
        now: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
        recheck_after: Some(Duration::from_millis(recheck_ms)),
        page_size: 2,
    }
}

/// `replay verify` of `live` against `rebuilt`, with nothing to catch up.
async fn verify_as_is(
    s: &Setup,
    live: &ActiveOrdersTables,
    rebuilt: &ActiveOrdersTables,
) -> Comparison {
    replay::dynamodb::compare_views(&s.client, live, rebuilt, &judging(100), || async { Ok(()) })
        .await
        .unwrap()
}

/// The live view lagging: every commit but the last `behind` order commits applied. Returns
/// the live tables, the rebuild (of everything) and the commits the live projector still owes.
async fn lagging(
    s: &Setup,
    behind: usize,
) -> (ActiveOrdersTables, ActiveOrdersTables, Vec<LoggedCommit>) {
    let mut owed = Vec::new();
    let mut applied = Vec::new();
    let mut left = behind;
    for commit in s.commits.iter().rev() {
        if left > 0 && commit.aggregate_type == "order" {
            owed.push(commit.clone());
            left -= 1;
        } else {
            applied.push(commit.clone());
        }
    }
    applied.reverse();
    owed.reverse();
    let live = build_live(&s.client, &applied).await;
    let (rebuilt, progress) = target(s).await;
    rebuild_into(s, &rebuilt, &progress, &options(None, 50))
        .await
        .unwrap();
    (live, rebuilt, owed)
}

#[tokio::test]
async fn verify_rechecks_items_the_live_projector_is_still_applying() {
    let s = setup().await;
    let (live, rebuilt, owed) = lagging(&s, 3).await;
    // What verify said before: the lag shows up as differences.
    assert!(!compare(&s, &live, &rebuilt).await.is_equal());

    // During the wait the live projector catches up.
    let projection = ActiveOrdersProjection::new(s.client.clone(), live.clone());
    let catch_up = || async {
        projection.apply(&owed).await.unwrap();
        Ok(())
    };
    let comparison =
        replay::dynamodb::compare_views(&s.client, &live, &rebuilt, &judging(200), catch_up)
            .await
            .unwrap();
    assert!(comparison.is_equal(), "{comparison:#?}");
    assert!(comparison.skipped.is_empty(), "{comparison:#?}");
}

#[tokio::test]
async fn verify_skips_and_reports_what_the_live_view_holds_beyond_the_rebuild() {
    let s = setup().await;
    // The live projector is ahead: commands arrived after the rebuild's last catch-up.
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    let newest_orders: Vec<&LoggedCommit> = s
        .commits
        .iter()
        .filter(|c| c.aggregate_type == "order")
        .collect();
    let until = newest_orders[newest_orders.len() - 2].events[0].position as i64 - 1;
    rebuild_into(
        &s,
        &rebuilt,
        &progress,
        &options(Some(Until::Position(until)), 50),
    )
    .await
    .unwrap();
    let comparison = verify_as_is(&s, &live, &rebuilt).await;
    assert!(comparison.is_equal(), "{comparison:#?}");
    assert_eq!(comparison.skipped.len(), 1, "{comparison:#?}");
    let moving = &comparison.skipped[0];
    assert!(moving.reason.contains("still moving"), "{moving:?}");
    assert!(moving.count >= 1);
    assert!(!moving.examples.is_empty());
}

/// A live view whose projector records the inventories' progress in the stock items (no marker
/// item) is the same view as a rebuild that writes the marker: verify compares the stock items by
/// their own sequences and leaves the marker item out.
#[tokio::test]
async fn verify_finds_a_view_written_without_inventory_markers_equal_to_a_rebuild() {
    let s = setup().await;
    assert!(
        s.commits.iter().any(|c| c.aggregate_type == "inventory"),
        "the history holds inventory commits"
    );
    let live = new_tables(&s.client, "live").await;
    let projection = ActiveOrdersProjection::new(s.client.clone(), live.clone())
        .with_inventory_marker(InventoryMarker::SkuItems);
    for commit in &s.commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 50))
        .await
        .unwrap();
    // Item by item the marker items differ (one side has none)...
    assert!(!compare(&s, &live, &rebuilt).await.is_equal());
    // ...but the views do not.
    let comparison = verify_as_is(&s, &live, &rebuilt).await;
    assert!(comparison.is_equal(), "{comparison:#?}");
    assert!(comparison.skipped.is_empty(), "{comparison:#?}");
}

#[tokio::test]
async fn verify_reports_what_the_live_view_still_lacks_after_the_recheck() {
    let s = setup().await;
    // The live projector lost two order commits (and never catches up).
    let (live, rebuilt, _) = lagging(&s, 2).await;
    let comparison = verify_as_is(&s, &live, &rebuilt).await;
    assert!(!comparison.is_equal(), "{comparison:#?}");
    assert!(comparison.skipped.is_empty(), "{comparison:#?}");
}

#[tokio::test]
async fn verify_still_reports_an_item_that_differs_where_markers_agree() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 50))
        .await
        .unwrap();
    let any_order = s
        .commits
        .iter()
        .find(|c| c.aggregate_type == "order")
        .unwrap();
    s.client
        .update_item()
        .table_name(&live.orders)
        .key(
            "pk",
            AttributeValue::S(format!("ORDER#{}", any_order.aggregate_id)),
        )
        .key("sk", AttributeValue::S("ORDER".into()))
        .update_expression("SET note = :note")
        .expression_attribute_values(":note", AttributeValue::S("edited by hand".into()))
        .send()
        .await
        .unwrap();
    let comparison = verify_as_is(&s, &live, &rebuilt).await;
    assert_eq!(comparison.differences.len(), 1, "{comparison:#?}");
    assert!(comparison.differences[0].only_in_left[0].contains("edited by hand"));
    assert!(comparison.skipped.is_empty(), "{comparison:#?}");
}

#[tokio::test]
async fn verify_skips_tombstones_past_their_ttl_that_the_live_table_lost() {
    let s = setup().await;
    let live = build_live(&s.client, &s.commits).await;
    let (rebuilt, progress) = target(&s).await;
    rebuild_into(&s, &rebuilt, &progress, &options(None, 50))
        .await
        .unwrap();
    // Eight days on, DynamoDB's TTL has deleted the ended orders' tombstones from the live
    // table (the rebuild has just written them).
    let tombstones: Vec<_> = s
        .client
        .scan()
        .table_name(&live.orders)
        .filter_expression("attribute_exists(expires_at)")
        .send()
        .await
        .unwrap()
        .items()
        .to_vec();
    assert!(tombstones.len() >= 3, "{tombstones:?}");
    for tombstone in &tombstones {
        s.client
            .delete_item()
            .table_name(&live.orders)
            .key("pk", tombstone["pk"].clone())
            .key("sk", tombstone["sk"].clone())
            .send()
            .await
            .unwrap();
    }
    let eight_days_on = time::OffsetDateTime::now_utc().unix_timestamp() + 8 * 24 * 3600;
    let options = replay::dynamodb::VerifyOptions {
        now: Some(eight_days_on),
        ..judging(100)
    };
    let comparison =
        replay::dynamodb::compare_views(&s.client, &live, &rebuilt, &options, || async { Ok(()) })
            .await
            .unwrap();
    assert!(comparison.is_equal(), "{comparison:#?}");
    assert_eq!(comparison.skipped.len(), 1, "{comparison:#?}");
    assert!(comparison.skipped[0].reason.contains("TTL"));
    assert_eq!(comparison.skipped[0].count, tombstones.len() as u64);

    // Today, the same missing tombstones are differences: nothing is skipped blindly.
    let today = verify_as_is(&s, &live, &rebuilt).await;
    assert!(!today.is_equal(), "{today:#?}");
    assert!(today.skipped.is_empty(), "{today:#?}");
}
