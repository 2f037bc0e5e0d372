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
//! - With a linger ([`Packing::max_linger`], KPL's `RecordMaxBufferedTime`), a record that is
//!   not full stays out of the wave until its oldest commit has waited that long: more commits
//!   of its shard may come to share it. Its commits go back to the round's waiting commits
//!   whole, so its aggregates (each in that one record only) keep their order. A record that is
//!   full (by commits or bytes), or a wave that reached the call's limits, goes at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

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
    /// Since when it has waited to be published: its linger counts from there.
    pub waiting_since: Instant,
}

/// How records are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packing {
    /// At most this many commits of one shard share a record (1: one plain envelope each).
    pub max_commits_per_record: usize,
    /// How long a record that is not full waits, from its oldest commit, for more commits of
    /// its shard; zero sends every record as soon as it is planned.
    pub max_linger: Duration,
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
    /// A later commit of its shard did not fit in it (by count or bytes).
    full: bool,
}

impl Filling {
    fn size_with(&self, envelope: &[u8]) -> usize {
        self.partition_key.len() + self.container.len_with(envelope.len())
    }

    fn size(&self) -> usize {
        self.partition_key.len() + self.container.len()
    }

    /// Whether it goes in this wave: it is full, or its oldest commit has waited out the linger.
    fn leaves(&self, packing: &Packing, per_record: usize, now: Instant) -> bool {
        self.full
            || self.commits.len() >= per_record
            || self.commits.iter().any(|commit| {
                now.saturating_duration_since(commit.waiting_since) >= packing.max_linger
            })
    }

