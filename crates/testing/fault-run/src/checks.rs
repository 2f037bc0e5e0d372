//! What must hold once the pipeline has settled: the store holds every acknowledged command's
//! events exactly once and nothing a client was told failed, every event reached Kinesis (in
//! order per aggregate), every projection equals a fresh replay, and no order was charged,
//! reserved or credited twice. The flows' own checks are in [`crate::flow_checks`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::load::Ledger;

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What was checked.
    pub check: String,
    /// Whether it held.
    pub passed: bool,
    /// Figures, or what was wrong.
    pub detail: String,
}

impl Verdict {
    pub(crate) fn new(check: &str, problems: &[String], figures: String) -> Self {
        let passed = problems.is_empty();
        let detail = if passed {
            figures
        } else {
            let shown: Vec<&str> = problems.iter().take(20).map(String::as_str).collect();
            format!(
                "{figures}; {} problem(s): {}",
                problems.len(),
                shown.join("; ")
            )
        };
        Self {
            check: check.into(),
            passed,
            detail,
        }
    }
}

/// The subject prefix of the flows' service token (`flows-service`; older builds had one per
/// flow, `flows-order-saga`, `flows-payments`, ...): their commands are acknowledged to the
/// flows, not to the run's clients.
const FLOWS_SUBJECT_PREFIX: &str = "flows-";

/// Whether a stored actor (`<role>:<subject>`, e.g. `service:flows-order-saga`) is one of the
/// flows.
fn is_flows_actor(actor: &str) -> bool {
    actor
        .rsplit(':')
        .next()
        .is_some_and(|subject| subject.starts_with(FLOWS_SUBJECT_PREFIX))
}

/// One stored event, as the checks need it.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub(crate) sequence: u64,
    pub(crate) event_type: String,
    /// Who sent the command (the token's subject).
    pub(crate) actor: String,
    /// The command's idempotency key as stored (scoped to the caller).
    pub(crate) idempotency_key: String,
}

/// The store's events, per aggregate id, in sequence order.
pub(crate) async fn events_by_aggregate(
    pool: &PgPool,
) -> sqlx::Result<HashMap<String, Vec<StoredEvent>>> {
    /// Aggregate id, sequence, type, actor, idempotency key.
    type Row = (String, i64, String, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_type, metadata->>'actor', \
         metadata->>'idempotency_key' FROM events ORDER BY aggregate_id, sequence",
    )
    .fetch_all(pool)
    .await?;
    let mut by_aggregate: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    for (aggregate, sequence, event_type, actor, key) in rows {
        by_aggregate
            .entry(aggregate)
            .or_default()
            .push(StoredEvent {
                sequence: u64::try_from(sequence).unwrap_or_default(),
                event_type,
                actor: actor.unwrap_or_default(),
                idempotency_key: key.unwrap_or_default(),
            });
    }
    Ok(by_aggregate)
}

/// Whether a stored idempotency key is the client key `key` (stored keys are scoped to the
/// caller: `<subject>/<key>` today; matching the end keeps the check independent of how).
fn stored_key_is(stored: &str, key: &str) -> bool {
    stored == key
        || stored
            .strip_suffix(key)
            .is_some_and(|scope| !scope.is_empty() && !scope.ends_with(char::is_alphanumeric))
}

/// Every acknowledged command's events are in the store, with the types the API reported;
/// every event a run client's command stored belongs to exactly one acknowledged command
/// (aggregate ids are unique across aggregate types in this workload: order UUIDs, `store-N`,
/// `cust-N-M`, `menu`); and every idempotency key, the flows' included, appended one commit at
/// most. A command-api that resumes after a pause and commits a batch its clients gave up on
/// (they were told DEADLINE_EXCEEDED or saw no answer, and sent the same key again elsewhere)
/// shows here as events no acknowledgment covers, or as one key on two commits.
pub async fn store_holds_every_acknowledged_command_once(
    pool: &PgPool,
    ledger: &Ledger,
) -> sqlx::Result<Verdict> {
    Ok(acknowledged_exactly_once(
        &events_by_aggregate(pool).await?,
        ledger,
    ))
}

