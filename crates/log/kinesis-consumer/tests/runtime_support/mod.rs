//! Test helpers for the projector runtime: fresh emulator resources per test, log records built
//! from commits, and a recording projection with a per-aggregate last-sequence guard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use commit_log::projection::{FlushPolicy, Projection, ProjectionError};
use commit_log::LoggedCommit;
use event_store::RecordedEvent;
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{Lease, LeaseTable, ParkedStore, Worker, WorkerConfig};
use serde_json::json;
use test_support::{aws_test_config, unique_name};
use time::OffsetDateTime;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// The aggregate type of every test commit (its events parse as real menu events).
pub const TYPE: &str = "menu";

/// A stream, a lease table, a parked table and a dead-letter queue of one test.
pub struct Fixture {
    pub sdk: SdkConfig,
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub stream: String,
    pub leases_table: String,
    pub parked_table: String,
    pub dlq_url: String,
    extra_tables: Vec<String>,
    next_position: AtomicUsize,
}

impl Fixture {
    pub async fn new(shards: i32) -> Self {
        let sdk = aws_test_config().await;
        let fixture = Self {
            kinesis: aws_support::kinesis(&sdk),
            dynamodb: aws_support::dynamodb(&sdk),
            sqs: aws_support::sqs(&sdk),
            sdk,
            stream: unique_name("runtime"),
            leases_table: unique_name("leases"),
            parked_table: unique_name("parked"),
            dlq_url: String::new(),
            extra_tables: Vec::new(),
            next_position: AtomicUsize::new(1),
        };
        fixture
            .kinesis
            .create_stream()
            .stream_name(&fixture.stream)
            .shard_count(shards)
            .send()
            .await
            .expect("create stream");
        fixture.wait_stream_active().await;
        LeaseTable::create_table(&fixture.dynamodb, &fixture.leases_table)
            .await
            .expect("create the lease table");
        ParkedStore::create_table(&fixture.dynamodb, &fixture.parked_table)
            .await
            .expect("create the parked table");
        let dlq_url = DeadLetterQueue::create_queue(&fixture.sqs, &unique_name("projector"))
            .await
            .expect("create the dead-letter queue");
        Self { dlq_url, ..fixture }
    }

    /// A lease table of its own, for a second consumer group over the same stream.
    pub async fn another_lease_table(&mut self) -> String {
        let name = unique_name("leases");
        LeaseTable::create_table(&self.dynamodb, &name)
            .await
            .expect("create the lease table");
        self.extra_tables.push(name.clone());
        name
    }

    /// Deletes the test's stream, tables and queue: the emulators are shared, and kinesalite
    /// allows 100 shards in all.
    pub async fn tear_down(self) {
        let _ = self
            .kinesis
            .delete_stream()
            .stream_name(&self.stream)
            .send()
            .await;
        for table in [&self.leases_table, &self.parked_table]
            .into_iter()
            .chain(&self.extra_tables)
        {
            let _ = self.dynamodb.delete_table().table_name(table).send().await;
        }
        let _ = self
            .sqs
            .delete_queue()
            .queue_url(&self.dlq_url)
            .send()
            .await;
    }

    pub async fn wait_stream_active(&self) {
        eventually("stream active", Duration::from_secs(20), || async {
            let summary = self
                .kinesis
                .describe_stream_summary()
                .stream_name(&self.stream)
                .send()
                .await;
            summary.ok().and_then(|s| {
                s.stream_description_summary()
                    .map(|d| d.stream_status().clone())
            }) == Some(StreamStatus::Active)
        })
        .await;
    }

    /// A worker configuration with short leases and fast polling.
    pub fn worker_config(&self, worker_id: &str, leases_table: &str) -> WorkerConfig {
        WorkerConfig {
            worker_id: worker_id.to_owned(),
            stream_name: self.stream.clone(),
            leases_table: leases_table.to_owned(),
            parked_table: self.parked_table.clone(),
            dead_letter_queue_url: self.dlq_url.clone(),
            lease_duration: LEASE_DURATION,
            batch_size: 25,
            max_apply_attempts: 3,
            poll_interval: Duration::from_millis(200),
            shard_sync_interval: Duration::from_millis(500),
        }
    }

    /// One single-event commit of aggregate `id` at `sequence`, as a log record.
    pub fn commit(&self, id: &str, sequence: i64) -> Vec<u8> {
        self.commit_of(
            id,
            sequence,
            "MenuItemAvailabilityChanged",
            json!({"MenuItemAvailabilityChanged": {"sku": "LATTE-12", "available": sequence % 2 == 0}}),
        )
    }