    /// Its commits, back as the waiting commits they were.
    fn into_waiting(self) -> impl Iterator<Item = Ready> {
        self.commits
            .into_iter()
            .zip(self.container.into_commits())
            .map(|(commit, envelope)| Ready { commit, envelope })
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
    /// Encodes `commits` (oldest first, as the outbox gives them, each with since when it has
    /// waited), and returns the round with the commits that cannot be published.
    pub fn plan(commits: Vec<(OutboxCommit, Instant)>) -> (Self, Vec<Unpublishable>) {
        let mut round = Round {
            waiting: Vec::with_capacity(commits.len()),
            blocked: HashSet::new(),
        };
        let mut unpublishable = Vec::new();
        for (commit, waiting_since) in commits {
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
                        waiting_since,
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

    /// The next PutRecords call at `now`: oldest first, every unblocked aggregate's waiting
    /// commits that fit in the one record of the wave that holds its first, within the call's
    /// limits, up to `packing.max_commits_per_record` commits of one shard of `shards` per
    /// record, less the records that still linger. `None` when nothing can be sent now
    /// ([`Round::lingers_until`] says when something can).
    pub fn next_wave(&mut self, shards: &ShardMap, packing: Packing, now: Instant) -> Option<Wave> {
        // Without a map, commits of different shards could share a record: one per record.
        let per_record = if shards.is_empty() {
            1
        } else {
            packing.max_commits_per_record.max(1)
        };
        // The call is full: there is more than one wave's worth waiting, nothing lingers.
        let mut call_full = false;
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
                let record = &mut filling[index];
                let grown = record.size_with(&ready.envelope);
                let fits_record = record.commits.len() < per_record && grown <= MAX_RECORD_BYTES;
                let fits_call = call_bytes - record.size() + grown <= MAX_CALL_BYTES;
                record.full |= !fits_record;
                call_full |= !fits_call;
                fits_record && fits_call
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
                        call_full = true;
                        held.insert(aggregate.clone());
                        remaining.push(ready);
                        continue;
                    }
                    filling.push(Filling {
                        shard_id: shard_id.clone(),
                        container: Container::new(),
                        commits: Vec::new(),
                        partition_key: aggregate.1.clone(),
                        full: false,
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
        let (leaving, lingering): (Vec<_>, Vec<_>) = filling
            .into_iter()
            .partition(|record| call_full || record.leaves(&packing, per_record, now));
        if !lingering.is_empty() {
            remaining.extend(lingering.into_iter().flat_map(Filling::into_waiting));
            // Back in position order: each aggregate's commits in sequence order again.
            remaining.sort_by_key(|ready| ready.commit.first_position);
        }
        self.waiting = remaining;
        let records: Vec<PackedRecord> = leaving
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

    /// When the oldest commit that [`Round::next_wave`] holds back to linger will have waited
    /// `max_linger`; `None` when no unblocked commit waits.
    pub fn lingers_until(&self, max_linger: Duration) -> Option<Instant> {
        self.waiting
            .iter()
            .filter(|ready| !self.blocked.contains(&ready.commit.aggregate))
            .map(|ready| ready.commit.waiting_since + max_linger)
            .min()
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
    use std::sync::LazyLock;
    use time::OffsetDateTime;

    /// The instant every test commit has waited since, unless a test says otherwise.
    static T0: LazyLock<Instant> = LazyLock::new(Instant::now);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Up to `max_commits_per_record` commits per record, a record lingering `max_linger`.
    fn lingering(max_commits_per_record: usize, max_linger: Duration) -> Packing {
        Packing {
            max_commits_per_record,
            max_linger,
        }
    }

    /// Up to `max_commits_per_record` commits per record, no linger.
    fn at_once(max_commits_per_record: usize) -> Packing {
        lingering(max_commits_per_record, Duration::ZERO)
    }

    /// A one-event menu commit at `position`, waiting since [`T0`]; `padding` bytes make its
    /// record that much larger.
    fn commit(
        aggregate_id: &str,
        position: i64,
        sequence: i64,
        padding: usize,
    ) -> (OutboxCommit, Instant) {
        let sku = format!("LATTE-12{}", "X".repeat(padding));
        let commit = OutboxCommit {
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
        };
        (commit, *T0)
    }

    /// [`commit`], waiting since `waited` after [`T0`].
    fn commit_since(
        waited: Duration,
        aggregate_id: &str,
        position: i64,
        sequence: i64,
    ) -> (OutboxCommit, Instant) {
        (commit(aggregate_id, position, sequence, 0).0, *T0 + waited)
    }

    /// Every commit of the wave, in the call's order.
    fn positions(wave: &Wave) -> Vec<i64> {
        wave.records
            .iter()
            .flat_map(|record| record.commits.iter().map(|commit| commit.first_position))
            .collect()
    }

    /// Per record, its commits' positions.
    fn packing_of(wave: &Wave) -> Vec<Vec<i64>> {
        wave.records
            .iter()
            .map(|record| record.commits.iter().map(|c| c.first_position).collect())
            .collect()
    }

    /// The next wave of one commit per record (packing off).
    fn unpacked(round: &mut Round) -> Option<Wave> {
        round.next_wave(&ShardMap::default(), at_once(1), *T0)
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

        let wave = round.next_wave(&two_shards(), at_once(10), *T0).unwrap();

        assert_eq!(packing_of(&wave), vec![vec![1, 3, 4], vec![2, 5]]);
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
        assert!(round.next_wave(&two_shards(), at_once(10), *T0).is_none());
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
        let wave = round.next_wave(&two_shards(), at_once(2), *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1, 2], vec![4, 6]]);
        let wave = round.next_wave(&two_shards(), at_once(2), *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![3, 5]]);
        assert!(round.next_wave(&two_shards(), at_once(2), *T0).is_none());
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

        let wave = round.next_wave(&two_shards(), at_once(500), *T0).unwrap();

        assert_eq!(packing_of(&wave), vec![vec![1, 2], vec![3]]);
        assert!(wave
            .records
            .iter()
            .all(|r| r.record.size() <= MAX_RECORD_BYTES));
        assert!(round.next_wave(&two_shards(), at_once(500), *T0).is_none());
    }

    #[test]
    fn a_record_that_is_not_full_waits_until_its_oldest_commit_has_lingered() {
        let ids = ids_of("lower", 2);
        let (mut round, _) = Round::plan(vec![
            commit_since(ms(0), &ids[0], 1, 1),
            commit_since(ms(4), &ids[1], 2, 1),
            commit_since(ms(6), &ids[0], 3, 2),
        ]);
        let packing = lingering(10, ms(10));

        assert!(round
            .next_wave(&two_shards(), packing, *T0 + ms(9))
            .is_none());
        assert_eq!(round.lingers_until(packing.max_linger), Some(*T0 + ms(10)));

        let wave = round
            .next_wave(&two_shards(), packing, *T0 + ms(10))
            .unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1, 2, 3]]);
        assert_eq!(round.lingers_until(packing.max_linger), None);
    }

