//! A linger (`relay.max_linger_ms`): a record that is not full waits for more commits of its
//! shard, at most that long from its oldest commit, and a stop during the wait loses nothing.

use std::sync::Arc;
use std::time::Duration;

use test_support::{fresh_database, TestDatabase};

use crate::helpers::{
    kinesis_log, replay, spawn_relay, spawn_relay_lingering, stores, TestRelay, TestStream, Writer,
    PACKED,
};

/// A fresh database and one-shard stream, a writer, and a packing relay lingering
/// `max_linger_ms`.
async fn lingering_relay(max_linger_ms: u64) -> (TestDatabase, TestStream, Writer, TestRelay) {
    let database = fresh_database().await;
    let stream = TestStream::create(1).await;
    let writer = Writer::open(&database).await;
    let log = Arc::new(kinesis_log(&stream));
    let relay = spawn_relay_lingering(&database, log, false, 20, PACKED, max_linger_ms).await;
    (database, stream, writer, relay)
}

#[tokio::test]
async fn commits_that_arrive_within_the_linger_leave_in_one_record() {
    let (_database, stream, mut writer, relay) = lingering_relay(3_000).await;

    // Six commits 50 ms apart, while the relay is already waiting for commits: without a
    // linger each would leave alone as soon as it is committed.
    for store in stores(6).chunks(1) {
        writer.write(store, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let commits = stream.wait_for_records(writer.commits).await;
    relay.stop().await;

    assert_eq!(replay(&commits).last_sequence, writer.versions().await);
    assert_eq!(stream.commits_per_record().await, vec![writer.commits]);
    assert_eq!(writer.outbox_rows().await, 0);
}

#[tokio::test]
async fn a_lone_commit_waits_out_the_linger_then_leaves() {
    let (_database, stream, mut writer, relay) = lingering_relay(1_000).await;

    writer.write(&stores(1), 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stream.commits_per_record().await.is_empty(), "it lingers");
    assert_eq!(writer.outbox_rows().await, 1);

    let commits = stream.wait_for_records(1).await;
    relay.stop().await;
    assert_eq!(replay(&commits).last_sequence, writer.versions().await);
    assert_eq!(writer.outbox_rows().await, 0);
}

#[tokio::test]
async fn a_stop_during_the_linger_leaves_its_commits_in_the_outbox_for_the_next_relay() {
    let (database, stream, mut writer, lingering) = lingering_relay(600_000).await;
    writer.write(&stores(5), 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The stop does not wait out the linger (stop() fails after test_support::PATIENCE).
    lingering.stop().await;
    assert!(stream.commits_per_record().await.is_empty());
    assert_eq!(writer.outbox_rows().await, writer.commits as i64);

    let next = spawn_relay(&database, Arc::new(kinesis_log(&stream)), false).await;
    let commits = stream.wait_for_records(writer.commits).await;
    next.stop().await;
    let seen = replay(&commits);
    assert_eq!(seen.commits_applied, writer.commits);
    assert_eq!(seen.last_sequence, writer.versions().await);
    assert_eq!(writer.outbox_rows().await, 0);
}
