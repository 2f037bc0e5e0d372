//! One round of publishing, planned without I/O: the commits read from the outbox become records,
//! and the records go out in waves (one PutRecords call each) that never put a later commit of an
//! aggregate before an earlier one is acknowledged.
//!
//! The rules, and why:
//! - A wave carries at most one commit per aggregate, the aggregate's oldest unpublished one.
//!   Kinesis orders records of one shard by arrival, but records of one PutRecords call may be
//!   refused one by one: if two commits of an aggregate shared a call and the first were
//!   refused, the second would be on the log ahead of it.
//! - Once a commit is refused (or cannot be made a record at all), its aggregate is blocked for
//!   the rest of the round: its later commits wait until a later round publishes that one.
//! - A wave respects Kinesis's limits: at most 500 records, 5 MiB, and 1 MiB per record
//!   (partition keys included).

use std::collections::HashSet;

use event_store::{metadata, OutboxCommit};

use crate::record_log::LogRecord;
use crate::settings::MAX_RECORDS_PER_CALL;

/// Kinesis's limit on one record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's limit on one PutRecords call: every record's data plus partition key.
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;

/// An aggregate's identity: its type and id (the id alone is the partition key).
pub(crate) type AggregateKey = (String, String);

/// A commit that has its record.
#[derive(Debug)]
struct Ready {
    first_position: i64,
    aggregate: AggregateKey,
    record: LogRecord,
    /// The commit's trace (empty when its command recorded none).
    traceparent: String,
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

/// The commits of one PutRecords call, in the order of its records.
#[derive(Debug)]
pub(crate) struct Wave {
    /// Per record: the commit's first position and its aggregate.
    pub commits: Vec<(i64, AggregateKey)>,
    /// The records, one per commit.
    pub records: Vec<LogRecord>,
    /// Per record: the commit's `traceparent` (empty when its command recorded no trace).
    pub traceparents: Vec<String>,
}

/// The commits of one outbox read that are not yet published or blocked.
#[derive(Debug)]
pub(crate) struct Round {
    /// In position order, so each aggregate's commits are in sequence order.
    waiting: Vec<Ready>,
    blocked: HashSet<AggregateKey>,
}

impl Round {
    /// Makes records of `commits` (oldest first, as the outbox gives them), and returns the
    /// round with the commits that cannot be published.
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
            let record = commit_log::encode(&commit.events)
                .map_err(|error| error.to_string())
                .and_then(|data| {
                    let record = LogRecord {
                        partition_key: aggregate.1.clone(),
                        data,
                    };
                    if record.size() > MAX_RECORD_BYTES {
                        Err(format!(
                            "its record has {} bytes; Kinesis takes at most {MAX_RECORD_BYTES}",
                            record.size()
                        ))
                    } else {
                        Ok(record)
                    }
                });
            match record {
                Ok(record) => round.waiting.push(Ready {
                    first_position: commit.first_position,
                    aggregate,
                    record,
                    traceparent,
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

    /// The next PutRecords call's commits: each unblocked aggregate's oldest waiting commit,
    /// oldest first, within the call's limits. `None` when nothing can be sent this round.
    pub fn next_wave(&mut self) -> Option<Wave> {
        let mut wave = Wave {
            commits: Vec::new(),
            records: Vec::new(),
            traceparents: Vec::new(),
        };
        let mut wave_records = 0;
        let mut wave_bytes = 0;
        // Every aggregate met so far, sent or not: a later commit of it must not overtake.
        let mut met: HashSet<&AggregateKey> = HashSet::new();
        let mut chosen = vec![false; self.waiting.len()];
        for (index, ready) in self.waiting.iter().enumerate() {
            if wave_records == MAX_RECORDS_PER_CALL {
                break;
            }
            let first_of_its_aggregate = met.insert(&ready.aggregate);
            if !first_of_its_aggregate || self.blocked.contains(&ready.aggregate) {
                continue;
            }
            if wave_bytes + ready.record.size() > MAX_CALL_BYTES {
                continue;
            }
            wave_records += 1;
            wave_bytes += ready.record.size();
            chosen[index] = true;
        }
        let mut remaining = Vec::with_capacity(self.waiting.len());
        for (ready, chosen) in self.waiting.drain(..).zip(chosen) {
            if chosen {
                wave.commits.push((ready.first_position, ready.aggregate));
                wave.records.push(ready.record);
                wave.traceparents.push(ready.traceparent);
            } else {
                remaining.push(ready);
            }
        }
        self.waiting = remaining;
        (!wave.records.is_empty()).then_some(wave)
    }

    /// Holds back every later commit of `aggregate` for the rest of the round: one of its
    /// commits was refused and must go first.
    pub fn block(&mut self, aggregate: AggregateKey) {
        self.blocked.insert(aggregate);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
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

    fn positions(wave: &Wave) -> Vec<i64> {
        wave.commits.iter().map(|(position, _)| *position).collect()
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

        let first = round.next_wave().unwrap();
        assert_eq!(positions(&first), vec![1, 3, 5]);
        assert_eq!(first.records[0].partition_key, "a");
        let decoded = commit_log::decode(&first.records[1].data).unwrap();
        assert_eq!(
            (decoded.aggregate_id.as_str(), decoded.first_position()),
            ("b", 3)
        );

        assert_eq!(positions(&round.next_wave().unwrap()), vec![2]);
        assert_eq!(positions(&round.next_wave().unwrap()), vec![4]);
        assert!(round.next_wave().is_none());
    }

    #[test]
    fn a_refused_commit_holds_back_its_aggregate_for_the_rest_of_the_round() {
        let (mut round, _) = Round::plan(vec![
            commit("a", 1, 1, 0),
            commit("b", 2, 1, 0),
            commit("a", 3, 2, 0),
            commit("b", 4, 2, 0),
        ]);
        let first = round.next_wave().unwrap();
        assert_eq!(positions(&first), vec![1, 2]);

        round.block(key("a"));

        assert_eq!(positions(&round.next_wave().unwrap()), vec![4]);
        assert!(round.next_wave().is_none(), "a's second commit waits");
    }

    #[test]
    fn waves_keep_to_the_record_count_and_byte_limits() {
        let many: Vec<_> = (1..=600)
            .map(|i| commit(&format!("agg-{i}"), i, 1, 0))
            .collect();
        let (mut round, _) = Round::plan(many);
        assert_eq!(
            round.next_wave().unwrap().records.len(),
            MAX_RECORDS_PER_CALL
        );
        assert_eq!(round.next_wave().unwrap().records.len(), 100);

        // Six records of ~900 KiB: five fit in 5 MiB, the sixth goes in the next call.
        let big: Vec<_> = (1..=6)
            .map(|i| commit(&format!("big-{i}"), i, 1, 900 * 1024))
            .collect();
        let (mut round, _) = Round::plan(big);
        let first = round.next_wave().unwrap();
        assert_eq!(positions(&first), vec![1, 2, 3, 4, 5]);
        assert!(first.records.iter().map(LogRecord::size).sum::<usize>() <= MAX_CALL_BYTES);
        assert_eq!(positions(&round.next_wave().unwrap()), vec![6]);
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

        assert_eq!(positions(&round.next_wave().unwrap()), vec![2]);
        assert!(
            round.next_wave().is_none(),
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
        assert_eq!(positions(&round.next_wave().unwrap()), vec![1, 2, 3, 4, 5]);
        assert_eq!(positions(&round.next_wave().unwrap()), vec![6]);
        assert_eq!(positions(&round.next_wave().unwrap()), vec![7]);
    }
}