    #[test]
    fn a_full_record_leaves_before_the_linger_and_the_rest_of_its_shard_keeps_lingering() {
        let ids = ids_of("lower", 3);
        let (mut round, _) = Round::plan(vec![
            commit(&ids[0], 1, 1, 0),
            commit(&ids[1], 2, 1, 0),
            commit(&ids[2], 3, 1, 0),
            commit(&ids[0], 4, 2, 0),
            commit(&ids[1], 5, 2, 0),
        ]);
        let packing = lingering(2, Duration::from_secs(3600));

        // 3 alone lingers; 4 and 5 wait for the wave after their aggregates' first commits.
        let wave = round.next_wave(&two_shards(), packing, *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1, 2]]);
        let wave = round.next_wave(&two_shards(), packing, *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![3, 4]]);
        assert!(round.next_wave(&two_shards(), packing, *T0).is_none());
        assert_eq!(
            round.lingers_until(packing.max_linger),
            Some(*T0 + packing.max_linger)
        );
        let wave = round.next_wave(&two_shards(), at_once(2), *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![5]]);
    }

    #[test]
    fn a_record_full_by_bytes_leaves_before_the_linger() {
        let ids = ids_of("upper", 2);
        let (mut round, _) = Round::plan(vec![
            commit(&ids[0], 1, 1, 600 * 1024),
            commit(&ids[1], 2, 1, 600 * 1024),
        ]);
        let packing = lingering(100, Duration::from_secs(3600));

        let wave = round.next_wave(&two_shards(), packing, *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1]]);
        assert!(round.next_wave(&two_shards(), packing, *T0).is_none());
    }

    #[test]
    fn a_lingering_shard_does_not_hold_back_another_and_its_commits_stay_in_order() {
        let lower = ids_of("lower", 1);
        let upper = ids_of("upper", 1);
        let (mut round, _) = Round::plan(vec![
            commit_since(ms(0), &lower[0], 1, 1),
            commit_since(ms(8), &upper[0], 2, 1),
            commit_since(ms(9), &lower[0], 3, 2),
            commit_since(ms(9), &upper[0], 4, 2),
        ]);
        let packing = lingering(10, ms(10));

        let wave = round
            .next_wave(&two_shards(), packing, *T0 + ms(10))
            .unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1, 3]]);
        assert!(round
            .next_wave(&two_shards(), packing, *T0 + ms(10))
            .is_none());
        assert_eq!(round.lingers_until(packing.max_linger), Some(*T0 + ms(18)));

        let wave = round
            .next_wave(&two_shards(), packing, *T0 + ms(18))
            .unwrap();
        assert_eq!(packing_of(&wave), vec![vec![2, 4]]);
        let commits = commit_log::decode_record(&wave.records[0].record.data).unwrap();
        let sequences: Vec<_> = commits.iter().map(|c| c.first_sequence()).collect();
        assert_eq!(sequences, vec![1, 2]);
    }

    #[test]
    fn without_packing_a_linger_holds_nothing_back() {
        let (mut round, _) = Round::plan(vec![commit("a", 1, 1, 0), commit("b", 2, 1, 0)]);
        let packing = lingering(1, Duration::from_secs(3600));

        let wave = round.next_wave(&two_shards(), packing, *T0).unwrap();
        assert_eq!(packing_of(&wave), vec![vec![1], vec![2]]);
    }
}
