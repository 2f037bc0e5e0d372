//! One round of publishing, planned without I/O: the commits read from the outbox become
//! envelopes, and the envelopes go out in waves (one PutRecords call each), packed several
//! commits of one shard per record, that never put a later commit of an aggregate before an
//! earlier one is acknowledged.
//!
//! The rules, and why:
//! - A record is all or nothing: Kinesis stores or refuses it whole. So an aggregate's commits
//!   in one wave all sit in one record, in commit order: two records of one call may be refused
//!   one by one, and if a later commit's record were stored and an earlier one's refused, the
//!   later would be on the log ahead of it.
//! - A record holds commits of one shard only (the [`ShardMap`]: each commit's hash key lies in
//!   that shard's range), at most `max_commits_per_record` of them, and goes out with the
//!   partition key and hash key of its first commit. Without a map, or with at most one commit
//!   per record, every record is one plain commit envelope, as before containers existed.
//! - Once a commit is refused (or cannot be made a record at all), its aggregate is blocked for
//!   the rest of the round: its later commits wait until a later round publishes that one.
//! - A wave respects Kinesis's limits: at most 500 records, 5 MiB, and 1 MiB per record
//!   (partition keys included).

use std::collections::{HashMap, HashSet};

use commit_log::Container;
use event_store::{metadata, OutboxCommit};

use crate::record_log::LogRecord;
use crate::settings::MAX_RECORDS_PER_CALL;
use crate::shard_map::{hash_key, ShardMap};

/// Kinesis's limit on one record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's limit on one PutRecords call: every record's data plus partition key.
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;

/// An aggregate's identity: its type and id (the id alone is the partition key).
pub(crate) type AggregateKey = (String, String);

/// A commit of a wave, as the relay tracks it once its record is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WaveCommit {
    /// Its first position: its outbox row.
    pub first_position: i64,
    /// Its aggregate.
    pub aggregate: AggregateKey,
    /// Its aggregate's hash key: the shard it belongs to.
    pub hash_key: u128,
    /// The commit's trace (empty when its command recorded none).
    pub traceparent: String,
}

/// A commit that has its envelope.
#[derive(Debug)]
struct Ready {
    commit: WaveCommit,
    envelope: Vec<u8>,
}

/// A commit that can never be a record as it is: too large for Kinesis, or not encodable. Its
/// aggregate stays blocked until an operator deals with it; the relay reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unpublishable {
    /// The commit's first position.
    pub first_position: i64,
    /// Its aggregate.
    pub aggregate: AggregateKey,
    /// Why.
    pub reason: String,
}

/// One record of a wave and the commits it carries.
#[derive(Debug)]
pub(crate) struct PackedRecord {
    /// The record.
    pub record: LogRecord,
    /// The shard the map says it lands in (`None` when the map was not consulted).
    pub shard_id: Option<String>,
    /// Its commits, in commit order.
    pub commits: Vec<WaveCommit>,
}

/// The records of one PutRecords call, in the call's order.
#[derive(Debug)]
pub(crate) struct Wave {
    /// The records with their commits.
    pub records: Vec<PackedRecord>,
}

/// A record being filled during [`Round::next_wave`].
struct Filling {
    shard_id: Option<String>,
    container: Container,
    commits: Vec<WaveCommit>,
    partition_key: String,
}

impl Filling {
    fn size_with(&self, envelope: &[u8]) -> usize {
        self.partition_key.len() + self.container.len_with(envelope.len())
    }

    fn size(&self) -> usize {
        self.partition_key.len() + self.container.len()
    }
}

/// The commits of one outbox read that are not yet published or blocked.
#[derive(Debug)]
pub(crate) struct Round {
    /// In position order, so each aggregate's commits are in sequence order.
    waiting: Vec<Ready>,
    blocked: HashSet<AggregateKey>,
}

