//! Two relays on one database: one publishes, the other stands by and takes over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use relay::record_log::{KinesisLog, LogRecord, PutOutcome, RecordLog, RecordLogError};
use test_support::fresh_database;

use crate::helpers::{kinesis_log, replay, spawn_relay, stores, TestStream, Writer};

/// Counts the records a relay sends through the real adapter.
struct Counted {
    inner: KinesisLog,
    records: AtomicUsize,
}

impl Counted {
    fn new(inner: KinesisLog) -> Arc<Self> {
        Arc::new(Self {
            inner,
            records: AtomicUsize::new(0),
        })
    }

    fn sent(&self) -> usize {
        self.records.load(Ordering::SeqCst)
    }
}

impl RecordLog for Counted {
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>> {
        self.records.fetch_add(records.len(), Ordering::SeqCst);
        self.inner.put(records)
    }
}

#[tokio::test]
async fn of_two_relays_one_publishes_and_the_other_takes_over_when_it_stops() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    let (log_a, log_b) = (
        Counted::new(kinesis_log(&stream)),
        Counted::new(kinesis_log(&stream)),
    );
    let relay_a = spawn_relay(&database, log_a.clone(), false).await;
    let relay_b = spawn_relay(&database, log_b.clone(), false).await;

    writer.write(&stores(8), 5).await;
    stream.wait_for_records(writer.commits).await;
    // Give the standby several chances to (wrongly) publish.
    writer.write(&stores(4), 3).await;
    stream.wait_for_records(writer.commits).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (sent_a, sent_b) = (log_a.sent(), log_b.sent());
    assert!(
        (sent_a == 0) != (sent_b == 0),
        "exactly one relay publishes: a sent {sent_a}, b sent {sent_b}"
    );
    let (active, standby, standby_log) = if sent_a > 0 {
        (relay_a, relay_b, log_b)
    } else {
        (relay_b, relay_a, log_a)
    };
    assert_eq!(active.health().await, 200);
    assert_eq!(standby.health().await, 200, "standing by is healthy");

    active.stop().await;
    writer.write(&stores(5), 4).await;
    let records = stream.wait_for_records(writer.commits).await;
    assert!(standby_log.sent() > 0, "the standby took over");
    standby.stop().await;

    let seen = replay(&records);
    assert_eq!(seen.commits_applied, writer.commits);
    assert_eq!(
        seen.duplicates_skipped, 0,
        "a graceful hand-over republishes nothing"
    );
    assert_eq!(seen.last_sequence, writer.versions().await);
}
