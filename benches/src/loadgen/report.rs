//! The load generator's results, as JSON and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::bill::Bill;
use super::freshness_split::FreshnessSplit;
use super::relay_rates::RelayPacking;
use super::watchers::WatcherFigures;

use super::profile::{OrderMix, RushProfile};
use crate::latency::LatencySummary;

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    /// `ramp-up`, `sustain`, `ramp-down`.
    pub phase: &'static str,
    /// Its planned length, in seconds.
    pub seconds: f64,
    /// Commands acknowledged in it.
    pub commands: u64,
    /// Commands acknowledged per second.
    pub commands_per_second: f64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of the acknowledged commands.
    pub latency: LatencySummary,
}

/// One second of the run, as the progress display showed it.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the start of the profile.
    pub second: u64,
    /// Active clients.
    pub clients: usize,
    /// Commands acknowledged in that second.
    pub commands: u64,
    /// Their p99 latency.
    pub p99_ms: f64,
    /// The relay's outbox backlog (commits), if scraped.
    pub outbox_backlog: Option<f64>,
    /// The projectors' largest `millis_behind_latest`, if scraped.
    pub projector_lag_ms: Option<f64>,
    /// Events the history projector had not applied yet.
    pub history_events_behind: Option<i64>,
    /// GetRecords calls per second the projectors made on their busiest shard in that second
    /// (all projections together; Kinesis allows 5), if scraped.
    pub get_records_per_shard_per_second: Option<f64>,
    /// Commits the relay put in that second (all shards), if scraped.
    pub relay_commits_per_second: Option<f64>,
    /// Records the relay put in that second (all shards), if scraped.
    pub relay_records_per_second: Option<f64>,
}

/// A process's peak memory.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    /// `command-api`, `relay`, `projectors`, `loadgen`.
    pub process: String,
    /// Peak resident set size (VmHWM), MiB.
    pub peak_mib: f64,
}

/// Everything a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// `nproc` and memory of the machine.
    pub machine: String,
    /// The profile.
    pub profile: RushProfile,
    /// The order mix.
    pub mix: OrderMix,
    /// Stores, hot stores and the hot share.
    pub stores: String,
    /// Per phase.
    pub phases: Vec<PhaseFigures>,
    /// Latency per RPC over the whole run.
    pub by_rpc: BTreeMap<String, LatencySummary>,
    /// Failed calls by RPC and code.
    pub errors: BTreeMap<String, u64>,
    /// PlaceOrder acknowledged -> visible in the DynamoDB active-orders view.
    pub freshness: LatencySummary,
    /// Sampled orders that never became visible within the probe's patience.
    pub freshness_missing: u64,
    /// Where that freshness went (relay, log wait, batch, write), when the build exports it.
    pub freshness_split: Option<FreshnessSplit>,
    /// PlaceOrder acknowledged -> the order in the analytics `fact_orders` (micro-batched loads).
    pub analytics_freshness: LatencySummary,
    /// Sampled orders never seen in analytics within the probe's patience.
    pub analytics_freshness_missing: u64,
    /// Largest projector `millis_behind_latest` seen.
    pub max_projector_lag_ms: Option<f64>,
    /// Most GetRecords calls per second the projectors made on one shard in one second.
    pub max_get_records_per_shard_per_second: Option<f64>,
    /// Largest outbox backlog seen.
    pub max_outbox_backlog: Option<f64>,
    /// The relay's share of ack -> Kinesis, p99: from a commit to its removal from the outbox
    /// once Kinesis acknowledged its record (the relay's histogram, interpolated in its buckets).
    pub relay_commit_to_log_p99_ms: Option<f64>,
    /// The relay's commits per record and per-shard rates at the rush.
    pub relay_packing: Option<RelayPacking>,
    /// Most events the history projector was behind the store.
    pub max_history_events_behind: Option<i64>,
    /// The analytics projection's loads and the statements they sent (its counters at the end).
    pub analytics_loads: Option<AnalyticsLoads>,
    /// Peak memory per process.
    pub memory: Vec<ProcessMemory>,
    /// The run second by second.
    pub timeline: Vec<Tick>,
    /// The AWS bill per order, when its counters could be read.
    pub bill: Option<Bill>,
    /// What the WatchOrder streams saw, when the run had them (`--watchers`).
    pub watchers: Option<WatcherFigures>,
}