impl Round {
    /// Encodes `commits` (oldest first, as the outbox gives them), and returns the round with
    /// the commits that cannot be published.
    pub fn plan(commits: Vec<OutboxCommit>) -> (Self, Vec<Unpublishable>) {
        let mut round = Round {
            waiting: Vec::with_capacity(commits.len()),
            blocked: HashSet::new(),
        };
        let mut unpublishable = Vec::new();
        for commit in commits {
            let traceparent = commit
                .events
                .first()
                .and_then(|event| event.metadata.get(metadata::TRACEPARENT))
                .and_then(|value| value.as_str())
                .unwrap_or_default()
                .to_owned();
            let aggregate = (commit.aggregate_type, commit.aggregate_id);
            let envelope = commit_log::encode(&commit.events)
                .map_err(|error| error.to_string())
                .and_then(|envelope| {
                    let size = aggregate.1.len() + envelope.len();
                    if size > MAX_RECORD_BYTES {
                        Err(format!(
                            "its record has {size} bytes; Kinesis takes at most {MAX_RECORD_BYTES}"
                        ))
                    } else {
                        Ok(envelope)
                    }
                });
            match envelope {
                Ok(envelope) => round.waiting.push(Ready {
                    commit: WaveCommit {
                        first_position: commit.first_position,
                        hash_key: hash_key(&aggregate.1),
                        aggregate,
                        traceparent,
                    },
                    envelope,
                }),
                Err(reason) => {
                    round.blocked.insert(aggregate.clone());
                    unpublishable.push(Unpublishable {
                        first_position: commit.first_position,
                        aggregate,
                        reason,
                    });
                }
            }
        }
        (round, unpublishable)
    }

    /// The next PutRecords call: oldest first, every unblocked aggregate's waiting commits that
    /// fit in the one record of the wave that holds its first, within the call's limits, up to
    /// `max_commits_per_record` commits of one shard of `shards` per record. `None` when
    /// nothing can be sent this round.
    pub fn next_wave(&mut self, shards: &ShardMap, max_commits_per_record: usize) -> Option<Wave> {
        // Without a map, commits of different shards could share a record: one per record.
        let per_record = if shards.is_empty() {
            1
        } else {
            max_commits_per_record.max(1)
        };
        let mut filling: Vec<Filling> = Vec::new();
        // The record of each shard that still takes commits this wave.
        let mut open: HashMap<Option<String>, usize> = HashMap::new();
        // The record holding each aggregate's commits in this wave.
        let mut placed: HashMap<AggregateKey, usize> = HashMap::new();
        // Aggregates whose next commit waits for a later wave: nothing later of them may go.
        let mut held: HashSet<AggregateKey> = HashSet::new();
        let mut call_bytes = 0;
        let mut remaining = Vec::with_capacity(self.waiting.len());
        for ready in self.waiting.drain(..) {
            let aggregate = &ready.commit.aggregate;
            if held.contains(aggregate) || self.blocked.contains(aggregate) {
                held.insert(aggregate.clone());
                remaining.push(ready);
                continue;
            }
            let shard_id = (per_record > 1)
                .then(|| shards.shard_of(ready.commit.hash_key).map(str::to_owned))
                .flatten();
            let target = match (placed.get(aggregate), open.get(&shard_id)) {
                (Some(at), Some(open)) if at == open => Some(*open),
                (Some(_), _) => None,
                (None, open) => open.copied(),
            };
            let joins = target.filter(|&index| {
                let record = &filling[index];
                let grown = record.size_with(&ready.envelope);
                record.commits.len() < per_record
                    && grown <= MAX_RECORD_BYTES
                    && call_bytes - record.size() + grown <= MAX_CALL_BYTES
            });
            let index = match joins {
                Some(index) => {
                    call_bytes -= filling[index].size();
                    index
                }
                // Its commits of this wave are in a record that is full: the rest wait.
                None if placed.contains_key(aggregate) => {
                    held.insert(aggregate.clone());
                    remaining.push(ready);
                    continue;
                }
                None => {
                    let size = aggregate.1.len() + ready.envelope.len();
                    if filling.len() == MAX_RECORDS_PER_CALL || call_bytes + size > MAX_CALL_BYTES {
                        held.insert(aggregate.clone());
                        remaining.push(ready);
                        continue;
                    }
                    filling.push(Filling {
                        shard_id: shard_id.clone(),
                        container: Container::new(),
                        commits: Vec::new(),
                        partition_key: aggregate.1.clone(),
                    });
                    open.insert(shard_id, filling.len() - 1);
                    filling.len() - 1
                }
            };
            let record = &mut filling[index];
            record.container.push(ready.envelope);
            placed.insert(ready.commit.aggregate.clone(), index);
            record.commits.push(ready.commit);
            call_bytes += record.size();
        }
        self.waiting = remaining;
        let records: Vec<PackedRecord> = filling
            .into_iter()
            .map(|record| {
                // The first commit's own hash key: inside its shard's range by construction.
                let explicit_hash_key =
                    (record.commits.len() > 1).then(|| record.commits[0].hash_key.to_string());
                PackedRecord {
                    record: LogRecord {
                        partition_key: record.partition_key,
                        explicit_hash_key,
                        data: record.container.into_record(),
                    },
                    shard_id: record.shard_id,
                    commits: record.commits,
                }
            })
            .collect();
        (!records.is_empty()).then_some(Wave { records })
    }