    /// One single-event commit of aggregate `id` at `sequence` carrying `event_type` (v1.0)
    /// with `payload`, as a log record.
    pub fn commit_of(
        &self,
        id: &str,
        sequence: i64,
        event_type: &str,
        payload: serde_json::Value,
    ) -> Vec<u8> {
        let position = self.next_position.fetch_add(1, Ordering::SeqCst) as i64;
        let event = RecordedEvent {
            global_position: position,
            aggregate_type: TYPE.into(),
            aggregate_id: id.into(),
            sequence,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({}),
            recorded_at: OffsetDateTime::now_utc(),
        };
        commit_log::encode(&[event]).expect("one event is one commit")
    }

    /// Whatever reaches the dead-letter queue within `wait`.
    pub async fn dead_letters_within(&self, wait: Duration) -> Vec<serde_json::Value> {
        let mut letters = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            for message in output.messages() {
                letters.push(
                    serde_json::from_str(message.body().expect("a body")).expect("JSON body"),
                );
            }
        }
        letters
    }

    /// Puts `records` (partition key, data) with PutRecords, in order.
    pub async fn put(&self, records: Vec<(String, Vec<u8>)>) {
        for chunk in records.chunks(100) {
            let entries = chunk
                .iter()
                .map(|(key, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data.clone()))
                        .build()
                        .expect("a complete entry")
                })
                .collect::<Vec<_>>();
            let output = self
                .kinesis
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
                .expect("put records");
            assert_eq!(
                output.failed_record_count(),
                Some(0),
                "kinesalite refused records"
            );
        }
    }

    pub fn lease_table(&self, name: &str) -> LeaseTable {
        LeaseTable::new(self.dynamodb.clone(), name)
    }

    pub fn parked(&self) -> ParkedStore {
        ParkedStore::new(self.dynamodb.clone(), &self.parked_table)
    }

    pub async fn leases(&self, table: &str) -> Vec<Lease> {
        self.lease_table(table).list().await.expect("list leases")
    }

    /// Every message in the dead-letter queue, as JSON.
    pub async fn dead_letters(&self, expected: usize) -> Vec<serde_json::Value> {
        let mut letters = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while letters.len() < expected && tokio::time::Instant::now() < deadline {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            for message in output.messages() {
                letters.push(
                    serde_json::from_str(message.body().expect("a body")).expect("JSON body"),
                );
            }
        }
        letters
    }
}

/// Starts a worker; it runs until the returned sender fires (graceful) or the task is aborted
/// (a crash).
pub fn start(
    fixture: &Fixture,
    worker_id: &str,
    leases_table: &str,
    projection: Arc<dyn Projection>,
) -> (JoinHandle<()>, oneshot::Sender<()>) {
    run(Worker::new(
        &fixture.sdk,
        fixture.worker_config(worker_id, leases_table),
        vec![projection],
    ))
}

/// Runs `worker` until the returned sender fires (graceful) or the task is aborted (a crash).
pub fn run(worker: Worker) -> (JoinHandle<()>, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    (task, stop)
}

/// Short, so failover happens within seconds.
pub const LEASE_DURATION: Duration = Duration::from_millis(1500);

/// Polls `check` every 100 ms until it holds; panics after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A read model that records, per aggregate, the sequences it applied, with the same guard a
/// real projection keeps: a commit already applied changes nothing, a gap is poison.
#[derive(Default)]
pub struct Recorder {
    name: &'static str,
    applied: Mutex<BTreeMap<String, Vec<u64>>>,
    /// Aggregate id and sequence of a commit this projection "cannot hold" until fixed.
    broken: Mutex<Option<(String, u64)>>,
    /// Aggregate id whose commits fail as if the view's store were down.
    unreachable_for: Mutex<Option<String>>,
    /// Transient failures answered so far.
    pub transient_failures: AtomicUsize,
    /// Aggregate id and sequence of a commit whose batch the store refuses as a whole (as a
    /// set-based statement would), applying nothing of it, until fixed.
    refused: Mutex<Option<(String, u64)>>,
    /// Gaps seen (a commit arriving before its predecessor): must stay 0.
    pub gaps: AtomicUsize,
    /// After this many applied commits, signal `crashed` and never return.
    hang_after: Mutex<Option<usize>>,
    pub hanging: Notify,
    total: AtomicUsize,
    /// What `flush_policy` answers (`None`: the default, every read).
    flush: Mutex<Option<FlushPolicy>>,
    /// The number of commits of every `apply` call, in order.
    batches: Mutex<Vec<usize>>,
}

