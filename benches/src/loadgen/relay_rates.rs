//! The relay's packing under load: from its counters (`orderpipe_relay_commits_total`,
//! `orderpipe_relay_records_total`) scraped every second, the commits and records it put per
//! second, and the commits per record over the run. A Kinesis shard takes 1,000 records/s: the
//! records per shard per second say how close the rush comes to that, and the commits per
//! record how far packing pushes it off.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::cluster::scrape_sum;

/// What the relay put in one second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayRates {
    /// Commits acknowledged per second.
    pub commits: f64,
    /// Records acknowledged per second.
    pub records: f64,
}

/// The relay's counters between ticks.
#[derive(Debug, Default)]
pub struct RelayWatch {
    /// Commits and records at the last tick, and when.
    last: Option<(f64, f64, Duration)>,
    /// The second with the most commits.
    peak: Option<RelayRates>,
    /// The most records in one second.
    max_records: f64,
    /// The counters at the last tick.
    totals: (f64, f64),
}

/// The relay's packing over a run, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RelayPacking {
    /// Commits per record over the whole run.
    pub commits_per_record: f64,
    /// The busiest second's commits per second per shard (the relay's total over the shards:
    /// aggregates spread evenly by their hash keys).
    pub peak_commits_per_shard_per_second: f64,
    /// That second's records per second per shard.
    pub records_per_shard_per_second_at_peak: f64,
    /// The most records per second per shard in any second (Kinesis takes 1,000).
    pub max_records_per_shard_per_second: f64,
}

impl RelayWatch {
    /// Scrapes the relay's counters at `elapsed` and returns the rates since the last tick.
    pub async fn sample(
        &mut self,
        relay_admin: SocketAddr,
        elapsed: Duration,
    ) -> Option<RelayRates> {
        let commits = scrape_sum(relay_admin, "orderpipe_relay_commits_total", ("", "")).await?;
        let records = scrape_sum(relay_admin, "orderpipe_relay_records_total", ("", "")).await?;
        let rates = match self.last {
            Some((commits_before, records_before, at)) if elapsed > at => {
                let seconds = (elapsed - at).as_secs_f64();
                Some(RelayRates {
                    commits: (commits - commits_before).max(0.0) / seconds,
                    records: (records - records_before).max(0.0) / seconds,
                })
            }
            _ => None,
        };
        self.last = Some((commits, records, elapsed));
        self.totals = (commits, records);
        if let Some(rates) = rates {
            if self.peak.is_none_or(|peak| rates.commits > peak.commits) {
                self.peak = Some(rates);
            }
            self.max_records = self.max_records.max(rates.records);
        }
        rates
    }

    /// The run's figures over `shards` shards; `None` when the relay put nothing or was not
    /// scraped.
    pub fn figures(&self, shards: i32) -> Option<RelayPacking> {
        let (commits, records) = self.totals;
        let peak = self.peak?;
        let shards = f64::from(shards.max(1));
        (records > 0.0).then(|| RelayPacking {
            commits_per_record: commits / records,
            peak_commits_per_shard_per_second: peak.commits / shards,
            records_per_shard_per_second_at_peak: peak.records / shards,
            max_records_per_shard_per_second: self.max_records / shards,
        })
    }
}
