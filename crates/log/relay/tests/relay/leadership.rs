//! Two relays on one database: one publishes, the other stands by and takes over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use relay::record_log::{KinesisLog, LogRecord, PutOutcome, RecordLog, RecordLogError, ShardRange};
use test_support::{fresh_database, TestDatabase};

use crate::helpers::{
    kinesis_log, replay, spawn_relay, stores, TestRelay, TestStream, Writer, PATIENCE,
};

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

    fn open_shards(&self) -> BoxFuture<'_, Result<Vec<ShardRange>, RecordLogError>> {
        self.inner.open_shards()
    }
}

/// Two relays on one fresh database and stream, each publishing through a counted log.
struct TwoRelays {
    database: TestDatabase,
    stream: TestStream,
    writer: Writer,
    relays: [(TestRelay, Arc<Counted>); 2],
}

impl TwoRelays {
    async fn start() -> Self {
        let database = fresh_database().await;
        let stream = TestStream::create(2).await;
        let writer = Writer::open(&database).await;
        let (log_a, log_b) = (
            Counted::new(kinesis_log(&stream)),
            Counted::new(kinesis_log(&stream)),
        );
        let relay_a = spawn_relay(&database, log_a.clone(), false).await;
        let relay_b = spawn_relay(&database, log_b.clone(), false).await;
        Self {
            database,
            stream,
            writer,
            relays: [(relay_a, log_a), (relay_b, log_b)],
        }
    }
}

#[tokio::test]
async fn of_two_relays_one_publishes_and_the_other_takes_over_when_it_stops() {
    let TwoRelays {
        database: _,
        stream,
        mut writer,
        relays: [(relay_a, log_a), (relay_b, log_b)],
    } = TwoRelays::start().await;

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

/// `select` (an aggregate) over the sessions holding relay lock 7, the test relays' key.
async fn over_lock_holders(database: &TestDatabase, select: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT {select} FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE d.datname = current_database() AND l.locktype = 'advisory' AND l.granted
            AND l.classid = 0 AND l.objid = 7"
    ))
    .fetch_one(&database.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_relay_that_loses_its_lock_while_alive_stops_publishing_and_one_relay_goes_on() {
    let TwoRelays {
        database,
        stream,
        mut writer,
        relays: [(relay_a, log_a), (relay_b, log_b)],
    } = TwoRelays::start().await;
    writer.write(&stores(6), 3).await;
    stream.wait_for_records(writer.commits).await;

    // The lock session ends, as in a database failover or when an operator or a proxy drops
    // the connection; the relay process lives on.
    let ended = over_lock_holders(&database, "count(pg_terminate_backend(l.pid))").await;
    assert_eq!(ended, 1, "one relay held the lock");
    // The lock is free until a relay takes it again: either may, one only.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while over_lock_holders(&database, "count(*)").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took the lock again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (before_a, before_b) = (log_a.sent(), log_b.sent());
    writer.write(&stores(6), 4).await;
    let records = stream.wait_for_records(writer.commits).await;
    let (after_a, after_b) = (log_a.sent() - before_a, log_b.sent() - before_b);
    assert!(
        (after_a == 0) != (after_b == 0),
        "exactly one relay publishes after the loss: a sent {after_a}, b sent {after_b}"
    );
    // The relay that lost its lock is still running, and healthy (standing by or active).
    assert_eq!(relay_a.health().await, 200);
    assert_eq!(relay_b.health().await, 200);
    relay_a.stop().await;
    relay_b.stop().await;

    let seen = replay(&records);
    assert_eq!(seen.commits_applied, writer.commits, "nothing lost");
    assert_eq!(seen.last_sequence, writer.versions().await);
}
