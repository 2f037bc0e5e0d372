//! Several commits per record: packed by shard, read back in order, and still in order on
//! every shard when the stream is split while the relay publishes.

use std::sync::Arc;
use std::time::Duration;

use test_support::{fresh_database, replay_resharded};

use crate::helpers::{
    kinesis_log, replay, spawn_relay, spawn_relay_packing, stores, TestStream, Writer,
};

#[tokio::test]
async fn a_relay_that_packs_puts_fewer_records_than_commits_and_every_commit_in_order() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    // Written before the relay starts, so its rounds find many commits of each shard.
    writer.write(&stores(30), 6).await;

    let relay = spawn_relay(&database, Arc::new(kinesis_log(&stream)), false).await;
    let commits = stream.wait_for_records(writer.commits).await;
    relay.stop().await;

    let seen = replay(&commits);
    assert_eq!(seen.commits_applied, writer.commits);
    assert_eq!(seen.last_sequence, writer.versions().await);
    let per_record = stream.commits_per_record().await;
    assert!(
        per_record.len() * 3 <= writer.commits,
        "{} records for {} commits",
        per_record.len(),
        writer.commits
    );
    assert_eq!(writer.outbox_rows().await, 0);
}

#[tokio::test]
async fn a_relay_set_to_one_commit_per_record_writes_only_plain_envelopes() {
    let database = fresh_database().await;
    let stream = TestStream::create(1).await;
    let mut writer = Writer::open(&database).await;
    writer.write(&stores(10), 4).await;

    let relay = spawn_relay_packing(&database, Arc::new(kinesis_log(&stream)), false, 20, 1).await;
    let commits = stream.wait_for_records(writer.commits).await;
    relay.stop().await;

    assert_eq!(replay(&commits).last_sequence, writer.versions().await);
    let per_record = stream.commits_per_record().await;
    assert_eq!(per_record.len(), writer.commits);
    assert!(per_record.iter().all(|&commits| commits == 1));
}

#[tokio::test]
async fn a_split_while_the_relay_packs_leaves_no_gap_on_any_shard() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    let relay = spawn_relay(&database, Arc::new(kinesis_log(&stream)), false).await;
    let aggregates = stores(40);
    writer.write(&aggregates, 3).await;
    stream.wait_for_records(writer.commits).await;

    // Split the shard the relay's map holds while commits of its aggregates keep coming: the
    // first packed records after the split land on a child the map does not know.
    let parents = stream.shard_parents().await;
    let first_shard = parents.keys().next().unwrap().clone();
    let splitting = {
        let client = stream.client.clone();
        let name = stream.name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client
                .split_shard()
                .stream_name(&name)
                .shard_to_split(&first_shard)
                // Half of the first shard's range (the lower half of the key space).
                .new_starting_hash_key("85070591730234615865843651857942052864")
                .send()
                .await
                .unwrap();
        })
    };
    for _ in 0..4 {
        writer.write(&aggregates, 2).await;
    }
    splitting.await.unwrap();
    stream.wait_active().await;
    writer.write(&aggregates, 3).await;
    wait_for_empty_outbox(&writer).await;
    relay.stop().await;

    let parents = stream.shard_parents().await;
    assert_eq!(parents.len(), 4, "split: {parents:?}");
    let commits = stream.read_all().await;
    let seen = replay_resharded(&commits, &parents);
    assert_eq!(seen.last_sequence, writer.versions().await);
}

async fn wait_for_empty_outbox(writer: &Writer) {
    let deadline = tokio::time::Instant::now() + test_support::PATIENCE;
    while writer.outbox_rows().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never empties"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
