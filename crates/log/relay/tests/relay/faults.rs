//! Faults injected around the real Kinesis adapter: records refused before they are sent, whole
//! calls failing, and a relay that dies between PutRecords and the outbox removal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_support::AwsCallError;
use futures::future::BoxFuture;
use relay::record_log::{
    KinesisLog, LogRecord, PutOutcome, RecordLog, RecordLogError, ShardRange, THROTTLED,
};
use test_support::fresh_database;

use crate::helpers::{
    kinesis_log, replay, spawn_relay, spawn_relay_packing, stores, TestStream, Writer,
};

/// For its first `faulty_calls` calls: every fifth call fails whole before sending anything,
/// and in the others every third record is refused as throttled and never sent; the rest go
/// to Kinesis. Later calls pass straight through.
struct Flaky {
    inner: KinesisLog,
    faulty_calls: usize,
    calls: AtomicUsize,
    refused: AtomicUsize,
    failed_calls: AtomicUsize,
}

impl RecordLog for Flaky {
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call >= self.faulty_calls {
                return self.inner.put(records).await;
            }
            if call % 5 == 4 {
                self.failed_calls.fetch_add(1, Ordering::SeqCst);
                let timeout = SdkError::<PutRecordsError, HttpResponse>::timeout_error(
                    "injected: the call timed out",
                );
                return Err(AwsCallError::from_sdk("kinesis:PutRecords", timeout).into());
            }
            let refuse = |index: usize| (call + index).is_multiple_of(3);
            let sent: Vec<LogRecord> = records
                .iter()
                .enumerate()
                .filter(|(index, _)| !refuse(*index))
                .map(|(_, record)| record.clone())
                .collect();
            // Kinesis rejects an empty call; with every record refused there is nothing to send.
            let mut stored = if sent.is_empty() {
                Vec::new().into_iter()
            } else {
                self.inner.put(sent).await?.into_iter()
            };
            Ok((0..records.len())
                .map(|index| {
                    if refuse(index) {
                        self.refused.fetch_add(1, Ordering::SeqCst);
                        PutOutcome::Refused {
                            error_code: THROTTLED.into(),
                            error_message: "injected: rate exceeded for shard".into(),
                        }
                    } else {
                        stored.next().expect("one outcome per record sent")
                    }
                })
                .collect())
        })
    }

    fn open_shards(&self) -> BoxFuture<'_, Result<Vec<ShardRange>, RecordLogError>> {
        self.inner.open_shards()
    }
}

#[tokio::test]
async fn refused_records_and_failed_calls_never_reorder_an_aggregates_commits() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    writer.write(&stores(15), 10).await;
    let flaky = Arc::new(Flaky {
        inner: kinesis_log(&stream),
        faulty_calls: 40,
        calls: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        failed_calls: AtomicUsize::new(0),
    });

    // A few commits per record, so there are records enough to refuse: a refused record is
    // refused with every commit it packs.
    let relay = spawn_relay_packing(&database, flaky.clone(), false, 20, 3).await;
    let records = stream.wait_for_records(writer.commits).await;
    relay.stop().await;

    assert!(
        flaky.refused.load(Ordering::SeqCst) > 20,
        "faults were injected"
    );
    assert!(flaky.failed_calls.load(Ordering::SeqCst) > 2);
    let seen = replay(&records);
    assert_eq!(seen.commits_applied, writer.commits);
    assert_eq!(
        seen.duplicates_skipped, 0,
        "refused records were never sent, so nothing is doubled"
    );
    assert_eq!(seen.last_sequence, writer.versions().await);
    assert_eq!(writer.outbox_rows().await, 0);
}

/// Passes calls through until call number `crash_on_call`, which it forwards and then panics:
/// the relay dies with the records stored but its outbox rows not yet removed.
struct CrashAfterPut {
    inner: KinesisLog,
    crash_on_call: usize,
    calls: AtomicUsize,
    crashed_with: Mutex<usize>,
}

impl RecordLog for CrashAfterPut {
    fn put(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, RecordLogError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let count = records
                .iter()
                .map(|record| commit_log::unpack(&record.data).map_or(0, |commits| commits.len()))
                .sum();
            let outcomes = self.inner.put(records).await;
            if call == self.crash_on_call {
                assert!(outcomes.is_ok(), "the put before the crash succeeds");
                *self.crashed_with.lock().unwrap() = count;
                panic!("injected crash after PutRecords, before the outbox removal");
            }
            outcomes
        })
    }

    fn open_shards(&self) -> BoxFuture<'_, Result<Vec<ShardRange>, RecordLogError>> {
        self.inner.open_shards()
    }
}

#[tokio::test]
async fn a_relay_that_dies_between_put_and_removal_republishes_on_restart_in_order() {
    let database = fresh_database().await;
    let stream = TestStream::create(2).await;
    let mut writer = Writer::open(&database).await;
    writer.write(&stores(10), 6).await;
    let crashing = Arc::new(CrashAfterPut {
        inner: kinesis_log(&stream),
        // Packed, the first call carries the whole outbox.
        crash_on_call: 0,
        calls: AtomicUsize::new(0),
        crashed_with: Mutex::new(0),
    });

    let first = spawn_relay(&database, crashing.clone(), false).await;
    assert!(
        first.ended().await.is_err(),
        "the relay process stops on the crash"
    );
    let doubled = *crashing.crashed_with.lock().unwrap();
    assert!(doubled > 0);
    let published_before_restart: usize = stream.read_all().await.values().map(Vec::len).sum();
    assert!(
        writer.outbox_rows().await > 0,
        "the crashed wave is still in the outbox"
    );

    // Its lock session died with it: a new relay takes the lock and publishes the rest.
    let second = spawn_relay(&database, Arc::new(kinesis_log(&stream)), false).await;
    let records = stream.wait_for_records(writer.commits + doubled).await;
    second.stop().await;

    assert!(published_before_restart >= doubled);
    let seen = replay(&records);
    assert_eq!(
        seen.commits_applied, writer.commits,
        "every commit, once, in order"
    );
    assert_eq!(
        seen.duplicates_skipped, doubled,
        "exactly the crashed call's commits appear twice"
    );
    assert_eq!(seen.last_sequence, writer.versions().await);
    assert_eq!(writer.outbox_rows().await, 0);
}
