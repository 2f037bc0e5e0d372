//! What must hold once the pipeline has settled: the store holds every acknowledged command's
//! events exactly once, every event reached Kinesis (in order per aggregate), every projection
//! equals a fresh replay, and no order was charged, reserved or credited twice.

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
    fn new(check: &str, problems: &[String], figures: String) -> Self {
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

/// The store's events, per aggregate id: (sequence, type) in sequence order.
async fn events_by_aggregate(pool: &PgPool) -> sqlx::Result<HashMap<String, Vec<(u64, String)>>> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_type FROM events ORDER BY aggregate_id, sequence",
    )
    .fetch_all(pool)
    .await?;
    let mut by_aggregate: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for (aggregate, sequence, event_type) in rows {
        by_aggregate
            .entry(aggregate)
            .or_default()
            .push((u64::try_from(sequence).unwrap_or_default(), event_type));
    }
    Ok(by_aggregate)
}

/// Every acknowledged command's events are in the store, with the types the API reported, and
/// every stored event belongs to exactly one acknowledged command (aggregate ids are unique
/// across aggregate types in this workload: order UUIDs, `store-N`, `cust-N-M`, `menu`).
pub async fn store_holds_every_acknowledged_command_once(
    pool: &PgPool,
    ledger: &Ledger,
) -> sqlx::Result<Verdict> {
    let stored = events_by_aggregate(pool).await?;
    let mut claimed: HashMap<&str, BTreeMap<u64, (u64, &str)>> = HashMap::new();
    let mut problems = Vec::new();
    for ack in ledger.acks.iter().filter(|ack| ack.last_sequence > 0) {
        let events = stored
            .get(&ack.aggregate_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (offset, expected) in ack.event_types.iter().enumerate() {
            let sequence = ack.first_sequence + offset as u64;
            match events.iter().find(|(s, _)| *s == sequence) {
                Some((_, found)) if found == expected => {}
                Some((_, found)) => problems.push(format!(
                    "{} {}: sequence {sequence} is {found}, acknowledged as {expected}",
                    ack.rpc, ack.key
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
    for (aggregate, sequences) in &stored {
        events += sequences.len();
        let ranges = claimed.get(aggregate.as_str());
        for (sequence, event_type) in sequences {
            let covered = ranges.is_some_and(|ranges| {
                ranges
                    .range(..=*sequence)
                    .next_back()
                    .is_some_and(|(_, (last, _))| sequence <= last)
            });
            if !covered {
                problems.push(format!(
                    "{aggregate}#{sequence} ({event_type}) is stored but no acknowledged command appended it"
                ));
            }
        }
    }
    let appending = ledger.acks.iter().filter(|a| a.last_sequence > 0).count();
    Ok(Verdict::new(
        "every acknowledged command's events are in the store exactly once",
        &problems,
        format!("{appending} appending commands acknowledged, {events} events stored"),
    ))
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
    let (records, replayed) = match replayed {
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
            "{records} records on the stream: {} commits, {} duplicates (at-least-once)",
            replayed.commits_applied, replayed.duplicates_skipped
        ),
    ))
}

/// No order was charged, reserved or credited twice, and each happened as often as the
/// clients asked for it.
pub async fn nothing_happened_twice(pool: &PgPool, ledger: &Ledger) -> sqlx::Result<Vec<Verdict>> {
    let mut verdicts = Vec::new();
    for (what, event_type, rpc) in [
        (
            "no double charge",
            "PaymentCaptured",
            "RecordPaymentCaptured",
        ),
        ("no double reservation", "StockReserved", "ReserveStock"),
        ("no double points", "PointsEarned", "EarnPoints"),
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
        let mut problems: Vec<String> = per_order
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
        let asked = ledger.acks.iter().filter(|a| a.rpc == rpc).count();
        if usize::try_from(total).unwrap_or_default() != asked {
            problems.push(format!(
                "{total} {event_type} events for {asked} acknowledged {rpc}"
            ));
        }
        verdicts.push(Verdict::new(
            what,
            &problems,
            format!("{total} {event_type} events, one per order"),
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