impl LoadReport {
    /// The sustain phase's figures, if it ran.
    pub fn sustain(&self) -> Option<&PhaseFigures> {
        self.phases.iter().find(|p| p.phase == "sustain")
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let p = &self.profile;
        let _ = writeln!(md, "# Morning rush load run, {}\n", self.started_at);
        let _ = writeln!(
            md,
            "Machine: {}. Profile: {} -> {} clients over {:.0} s, {:.0} s at the peak, down over {:.0} s; {}. Mix (completed, cancelled, open): {}, {}, {}. Stores: {}.\n",
            self.machine, p.base_clients, p.peak_clients, p.ramp_up.as_secs_f64(),
            p.sustain.as_secs_f64(), p.ramp_down.as_secs_f64(), pacing(p.peak_orders_per_second),
            self.mix.completed, self.mix.cancelled, self.mix.open, self.stores
        );
        md.push_str("| phase | seconds | commands | commands/s | errors | p50 ms | p90 ms | p99 ms | max ms |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for f in &self.phases {
            let l = &f.latency;
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                f.phase,
                f.seconds,
                f.commands,
                f.commands_per_second,
                f.errors,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.max_ms
            );
        }
        let fresh = &self.freshness;
        let _ = writeln!(
            md,
            "\n| end to end | value |\n|---|---:|\n| freshness p50 (ack -> visible in DynamoDB) | {:.0} ms |\n| freshness p99 | {:.0} ms |\n| freshness samples (missing) | {} ({}) |\n| max projector lag (millis behind latest; kinesalite reports 0) | {} |\n| max history projector backlog (events not applied) | {} |\n| max outbox backlog (commits) | {} |\n| relay: commit -> acknowledged by Kinesis, p99 (from the relay's histogram buckets) | {} |\n| max GetRecords calls per shard per second (projectors, all views; Kinesis allows 5) | {} |",
            fresh.p50_ms, fresh.p99_ms, fresh.count, self.freshness_missing,
            optional(self.max_projector_lag_ms, " ms"),
            optional(self.max_history_events_behind.map(|b| b as f64), ""),
            optional(self.max_outbox_backlog, ""),
            optional(self.relay_commit_to_log_p99_ms, " ms"),
            self.max_get_records_per_shard_per_second
                .map_or_else(|| "not reported".to_owned(), |v| format!("{v:.1}"))
        );
        if let Some(packing) = &self.relay_packing {
            let _ = writeln!(
                md,
                "| relay: commits per record (whole run) | {:.1} |\n| relay: busiest second, commits/s per shard (records/s per shard) | {:.0} ({:.0}) |\n| relay: most records/s per shard in one second (Kinesis takes 1,000) | {:.0} |",
                packing.commits_per_record,
                packing.peak_commits_per_shard_per_second,
                packing.records_per_shard_per_second_at_peak,
                packing.max_records_per_shard_per_second
            );
        }
        let analytics = &self.analytics_freshness;
        let _ = writeln!(
            md,
            "| analytics freshness p50 / p99 (ack -> in fact_orders), samples (missing) | {:.0} / {:.0} ms, {} ({}) |",
            analytics.p50_ms, analytics.p99_ms, analytics.count, self.analytics_freshness_missing
        );
        if let Some(loads) = &self.analytics_loads {
            let _ = writeln!(
                md,
                "| analytics loads / statements sent / statements per load | {} / {} / {:.1} |",
                loads.loads, loads.statements, loads.statements_per_load
            );
        }
        if let Some(split) = &self.freshness_split {
            md.push('\n');
            md.push_str(&split.to_markdown());
        }
        if let Some(w) = &self.watchers {
            let _ = writeln!(
                md,
                "\n| WatchOrder streams (one per order while open) | value |\n|---|---:|\n| opened | {} |\n| most open at once | {} |\n| ended with their order | {} |\n| changes received | {} |\n| failed | {} |",
                w.opened, w.max_open, w.ended_with_order, w.changes, w.failed
            );
        }
        md.push_str("\n| process | peak resident memory |\n|---|---:|\n");
        for m in &self.memory {
            let _ = writeln!(md, "| {} | {:.0} MiB |", m.process, m.peak_mib);
        }
        md.push_str("\n| RPC | calls | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n");
        for (rpc, l) in &self.by_rpc {
            let _ = writeln!(
                md,
                "| {rpc} | {} | {:.1} | {:.1} | {:.1} |",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        if let Some(bill) = &self.bill {
            md.push('\n');
            md.push_str(&bill.to_markdown());
        }
        if !self.errors.is_empty() {
            md.push_str("\n| failed calls | count |\n|---|---:|\n");
            for (what, count) in &self.errors {
                let _ = writeln!(md, "| {what} | {count} |");
            }
        }
        md
    }
}

fn optional(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "not reported".to_owned(), |v| format!("{v:.0}{unit}"))
}

fn pacing(peak_orders_per_second: Option<f64>) -> String {
    match peak_orders_per_second {
        Some(rate) => format!("orders arrive at up to {rate:.0}/s (at the peak)"),
        None => "closed loop (each client starts its next order at once)".to_owned(),
    }
}

/// What the analytics projection sent over the run (`orderpipe_analytics_flushes_total` and
/// `orderpipe_analytics_statements_total` on the projectors' `/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsLoads {
    /// Loads (micro-batches) committed.
    pub loads: f64,
    /// Statements sent, the commits included.
    pub statements: f64,
    /// `statements / loads`.
    pub statements_per_load: f64,
}

impl AnalyticsLoads {
    /// The projectors' counters at `admin`; `None` when they are not there (no load ran).
    pub async fn scrape(admin: std::net::SocketAddr) -> Option<AnalyticsLoads> {
        let loads = super::cluster::scrape_max(admin, read_models::FLUSHES).await?;
        let statements = super::cluster::scrape_max(admin, read_models::STATEMENTS).await?;
        (loads > 0.0).then(|| AnalyticsLoads {
            loads,
            statements,
            statements_per_load: statements / loads,
        })
    }
}
