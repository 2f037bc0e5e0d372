//! The relay's database goes away and comes back.

use std::sync::Arc;
use std::time::Duration;

use test_support::fresh_database;

use crate::helpers::{kinesis_log, replay, spawn_relay, stores, TestStream, Writer};

#[tokio::test]
async fn a_relay_cut_off_from_its_database_reports_unhealthy_and_resumes_when_it_is_back() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    let relay = spawn_relay(&database, Arc::new(kinesis_log(&stream)), true).await;
    writer.write(&stores(5), 4).await;
    stream.wait_for_records(writer.commits).await;
    relay.wait_for_health(200).await;

    let before_cut: usize = stream.read_all().await.values().map(Vec::len).sum();
    let proxy = relay.proxy.as_ref().unwrap();
    proxy.cut();
    relay.wait_for_health(503).await;
    // The writer reaches PostgreSQL directly: commits keep arriving in the outbox meanwhile.
    writer.write(&stores(5), 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during: usize = stream.read_all().await.values().map(Vec::len).sum();
    assert_eq!(during, before_cut, "cut off, the relay publishes nothing");

    proxy.restore();
    let records = stream.wait_for_records(writer.commits).await;
    relay.wait_for_health(200).await;
    relay.stop().await;

    let seen = replay(&records);
    assert_eq!(seen.commits_applied, writer.commits);
    assert_eq!(seen.last_sequence, writer.versions().await);
    assert_eq!(writer.outbox_rows().await, 0);
}