impl Recorder {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            ..Self::default()
        })
    }

    pub fn view(&self) -> BTreeMap<String, Vec<u64>> {
        self.applied.lock().expect("not poisoned").clone()
    }

    pub fn count(&self) -> usize {
        self.view().values().map(Vec::len).sum()
    }

    pub fn break_on(&self, aggregate_id: &str, sequence: u64) {
        *self.broken.lock().expect("not poisoned") = Some((aggregate_id.to_owned(), sequence));
    }

    pub fn fix(&self) {
        *self.broken.lock().expect("not poisoned") = None;
        *self.unreachable_for.lock().expect("not poisoned") = None;
        *self.refused.lock().expect("not poisoned") = None;
    }

    pub fn refuse_batches_with(&self, aggregate_id: &str, sequence: u64) {
        *self.refused.lock().expect("not poisoned") = Some((aggregate_id.to_owned(), sequence));
    }

    pub fn unreachable_for(&self, aggregate_id: &str) {
        *self.unreachable_for.lock().expect("not poisoned") = Some(aggregate_id.to_owned());
    }

    pub fn flush_by(&self, policy: FlushPolicy) {
        *self.flush.lock().expect("not poisoned") = Some(policy);
    }

    /// The number of commits of every `apply` call so far.
    pub fn batches(&self) -> Vec<usize> {
        self.batches.lock().expect("not poisoned").clone()
    }

    pub fn hang_after(&self, applied: Option<usize>) {
        *self.hang_after.lock().expect("not poisoned") = applied;
    }

    fn apply_one(&self, commit: &LoggedCommit) -> Result<bool, String> {
        let broken = self.broken.lock().expect("not poisoned").clone();
        if broken == Some((commit.aggregate_id.clone(), commit.first_sequence())) {
            return Err("the view cannot hold this commit (broken on purpose)".into());
        }
        let mut applied = self.applied.lock().expect("not poisoned");
        let sequences = applied.entry(commit.aggregate_id.clone()).or_default();
        let last = sequences.last().copied().unwrap_or(0);
        if commit.last_sequence() <= last {
            return Ok(false);
        }
        if commit.first_sequence() != last + 1 {
            self.gaps.fetch_add(1, Ordering::SeqCst);
            return Err(format!(
                "gap: expected sequence {} of {}, got {}",
                last + 1,
                commit.aggregate_id,
                commit.first_sequence()
            ));
        }
        sequences.push(commit.last_sequence());
        Ok(true)
    }
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn flush_policy(&self) -> FlushPolicy {
        self.flush
            .lock()
            .expect("not poisoned")
            .unwrap_or(FlushPolicy::EVERY_READ)
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        self.batches
            .lock()
            .expect("not poisoned")
            .push(commits.len());
        let refused = self.refused.lock().expect("not poisoned").clone();
        if let Some((id, sequence)) = refused {
            if commits
                .iter()
                .any(|c| c.aggregate_id == id && c.first_sequence() == sequence)
            {
                return Err(ProjectionError::Refused(
                    "the store refuses a value of this batch (on purpose)".into(),
                ));
            }
        }
        for (index, commit) in commits.iter().enumerate() {
            let unreachable = self.unreachable_for.lock().expect("not poisoned").clone();
            if unreachable.as_deref() == Some(commit.aggregate_id.as_str()) {
                self.transient_failures.fetch_add(1, Ordering::SeqCst);
                return Err(ProjectionError::Transient(
                    "the view's store is down".into(),
                ));
            }
            match self.apply_one(commit) {
                Ok(true) => {
                    let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
                    let hang = *self.hang_after.lock().expect("not poisoned");
                    if hang == Some(total) {
                        self.hanging.notify_one();
                        std::future::pending::<()>().await;
                    }
                }
                Ok(false) => {}
                Err(reason) => return Err(ProjectionError::Poison { index, reason }),
            }
        }
        Ok(())
    }
}

/// `n` commits of each aggregate, round-robin, as (partition key, record).
pub fn rounds(
    fixture: &Fixture,
    aggregates: &[String],
    sequences: std::ops::RangeInclusive<i64>,
) -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    for sequence in sequences {
        for id in aggregates {
            records.push((id.clone(), fixture.commit(id, sequence)));
        }
    }
    records
}

/// Every aggregate applied exactly 1..=n, in order.
pub fn complete(view: &BTreeMap<String, Vec<u64>>, aggregates: &[String], n: u64) -> bool {
    let expected: Vec<u64> = (1..=n).collect();
    aggregates
        .iter()
        .all(|id| view.get(id).is_some_and(|applied| *applied == expected))
}