    /// Holds back every later commit of `aggregate` for the rest of the round: one of its
    /// commits was refused (or landed on a shard it does not belong to) and must go first.
    pub fn block(&mut self, aggregate: AggregateKey) {
        self.blocked.insert(aggregate);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shard_map::ShardRange;
    use event_store::RecordedEvent;
    use serde_json::json;
    use time::OffsetDateTime;

    /// A one-event menu commit at `position`; `padding` bytes make its record that much larger.
    fn commit(aggregate_id: &str, position: i64, sequence: i64, padding: usize) -> OutboxCommit {
        let sku = format!("LATTE-12{}", "X".repeat(padding));
        OutboxCommit {
            first_position: position,
            aggregate_type: "menu".into(),
            aggregate_id: aggregate_id.into(),
            events: vec![RecordedEvent {
                global_position: position,
                aggregate_type: "menu".into(),
                aggregate_id: aggregate_id.into(),
                sequence,
                event_type: "MenuItemAvailabilityChanged".into(),
                event_version: "1.0".into(),
                payload: json!({"MenuItemAvailabilityChanged": {"sku": sku, "available": true}}),
                metadata: json!({}),
                recorded_at: OffsetDateTime::UNIX_EPOCH,
            }],
        }
    }

    /// Every commit of the wave, in the call's order.
    fn positions(wave: &Wave) -> Vec<i64> {
        wave.records
            .iter()
            .flat_map(|record| record.commits.iter().map(|commit| commit.first_position))
            .collect()
    }

    /// Per record, its commits' positions.
    fn packing(wave: &Wave) -> Vec<Vec<i64>> {
        wave.records
            .iter()
            .map(|record| record.commits.iter().map(|c| c.first_position).collect())
            .collect()
    }

    /// The next wave of one commit per record (packing off).
    fn unpacked(round: &mut Round) -> Option<Wave> {
        round.next_wave(&ShardMap::default(), 1)
    }

    /// Two shards splitting the hash key space in halves.
    fn two_shards() -> ShardMap {
        let half = u128::MAX / 2;
        ShardMap::new(vec![
            ShardRange {
                shard_id: "lower".into(),
                starting_hash_key: 0,
                ending_hash_key: half,
            },
            ShardRange {
                shard_id: "upper".into(),
                starting_hash_key: half + 1,
                ending_hash_key: u128::MAX,
            },
        ])
    }

    /// `count` aggregate ids whose hash keys fall in `shard` of [`two_shards`].
    fn ids_of(shard: &str, count: usize) -> Vec<String> {
        let map = two_shards();
        (0..)
            .map(|i| format!("agg-{i}"))
            .filter(|id| map.shard_of(hash_key(id)) == Some(shard))
            .take(count)
            .collect()
    }

    fn key(id: &str) -> AggregateKey {
        ("menu".into(), id.into())
    }

    #[test]
    fn a_wave_holds_each_aggregates_oldest_commit_only() {
        let (mut round, unpublishable) = Round::plan(vec![
            commit("a", 1, 1, 0),
            commit("a", 2, 2, 0),
            commit("b", 3, 1, 0),
            commit("a", 4, 3, 0),
            commit("c", 5, 1, 0),
        ]);
        assert!(unpublishable.is_empty());

        let first = unpacked(&mut round).unwrap();
        assert_eq!(positions(&first), vec![1, 3, 5]);
        assert_eq!(first.records[0].record.partition_key, "a");
        let decoded = commit_log::decode(&first.records[1].record.data).unwrap();
        assert_eq!(
            (decoded.aggregate_id.as_str(), decoded.first_position()),
            ("b", 3)
        );

        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![2]);
        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![4]);
        assert!(unpacked(&mut round).is_none());
    }

    #[test]
    fn a_refused_commit_holds_back_its_aggregate_for_the_rest_of_the_round() {
        let (mut round, _) = Round::plan(vec![
            commit("a", 1, 1, 0),
            commit("b", 2, 1, 0),
            commit("a", 3, 2, 0),
            commit("b", 4, 2, 0),
        ]);
        let first = unpacked(&mut round).unwrap();
        assert_eq!(positions(&first), vec![1, 2]);

        round.block(key("a"));

        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![4]);
        assert!(unpacked(&mut round).is_none(), "a's second commit waits");
    }

    #[test]
    fn waves_keep_to_the_record_count_and_byte_limits() {
        let many: Vec<_> = (1..=600)
            .map(|i| commit(&format!("agg-{i}"), i, 1, 0))
            .collect();
        let (mut round, _) = Round::plan(many);
        assert_eq!(
            unpacked(&mut round).unwrap().records.len(),
            MAX_RECORDS_PER_CALL
        );
        assert_eq!(unpacked(&mut round).unwrap().records.len(), 100);

        // Six records of ~900 KiB: five fit in 5 MiB, the sixth goes in the next call.
        let big: Vec<_> = (1..=6)
            .map(|i| commit(&format!("big-{i}"), i, 1, 900 * 1024))
            .collect();
        let (mut round, _) = Round::plan(big);
        let first = unpacked(&mut round).unwrap();
        assert_eq!(positions(&first), vec![1, 2, 3, 4, 5]);
        assert!(first.records.iter().map(|r| r.record.size()).sum::<usize>() <= MAX_CALL_BYTES);
        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![6]);
    }

    #[test]
    fn a_commit_too_large_for_kinesis_blocks_its_aggregate_and_is_reported() {
        let (mut round, unpublishable) = Round::plan(vec![
            commit("a", 1, 1, MAX_RECORD_BYTES),
            commit("b", 2, 1, 0),
            commit("a", 3, 2, 0),
        ]);
        assert_eq!(unpublishable.len(), 1);
        assert_eq!(unpublishable[0].first_position, 1);
        assert_eq!(unpublishable[0].aggregate, key("a"));

        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![2]);
        assert!(
            unpacked(&mut round).is_none(),
            "a's later commit never overtakes"
        );
    }

    #[test]
    fn a_commit_that_does_not_fit_the_call_still_holds_back_its_aggregates_later_commits() {
        let (mut round, _) = Round::plan(vec![
            commit("a", 1, 1, 900 * 1024),
            commit("b", 2, 1, 900 * 1024),
            commit("c", 3, 1, 900 * 1024),
            commit("d", 4, 1, 900 * 1024),
            commit("e", 5, 1, 900 * 1024),
            commit("f", 6, 1, 900 * 1024),
            commit("f", 7, 2, 0),
        ]);
        assert_eq!(
            positions(&unpacked(&mut round).unwrap()),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![6]);
        assert_eq!(positions(&unpacked(&mut round).unwrap()), vec![7]);
    }

    #[test]
    fn a_wave_packs_each_shards_commits_in_commit_order_and_each_aggregate_in_one_record() {
        let lower = ids_of("lower", 2);
        let upper = ids_of("upper", 1);
        let (mut round, _) = Round::plan(vec![
            commit(&lower[0], 1, 1, 0),
            commit(&upper[0], 2, 1, 0),
            commit(&lower[1], 3, 1, 0),
            commit(&lower[0], 4, 2, 0),
            commit(&upper[0], 5, 2, 0),
        ]);

        let wave = round.next_wave(&two_shards(), 10).unwrap();

        assert_eq!(packing(&wave), vec![vec![1, 3, 4], vec![2, 5]]);
        let lower_record = &wave.records[0];
        assert_eq!(lower_record.shard_id.as_deref(), Some("lower"));
        assert_eq!(lower_record.record.partition_key, lower[0]);
        let explicit: u128 = lower_record
            .record
            .explicit_hash_key
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(two_shards().shard_of(explicit), Some("lower"));
        let commits = commit_log::decode_record(&lower_record.record.data).unwrap();
        let order: Vec<_> = commits
            .iter()
            .map(|c| (c.aggregate_id.clone(), c.first_sequence()))
            .collect();
        assert_eq!(
            order,
            vec![
                (lower[0].clone(), 1),
                (lower[1].clone(), 1),
                (lower[0].clone(), 2)
            ]
        );
        assert!(round.next_wave(&two_shards(), 10).is_none());
    }

    #[test]
    fn a_full_record_closes_and_its_aggregates_later_commits_wait_for_the_next_wave() {
        let ids = ids_of("lower", 3);
        let (mut round, _) = Round::plan(vec![
            commit(&ids[0], 1, 1, 0),
            commit(&ids[1], 2, 1, 0),
            commit(&ids[0], 3, 2, 0),
            commit(&ids[2], 4, 1, 0),
            commit(&ids[1], 5, 2, 0),
            commit(&ids[2], 6, 2, 0),
        ]);

        // Two commits per record: the first record takes 1 and 2; 3 (of ids[0], already in a
        // closed record) waits, and so does everything later of ids[0].
        let wave = round.next_wave(&two_shards(), 2).unwrap();
        assert_eq!(packing(&wave), vec![vec![1, 2], vec![4, 6]]);
        let wave = round.next_wave(&two_shards(), 2).unwrap();
        assert_eq!(packing(&wave), vec![vec![3, 5]]);
        assert!(round.next_wave(&two_shards(), 2).is_none());
    }

    #[test]
    fn packed_records_stay_under_a_mebibyte_and_a_blocked_aggregate_is_not_packed() {
        let ids = ids_of("upper", 4);
        let (mut round, _) = Round::plan(vec![
            commit(&ids[0], 1, 1, 400 * 1024),
            commit(&ids[1], 2, 1, 400 * 1024),
            commit(&ids[2], 3, 1, 400 * 1024),
            commit(&ids[3], 4, 1, 0),
        ]);
        round.block(key(&ids[3]));

        let wave = round.next_wave(&two_shards(), 500).unwrap();

        assert_eq!(packing(&wave), vec![vec![1, 2], vec![3]]);
        assert!(wave
            .records
            .iter()
            .all(|r| r.record.size() <= MAX_RECORD_BYTES));
        assert!(round.next_wave(&two_shards(), 500).is_none());
    }
}
