//! A fresh Kinesis stream per test, read back the way a projector reads it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use commit_log::LoggedCommit;

use crate::{aws_test_config, unique_name};

/// How long a test waits for something that should happen within a second or two.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A Kinesis client for the emulator whose every call is bounded (as the pipeline's own clients
/// are, through `aws-support`): kinesalite has been seen, rarely, to leave a GetRecords
/// unanswered on an open connection, and a client without limits then hangs its test forever
/// instead of failing the attempt as a timeout that the code under test retries.
async fn bounded_kinesis_client() -> aws_sdk_kinesis::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let config = aws_sdk_kinesis::config::Builder::from(&aws_test_config().await)
        .timeout_config(timeouts)
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A fresh stream on kinesalite.
pub struct TestStream {
    /// A client for the emulator.
    pub client: aws_sdk_kinesis::Client,
    /// The stream's name.
    pub name: String,
}

impl TestStream {
    /// Creates a stream of `shards` shards and waits until it is ACTIVE.
    pub async fn create(shards: i32) -> Self {
        let client = bounded_kinesis_client().await;
        let name = unique_name("stream");
        client
            .create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .expect("CreateStream");
        let stream = Self { client, name };
        stream.wait_active().await;
        stream
    }

    /// Waits until the stream is ACTIVE (after its creation, or a split or merge).
    pub async fn wait_active(&self) {
        for _ in 0..200 {
            let summary = self
                .client
                .describe_stream_summary()
                .stream_name(&self.name)
                .send()
                .await
                .expect("DescribeStreamSummary");
            if summary
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stream {} never became ACTIVE", self.name);
    }

    /// Every commit of every shard from the start, unpacked from its record and decoded: per
    /// shard, in the shard's order.
    pub async fn read_all(&self) -> BTreeMap<String, Vec<LoggedCommit>> {
        let mut by_shard: BTreeMap<String, Vec<LoggedCommit>> = BTreeMap::new();
        let shards = self
            .each_record(|shard, record| {
                let commits = commit_log::decode_record(record.data().as_ref())
                    .expect("every record is a commit envelope or a container of them");
                assert_eq!(
                    record.partition_key(),
                    commits.first().map(|commit| commit.aggregate_id.as_str()),
                    "partition key = the (first) commit's aggregate id"
                );
                by_shard
                    .entry(shard.to_owned())
                    .or_default()
                    .extend(commits);
            })
            .await
            .expect("the stream reads back");
        for shard in shards {
            by_shard.entry(shard).or_default();
        }
        by_shard
    }

    /// The Kinesis PUT payload units of every record on the stream: each record's data in
    /// 25 KB chunks, as AWS bills them. Read page by page, nothing kept.
    pub async fn put_payload_units(&self) -> Result<u64, aws_sdk_kinesis::Error> {
        let mut units = 0;
        self.each_record(|_, record| {
            units += record.data().as_ref().len().div_ceil(25 * 1024).max(1) as u64;
        })
        .await?;
        Ok(units)
    }

    /// Calls `visit` with every record of every shard from the start (shard id, record), each
    /// shard in its order; returns the shards' ids.
    async fn each_record(
        &self,
        mut visit: impl FnMut(&str, &aws_sdk_kinesis::types::Record),
    ) -> Result<Vec<String>, aws_sdk_kinesis::Error> {
        let shards = self
            .client
            .list_shards()
            .stream_name(&self.name)
            .send()
            .await?;
        for shard in shards.shards() {
            let mut iterator = self
                .client
                .get_shard_iterator()
                .stream_name(&self.name)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator;
            while let Some(current) = iterator {
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(&current)
                    .limit(10_000)
                    .send()
                    .await?;
                if page.records().is_empty() {
                    break;
                }
                for record in page.records() {
                    visit(shard.shard_id(), record);
                }
                iterator = page.next_shard_iterator;
            }
        }
        Ok(shards
            .shards()
            .iter()
            .map(|shard| shard.shard_id().to_owned())
            .collect())
    }

    /// How many commits each record of the stream carries, every shard from the start.
    pub async fn commits_per_record(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        self.each_record(|_, record| {
            let commits = commit_log::unpack(record.data().as_ref())
                .expect("every record is a commit envelope or a container of them");
            counts.push(commits.len());
        })
        .await
        .expect("the stream reads back");
        counts
    }

    /// Every shard's parent shards (none for an original shard), from ListShards.
    pub async fn shard_parents(&self) -> BTreeMap<String, Vec<String>> {
        let listed = self
            .client
            .list_shards()
            .stream_name(&self.name)
            .send()
            .await
            .expect("ListShards");
        listed
            .shards()
            .iter()
            .map(|shard| {
                let parents = shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect();
                (shard.shard_id().to_owned(), parents)
            })
            .collect()
    }

    /// Reads until at least `count` commits are on the stream.
    pub async fn wait_for_records(&self, count: usize) -> BTreeMap<String, Vec<LoggedCommit>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let records = self.read_all().await;
            let seen: usize = records.values().map(Vec::len).sum();
            if seen >= count {
                return records;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {seen} of {count} commits reached the stream"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a projection reading the stream sees: per aggregate, the last sequence applied, and how
/// many records it skipped as already seen.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Per (aggregate type, aggregate id), the last sequence applied.
    pub last_sequence: HashMap<(String, String), u64>,
    /// Commits applied, each once.
    pub commits_applied: usize,
    /// Records skipped because their commit was applied before.
    pub duplicates_skipped: usize,
}

/// Reads the stream like a projector that skips sequences it has applied, and checks that it
/// sees every commit of an aggregate once, in order, and each aggregate on one shard only.
pub fn replay(records: &BTreeMap<String, Vec<LoggedCommit>>) -> Replayed {
    let mut replayed = Replayed::default();
    let mut shard_of: HashMap<(String, String), &str> = HashMap::new();
    for (shard, commits) in records {
        for commit in commits {
            let aggregate = (commit.aggregate_type.clone(), commit.aggregate_id.clone());
            let home = shard_of.entry(aggregate.clone()).or_insert(shard);
            assert_eq!(*home, shard, "{aggregate:?} is on one shard only");
            let applied = replayed.last_sequence.entry(aggregate.clone()).or_insert(0);
            if commit.first_sequence() <= *applied {
                assert!(
                    commit.last_sequence() <= *applied,
                    "a duplicate is a whole commit seen before: {aggregate:?} {}..={} after {applied}",
                    commit.first_sequence(),
                    commit.last_sequence()
                );
                replayed.duplicates_skipped += 1;
                continue;
            }
            assert_eq!(
                commit.first_sequence(),
                *applied + 1,
                "{aggregate:?}: commit {}..={} arrived after {applied}: out of order or a gap",
                commit.first_sequence(),
                commit.last_sequence()
            );
            *applied = commit.last_sequence();
            replayed.commits_applied += 1;
        }
    }
    replayed
}

/// Reads a resharded stream as the projector runtime does: a shard only after its parents, and
/// sibling shards independently (each from its parents' state, as two workers would), skipping
/// commits already applied. Panics at a gap or a reordering in any shard; the result merges
/// every shard's state (`commits_applied` counts a commit once per shard that applied it).
pub fn replay_resharded(
    records: &BTreeMap<String, Vec<LoggedCommit>>,
    parents: &BTreeMap<String, Vec<String>>,
) -> Replayed {
    type State = HashMap<(String, String), u64>;
    let mut ended: HashMap<&str, State> = HashMap::new();
    let mut replayed = Replayed::default();
    let no_commits = Vec::new();
    while ended.len() < parents.len() {
        let before = ended.len();
        for (shard, its_parents) in parents {
            let ready = its_parents
                .iter()
                .all(|parent| ended.contains_key(parent.as_str()) || !parents.contains_key(parent));
            if ended.contains_key(shard.as_str()) || !ready {
                continue;
            }
            let mut state = State::new();
            for parent in its_parents {
                for (aggregate, last) in ended.get(parent.as_str()).into_iter().flatten() {
                    let applied = state.entry(aggregate.clone()).or_insert(0);
                    *applied = (*applied).max(*last);
                }
            }
            for commit in records.get(shard).unwrap_or(&no_commits) {
                let aggregate = (commit.aggregate_type.clone(), commit.aggregate_id.clone());
                let applied = state.entry(aggregate.clone()).or_insert(0);
                if commit.last_sequence() <= *applied {
                    replayed.duplicates_skipped += 1;
                    continue;
                }
                assert_eq!(
                    commit.first_sequence(),
                    *applied + 1,
                    "shard {shard}, {aggregate:?}: commit {}..={} arrived after {applied}: out of order or a gap",
                    commit.first_sequence(),
                    commit.last_sequence()
                );
                *applied = commit.last_sequence();
                replayed.commits_applied += 1;
            }
            for (aggregate, last) in &state {
                let merged = replayed.last_sequence.entry(aggregate.clone()).or_insert(0);
                *merged = (*merged).max(*last);
            }
            ended.insert(shard, state);
        }
        assert!(
            ended.len() > before,
            "a shard's parents never end: {parents:?}"
        );
    }
    replayed
}
