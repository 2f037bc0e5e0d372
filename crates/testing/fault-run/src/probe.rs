//! The write probe: a small command sent to one command-api every half second through the
//! whole load, each until acknowledged (same key), timing how long each took. While the other
//! command-api is paused or cut off from PostgreSQL, this one must keep committing within the
//! write side's bounds: a stalled process that held the position counter may delay the other
//! writers by at most its lock and idle-in-transaction timeouts (BRIEF §5), never for as long as
//! it is stalled.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use serde::Serialize;
use tokio::time::Instant;

use crate::checks::Verdict;
use crate::faults::Injected;
use crate::load::Load;

/// The store the probe restocks (not one the clients order from, so it touches no order).
pub const PROBE_STORE: &str = "store-probe";
/// Between two probes.
const EVERY: Duration = Duration::from_millis(500);

/// One probe: when it was sent and how long until it was acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds into the run.
    pub at_seconds: f64,
    /// Seconds from the first send to the acknowledgment.
    pub took_seconds: f64,
}

/// Restocks [`PROBE_STORE`] through command-api `api` until `until`; every probe is kept.
pub async fn run(
    load: Load,
    api: usize,
    start: Instant,
    until: Instant,
) -> anyhow::Result<Vec<Sample>> {
    let service = load.service_bearer()?;
    let mut samples = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = format!("probe-{n}");
        let sent = Instant::now();
        let acknowledged = load
            .submit_to(api, "Restock", &key, |channel| {
                let mut inventory =
                    InventoryServiceClient::with_interceptor(channel, service.clone());
                let request = pb::RestockRequest {
                    idempotency_key: key.clone(),
                    store_id: PROBE_STORE.into(),
                    sku: "LATTE-12".into(),
                    quantity: 1,
                };
                async move {
                    inventory
                        .restock(crate::load::timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        if acknowledged {
            samples.push(Sample {
                at_seconds: sent.duration_since(start).as_secs_f64(),
                took_seconds: sent.elapsed().as_secs_f64(),
            });
        }
        tokio::time::sleep(EVERY.saturating_sub(sent.elapsed())).await;
    }
    Ok(samples)
}

/// For every fault of `stalled` (e.g. "pause command-api-a"), the probes sent while it lasted
/// were each acknowledged within `bound`.
pub fn the_other_writer_kept_committing(
    samples: &[Sample],
    faults: &[Injected],
    stalled: &[String],
    bound: Duration,
) -> Verdict {
    let mut problems = Vec::new();
    let mut figures = Vec::new();
    for fault in faults.iter().filter(|f| stalled.contains(&f.fault)) {
        let from = fault.at_seconds;
        let to = from + fault.down_ms as f64 / 1000.0;
        let during: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at_seconds >= from && s.at_seconds < to)
            .collect();
        let slowest = during.iter().map(|s| s.took_seconds).fold(0.0, f64::max);
        figures.push(format!(
            "{} at {from:.0} s: {} probes, slowest {slowest:.1} s",
            fault.fault,
            during.len()
        ));
        if during.is_empty() {
            problems.push(format!(
                "{}: no probe was acknowledged while it lasted",
                fault.fault
            ));
        } else if slowest > bound.as_secs_f64() {
            problems.push(format!(
                "{}: a probe took {slowest:.1} s (bound {:.1} s)",
                fault.fault,
                bound.as_secs_f64()
            ));
        }
    }
    let slowest_overall = samples.iter().map(|s| s.took_seconds).fold(0.0, f64::max);
    Verdict::new(
        "the other command-api kept committing while one was paused or cut off",
        &problems,
        format!(
            "{} probes, slowest {slowest_overall:.1} s overall; {}",
            samples.len(),
            figures.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(at: f64, seconds: u128) -> Injected {
        Injected {
            at_seconds: at,
            fault: "pause command-api-a".into(),
            down_ms: seconds * 1000,
        }
    }

    fn sample(at: f64, took: f64) -> Sample {
        Sample {
            at_seconds: at,
            took_seconds: took,
        }
    }

    #[test]
    fn a_writer_blocked_for_the_whole_pause_fails_and_one_within_the_bound_passes() {
        let stalled = vec!["pause command-api-a".to_owned()];
        let bound = Duration::from_secs(6);
        let quick = [sample(10.5, 0.1), sample(12.0, 5.5), sample(30.0, 20.0)];
        assert!(
            the_other_writer_kept_committing(&quick, &[fault(10.0, 11)], &stalled, bound).passed
        );
        let blocked = [sample(10.5, 10.4), sample(11.0, 9.9)];
        let verdict =
            the_other_writer_kept_committing(&blocked, &[fault(10.0, 11)], &stalled, bound);
        assert!(!verdict.passed, "{}", verdict.detail);
        assert!(!the_other_writer_kept_committing(&[], &[fault(10.0, 11)], &stalled, bound).passed);
    }
}
