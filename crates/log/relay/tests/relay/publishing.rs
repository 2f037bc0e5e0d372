use std::sync::Arc;

use test_support::fresh_database;

use crate::helpers::{
    kinesis_log, replay, spawn_relay, spawn_relay_polling, stores, TestStream, Writer,
};

#[tokio::test]
async fn every_commit_reaches_the_stream_once_in_order_per_aggregate_and_leaves_the_outbox() {
    let database = fresh_database().await;
    let stream = TestStream::create(3).await;
    let mut writer = Writer::open(&database).await;
    // Written before the relay starts, so rounds hold several commits of each aggregate.
    writer.write(&stores(12), 8).await;

    let relay = spawn_relay(&database, Arc::new(kinesis_log(&stream)), false).await;
    stream.wait_for_records(writer.commits).await;
    // Commits written while it runs go out too.
    writer.write(&stores(4), 3).await;
    let records = stream.wait_for_records(writer.commits).await;

    let seen = replay(&records);
    assert_eq!(seen.commits_applied, writer.commits, "every commit once");
    assert_eq!(seen.duplicates_skipped, 0, "no failures, no duplicates");
    assert_eq!(seen.last_sequence, writer.versions().await, "every event");
    assert!(
        records.values().filter(|shard| !shard.is_empty()).count() > 1,
        "aggregates spread over the shards"
    );
    let multi_event = records.values().flatten().find(|c| c.events.len() > 1);
    let multi_event = multi_event.expect("a commit of several events");
    assert_eq!(multi_event.first_sequence(), 1);
    assert_eq!(multi_event.events.len() as u64, multi_event.last_sequence());

    relay.stop().await;
    assert_eq!(
        writer.outbox_rows().await,
        0,
        "published commits leave the outbox"
    );
}

#[tokio::test]
async fn a_commit_wakes_the_relay_without_waiting_for_its_poll() {
    let database = fresh_database().await;
    let stream = TestStream::create(1).await;
    let mut writer = Writer::open(&database).await;
    // A poll far beyond the test's patience: only the commits' notifications can wake it.
    let relay =
        spawn_relay_polling(&database, Arc::new(kinesis_log(&stream)), false, 3_600_000).await;
    // Idle first (it took the lock and found the outbox empty), then woken, twice.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    writer.write(&stores(1), 1).await;
    stream.wait_for_records(writer.commits).await;
    writer.write(&stores(1), 2).await;
    let records = stream.wait_for_records(writer.commits).await;
    assert_eq!(replay(&records).commits_applied, writer.commits);
    relay.stop().await;
}
