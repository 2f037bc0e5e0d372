//! Where the active-orders view's freshness goes, from the processes' own metrics at the end of
//! a run: the relay (commit -> Kinesis acknowledged its record), the log wait (in the stream until
//! a GetRecords call brought it, and the consumer handed it over: the commit's age when its
//! `apply` started, less the relay's share), the batch it came in, and the write (the `apply`).
//! Means add up to the freshness the probe sees (less the probe's own poll); the p99s are each
//! stage's own and do not.

use std::fmt::Write;
use std::net::SocketAddr;

use serde::Serialize;

use super::cluster::{labelled_histogram_quantile, metrics_of, sum_samples};

/// The relay's histogram: a commit's time in the outbox until Kinesis acknowledged its record.
const RELAY: &str = "orderpipe_relay_commit_to_log_seconds";
/// The projectors' histogram of a commit's age when the `apply` carrying it started.
const AGE_AT_APPLY: &str = "orderpipe_projection_commit_age_at_apply_seconds";
/// The projectors' histogram of one `apply`'s duration.
const APPLY: &str = "orderpipe_projection_apply_seconds";
/// The projectors' counters of batches and of the commits in them.
const BATCHES: &str = "orderpipe_projection_batches_total";
const BATCH_COMMITS: &str = "orderpipe_projection_batch_commits_total";

/// The view the split is of.
const PROJECTION: (&str, &str) = ("projection", "active_orders");

/// One stage's mean and p99, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stage {
    /// Mean over every sample (exact: the histogram's sum over its count).
    pub mean_ms: f64,
    /// p99, interpolated within the histogram's buckets (only as fine as they are).
    pub p99_ms: f64,
}

/// The active-orders view's freshness, stage by stage.
#[derive(Debug, Clone, Serialize)]
pub struct FreshnessSplit {
    /// Commit -> its record acknowledged by Kinesis (the relay's wake-up, PutRecords, the
    /// outbox removal).
    pub relay: Stage,
    /// Commit -> its `apply` starts: the relay, then the stream until the next GetRecords call
    /// (`runtime.poll_interval_ms` per shard) and the consumer's hand-over.
    pub age_at_apply: Stage,
    /// `age_at_apply` less `relay`, by their means: the wait in the log.
    pub log_wait_mean_ms: f64,
    /// One `apply` (the batch's DynamoDB writes).
    pub write: Stage,
    /// Commits per `apply`.
    pub commits_per_batch: f64,
}

impl FreshnessSplit {
    /// Reads the split from the relay's and the projectors' `/metrics`; `None` when a build's
    /// processes do not export the projections' histograms (builds before them).
    pub async fn scrape(relay: SocketAddr, projectors: &[SocketAddr]) -> Option<Self> {
        let relay_metrics = metrics_of(&[relay]).await?;
        let projector_metrics = metrics_of(projectors).await?;
        Self::from_metrics(&relay_metrics, &projector_metrics)
    }

    fn from_metrics(relay: &str, projectors: &str) -> Option<Self> {
        let relay = stage(relay, RELAY, ("", ""))?;
        let age_at_apply = stage(projectors, AGE_AT_APPLY, PROJECTION)?;
        let write = stage(projectors, APPLY, PROJECTION)?;
        let batches = sum_samples(projectors, BATCHES, PROJECTION)?;
        let commits = sum_samples(projectors, BATCH_COMMITS, PROJECTION)?;
        Some(Self {
            relay,
            age_at_apply,
            log_wait_mean_ms: age_at_apply.mean_ms - relay.mean_ms,
            write,
            commits_per_batch: commits / batches.max(1.0),
        })
    }