fn acknowledged_exactly_once(
    stored: &HashMap<String, Vec<StoredEvent>>,
    ledger: &Ledger,
) -> Verdict {
    let mut claimed: HashMap<&str, BTreeMap<u64, (u64, &str)>> = HashMap::new();
    let mut problems = Vec::new();
    for ack in ledger.acks.iter().filter(|ack| ack.last_sequence > 0) {
        let events = stored
            .get(&ack.aggregate_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (offset, expected) in ack.event_types.iter().enumerate() {
            let sequence = ack.first_sequence + offset as u64;
            match events.iter().find(|e| e.sequence == sequence) {
                Some(event) if event.event_type == *expected => {}
                Some(event) => problems.push(format!(
                    "{} {}: sequence {sequence} is {}, acknowledged as {expected}",
                    ack.rpc, ack.key, event.event_type
                )),
                None => problems.push(format!(
                    "LOST: {} {}: {}#{sequence} ({expected}) acknowledged but not stored",
                    ack.rpc, ack.key, ack.aggregate_id
                )),
            }
        }
        let ranges = claimed.entry(&ack.aggregate_id).or_default();
        if let Some((other_last, other_key)) =
            ranges.insert(ack.first_sequence, (ack.last_sequence, &ack.key))
        {
            problems.push(format!(
                "{} and {other_key} both acknowledged {}#{}..={other_last}",
                ack.key, ack.aggregate_id, ack.first_sequence
            ));
        }
    }
    let mut events = 0usize;
    let mut flows_events = 0usize;
    // Per stored key: the aggregate and the sequences it appended.
    let mut commits_by_key: HashMap<&str, (&str, Vec<u64>)> = HashMap::new();
    for (aggregate, sequences) in stored {
        events += sequences.len();
        let ranges = claimed.get(aggregate.as_str());
        for event in sequences {
            let sequence = event.sequence;
            let by_key = commits_by_key
                .entry(event.idempotency_key.as_str())
                .or_insert((aggregate.as_str(), Vec::new()));
            if by_key.0 != aggregate.as_str() {
                problems.push(format!(
                    "key {} appended to {} and to {aggregate}",
                    event.idempotency_key, by_key.0
                ));
            }
            by_key.1.push(sequence);
            if is_flows_actor(&event.actor) {
                flows_events += 1;
                continue;
            }
            let covered = ranges.is_some_and(|ranges| {
                ranges
                    .range(..=sequence)
                    .next_back()
                    .is_some_and(|(_, (last, _))| sequence <= *last)
            });
            if !covered {
                problems.push(format!(
                    "{aggregate}#{sequence} ({}, key {}) is stored but no acknowledged command appended it",
                    event.event_type, event.idempotency_key
                ));
            }
        }
    }
    for (key, (aggregate, sequences)) in &commits_by_key {
        let contiguous = sequences.windows(2).all(|pair| pair[1] == pair[0] + 1);
        if !key.is_empty() && !contiguous {
            problems.push(format!(
                "APPENDED TWICE: key {key} appended {aggregate}#{sequences:?}, more than one commit"
            ));
        }
    }
    let appending = ledger.acks.iter().filter(|a| a.last_sequence > 0).count();
    Verdict::new(
        "every acknowledged command's events are in the store exactly once",
        &problems,
        format!(
            "{appending} appending commands acknowledged to the clients, {events} events stored \
             ({flows_events} by the flows' commands)"
        ),
    )
}

/// Nothing is stored under a key whose client was told the command failed (a refusal): a
/// command-api that resumes after a pause, or gets its database back after a silent cut, must
/// not commit what it already answered as failed.
pub async fn nothing_committed_that_a_client_was_told_failed(
    pool: &PgPool,
    ledger: &Ledger,
) -> sqlx::Result<Verdict> {
    Ok(nothing_stored_for_failures(
        &events_by_aggregate(pool).await?,
        ledger,
    ))
}

fn nothing_stored_for_failures(
    stored: &HashMap<String, Vec<StoredEvent>>,
    ledger: &Ledger,
) -> Verdict {
    let mut problems = Vec::new();
    for failed in &ledger.told_failed {
        for (aggregate, events) in stored {
            for event in events {
                if stored_key_is(&event.idempotency_key, &failed.key) {
                    problems.push(format!(
                        "{} {} was answered {} but {aggregate}#{} ({}) is stored under its key",
                        failed.rpc, failed.key, failed.answer, event.sequence, event.event_type
                    ));
                }
            }
        }
    }
    let mut verdict = Verdict::new(
        "nothing is stored that a client was told failed",
        &problems,
        format!(
            "{} commands answered with a refusal",
            ledger.told_failed.len()
        ),
    );
    if !ledger.cancelled_answers.is_empty() {
        verdict.passed = false;
        verdict.detail = format!(
            "{}; {} answer(s) were CANCELLED, which no client retries (the contract: \
             DEADLINE_EXCEEDED or UNAVAILABLE): {}",
            verdict.detail,
            ledger.cancelled_answers.len(),
            ledger
                .cancelled_answers
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    verdict
}

/// The outbox is empty and the stream holds every commit of every aggregate, in order, each
/// aggregate on one shard (duplicates are allowed: the relay publishes at least once).
pub async fn every_event_reached_kinesis(
    pool: &PgPool,
    stream_name: &str,
) -> anyhow::Result<Verdict> {
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await?;
    let last_stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, max(sequence) FROM events GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let stream = test_support::TestStream {
        client: aws_sdk_kinesis::Client::new(&test_support::aws_test_config().await),
        name: stream_name.to_owned(),
    };
    // The reader and the in-order check panic on what they cannot accept (an undecodable
    // record, a gap, a reordering); a panic here is a failed check with its message.
    let replayed = tokio::spawn(async move {
        let records = stream.read_all().await;
        let count: usize = records.values().map(Vec::len).sum();
        (count, test_support::replay(&records))
    })
    .await;
    let (carried, replayed) = match replayed {
        Ok(result) => result,
        Err(error) => {
            let message = error
                .try_into_panic()
                .ok()
                .and_then(|p| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the stream reader failed".into());
            return Ok(Verdict::new(
                "every event reached Kinesis, in order per aggregate",
                &[message],
                String::new(),
            ));
        }
    };
    let mut problems = Vec::new();
    if waiting != 0 {
        problems.push(format!("{waiting} commits still in the outbox"));
    }
    for (kind, id, last) in &last_stored {
        let published = replayed
            .last_sequence
            .get(&(kind.clone(), id.clone()))
            .copied()
            .unwrap_or(0);
        if published != u64::try_from(*last).unwrap_or_default() {
            problems.push(format!(
                "LOST: {kind}/{id}: stored up to {last}, the stream has up to {published}"
            ));
        }
    }
    Ok(Verdict::new(
        "every event reached Kinesis, in order per aggregate",
        &problems,
        format!(
            "{carried} commits carried by the stream's records: {} in order, {} duplicates (at-least-once)",
            replayed.commits_applied, replayed.duplicates_skipped
        ),
    ))
}

/// No order was charged, reserved, committed or credited twice (that every completed order
/// got each once is [`crate::flow_checks`]' part).
pub async fn nothing_happened_twice(pool: &PgPool) -> sqlx::Result<Vec<Verdict>> {
    let mut verdicts = Vec::new();
    for (what, event_type) in [
        ("no double charge", "PaymentCaptured"),
        ("no double refund", "PaymentRefunded"),
        ("no double reservation", "StockReserved"),
        ("no double release", "ReservationReleased"),
        ("no double stock commit", "ReservationCommitted"),
        ("no double points", "PointsEarned"),
    ] {
        let per_order: Vec<(Option<String>, i64)> = sqlx::query_as(
            // An order's own events are keyed by the aggregate; inventory and loyalty events
            // name the order in their payload.
            "SELECT COALESCE(jsonb_path_query_first(payload, '$.**.order_id') #>> '{}', aggregate_id), \
             count(*) FROM events WHERE event_type = $1 GROUP BY 1",
        )
        .bind(event_type)
        .fetch_all(pool)
        .await?;
        let problems: Vec<String> = per_order
            .iter()
            .filter(|(_, count)| *count > 1)
            .map(|(order, count)| {
                format!(
                    "order {}: {count} {event_type}",
                    order.as_deref().unwrap_or("?")
                )
            })
            .collect();
        let total: i64 = per_order.iter().map(|(_, count)| count).sum();
        verdicts.push(Verdict::new(
            what,
            &problems,
            format!("{total} {event_type} events"),
        ));
    }
    Ok(verdicts)
}

/// Runs `replay verify` for every projection until all equal a fresh replay (the projectors
/// are catching up after the last fault) or `deadline` passes; the verdict of the last try.
pub async fn projections_equal_a_fresh_replay(
    replay_binary: &Path,
    deadline: Instant,
) -> Vec<Verdict> {
    const PROJECTIONS: [&str; 3] = ["active_orders", "history", "analytics"];
    let mut tries = 0;
    loop {
        tries += 1;
        let mut verdicts = Vec::new();
        for projection in PROJECTIONS {
            let output = run(replay_binary, &["verify", projection]).await;
            let check = format!("{projection} equals a fresh replay (replay verify)");
            verdicts.push(match output {
                Ok((true, _)) => {
                    Verdict::new(&check, &[], format!("identical after {tries} tries"))
                }
                Ok((false, text)) => Verdict::new(&check, &[last_lines(&text, 12)], String::new()),
                Err(error) => Verdict::new(&check, &[format!("{error:#}")], String::new()),
            });
        }
        if verdicts.iter().all(|v| v.passed) || Instant::now() >= deadline {
            return verdicts;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs a binary to completion off the async threads; whether it succeeded, and its output.
async fn run(binary: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut command = std::process::Command::new(binary);
    command.args(args).stdin(std::process::Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Ack, ToldFailed};

    fn event(sequence: u64, event_type: &str, actor: &str, key: &str) -> StoredEvent {
        StoredEvent {
            sequence,
            event_type: event_type.into(),
            actor: actor.into(),
            idempotency_key: key.into(),
        }
    }

    fn ack(key: &str, aggregate: &str, first: u64, types: &[&str]) -> Ack {
        Ack {
            rpc: "StartPreparing",
            key: key.into(),
            aggregate_id: aggregate.into(),
            first_sequence: first,
            last_sequence: first + types.len() as u64 - 1,
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            attempts: 1,
        }
    }

    /// An order placed and accepted by the flows, and a barista's StartPreparing.
    fn store(extra: Vec<StoredEvent>) -> HashMap<String, Vec<StoredEvent>> {
        let mut events = vec![
            event(
                1,
                "OrderPlaced",
                "customer:cust-0-0",
                "customer:cust-0-0/place-o1",
            ),
            event(
                2,
                "OrderAccepted",
                "service:flows-order-saga",
                "service:flows-order-saga/saga/o1/1/accept",
            ),
            event(3, "PreparationStarted", "barista:b", "barista:b/start-o1"),
        ];
        events.extend(extra);
        HashMap::from([("o1".to_owned(), events)])
    }

    fn ledger() -> Ledger {
        Ledger {
            acks: vec![
                ack("place-o1", "o1", 1, &["OrderPlaced"]),
                ack("start-o1", "o1", 3, &["PreparationStarted"]),
            ],
            ..Ledger::default()
        }
    }

    #[test]
    fn check_one_passes_when_every_event_is_acknowledged_or_the_flows() {
        let verdict = acknowledged_exactly_once(&store(vec![]), &ledger());
        assert!(verdict.passed, "{}", verdict.detail);
    }

    #[test]
    fn a_commit_whose_client_gave_up_fails_check_one() {
        // A paused command-api resumes and commits a MarkReady whose client had stopped waiting
        // (and never sent it again): stored, acknowledged to nobody.
        let stored = store(vec![event(
            4,
            "OrderMarkedReady",
            "barista:b",
            "barista:b/ready-o1",
        )]);
        let verdict = acknowledged_exactly_once(&stored, &ledger());
        assert!(!verdict.passed);
        assert!(verdict.detail.contains("o1#4"), "{}", verdict.detail);
    }

    #[test]
    fn a_key_committed_twice_fails_check_one_even_for_the_flows() {
        // The saga's accept retried on another command-api and committed there, then the paused
        // one resumed and committed it again under the same key.
        let again = "service:flows-order-saga/saga/o1/1/accept";
        let stored = store(vec![event(
            4,
            "OrderAccepted",
            "service:flows-order-saga",
            again,
        )]);
        let verdict = acknowledged_exactly_once(&stored, &ledger());
        assert!(!verdict.passed);
        assert!(
            verdict.detail.contains("APPENDED TWICE"),
            "{}",
            verdict.detail
        );
    }

    #[test]
    fn a_commit_under_a_key_its_client_was_told_failed_fails_its_check() {
        let mut ledger = ledger();
        ledger.told_failed.push(ToldFailed {
            rpc: "MarkReady",
            key: "ready-o1".into(),
            answer: "FailedPrecondition order is not preparing".into(),
        });
        assert!(nothing_stored_for_failures(&store(vec![]), &ledger).passed);
        let stored = store(vec![event(
            4,
            "OrderMarkedReady",
            "barista:b",
            "barista:b/ready-o1",
        )]);
        let verdict = nothing_stored_for_failures(&stored, &ledger);
        assert!(!verdict.passed);
        assert!(verdict.detail.contains("ready-o1"), "{}", verdict.detail);
    }

    #[test]
    fn a_cancelled_answer_fails_the_told_failed_check() {
        let mut ledger = ledger();
        ledger
            .cancelled_answers
            .push("MarkReady ready-o1: Timeout expired".into());
        assert!(!nothing_stored_for_failures(&store(vec![]), &ledger).passed);
    }

    #[test]
    fn stored_keys_match_their_client_key_whatever_the_scope() {
        assert!(stored_key_is("service:saga/place-1", "place-1"));
        assert!(stored_key_is("place-1", "place-1"));
        assert!(!stored_key_is("service:saga/xplace-1", "place-1"));
        assert!(is_flows_actor("service:flows-order-saga"));
        assert!(is_flows_actor("flows-payments"));
        assert!(!is_flows_actor("barista:barista-store-1"));
    }
}