    /// The split as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from(
            "| active-orders freshness, stage (from the processes' metrics) | mean | p99 |\n|---|---:|---:|\n",
        );
        for (what, mean, p99) in [
            (
                "relay: commit -> acknowledged by Kinesis",
                self.relay.mean_ms,
                Some(self.relay.p99_ms),
            ),
            (
                "log wait: in the stream until read and handed over (age at apply - relay)",
                self.log_wait_mean_ms,
                None,
            ),
            (
                "commit -> its apply starts (relay + log wait)",
                self.age_at_apply.mean_ms,
                Some(self.age_at_apply.p99_ms),
            ),
            (
                "write: one apply (the batch's DynamoDB calls)",
                self.write.mean_ms,
                Some(self.write.p99_ms),
            ),
        ] {
            let p99 = p99.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
            let _ = writeln!(md, "| {what} | {mean:.0} ms | {p99} |");
        }
        let _ = writeln!(
            md,
            "| batch: commits per apply | {:.1} | |",
            self.commits_per_batch
        );
        md
    }
}

fn stage(exposition: &str, metric: &str, label: (&str, &str)) -> Option<Stage> {
    let sum = sum_samples(exposition, &format!("{metric}_sum"), label)?;
    let count = sum_samples(exposition, &format!("{metric}_count"), label)?;
    Some(Stage {
        mean_ms: sum / count.max(1.0) * 1000.0,
        p99_ms: labelled_histogram_quantile(exposition, metric, label, 0.99)? * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(metric: &str, labels: &str, buckets: &[(&str, f64)], sum: f64) -> String {
        let mut body = String::new();
        for (bound, count) in buckets {
            let _ = writeln!(body, "{metric}_bucket{{{labels}le=\"{bound}\"}} {count}");
        }
        let count = buckets.last().map_or(0.0, |b| b.1);
        let braces = match labels {
            "" => String::new(),
            labels => format!("{{{}}}", labels.trim_end_matches(',')),
        };
        let _ = writeln!(
            body,
            "{metric}_sum{braces} {sum}\n{metric}_count{braces} {count}"
        );
        body
    }

    #[test]
    fn the_stages_come_from_the_relay_and_every_projectors_process() {
        let relay = histogram(
            RELAY,
            "",
            &[("0.01", 90.0), ("0.05", 100.0), ("+Inf", 100.0)],
            1.0,
        );
        let active = "projection=\"active_orders\",";
        let history = "projection=\"history\",";
        // Two processes, each with half the active-orders batches; history is not counted.
        let mut projectors = String::new();
        for _ in 0..2 {
            projectors += &histogram(
                AGE_AT_APPLY,
                active,
                &[("0.5", 100.0), ("+Inf", 100.0)],
                20.0,
            );
            projectors += &histogram(APPLY, active, &[("0.05", 10.0), ("+Inf", 10.0)], 0.2);
            projectors += &histogram(AGE_AT_APPLY, history, &[("2.5", 7.0), ("+Inf", 7.0)], 99.0);
            projectors += "orderpipe_projection_batches_total{projection=\"active_orders\"} 10\n";
            projectors +=
                "orderpipe_projection_batch_commits_total{projection=\"active_orders\"} 100\n";
        }
        let split = FreshnessSplit::from_metrics(&relay, &projectors).expect("all present");
        assert!((split.relay.mean_ms - 10.0).abs() < 1e-9, "{split:?}");
        assert!(
            (split.age_at_apply.mean_ms - 200.0).abs() < 1e-9,
            "{split:?}"
        );
        assert!((split.log_wait_mean_ms - 190.0).abs() < 1e-9, "{split:?}");
        assert!((split.write.mean_ms - 20.0).abs() < 1e-9, "{split:?}");
        assert!((split.commits_per_batch - 10.0).abs() < 1e-9, "{split:?}");
        assert!(split.age_at_apply.p99_ms <= 500.0, "{split:?}");
    }

    #[test]
    fn a_build_without_the_projection_histograms_has_no_split() {
        let relay = histogram(RELAY, "", &[("0.01", 1.0), ("+Inf", 1.0)], 0.001);
        assert!(FreshnessSplit::from_metrics(&relay, "other_metric 1\n").is_none());
    }
}
